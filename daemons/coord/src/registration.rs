//! [`Registration`]: an ephemeral node that stays in place for as long as its handle lives.
//!
//! Other daemons find a service by its ephemeral node, so the node must exist exactly while the service
//! runs: it goes with the session when the daemon dies, and it must come back when the session is renewed
//! after an expiry (the server deleted it then) or when an operator deleted it by hand. A keeper task per
//! registration watches the node and the session and creates the node again in both cases.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client::{Client, CreateMode, EventType, OneshotWatcher, SessionId};

use crate::connect::{self, Backoff};
use crate::error::{CoordError, ZkError};
use crate::paths;
use crate::session::{self, Coord};

/// How long a first registration waits for a node left by an earlier session (a previous run of the daemon
/// that died without closing its session) to expire. ZooKeeper's largest session timeout by default is 40 s
/// (20 ticks of 2 s); a node still there after this belongs to a live session: another daemon registered
/// under the same name, which is refused instead of waited on.
pub const STALE_NODE_WAIT_MAX: Duration = Duration::from_secs(60);

/// An ephemeral node kept registered by a background task; see the module doc.
///
/// Dropping it stops the keeper; the node itself then lives until the session ends. Call
/// [`Registration::deregister`] to remove it at once (a graceful shutdown should).
#[derive(Debug)]
pub struct Registration {
    coord: Coord,
    path: String,
    keeper: JoinHandle<()>,
    session: watch::Receiver<Option<SessionId>>,
}

impl Coord {
    /// Creates the ephemeral node `path` holding `data` (and its missing parents, persistent), and keeps it
    /// registered until the returned handle is dropped or deregistered.
    ///
    /// Returns once the node exists in this session. If a node from an earlier session is still there, waits
    /// (up to [`STALE_NODE_WAIT_MAX`]) for the server to expire it; a persistent node, or one that outlives
    /// the wait, is [`CoordError::Occupied`].
    pub async fn register(&self, path: &str, data: &[u8]) -> Result<Registration, CoordError> {
        let deadline = Instant::now() + self.config().session_timeout() + self.config().connect_timeout();
        let mut backoff = Backoff::default();
        let (client, watcher) = loop {
            let client = self.client();
            match ensure_registered(&client, path, data, Some(STALE_NODE_WAIT_MAX)).await {
                Ok(watcher) => break (client, watcher),
                Err(e) if is_transient(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        };
        log::info!("registered {path} (session {})", client.session_id());
        let (status, session) = watch::channel(Some(client.session_id()));
        let keeper = tokio::spawn(keep(
            self.clone(),
            path.to_string(),
            data.to_vec(),
            watcher,
            status,
        ));
        Ok(Registration {
            coord: self.clone(),
            path: path.to_string(),
            keeper,
            session,
        })
    }
}

impl Registration {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The session the node currently lives in; `None` while it is being registered again.
    pub fn session(&self) -> Option<SessionId> {
        *self.session.borrow()
    }

    /// Stops keeping the node and deletes it now, if it is still ours (a node some other session made in
    /// the meantime is left alone).
    pub async fn deregister(self) -> Result<(), CoordError> {
        self.keeper.abort();
        let path = self.path.clone();
        self.coord
            .retrying("deregister", &path, |client| {
                let path = path.clone();
                async move {
                    let Some(stat) = client.check_stat(&path).await? else {
                        return Ok(());
                    };
                    if stat.ephemeral_owner != client.session_id().0 {
                        return Ok(());
                    }
                    match client.delete(&path, Some(stat.version)).await {
                        Ok(()) | Err(ZkError::NoNode) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        log::info!("deregistered {path}");
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

fn is_transient(e: &CoordError) -> bool {
    e.zk_error().is_some_and(connect::is_transient)
}

/// Makes `path` an ephemeral node of `client`'s session and returns a watch on it (fires on deletion, data
/// change or the end of the session). `stale_wait_max` bounds the wait for another session's node to go;
/// `None` waits as long as it takes.
async fn ensure_registered(
    client: &Client,
    path: &str,
    data: &[u8],
    stale_wait_max: Option<Duration>,
) -> Result<OneshotWatcher, CoordError> {
    let started = Instant::now();
    let ephemeral = CreateMode::Ephemeral.with_acls(crate::node_acls());
    let persistent = CreateMode::Persistent.with_acls(crate::node_acls());
    loop {
        match client.create(path, data, &ephemeral).await {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(ZkError::NoNode) => {
                let parent = paths::parent(path);
                client
                    .mkdir(parent, &persistent)
                    .await
                    .map_err(|e| CoordError::node("create parents of", path, e))?;
                continue;
            }
            Err(e) => return Err(CoordError::node("create", path, e)),
        }
        // Our own node, or one in the way: the stat says which, and the watch covers both futures.
        let (stat, watcher) = client
            .check_and_watch_stat(path)
            .await
            .map_err(|e| CoordError::node("watch", path, e))?;
        let Some(stat) = stat else {
            continue; // deleted since our create found it: create it again
        };
        let owner = stat.ephemeral_owner;
        if owner == client.session_id().0 {
            return Ok(watcher);
        }
        let occupied = |holder: String| CoordError::Occupied {
            path: path.to_string(),
            holder,
        };
        if owner == 0 {
            return Err(occupied("a persistent node".into()));
        }
        let holder = format!("an ephemeral node of session {:#x}", owner);
        let remaining = match stale_wait_max {
            Some(max) => match max.checked_sub(started.elapsed()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return Err(occupied(holder)),
            },
            None => None,
        };
        log::warn!(
            "{path} is held by session {owner:#x} (a previous run of this daemon?); waiting for the server \
             to expire it"
        );
        let event = match remaining {
            Some(r) => match tokio::time::timeout(r, watcher.changed()).await {
                Ok(event) => event,
                Err(_) => return Err(occupied(holder)),
            },
            None => watcher.changed().await,
        };
        if event.event_type == EventType::Session && event.session_state.is_terminated() {
            return Err(CoordError::node("watch", path, ZkError::SessionExpired));
        }
    }
}

/// The keeper task: waits for anything that may have removed the node and registers it again.
async fn keep(
    coord: Coord,
    path: String,
    data: Vec<u8>,
    mut watcher: OneshotWatcher,
    status: watch::Sender<Option<SessionId>>,
) {
    let mut sessions = coord.sessions();
    let mut backoff = Backoff::default();
    loop {
        let event = watcher.changed().await;
        match event.event_type {
            EventType::Session => {
                status.send_replace(None);
                log::warn!(
                    "{path}: session ended ({}); registering again on the next session",
                    event.session_state
                );
            }
            EventType::NodeDeleted => {
                status.send_replace(None);
                log::warn!("{path} was deleted; registering it again");
            }
            // A data change or a child event: the node is still ours, only the watch needs setting again.
            _ => {}
        }
        watcher = loop {
            if !session::wait_for_live_session(&mut sessions).await {
                return;
            }
            let client = sessions.borrow().clone();
            match ensure_registered(&client, &path, &data, None).await {
                Ok(w) => {
                    backoff.reset();
                    if status.send_replace(Some(client.session_id())).is_none() {
                        log::info!("registered {path} again (session {})", client.session_id());
                    }
                    break w;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    log::warn!(
                        "registering {path} again failed: {e}; retrying in {} ms",
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        };
    }
}
