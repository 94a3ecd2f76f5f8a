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

use logtank_coord::{paths, Coord, CoordConfig, Registration};
use logtank_runtime::Shutdown;

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
    registration.deregister_or_expire().await;
}

async fn connect_and_register(config: &CoordConfig, path: &str, host_port: &str) -> Registration {
    let coord = Coord::connect_forever(config, |e, delay| {
        format!(
            "{e}; serving writes anyway, registering {path} once coordination answers (next try in {} ms)",
            delay.as_millis()
        )
    })
    .await;
    coord
        .register_forever(path, host_port.as_bytes(), |e, delay| {
            format!(
                "registering {path}: {e}; serving writes anyway, trying again in {} ms",
                delay.as_millis()
            )
        })
        .await
}
