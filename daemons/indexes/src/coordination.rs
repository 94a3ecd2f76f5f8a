//! The master's side of coordination (DESIGN §4, §6 "Promotion"): when this host becomes the active master
//! it bumps `/logtank/epoch`, remembers the new value, and registers `/logtank/services/recovery`
//! (ephemeral, data `<advertised host>:<reader port>`) so index engines find it. While it serves it polls
//! the epoch; a newer one means another host was promoted since: this one is fenced (the pipeline stops at
//! its next durable point, reads are refused, the registration is removed). Demotion (the `master` marker
//! removed) removes the registration too.
//!
//! The epoch reads also keep the master lease ([`Roles::confirm_lease`]): with coordination configured, a
//! master deals and serves only while its epoch was confirmed within `indexes.master_lease_ms`, and a
//! promotion to an epoch past 1 waits a lease after its bump, so a master cut off from coordination stops
//! before another one starts. A background task connects, retrying for as long as it takes; until it
//! answers the master holds no lease.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use logtank_coord::{paths, retry_forever, Coord, CoordConfig, Registration};
use logtank_runtime::Shutdown;
use tokio::sync::{oneshot, watch};

use crate::metrics::IndexesMetrics;
use crate::roles::{Fence, RoleView, Roles};

/// What `/status` shows about coordination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CoordState {
    /// No `coord.servers` configured.
    #[default]
    Disabled,
    Connecting,
    /// Connected; this host is not the active master, so nothing is registered.
    Standby,
    /// Bumping the epoch.
    Promoting,
    /// Promoted with `epoch`; `registered` once the recovery node exists.
    Master {
        epoch: u64,
        registered: bool,
    },
    Fenced(Fence),
}

impl CoordState {
    pub fn describe(&self) -> String {
        match self {
            CoordState::Disabled => "no coordination".into(),
            CoordState::Connecting => "connecting to coordination".into(),
            CoordState::Standby => "coordination: standby".into(),
            CoordState::Promoting => "coordination: bumping the epoch".into(),
            CoordState::Master {
                epoch,
                registered: true,
            } => format!("epoch {epoch}, registered at {}", paths::RECOVERY),
            CoordState::Master {
                epoch,
                registered: false,
            } => format!("epoch {epoch}, registering at {}", paths::RECOVERY),
            CoordState::Fenced(f) => format!("fenced: {f}"),
        }
    }
}

pub type SharedCoordState = Arc<Mutex<CoordState>>;

/// Everything the coordination task needs.
#[derive(Debug)]
pub struct Coordination {
    pub config: CoordConfig,
    /// Data of the recovery node.
    pub host_port: String,
    pub roles: Arc<Roles>,
    pub state: SharedCoordState,
    pub metrics: IndexesMetrics,
    /// How often the epoch is read while this host is the master.
    pub poll: Duration,
    pub shutdown: Shutdown,
}

/// How a phase of the task ended.
enum Next {
    /// Start over: wait for the active role again.
    Again,
    Shutdown,
}

impl Coordination {
    /// Runs until shutdown; never fails (every error is logged and retried).
    pub async fn run(self) {
        self.set(CoordState::Connecting);
        let connect = Coord::connect_forever(&self.config, |e, delay| {
            format!(
                "{e}; no master lease until it answers, trying coordination again in {} ms",
                delay.as_millis()
            )
        });
        let Some(coord) = self.until_shutdown(connect).await else {
            return;
        };
        let mut roles = self.roles.subscribe();
        loop {
            self.set(match self.roles.view().fenced {
                Some(f) => CoordState::Fenced(f),
                None => CoordState::Standby,
            });
            let active = tokio::select! {
                r = wait_role(&mut roles, RoleView::holds_markers) => r,
                _ = self.shutdown.wait() => false,
            };
            if !active {
                return;
            }
            match self.serve_as_master(&coord, &mut roles).await {
                Next::Again => continue,
                Next::Shutdown => return,
            }
        }
    }

    /// One term as master: bump, register, watch the epoch, until demotion, fencing or shutdown.
    async fn serve_as_master(&self, coord: &Coord, roles: &mut watch::Receiver<RoleView>) -> Next {
        self.set(CoordState::Promoting);
        // Before the bump is sent: the lease is counted from earlier than it holds, never later.
        let asked_at = std::time::Instant::now();
        let ours = tokio::select! {
            e = bump_forever(coord) => e,
            _ = wait_role(roles, |v| !v.holds_markers()) => return Next::Again,
            _ = self.shutdown.wait() => return Next::Shutdown,
        };
        let roles_now = self.roles.clone();
        let waits = tokio::task::spawn_blocking(move || roles_now.start_lease(asked_at, ours))
            .await
            .unwrap_or(true);
        if let (true, Some(lease)) = (waits, self.roles.lease_duration()) {
            log::info!(
                "promoted with epoch {ours}: dealing and reads start once the previous master's lease has run out \
                 ({} ms)",
                lease.as_millis()
            );
        }
        self.metrics.epoch.set(i64::try_from(ours).unwrap_or(i64::MAX));
        log::info!(
            "promoted with epoch {ours}; registering {} = {}",
            paths::RECOVERY,
            self.host_port
        );
        self.set(CoordState::Master {
            epoch: ours,
            registered: false,
        });
        let (newer_tx, mut newer_rx) = oneshot::channel();
        let poller = tokio::spawn(poll_epoch(
            coord.clone(),
            self.roles.clone(),
            ours,
            self.poll,
            newer_tx,
        ));
        let register = register_forever(coord, &self.host_port);
        tokio::pin!(register);
        let mut registration: Option<Registration> = None;
        let next = loop {
            tokio::select! {
                r = &mut register, if registration.is_none() => {
                    registration = Some(r);
                    self.set(CoordState::Master { epoch: ours, registered: true });
                }
                theirs = &mut newer_rx => {
                    if let Ok(theirs) = theirs {
                        self.fenced(Fence { theirs, ours }).await;
                    }
                    break Next::Again;
                }
                _ = wait_role(roles, |v| !v.holds_markers()) => {
                    log::info!("no longer the active master: removing {}", paths::RECOVERY);
                    break Next::Again;
                }
                _ = self.shutdown.wait() => break Next::Shutdown,
            }
        };
        poller.abort();
        let roles_now = self.roles.clone();
        let _ = tokio::task::spawn_blocking(move || roles_now.end_lease()).await;
        if let Some(registration) = registration {
            registration.deregister_or_expire().await;
        }
        next
    }

    async fn fenced(&self, fence: Fence) {
        log::error!("{fence}: dealing stopped; this host no longer serves reads");
        self.set(CoordState::Fenced(fence));
        self.metrics.fenced.set(1);
        let roles = self.roles.clone();
        let _ = tokio::task::spawn_blocking(move || roles.set_fenced(fence)).await;
    }

    async fn until_shutdown<T>(&self, f: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            v = f => Some(v),
            _ = self.shutdown.wait() => None,
        }
    }

    fn set(&self, s: CoordState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = s;
    }
}

/// Waits until the role satisfies `f`; false if the sender is gone. (The `Ref` `wait_for` returns is not
/// `Send`, so it must not live in a `select!` across an await.)
async fn wait_role(roles: &mut watch::Receiver<RoleView>, f: impl FnMut(&RoleView) -> bool) -> bool {
    roles.wait_for(f).await.is_ok()
}

async fn bump_forever(coord: &Coord) -> u64 {
    retry_forever(
        || coord.bump_epoch(),
        |e, delay| {
            format!(
                "bumping {}: {e}; trying again in {} ms",
                paths::EPOCH,
                delay.as_millis()
            )
        },
    )
    .await
}

async fn register_forever(coord: &Coord, host_port: &str) -> Registration {
    coord
        .register_forever(paths::RECOVERY, host_port.as_bytes(), |e, delay| {
            format!(
                "registering {}: {e}; trying again in {} ms",
                paths::RECOVERY,
                delay.as_millis()
            )
        })
        .await
}

/// Reads the epoch every `every`: an unchanged one renews the master lease; the first one newer than `ours`
/// is sent (this host is fenced).
async fn poll_epoch(
    coord: Coord,
    roles: Arc<Roles>,
    ours: u64,
    every: Duration,
    newer: oneshot::Sender<u64>,
) {
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        let asked_at = std::time::Instant::now();
        match coord.epoch().await {
            Ok(epoch) if epoch > ours => {
                let _ = newer.send(epoch);
                return;
            }
            Ok(_) => {
                let roles = roles.clone();
                let _ = tokio::task::spawn_blocking(move || roles.confirm_lease(asked_at)).await;
                if failing {
                    log::info!("reading {} works again", paths::EPOCH);
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    log::warn!(
                        "reading {}: {e}; the master lease is not renewed until it answers",
                        paths::EPOCH
                    );
                }
                failing = true;
            }
        }
    }
}
