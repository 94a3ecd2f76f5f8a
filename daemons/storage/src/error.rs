//! The one error type of the storage layer. Each variant's message is what a client or operator reads.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    InvalidIndexCode(String),
    #[error("index {0:?} does not exist on this host")]
    NoSuchIndex(String),
    #[error(
        "token expired: the read position of index {code:?} is gone ({what}): the segment it pointed to was \
         compacted or removed; restart the recovery from the beginning (an initial token)"
    )]
    TokenExpired { code: String, what: String },
    #[error("invalid page token for index {code:?}: {reason}")]
    InvalidToken { code: String, reason: String },
    #[error("corrupt segment {} at offset {offset}: {reason}; it is not served", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "raw log gap: the dealer expected the raw segment starting at sequence {expected} but the next one \
         starts at {found} ({}); dealing stopped so nothing is skipped",
        path.display()
    )]
    Gap {
        expected: u64,
        found: u64,
        path: PathBuf,
    },
    /// A data root's single-instance lock ([`crate::DataRootLock`]) is held by another process.
    #[error(
        "{} is locked by another {daemon} ({}): {rule}; stop it first",
        path.display(),
        holder.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Locked {
        path: PathBuf,
        daemon: &'static str,
        rule: &'static str,
        holder: Option<u32>,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A failed durable-file step is an IO error on the path it concerned.
impl From<logtank_durable::DurableError> for StorageError {
    fn from(e: logtank_durable::DurableError) -> StorageError {
        StorageError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// Attaches the path an IO error concerns.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Io {
            path: path.into(),
            source,
        })
    }
}
