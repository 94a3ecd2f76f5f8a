//! The nodes logtank uses (DESIGN §4 "Coordination"), named once so daemons, the CLI and the docs agree.
//!
//! All of them are relative to the chroot of `coord.servers`, if it has one.

/// Everything logtank writes lives under here (BookKeeper's `/ledgers/…` aside).
pub const ROOT: &str = "/logtank";
/// One ephemeral child per writer, named `host:port`, holding the same `host:port` as data.
pub const STORAGE_SERVICES: &str = "/logtank/services/storage";
/// Ephemeral, data `host:port` of the master's reader: where index engines recover from.
pub const RECOVERY: &str = "/logtank/services/recovery";
/// The promotion epoch, a decimal number bumped on each promotion; fences an old master.
pub const EPOCH: &str = "/logtank/epoch";

/// The registration node of the writer serving at `host_port` (`/logtank/services/storage/<host:port>`).
///
/// # Panics
/// If `host_port` contains a `/`: it would name a node further down the tree, which no reader expects.
pub fn storage_service(host_port: &str) -> String {
    assert!(
        !host_port.is_empty() && !host_port.contains('/'),
        "a service name is one path component, got {host_port:?}"
    );
    format!("{STORAGE_SERVICES}/{host_port}")
}

/// The parent of an absolute path (`"/"` for a top-level node).
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_service_paths() {
        assert_eq!(
            storage_service("10.0.0.1:15000"),
            "/logtank/services/storage/10.0.0.1:15000"
        );
        assert_eq!(parent(RECOVERY), "/logtank/services");
        assert_eq!(parent("/a"), "/");
    }

    #[test]
    #[should_panic(expected = "one path component")]
    fn a_slash_in_a_service_name_is_refused() {
        storage_service("a/b:1");
    }
}
