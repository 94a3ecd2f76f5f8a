//! logtank's storage data layer: the raw log the writer appends to, the per-index segments the indexes
//! daemon deals it into, IndexTank's merge rules, the dealing pipeline (dealer, sorter, optimizer, cleaner)
//! and paged reads for recovery.
//!
//! No sockets and no async here: the daemons (`logtank-writer`, `logtank-indexes`) put a protocol in front
//! and decide when the pipeline runs (master gating, IO class). Every file this crate writes is written to a
//! temporary name, fsynced, renamed and its directory fsynced before anything it replaces is deleted.
//!
//! On-disk layout under the data root (default `/data`), see [`Layout`]:
//! ```text
//! master, readonly                                  markers (storage/safe_to_read, or safe_to_read)
//! storage/raw/live/<first_seq:020>.journal          the writer's journal (logtank-journal segments)
//! storage/raw/history/<first_seq:020>.journal       dealt raw segments, kept for `raw_history_retention`
//! storage/writer.lock, storage/dealer.lock          one writer, one reader per data root ([`DataRootLock`])
//! storage/dealer.next_seq.info                      first raw sequence number not yet dealt
//! storage/dealer.dealt_until_ms.info, dealer.seq_offset.info   for slaves: see the `sync` module
//! storage/indexes/<code>/segments/<from>-<to>.unsorted_<n>   one per (raw segment, index), arrival order
//! storage/indexes/<code>/segments/<from>-<to>.sorted_<n>     compaction of consecutive unsorted segments
//! storage/indexes/<code>/optimized/<from>-<to>.optimized_<n> snapshot of the index up to raw seq `to`
//! storage/indexes/<code>/last_read                  touched by every read (the cleaner's read guard)
//! ```
//! `from`/`to` are raw journal sequence numbers (a batch is one journal record): the half-open range of the
//! raw log a segment covers. Sequence numbers replace IndexTank's wall-clock segment names, so a clock jump
//! cannot reorder history, and continuity is checkable exactly.
#![forbid(unsafe_code)]

mod error;
mod framed;
mod fsutil;
mod layout;
mod lock;
pub mod merge;
mod names;
mod pipeline;
mod raw;
mod reader;
mod storage;
mod sync;

pub use error::StorageError;
pub use framed::FRAME_PAYLOAD_BYTES_MAX;
pub use layout::Layout;
pub use lock::{DataRootLock, LockRole};
pub use names::{SegmentKind, SegmentName};
pub use pipeline::CycleReport;
pub use reader::Page;
pub use storage::{Storage, StorageOptions};
pub use sync::{Adoption, DEFAULT_ADOPTION_OVERLAP};
