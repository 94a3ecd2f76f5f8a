//! Coordination in the background, for daemons that never wait for it (logtank-writer, logtank-indexes): they
//! serve from the start, and a task of theirs connects, registers and bumps whenever coordination answers.
//!
//! - [`advertised`]: the `host:port` a daemon registers, from its `advertise` key or its bound address.
//! - [`retry_forever`], [`Coord::connect_forever`], [`Coord::register_forever`]: the operation again and
//!   again with [`Backoff`], one warning per failure saying what the daemon does meanwhile. Unlike every
//!   other retry in this crate they never give up: they follow the daemon's life, as the supervisor does.
//! - [`Registration::deregister_or_expire`]: a clean stop's deregistration, bounded by
//!   [`DEREGISTER_TIMEOUT`]; past it, the node goes with the session.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::CoordConfig;
use crate::connect::Backoff;
use crate::error::CoordError;
use crate::registration::Registration;
use crate::session::Coord;

/// How long a daemon stopping waits to delete its node before leaving it to the session's expiry.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

/// This host's name, for advertised addresses and messages; `localhost` if it has none usable (a `/` would
/// make it two path components).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "localhost".to_string())
}

/// The `host:port` a daemon registers: its `advertise` key if set, else the address it is bound to with a
/// wildcard IP (`0.0.0.0`, `::`) replaced by this host's name.
pub fn advertised(advertise: Option<&str>, bound: SocketAddr) -> String {
    if let Some(a) = advertise {
        return a.to_string();
    }
    if bound.ip().is_unspecified() {
        return format!("{}:{}", host_name(), bound.port());
    }
    bound.to_string()
}

/// Runs `attempt` until it succeeds, pausing with [`Backoff`] between failures and logging each at warn with
/// the line `warning` makes of the error and the pause before the next attempt. Never gives up: only for
/// work that follows the daemon's life (stop it by dropping the future, e.g. in a `select!` with shutdown).
pub async fn retry_forever<T, F, Fut>(mut attempt: F, warning: impl Fn(&CoordError, Duration) -> String) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CoordError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                let delay = backoff.next_delay();
                let line = warning(&e, delay);
                log::warn!("{line}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

impl Coord {
    /// [`Coord::connect`] until it succeeds ([`retry_forever`]); `warning` says what the daemon does
    /// meanwhile.
    pub async fn connect_forever(
        config: &CoordConfig,
        warning: impl Fn(&CoordError, Duration) -> String,
    ) -> Coord {
        retry_forever(|| Coord::connect(config), warning).await
    }

    /// [`Coord::register`] until it succeeds ([`retry_forever`]).
    pub async fn register_forever(
        &self,
        path: &str,
        data: &[u8],
        warning: impl Fn(&CoordError, Duration) -> String,
    ) -> Registration {
        retry_forever(|| self.register(path, data), warning).await
    }
}

impl Registration {
    /// [`Registration::deregister`] within [`DEREGISTER_TIMEOUT`]; a failure or the timeout is logged at
    /// warn, and the node then goes when the session expires.
    pub async fn deregister_or_expire(self) {
        let path = self.path().to_string();
        match tokio::time::timeout(DEREGISTER_TIMEOUT, self.deregister()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("{path}: {e}; the node goes when the session expires"),
            Err(_) => log::warn!(
                "{path}: not deregistered within {} ms; the node goes when the session expires",
                DEREGISTER_TIMEOUT.as_millis()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves `advertise` wins, a specific bound address is kept, and a wildcard one gets the host's name.
    #[test]
    fn advertised_address() {
        let any: SocketAddr = "0.0.0.0:15000".parse().unwrap_or_else(|e| panic!("{e}"));
        let any6: SocketAddr = "[::]:15100".parse().unwrap_or_else(|e| panic!("{e}"));
        let one: SocketAddr = "10.1.2.3:15000".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(advertised(Some("w1:1"), any), "w1:1");
        assert_eq!(advertised(None, one), "10.1.2.3:15000");
        for (bound, port) in [(any, ":15000"), (any6, ":15100")] {
            let named = advertised(None, bound);
            assert!(named.ends_with(port) && !named.starts_with("0.0.0.0"), "{named}");
            assert_eq!(named, format!("{}{port}", host_name()));
        }
    }

    // Proves retry_forever keeps trying through failures, warning about each, and returns the first success.
    #[tokio::test]
    async fn retry_forever_returns_the_first_success() {
        let attempts = std::cell::Cell::new(0);
        let warnings = std::cell::Cell::new(0);
        let value = retry_forever(
            || {
                attempts.set(attempts.get() + 1);
                let n = attempts.get();
                async move {
                    if n < 4 {
                        Err(CoordError::Config(format!("attempt {n}")))
                    } else {
                        Ok(n)
                    }
                }
            },
            |e, delay| {
                warnings.set(warnings.get() + 1);
                format!("{e}; again in {} ms", delay.as_millis())
            },
        )
        .await;
        assert_eq!((value, attempts.get(), warnings.get()), (4, 4, 3));
    }
}
