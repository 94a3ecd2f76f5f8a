//! [`CoordError`]: what can go wrong talking to coordination, each variant naming the servers or the path.

/// The client library's own error (ZooKeeper error codes and session states), re-exported so callers can
/// match on `NoNode`, `BadVersion`, … without naming the crate.
pub use zookeeper_client::Error as ZkError;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The `[coord]` section makes no sense (see `CoordConfig::validate`).
    #[error("invalid [coord] config: {0}")]
    Config(String),

    /// No session could be established before `coord.connect_timeout_ms` ran out.
    #[error(
        "could not connect to coordination at {servers} in {elapsed_ms} ms ({attempts} attempts; is \
         logtank-coordd or ZooKeeper running there?): {error}"
    )]
    Connect {
        servers: String,
        attempts: u32,
        elapsed_ms: u128,
        // In the message rather than a `#[source]`, so `{e}` in a log line says why, and anyhow's `{e:#}`
        // does not say it twice.
        error: ZkError,
    },

    /// An operation on a node failed for a reason retrying would not fix.
    #[error("{op} {path}: {error}")]
    Node {
        op: &'static str,
        path: String,
        error: ZkError,
    },

    /// A node we must own is held by a node we cannot wait out: a persistent node, or an ephemeral node of
    /// another live session (two daemons registered under the same name).
    #[error(
        "{path} is held by {holder}; is another daemon registered under the same name? (delete the node if \
         it is stale: logtank zk delete {path})"
    )]
    Occupied { path: String, holder: String },

    /// A node holds data that is not what logtank writes there.
    #[error("{path} holds {data:?}, which is not {expected}")]
    BadData {
        path: String,
        data: String,
        expected: &'static str,
    },

    /// A compare-and-set loop lost to concurrent writers more often than its limit.
    #[error("{path}: gave up after {attempts} concurrent updates")]
    Contended { path: String, attempts: u32 },
}

impl CoordError {
    pub(crate) fn node(op: &'static str, path: &str, error: ZkError) -> Self {
        CoordError::Node {
            op,
            path: path.to_string(),
            error,
        }
    }

    /// The client library's error underneath, if there is one (to match on e.g. `ZkError::NoNode`).
    pub fn zk_error(&self) -> Option<&ZkError> {
        match self {
            CoordError::Connect { error, .. } | CoordError::Node { error, .. } => Some(error),
            _ => None,
        }
    }
}
