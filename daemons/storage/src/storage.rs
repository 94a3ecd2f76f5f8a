//! [`Storage`]: the data layer one daemon holds, shared by its request handlers and its pipeline thread.

use std::collections::BTreeMap;
use std::fs;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use logtank_thrift::binary::Limits;
use logtank_thrift::{IndexLogInfo, LogPageToken, QueueScore, RawLogInfo, SegmentInfo};

use crate::error::{IoContext, StorageError};
use crate::layout::check_index_code;
use crate::names::{SegmentKind, SegmentName};
use crate::reader::{self, Page};
use crate::{fsutil, raw, Layout};

/// IndexTank's read page: about this many bytes of segment files per `read_page`.
pub const PAGE_BYTES_DEFAULT: usize = 5 << 20;

/// Tunables of the pipeline and the reader; the defaults are IndexTank's constants where it had one.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Bytes of segment files one page reads (the record crossing the limit is finished).
    pub page_bytes: usize,
    /// Sort an index's unsorted segments once there are more than this many …
    pub sort_unsorted_segments_max: usize,
    /// … or once they hold more than this many bytes.
    pub sort_unsorted_bytes_max: u64,
    /// Memory the sorter fills before it spills a sorted run to disk (external merge).
    pub sort_memory_bytes: usize,
    /// Discovery queues an index for optimization once it has more unoptimized segments than this.
    pub optimize_unoptimized_segments_min: usize,
    /// Inputs of one optimization, the previous snapshot included.
    pub optimize_inputs_max: usize,
    /// Superseded segments of an index are removed only once nobody read it for this long.
    pub read_guard: Duration,
    /// Dealt raw segments are kept this long in `raw/history`.
    pub raw_history_retention: Duration,
    /// A deleted index is kept aside in `storage/deleted-indexes` this long before its files go, so a
    /// mistaken (or hostile) `delete_index` can be undone by moving it back.
    pub deleted_index_retention: Duration,
    pub limits: Limits,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            page_bytes: PAGE_BYTES_DEFAULT,
            sort_unsorted_segments_max: 30,
            sort_unsorted_bytes_max: 30 << 20,
            sort_memory_bytes: 64 << 20,
            optimize_unoptimized_segments_min: 4,
            optimize_inputs_max: 40,
            read_guard: Duration::from_secs(30 * 60),
            raw_history_retention: Duration::from_secs(7 * 24 * 3600),
            deleted_index_retention: Duration::from_secs(7 * 24 * 3600),
            limits: Limits::default(),
        }
    }
}

/// The optimization queue: lower priority value first, then higher score (IndexTank's order).
#[derive(Debug, Default)]
pub(crate) struct OptimizationQueue {
    entries: BTreeMap<String, QueueScore>,
}

impl OptimizationQueue {
    /// Queues `code`, unless it is already queued with a more urgent (lower) priority value.
    pub fn enqueue(&mut self, code: &str, priority: i32, score: f64) {
        match self.entries.get(code) {
            Some(queued) if queued.priority < priority => {}
            _ => {
                self.entries
                    .insert(code.to_string(), QueueScore { priority, score });
            }
        }
    }

    pub fn pop(&mut self) -> Option<String> {
        let code = self
            .entries
            .iter()
            .min_by(|a, b| {
                a.1.priority
                    .cmp(&b.1.priority)
                    .then(b.1.score.total_cmp(&a.1.score))
            })
            .map(|(code, _)| code.clone())?;
        self.entries.remove(&code);
        Some(code)
    }

    pub fn snapshot(&self) -> Vec<(String, QueueScore)> {
        self.entries
            .iter()
            .map(|(code, score)| (code.clone(), *score))
            .collect()
    }
}

/// The storage of one data root.
#[derive(Debug)]
pub struct Storage {
    pub(crate) layout: Layout,
    pub(crate) options: StorageOptions,
    pub(crate) queue: Mutex<OptimizationQueue>,
    pub(crate) deletions: Mutex<Vec<String>>,
    /// Which index codes the undealt raw segments hold, scanned incrementally (see
    /// [`reader::UndealtCodes`]), so `read_page` of an index with no directory costs the new bytes only.
    pub(crate) undealt_codes: Mutex<reader::UndealtCodes>,
}

impl Storage {
    /// Opens the storage under `layout`, creating its directories.
    pub fn open(layout: Layout, options: StorageOptions) -> Result<Storage, StorageError> {
        for dir in [layout.raw_live(), layout.raw_history(), layout.indexes()] {
            logtank_durable::create_dir_all_durably(&dir)?;
        }
        Ok(Storage {
            layout,
            options,
            queue: Mutex::new(OptimizationQueue::default()),
            deletions: Mutex::new(Vec::new()),
            undealt_codes: Mutex::new(reader::UndealtCodes::default()),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, OptimizationQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One page of `code`'s history from `token` (see the `reader` module).
    pub fn read_page(&self, code: &str, token: &LogPageToken) -> Result<Page, StorageError> {
        check_index_code(code)?;
        reader::read_page(self, code, token)
    }

    /// The first raw sequence number not dealt yet (`None`: nothing dealt so far).
    pub fn dealer_next_seq(&self) -> Result<Option<u64>, StorageError> {
        fsutil::read_u64_file(&self.layout.dealer_info())
    }

    /// Index codes with a directory under `storage/indexes`.
    pub fn list_indexes(&self) -> Result<Vec<String>, StorageError> {
        let dir = self.layout.indexes();
        let mut codes = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(codes),
            Err(e) => return Err(e).at(&dir),
        };
        for entry in entries {
            let entry = entry.at(&dir)?;
            if let Some(name) = entry.file_name().to_str() {
                if check_index_code(name).is_ok() && entry.path().is_dir() {
                    codes.push(name.to_string());
                }
            }
        }
        codes.sort();
        Ok(codes)
    }

    /// An index's segments, oldest first: unsorted and sorted (without unsorted ones a sorted segment already
    /// covers: leftovers of a crash between a sort's rename and its deletes), and optimized separately.
    pub fn index_segments(&self, code: &str) -> Result<(Vec<SegmentName>, Vec<SegmentName>), StorageError> {
        check_index_code(code)?;
        let segments = list_names(&self.layout.segments(code))?;
        let optimized = list_names(&self.layout.optimized(code))?;
        Ok((effective(segments), optimized))
    }

    pub fn index_log_info(&self, code: &str) -> Result<IndexLogInfo, StorageError> {
        check_index_code(code)?;
        if !self.layout.index(code).is_dir() {
            return Err(StorageError::NoSuchIndex(code.into()));
        }
        let (segments, optimized) = self.index_segments(code)?;
        let latest_to = optimized.last().map_or(0, |o| o.to);
        let info = |name: &SegmentName| SegmentInfo {
            timestamp: name.from as i64,
            end_timestamp: Some(name.to as i64),
            valid_length: None,
            actual_length: fs::metadata(self.layout.segment_path(code, name))
                .ok()
                .map(|m| m.len() as i64),
            record_count: i32::try_from(name.records).unwrap_or(i32::MAX),
            sorted: name.kind != SegmentKind::Unsorted,
        };
        let unoptimized: Vec<&SegmentName> = segments.iter().filter(|s| s.from >= latest_to).collect();
        let sorted_count = unoptimized
            .iter()
            .filter(|s| s.kind == SegmentKind::Sorted)
            .count();
        let any_unsorted = unoptimized.iter().any(|s| s.kind == SegmentKind::Unsorted);
        Ok(IndexLogInfo {
            optimized_segments: optimized.iter().map(info).collect(),
            sorted_segments: segments
                .iter()
                .filter(|s| s.kind == SegmentKind::Sorted)
                .map(info)
                .collect(),
            unsorted_segments: segments
                .iter()
                .filter(|s| s.kind == SegmentKind::Unsorted)
                .map(info)
                .collect(),
            optimized_record_count: optimized.last().map_or(0, |o| o.records as i64),
            unoptimized_record_count: unoptimized.iter().map(|s| s.records as i64).sum(),
            unoptimized_segments: (sorted_count + usize::from(any_unsorted)) as i32,
            last_optimization_timestamp: optimized
                .last()
                .and_then(|o| {
                    fs::metadata(self.layout.segment_path(code, o))
                        .and_then(|m| m.modified())
                        .ok()
                })
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64),
        })
    }

    pub fn raw_log_info(&self) -> Result<RawLogInfo, StorageError> {
        let next = self.dealer_next_seq()?.unwrap_or(0);
        let undealt = raw::list(&self.layout.raw_live(), false)?
            .into_iter()
            .filter(|s| s.first_seq >= next)
            .map(|s| SegmentInfo {
                timestamp: s.first_seq as i64,
                actual_length: fs::metadata(&s.path).ok().map(|m| m.len() as i64),
                ..SegmentInfo::default()
            })
            .collect();
        Ok(RawLogInfo {
            undealt_segments: undealt,
            dealer_next_timestamp: next as i64,
        })
    }

    pub fn enqueue_for_optimization(
        &self,
        code: &str,
        priority: i32,
        score: f64,
    ) -> Result<(), StorageError> {
        check_index_code(code)?;
        if !self.layout.index(code).is_dir() {
            return Err(StorageError::NoSuchIndex(code.into()));
        }
        self.queue().enqueue(code, priority, score);
        Ok(())
    }

    pub fn optimization_queue(&self) -> Vec<(String, QueueScore)> {
        self.queue().snapshot()
    }

    /// Queues `code` for deletion by the cleaner (IndexTank deletes asynchronously too).
    pub fn delete_index(&self, code: &str) -> Result<(), StorageError> {
        check_index_code(code)?;
        if !self.layout.index(code).is_dir() {
            return Err(StorageError::NoSuchIndex(code.into()));
        }
        let mut deletions = self.deletions.lock().unwrap_or_else(|p| p.into_inner());
        if !deletions.iter().any(|c| c == code) {
            deletions.push(code.to_string());
        }
        Ok(())
    }
}

/// Segment names in `dir`, by `from`, then `to`, then kind.
pub(crate) fn list_names(dir: &std::path::Path) -> Result<Vec<SegmentName>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.at(dir)?;
        if let Some(name) = entry.file_name().to_str().and_then(SegmentName::parse) {
            names.push(name);
        }
    }
    // By range: snapshots all start where the first one did, so `to` orders them and the last is the newest
    // (regression: ordering by descending `to` made the cleaner delete the newest snapshot and the optimizer
    // rebuild it every cycle).
    names.sort_by_key(|n| (n.from, n.to, n.kind));
    Ok(names)
}

/// Drops unsorted segments a sorted segment covers.
pub(crate) fn effective(names: Vec<SegmentName>) -> Vec<SegmentName> {
    let sorted: Vec<(u64, u64)> = names
        .iter()
        .filter(|n| n.kind == SegmentKind::Sorted)
        .map(|n| (n.from, n.to))
        .collect();
    names
        .into_iter()
        .filter(|n| {
            n.kind != SegmentKind::Unsorted || !sorted.iter().any(|(from, to)| *from <= n.from && n.to <= *to)
        })
        .collect()
}

/// Covered unsorted segments (see [`effective`]).
pub(crate) fn covered(names: &[SegmentName]) -> Vec<SegmentName> {
    let keep = effective(names.to_vec());
    names.iter().filter(|n| !keep.contains(n)).copied().collect()
}
