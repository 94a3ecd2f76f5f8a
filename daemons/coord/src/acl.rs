//! The ACL of every node logtank creates in coordination.
//!
//! Without credentials (`coord.auth` unset) nodes are `world:ALL`, as before: on a coordination service
//! of its own, the suite trusts whoever can connect. With `coord.auth = "user:password"` every session
//! authenticates with ZooKeeper's `digest` scheme and nodes get `auth:ALL` (the sessions holding those
//! credentials) plus `world:READ`: index engines and monitoring still read the recovery endpoint and the
//! registrations, but a client of a shared ensemble without the credentials cannot rewrite the endpoint,
//! bump the epoch, or touch ledger metadata.
//!
//! The choice is process-wide: one daemon has one coordination identity, set when its first session with
//! credentials is established ([`crate::connect`]), and every create site (registrations, the epoch, ledger
//! metadata, logs) asks [`node_acls`] instead of threading the config through every helper.

use std::sync::atomic::{AtomicBool, Ordering};

use zookeeper_client::{Acl, Acls, Permission};

static AUTHENTICATED: AtomicBool = AtomicBool::new(false);

/// `auth:ALL` (the creating session's authenticated ids) and `world:READ`.
static AUTHENTICATED_ACLS: [Acl; 2] = [
    Acl::new_const(Permission::ALL, "auth", ""),
    Acl::new_const(Permission::READ, "world", "anyone"),
];

/// Called once a session authenticated with `coord.auth`: nodes created from now on are protected.
pub(crate) fn set_authenticated() {
    AUTHENTICATED.store(true, Ordering::Relaxed);
}

/// The ACL for a node this process creates: `auth:ALL, world:READ` once the process authenticates with
/// `coord.auth`, `world:ALL` otherwise.
pub fn node_acls() -> Acls<'static> {
    if AUTHENTICATED.load(Ordering::Relaxed) {
        Acls::new(&AUTHENTICATED_ACLS)
    } else {
        Acls::anyone_all()
    }
}
