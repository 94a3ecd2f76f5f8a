//! What every logtank daemon shares to live under systemd: config loading, logging to journald and syslog,
//! `sd_notify`, signals, IO priority, the admin HTTP listener, graceful shutdown, and the lifecycle that
//! ties them together. Written once here so the daemons only compose it (DESIGN §3, §6).
//!
//! # Writing a daemon
//!
//! ```text
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! struct WriterConfig { server: ServerConfig, admin: AdminConfig, log: LogConfig, io: IoConfig, journal: … }
//! impl DaemonConfig for WriterConfig { /* server(), server_mut(), admin(), admin_mut(), log(), io() */ }
//!
//! struct Writer { … }
//! impl Daemon for Writer {
//!     type Config = WriterConfig;
//!     const NAME: &'static str = "writer";
//!     async fn start(config: WriterConfig, ctx: DaemonContext) -> anyhow::Result<Self> { … }
//!     fn status_line(&self) -> String { … }
//!     async fn reload(&mut self, config: WriterConfig) -> anyhow::Result<()> { … }
//!     async fn shutdown(self) -> anyhow::Result<()> { … }
//! }
//!
//! #[derive(clap::Parser)]
//! struct Cli { #[command(flatten)] common: CommonArgs }
//! fn main() -> ExitCode { logtank_runtime::daemon::run::<Writer>(Cli::parse().common) }
//! ```
//!
//! The daemon's `Default` for its config builds the shared sections with its own defaults
//! (`ServerConfig::new("0.0.0.0:15000", "/data/storage")`, `AdminConfig::new("127.0.0.1:9150")`); the file
//! and the command line are layered on top of those, key by key.
//!
//! # Modules
//!
//! - [`config`]: [`config::load`] / [`config::load_daemon_config`] (defaults ← file ← overrides), errors
//!   naming `file:line: key 'a.b': …` or `--set a.b=…: key 'a.b': …`; the shared sections
//!   ([`config::ServerConfig`], [`config::AdminConfig`], [`config::LogConfig`], [`config::IoConfig`]) and the
//!   [`config::DaemonConfig`] trait; [`config::to_toml_string`] for `--check-config`.
//! - [`args`]: [`args::CommonArgs`], the flags every daemon flattens into its clap parser.
//! - [`logging`]: the `log` backend (journald `<N>` lines or timestamped lines, optional RFC 5424 syslog);
//!   [`logging::init`] returns a [`logging::LogHandle`] to reconfigure at reload.
//! - [`notify`]: [`notify::Notifier`], `sd_notify` with `unset_env = false`; no-op without `NOTIFY_SOCKET`.
//! - [`signals`]: [`signals::SignalListener`] turning SIGTERM/SIGINT/SIGHUP into [`signals::Signal`]s.
//! - [`ioprio`]: per-thread IO class ([`ioprio::set_current_thread`]); the only `unsafe` in the crate.
//! - [`admin`]: `/ping`, `/metrics`, `/status` with axum, plus routes a daemon adds
//!   ([`daemon::DaemonContext::add_admin_routes`]); [`admin::serve`] takes a bound listener.
//! - [`readonly`]: [`readonly::Readonly`], the reasons a daemon refuses writes (config, marker file, admin
//!   `PUT /readonly`, disk usage of its directories with hysteresis) and the refusal message.
//! - [`accept`]: [`accept::accept_bounded`], the accept loop of every TCP port (at most `connections_max`
//!   connections, a pause after a failed accept, an end at shutdown).
//! - [`shutdown`]: [`shutdown::Shutdown`] (the signal every loop selects on) and
//!   [`shutdown::WorkTracker`] (waits for in-flight work).
//! - [`daemon`]: the [`daemon::Daemon`] trait, [`daemon::DaemonContext`], [`daemon::run`] (and
//!   [`daemon::run_named`] for instanced daemons such as `bookie-3`; it returns the exit status).
//!
//! Exit codes: 0 clean stop; 78 (EX_CONFIG) bad config at start; 1 anything else (start-up failure, a
//! shutdown past `server.shutdown_timeout_ms`, [`daemon::DaemonContext::fail`], `--check-config` on a bad
//! config).
//!
//! Errors are one `thiserror` enum per concern ([`config::ConfigError`], [`logging::LogError`]); `anyhow`
//! appears only in the [`daemon::Daemon`] trait, the boundary with daemon code.

pub mod accept;
pub mod admin;
pub mod args;
pub mod config;
pub mod daemon;
pub mod ioprio;
pub mod logging;
pub mod notify;
pub mod readonly;
pub mod shutdown;
pub mod signals;

pub use accept::{accept_bounded, AddressSlot, ConnectionPermit, PerAddressLimit};
pub use admin::{Metrics, StatusSource};
pub use args::CommonArgs;
pub use config::{AdminConfig, DaemonConfig, IoConfig, LogConfig, ServerConfig};
pub use daemon::{run, Daemon, DaemonContext};
pub use shutdown::{Shutdown, WorkGuard, WorkTracker};
