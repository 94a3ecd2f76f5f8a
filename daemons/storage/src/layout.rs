//! Where everything lives under the data root, and the marker files that gate the master's work.

use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::names::SegmentName;

/// The paths under one data root (default `/data`, DESIGN §2).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(data_root: impl Into<PathBuf>) -> Layout {
        Layout {
            root: data_root.into(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn storage(&self) -> PathBuf {
        self.root.join("storage")
    }

    /// The writer's journal directory.
    pub fn raw_live(&self) -> PathBuf {
        self.storage().join("raw").join("live")
    }

    /// Dealt raw segments.
    pub fn raw_history(&self) -> PathBuf {
        self.storage().join("raw").join("history")
    }

    pub fn indexes(&self) -> PathBuf {
        self.storage().join("indexes")
    }

    /// Where `delete_index` keeps deleted indexes (`<code>.<unix-ms>`) until
    /// `StorageOptions::deleted_index_retention` has passed: outside `indexes/`, so nothing lists or
    /// serves them, and an operator can move one back.
    pub fn deleted_indexes(&self) -> PathBuf {
        self.storage().join("deleted-indexes")
    }

    /// The directory of one index; `code` must have been validated.
    pub fn index(&self, code: &str) -> PathBuf {
        self.indexes().join(code)
    }

    pub fn segments(&self, code: &str) -> PathBuf {
        self.index(code).join("segments")
    }

    pub fn optimized(&self, code: &str) -> PathBuf {
        self.index(code).join("optimized")
    }

    pub fn segment_path(&self, code: &str, name: &SegmentName) -> PathBuf {
        let dir = match name.kind {
            crate::SegmentKind::Optimized => self.optimized(code),
            _ => self.segments(code),
        };
        dir.join(name.to_string())
    }

    pub fn last_read(&self, code: &str) -> PathBuf {
        self.index(code).join("last_read")
    }

    /// The first raw sequence number the dealer has not dealt yet.
    pub fn dealer_info(&self) -> PathBuf {
        self.storage().join("dealer.next_seq.info")
    }

    /// Added to raw sequence numbers to name per-index segments: 0 on a host that always dealt its own raw
    /// log; on a slave that adopted a master's snapshot, what puts its own raw log after the master's.
    pub fn dealer_seq_offset_info(&self) -> PathBuf {
        self.storage().join("dealer.seq_offset.info")
    }

    /// The newest `timestamp_ms` of any record dealt: how far a snapshot of this host covers in time.
    pub fn dealer_dealt_until_info(&self) -> PathBuf {
        self.storage().join("dealer.dealt_until_ms.info")
    }

    /// A slave's sync staging area (being filled) and the complete snapshot awaiting adoption.
    pub fn migrating(&self) -> PathBuf {
        self.storage().join("migrating")
    }

    pub fn migrated(&self) -> PathBuf {
        self.storage().join("migrated")
    }

    /// What the last adoption replaced.
    pub fn previous(&self) -> PathBuf {
        self.storage().join("previous")
    }

    pub fn dealer_lock(&self) -> PathBuf {
        self.storage().join("dealer.lock")
    }

    pub fn writer_lock(&self) -> PathBuf {
        self.storage().join("writer.lock")
    }

    /// `/data/master`: this host is the master.
    pub fn master_marker(&self) -> PathBuf {
        self.root.join("master")
    }

    /// `/data/storage/safe_to_read`: this host's data is complete.
    pub fn safe_to_read_marker(&self) -> PathBuf {
        self.storage().join("safe_to_read")
    }

    /// `/data/safe_to_read`, as an older setup guide says; honoured too.
    pub fn legacy_safe_to_read_marker(&self) -> PathBuf {
        self.root.join("safe_to_read")
    }

    /// `/data/readonly`: refuse writes.
    pub fn readonly_marker(&self) -> PathBuf {
        self.root.join("readonly")
    }

    pub fn is_master(&self) -> bool {
        self.master_marker().exists()
    }

    pub fn is_safe_to_read(&self) -> bool {
        self.safe_to_read_marker().exists() || self.legacy_safe_to_read_marker().exists()
    }
}

/// Checks an index code before it touches the filesystem (it becomes a directory name).
pub fn check_index_code(code: &str) -> Result<(), StorageError> {
    logtank_thrift::validate_index_code(code).map_err(StorageError::InvalidIndexCode)
}
