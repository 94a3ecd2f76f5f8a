//! The bookie's registration: `<root>/available/<id>` while writable, `<root>/available/readonly/<id>` while
//! readonly, never both (the old node is deleted before the new one is made, so for a moment there is
//! neither). logtank-coord's `Registration` keeps the node through session expiry; this task moves it when
//! readonly changes and deletes it at shutdown.
//!
//! A node under this bookie's id left by an earlier run (killed before its session ended) is deleted at
//! once instead of waited out: only one process can hold the bookie's journal (its lock), and the cookie
//! ties the id to these directories, so the node can only be our own predecessor's.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use logtank_coord::{Coord, CoordError, Registration, ZkError};
use logtank_ledger::Layout;
use logtank_runtime::Shutdown;
use tokio::sync::watch;

/// Pause between attempts to register while coordination is unavailable.
const REGISTER_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What `/status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RegistrationState {
    #[default]
    None,
    Registered(String),
    Moving(String),
}

impl std::fmt::Display for RegistrationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistrationState::None => write!(f, "not registered"),
            RegistrationState::Registered(p) => write!(f, "registered {p}"),
            RegistrationState::Moving(p) => write!(f, "registering {p}"),
        }
    }
}

fn path_for(layout: &Layout, bookie_id: &str, readonly: bool) -> String {
    if readonly {
        layout.readonly_bookie(bookie_id)
    } else {
        layout.available_bookie(bookie_id)
    }
}

/// The data of the registration node: where the bookie's admin port is.
fn node_data(bookie_id: &str, admin: &str) -> Vec<u8> {
    serde_json::json!({ "bookie": bookie_id, "admin": admin })
        .to_string()
        .into_bytes()
}

/// Deletes a node under `path` left by another session (see the module doc).
async fn remove_stale(coord: &Coord, path: &str) -> Result<(), CoordError> {
    let client = coord.client();
    match client.check_stat(path).await {
        Ok(Some(stat)) if stat.ephemeral_owner != client.session_id().0 => {
            log::info!("removing {path}, left by an earlier run of this bookie");
            match client.delete(path, Some(stat.version)).await {
                Ok(()) | Err(ZkError::NoNode) => Ok(()),
                Err(e) => Err(CoordError::Node {
                    op: "delete",
                    path: path.into(),
                    error: e,
                }),
            }
        }
        Ok(_) => Ok(()),
        Err(e) => Err(CoordError::Node {
            op: "stat",
            path: path.into(),
            error: e,
        }),
    }
}

async fn register(coord: &Coord, path: &str, data: &[u8]) -> Result<Registration, CoordError> {
    remove_stale(coord, path).await?;
    coord.register(path, data).await
}

/// Keeps the bookie registered where its readonly state says.
#[derive(Debug)]
pub struct Registrar {
    coord: Coord,
    layout: Layout,
    bookie_id: String,
    data: Vec<u8>,
    pub state: Arc<Mutex<RegistrationState>>,
}

impl Registrar {
    pub fn new(coord: Coord, layout: Layout, bookie_id: String, admin: &str) -> Registrar {
        let data = node_data(&bookie_id, admin);
        Registrar {
            coord,
            layout,
            bookie_id,
            data,
            state: Arc::default(),
        }
    }

    fn set(&self, state: RegistrationState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// The first registration, before the bookie says it is ready. Both nodes of this id are cleared of
    /// stale predecessors, so the bookie is never listed twice.
    pub async fn first(&self, readonly: bool) -> Result<Registration, CoordError> {
        let other = path_for(&self.layout, &self.bookie_id, !readonly);
        remove_stale(&self.coord, &other).await?;
        let path = path_for(&self.layout, &self.bookie_id, readonly);
        let registration = register(&self.coord, &path, &self.data).await?;
        self.set(RegistrationState::Registered(path));
        Ok(registration)
    }

    /// Follows readonly changes until shutdown, then deregisters.
    pub async fn run(
        self,
        mut current: Registration,
        mut readonly: watch::Receiver<bool>,
        shutdown: Shutdown,
    ) {
        loop {
            tokio::select! {
                changed = readonly.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let want = path_for(&self.layout, &self.bookie_id, *readonly.borrow_and_update());
                    if want == current.path() {
                        continue;
                    }
                    self.set(RegistrationState::Moving(want.clone()));
                    current.deregister_or_expire().await;
                    current = loop {
                        tokio::select! {
                            r = register(&self.coord, &want, &self.data) => match r {
                                Ok(r) => break r,
                                Err(e) => {
                                    log::warn!("registering {want}: {e}; trying again");
                                    tokio::time::sleep(REGISTER_RETRY_PAUSE).await;
                                }
                            },
                            _ = shutdown.wait() => return,
                        }
                    };
                    log::info!("bookie {} now registered at {want}", self.bookie_id);
                    self.set(RegistrationState::Registered(want));
                }
                _ = shutdown.wait() => break,
            }
        }
        self.set(RegistrationState::None);
        current.deregister_or_expire().await;
    }
}
