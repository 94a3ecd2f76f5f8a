//! The daemon's `log` backend: stderr for journald (or a terminal), plus optional syslog forwarding.
//!
//! Under systemd (`JOURNAL_STREAM` set) every event is one stderr line per line of message, each starting
//! with the `<N>` syslog priority prefix that journald strips and stores as the priority (Error→3, Warn→4,
//! Info→6, Debug/Trace→7), and no timestamp, because journald adds its own. Every line of a multi-line
//! message gets the prefix, or journald would store the continuation lines at the default priority.
//! Anywhere else (a terminal, a test) lines carry an RFC 3339 timestamp, the level and the target.
//!
//! `[log.syslog]` additionally forwards each event as RFC 5424 (formatted by the `syslog` crate) over UDP,
//! TCP (octet-counting framing, RFC 6587) or a local unix datagram socket. Sending happens on a dedicated
//! thread behind a bounded queue: a slow or dead syslog server costs dropped syslog copies, never a blocked
//! or crashed daemon, and the journal copy is always written. A failure is reported on stderr once per
//! outage, not once per event.
//!
//! The level and the syslog target change at reload through [`LogHandle::reconfigure`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use log::{Level, Log, Metadata, Record};
use syslog::{Facility, Formatter5424, LogFormat, Severity};

use crate::config::{LogConfig, SyslogAddress, SyslogConfig};

/// Events waiting for the syslog thread. Beyond this the syslog copy is dropped: the queue exists to absorb
/// bursts, and a server that cannot keep up for 4096 events is down as far as we are concerned.
pub const SYSLOG_QUEUE_MAX: usize = 4096;
/// How long a TCP connect or write to the syslog server may block the syslog thread.
const SYSLOG_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failure, how long to wait before trying to reconnect (events meanwhile are dropped).
const SYSLOG_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How long [`Log::flush`] waits for queued syslog events to be sent (at exit, or in the panic hook).
const SYSLOG_FLUSH_WAIT: Duration = Duration::from_secs(1);
/// The RFC 5424 MSGID field; the `syslog` crate wants a number and we have no message types.
const SYSLOG_MSGID: u32 = 0;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Another `log` backend was installed in this process before ours.
    #[error("another logger is already installed in this process")]
    OtherLoggerInstalled,
    #[error("invalid [log] settings: {0}")]
    InvalidConfig(String),
    #[error("cannot start the syslog forwarding thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Controls the installed logger. Cheap to copy around; every copy controls the same logger.
#[derive(Debug, Clone, Copy)]
pub struct LogHandle {
    logger: &'static DaemonLogger,
}

impl LogHandle {
    /// Applies a new `[log]` section: level at once, syslog target replaced if it changed.
    pub fn reconfigure(&self, config: &LogConfig) -> Result<(), LogError> {
        self.logger.reconfigure(config)
    }

    /// Whether lines are written in journald format (`JOURNAL_STREAM` was set at [`init`]).
    pub fn journal_format(&self) -> bool {
        self.logger.journal
    }
}

/// The logger installed by the first [`init`]; later calls reuse it.
static INSTALLED: Mutex<Option<&'static DaemonLogger>> = Mutex::new(None);

/// Installs the logger for daemon `daemon_name` (its syslog APP-NAME is `logtank-<daemon_name>` unless
/// `log.syslog.app_name` says otherwise).
///
/// Calling it again in the same process (tests start several daemons) reconfigures the installed logger and
/// returns a handle to it instead of panicking.
pub fn init(daemon_name: &str, config: &LogConfig) -> Result<LogHandle, LogError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(logger) = *installed {
        let handle = LogHandle { logger };
        handle.reconfigure(config)?;
        return Ok(handle);
    }
    let journal = std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty());
    // Leaked on purpose: `log` needs a `'static` logger, and there is one per process.
    let logger: &'static DaemonLogger = Box::leak(Box::new(DaemonLogger {
        journal,
        ident: format!("logtank-{daemon_name}"),
        syslog: Mutex::new(None),
    }));
    logger.reconfigure(config)?;
    log::set_logger(logger).map_err(|_| LogError::OtherLoggerInstalled)?;
    *installed = Some(logger);
    Ok(LogHandle { logger })
}

#[derive(Debug)]
struct DaemonLogger {
    journal: bool,
    ident: String,
    syslog: Mutex<Option<SyslogForwarder>>,
}

impl DaemonLogger {
    fn reconfigure(&self, config: &LogConfig) -> Result<(), LogError> {
        let mut slot = self.syslog.lock().unwrap_or_else(PoisonError::into_inner);
        let unchanged = match (&*slot, &config.syslog) {
            (Some(current), Some(wanted)) => current.config == *wanted,
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            // Dropping the old forwarder closes its queue; its thread sends what is queued and exits.
            *slot = match &config.syslog {
                Some(wanted) => Some(SyslogForwarder::start(&self.ident, wanted, self.journal)?),
                None => None,
            };
        }
        log::set_max_level(config.level_filter());
        Ok(())
    }
}

impl Log for DaemonLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let line = if self.journal {
            format_journal(record.level(), &message)
        } else {
            format_human(SystemTime::now(), record.level(), record.target(), &message)
        };
        write_stderr(&line);
        let slot = self.syslog.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(forwarder) = &*slot {
            forwarder.forward(record.level(), message);
        }
    }

    fn flush(&self) {
        let slot = self.syslog.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(forwarder) = &*slot {
            forwarder.flush();
        }
    }
}

/// One write per event, so lines from different threads do not interleave.
fn write_stderr(text: &str) {
    // Nothing sensible can be done if stderr is gone; the syslog copy may still get through.
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// The journald priority prefix for a level (sd-daemon(3)).
pub fn journal_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `<N>line\n` for every line of `message`.
pub fn format_journal(level: Level, message: &str) -> String {
    let priority = journal_priority(level);
    let mut out = String::with_capacity(message.len() + 4);
    for line in message.lines() {
        let _ = writeln!(out, "<{priority}>{line}");
    }
    if out.is_empty() {
        let _ = writeln!(out, "<{priority}>");
    }
    out
}

/// `TIMESTAMP LEVEL target: line` for the first line; continuation lines are indented under it.
pub fn format_human(now: SystemTime, level: Level, target: &str, message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 64);
    let mut lines = message.lines();
    let first = lines.next().unwrap_or("");
    let _ = writeln!(
        out,
        "{} {level:<5} {target}: {first}",
        humantime::format_rfc3339_millis(now)
    );
    for line in lines {
        let _ = writeln!(out, "    {line}");
    }
    out
}

fn severity(level: Level) -> Severity {
    match level {
        Level::Error => Severity::LOG_ERR,
        Level::Warn => Severity::LOG_WARNING,
        Level::Info => Severity::LOG_INFO,
        Level::Debug | Level::Trace => Severity::LOG_DEBUG,
    }
}

#[derive(Debug)]
enum Forward {
    Event(Level, String),
    /// Answer once everything queued before it was sent (or dropped).
    Flush(SyncSender<()>),
}

/// The sending side of one syslog target; its thread ends when this is dropped.
#[derive(Debug)]
struct SyslogForwarder {
    config: SyslogConfig,
    queue: SyncSender<Forward>,
    /// Whether "queue full" was already reported during the current overflow.
    overflow_reported: AtomicBool,
    journal: bool,
}

impl SyslogForwarder {
    fn start(ident: &str, config: &SyslogConfig, journal: bool) -> Result<Self, LogError> {
        let address = SyslogAddress::from_str(&config.address).map_err(LogError::InvalidConfig)?;
        let facility = Facility::from_str(&config.facility).map_err(|()| {
            LogError::InvalidConfig(format!("unknown syslog facility '{}'", config.facility))
        })?;
        let formatter = Formatter5424 {
            facility,
            hostname: hostname(),
            process: config.app_name.clone().unwrap_or_else(|| ident.to_owned()),
            pid: std::process::id(),
        };
        let (queue, rx) = mpsc::sync_channel(SYSLOG_QUEUE_MAX);
        let mut sender = SyslogSender {
            address,
            display: config.address.clone(),
            formatter,
            transport: None,
            retry_at: None,
            journal,
        };
        std::thread::Builder::new()
            .name("logtank-syslog".to_owned())
            .spawn(move || sender.run(rx))
            .map_err(LogError::Spawn)?;
        Ok(SyslogForwarder {
            config: config.clone(),
            queue,
            overflow_reported: AtomicBool::new(false),
            journal,
        })
    }

    fn forward(&self, level: Level, message: String) {
        match self.queue.try_send(Forward::Event(level, message)) {
            Ok(()) => {
                self.overflow_reported.store(false, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                if !self.overflow_reported.swap(true, Ordering::Relaxed) {
                    report(
                        self.journal,
                        Level::Warn,
                        &format!(
                            "syslog forwarding to {} cannot keep up ({SYSLOG_QUEUE_MAX} events queued); \
                             dropping syslog copies until it catches up",
                            self.config.address
                        ),
                    );
                }
            }
            // The thread is gone (it only exits when we drop the queue); nothing to do.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.queue.try_send(Forward::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(SYSLOG_FLUSH_WAIT);
        }
    }
}

/// Writes a message about logging itself to stderr; it cannot go through `log` without recursing.
fn report(journal: bool, level: Level, message: &str) {
    let line = if journal {
        format_journal(level, message)
    } else {
        format_human(SystemTime::now(), level, module_path!(), message)
    };
    write_stderr(&line);
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

enum Transport {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

/// The syslog thread's state: connection, formatter, and whether it is currently failing.
struct SyslogSender {
    address: SyslogAddress,
    display: String,
    formatter: Formatter5424,
    transport: Option<Transport>,
    /// Set while failing: no connection attempt before this instant, and the outage was reported.
    retry_at: Option<Instant>,
    journal: bool,
}

impl SyslogSender {
    fn run(&mut self, rx: Receiver<Forward>) {
        loop {
            match rx.recv_timeout(SYSLOG_RETRY_INTERVAL) {
                Ok(Forward::Event(level, message)) => self.send(level, &message),
                Ok(Forward::Flush(done)) => {
                    let _ = done.try_send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn send(&mut self, level: Level, message: &str) {
        if let Some(retry_at) = self.retry_at {
            if Instant::now() < retry_at {
                return;
            }
        }
        let mut formatted = Vec::with_capacity(message.len() + 128);
        if let Err(e) = self.formatter.format(
            &mut formatted,
            severity(level),
            (SYSLOG_MSGID, BTreeMap::new(), message),
        ) {
            report(
                self.journal,
                Level::Warn,
                &format!("cannot format a syslog message: {e}"),
            );
            return;
        }
        match self.connect_and_write(&formatted) {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    report(
                        self.journal,
                        Level::Info,
                        &format!("syslog forwarding to {} resumed", self.display),
                    );
                }
            }
            Err(e) => {
                self.transport = None;
                if self.retry_at.is_none() {
                    report(
                        self.journal,
                        Level::Warn,
                        &format!(
                            "syslog forwarding to {} failed: {e}; syslog copies are dropped until it recovers \
                             (retrying every {} s)",
                            self.display,
                            SYSLOG_RETRY_INTERVAL.as_secs()
                        ),
                    );
                }
                self.retry_at = Some(Instant::now() + SYSLOG_RETRY_INTERVAL);
            }
        }
    }

    fn connect_and_write(&mut self, formatted: &[u8]) -> io::Result<()> {
        let transport = match &mut self.transport {
            Some(transport) => transport,
            None => self.transport.insert(connect(&self.address)?),
        };
        match transport {
            Transport::Udp(socket) => socket.send(formatted).map(drop),
            Transport::Unix(socket) => socket.send(formatted).map(drop),
            Transport::Tcp(stream) => {
                // RFC 6587 octet counting: "LEN SP MSG", so multi-line messages stay one message.
                let mut framed = format!("{} ", formatted.len()).into_bytes();
                framed.extend_from_slice(formatted);
                stream.write_all(&framed)
            }
        }
    }
}

fn connect(address: &SyslogAddress) -> io::Result<Transport> {
    match address {
        SyslogAddress::Udp(host_port) => {
            let target = resolve(host_port)?;
            let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = UdpSocket::bind(local)?;
            socket.connect(target)?;
            Ok(Transport::Udp(socket))
        }
        SyslogAddress::Tcp(host_port) => {
            let stream = TcpStream::connect_timeout(&resolve(host_port)?, SYSLOG_IO_TIMEOUT)?;
            stream.set_write_timeout(Some(SYSLOG_IO_TIMEOUT))?;
            Ok(Transport::Tcp(stream))
        }
        SyslogAddress::Unix(path) => {
            let socket = UnixDatagram::unbound()?;
            socket.connect(path)?;
            Ok(Transport::Unix(socket))
        }
    }
}

fn resolve(host_port: &str) -> io::Result<std::net::SocketAddr> {
    host_port.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host_port} resolves to no address"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves journald lines carry the priority prefix on every line and no timestamp.
    #[test]
    fn journal_format_prefixes_every_line() {
        assert_eq!(format_journal(Level::Info, "hello"), "<6>hello\n");
        assert_eq!(format_journal(Level::Error, "a\nb"), "<3>a\n<3>b\n");
        assert_eq!(format_journal(Level::Warn, ""), "<4>\n");
        assert_eq!(format_journal(Level::Trace, "x"), "<7>x\n");
    }

    // Proves human lines start with an RFC 3339 timestamp and name level and target.
    #[test]
    fn human_format_has_timestamp_level_and_target() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        let line = format_human(t, Level::Warn, "logtank_runtime::x", "first\nsecond");
        assert_eq!(
            line,
            "1970-01-01T00:00:01.500Z WARN  logtank_runtime::x: first\n    second\n"
        );
    }

    // Proves a second init in the same process reuses the installed logger instead of panicking, and that
    // reconfiguring changes the level.
    #[test]
    fn init_twice_reuses_the_logger() {
        let quiet = LogConfig {
            level: "error".into(),
            syslog: None,
        };
        let first = init("test", &quiet).unwrap();
        let second = init(
            "test",
            &LogConfig {
                level: "warn".into(),
                syslog: None,
            },
        )
        .unwrap();
        assert!(std::ptr::eq(first.logger, second.logger));
        assert_eq!(log::max_level(), log::LevelFilter::Warn);
        first.reconfigure(&quiet).unwrap();
        assert_eq!(log::max_level(), log::LevelFilter::Error);
    }

    // Proves events are forwarded to a syslog receiver as RFC 5424, and that a dead target neither blocks
    // nor panics the caller.
    #[test]
    fn forwards_rfc5424_over_udp_and_survives_a_dead_target() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let config = SyslogConfig {
            address: format!("udp://{}", receiver.local_addr().unwrap()),
            facility: "local3".to_owned(),
            app_name: Some("testapp".to_owned()),
        };
        let forwarder = SyslogForwarder::start("logtank-test", &config, true).unwrap();
        forwarder.forward(Level::Warn, "disk nearly full".to_owned());
        let mut buf = [0u8; 2048];
        let n = receiver.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        // local3 = 19, warning = 4: PRI = 19 * 8 + 4 = 156; VERSION 1.
        assert!(text.starts_with("<156>1 "), "{text}");
        assert!(text.contains(" testapp "), "{text}");
        assert!(text.ends_with("disk nearly full"), "{text}");

        let dead = SyslogConfig {
            address: "unix:///nonexistent/dev/log".to_owned(),
            ..config
        };
        let forwarder = SyslogForwarder::start("logtank-test", &dead, true).unwrap();
        for i in 0..(SYSLOG_QUEUE_MAX + 10) {
            forwarder.forward(Level::Info, format!("event {i}"));
        }
        forwarder.flush();
    }
}
