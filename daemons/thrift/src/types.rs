//! The storage protocol's structs, as IndexTank's `document.thrift` defines them (field ids in comments).
//! Maps are `BTreeMap`s: encoding is deterministic, and a duplicate key on the wire keeps the last value.

use std::collections::BTreeMap;

/// One document operation. Field ids: 1 id, 2 timestamp_ms, 3 index_code, 4 docid, 5 deleted, 6 fields,
/// 7 variables, 8 categories.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    /// Legacy; the writer rejects a record that carries it.
    pub id: Option<i64>,
    /// Set by the writer from its clock.
    pub timestamp_ms: Option<i64>,
    /// Required on write; not stored in per-index segments.
    pub index_code: Option<String>,
    /// Required.
    pub docid: Option<String>,
    /// Always written on the wire (IndexTank's generated code does); absent on decode means false.
    pub deleted: bool,
    pub fields: Option<BTreeMap<String, String>>,
    pub variables: Option<BTreeMap<i32, f64>>,
    pub categories: Option<BTreeMap<String, String>>,
}

impl LogRecord {
    /// A bare delete: `deleted` with no fields, variables or categories.
    pub fn is_bare_delete(&self) -> bool {
        self.deleted && self.fields.is_none() && self.variables.is_none() && self.categories.is_none()
    }
}

/// `LogBatch { 1: list<LogRecord> records }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogBatch {
    pub records: Vec<LogRecord>,
}

/// A `LogBatch` as it came off the wire, for a server that stores records as sent (the writer): its
/// records' encoded structs back to back, walked once to find where they end but not decoded or checked
/// beyond their shape. [`crate::codec::copy_record_for_write`] checks and copies them one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawBatch {
    /// `count` encoded `LogRecord` structs, back to back.
    pub records: Vec<u8>,
    pub count: usize,
}

/// `enum PageType { initial = 0, optimized = 1, index = 2, live = 3 }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PageType {
    #[default]
    Initial,
    Optimized,
    Index,
    Live,
}

impl PageType {
    pub fn from_i32(value: i32) -> Option<PageType> {
        Some(match value {
            0 => PageType::Initial,
            1 => PageType::Optimized,
            2 => PageType::Index,
            3 => PageType::Live,
            _ => return None,
        })
    }

    pub fn to_i32(self) -> i32 {
        match self {
            PageType::Initial => 0,
            PageType::Optimized => 1,
            PageType::Index => 2,
            PageType::Live => 3,
        }
    }
}

/// Where a paged read continues. Field ids: 1 type, 2 timestamp, 5 file_position, 7 next_type,
/// 8 next_timestamp (3, 4 and 6 are IndexTank's obsolete fields: skipped on read, never written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPageToken {
    /// IDL default `initial`; `None` when absent on the wire.
    pub page_type: Option<PageType>,
    pub timestamp: Option<i64>,
    pub file_position: Option<i64>,
    pub next_type: Option<PageType>,
    pub next_timestamp: Option<i64>,
}

/// `LogPage { 1: LogBatch batch, 2: optional LogPageToken next_page_token }`; no token = end of stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPage {
    pub batch: LogBatch,
    pub next_page_token: Option<LogPageToken>,
}

/// `SegmentInfo`: 1 timestamp, 2 end_timestamp, 3 valid_length, 4 actual_length, 5 record_count (i32),
/// 6 sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentInfo {
    pub timestamp: i64,
    pub end_timestamp: Option<i64>,
    pub valid_length: Option<i64>,
    pub actual_length: Option<i64>,
    pub record_count: i32,
    pub sorted: bool,
}

/// `RawLogInfo { 1: list<SegmentInfo> undealt_segments, 2: i64 dealer_next_timestamp }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawLogInfo {
    pub undealt_segments: Vec<SegmentInfo>,
    pub dealer_next_timestamp: i64,
}

/// `IndexLogInfo`: 1 optimized_segments, 2 sorted_segments, 3 unsorted_segments, 4 optimized_record_count,
/// 5 unoptimized_record_count, 6 unoptimized_segments (i32), 7 last_optimization_timestamp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexLogInfo {
    pub optimized_segments: Vec<SegmentInfo>,
    pub sorted_segments: Vec<SegmentInfo>,
    pub unsorted_segments: Vec<SegmentInfo>,
    pub optimized_record_count: i64,
    pub unoptimized_record_count: i64,
    pub unoptimized_segments: i32,
    pub last_optimization_timestamp: i64,
}

/// `QueueScore { 1: i32 priority, 2: double score }`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueScore {
    pub priority: i32,
    pub score: f64,
}
