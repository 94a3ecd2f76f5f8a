//! Shared by the writer's integration tests: start the real `logtank-writer` binary on ephemeral ports with
//! its data in a temp dir (its sd_notify messages caught on a socket of our own), talk to it with
//! logtank-thrift's blocking client or raw bytes, and read back what it logged with the journal's reader.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logtank_thrift::{decode_record, Client, ClientConfig, ClientError, Limits, LogBatch, LogRecord};
use logtank_writer::config::raw_live_dir;

/// The longest any condition is polled for.
pub const WAIT_MAX: Duration = Duration::from_secs(60);

/// A writer process; killed (SIGKILL) on drop unless stopped.
pub struct Writer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub root: PathBuf,
    config: PathBuf,
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
    notify: Arc<Mutex<Vec<String>>>,
    notify_path: PathBuf,
}

/// The config every test starts from: loopback, ephemeral ports, data under `root`, small segments (so
/// the tests cross rolls), and a fast readonly poll.
pub fn base_config(root: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_root = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [io]\nclass = \"none\"\nlevel = 4\n\n[readonly]\ncheck_interval_ms = 50\n",
        root.display()
    )
}

impl Writer {
    /// Starts the writer on `root` with the base config plus `extra` TOML (whole sections) and `args`.
    pub fn start(root: &Path, extra: &str, args: &[&str]) -> Writer {
        let config = root.join("writer.toml");
        std::fs::write(&config, format!("{}\n{extra}", base_config(root))).unwrap();
        Writer::start_with(root, &config, args.iter().map(|a| a.to_string()).collect())
    }

    /// Starts the writer on `root` with a config file already written.
    pub fn start_existing(root: &Path, config: &Path, args: &[&str]) -> Writer {
        Writer::start_with(root, config, args.iter().map(|a| a.to_string()).collect())
    }

    fn start_with(root: &Path, config: &Path, args: Vec<String>) -> Writer {
        let (child, log, notify, notify_path) = spawn(root, config, &args);
        let mut w = Writer {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            root: root.to_path_buf(),
            config: config.to_path_buf(),
            args,
            log,
            notify,
            notify_path,
        };
        w.wait_ready();
        w
    }

    /// Starts a writer expected to fail; returns its exit status and log.
    pub fn start_failing(root: &Path, config: &Path, args: &[&str]) -> (ExitStatus, String) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (mut child, log, _notify, notify_path) = spawn(root, config, &args);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < WAIT_MAX, "the writer did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(dir) = notify_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        // The log thread ends with the pipe; wait for the line that says why.
        let started = Instant::now();
        while Arc::strong_count(&log) > 1 && started.elapsed() < WAIT_MAX {
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = log.lock().unwrap().join("\n");
        (status, text)
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let lines = self.log.lock().unwrap().clone();
            let serving = lines.iter().find_map(|l| logtank_writer::parse_serving_line(l));
            let admin = lines.iter().find_map(|l| {
                l.contains(" starting: config ")
                    .then(|| l.rsplit(", admin ").next()?.trim().parse().ok())
                    .flatten()
            });
            let ready = self
                .notify
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.lines().any(|l| l == "READY=1"));
            if let (Some(addr), Some(admin), true) = (serving, admin, ready) {
                self.addr = addr;
                self.admin = admin;
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the writer exited at start ({status}):\n{}", self.log_text());
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "the writer did not become ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then start again on the same data and config (new ports).
    pub fn restart_after_kill9(mut self) -> Writer {
        self.kill9();
        self.restart_stopped()
    }

    /// SIGTERM (exit 0 asserted), then start again.
    pub fn restart(mut self) -> Writer {
        self.stop();
        self.restart_stopped()
    }

    fn restart_stopped(&self) -> Writer {
        Writer::start_with(&self.root, &self.config, self.args.clone())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::SIGTERM).unwrap();
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let started = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "the writer did not exit:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; panics unless the exit status is 0.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            self.terminate();
            let status = self.wait_exit();
            assert!(
                status.success(),
                "the writer exited with {status}:\n{}",
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `text`; returns it.
    pub fn wait_log(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "no log line with {text:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every sd_notify message so far.
    pub fn notify_messages(&self) -> Vec<String> {
        self.notify.lock().unwrap().clone()
    }

    pub fn client(&self) -> Client {
        client(self.addr)
    }

    pub fn raw_live(&self) -> PathBuf {
        raw_live_dir(&self.root)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.kill9();
        if let Some(dir) = self.notify_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

type Spawned = (Child, Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<String>>>, PathBuf);

fn spawn(root: &Path, config: &Path, args: &[String]) -> Spawned {
    // Its own short directory: a unix socket path must fit in 108 bytes, which a test's temp root may not.
    let notify_dir = tempfile::Builder::new()
        .prefix("writer-notify-")
        .tempdir()
        .unwrap()
        .keep();
    let notify_path = notify_dir.join("n.sock");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logtank-writer"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("JOURNAL_STREAM")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .current_dir(root)
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    let log_path = root.join("writer.log");
    std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            sink.lock().unwrap().push(line);
        }
    });
    let notify = Arc::new(Mutex::new(Vec::new()));
    let sink = notify.clone();
    let pid = child.id();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        // Ends when the process is gone (kill -0 fails) and nothing more arrives.
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => sink
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => {
                    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (child, log, notify, notify_path)
}

/// A client with a 30 s read timeout.
pub fn client(addr: SocketAddr) -> Client {
    let config = ClientConfig {
        read_timeout_ms: 30_000,
        ..ClientConfig::default()
    };
    Client::connect(addr, &config).unwrap()
}

/// A record as IndexTank's API builds it for an add.
pub fn record(code: &str, docid: &str) -> LogRecord {
    LogRecord {
        index_code: Some(code.to_string()),
        docid: Some(docid.to_string()),
        fields: Some(BTreeMap::from([
            ("text".to_string(), format!("the text of {docid}")),
            ("timestamp".to_string(), "1325721721".to_string()),
        ])),
        variables: Some(BTreeMap::from([(0, 1.5)])),
        ..LogRecord::default()
    }
}

/// A batch of `n` records with docids `<prefix>-0` …
pub fn batch(code: &str, prefix: &str, n: usize) -> LogBatch {
    LogBatch {
        records: (0..n).map(|i| record(code, &format!("{prefix}-{i}"))).collect(),
    }
}

/// The server's message for an application exception; panics on anything else.
pub fn app_error(result: Result<(), ClientError>) -> String {
    match result {
        Err(ClientError::Application { message, .. }) => message,
        other => panic!("expected an application exception, got {other:?}"),
    }
}

/// Every batch in the raw log under `root` (history, then live, each read with the journal's reader), each
/// as its records. Only for a writer that is not running: the reader's recovery scan is not meant for a
/// directory a live journal appends to.
pub fn read_raw_log(root: &Path) -> Vec<Vec<LogRecord>> {
    let history = logtank_writer::config::raw_history_dir(root);
    let mut batches = if history.is_dir() {
        read_journal_dir(&history)
    } else {
        Vec::new()
    };
    batches.extend(read_journal_dir(&raw_live_dir(root)));
    batches
}

/// Every batch of one journal directory, from its first record (which is not 1 once the indexes daemon
/// moved older segments away).
pub fn read_journal_dir(dir: &Path) -> Vec<Vec<LogRecord>> {
    let open = |from| logtank_journal::Reader::open_dir(dir, from, 256 << 20);
    let (reader, report) = open(1).unwrap();
    let reader = match report.segments.first() {
        Some(first) if first.first_seq > 1 => open(first.first_seq).unwrap().0,
        _ => reader,
    };
    reader
        .map(|record| decode_batch_payload(&record.unwrap().payload))
        .collect()
}

/// Splits a raw log record's payload into its Thrift-encoded records; panics on any leftover byte.
pub fn decode_batch_payload(mut bytes: &[u8]) -> Vec<LogRecord> {
    let limits = Limits::default();
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let (r, used) = decode_record(bytes, &limits).unwrap();
        records.push(r);
        bytes = &bytes[used..];
    }
    records
}

/// Segment files in the raw log's live directory.
pub fn segments(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(raw_live_dir(root))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    v.sort();
    v
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after [`WAIT_MAX`].
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT_MAX, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request; returns (status code, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
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

/// `GET /status` as JSON.
pub fn status(admin: SocketAddr) -> serde_json::Value {
    let (code, body) = http(admin, "GET", "/status", "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Sends raw bytes on a fresh connection, half-closes, and returns everything the server sent back
/// before closing.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}
