//! The optimizer: merges an index's latest snapshot with the sorted segments after it (at most
//! `optimize_inputs_max` inputs) into a new snapshot `optimized/<from>-<to>.optimized_<n>`, folding each
//! docid's records into the document (bare deletes drop it). Inputs are left for the cleaner.

use logtank_thrift::codec;

use super::cursor::{merge_sorted, RecordCursor};
use crate::error::StorageError;
use crate::framed::SegmentWriter;
use crate::merge::fold_optimized;
use crate::names::{SegmentKind, SegmentName};
use crate::Storage;

/// IndexTank's discovery priority; `enqueue_for_optimization` may use lower values to jump ahead.
pub(crate) const DISCOVERY_PRIORITY: i32 = 10;

pub(crate) fn discover(storage: &Storage) -> Result<(), StorageError> {
    for code in storage.list_indexes()? {
        let info = match storage.index_log_info(&code) {
            Ok(info) => info,
            Err(StorageError::NoSuchIndex(_)) => continue,
            Err(e) => return Err(e),
        };
        let unoptimized = info.unoptimized_segments.max(0) as usize;
        if unoptimized > storage.options.optimize_unoptimized_segments_min {
            storage
                .queue()
                .enqueue(&code, DISCOVERY_PRIORITY, unoptimized as f64);
        }
    }
    Ok(())
}

pub(crate) fn optimize_index(storage: &Storage, code: &str) -> Result<bool, StorageError> {
    let layout = &storage.layout;
    if !layout.index(code).is_dir() {
        return Ok(false);
    }
    // The snapshot is built from sorted segments only; sort whatever is still unsorted first.
    storage.sort_index(code, true)?;
    let (segments, optimized) = storage.index_segments(code)?;
    let latest = optimized.last().copied();
    let after = latest.map_or(0, |o| o.to);
    let budget = storage
        .options
        .optimize_inputs_max
        .saturating_sub(usize::from(latest.is_some()))
        .max(1);
    let sorted: Vec<SegmentName> = segments
        .into_iter()
        .filter(|s| s.kind == SegmentKind::Sorted && s.from >= after)
        .take(budget)
        .collect();
    let Some(last) = sorted.last().copied() else {
        return Ok(false);
    };
    let mut inputs = Vec::with_capacity(sorted.len() + 1);
    if let Some(latest) = &latest {
        inputs.push(RecordCursor::open(
            &layout.segment_path(code, latest),
            &storage.options.limits,
        )?);
    }
    for name in &sorted {
        inputs.push(RecordCursor::open(
            &layout.segment_path(code, name),
            &storage.options.limits,
        )?);
    }
    let from = latest.map_or(sorted[0].from, |o| o.from);
    let to = last.to;
    let mut out = SegmentWriter::create(&layout.optimized(code), &format!("{from:020}-{to:020}.optimized"))?;
    let mut encoded = Vec::new();
    merge_sorted(
        inputs,
        |records| records.into_iter().fold(None, fold_optimized),
        |record| {
            encoded.clear();
            codec::encode_record(&mut encoded, &record);
            out.append(&encoded)
        },
    )?;
    let name = SegmentName {
        from,
        to,
        kind: SegmentKind::Optimized,
        records: out.records(),
    };
    out.finish(&layout.segment_path(code, &name))?;
    log::info!(
        "optimizer: index {code}: {} sorted segments{} merged into {name}",
        sorted.len(),
        if latest.is_some() {
            " and the previous snapshot"
        } else {
            ""
        }
    );
    Ok(true)
}
