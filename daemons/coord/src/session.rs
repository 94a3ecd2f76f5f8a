//! [`Coord`]: a daemon's one coordination session, renewed when the server ends it.
//!
//! ZooKeeper sessions end for good when they expire (the server heard nothing for the session timeout: a long
//! pause, a partition) or fail authentication; the client library then refuses every call. A daemon must not
//! die of that, so a supervisor task watches the session's state and, when it becomes terminal, connects a new
//! session (retrying forever with backoff) and publishes it. Everything built on `Coord` (registrations,
//! watchers, retried operations) asks for the current session each time, so it moves to the new one.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use zookeeper_client::{Client, CreateMode, SessionState};

use crate::config::{self, CoordConfig};
use crate::connect::{self, Backoff};
use crate::error::{CoordError, ZkError};

/// A handle on the daemon's coordination session; cheap to clone, all clones share the session.
///
/// The session is closed (and with it every ephemeral node it holds) when the last clone, and every
/// [`crate::Registration`] and [`crate::RecoveryWatcher`] made from it, is dropped.
#[derive(Debug, Clone)]
pub struct Coord {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: CoordConfig,
    /// The current session; the supervisor replaces it when a session ends.
    current: watch::Receiver<Client>,
}

impl Coord {
    /// Connects (retrying for up to `coord.connect_timeout_ms`), creates the connect string's chroot if it
    /// is missing, and starts the supervisor that renews the session. Must be called inside a tokio runtime;
    /// the session lives on that runtime.
    pub async fn connect(config: &CoordConfig) -> Result<Coord, CoordError> {
        let client = connect::connect(config).await?;
        if let Some(chroot) = config::chroot_of(&config.servers) {
            create_chroot(&client, chroot).await?;
        }
        let (sender, current) = watch::channel(client);
        tokio::spawn(supervise(config.clone(), sender));
        Ok(Coord {
            shared: Arc::new(Shared {
                config: config.clone(),
                current,
            }),
        })
    }

    /// The current session's client, for operations this crate does not wrap. Do not keep it across awaits
    /// that may outlive the session: ask again, and you get the renewed one.
    pub fn client(&self) -> Client {
        self.shared.current.borrow().clone()
    }

    pub fn config(&self) -> &CoordConfig {
        &self.shared.config
    }

    /// A receiver that sees each new session the supervisor publishes.
    pub(crate) fn sessions(&self) -> watch::Receiver<Client> {
        self.shared.current.clone()
    }

    /// Runs `op` on the current session, retrying failures that a reconnect or a new session cures (for up
    /// to the session timeout plus the connect timeout: by then the supervisor has either a new session or a
    /// reason to complain in the log).
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        name: &'static str,
        path: &str,
        mut op: F,
    ) -> Result<T, CoordError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, ZkError>>,
    {
        let deadline = Instant::now() + self.config().session_timeout() + self.config().connect_timeout();
        let mut backoff = Backoff::default();
        loop {
            match op(self.client()).await {
                Err(e) if connect::is_transient(&e) && Instant::now() < deadline => {
                    let delay = backoff.next_delay();
                    log::debug!("{name} {path}: {e}; retrying in {} ms", delay.as_millis());
                    tokio::time::sleep(delay).await;
                }
                result => return result.map_err(|e| CoordError::node(name, path, e)),
            }
        }
    }
}

/// Waits until the published session is usable: a new one after the current one ended. Returns `false`
/// when the `Coord` is gone (no session will come).
pub(crate) async fn wait_for_live_session(sessions: &mut watch::Receiver<Client>) -> bool {
    loop {
        if !sessions.borrow_and_update().state().is_terminated() {
            return true;
        }
        if sessions.changed().await.is_err() {
            return false;
        }
    }
}

async fn create_chroot(client: &Client, chroot: &str) -> Result<(), CoordError> {
    let root = client
        .clone()
        .chroot("/")
        .map_err(|_| CoordError::Config(format!("cannot leave the chroot of {}", client.path())))?;
    let options = CreateMode::Persistent.with_acls(crate::node_acls());
    root.mkdir(chroot, &options)
        .await
        .map_err(|e| CoordError::node("create chroot", chroot, e))
}

/// Watches the current session; when it ends, connects a new one and publishes it. Stops when every
/// receiver (every `Coord`) is gone, dropping the last client so the session closes.
async fn supervise(config: CoordConfig, sender: watch::Sender<Client>) {
    loop {
        let client = sender.borrow().clone();
        let id = client.session_id();
        let mut states = client.state_watcher();
        let mut state = states.state();
        while !state.is_terminated() {
            state = tokio::select! {
                _ = sender.closed() => return,
                s = states.changed() => s,
            };
            match state {
                SessionState::Disconnected => {
                    log::warn!("coordination session {id}: disconnected; reconnecting")
                }
                SessionState::SyncConnected => {
                    log::info!("coordination session {id}: reconnected")
                }
                SessionState::ConnectedReadOnly => {
                    log::warn!("coordination session {id}: connected to a read-only server")
                }
                _ => {}
            }
        }
        drop(client);
        log::warn!(
            "coordination session {id} ended ({state}); its ephemeral nodes are gone, starting a new session"
        );
        let renewed = tokio::select! {
            _ = sender.closed() => return,
            c = connect_until_done(&config) => c,
        };
        sender.send_replace(renewed);
    }
}

/// Connects a new session, however long it takes: a daemon without coordination waits, it does not exit.
async fn connect_until_done(config: &CoordConfig) -> Client {
    let mut backoff = Backoff::default();
    loop {
        match connect::connect(config).await {
            Ok(client) => return client,
            Err(e) => {
                let delay = backoff.next_delay();
                log::error!("{e}; trying again in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
            }
        }
    }
}
