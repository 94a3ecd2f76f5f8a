//! `logtank-indexes`: the indexes reader. It replaces IndexTank's IndexesLogServer: the LogReader service
//! (`read_page`, port 15100) that index engines recover from, the LogManager service (port 16000), and, on
//! the active master, the pipeline that deals the writer's raw log into per-index segments, sorts,
//! optimizes and cleans them (`logtank-storage` does the work; this crate decides when).
//!
//! Start reading at [`Indexes::start`]. Modules:
//! - [`service`]: what the two ports do with each call, and the gating of reads (the ports themselves,
//!   accept loop, connections and framing, are `logtank-thrift-server`'s);
//! - [`roles`]: the marker files and fencing, i.e. whether this host is the active master;
//! - [`pipeline`]: the dedicated thread that runs the storage pipeline while active;
//! - [`coordination`]: epoch bump, recovery registration and fencing through `/logtank`;
//! - [`config`], [`metrics`]; the data root's dealer lock is `logtank_storage::DataRootLock` (one reader
//!   per data root).
#![forbid(unsafe_code)]

pub mod config;
pub mod coordination;
pub mod metrics;
pub mod pipeline;
pub mod roles;
pub mod service;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use anyhow::Context;
use logtank_runtime::{CommonArgs, Daemon, DaemonContext, StatusSource, WorkTracker};
use logtank_storage::{DataRootLock, Layout, LockRole, Storage};
use logtank_thrift::binary::Limits;
use logtank_thrift_server::PortOptions;
use serde_json::{Map, Value};

pub use config::IndexesConfig;

use crate::coordination::{CoordState, Coordination, SharedCoordState};
use crate::metrics::IndexesMetrics;
use crate::pipeline::{Pipeline, PipelineStatus, SharedPipelineStatus};
use crate::roles::{RoleView, Roles};
use crate::service::{ManagerPort, ReaderPort, Shared};

/// The largest request either port accepts. Their calls carry an index code and a page token, a few
/// hundred bytes; a `send_batch` sent here by mistake is answered as long as it fits (UNKNOWN_METHOD),
/// a larger one is a protocol error. This also bounds each connection's receive buffer.
pub const REQUEST_BYTES_MAX: usize = 1 << 20;

/// logtank-indexes' command line: the shared flags plus `--manager-listen`.
#[derive(Debug, clap::Parser)]
#[command(name = "logtank-indexes", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,

    /// LogManager listen address, same as --set indexes.manager_listen=ADDR
    #[arg(long, value_name = "ADDR")]
    pub manager_listen: Option<String>,
}

impl Cli {
    /// The runtime's arguments, with `--manager-listen` turned into an override (before the `--set` ones,
    /// which win, as with the runtime's own sugar flags).
    pub fn into_common(self) -> CommonArgs {
        let mut common = self.common;
        if let Some(addr) = self.manager_listen {
            common.set.insert(
                0,
                logtank_runtime::config::Override::from_flag(
                    "--manager-listen",
                    "indexes.manager_listen",
                    &addr,
                ),
            );
        }
        common
    }
}

/// The limits requests are decoded with.
pub fn request_limits() -> Limits {
    Limits {
        message_bytes_max: REQUEST_BYTES_MAX,
        string_bytes_max: REQUEST_BYTES_MAX,
        ..Limits::default()
    }
}

/// The running daemon, as the runtime drives it.
#[derive(Debug)]
pub struct Indexes {
    reader_addr: SocketAddr,
    manager_addr: SocketAddr,
    status: Arc<Status>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pipeline: Option<std::thread::JoinHandle<()>>,
    progress: Arc<pipeline::PipelineProgress>,
    stall_timeout: std::time::Duration,
    tracker: WorkTracker,
    _lock: DataRootLock,
}

/// The status line's note on a master with no coordination (`coord.servers` empty): nothing registers it,
/// and nothing fences another host that also has the master marker (docs/operations.md).
pub const SINGLE_HOST_MODE: &str = "single-host mode (coord.servers is empty: nothing fences another master)";

/// What the status line and `/status` show, kept up to date by the pipeline thread and the coordination
/// task so neither ever does IO.
#[derive(Debug)]
struct Status {
    roles: Arc<Roles>,
    pipeline: SharedPipelineStatus,
    coord: SharedCoordState,
}

impl Status {
    /// The role, the pipeline's and the coordination task's state, each copied out of its lock.
    fn snapshot(&self) -> (RoleView, PipelineStatus, CoordState) {
        let pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let coord = self.coord.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (self.roles.view(), pipeline, coord)
    }

    fn line(&self) -> String {
        let (view, p, coord) = self.snapshot();
        let counts = match p.dealer_next_seq {
            Some(seq) => format!("{} indexes; dealer at seq {seq}", p.indexes),
            None => format!("{} indexes; nothing dealt yet", p.indexes),
        };
        let role = if let Some(fence) = view.fenced {
            format!("master, fenced ({fence}): pipeline stopped")
        } else if !view.master {
            "not master: pipeline idle".to_string()
        } else if !view.safe_to_read {
            "master, not safe to read: pipeline idle".to_string()
        } else if let Some(e) = &p.error {
            format!("master, pipeline failing: {e}")
        } else {
            "master, dealing".to_string()
        };
        match coord {
            CoordState::Disabled if view.master => format!("{role}; {counts}; {SINGLE_HOST_MODE}"),
            CoordState::Disabled => format!("{role}; {counts}"),
            c => format!("{role}; {counts}; {}", c.describe()),
        }
    }
}

impl StatusSource for Status {
    fn role(&self) -> String {
        let view = self.roles.view();
        if view.fenced.is_some() {
            "fenced".into()
        } else if view.is_active() {
            "master".into()
        } else if view.holds_markers() && view.unconfirmed {
            "master (lease not held)".into()
        } else if view.master {
            "master (not safe to read)".into()
        } else {
            "standby".into()
        }
    }

    fn fields(&self) -> Map<String, Value> {
        let (view, p, coord) = self.snapshot();
        let mut m = Map::new();
        m.insert("master".into(), view.master.into());
        m.insert("safe_to_read".into(), view.safe_to_read.into());
        m.insert("fenced".into(), view.fenced.map(|f| f.to_string()).into());
        m.insert("active".into(), view.is_active().into());
        m.insert("lease_held".into(), (!view.unconfirmed).into());
        m.insert("indexes".into(), p.indexes.into());
        m.insert("dealer_next_seq".into(), p.dealer_next_seq.into());
        m.insert("pipeline_cycles".into(), p.cycles.into());
        m.insert("pipeline_idle".into(), p.idle.into());
        m.insert("pipeline_error".into(), p.error.into());
        m.insert("coordination".into(), coord.describe().into());
        m
    }
}

/// The published starts of the two lines `start` logs once the ports are bound, each followed by its
/// address: `serving LogReader on ADDR` and `serving LogManager on ADDR`. Tests that bind port 0 read the
/// addresses there (logtank-testkit), so the text is kept stable.
pub const READER_SERVING_PREFIX: &str = "serving LogReader on ";
/// See [`READER_SERVING_PREFIX`].
pub const MANAGER_SERVING_PREFIX: &str = "serving LogManager on ";

impl Daemon for Indexes {
    type Config = IndexesConfig;
    const NAME: &'static str = "indexes";

    async fn start(config: IndexesConfig, ctx: DaemonContext) -> anyhow::Result<Self> {
        let layout = Layout::new(config.data_root());
        let lock = layout.lock(LockRole::Dealer)?;
        let options = config.pipeline.storage_options();
        let open_layout = layout.clone();
        let storage = tokio::task::spawn_blocking(move || {
            let storage = Storage::open(open_layout, options)?;
            // Never deal beside a half-done adoption (a sync interrupted, then this host promoted).
            let finished = storage.finish_interrupted_sync()?;
            Ok::<_, logtank_storage::StorageError>((storage, finished))
        })
        .await?
        .with_context(|| format!("opening the storage under {}", layout.storage().display()));
        let (storage, finished) = storage?;
        if let Some(finished) = finished {
            log::warn!("an interrupted sync: {finished}");
        }
        let storage = Arc::new(storage);

        let reader = bind(&config.server.listen, "server.listen").await?;
        let manager = bind(&config.indexes.manager_listen, "indexes.manager_listen").await?;
        let reader_addr = reader.local_addr()?;
        let manager_addr = manager.local_addr()?;

        let metrics = IndexesMetrics::new();
        metrics.register(ctx.metrics());
        let lease = config.coord.is_enabled().then(|| config.indexes.master_lease());
        let roles = Arc::new(Roles::with_lease(
            layout.clone(),
            logtank_coord::host_name(),
            lease,
        ));
        let view = roles.poll();
        log::info!(
            "data root {}: master marker {}, safe_to_read {}{}",
            layout.root().display(),
            if view.master { "present" } else { "absent" },
            if view.safe_to_read { "present" } else { "absent" },
            view.fenced
                .map_or_else(String::new, |f| format!(", fenced ({f})"))
        );
        let pipeline_status = SharedPipelineStatus::default();
        let coord_state = SharedCoordState::default();
        let status = Arc::new(Status {
            roles: roles.clone(),
            pipeline: pipeline_status.clone(),
            coord: coord_state.clone(),
        });
        ctx.set_status_source(status.clone());

        let shutdown = ctx.shutdown().clone();
        let progress = Arc::new(pipeline::PipelineProgress::default());
        let pipeline = Pipeline {
            storage: storage.clone(),
            roles: roles.clone(),
            io: config.io,
            idle: config.pipeline.idle(),
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            status: pipeline_status,
            single_host: !config.coord.is_enabled(),
            progress: progress.clone(),
            disk: pipeline::DiskWatch {
                dir: config.data_root(),
                high_percent: config.pipeline.disk_usage_high_percent,
                low_percent: config.pipeline.disk_usage_low_percent,
            },
        }
        .spawn()
        .context("starting the pipeline thread")?;

        let mut tasks = Vec::new();
        // SIGTERM must not wait for the pipeline's sleep to end.
        let wakeup = roles.wakeup().clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            stop.wait().await;
            wakeup.notify();
        }));
        tasks.push(tokio::spawn(roles::watch_markers(
            roles.clone(),
            config.indexes.marker_poll(),
            shutdown.clone(),
        )));
        if let Some(coord_config) = config.coord.coord_config() {
            let host_port = logtank_coord::advertised(config.indexes.advertise.as_deref(), reader_addr);
            tasks.push(tokio::spawn(
                Coordination {
                    config: coord_config,
                    host_port,
                    roles: roles.clone(),
                    state: coord_state,
                    metrics: metrics.clone(),
                    poll: config.indexes.marker_poll(),
                    shutdown: shutdown.clone(),
                }
                .run(),
            ));
        }

        let shared = Arc::new(Shared {
            storage,
            roles,
            metrics,
            state_changes_from: config.indexes.manager_state_changes_from.clone(),
        });
        let tracker = WorkTracker::new();
        let limits = request_limits();
        tasks.push(tokio::spawn(logtank_thrift_server::serve(
            reader,
            PortOptions::new("LogReader", limits),
            Arc::new(ReaderPort(shared.clone())),
            tracker.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(logtank_thrift_server::serve(
            manager,
            PortOptions::new("LogManager", limits),
            Arc::new(ManagerPort(shared)),
            tracker.clone(),
            shutdown,
        )));
        log::info!("{READER_SERVING_PREFIX}{reader_addr}");
        log::info!("{MANAGER_SERVING_PREFIX}{manager_addr}");
        Ok(Indexes {
            reader_addr,
            manager_addr,
            status,
            tasks,
            pipeline: Some(pipeline),
            progress,
            stall_timeout: config.pipeline.stall_timeout(),
            tracker,
            _lock: lock,
        })
    }

    fn status_line(&self) -> String {
        self.status.line()
    }

    fn stalled(&self) -> Option<String> {
        self.progress.stalled(self.stall_timeout).map(|d| {
            format!("the pipeline thread has done no IO for {d:.0?} in the middle of a cycle (a hung disk?)")
        })
    }

    async fn reload(&mut self, _config: IndexesConfig) -> anyhow::Result<()> {
        // The storage options, ports and coordination shape running tasks; they apply at restart.
        log::info!(
            "logtank-indexes applies [indexes], [pipeline] and [coord] changes at restart (reader {}, manager {})",
            self.reader_addr,
            self.manager_addr
        );
        Ok(())
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        for task in self.tasks.drain(..) {
            task.await?;
        }
        // Requests already read get their replies; every connection has ended.
        self.tracker.wait_idle().await;
        if let Some(pipeline) = self.pipeline.take() {
            // The cycle stops at its next durable point; every step it took is complete on disk.
            tokio::task::spawn_blocking(move || pipeline.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
        }
        log::info!("logtank-indexes stopped cleanly");
        Ok(())
    }
}

async fn bind(addr: &str, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} ({key})"))
}
