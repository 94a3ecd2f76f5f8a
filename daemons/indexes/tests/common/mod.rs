//! Shared by logtank-indexes' integration tests: start the real binary on ephemeral ports in a temp dir,
//! write raw input the way the writer does (a journal in `storage/raw/live`, one frame per batch holding the
//! batch's records Thrift-encoded back to back), and read an index back through `read_page`.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use logtank_journal::{Journal, JournalOptions};
use logtank_storage::Layout;
use logtank_thrift::{codec, Client, ClientConfig, ClientError, LogPageToken, LogRecord};

/// The longest any condition is polled for.
pub const WAIT_MAX: Duration = Duration::from_secs(60);

/// A logtank-indexes process. Killed (SIGKILL) on drop unless stopped.
pub struct Daemon {
    child: Option<Child>,
    pub reader: SocketAddr,
    pub manager: SocketAddr,
    pub root: PathBuf,
    config: PathBuf,
    log_path: PathBuf,
    args: Vec<String>,
}

/// The config every test starts from: ephemeral ports, fast marker polling and idle pipeline.
pub fn base_config(root: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_root = \"{}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [indexes]\nmanager_listen = \"127.0.0.1:0\"\nmarker_poll_ms = 50\n\
         [io]\nclass = \"none\"\n",
        root.display()
    )
}

impl Daemon {
    /// Starts the daemon on data root `root` with `extra` TOML (whole sections) after the base config.
    pub fn start(root: &Path, extra: &str) -> Daemon {
        Daemon::start_named(root, "indexes", extra)
    }

    /// Like [`Daemon::start`], with the config and log files named after `name` (two daemons in one dir).
    pub fn start_named(root: &Path, name: &str, extra: &str) -> Daemon {
        Daemon::start_args(root, name, extra, &[])
    }

    /// Like [`Daemon::start_named`], with extra command-line arguments (kept for restarts).
    pub fn start_args(root: &Path, name: &str, extra: &str, args: &[&str]) -> Daemon {
        std::fs::create_dir_all(root).unwrap();
        let config = root.join(format!("{name}.toml"));
        let pipeline = if extra.contains("[pipeline]") {
            String::new()
        } else {
            "[pipeline]\nidle_ms = 50\n".to_string()
        };
        std::fs::write(&config, format!("{}{pipeline}{extra}", base_config(root))).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Daemon::start_with(root, &config, &root.join(format!("{name}.log")), &args)
    }

    fn start_with(root: &Path, config: &Path, log_path: &Path, args: &[String]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_logtank-indexes"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = log_path.to_path_buf();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                for (which, marker) in [(0, "serving LogReader on "), (1, "serving LogManager on ")] {
                    if let Some(addr) = line.split(marker).nth(1) {
                        let _ = tx.send((which, addr.trim().parse::<SocketAddr>().unwrap()));
                    }
                }
            }
        });
        let mut addrs = [None, None];
        let deadline = Instant::now() + WAIT_MAX;
        while addrs.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((which, addr)) => addrs[which] = Some(addr),
                Err(_) => {
                    let log = std::fs::read_to_string(log_path).unwrap_or_default();
                    panic!("logtank-indexes did not start:\n{log}");
                }
            }
        }
        Daemon {
            child: Some(child),
            reader: addrs[0].unwrap(),
            manager: addrs[1].unwrap(),
            root: root.to_path_buf(),
            config: config.to_path_buf(),
            log_path: log_path.to_path_buf(),
            args: args.to_vec(),
        }
    }

    /// Starts again on the same data and config (new ports).
    pub fn restart(mut self) -> Daemon {
        self.stop();
        Daemon::start_with(
            &self.root.clone(),
            &self.config.clone(),
            &self.log_path.clone(),
            &self.args.clone(),
        )
    }

    /// Starts again after a kill (the process must be gone).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        let again = Daemon::start_with(&self.root, &self.config, &self.log_path, &self.args);
        *self = again;
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; panics unless the exit status is 0.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::SIGTERM,
            )
            .unwrap();
            let status = c.wait().unwrap();
            assert!(
                status.success(),
                "logtank-indexes exited with {status}:\n{}",
                self.log()
            );
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str) {
        eventually(&format!("log line {text:?}"), || self.log().contains(text));
    }

    pub fn reader_client(&self) -> Client {
        Client::connect(self.reader, &ClientConfig::default()).unwrap()
    }

    pub fn manager_client(&self) -> Client {
        Client::connect(self.manager, &ClientConfig::default()).unwrap()
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.root)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` every 20 ms until it holds, for at most [`WAIT_MAX`].
pub fn eventually(what: &str, check: impl FnMut() -> bool) {
    eventually_or(what, check, String::new);
}

/// [`eventually`], adding `context()` (a log tail, a status) to the failure message.
pub fn eventually_or(what: &str, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < WAIT_MAX,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

/// Makes this data root the active master (both markers).
pub fn make_master(root: &Path) {
    let layout = Layout::new(root);
    touch(&layout.master_marker());
    touch(&layout.safe_to_read_marker());
}

/// A raw segment size small enough that a few batches make several segments.
pub const RAW_SEGMENT_BYTES: u64 = 8192;

/// Opens the writer's journal in `storage/raw/live` with a new segment (as the writer does at start),
/// appends `batches` (each one frame), and closes it, so every segment but the newest is closed.
pub fn write_raw(root: &Path, batches: &[Vec<LogRecord>]) {
    let layout = Layout::new(root);
    let options = JournalOptions {
        segment_size_bytes: RAW_SEGMENT_BYTES,
        record_bytes_max: (RAW_SEGMENT_BYTES / 2) as u32,
        new_segment_on_open: true,
        ..JournalOptions::default()
    };
    let (journal, _) = Journal::open(&layout.raw_live(), options).unwrap();
    for batch in batches {
        let mut payload = Vec::new();
        for record in batch {
            codec::encode_record(&mut payload, record);
        }
        journal.append(&payload).unwrap();
    }
    journal.close().unwrap();
}

/// A record as the writer stores it: index_code and timestamp_ms set.
pub fn add(code: &str, docid: &str, text: &str) -> LogRecord {
    LogRecord {
        index_code: Some(code.into()),
        docid: Some(docid.into()),
        timestamp_ms: Some(1_700_000_000_000),
        fields: Some(BTreeMap::from([
            ("text".to_string(), text.to_string()),
            ("timestamp".to_string(), "1700000000".to_string()),
        ])),
        ..LogRecord::default()
    }
}

pub fn delete(code: &str, docid: &str) -> LogRecord {
    LogRecord {
        index_code: Some(code.into()),
        docid: Some(docid.into()),
        timestamp_ms: Some(1_700_000_000_000),
        deleted: true,
        ..LogRecord::default()
    }
}

/// Files ending in `.journal` in `dir`, sorted.
pub fn journal_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".journal"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Reads every page of `code` from an initial token; returns the records and the number of pages.
pub fn read_all(client: &mut Client, code: &str) -> Result<(Vec<LogRecord>, usize), ClientError> {
    let mut token = LogPageToken::default();
    let mut records = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.read_page(code, &token)?;
        pages += 1;
        records.extend(page.batch.records);
        match page.next_page_token {
            Some(next) => token = next,
            None => return Ok((records, pages)),
        }
        assert!(pages < 100_000, "read_page of {code} never ends");
    }
}

/// The application exception's message, or a panic if the call did not fail that way.
pub fn app_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Application { message, .. }) => message,
        other => panic!("expected an application exception, got {other:?}"),
    }
}

impl Daemon {
    /// The admin listener's address, from the start-up log line.
    pub fn admin(&self) -> SocketAddr {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(" starting: ") && l.contains(", admin "))
            .expect("start-up line");
        line.rsplit(", admin ").next().unwrap().trim().parse().unwrap()
    }

    /// `/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(self.admin()).unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).expect("a body");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// Waits until the pipeline ran a cycle that found nothing to do (everything dealt and compacted).
    pub fn wait_pipeline_idle(&self) {
        eventually("an idle pipeline", || self.status()["pipeline_idle"] == true);
    }
}

impl Daemon {
    /// Pipeline cycles completed so far.
    pub fn cycles(&self) -> u64 {
        self.status()["pipeline_cycles"].as_u64().unwrap_or(0)
    }

    /// Waits until a cycle after the `after`-th one found nothing to do.
    pub fn wait_idle_after(&self, after: u64) {
        eventually_or(
            "an idle pipeline",
            || {
                let s = self.status();
                s["pipeline_idle"] == true && s["pipeline_cycles"].as_u64().unwrap_or(0) > after
            },
            || format!("status: {}\nlog:\n{}", self.status(), tail(&self.log(), 40)),
        );
    }
}
