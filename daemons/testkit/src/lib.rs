//! `logtank-testkit` (dev-dependencies only, never shipped): runs a logtank daemon's real binary under an
//! integration test, the third test layer of STYLE #16, so every daemon's `tests/common` keeps only what is
//! its own (config text, protocol helpers).
//!
//! [`DaemonProcess::start`] spawns the binary of a [`Spec`] with its stderr copied to `log_path` (appended
//! across restarts) and kept in memory per run ([`DaemonProcess::log_text`], [`DaemonProcess::wait_log`]),
//! and its `sd_notify` messages caught on a Unix datagram socket of the test's own (`NOTIFY_SOCKET`), so
//! readiness is what systemd would see. It returns once the daemon is ready: `READY=1` received, the
//! runtime's start-up line seen (the admin address follows `logtank_runtime::daemon::STARTING_LINE_ADMIN`),
//! and each published serving line seen (the address follows the daemon library's `SERVING_PREFIX`, e.g.
//! `logtank_writer::SERVING_PREFIX`). Ports are ephemeral (`127.0.0.1:0` in the config): a restart gets new
//! ones, read again from the new run's lines.
//!
//! A new daemon needs a few lines:
//!
//! ```no_run
//! use logtank_testkit::{DaemonProcess, Spec};
//! # let root = std::path::Path::new("/tmp/t");
//! let mut bookie = DaemonProcess::start(Spec {
//!     binary: "target/debug/logtank-bookie".into(), // env!("CARGO_BIN_EXE_logtank-bookie") in a test
//!     args: vec!["--config".into(), root.join("bookie.toml").display().to_string()],
//!     serving_prefix: "serving bookie protocol on ", // logtank_bookie::SERVING_PREFIX
//!     log_path: root.join("bookie.log"),
//!     ..Spec::default()
//! });
//! let _client = std::net::TcpStream::connect(bookie.addr());
//! bookie.restart_after_kill9(); // same args and config, new ports
//! bookie.stop(); // SIGTERM, exit 0 asserted
//! ```
//!
//! Failures panic with the daemon's log, since a test cannot go on without its daemon. Every wait is a
//! bounded poll ([`WAIT_MAX`] unless the caller says otherwise: [`wait_for`]), never a sleep that hopes. A
//! process still running when its handle is dropped (a failed test) is killed with SIGKILL.
//!
//! Deliberately absent: any knowledge of a daemon's config or protocol, and any retry of a start that
//! failed (a daemon that does not start is the test's failure).
#![forbid(unsafe_code)]

pub mod tmpfs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logtank_runtime::daemon::{STARTING_LINE, STARTING_LINE_ADMIN};

/// The longest any condition is waited for by default: a start, an exit, a log line.
pub const WAIT_MAX: Duration = Duration::from_secs(60);
/// How often a condition is checked while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the notify thread blocks in one receive before it checks whether the run has ended.
const NOTIFY_READ_TIMEOUT: Duration = Duration::from_millis(50);
/// The largest `sd_notify` datagram kept whole (the daemons send a few short lines at a time).
const NOTIFY_MESSAGE_BYTES_MAX: usize = 4096;
/// Environment a test process may have from its own service manager that the daemon must not see: it
/// would log in journald's format or expect to ping a watchdog nobody reads.
const ENV_REMOVED: [&str; 3] = ["JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// How to run one daemon; kept by the handle, so a restart runs the same command.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The daemon's binary: `env!("CARGO_BIN_EXE_logtank-…")` in its own crate's tests.
    pub binary: PathBuf,
    /// Its arguments (`--config PATH`, `--set KEY=VALUE`, …), the same at every restart.
    pub args: Vec<String>,
    /// The text before the address in the daemon's serving line (its library's `SERVING_PREFIX`);
    /// [`DaemonProcess::addr`] is the address that follows it.
    pub serving_prefix: &'static str,
    /// Further serving lines to wait for, for a daemon with several ports (logtank-indexes' LogManager);
    /// their addresses by [`DaemonProcess::addr_of`].
    pub also_serving: Vec<&'static str>,
    /// Where the daemon's stderr is copied, appended across restarts.
    pub log_path: PathBuf,
    /// More environment for the daemon (`RUST_BACKTRACE=1`); `NOTIFY_SOCKET` is the testkit's.
    pub env: Vec<(String, String)>,
    /// The daemon's working directory; the test's when `None`.
    pub current_dir: Option<PathBuf>,
}

impl Spec {
    /// The binary's file name, for messages.
    fn name(&self) -> String {
        self.binary.file_name().map_or_else(
            || self.binary.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Every serving prefix waited for: `serving_prefix` first.
    fn prefixes(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.serving_prefix).chain(self.also_serving.iter().copied())
    }
}

/// A running (or ended) daemon process started from a [`Spec`]. Killed with SIGKILL on drop unless it was
/// stopped.
#[derive(Debug)]
pub struct DaemonProcess {
    spec: Spec,
    run: Run,
    /// One address per serving prefix, in [`Spec::prefixes`] order.
    addrs: Vec<SocketAddr>,
    admin: SocketAddr,
}

impl DaemonProcess {
    /// Starts the daemon and waits until it is ready (see the crate header); panics with its log if it
    /// exits first or is not ready within [`WAIT_MAX`].
    pub fn start(spec: Spec) -> DaemonProcess {
        let mut run = Run::spawn(&spec);
        let (addrs, admin) = run.wait_ready(&spec);
        DaemonProcess {
            spec,
            run,
            addrs,
            admin,
        }
    }

    /// Starts a daemon that is expected to fail (a bad config, a held lock) and waits for its exit; returns
    /// the exit status and everything it logged.
    pub fn start_failing(spec: Spec) -> (ExitStatus, String) {
        let mut run = Run::spawn(&spec);
        let status = run.wait_exit(&spec);
        (status, run.log_text())
    }

    /// The address of the serving line named by [`Spec::serving_prefix`].
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The address of the serving line `prefix` (one of the spec's prefixes; panics otherwise).
    pub fn addr_of(&self, prefix: &str) -> SocketAddr {
        match self.spec.prefixes().position(|p| p == prefix) {
            Some(i) => self.addrs[i],
            None => panic!("{prefix:?} is not a serving prefix of {}", self.spec.name()),
        }
    }

    /// The admin listener's address, from the runtime's start-up line.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The process id; 0 once the process has been waited for.
    pub fn pid(&self) -> i32 {
        self.run.pid()
    }

    /// Whether the process is still running (it may have exited on its own).
    pub fn is_running(&mut self) -> bool {
        self.run.child.is_some() && self.run.poll_exit().is_none()
    }

    /// The spec this process was started from.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Sends SIGTERM without waiting; panics if the process was already waited for. Nothing is sent to a
    /// process seen to have exited (its pid may be another process's by now).
    pub fn terminate(&self) {
        let pid = self.pid();
        // kill(0, …) would signal the test's whole process group.
        assert!(pid > 0, "{} is not running", self.spec.name());
        if self.run.exited.is_some() {
            return;
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM)
            .expect("SIGTERM to the daemon");
    }

    /// Waits (at most [`WAIT_MAX`]) for the process to exit and returns its status; by then its log and
    /// notify messages are complete.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.run.wait_exit(&self.spec)
    }

    /// SIGTERM and wait; panics with the log unless the exit status is 0. Nothing to do if it has ended.
    pub fn stop(&mut self) {
        if self.run.child.is_some() {
            self.terminate();
            let status = self.wait_exit();
            assert!(
                status.success(),
                "{} exited with {status}:\n{}",
                self.spec.name(),
                self.log_text()
            );
        }
    }

    /// SIGKILL and reap (a crash, as far as the daemon's files can tell). Nothing to do if it has ended.
    pub fn kill9(&mut self) {
        self.run.kill9();
    }

    /// Starts the process again (same spec, new ports) after it ended (`kill9`, `stop`, `wait_exit`), and
    /// waits until it is ready.
    pub fn start_again(&mut self) {
        assert!(
            self.run.child.is_none(),
            "{} is still running: stop or kill it first",
            self.spec.name()
        );
        let mut run = Run::spawn(&self.spec);
        let (addrs, admin) = run.wait_ready(&self.spec);
        self.run = run;
        self.addrs = addrs;
        self.admin = admin;
    }

    /// [`DaemonProcess::stop`] (exit 0 asserted), then [`DaemonProcess::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// [`DaemonProcess::kill9`], then [`DaemonProcess::start_again`].
    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.start_again();
    }

    /// What this run logged so far, one line per line (earlier runs are in [`DaemonProcess::log_file_text`]).
    pub fn log_text(&self) -> String {
        self.run.log_text()
    }

    /// The whole log file: every run since the file was created.
    pub fn log_file_text(&self) -> String {
        std::fs::read_to_string(&self.spec.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log_path
    }

    /// Waits (at most [`WAIT_MAX`]) until a line of this run contains `text`, and returns that line. Fails
    /// at once if the run has ended without one.
    pub fn wait_log(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let ended = self.run.log_ended();
            if let Some(line) = self.run.find_line(|l| l.contains(text)) {
                return line;
            }
            assert!(
                !ended,
                "{} ended without a log line containing {text:?}:\n{}",
                self.spec.name(),
                self.log_text()
            );
            assert!(
                started.elapsed() < WAIT_MAX,
                "no log line containing {text:?} from {} within {WAIT_MAX:?}:\n{}",
                self.spec.name(),
                self.log_text()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Every `sd_notify` datagram of this run so far (`READY=1\nSTATUS=…`, `STOPPING=1`, …).
    pub fn notify_messages(&self) -> Vec<String> {
        self.run
            .notify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `GET /status` on the admin listener, as JSON (200 asserted).
    pub fn status(&self) -> serde_json::Value {
        admin_status(self.admin)
    }
}

/// One run of the process: the child and the threads that copy its stderr and its notify messages.
#[derive(Debug)]
struct Run {
    /// `None` once reaped and its threads finished.
    child: Option<Child>,
    /// The exit status once a wait saw it: from then on the pid is free for reuse and must not be signalled.
    exited: Option<ExitStatus>,
    lines: Arc<Mutex<Vec<String>>>,
    notify: Arc<Mutex<Vec<String>>>,
    /// Set once the child is reaped: the notify thread drains what was sent and ends.
    ended: Arc<AtomicBool>,
    log_thread: Option<JoinHandle<()>>,
    notify_thread: Option<JoinHandle<()>>,
    /// Holds the notify socket; a directory of its own in the system temp dir because a Unix socket path
    /// must fit in 108 bytes, which a test's temp root may not.
    _notify_dir: tempfile::TempDir,
}

impl Run {
    fn spawn(spec: &Spec) -> Run {
        let notify_dir = tempfile::Builder::new()
            .prefix("logtank-notify-")
            .tempdir()
            .expect("a temp dir for the notify socket");
        let notify_path = notify_dir.path().join("n.sock");
        let socket = UnixDatagram::bind(&notify_path).expect("binding the notify socket");
        socket
            .set_read_timeout(Some(NOTIFY_READ_TIMEOUT))
            .expect("a read timeout on the notify socket");
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", spec.log_path.display()));

        let mut command = Command::new(&spec.binary);
        command
            .args(&spec.args)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for name in ENV_REMOVED {
            command.env_remove(name);
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &spec.current_dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", spec.binary.display()));

        let stderr = child.stderr.take().expect("the daemon's stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        // Ends at the end of the pipe: when the process is gone.
        let log_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log_file, "{line}");
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(line);
            }
        });
        let notify = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let (sink, done) = (notify.clone(), ended.clone());
        // Ends at the first receive timeout after the run ended, so every datagram sent before is kept.
        let notify_thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; NOTIFY_MESSAGE_BYTES_MAX];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) if done.load(Ordering::SeqCst) => return,
                    Err(_) => {}
                }
            }
        });
        Run {
            child: Some(child),
            exited: None,
            lines,
            notify,
            ended,
            log_thread: Some(log_thread),
            notify_thread: Some(notify_thread),
            _notify_dir: notify_dir,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The exit status if the process has exited (reaping it), remembered.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            let child = self.child.as_mut()?;
            self.exited = child.try_wait().expect("checking on the daemon");
        }
        self.exited
    }

    fn log_text(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    fn find_line(&self, mut matches: impl FnMut(&str) -> bool) -> Option<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().find(|l| matches(l)).cloned()
    }

    /// Whether the stderr copy has ended (no more lines will come).
    fn log_ended(&self) -> bool {
        self.log_thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Polls until the serving lines, the admin address and READY=1 are in; panics if the process exits
    /// first or [`WAIT_MAX`] passes.
    fn wait_ready(&mut self, spec: &Spec) -> (Vec<SocketAddr>, SocketAddr) {
        let started = Instant::now();
        loop {
            let addrs: Option<Vec<SocketAddr>> = spec
                .prefixes()
                .map(|prefix| self.find_addr(|l| serving_addr(l, prefix)))
                .collect();
            let admin = self.find_addr(admin_addr);
            let ready = self
                .notify
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|m| m.lines().any(|l| l == "READY=1"));
            if let (Some(addrs), Some(admin), true) = (&addrs, admin, ready) {
                return (addrs.clone(), admin);
            }
            if let Some(status) = self.poll_exit() {
                self.reaped();
                panic!("{} exited at start ({status}):\n{}", spec.name(), self.log_text());
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "{} was not ready within {WAIT_MAX:?} (serving lines: {}, admin address: {}, READY=1: {ready}):\n{}",
                spec.name(),
                addrs.is_some(),
                admin.is_some(),
                self.log_text()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn find_addr(&self, parse: impl Fn(&str) -> Option<SocketAddr>) -> Option<SocketAddr> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().find_map(|l| parse(l))
    }

    fn wait_exit(&mut self, spec: &Spec) -> ExitStatus {
        let started = Instant::now();
        let status = loop {
            assert!(self.child.is_some(), "{} is not running", spec.name());
            if let Some(status) = self.poll_exit() {
                break status;
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "{} did not exit within {WAIT_MAX:?}:\n{}",
                spec.name(),
                self.log_text()
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        self.reaped();
        status
    }

    fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
            self.reaped();
        }
    }

    /// After the child has been waited for: forget it, and let both threads finish what the process sent.
    fn reaped(&mut self) {
        self.child = None;
        self.ended.store(true, Ordering::SeqCst);
        join_within(self.log_thread.take(), WAIT_MAX);
        join_within(self.notify_thread.take(), WAIT_MAX);
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Joins `thread` if it finishes within `limit`; otherwise leaves it (a test must not hang on a pipe some
/// other process still holds).
fn join_within(thread: Option<JoinHandle<()>>, limit: Duration) {
    let Some(thread) = thread else { return };
    let started = Instant::now();
    while !thread.is_finished() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
    if thread.is_finished() {
        let _ = thread.join();
    }
}

/// The address after `prefix` in a serving line (`… serving LogReader on 127.0.0.1:40123 (…)`), up to the
/// next space or comma.
pub fn serving_addr(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = line.split(prefix).nth(1)?;
    rest.split_whitespace().next()?.trim_end_matches(',').parse().ok()
}

/// The admin address in the runtime's start-up line (`logtank-NAME VERSION starting: config …, admin ADDR`).
pub fn admin_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains(STARTING_LINE) {
        return None;
    }
    line.rsplit(STARTING_LINE_ADMIN).next()?.trim().parse().ok()
}

/// Reads (and drops) what `stream` receives until the server closes it; panics naming `what` if it is still
/// open after `within`. A reset counts as closed.
pub fn assert_closed_by_server(stream: &mut TcpStream, within: Duration, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        assert!(Instant::now() < deadline, "{what}: the connection is still open");
    }
}

/// Polls `condition` every [`POLL_INTERVAL`] until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    wait_for_or(what, timeout, condition, String::new);
}

/// [`wait_for`], adding `context()` (a log tail, a status) to the failure message.
pub fn wait_for_or(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < timeout,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One HTTP/1.1 request (`Connection: close`, 10 s read timeout); returns the status code (0 if there was
/// none) and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap_or_else(|e| panic!("sending {method} {path} to {addr}: {e}"));
    let mut response = String::new();
    s.read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("reading the reply to {method} {path} from {addr}: {e}"));
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `GET /status` on an admin listener, as JSON; panics unless it answers 200 with JSON.
pub fn admin_status(admin: SocketAddr) -> serde_json::Value {
    let (code, body) = http(admin, "GET", "/status", "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the serving address is read up to the next space or comma, whatever follows it.
    #[test]
    fn serving_addresses_are_parsed() {
        let line = "2026-01-01T00:00:00Z INFO serving LogWriter.send_batch on 127.0.0.1:40123 (ack = fsync)";
        assert_eq!(
            serving_addr(line, "serving LogWriter.send_batch on "),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            serving_addr(
                "<6>serving LogReader on [::1]:15100, more",
                "serving LogReader on "
            ),
            Some("[::1]:15100".parse().unwrap())
        );
        assert_eq!(serving_addr(line, "serving LogReader on "), None);
        assert_eq!(
            serving_addr("serving LogReader on soon", "serving LogReader on "),
            None
        );
    }

    // Proves the admin address comes from the runtime's start-up line only, as the runtime writes it.
    #[test]
    fn admin_address_from_the_start_up_line() {
        let line = format!(
            "logtank-writer 0.1.0{STARTING_LINE}/t/w.toml, listen 127.0.0.1:0{STARTING_LINE_ADMIN}127.0.0.1:9150"
        );
        assert_eq!(admin_addr(&line), Some("127.0.0.1:9150".parse().unwrap()));
        assert_eq!(admin_addr("PUT /readonly, admin 127.0.0.1:1"), None);
    }

    // Proves wait_for returns once the condition holds and fails naming what it waited for.
    #[test]
    fn wait_for_polls_until_the_condition_holds() {
        let mut n = 0;
        wait_for("three polls", WAIT_MAX, || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
        let failed = std::panic::catch_unwind(|| wait_for("never", Duration::ZERO, || false));
        let message = failed.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("timed out waiting for never"), "{message}");
    }
}
