//! `logtank-bookie`: BookKeeper-style ledger storage (`docs/bookie.md`). Clients (logtank-ledger) add
//! entries of ledgers over the bookie protocol (`logtank-bookie-proto`, port 3180+N); an add is answered once
//! it is durable in the bookie's journal, which is also its entry store ([`store`]). The bookie registers in
//! coordination under the ledgers root (`available/<id>` or `available/readonly/<id>`), refuses to start on
//! directories whose cookie is not its own ([`setup`]), goes readonly by config, flag, marker file, admin
//! request or full disk, and reclaims deleted ledgers' space ([`gc`]).
//!
//! Start reading at [`server`] (the connections), then [`store`] (the entry store and its index).
//!
//! Invariants: no add is answered before it is durable; a fence is durable before the fencing read is
//! answered; nothing that fails its checksum is served; the bookie is registered in exactly one of
//! `available/` and `available/readonly/` while it runs.
#![forbid(unsafe_code)]

pub mod config;
pub mod gc;
pub mod metrics;
pub mod registration;
pub mod server;
pub mod setup;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use logtank_coord::Coord;
use logtank_journal::JournalOptions;
use logtank_ledger::Layout;
use logtank_runtime::readonly::{self, Readonly, ReadonlyNames};
use logtank_runtime::{CommonArgs, Daemon, DaemonContext, StatusSource, WorkTracker};
use serde_json::{Map, Value};
use tokio::sync::watch;

pub use config::BookieConfig;

use crate::gc::{GcHandle, GcSettings};
use crate::metrics::{BookieMetrics, DirLabel};
use crate::registration::{Registrar, RegistrationState};
use crate::server::{PortSettings, Service};
use crate::store::LedgerStore;

/// The line the bookie logs once it serves; tests and `logtank up` find its address after this prefix.
pub const SERVING_PREFIX: &str = "serving the bookie protocol on ";

/// How readonly refusals name the bookie.
pub const READONLY_NAMES: ReadonlyNames = ReadonlyNames {
    daemon: "logtank-bookie",
    config_key: "bookie.readonly",
};

/// Adds `--readonly` to the overrides: the same as `--set bookie.readonly=true`, applied last.
pub fn with_readonly_flag(common: CommonArgs, readonly: bool) -> CommonArgs {
    readonly::with_flag(common, readonly, READONLY_NAMES.config_key)
}

/// What the admin routes and `/status` share.
struct Shared {
    bookie_id: String,
    listen: SocketAddr,
    store: Arc<LedgerStore>,
    readonly: Arc<Readonly>,
    metrics: BookieMetrics,
    registration: Arc<Mutex<RegistrationState>>,
    gc: Mutex<Option<GcHandle>>,
}

impl Shared {
    fn state(&self) -> &'static str {
        if self.readonly.is_on() {
            "readonly"
        } else {
            "writable"
        }
    }

    fn status_line(&self) -> String {
        let stats = self.store.stats();
        format!(
            "serving {} as bookie {}, {}, {} ledgers, {} entries",
            self.listen,
            self.bookie_id,
            self.state(),
            stats.ledgers,
            stats.entries
        )
    }

    /// Brings the store gauges and the disk gauges up to date (at each `/metrics` and status refresh).
    fn refresh_gauges(&self) {
        let stats = self.store.stats();
        let m = &self.metrics;
        m.ledgers.set(stats.ledgers as i64);
        m.entries.set(stats.entries as i64);
        m.entry_bytes.set(stats.entry_bytes as i64);
        m.store_bytes.set(stats.total_bytes as i64);
        m.store_live_bytes.set(stats.live_bytes as i64);
        m.segments.set(stats.segments as i64);
        for disk in self.readonly.status().disks {
            m.disk_used_percent
                .get_or_create(&DirLabel { dir: disk.dir })
                .set(disk.used_percent.map_or(-1, |p| p as i64));
        }
    }
}

impl StatusSource for Shared {
    fn readonly(&self) -> bool {
        self.readonly.is_on()
    }

    fn fields(&self) -> Map<String, Value> {
        self.refresh_gauges();
        let stats = self.store.stats();
        let marks = self.store.journal().marks();
        let mut f = Map::new();
        f.insert("bookie_id".into(), self.bookie_id.clone().into());
        f.insert("state".into(), self.state().into());
        f.insert("readonly_reasons".into(), self.readonly.status().reasons.into());
        f.insert(
            "registration".into(),
            self.registration
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .to_string()
                .into(),
        );
        f.insert("ledgers".into(), stats.ledgers.into());
        f.insert("entries".into(), stats.entries.into());
        f.insert("entry_bytes".into(), stats.entry_bytes.into());
        f.insert("segments".into(), stats.segments.into());
        f.insert("store_bytes".into(), stats.total_bytes.into());
        f.insert("store_live_bytes".into(), stats.live_bytes.into());
        f.insert("journal_written".into(), marks.written.into());
        f.insert("journal_durable".into(), marks.durable.into());
        f.insert("journal_io".into(), self.store.journal().backend().into());
        f.insert(
            "disks".into(),
            serde_json::to_value(self.readonly.status().disks).unwrap_or_default(),
        );
        f
    }
}

/// The running bookie, as the runtime drives it.
pub struct Bookie {
    shared: Arc<Shared>,
    service: Arc<Service>,
    gc_settings: Arc<RwLock<GcSettings>>,
    config: BookieConfig,
    tracker: WorkTracker,
    accept: tokio::task::JoinHandle<()>,
    registrar: tokio::task::JoinHandle<()>,
    readonly_task: tokio::task::JoinHandle<()>,
    gc_task: tokio::task::JoinHandle<()>,
    _coord: Coord,
}

impl std::fmt::Debug for Bookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bookie")
            .field("bookie_id", &self.shared.bookie_id)
            .finish_non_exhaustive()
    }
}

impl Daemon for Bookie {
    type Config = BookieConfig;
    const NAME: &'static str = "bookie";

    async fn start(config: BookieConfig, ctx: DaemonContext) -> anyhow::Result<Self> {
        let layout = Layout::new(&config.bookie.ledgers_root)?;
        let journal_dir = config.journal_dir();
        let ledgers_dir = config.ledgers_dir();
        for dir in [&journal_dir, &ledgers_dir] {
            logtank_durable::create_dir_all_durably(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("binding {} (server.listen)", config.server.listen))?;
        let listen = listener.local_addr()?;
        let bookie_id = logtank_coord::advertised(config.bookie.advertise.as_deref(), listen);

        ctx.notifier().status("connecting to coordination");
        let coord = tokio::select! {
            c = Coord::connect(&config.coord) => c.context("connecting to coordination ([coord] servers)")?,
            _ = ctx.shutdown().wait() => anyhow::bail!("stopped while connecting to coordination"),
        };
        let identity = setup::Identity {
            bookie_id: bookie_id.clone(),
            journal_dir: journal_dir.clone(),
            ledgers_dir: ledgers_dir.clone(),
        };
        let hint = format!("--config {}", ctx.config_path().display());
        setup::verify_cookies(&coord.client(), &layout, &identity, &hint).await?;

        ctx.notifier().status("recovering the entry store");
        let options = journal_options(&config);
        let dir = journal_dir.clone();
        let (store, report) = tokio::task::spawn_blocking(move || LedgerStore::open(&dir, options))
            .await?
            .with_context(|| format!("opening the entry store {}", journal_dir.display()))?;
        log::info!(
            "entry store {}: {} ledgers, {} entries ({} bytes) in {} segments; {} records replayed in {} ms",
            journal_dir.display(),
            report.ledgers,
            report.entries,
            report.entry_bytes,
            report.segments,
            report.records_replayed,
            report.elapsed.as_millis()
        );
        if let Some(torn) = &report.torn_tail {
            log::warn!(
                "entry store: a torn tail of {} bytes was cut at {} offset {} (never acknowledged)",
                torn.discarded_bytes,
                torn.path.display(),
                torn.offset
            );
        }
        let store = Arc::new(store);

        let readonly = Arc::new(Readonly::new(
            READONLY_NAMES,
            config.bookie.readonly,
            config.readonly_marker(),
            vec![journal_dir.clone(), ledgers_dir.clone()],
            config.bookie.disk_usage_high_percent,
            config.bookie.disk_usage_low_percent,
        ));
        // An entry store that cannot create its next segment (a full or failing disk) makes the bookie
        // readonly with the reason, until it can: reads and fencing go on, no restart loop.
        let growing = Arc::downgrade(&store);
        readonly.set_storage_probe(move || {
            growing
                .upgrade()
                .and_then(|s| s.journal().cannot_grow())
                .map(|why| format!("the entry store cannot create its next segment: {why}"))
        });
        readonly.check();
        let (readonly_tx, readonly_rx) = watch::channel(readonly.is_on());

        let metrics = BookieMetrics::default();
        metrics.register(ctx.metrics());
        ctx.metrics()
            .with_registry(|r| store.journal().metrics().register(r));
        metrics.readonly.set(i64::from(readonly.is_on()));

        let registrar = Registrar::new(
            coord.clone(),
            layout.clone(),
            bookie_id.clone(),
            &ctx.admin_addr().to_string(),
        );
        let shared = Arc::new(Shared {
            bookie_id: bookie_id.clone(),
            listen,
            store: store.clone(),
            readonly: readonly.clone(),
            metrics: metrics.clone(),
            registration: registrar.state.clone(),
            gc: Mutex::new(None),
        });
        {
            let metrics = metrics.clone();
            let notifier = ctx.notifier().clone();
            let weak = Arc::downgrade(&shared);
            readonly.set_on_change(move |on| {
                metrics.readonly.set(i64::from(on));
                let _ = readonly_tx.send(on);
                if let Some(shared) = weak.upgrade() {
                    notifier.status(&shared.status_line());
                }
            });
        }
        ctx.set_status_source(shared.clone());
        ctx.add_admin_routes(admin_routes(shared.clone()));

        let daemon = ctx.clone();
        let service = Arc::new(Service {
            store: store.clone(),
            readonly: readonly.clone(),
            metrics: metrics.clone(),
            settings: RwLock::new(port_settings(&config)),
            fail: Box::new(move |reason| daemon.fail(reason)),
        });
        let tracker = WorkTracker::new();
        let accept = tokio::spawn(server::serve(
            listener,
            service.clone(),
            config.bookie.connections_max,
            tracker.clone(),
            ctx.shutdown().clone(),
        ));

        ctx.notifier().status("registering");
        let registration = tokio::select! {
            r = registrar.first(readonly.is_on()) => r.context("registering the bookie in coordination")?,
            _ = ctx.shutdown().wait() => anyhow::bail!("stopped while registering"),
        };
        let registrar = tokio::spawn(registrar.run(registration, readonly_rx, ctx.shutdown().clone()));
        let check_interval = Duration::from_millis(config.bookie.disk_check_interval_ms);
        let readonly_task = tokio::spawn(readonly::poll(
            readonly.clone(),
            move || check_interval,
            ctx.shutdown().clone(),
        ));
        let gc_settings = Arc::new(RwLock::new(gc_settings(&config)));
        let (gc_handle, gc_task) = gc::start(
            coord.clone(),
            layout.clone(),
            store.clone(),
            metrics.clone(),
            gc_settings.clone(),
            ctx.shutdown().clone(),
        );
        *shared.gc.lock().unwrap_or_else(PoisonError::into_inner) = Some(gc_handle);
        log::info!(
            "{SERVING_PREFIX}{listen} as bookie {bookie_id} ({}, ledgers root {}, journal {} on {})",
            shared.state(),
            layout.root(),
            store.journal().dir().display(),
            store.journal().backend()
        );
        Ok(Bookie {
            shared,
            service,
            gc_settings,
            config,
            tracker,
            accept,
            registrar,
            readonly_task,
            gc_task,
            _coord: coord,
        })
    }

    fn status_line(&self) -> String {
        self.shared.refresh_gauges();
        self.shared.status_line()
    }

    fn stalled(&self) -> Option<String> {
        self.shared
            .store
            .journal()
            .stalled(logtank_runtime::daemon::STALL_LIMIT)
            .map(|d| format!("the entry store's journal thread has not come back from its IO for {d:.0?}"))
    }

    async fn reload(&mut self, config: BookieConfig) -> anyhow::Result<()> {
        let old = &self.config;
        let restart_only = [
            ("bookie.journal_dir", old.journal_dir() != config.journal_dir()),
            ("bookie.ledgers_dir", old.ledgers_dir() != config.ledgers_dir()),
            (
                "bookie.ledgers_root",
                old.bookie.ledgers_root != config.bookie.ledgers_root,
            ),
            (
                "bookie.advertise",
                old.bookie.advertise != config.bookie.advertise,
            ),
            (
                "bookie.segment_size_bytes",
                old.bookie.segment_size_bytes != config.bookie.segment_size_bytes,
            ),
            (
                "bookie.fsync_interval_ms",
                old.bookie.fsync_interval_ms != config.bookie.fsync_interval_ms,
            ),
            (
                "bookie.io_backend",
                old.bookie.io_backend != config.bookie.io_backend,
            ),
            (
                "bookie.connections_max",
                old.bookie.connections_max != config.bookie.connections_max,
            ),
            ("coord", old.coord != config.coord),
        ];
        if config.bookie.frame_bytes_max > old.bookie.frame_bytes_max {
            anyhow::bail!(
                "bookie.frame_bytes_max = {} is more than the entry store was opened with ({}); it can grow only \
                 at a restart",
                config.bookie.frame_bytes_max,
                old.bookie.frame_bytes_max
            );
        }
        for (key, changed) in restart_only {
            if changed {
                log::warn!("config: {key} changed; it takes effect at the next restart");
            }
        }
        *self
            .service
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = port_settings(&config);
        *self.gc_settings.write().unwrap_or_else(PoisonError::into_inner) = gc_settings(&config);
        self.shared.readonly.reconfigure(
            config.bookie.readonly,
            config.bookie.disk_usage_high_percent,
            config.bookie.disk_usage_low_percent,
        );
        self.config = config;
        Ok(())
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        // The shutdown signal has fired: the registration goes first (clients stop picking this bookie), the
        // accept loop stops, connections answer what is in flight and close, compaction stops.
        self.registrar.await?;
        self.accept.await?;
        self.tracker.wait_idle().await;
        self.readonly_task.await?;
        self.gc_task.await?;
        *self.shared.gc.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let entries = self.shared.store.stats().entries;
        drop(self.service);
        let store = self.shared.store.clone();
        drop(self.shared);
        match Arc::try_unwrap(store) {
            Ok(store) => tokio::task::spawn_blocking(move || store.close())
                .await?
                .context("closing the entry store")?,
            Err(store) => {
                // A read still running on the blocking pool; dropping the last reference writes and fsyncs.
                log::warn!(
                    "the entry store is still referenced at shutdown; it closes when the last read ends"
                );
                drop(store);
            }
        }
        log::info!("logtank-bookie stopped cleanly ({entries} entries held)");
        Ok(())
    }
}

fn port_settings(config: &BookieConfig) -> PortSettings {
    PortSettings {
        frame_bytes_max: config.bookie.frame_bytes_max,
        requests_in_flight_max: config.bookie.requests_in_flight_max,
        idle_timeout: config.idle_timeout(),
    }
}

fn gc_settings(config: &BookieConfig) -> GcSettings {
    GcSettings {
        interval: Duration::from_millis(config.gc.interval_ms),
        live_fraction_max: config.gc.compaction_live_fraction_max,
        rate_bytes_per_sec: config.gc.compaction_rate_bytes_per_sec,
    }
}

fn journal_options(config: &BookieConfig) -> JournalOptions {
    let io = config.io;
    JournalOptions {
        segment_size_bytes: config.bookie.segment_size_bytes,
        fsync_interval: Duration::from_millis(config.bookie.fsync_interval_ms),
        io_backend: config.io_backend(),
        record_bytes_max: config.record_bytes_max(),
        thread_init: Some(Arc::new(move || {
            logtank_runtime::ioprio::apply_config(&io, "bookie journal thread");
        })),
        ..JournalOptions::default()
    }
}

/// `GET /readonly`, `PUT /readonly` (`true`/`false`; logtank-runtime's), `POST /gc` (a garbage collection
/// pass now).
fn admin_routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/gc", post(post_gc))
        .with_state(shared.clone())
        .merge(readonly::admin_routes(shared.readonly.clone()))
}

async fn post_gc(State(shared): State<Arc<Shared>>) -> Response {
    let handle = shared.gc.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match handle {
        Some(gc) => match gc.run_now().await {
            Some(report) => Json(report).into_response(),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "garbage collection is stopping\n",
            )
                .into_response(),
        },
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "garbage collection is not running\n",
        )
            .into_response(),
    }
}

/// The address the bookie serves on, from its start-up line.
pub fn parse_serving_line(line: &str) -> Option<SocketAddr> {
    let rest = line.split(SERVING_PREFIX).nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}
