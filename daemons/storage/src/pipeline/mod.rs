//! The master's pipeline: the dealer splits closed raw segments per index, the sorter compacts unsorted
//! segments, the optimizer merges sorted segments into a snapshot, the cleaner removes what is superseded.
//!
//! It runs on one thread (the daemon's, at IO class best-effort 7), one step after the other, so each step
//! sees the previous one's files complete. Every step is idempotent after a crash: outputs are written
//! under temporary names, fsynced and renamed before the inputs they replace are removed, and the dealer
//! records its progress only after its outputs are durable.

mod cleaner;
mod cursor;
mod dealer;
mod optimizer;
mod sorter;

use crate::error::StorageError;
use crate::Storage;

/// What one [`Storage::run_cycle`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    /// Raw segments dealt (and archived to history).
    pub dealt_segments: usize,
    /// Indexes whose unsorted segments were sorted.
    pub sorted_indexes: usize,
    /// Indexes optimized.
    pub optimized_indexes: usize,
    /// Files removed by the cleaner (segments, raw history, deleted indexes).
    pub removed_files: usize,
}

impl CycleReport {
    pub fn did_something(&self) -> bool {
        *self != CycleReport::default()
    }
}

impl Storage {
    /// One pass of the whole pipeline. `keep_going` is asked between steps and between segments: once it
    /// says no (demoted, shutting down), the cycle stops at the next durable point.
    pub fn run_cycle(&self, keep_going: &dyn Fn() -> bool) -> Result<CycleReport, StorageError> {
        let mut report = CycleReport {
            dealt_segments: self.deal(keep_going)?,
            ..CycleReport::default()
        };
        for code in self.list_indexes()? {
            if !keep_going() {
                return Ok(report);
            }
            if self.sort_index(&code, false)? {
                report.sorted_indexes += 1;
            }
        }
        self.discover_optimizations()?;
        while keep_going() {
            let Some(code) = self.queue().pop() else { break };
            if self.optimize_index(&code)? {
                report.optimized_indexes += 1;
            }
        }
        if keep_going() {
            report.removed_files = self.clean()?;
        }
        Ok(report)
    }

    /// Deals every closed raw segment not dealt yet; returns how many were dealt.
    pub fn deal(&self, keep_going: &dyn Fn() -> bool) -> Result<usize, StorageError> {
        dealer::deal_closed_segments(self, keep_going)
    }

    /// Sorts `code`'s unsorted segments if there are enough of them (or `force`); true if it sorted.
    pub fn sort_index(&self, code: &str, force: bool) -> Result<bool, StorageError> {
        sorter::sort_index(self, code, force)
    }

    /// Queues the indexes with more unoptimized segments than the threshold (IndexTank's discovery).
    pub fn discover_optimizations(&self) -> Result<(), StorageError> {
        optimizer::discover(self)
    }

    /// Merges `code`'s snapshot with its sorted segments into a new snapshot; true if it wrote one.
    pub fn optimize_index(&self, code: &str) -> Result<bool, StorageError> {
        optimizer::optimize_index(self, code)
    }

    /// Removes deleted indexes, superseded segments (after the read guard) and expired raw history.
    pub fn clean(&self) -> Result<usize, StorageError> {
        cleaner::clean(self)
    }

    /// Removes raw history older than `raw_history_retention` (part of [`Storage::clean`]; a slave, whose
    /// pipeline does not run, calls it from its sync).
    pub fn expire_raw_history(&self) -> Result<usize, StorageError> {
        cleaner::expire_raw_history(self)
    }
}
