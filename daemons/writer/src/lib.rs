//! `logtank-writer`: the storage writer. It takes `LogWriter.send_batch` calls (IndexTank's Thrift
//! protocol, port 15000), appends each batch as one record of the raw log (a journal in
//! `<data_root>/storage/raw/live`) and acknowledges once the batch is durable (`writer.ack = "fsync"`,
//! group commit) or written to the OS (`"write"`, IndexTank's behaviour). Operator guide: `docs/writer.md`.
//!
//! Start reading at [`conn`] (the client port and `send_batch`), then [`batch`] (the rules and the raw log
//! format, as a pure function). Around them: [`readonly`] (when writes are refused), [`coordination`] (the
//! registration other daemons find us by), [`config`], [`metrics`]; one writer per data root is
//! `logtank_storage::DataRootLock`.
//!
//! Invariants: a batch is one journal record (all or nothing); nothing is appended before every record of
//! the batch passed its checks; a batch is acknowledged only after the journal mark `writer.ack` asks for
//! covers it; the writer never reads old raw log segments (the indexes daemon moves them away) and never
//! needs coordination to accept writes.
#![forbid(unsafe_code)]

pub mod batch;
pub mod config;
pub mod conn;
pub mod coordination;
pub mod metrics;
pub mod replication;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use logtank_journal::{Journal, JournalOptions, Marks, RecoveryReport};
use logtank_runtime::readonly::{self, Readonly, ReadonlyNames};
use logtank_runtime::{CommonArgs, Daemon, DaemonContext, Shutdown, StatusSource, WorkTracker};
use logtank_storage::{DataRootLock, LockRole};
use serde_json::{Map, Value};
use tokio::sync::watch;

pub use config::WriterConfig;

use crate::batch::BatchLimits;
use crate::config::{AckMode, ReplicationMode};
use crate::conn::WriterPort;
use crate::coordination::CoordState;
use crate::metrics::WriterMetrics;
use crate::replication::Replicator;

/// How often opening the journal is tried when a segment vanishes during the scan (the indexes daemon
/// moves closed segments from raw/live to raw/history at any time).
pub const JOURNAL_OPEN_ATTEMPTS_MAX: u32 = 5;
const JOURNAL_OPEN_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How readonly refusals name the writer.
pub const READONLY_NAMES: ReadonlyNames = ReadonlyNames {
    daemon: "logtank-writer",
    config_key: "readonly.enabled",
};

/// Adds `--readonly` to the overrides: the same as `--set readonly.enabled=true`, applied last.
pub fn with_readonly_flag(common: CommonArgs, readonly: bool) -> CommonArgs {
    readonly::with_flag(common, readonly, READONLY_NAMES.config_key)
}

/// The settings a reload may change, read by the connections for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub ack: AckMode,
    pub record_bytes_max: u32,
    pub batch_bytes_max: u32,
    pub batch_records_max: u32,
    pub batch_index_codes_max: u32,
    pub readonly_check_interval: Duration,
}

impl Settings {
    fn from_config(c: &WriterConfig) -> Settings {
        Settings {
            ack: c.writer.ack,
            record_bytes_max: c.writer.record_bytes_max,
            batch_bytes_max: c.writer.batch_bytes_max,
            batch_records_max: c.writer.batch_records_max,
            batch_index_codes_max: c.writer.batch_index_codes_max,
            readonly_check_interval: Duration::from_millis(c.readonly.check_interval_ms),
        }
    }

    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            record_bytes_max: self.record_bytes_max,
            batch_bytes_max: self.batch_bytes_max,
            batch_records_max: self.batch_records_max,
            batch_index_codes_max: self.batch_index_codes_max,
        }
    }
}

/// What the connections, the admin routes and `/status` share. Holds no reference to the journal, so the
/// journal can be closed at shutdown while the admin port still answers.
pub(crate) struct Shared {
    port: u16,
    settings: RwLock<Settings>,
    pub readonly: Arc<Readonly>,
    pub metrics: WriterMetrics,
    coord: Arc<Mutex<CoordState>>,
    marks: watch::Receiver<Marks>,
    backend: &'static str,
    raw_live: PathBuf,
    /// Bookies mode: the replication of the raw log (`None` with `replication.mode = "none"`).
    pub replication: Option<Arc<Replicator>>,
}

impl Shared {
    pub fn settings(&self) -> Settings {
        *self.settings.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn count_batch(&self, records: usize, bytes: usize) {
        self.metrics.batches.inc();
        self.metrics.records.inc_by(records as u64);
        self.metrics.bytes.inc_by(bytes as u64);
    }

    fn status_line(&self) -> String {
        let readonly = match self.readonly.status() {
            s if s.readonly => format!("yes ({})", s.reasons.join("; ")),
            _ => "no".to_string(),
        };
        let replication = match &self.replication {
            Some(r) => format!(", replication: {}", r.state()),
            None => String::new(),
        };
        format!(
            "serving {}, ack={}, {} batches, readonly: {readonly}{replication}",
            self.port,
            self.settings().ack.name(),
            self.metrics.batches.get()
        )
    }

    fn coord_state(&self) -> String {
        match &*self.coord.lock().unwrap_or_else(PoisonError::into_inner) {
            CoordState::Disabled => "disabled".into(),
            CoordState::Connecting => "connecting".into(),
            CoordState::Registered { path } => format!("registered {path}"),
            CoordState::Reregistering { path } => format!("registering {path} again"),
        }
    }
}

impl StatusSource for Shared {
    fn readonly(&self) -> bool {
        self.readonly.is_on()
    }

    fn fields(&self) -> Map<String, Value> {
        let marks = *self.marks.borrow();
        let m = &self.metrics;
        let mut f = Map::new();
        f.insert("ack".into(), self.settings().ack.name().into());
        f.insert("batches".into(), m.batches.get().into());
        f.insert("records".into(), m.records.get().into());
        f.insert("bytes".into(), m.bytes.get().into());
        f.insert("connections".into(), m.connections.get().into());
        f.insert("readonly_reasons".into(), self.readonly.status().reasons.into());
        f.insert("coordination".into(), self.coord_state().into());
        f.insert("journal_written".into(), marks.written.into());
        f.insert("journal_durable".into(), marks.durable.into());
        f.insert("journal_io".into(), self.backend.into());
        f.insert("raw_log".into(), self.raw_live.display().to_string().into());
        match &self.replication {
            Some(r) => {
                f.insert("replication".into(), "bookies".into());
                f.insert("replication_state".into(), r.state().to_string().into());
                f.insert(
                    "replication_log".into(),
                    logtank_ledger::logs::log_path(r.writer_id()).into(),
                );
                f.insert("replication_entries".into(), r.metrics.entries.get().into());
                f.insert(
                    "replication_local_only_batches".into(),
                    r.metrics.local_only_batches.get().into(),
                );
            }
            None => {
                f.insert("replication".into(), "none".into());
            }
        }
        f
    }
}

/// The running writer, as the runtime drives it.
pub struct Writer {
    config: WriterConfig,
    /// `writer.batch_bytes_max` at start: the journal's record limit, which only a restart changes.
    journal_record_bytes_max: u32,
    shared: Arc<Shared>,
    journal: Arc<Journal>,
    tracker: WorkTracker,
    accept: tokio::task::JoinHandle<()>,
    readonly_task: tokio::task::JoinHandle<()>,
    coord_task: Option<tokio::task::JoinHandle<()>>,
    replication_tasks: Option<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)>,
    lock: DataRootLock,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("port", &self.shared.port)
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

/// The published start of the line `start` logs once the client port is bound, followed by its address:
/// `serving LogWriter.send_batch on ADDR (ack = …, raw log …, journal IO …)`. Tests that bind port 0 read
/// the address there (logtank-testkit), so the text is kept stable.
pub const SERVING_PREFIX: &str = "serving LogWriter.send_batch on ";

impl Daemon for Writer {
    type Config = WriterConfig;
    const NAME: &'static str = "writer";

    async fn start(config: WriterConfig, ctx: DaemonContext) -> anyhow::Result<Self> {
        let lock = config.layout().lock(LockRole::Writer)?;
        let raw_live = config.raw_live_dir();
        // Durably (found by the power-cut test: the first acknowledged batches went with the new directories).
        logtank_durable::create_dir_all_durably(&raw_live)
            .with_context(|| format!("creating {}", raw_live.display()))?;
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("binding {} (server.listen)", config.server.listen))?;
        let listen_addr = listener.local_addr()?;

        let readonly = Arc::new(Readonly::new(
            READONLY_NAMES,
            config.readonly.enabled,
            config.readonly_marker(),
            vec![raw_live.clone()],
            config.readonly.disk_usage_high_percent,
            config.readonly.disk_usage_low_percent,
        ));
        readonly.check();

        let options = journal_options(&config);
        let dir = raw_live.clone();
        let (journal, report) = tokio::task::spawn_blocking(move || open_journal(&dir, options))
            .await?
            .with_context(|| format!("opening the raw log {}", raw_live.display()))?;
        log_recovery(&report);
        let journal = Arc::new(journal);
        // A journal that cannot create its next segment (a full or failing disk) makes the writer readonly
        // with the reason, until it can: no exit, so no restart loop.
        let growing = Arc::downgrade(&journal);
        readonly.set_storage_probe(move || {
            growing
                .upgrade()
                .and_then(|j| j.cannot_grow())
                .map(|why| cannot_grow_reason(&why))
        });

        let metrics = WriterMetrics::default();
        metrics.register(ctx.metrics());
        ctx.metrics().with_registry(|r| journal.metrics().register(r));
        metrics.readonly.set(i64::from(readonly.is_on()));

        let replication = match (config.replication.mode, config.coord.coord_config()) {
            (ReplicationMode::Bookies, Some(coord_config)) => {
                ctx.notifier().status("replication: connecting to coordination");
                let coord = logtank_coord::Coord::connect(&coord_config)
                    .await
                    .context("connecting to coordination for replication ([coord] servers)")?;
                let writer_id = config.replication.writer_id.clone().unwrap_or_else(|| {
                    logtank_coord::advertised(config.writer.advertise.as_deref(), listen_addr)
                });
                ctx.notifier()
                    .status("replication: getting the log in step with the bookies");
                let replicator =
                    match Replicator::start(coord, journal.clone(), config.replication.clone(), writer_id)
                        .await
                    {
                        Ok(r) => r,
                        // Only the operator can decide which log is right: no restart loop (exit 78).
                        Err(e @ crate::replication::ReplicationError::Diverged { .. }) => {
                            return Err(logtank_runtime::daemon::SetupError(e.to_string()))
                                .context("starting replication to the bookies")
                        }
                        Err(e) => return Err(e).context("starting replication to the bookies"),
                    };
                replicator.metrics.register(ctx.metrics());
                log::info!(
                    "replicating the raw log to bookies as {} (E={} Qw={} Qa={}, on quorum loss: {:?}): {}",
                    logtank_ledger::logs::log_path(replicator.writer_id()),
                    config.replication.ensemble_size,
                    config.replication.write_quorum,
                    config.replication.ack_quorum,
                    config.replication.on_quorum_loss,
                    replicator.state()
                );
                Some(Arc::new(replicator))
            }
            _ => None,
        };

        let shared = Arc::new(Shared {
            port: listen_addr.port(),
            settings: RwLock::new(Settings::from_config(&config)),
            readonly,
            metrics,
            coord: Arc::new(Mutex::new(CoordState::Disabled)),
            marks: journal.subscribe(),
            backend: journal.backend(),
            raw_live: raw_live.clone(),
            replication: replication.clone(),
        });
        ctx.set_status_source(shared.clone());
        ctx.add_admin_routes(readonly::admin_routes(shared.readonly.clone()));
        install_readonly_hook(&shared, &ctx);

        let tracker = WorkTracker::new();
        let settings = shared.settings();
        let port = Arc::new(WriterPort {
            shared: shared.clone(),
            journal: journal.clone(),
            daemon: ctx.clone(),
        });
        let accept = tokio::spawn(logtank_thrift_server::serve(
            listener,
            conn::port_options(conn::thrift_limits(settings.batch_bytes_max), &config.writer),
            port,
            tracker.clone(),
            ctx.shutdown().clone(),
        ));
        let polled = shared.clone();
        let readonly_task = tokio::spawn(readonly::poll(
            shared.readonly.clone(),
            move || polled.settings().readonly_check_interval,
            ctx.shutdown().clone(),
        ));
        let replication_tasks = replication.map(|r| {
            let layout = config.layout();
            (
                tokio::spawn(r.clone().resync_forever(ctx.shutdown().clone())),
                tokio::spawn(replication_retention(
                    r,
                    layout,
                    Duration::from_millis(config.replication.retention_check_interval_ms),
                    ctx.shutdown().clone(),
                )),
            )
        });
        let coord_task = config.coord.coord_config().map(|coord| {
            let advertised = logtank_coord::advertised(config.writer.advertise.as_deref(), listen_addr);
            tokio::spawn(coordination::run(
                coord,
                advertised,
                shared.coord.clone(),
                ctx.shutdown().clone(),
            ))
        });
        log::info!(
            "{SERVING_PREFIX}{listen_addr} (ack = {}, raw log {}, journal IO {})",
            config.writer.ack.name(),
            raw_live.display(),
            journal.backend()
        );
        Ok(Writer {
            journal_record_bytes_max: config.writer.batch_bytes_max,
            config,
            shared,
            journal,
            tracker,
            accept,
            readonly_task,
            coord_task,
            replication_tasks,
            lock,
        })
    }

    fn status_line(&self) -> String {
        self.shared.status_line()
    }

    fn stalled(&self) -> Option<String> {
        self.journal
            .stalled(logtank_runtime::daemon::STALL_LIMIT)
            .map(|d| format!("the raw log's journal thread has not come back from its IO for {d:.0?}"))
    }

    async fn reload(&mut self, config: WriterConfig) -> anyhow::Result<()> {
        let old = &self.config;
        if config.writer.batch_bytes_max > self.journal_record_bytes_max {
            anyhow::bail!(
                "writer.batch_bytes_max = {} is more than the raw log was opened with ({}); it can grow only at a \
                 restart",
                config.writer.batch_bytes_max,
                self.journal_record_bytes_max
            );
        }
        let restart_only = [
            (
                "writer.segment_size_bytes",
                old.writer.segment_size_bytes != config.writer.segment_size_bytes,
            ),
            (
                "writer.fsync_interval_ms",
                old.writer.fsync_interval_ms != config.writer.fsync_interval_ms,
            ),
            (
                "writer.io_backend",
                old.writer.io_backend != config.writer.io_backend,
            ),
            (
                "writer.connections_max",
                old.writer.connections_max != config.writer.connections_max,
            ),
            (
                "writer.connections_per_address_max",
                old.writer.connections_per_address_max != config.writer.connections_per_address_max,
            ),
            (
                "writer.idle_timeout_ms",
                old.writer.idle_timeout_ms != config.writer.idle_timeout_ms,
            ),
            (
                "writer.request_read_timeout_ms",
                old.writer.request_read_timeout_ms != config.writer.request_read_timeout_ms,
            ),
            (
                "writer.advertise",
                old.writer.advertise != config.writer.advertise,
            ),
            ("coord", old.coord != config.coord),
            ("replication", old.replication != config.replication),
        ];
        for (key, changed) in restart_only {
            if changed {
                log::warn!("config: {key} changed; it takes effect at the next restart");
            }
        }
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Settings::from_config(&config);
        self.shared.readonly.reconfigure(
            config.readonly.enabled,
            config.readonly.disk_usage_high_percent,
            config.readonly.disk_usage_low_percent,
        );
        self.config = config;
        Ok(())
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        // The shutdown signal has fired: the accept loop stops, idle connections close, and connections in
        // the middle of a batch finish it (acknowledged as usual) before closing.
        self.accept.await?;
        self.tracker.wait_idle().await;
        self.readonly_task.await?;
        if let Some(task) = self.coord_task {
            task.await?;
        }
        if let Some((resync, retention)) = self.replication_tasks {
            resync.await?;
            retention.await?;
        }
        if let Some(r) = &self.shared.replication {
            r.close().await;
        }
        let batches = self.shared.metrics.batches.get();
        match Arc::try_unwrap(self.journal) {
            Ok(journal) => tokio::task::spawn_blocking(move || journal.close())
                .await?
                .context("closing the raw log")?,
            Err(journal) => {
                // Cannot happen (every connection has ended); dropping still writes and fsyncs.
                log::warn!("the journal is still referenced at shutdown; closing it on drop");
                drop(journal);
            }
        }
        drop(self.lock);
        log::info!("logtank-writer stopped cleanly after {batches} batches");
        Ok(())
    }
}

/// Deletes the log's ledgers whose records are all older than the oldest raw segment on this host (live or
/// history): the indexes daemon's cleaner removes segments only once dealt and past raw-history retention.
async fn replication_retention(
    r: Arc<Replicator>,
    layout: logtank_storage::Layout,
    interval: Duration,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
        let dirs = [layout.raw_live(), layout.raw_history()];
        let oldest = tokio::task::spawn_blocking(move || oldest_raw_seq(&dirs))
            .await
            .ok()
            .flatten();
        if let Some(oldest) = oldest {
            if let Err(e) = r.delete_ledgers_before(oldest).await {
                log::warn!("replication retention: {e}");
            }
        }
    }
}

/// The readonly reason while the raw log cannot create its next segment.
pub(crate) fn cannot_grow_reason(why: &str) -> String {
    format!("the raw log cannot create its next segment: {why}")
}

/// The first record of the oldest journal segment in `dirs` (segments are named after it).
fn oldest_raw_seq(dirs: &[PathBuf]) -> Option<u64> {
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".journal")?.parse::<u64>().ok()
        })
        .min()
}

fn journal_options(config: &WriterConfig) -> JournalOptions {
    let io = config.io;
    JournalOptions {
        segment_size_bytes: config.writer.segment_size_bytes,
        fsync_interval: config.writer.fsync_interval(),
        io_backend: config.writer.io_backend(),
        record_bytes_max: config.writer.batch_bytes_max,
        // A restart starts a new head segment, as IndexTank's writer did: the previous one is closed and
        // the indexes daemon may move it away.
        new_segment_on_open: true,
        drop_closed_from_cache: config.writer.drop_closed_segments_from_cache,
        thread_init: Some(Arc::new(move || {
            logtank_runtime::ioprio::apply_config(&io, "writer journal thread");
        })),
        ..JournalOptions::default()
    }
}

/// Opens the journal, trying again when a file vanished during the scan (moved to raw/history by the
/// indexes daemon between the listing and the read).
fn open_journal(
    dir: &std::path::Path,
    options: JournalOptions,
) -> Result<(Journal, RecoveryReport), logtank_journal::Error> {
    let mut attempt = 1;
    loop {
        match Journal::open(dir, options.clone()) {
            Err(logtank_journal::Error::Io { path, source })
                if source.kind() == std::io::ErrorKind::NotFound && attempt < JOURNAL_OPEN_ATTEMPTS_MAX =>
            {
                log::info!(
                    "{} vanished while the raw log was being opened (moved to raw/history?); opening again",
                    path.display()
                );
                attempt += 1;
                std::thread::sleep(JOURNAL_OPEN_RETRY_PAUSE);
            }
            result => return result,
        }
    }
}

fn log_recovery(report: &RecoveryReport) {
    if let Some(torn) = &report.torn_tail {
        log::warn!(
            "raw log: a torn tail of {} bytes was cut at {} offset {} (never acknowledged with ack = \"fsync\")",
            torn.discarded_bytes,
            torn.path.display(),
            torn.offset
        );
    }
}

/// Keeps the metric and `STATUS=` in step with readonly; holds the shared state weakly (the hook lives
/// inside it).
fn install_readonly_hook(shared: &Arc<Shared>, ctx: &DaemonContext) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let notifier = ctx.notifier().clone();
    shared.readonly.set_on_change(move |on| {
        if let Some(shared) = weak.upgrade() {
            shared.metrics.readonly.set(i64::from(on));
            notifier.status(&shared.status_line());
        }
    });
}
