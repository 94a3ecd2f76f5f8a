//! What every logtank daemon needs from coordination, over the `zookeeper-client` crate, so the same binary
//! works against logtank-coordd and a real Apache ZooKeeper ensemble alike.
//!
//! - [`CoordConfig`]: the daemon's `[coord]` config section (connect string, session timeout, connect timeout);
//!   [`OptionalCoordConfig`] the same keys for daemons where coordination is off unless `servers` is set.
//! - [`Coord::connect`]: a session, established with capped exponential backoff and renewed by a supervisor
//!   task whenever the server ends it (expiry), so a long pause or a partition never leaves a daemon without
//!   coordination.
//! - [`Coord::register`] → [`Registration`]: an ephemeral node (e.g. `/logtank/services/storage/<host:port>`)
//!   with its parents created, registered again after a session is renewed or the node deleted.
//! - [`Coord::recovery_endpoint`] and [`Coord::watch_recovery_endpoint`] → [`RecoveryWatcher`]: where the
//!   master's reader is, now and as it changes.
//! - [`Coord::epoch`] and [`Coord::bump_epoch`]: the promotion epoch, bumped by compare-and-set.
//! - [`paths`]: the node names logtank uses (DESIGN §4); [`node_acls`]: the ACL every node gets
//!   (`world:ALL`, or `auth:ALL, world:READ` with `coord.auth` credentials).
//! - For daemons that never wait for coordination: [`advertised`] (the `host:port` they register),
//!   [`retry_forever`], [`Coord::connect_forever`], [`Coord::register_forever`] (their background tasks'
//!   loops) and [`Registration::deregister_or_expire`] (a clean stop's bounded deregistration).
//!
//! Deliberately absent: any protocol code (the client crate speaks the wire) and any blocking call; the
//! session lives on the tokio runtime that connected it. With the `test-support` feature, [`test_support`]
//! starts a real server for integration tests.
#![forbid(unsafe_code)]

mod acl;
mod background;
mod config;
mod connect;
mod epoch;
mod error;
pub mod paths;
mod recovery;
mod registration;
mod session;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use acl::node_acls;
pub use background::{advertised, host_name, retry_forever, DEREGISTER_TIMEOUT};
pub use config::{
    check_connect_string, CoordConfig, OptionalCoordConfig, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_SERVERS,
    DEFAULT_SESSION_TIMEOUT_MS,
};
pub use connect::{connect, Backoff, BACKOFF_MAX_MS, BACKOFF_MIN_MS};
pub use epoch::EPOCH_BUMP_CONFLICTS_MAX;
pub use error::{CoordError, ZkError};
pub use recovery::RecoveryWatcher;
pub use registration::{Registration, STALE_NODE_WAIT_MAX};
pub use session::Coord;
/// The client crate itself, so daemons and the CLI use exactly the version this crate was tested with.
pub use zookeeper_client;
