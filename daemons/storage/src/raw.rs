//! The raw log: the writer's journal segments in `raw/live`, and the dealt ones in `raw/history`.
//!
//! A raw segment is named `<first_seq:020>.journal` by logtank-journal; each frame is one batch, whose
//! payload is the batch's records as Thrift-encoded `LogRecord` structs back to back (index_code kept).

use std::fs;
use std::path::{Path, PathBuf};

use logtank_thrift::binary::Limits;
use logtank_thrift::codec;

use crate::error::{IoContext, StorageError};
use crate::Layout;

const SEGMENT_SUFFIX: &str = ".journal";

/// One raw segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSegment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub in_history: bool,
}

/// Segments in `dir`, oldest first; anything else (the journal's LOCK, spare and temporary files) ignored.
pub(crate) fn list(dir: &Path, in_history: bool) -> Result<Vec<RawSegment>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if stem.len() != 20 {
            continue;
        }
        if let Ok(first_seq) = stem.parse::<u64>() {
            segments.push(RawSegment {
                first_seq,
                path: entry.path(),
                in_history,
            });
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Live and history, oldest first. Live is listed first: a segment the dealer moves to history meanwhile is
/// then found in one listing or the other (or both, deduplicated), never missed.
pub(crate) fn list_all(layout: &Layout) -> Result<Vec<RawSegment>, StorageError> {
    let mut all = list(&layout.raw_live(), false)?;
    all.extend(list(&layout.raw_history(), true)?);
    all.sort_by_key(|s| s.first_seq);
    all.dedup_by_key(|s| s.first_seq);
    Ok(all)
}

/// The history path a live segment is archived to.
pub(crate) fn history_path(layout: &Layout, first_seq: u64) -> PathBuf {
    layout
        .raw_history()
        .join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

pub(crate) fn live_path(layout: &Layout, first_seq: u64) -> PathBuf {
    layout.raw_live().join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Splits a batch payload into its encoded records.
pub(crate) fn batch_records<'a>(
    payload: &'a [u8],
    limits: &'a Limits,
) -> impl Iterator<Item = Result<&'a [u8], String>> + 'a {
    let mut rest = payload;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match codec::record_len(rest, limits) {
            Ok(len) if len > 0 && len <= rest.len() => {
                let (record, tail) = rest.split_at(len);
                rest = tail;
                Some(Ok(record))
            }
            Ok(_) => {
                rest = &[];
                Some(Err("record length out of bounds".to_string()))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e.to_string()))
            }
        }
    })
}
