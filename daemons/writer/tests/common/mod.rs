//! Shared by the writer's integration tests: start the real `logtank-writer` binary on ephemeral ports with
//! its data in a temp dir (process, log and sd_notify handling are logtank-testkit's), talk to it with
//! logtank-thrift's blocking client or raw bytes, and read back what it logged with the journal's reader.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use logtank_testkit::{DaemonProcess, Spec};
use logtank_thrift::{decode_record, Client, ClientConfig, ClientError, Limits, LogBatch, LogRecord};
use logtank_writer::config::raw_live_dir;

// Not every test file uses every helper (hence dead_code above); these are re-exported for those that do.
#[allow(unused_imports)]
pub use logtank_testkit::{http, WAIT_MAX};

/// A writer process; killed (SIGKILL) on drop unless stopped. The process's own methods (`stop`, `kill9`,
/// `wait_log`, `notify_messages`, …) come from [`DaemonProcess`] through `Deref`; the addresses are fields,
/// read again at every restart.
pub struct Writer {
    process: DaemonProcess,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub root: PathBuf,
}

impl Deref for Writer {
    type Target = DaemonProcess;

    fn deref(&self) -> &DaemonProcess {
        &self.process
    }
}

impl DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut DaemonProcess {
        &mut self.process
    }
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
    /// Starts the writer with its config and log in `root` and its data in `data` (a power-loss mount,
    /// whose cuts must not take the config with them).
    pub fn start_on(root: &Path, data: &Path, extra: &str, args: &[&str]) -> Writer {
        let config = root.join("writer.toml");
        std::fs::write(&config, format!("{}\n{extra}", base_config(data))).unwrap();
        Writer::of(DaemonProcess::start(spec(root, &config, args)), data)
    }

    /// Starts the killed writer again on the same data and config (new ports).
    pub fn start_again(mut self) -> Writer {
        self.process.start_again();
        Writer::of(self.process, &self.root)
    }

    /// The writer's data root.
    pub fn data_root(&self) -> &Path {
        &self.root
    }
}

/// How the tests run the writer: `--config config` then `args`, from `root`, logging to `root/writer.log`.
fn spec(root: &Path, config: &Path, args: &[&str]) -> Spec {
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    Spec {
        binary: env!("CARGO_BIN_EXE_logtank-writer").into(),
        args: all,
        serving_prefix: logtank_writer::SERVING_PREFIX,
        log_path: root.join("writer.log"),
        current_dir: Some(root.to_path_buf()),
        ..Spec::default()
    }
}

impl Writer {
    /// Starts the writer on `root` with the base config plus `extra` TOML (whole sections) and `args`.
    pub fn start(root: &Path, extra: &str, args: &[&str]) -> Writer {
        let config = root.join("writer.toml");
        std::fs::write(&config, format!("{}\n{extra}", base_config(root))).unwrap();
        Writer::start_existing(root, &config, args)
    }

    /// Starts the writer on `root` with a config file already written.
    pub fn start_existing(root: &Path, config: &Path, args: &[&str]) -> Writer {
        Writer::of(DaemonProcess::start(spec(root, config, args)), root)
    }

    /// Starts a writer expected to fail; returns its exit status and log.
    pub fn start_failing(root: &Path, config: &Path, args: &[&str]) -> (ExitStatus, String) {
        DaemonProcess::start_failing(spec(root, config, args))
    }

    fn of(process: DaemonProcess, root: &Path) -> Writer {
        Writer {
            addr: process.addr(),
            admin: process.admin(),
            process,
            root: root.to_path_buf(),
        }
    }

    /// SIGKILL, then start again on the same data and config (new ports).
    pub fn restart_after_kill9(mut self) -> Writer {
        self.process.restart_after_kill9();
        Writer::of(self.process, &self.root)
    }

    /// SIGTERM (exit 0 asserted), then start again.
    pub fn restart(mut self) -> Writer {
        self.process.restart();
        Writer::of(self.process, &self.root)
    }

    pub fn client(&self) -> Client {
        client(self.addr)
    }

    pub fn raw_live(&self) -> PathBuf {
        raw_live_dir(&self.root)
    }
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

/// Polls `condition` until it holds; panics naming `what` after [`WAIT_MAX`].
pub fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    logtank_testkit::wait_for(what, WAIT_MAX, condition);
}

/// `GET /status` as JSON.
pub fn status(admin: SocketAddr) -> serde_json::Value {
    logtank_testkit::admin_status(admin)
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
