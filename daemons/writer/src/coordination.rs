//! Registration in coordination: `/logtank/services/storage/<advertised host:port>`, ephemeral, holding the
//! same `host:port`, for as long as the writer serves.
//!
//! The writer never needs coordination to accept writes. A background task connects (retrying for as long
//! as it takes, with logtank-coord's backoff), registers, and keeps the [`Registration`]; logtank-coord's
//! keeper registers the node again after the session is renewed (coordination was down or partitioned for
//! longer than the session timeout) or the node was deleted. Meanwhile the writer serves as usual; `/status`
//! says whether the node is in place.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use logtank_coord::{paths, Backoff, Coord, CoordConfig, Registration};
use logtank_runtime::Shutdown;

/// How long shutdown waits to delete the node before leaving it to the session's expiry.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

/// What `/status` shows about coordination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CoordState {
    /// No `coord.servers` configured.
    #[default]
    Disabled,
    Connecting,
    /// The node exists.
    Registered {
        path: String,
    },
    /// The node went with its session (or was deleted); logtank-coord's keeper is registering it again.
    Reregistering {
        path: String,
    },
}

/// How often the task looks at the registration's session for `/status`.
const STATE_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The `host:port` to register: `writer.advertise`, else the bound address with a wildcard IP replaced by
/// the host's name.
pub fn advertised(advertise: Option<&str>, bound: std::net::SocketAddr) -> String {
    if let Some(a) = advertise {
        return a.to_string();
    }
    if bound.ip().is_unspecified() {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "localhost".to_string());
        return format!("{host}:{}", bound.port());
    }
    bound.to_string()
}

/// Connects, registers, and keeps the registration until shutdown, then deregisters. Never fails: every
/// error is logged and retried.
pub async fn run(config: CoordConfig, host_port: String, state: Arc<Mutex<CoordState>>, shutdown: Shutdown) {
    let set = |s: CoordState| *state.lock().unwrap_or_else(PoisonError::into_inner) = s;
    set(CoordState::Connecting);
    let path = paths::storage_service(&host_port);
    let registration = tokio::select! {
        r = connect_and_register(&config, &path, &host_port) => r,
        _ = shutdown.wait() => return,
    };
    set(CoordState::Registered { path: path.clone() });
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STATE_REFRESH_INTERVAL) => {}
            _ = shutdown.wait() => break,
        }
        let path = path.clone();
        set(match registration.session() {
            Some(_) => CoordState::Registered { path },
            None => CoordState::Reregistering { path },
        });
    }
    match tokio::time::timeout(DEREGISTER_TIMEOUT, registration.deregister()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("{path}: {e}; the node goes when the session expires"),
        Err(_) => log::warn!(
            "{path}: not deregistered within {} ms; the node goes when the session expires",
            DEREGISTER_TIMEOUT.as_millis()
        ),
    }
}

async fn connect_and_register(config: &CoordConfig, path: &str, host_port: &str) -> Registration {
    let mut backoff = Backoff::default();
    let coord = loop {
        match Coord::connect(config).await {
            Ok(coord) => break coord,
            Err(e) => {
                let delay = backoff.next_delay();
                log::warn!(
                    "{e}; serving writes anyway, registering {path} once coordination answers (next try in {} ms)",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
            }
        }
    };
    backoff.reset();
    loop {
        match coord.register(path, host_port.as_bytes()).await {
            Ok(registration) => return registration,
            Err(e) => {
                let delay = backoff.next_delay();
                log::warn!(
                    "registering {path}: {e}; serving writes anyway, trying again in {} ms",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_address() {
        let any: std::net::SocketAddr = "0.0.0.0:15000".parse().unwrap_or_else(|e| panic!("{e}"));
        let one: std::net::SocketAddr = "10.1.2.3:15000".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(advertised(Some("w1:1"), any), "w1:1");
        assert_eq!(advertised(None, one), "10.1.2.3:15000");
        let named = advertised(None, any);
        assert!(
            named.ends_with(":15000") && !named.starts_with("0.0.0.0"),
            "{named}"
        );
    }
}
