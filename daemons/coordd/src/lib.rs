//! `logtank-coordd`: a coordination daemon that speaks the Apache ZooKeeper client protocol (3.5–3.8), so
//! zkCli, kazoo, the C client and every other ZooKeeper client work against it unchanged.
//!
//! Start reading at [`core`]: the one task that owns the tree, sessions and watches, and the rule that a
//! reply leaves only once the write before it is durable. [`conn`] is the client port, [`state`] the pure
//! state machine (shared by live requests and log replay), [`persist`] recovery, [`snapshot`] and [`txn`]
//! the on-disk formats.
#![forbid(unsafe_code)]

pub mod acl;
pub mod config;
pub mod conn;
pub mod core;
pub mod fourlw;
pub mod metrics;
pub mod persist;
pub mod sasl;
pub mod snapshot;
pub mod state;
pub mod tree;
pub mod txn;
pub mod watches;

use std::sync::{Arc, Mutex};

use logtank_runtime::{Daemon, DaemonContext, StatusSource};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

pub use config::CoorddConfig;

use crate::core::{Command, Core, StatusInfo, COMMAND_QUEUE_MAX};

/// The running daemon, as the runtime drives it.
pub struct Coordd {
    /// For [`Daemon::stalled`]; the core owns the journal (it closes it at shutdown).
    journal: std::sync::Weak<logtank_journal::Journal>,
    listen_addr: std::net::SocketAddr,
    status: Arc<SharedStatus>,
    accept: tokio::task::JoinHandle<()>,
    core: tokio::task::JoinHandle<anyhow::Result<()>>,
    status_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Coordd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordd")
            .field("listen_addr", &self.listen_addr)
            .finish()
    }
}

/// The latest [`StatusInfo`], refreshed by a task that asks the core once a second, so `/status` never
/// waits for the core.
#[derive(Debug, Default)]
struct SharedStatus {
    info: Mutex<StatusInfo>,
}

impl StatusSource for SharedStatus {
    fn fields(&self) -> Map<String, Value> {
        let info = self.info.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match serde_json::to_value(info) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

/// The published start of the line `start` logs once the client port is bound, followed by its address:
/// `serving ZooKeeper clients on ADDR`. Tests that bind port 0 read the address there (logtank-testkit), so
/// the text is kept stable.
pub const SERVING_PREFIX: &str = "serving ZooKeeper clients on ";

impl Daemon for Coordd {
    type Config = CoorddConfig;
    const NAME: &'static str = "coordd";

    async fn start(config: CoorddConfig, ctx: DaemonContext) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(&config.server.common.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.server.common.listen))?;
        let listen_addr = listener.local_addr()?;
        let io = config.io;
        let thread_init: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            logtank_runtime::ioprio::apply_config(&io, "coordd transaction log");
        });
        let cfg = config.clone();
        let recovered =
            tokio::task::spawn_blocking(move || persist::recover(&cfg, Some(thread_init))).await??;
        let status = Arc::new(SharedStatus::default());
        {
            let mut info = status.info.lock().unwrap_or_else(|p| p.into_inner());
            info.zxid = recovered.state.last_zxid;
            info.znodes = recovered.state.tree.node_count();
            info.sessions = recovered.state.sessions.len();
        }
        let metrics = metrics::CoorddMetrics::new();
        metrics.register(ctx.metrics());
        let journal = Arc::downgrade(&recovered.journal);
        let core = Core::new(
            config.clone(),
            recovered.state,
            recovered.journal,
            metrics.clone(),
            recovered.snapshot_zxid,
        );
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        // The core ends early only on a failed transaction log: stop the daemon then (exit 1, systemd
        // restarts it and recovery trusts only the disk), rather than stay up answering nothing.
        let daemon = ctx.clone();
        let core = tokio::spawn(async move {
            let result = core.run(rx).await;
            if let Err(e) = &result {
                daemon.fail(format!("{e:#}"));
            }
            result
        });
        ctx.set_status_source(status.clone());
        let status_task = tokio::spawn(refresh_status(
            tx.clone(),
            status.clone(),
            metrics,
            ctx.shutdown().clone(),
        ));
        let accept = tokio::spawn(conn::accept_loop(
            listener,
            tx,
            Arc::new(config),
            ctx.shutdown().clone(),
        ));
        log::info!("{SERVING_PREFIX}{listen_addr}");
        Ok(Coordd {
            journal,
            listen_addr,
            status,
            accept,
            core,
            status_task,
        })
    }

    fn stalled(&self) -> Option<String> {
        self.journal
            .upgrade()?
            .stalled(logtank_runtime::daemon::STALL_LIMIT)
            .map(|d| {
                format!("the transaction log's journal thread has not come back from its IO for {d:.0?}")
            })
    }

    fn status_line(&self) -> String {
        let s = self.status.info.lock().unwrap_or_else(|p| p.into_inner()).clone();
        format!(
            "serving on {}, zxid 0x{:x}, {} znodes, {} sessions, {} connections",
            self.listen_addr, s.zxid, s.znodes, s.sessions, s.connections
        )
    }

    async fn reload(&mut self, _config: CoorddConfig) -> anyhow::Result<()> {
        // Everything coordd reads from its config shapes the protocol state; it applies at restart.
        log::info!("coordd applies configuration changes at restart");
        Ok(())
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        self.accept.await?;
        self.status_task.await?;
        // The core finishes when every connection task has dropped its sender: flush, snapshot, exit.
        self.core.await??;
        log::info!("coordd stopped cleanly");
        Ok(())
    }
}

async fn refresh_status(
    commands: mpsc::Sender<Command>,
    status: Arc<SharedStatus>,
    metrics: metrics::CoorddMetrics,
    shutdown: logtank_runtime::Shutdown,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait() => return,
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if commands.send(Command::Status { reply: tx }).await.is_err() {
            return;
        }
        if let Ok(info) = rx.await {
            metrics.znodes.set(info.znodes as i64);
            metrics.watches.set(info.watches as i64);
            metrics.connections.set(info.connections as i64);
            *status.info.lock().unwrap_or_else(|p| p.into_inner()) = info;
        }
    }
}
