//! logtank's journal: a segmented, checksummed, append-only log with group commit.
//!
//! Every logtank daemon makes data durable through this crate. Appends from any thread are framed
//! ([`frame`]: length, CRC32C, sequence number) into a staging buffer; one dedicated journal thread writes the
//! buffer with io_uring (write linked to fdatasync) or, where io_uring is unavailable, `pwrite` + `fdatasync`
//! ([`IoBackend`]). It fsyncs at least every `fsync_interval` and at once when a caller waits for durability;
//! every waiter that arrived meanwhile shares that one fsync (group commit).
//!
//! ```no_run
//! # fn main() -> Result<(), logtank_journal::Error> {
//! use logtank_journal::{Journal, JournalOptions};
//! let (journal, _report) = Journal::open("/data/storage/raw/live".as_ref(), JournalOptions::default())?;
//! let seq = journal.append(b"record")?;
//! journal.wait_durable(seq)?; // the record survives a crash from here on
//! for record in journal.read_from(1)? {
//!     let record = record?;
//!     println!("{} {:?}", record.seq, record.payload);
//! }
//! journal.close()?;
//! # Ok(()) }
//! ```
//!
//! Invariants: sequence numbers are contiguous from the first segment's first record; a record is readable
//! only once written; `durable ≤ written`; a segment is fsynced before the next one receives a record; a
//! record that fails its checksum is never returned (open refuses, a reader errors).

pub mod frame;
mod io;
mod journal;
mod metrics;
mod reader;
mod recovery;
mod segment;
mod uring;

use std::path::PathBuf;

pub use crate::io::IoBackend;
pub use crate::journal::{
    Journal, JournalOptions, Location, Marks, GROW_RETRY_INTERVAL, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use crate::metrics::Metrics;
pub use crate::reader::{Reader, Record};
pub use crate::recovery::{salvage, RecoveryReport, TornTail};
pub use crate::segment::SegmentMeta;

/// Everything the journal can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "corrupt journal: {} at offset {offset} (record {seq}): {reason}. Refusing to open, because this record \
         was durable. To salvage, cut the journal there with `logtank journal salvage {} --offset {offset}` \
         (later segments are moved aside, not deleted)",
        path.display(),
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        seq: u64,
        reason: String,
    },
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { len: usize, max: u32 },
    #[error("the journal stopped accepting writes after an IO error (restart to recover): {0}")]
    Failed(String),
    /// The next segment cannot be created (a full or failing disk): appends are refused, nothing written
    /// is lost, and the journal tries again every [`GROW_RETRY_INTERVAL`] until it can.
    #[error("the journal cannot create its next segment ({0}); appends are refused until it can (tried again every second)")]
    CannotGrow(String),
    #[error("the journal is closed")]
    Closed,
    #[error("journal directory {} is in use by another process", .0.display())]
    Locked(PathBuf),
    #[error("records before {requested} are no longer available: the journal starts at {first_available}")]
    Truncated { requested: u64, first_available: u64 },
    #[error("invalid journal argument: {0}")]
    InvalidArgument(String),
}

/// The durable-file steps (directory fsync, durable rename) fail with the path they concerned, as the
/// journal's own IO errors do.
impl From<logtank_durable::DurableError> for Error {
    fn from(e: logtank_durable::DurableError) -> Error {
        Error::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// Attaches the path an IO error concerns.
pub(crate) trait ResultExt<T> {
    fn with_path(self, path: impl Into<PathBuf>) -> Result<T, Error>;
}

impl<T> ResultExt<T> for Result<T, std::io::Error> {
    fn with_path(self, path: impl Into<PathBuf>) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
