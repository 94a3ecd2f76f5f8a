//! Establishing a session: [`connect`] retries with capped exponential backoff until a session is up or
//! `coord.connect_timeout_ms` runs out. The retry policy lives here once; `Coord`'s supervisor and every
//! retried operation use the same [`Backoff`].

use std::time::{Duration, Instant};

use zookeeper_client::Client;

use crate::config::CoordConfig;
use crate::error::{CoordError, ZkError};

/// The first pause after a failure: short, so a server that is just starting is found quickly.
pub const BACKOFF_MIN_MS: u64 = 100;
/// The longest pause between attempts: a whole fleet retrying against a recovering ensemble stays gentle,
/// and an operator who fixes the server waits at most this long.
pub const BACKOFF_MAX_MS: u64 = 5_000;
const _: () = assert!(BACKOFF_MIN_MS > 0 && BACKOFF_MIN_MS <= BACKOFF_MAX_MS);

/// Doubling pauses from [`BACKOFF_MIN_MS`] to [`BACKOFF_MAX_MS`], each with up to a quarter added at random
/// so that daemons which lost the same server do not all come back in the same millisecond.
#[derive(Debug, Clone)]
pub struct Backoff {
    next_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next_ms: BACKOFF_MIN_MS,
        }
    }
}

impl Backoff {
    /// The pause to take now; the next one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_ms;
        self.next_ms = (base * 2).min(BACKOFF_MAX_MS);
        // Jitter only needs to differ between processes, not be unpredictable: the clock's nanoseconds do.
        let nanos = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos(),
        );
        Duration::from_millis(base + nanos % (base / 4 + 1))
    }

    pub fn reset(&mut self) {
        self.next_ms = BACKOFF_MIN_MS;
    }
}

/// Connects a new session to `config.servers`, retrying until `config.connect_timeout_ms` has passed.
///
/// Each attempt tries every listed server once (the client's `fail_eagerly`), so an unreachable ensemble is
/// reported after the timeout instead of after the client's own session-long wait. Errors that no retry can
/// fix (a malformed connect string) are returned at once.
pub async fn connect(config: &CoordConfig) -> Result<Client, CoordError> {
    config.validate().map_err(CoordError::Config)?;
    let started = Instant::now();
    let deadline = started + config.connect_timeout();
    let mut backoff = Backoff::default();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut connector = Client::connector()
            .with_session_timeout(config.session_timeout())
            .with_fail_eagerly();
        if let Some(credentials) = &config.auth {
            connector = connector.with_auth("digest", credentials.as_bytes());
        }
        let attempt = connector.connect(&config.servers);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(remaining, attempt).await {
            Ok(Ok(client)) => {
                if config.auth.is_some() {
                    crate::acl::set_authenticated();
                }
                log::info!(
                    "coordination session {} established with {} (timeout {} ms)",
                    client.session_id(),
                    config.servers,
                    client.session_timeout().as_millis()
                );
                return Ok(client);
            }
            Ok(Err(e @ ZkError::BadArguments(_))) => {
                return Err(CoordError::Config(format!(
                    "coord.servers = '{}': {e}",
                    config.servers
                )))
            }
            Ok(Err(e)) => e,
            Err(_) => ZkError::Timeout,
        };
        let delay = backoff.next_delay();
        if Instant::now() + delay >= deadline {
            return Err(CoordError::Connect {
                servers: config.servers.clone(),
                attempts,
                elapsed_ms: started.elapsed().as_millis(),
                error,
            });
        }
        log::debug!(
            "connecting to {} failed (attempt {attempts}: {error}); retrying in {} ms",
            config.servers,
            delay.as_millis()
        );
        tokio::time::sleep(delay).await;
    }
}

/// Whether an operation that failed this way may succeed if simply tried again (on the same session after
/// the client reconnects, or on the session `Coord` builds after this one ended).
pub(crate) fn is_transient(e: &ZkError) -> bool {
    matches!(
        e,
        ZkError::ConnectionLoss
            | ZkError::SessionExpired
            | ZkError::ClientClosed
            | ZkError::Timeout
            | ZkError::Throttled
            | ZkError::SessionMoved
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the backoff doubles from the minimum, never exceeds the cap plus its jitter, and resets.
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let first = b.next_delay().as_millis() as u64;
        assert!(
            (BACKOFF_MIN_MS..=BACKOFF_MIN_MS * 5 / 4).contains(&first),
            "{first}"
        );
        let second = b.next_delay().as_millis() as u64;
        assert!(
            (2 * BACKOFF_MIN_MS..=2 * BACKOFF_MIN_MS * 5 / 4).contains(&second),
            "{second}"
        );
        for _ in 0..20 {
            let d = b.next_delay().as_millis() as u64;
            assert!(d <= BACKOFF_MAX_MS + BACKOFF_MAX_MS / 4 + 1, "{d}");
        }
        assert!(b.next_delay().as_millis() as u64 >= BACKOFF_MAX_MS);
        b.reset();
        assert!((b.next_delay().as_millis() as u64) < 2 * BACKOFF_MIN_MS);
    }
}
