//! The lifecycle every logtank daemon shares: config, logging, IO class, readiness, reload, watchdog and
//! graceful shutdown, written once so each daemon only supplies [`Daemon::start`], [`Daemon::reload`] and
//! [`Daemon::shutdown`].
//!
//! [`run`] does, in order:
//!
//! 1. load the config (`--config` or `/etc/logtank/<name>.toml`, then the overrides); a bad config exits
//!    78 (EX_CONFIG), or 1 under `--check-config`, which otherwise prints the effective config and exits 0;
//! 2. install the logger and a panic hook (a panic anywhere logs at error level and aborts the process,
//!    so systemd restarts a whole daemon instead of supervising one with a dead task);
//! 3. set the main thread's IO class from `[io]` *before* building the tokio runtime, so workers inherit it;
//! 4. build the runtime, start the signal thread, bind the admin listener and serve it;
//! 5. call [`Daemon::start`] (SIGTERM meanwhile triggers the shutdown signal the daemon holds), then send
//!    `READY=1` with `STATUS=`;
//! 6. run the event loop: SIGHUP reloads (`RELOADING=1` + `MONOTONIC_USEC`, re-read the same file with the
//!    same overrides; a bad file is logged and the old config stays; `READY=1` either way), the watchdog
//!    tick sends `WATCHDOG=1` and refreshes `STATUS=` (from this loop, so a stuck loop stops the pings),
//!    SIGTERM/SIGINT or [`DaemonContext::fail`] leave the loop;
//! 7. `STOPPING=1`, trigger the shutdown signal, await [`Daemon::shutdown`] bounded by
//!    `server.shutdown_timeout_ms`: exit 0 if it finished in time, 1 otherwise (or if the daemon failed).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::admin::{self, AdminState, Metrics, Phase, RuntimeMetrics, StatusSource, VERSION};
use crate::args::CommonArgs;
use crate::config::{self, ConfigSource, DaemonConfig, LogConfig, Override};
use crate::logging::{self, LogHandle};
use crate::notify::Notifier;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::signals::{Signal, SignalListener};

/// Exit code for a configuration error (sysexits.h EX_CONFIG), so systemd and operators can tell a bad
/// config from a crash.
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for every other failure, and for `--check-config` on an invalid config.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_SUCCESS: u8 = 0;

/// In the start-up line `logtank-NAME VERSION starting: config PATH, listen ADDR, admin ADDR`, logged once
/// the admin listener is bound: tests that bind port 0 find the line by this text (logtank-testkit does)…
pub const STARTING_LINE: &str = " starting: config ";
/// …and the bound admin address after this one, the last field of the line.
pub const STARTING_LINE_ADMIN: &str = ", admin ";

/// How long a daemon's IO or pipeline thread may be stuck before the watchdog stops being fed
/// ([`Daemon::stalled`]). Below the units' `WatchdogSec=` (20 s): a stall is noticed at the next ping, and
/// systemd acts at most `WatchdogSec` after the last good one.
pub const STALL_LIMIT: Duration = Duration::from_secs(15);

/// How often `STATUS=` is refreshed when there is no watchdog to piggyback on.
const STATUS_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How long the admin listener may take to finish open requests after the daemon has shut down.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long leftover tasks get when the tokio runtime is dropped at exit.
const RUNTIME_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Pending [`DaemonContext::fail`] requests; the first one already stops the daemon.
const FAIL_QUEUE_MAX: usize = 4;

/// A start-up failure that only the operator can fix (the config, or a data directory that does not belong
/// to this daemon: a bookie's cookie that does not match). [`Daemon::start`] returning it (anywhere in the
/// error's chain) exits 78 (EX_CONFIG) instead of 1, so the unit's `RestartPreventExitStatus=78` stops
/// systemd from restarting it in a loop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// A logtank daemon, as the runtime drives it.
pub trait Daemon: Sized + Send + 'static {
    type Config: DaemonConfig + DeserializeOwned + Serialize + Default + Clone + Send + Sync + 'static;

    /// `writer` → default config `/etc/logtank/writer.toml`, syslog APP-NAME `logtank-writer`.
    const NAME: &'static str;

    /// Binds listeners, opens and recovers state. `READY=1` is sent only after this returns `Ok`. A long
    /// recovery should call [`Notifier::extend_timeout`] on [`DaemonContext::notifier`] now and then, and
    /// give up early when [`DaemonContext::shutdown`] fires.
    fn start(config: Self::Config, ctx: DaemonContext) -> impl Future<Output = anyhow::Result<Self>> + Send;

    /// One line for `STATUS=` and `/status`, e.g. `serving on 0.0.0.0:15000, 3 clients, seq 1234`.
    fn status_line(&self) -> String;

    /// Why the daemon's work is stuck, if it is (a journal thread that has not come back from its IO for
    /// longer than [`STALL_LIMIT`], a pipeline thread that stopped moving): the watchdog is not fed then,
    /// so systemd restarts the daemon even though its event loop still runs. `None` by default.
    fn stalled(&self) -> Option<String> {
        None
    }

    /// Applies a new config after SIGHUP. All or nothing: on `Err` the runtime keeps treating the previous
    /// config as in force. Settings that cannot change while running (listen addresses, `[io]`) are
    /// reported by the runtime as needing a restart; the daemon may ignore them.
    fn reload(&mut self, config: Self::Config) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Drains in-flight work, flushes and fsyncs. Called after the shutdown signal fired, bounded by
    /// `server.shutdown_timeout_ms`.
    fn shutdown(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What the runtime hands a daemon at start. Cheap to clone; keep it.
#[derive(Clone)]
pub struct DaemonContext {
    name: String,
    config_path: PathBuf,
    admin_addr: SocketAddr,
    shutdown: Shutdown,
    metrics: Metrics,
    notifier: Notifier,
    admin: AdminState,
    fail_tx: mpsc::Sender<String>,
}

impl std::fmt::Debug for DaemonContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonContext")
            .field("name", &self.name)
            .field("config_path", &self.config_path)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl DaemonContext {
    /// A context for running a daemon inside a test without [`run`]: nothing is sent to systemd, `fail`
    /// requests go to the returned receiver, and the shutdown signal is the returned trigger's.
    pub fn for_test(
        name: &str,
        admin_addr: SocketAddr,
    ) -> (DaemonContext, ShutdownTrigger, mpsc::Receiver<String>) {
        let (trigger, shutdown) = shutdown::channel();
        let (fail_tx, fail_rx) = mpsc::channel(FAIL_QUEUE_MAX);
        let metrics = Metrics::new();
        let ctx = DaemonContext {
            name: name.to_owned(),
            config_path: PathBuf::new(),
            admin_addr,
            shutdown,
            admin: AdminState::new(name, metrics.clone()),
            metrics,
            notifier: Notifier::disabled(),
            fail_tx,
        };
        (ctx, trigger, fail_rx)
    }

    /// The daemon's name: [`Daemon::NAME`], or the instance name given to [`run_named`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config file in use (which may not exist, if it is the default path).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The address the admin HTTP listener is bound to (the real port when the config said `:0`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Fires when the daemon must stop taking new work. Clone it into every loop.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The registry behind `/metrics`; metric names get the `logtank_` prefix.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Provides role, readonly and counters for `/status`.
    pub fn set_status_source(&self, source: Arc<dyn StatusSource>) {
        self.admin.set_status_source(source);
    }

    /// Adds the daemon's own admin routes (e.g. `PUT /readonly`), served next to `/ping`, `/metrics` and
    /// `/status` from now on. Give the router its state first (`Router::with_state`); the standard routes
    /// win over a route of the same path. See [`crate::admin::AdminState::add_routes`].
    pub fn add_admin_routes(&self, routes: axum::Router) {
        self.admin.add_routes(routes);
    }

    /// Asks the runtime to stop the daemon because of an unrecoverable error (a violated invariant, a
    /// journal that failed to fsync): it logs `reason`, runs the normal shutdown and exits 1, and systemd
    /// restarts the daemon. Never blocks.
    pub fn fail(&self, reason: impl Into<String>) {
        // A full queue means shutdown is already requested; one reason is enough.
        let _ = self.fail_tx.try_send(reason.into());
    }
}

/// Runs daemon `D` under its own name ([`Daemon::NAME`]). The whole `main` of a daemon binary is
/// `run::<Writer>(Cli::parse().common)`.
pub fn run<D: Daemon>(args: CommonArgs) -> ExitCode {
    ExitCode::from(run_named::<D>(D::NAME, args))
}

/// [`run`] under another name, for instanced daemons (`bookie-3` → `/etc/logtank/bookie-3.toml`,
/// APP-NAME `logtank-bookie-3`). Returns the exit status, so tests can pass it to `std::process::exit`.
pub fn run_named<D: Daemon>(name: &str, args: CommonArgs) -> u8 {
    let source = args.config_source(name);
    let overrides = args.overrides();
    if args.check_config {
        return check_config::<D>(&source, &overrides);
    }

    // Log with defaults until the config is read, so a config error reaches the journal at error level.
    let log = match logging::init(name, &LogConfig::default()) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("logtank-{name}: cannot set up logging: {e}");
            return EXIT_FAILURE;
        }
    };
    install_panic_hook();
    let config = match config::load_daemon_config::<D::Config>(&source, &overrides) {
        Ok(config) => config,
        Err(e) => {
            log::error!("{e}");
            log::logger().flush();
            return EXIT_CONFIG;
        }
    };
    if let Err(e) = log.reconfigure(config.log()) {
        log::error!("{e}");
        return match e {
            logging::LogError::InvalidConfig(_) => EXIT_CONFIG,
            _ => EXIT_FAILURE,
        };
    }
    for warning in all_warnings(&config) {
        log::warn!("config: {warning}");
    }

    // Before the runtime exists, so that its worker and blocking threads inherit the class.
    crate::ioprio::apply_config(config.io(), "main thread and runtime workers");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(format!("logtank-{name}"))
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let lifecycle = Lifecycle::<D> {
        name: name.to_owned(),
        source,
        overrides,
        log,
        notifier: Notifier::from_env(),
        config,
    };
    let code = runtime.block_on(lifecycle.run());
    runtime.shutdown_timeout(RUNTIME_DRAIN_TIMEOUT);
    log::logger().flush();
    code
}

/// `--check-config`: effective config on stdout with warnings as TOML comments; errors on stderr.
fn check_config<D: Daemon>(source: &ConfigSource, overrides: &[Override]) -> u8 {
    let result = config::load_daemon_config::<D::Config>(source, overrides)
        .and_then(|config| Ok((config::to_toml_string(&config)?, all_warnings(&config))));
    match result {
        Ok((toml, warnings)) => {
            let mut out = String::new();
            if !source.path.exists() {
                out.push_str(&format!(
                    "# {} does not exist: built-in defaults\n",
                    source.path.display()
                ));
            }
            for warning in &warnings {
                out.push_str(&format!("# warning: {warning}\n"));
            }
            out.push_str(&toml);
            print!("{out}");
            EXIT_SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_FAILURE
        }
    }
}

fn all_warnings<C: DaemonConfig>(config: &C) -> Vec<String> {
    let mut warnings = config::common_warnings(config);
    warnings.extend(config.warnings());
    warnings
}

/// Logs a panic at error level (`<3>` in the journal) with its location and thread, then aborts: a daemon
/// with a dead task or thread is worse than a restarted one.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => {
                log::error!("panic in thread '{name}': {info}\n{backtrace}")
            }
            _ => log::error!("panic in thread '{name}': {info} (RUST_BACKTRACE=1 for a backtrace)"),
        }
        log::logger().flush();
        std::process::abort();
    }));
}

/// The state of one daemon run, from after logging is set up to exit.
struct Lifecycle<D: Daemon> {
    name: String,
    source: ConfigSource,
    overrides: Vec<Override>,
    log: LogHandle,
    notifier: Notifier,
    /// The config in force: the last one the daemon accepted.
    config: D::Config,
}

/// Why the event loop ended.
enum LoopExit {
    Signal,
    Failed(String),
}

impl<D: Daemon> Lifecycle<D> {
    async fn run(mut self) -> u8 {
        let mut signals = match SignalListener::start() {
            Ok(signals) => signals,
            Err(e) => {
                log::error!("cannot install signal handlers: {e}");
                return EXIT_FAILURE;
            }
        };
        let admin_listen = self.config.admin().listen.clone();
        let admin_listener = match tokio::net::TcpListener::bind(&admin_listen).await {
            Ok(listener) => listener,
            Err(e) => {
                log::error!("cannot bind the admin listener on {admin_listen} (admin.listen): {e}");
                return EXIT_FAILURE;
            }
        };
        let admin_addr = match admin_listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                log::error!("cannot read the admin listener's address: {e}");
                return EXIT_FAILURE;
            }
        };

        let metrics = Metrics::new();
        let runtime_metrics = RuntimeMetrics::register(&metrics);
        let admin = AdminState::new(self.name.clone(), metrics.clone());
        let (admin_stop, admin_stopped) = shutdown::channel();
        let admin_task = tokio::spawn(admin::serve(admin_listener, admin.clone(), async move {
            admin_stopped.wait().await;
        }));

        let (trigger, shutdown) = shutdown::channel();
        let (fail_tx, mut fail_rx) = mpsc::channel(FAIL_QUEUE_MAX);
        let ctx = DaemonContext {
            name: self.name.clone(),
            config_path: self.source.path.clone(),
            admin_addr,
            shutdown,
            metrics,
            notifier: self.notifier.clone(),
            admin: admin.clone(),
            fail_tx,
        };
        log::info!(
            "logtank-{} {VERSION}{STARTING_LINE}{}{}, listen {}{STARTING_LINE_ADMIN}{admin_addr}",
            self.name,
            self.source.path.display(),
            if self.source.path.exists() {
                ""
            } else {
                " (absent: built-in defaults)"
            },
            self.config.server().listen,
        );

        let code = match self.start(ctx, &mut signals, &trigger).await {
            Started::Running(mut daemon) => {
                admin.set_phase(Phase::Running);
                let line = daemon.status_line();
                admin.set_status_line(&line);
                self.notifier.ready(&line);
                log::info!("ready: {line}");
                let exit = self
                    .event_loop(&mut daemon, &mut signals, &mut fail_rx, &admin, &runtime_metrics)
                    .await;
                let failed = match exit {
                    LoopExit::Signal => false,
                    LoopExit::Failed(reason) => {
                        log::error!("stopping because of an unrecoverable error: {reason}");
                        true
                    }
                };
                admin.set_phase(Phase::Stopping);
                let code = self.stop(daemon, &trigger).await;
                if failed {
                    EXIT_FAILURE
                } else {
                    code
                }
            }
            Started::Exited(code) => code,
        };

        admin_stop.trigger();
        match tokio::time::timeout(ADMIN_DRAIN_TIMEOUT, admin_task).await {
            Ok(Ok(Ok(()))) | Err(_) => {}
            Ok(Ok(Err(e))) => log::warn!("admin listener failed: {e}"),
            Ok(Err(e)) => log::warn!("admin listener task failed: {e}"),
        }
        code
    }

    /// Runs [`Daemon::start`] while still answering SIGTERM: shutdown during start-up fires the shutdown
    /// signal the daemon holds and waits for start to return, within the shutdown deadline.
    async fn start(
        &mut self,
        ctx: DaemonContext,
        signals: &mut SignalListener,
        trigger: &ShutdownTrigger,
    ) -> Started<D> {
        let start = D::start(self.config.clone(), ctx);
        tokio::pin!(start);
        loop {
            tokio::select! {
                result = &mut start => {
                    return match result {
                        Ok(daemon) => Started::Running(daemon),
                        Err(e) => {
                            log::error!("start-up failed: {e:#}");
                            let operator_must_fix = e.chain().any(|c| c.is::<SetupError>());
                            Started::Exited(if operator_must_fix { EXIT_CONFIG } else { EXIT_FAILURE })
                        }
                    };
                }
                signal = signals.recv() => match signal {
                    Some(Signal::Reload) => log::warn!("SIGHUP during start-up ignored; send it again once ready"),
                    Some(Signal::Shutdown) | None => break,
                },
            }
        }

        self.notifier.stopping("stopping during start-up");
        trigger.trigger();
        let deadline = self.shutdown_deadline();
        log::info!(
            "shutdown requested during start-up; waiting up to {} ms",
            deadline.as_millis()
        );
        let finished = tokio::time::timeout(deadline, async {
            match start.await {
                // Start-up completed anyway: shut the daemon down properly.
                Ok(daemon) => daemon.shutdown().await,
                Err(e) => {
                    // Most likely the daemon gave up because the shutdown signal fired: a clean stop.
                    log::info!("start-up abandoned: {e:#}");
                    Ok(())
                }
            }
        })
        .await;
        Started::Exited(self.shutdown_outcome(finished, deadline))
    }

    async fn event_loop(
        &mut self,
        daemon: &mut D,
        signals: &mut SignalListener,
        fail_rx: &mut mpsc::Receiver<String>,
        admin: &AdminState,
        runtime_metrics: &RuntimeMetrics,
    ) -> LoopExit {
        let watchdog = self.notifier.watchdog_interval();
        if let Some(interval) = watchdog {
            log::info!(
                "systemd watchdog enabled: pinging every {} ms",
                interval.as_millis()
            );
        }
        let mut tick = tokio::time::interval(watchdog.unwrap_or(STATUS_REFRESH_INTERVAL));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Shown after the status line until a reload succeeds, so a failed reload stays visible.
        let mut reload_note: Option<String> = None;
        let mut stalled_note: Option<String> = None;
        let mut last_status = String::new();
        loop {
            tokio::select! {
                signal = signals.recv() => match signal {
                    Some(Signal::Shutdown) => return LoopExit::Signal,
                    None => return LoopExit::Failed("the signal thread stopped".to_owned()),
                    Some(Signal::Reload) => {
                        admin.set_phase(Phase::Reloading);
                        reload_note = self.reload(daemon, runtime_metrics).await;
                        admin.set_phase(Phase::Running);
                        last_status = status_with_note(daemon, reload_note.as_deref());
                        admin.set_status_line(&last_status);
                        self.notifier.ready(&last_status);
                    }
                },
                Some(reason) = fail_rx.recv() => return LoopExit::Failed(reason),
                _ = tick.tick() => {
                    let stalled = daemon.stalled();
                    match (&stalled, &stalled_note) {
                        (Some(why), None) => log::error!(
                            "stuck: {why}; the watchdog is no longer fed (systemd restarts the daemon)"
                        ),
                        (None, Some(_)) => log::info!("no longer stuck: the watchdog is fed again"),
                        _ => {}
                    }
                    stalled_note = stalled.map(|why| format!("stuck: {why}"));
                    if watchdog.is_some() && stalled_note.is_none() {
                        self.notifier.watchdog();
                    }
                    let note = stalled_note.as_deref().or(reload_note.as_deref());
                    let status = status_with_note(daemon, note);
                    if status != last_status {
                        admin.set_status_line(&status);
                        self.notifier.status(&status);
                        last_status = status;
                    }
                }
            }
        }
    }

    /// Handles SIGHUP. Returns a note for the status line when the reload failed.
    async fn reload(&mut self, daemon: &mut D, runtime_metrics: &RuntimeMetrics) -> Option<String> {
        self.notifier.reloading();
        log::info!("reloading configuration from {}", self.source.path.display());
        let new = match config::load_daemon_config::<D::Config>(&self.source, &self.overrides) {
            Ok(new) => new,
            Err(e) => {
                runtime_metrics.reload_failures.inc();
                log::error!("reload failed, keeping the previous configuration: {e}");
                return Some(format!("last reload failed: {e}"));
            }
        };
        for warning in restart_only_changes(&self.config, &new)
            .into_iter()
            .chain(all_warnings(&new))
        {
            log::warn!("config: {warning}");
        }
        if let Err(e) = self.log.reconfigure(new.log()) {
            runtime_metrics.reload_failures.inc();
            log::error!("reload failed, keeping the previous configuration: {e}");
            return Some(format!("last reload failed: {e}"));
        }
        match daemon.reload(new.clone()).await {
            Ok(()) => {
                runtime_metrics.reloads.inc();
                self.config = new;
                log::info!("configuration reloaded");
                None
            }
            Err(e) => {
                runtime_metrics.reload_failures.inc();
                // The daemon kept its old settings, so logging goes back to the old ones too.
                if let Err(e) = self.log.reconfigure(self.config.log()) {
                    log::warn!("cannot restore the previous [log] settings: {e}");
                }
                log::error!("reload failed, keeping the previous configuration: {e:#}");
                Some(format!("last reload failed: {e:#}"))
            }
        }
    }

    async fn stop(&mut self, daemon: D, trigger: &ShutdownTrigger) -> u8 {
        let deadline = self.shutdown_deadline();
        self.notifier.stopping("stopping: draining");
        log::info!("shutting down (deadline {} ms)", deadline.as_millis());
        trigger.trigger();
        let finished = tokio::time::timeout(deadline, daemon.shutdown()).await;
        self.shutdown_outcome(finished, deadline)
    }

    fn shutdown_deadline(&self) -> Duration {
        Duration::from_millis(self.config.server().shutdown_timeout_ms)
    }

    fn shutdown_outcome(
        &self,
        finished: Result<anyhow::Result<()>, tokio::time::error::Elapsed>,
        deadline: Duration,
    ) -> u8 {
        match finished {
            Ok(Ok(())) => {
                log::info!("shutdown complete");
                EXIT_SUCCESS
            }
            Ok(Err(e)) => {
                log::error!("shutdown failed: {e:#}");
                EXIT_FAILURE
            }
            Err(_) => {
                log::error!(
                    "shutdown did not finish within {} ms (server.shutdown_timeout_ms); exiting anyway",
                    deadline.as_millis()
                );
                EXIT_FAILURE
            }
        }
    }
}

enum Started<D> {
    Running(D),
    Exited(u8),
}

fn status_with_note<D: Daemon>(daemon: &D, note: Option<&str>) -> String {
    match note {
        Some(note) => format!("{}; {note}", daemon.status_line()),
        None => daemon.status_line(),
    }
}

/// Warnings for settings a reload cannot apply: they take effect at the next restart.
fn restart_only_changes<C: DaemonConfig>(old: &C, new: &C) -> Vec<String> {
    let mut changes = Vec::new();
    let mut check = |key: &str, changed: bool| {
        if changed {
            changes.push(format!("{key} changed; it takes effect at the next restart"));
        }
    };
    check("server.listen", old.server().listen != new.server().listen);
    check(
        "server.data_root",
        old.server().data_root != new.server().data_root,
    );
    check("admin.listen", old.admin().listen != new.admin().listen);
    check("io", old.io() != new.io());
    changes
}
