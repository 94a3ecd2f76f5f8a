//! The master's recovery endpoint (`/logtank/services/recovery`, data `host:port`): read it, or follow it.
//!
//! The master registers it with [`Coord::register`] (so it vanishes when the master dies); index engines
//! follow it with a [`RecoveryWatcher`] to know where to recover from after a promotion, without the
//! database row IndexTank needed editing by hand.

use tokio::sync::watch;
use zookeeper_client::{Client, OneshotWatcher};

use crate::connect::{self, Backoff};
use crate::error::{CoordError, ZkError};
use crate::paths;
use crate::session::{self, Coord};

/// The longest endpoint we accept: a DNS name (253) plus a port.
pub const ENDPOINT_BYTES_MAX: usize = 260;

impl Coord {
    /// The recovery endpoint (`host:port`) now, or `None` when no master has registered one.
    pub async fn recovery_endpoint(&self) -> Result<Option<String>, CoordError> {
        let data = self
            .retrying("get", paths::RECOVERY, |client| async move {
                match client.get_data(paths::RECOVERY).await {
                    Ok((data, _)) => Ok(Some(data)),
                    Err(ZkError::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        data.map(|d| parse_endpoint(&d)).transpose()
    }

    /// A watcher whose first [`RecoveryWatcher::changed`] returns the endpoint now, and each later one
    /// returns it when it differs from what it last returned (master gone, new master).
    pub fn watch_recovery_endpoint(&self) -> RecoveryWatcher {
        RecoveryWatcher {
            sessions: self.sessions(),
            last: None,
        }
    }
}

/// Follows the recovery endpoint across changes, reconnects and renewed sessions; see
/// [`Coord::watch_recovery_endpoint`].
#[derive(Debug)]
pub struct RecoveryWatcher {
    sessions: watch::Receiver<Client>,
    /// What `changed` last returned; `None` before the first call.
    last: Option<Option<String>>,
}

impl RecoveryWatcher {
    /// Waits until the endpoint differs from what this watcher last returned, and returns it (`None`: no
    /// master registered). Transient failures (connection loss, a session being renewed) are retried
    /// inside; an error means the node holds something that is not an endpoint, or the `Coord` is gone.
    pub async fn changed(&mut self) -> Result<Option<String>, CoordError> {
        let mut backoff = Backoff::default();
        loop {
            if !session::wait_for_live_session(&mut self.sessions).await {
                return Err(CoordError::node("watch", paths::RECOVERY, ZkError::ClientClosed));
            }
            let client = self.sessions.borrow().clone();
            let (value, watcher) = match read_and_watch(&client).await {
                Ok(read) => read,
                Err(e) if connect::is_transient(&e) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Err(e) => return Err(CoordError::node("watch", paths::RECOVERY, e)),
            };
            backoff.reset();
            let value = value.map(|d| parse_endpoint(&d)).transpose()?;
            if self.last.as_ref() != Some(&value) {
                self.last = Some(value.clone());
                return Ok(value);
            }
            // Unchanged (or changed and changed back): wait for the next event, then read again. A session
            // event (the session ended) also wakes us; the loop then waits for the renewed session.
            watcher.changed().await;
        }
    }
}

/// Reads the node and leaves a watch on it: a data watch when it exists, an existence watch when not.
async fn read_and_watch(client: &Client) -> Result<(Option<Vec<u8>>, OneshotWatcher), ZkError> {
    loop {
        match client.get_and_watch_data(paths::RECOVERY).await {
            Ok((data, _, watcher)) => return Ok((Some(data), watcher)),
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(e),
        }
        match client.check_and_watch_stat(paths::RECOVERY).await? {
            (None, watcher) => return Ok((None, watcher)),
            (Some(_), _) => continue, // created in between: read it
        }
    }
}

fn parse_endpoint(data: &[u8]) -> Result<String, CoordError> {
    let bad = || CoordError::BadData {
        path: paths::RECOVERY.to_string(),
        data: String::from_utf8_lossy(&data[..data.len().min(ENDPOINT_BYTES_MAX)]).into_owned(),
        expected: "a host:port endpoint",
    };
    if data.len() > ENDPOINT_BYTES_MAX {
        return Err(bad());
    }
    let text = std::str::from_utf8(data).map_err(|_| bad())?.trim();
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(text.to_string())
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            parse_endpoint(b"10.0.0.1:15100").ok(),
            Some("10.0.0.1:15100".into())
        );
        assert_eq!(parse_endpoint(b"host:15100\n").ok(), Some("host:15100".into()));
        for bad in [&b""[..], b"host", b":1", b"host:0", b"host:x", b"\xff:1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }
}
