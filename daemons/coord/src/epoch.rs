//! The promotion epoch (`/logtank/epoch`): a decimal number, bumped by each promotion.
//!
//! A new master bumps it before it serves; an old master that wakes up (a long pause, a partition) reads a
//! larger epoch than the one it was promoted with and knows it is fenced. The bump is a compare-and-set on
//! the node's version, so two concurrent promotions get two different epochs, never the same one.

use zookeeper_client::CreateMode;

use crate::connect::{self, Backoff};
use crate::error::{CoordError, ZkError};
use crate::paths;
use crate::session::Coord;

/// How many lost compare-and-set races a bump tolerates before giving up: promotions are rare, so losing
/// this many in a row means something is writing the node in a loop.
pub const EPOCH_BUMP_CONFLICTS_MAX: u32 = 64;
/// The longest data a valid epoch node holds (`u64::MAX` has 20 digits).
const EPOCH_BYTES_MAX: usize = 20;

impl Coord {
    /// The current epoch; 0 when no promotion ever happened (the node does not exist). A `sync` first, so
    /// a ZooKeeper follower that lags behind its leader cannot answer with an epoch already bumped
    /// elsewhere (a master lease's confirmation, an operator looking, must see the latest).
    pub async fn epoch(&self) -> Result<u64, CoordError> {
        self.retrying("sync", paths::EPOCH, |client| async move {
            match client.sync(paths::EPOCH).await {
                Ok(()) | Err(ZkError::NoNode) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await?;
        let data = self
            .retrying("get", paths::EPOCH, |client| async move {
                match client.get_data(paths::EPOCH).await {
                    Ok((data, _)) => Ok(Some(data)),
                    Err(ZkError::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        data.map_or(Ok(0), |d| parse_epoch(&d))
    }

    /// Increments the epoch (creating the node at 1 if it does not exist) and returns the new value.
    ///
    /// A connection lost while the update was in flight is retried, so an epoch can be skipped (the update
    /// went through, its reply did not); epochs are compared, never counted, so a gap is harmless.
    pub async fn bump_epoch(&self) -> Result<u64, CoordError> {
        let deadline =
            std::time::Instant::now() + self.config().session_timeout() + self.config().connect_timeout();
        let mut backoff = Backoff::default();
        let mut conflicts = 0;
        let persistent = CreateMode::Persistent.with_acls(crate::node_acls());
        loop {
            let client = self.client();
            let attempt = match client.get_data(paths::EPOCH).await {
                Ok((data, stat)) => {
                    let next = parse_epoch(&data)?
                        .checked_add(1)
                        .ok_or_else(|| bad_epoch(&data, "an epoch below the largest number"))?;
                    client
                        .set_data(paths::EPOCH, next.to_string().as_bytes(), Some(stat.version))
                        .await
                        .map(|_| next)
                        .map_err(|e| ("set", e))
                }
                Err(ZkError::NoNode) => match client.mkdir(paths::ROOT, &persistent).await {
                    Ok(()) => client
                        .create(paths::EPOCH, b"1", &persistent)
                        .await
                        .map(|_| 1)
                        .map_err(|e| ("create", e)),
                    Err(e) => Err(("create parents of", e)),
                },
                Err(e) => Err(("get", e)),
            };
            match attempt {
                Ok(epoch) => {
                    log::info!("promotion epoch is now {epoch}");
                    return Ok(epoch);
                }
                // Someone else bumped, created or deleted it between our read and our write: read again.
                Err((_, ZkError::BadVersion | ZkError::NodeExists | ZkError::NoNode)) => {
                    conflicts += 1;
                    if conflicts >= EPOCH_BUMP_CONFLICTS_MAX {
                        return Err(CoordError::Contended {
                            path: paths::EPOCH.to_string(),
                            attempts: conflicts,
                        });
                    }
                }
                Err((_, e)) if connect::is_transient(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err((op, e)) => return Err(CoordError::node(op, paths::EPOCH, e)),
            }
        }
    }
}

fn bad_epoch(data: &[u8], expected: &'static str) -> CoordError {
    CoordError::BadData {
        path: paths::EPOCH.to_string(),
        data: String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned(),
        expected,
    }
}

fn parse_epoch(data: &[u8]) -> Result<u64, CoordError> {
    let expected = "an epoch (a decimal number)";
    if data.len() > EPOCH_BYTES_MAX {
        return Err(bad_epoch(data, expected));
    }
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| bad_epoch(data, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_parse_as_decimal_numbers() {
        assert_eq!(parse_epoch(b"7").ok(), Some(7));
        assert_eq!(parse_epoch(b"18446744073709551615").ok(), Some(u64::MAX));
        for bad in [&b""[..], b"-1", b"x", b"184467440737095516150"] {
            assert!(parse_epoch(bad).is_err(), "{bad:?}");
        }
    }
}
