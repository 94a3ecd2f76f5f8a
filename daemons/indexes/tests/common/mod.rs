//! Shared by logtank-indexes' integration tests: start the real binary on ephemeral ports in a temp dir
//! (process, log and sd_notify handling are logtank-testkit's), write raw input the way the writer does (a
//! journal in `storage/raw/live`, one frame per batch holding the batch's records Thrift-encoded back to
//! back), and read an index back through `read_page`.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use logtank_indexes::{MANAGER_SERVING_PREFIX, READER_SERVING_PREFIX};
use logtank_journal::{Journal, JournalOptions};
use logtank_storage::Layout;
use logtank_testkit::{DaemonProcess, Spec};
use logtank_thrift::{codec, Client, ClientConfig, ClientError, LogPageToken, LogRecord};

pub use logtank_testkit::WAIT_MAX;

/// A logtank-indexes process. Killed (SIGKILL) on drop unless stopped. The process's own methods (`stop`,
/// `kill9`, `pid`, `is_running`, `wait_log`, `admin`, `status`, …) come from [`DaemonProcess`] through
/// `Deref`; the two ports' addresses are fields, read again at every restart.
pub struct Daemon {
    process: DaemonProcess,
    pub reader: SocketAddr,
    pub manager: SocketAddr,
    pub root: PathBuf,
}

impl Deref for Daemon {
    type Target = DaemonProcess;

    fn deref(&self) -> &DaemonProcess {
        &self.process
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut DaemonProcess {
        &mut self.process
    }
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
        Daemon::start_on(root, root, name, extra, args)
    }

    /// Like [`Daemon::start_args`], with the config and log in `root` and the data root at `data` (a
    /// power-loss mount, whose cuts must not take the config with them).
    pub fn start_on(root: &Path, data: &Path, name: &str, extra: &str, args: &[&str]) -> Daemon {
        std::fs::create_dir_all(root).unwrap();
        let config = root.join(format!("{name}.toml"));
        let pipeline = if extra.contains("[pipeline]") {
            String::new()
        } else {
            "[pipeline]\nidle_ms = 50\n".to_string()
        };
        std::fs::write(&config, format!("{}{pipeline}{extra}", base_config(data))).unwrap();
        let mut all = vec!["--config".to_string(), config.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let process = DaemonProcess::start(Spec {
            binary: env!("CARGO_BIN_EXE_logtank-indexes").into(),
            args: all,
            serving_prefix: READER_SERVING_PREFIX,
            also_serving: vec![MANAGER_SERVING_PREFIX],
            log_path: root.join(format!("{name}.log")),
            env: vec![("RUST_BACKTRACE".into(), "1".into())],
            ..Spec::default()
        });
        Daemon::of(process, data)
    }

    fn of(process: DaemonProcess, root: &Path) -> Daemon {
        Daemon {
            reader: process.addr(),
            manager: process.addr_of(MANAGER_SERVING_PREFIX),
            process,
            root: root.to_path_buf(),
        }
    }

    /// Starts again on the same data and config (new ports).
    pub fn restart(mut self) -> Daemon {
        self.process.restart();
        Daemon::of(self.process, &self.root)
    }

    /// Starts again after a kill (the process must be gone).
    pub fn start_again(&mut self) {
        self.process.start_again();
        self.reader = self.process.addr();
        self.manager = self.process.addr_of(MANAGER_SERVING_PREFIX);
    }

    /// Everything logged since the log file was created, every run included.
    pub fn log(&self) -> String {
        self.log_file_text()
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

/// Polls `check` until it holds, for at most [`WAIT_MAX`].
pub fn eventually(what: &str, check: impl FnMut() -> bool) {
    logtank_testkit::wait_for(what, WAIT_MAX, check);
}

/// [`eventually`], adding `context()` (a log tail, a status) to the failure message.
pub fn eventually_or(what: &str, check: impl FnMut() -> bool, context: impl Fn() -> String) {
    logtank_testkit::wait_for_or(what, WAIT_MAX, check, context);
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
    // Durable, as the writer's acknowledged batches are (the power-cut tests cut right after).
    let last = journal.last_appended();
    if last > 0 {
        journal.wait_durable(last).unwrap();
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
    /// Waits until the pipeline ran a cycle that found nothing to do (everything dealt and compacted).
    pub fn wait_pipeline_idle(&self) {
        eventually("an idle pipeline", || self.status()["pipeline_idle"] == true);
    }

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
