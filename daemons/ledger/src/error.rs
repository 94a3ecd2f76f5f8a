//! [`LedgerError`]: everything the ledger client and the layout helpers can fail with, each variant naming
//! the ledger, entry, bookie or node it concerns.

use logtank_bookie_proto::Status;
use logtank_coord::ZkError;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("not enough bookies: a ledger of ensemble size {needed} needs {needed} writable bookies, {writable} are available ({readonly} readonly); start more bookies or use a smaller ensemble")]
    NotEnoughBookies {
        needed: usize,
        writable: usize,
        readonly: usize,
    },

    #[error("ledger {ledger} is fenced: another client opened it with recovery, so this writer can add nothing more")]
    Fenced { ledger: u64 },

    #[error("no ledger {ledger} (no metadata at {path})")]
    NoSuchLedger { ledger: u64, path: String },

    #[error("ledger {ledger} has no entry {entry}{}", .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NoSuchEntry {
        ledger: u64,
        entry: i64,
        detail: Option<String>,
    },

    #[error("entry {ledger}:{entry} from bookie {bookie} is not valid: {reason}")]
    BadEntry {
        ledger: u64,
        entry: i64,
        bookie: String,
        reason: String,
    },

    #[error("the metadata of ledger {ledger} changed under this client: {reason}")]
    MetadataConflict { ledger: u64, reason: String },

    #[error("ledger {ledger} is closed")]
    Closed { ledger: u64 },

    #[error("bookie {bookie} answered {status} to {op} of {ledger}:{entry}")]
    Bookie {
        bookie: String,
        op: &'static str,
        ledger: u64,
        entry: i64,
        status: Status,
    },

    #[error("bookie {bookie}: {reason}")]
    BookieUnreachable { bookie: String, reason: String },

    #[error("{what} took longer than {timeout_ms} ms")]
    Timeout { what: String, timeout_ms: u64 },

    #[error("{reason}")]
    Unrecoverable { ledger: u64, reason: String },

    #[error("{path} holds metadata this client cannot use: {reason}")]
    BadMetadata { path: String, reason: String },

    #[error("the cookie in {origin} cannot be read: {reason}")]
    BadCookie { origin: String, reason: String },

    #[error("{path} is missing: the ledgers root is not formatted (run `logtank ledgers metaformat`)")]
    NotFormatted { path: String },

    #[error("{op} {path}: {error}")]
    Coord {
        op: &'static str,
        path: String,
        error: ZkError,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl LedgerError {
    pub(crate) fn coord(op: &'static str, path: &str, error: ZkError) -> LedgerError {
        LedgerError::Coord {
            op,
            path: path.to_string(),
            error,
        }
    }
}
