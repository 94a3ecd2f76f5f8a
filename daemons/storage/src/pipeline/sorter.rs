//! The sorter: compacts all unsorted segments of an index into one sorted segment (merge rules per docid,
//! sorted by docid), with bounded memory: records are compacted in memory up to `sort_memory_bytes`, then
//! spilled as a sorted run; the runs are k-way merged into the output (an external merge sort).

use std::collections::BTreeMap;

use logtank_thrift::{codec, LogRecord};

use super::cursor::{merge_sorted, RecordCursor};
use crate::error::{IoContext, StorageError};
use crate::framed::SegmentWriter;
use crate::merge::merge_into;
use crate::names::{SegmentKind, SegmentName};
use crate::storage::{covered, list_names};
use crate::Storage;

/// Per-record bookkeeping counted against the sort memory besides its encoded size.
const RECORD_OVERHEAD_BYTES: usize = 128;

pub(crate) fn sort_index(storage: &Storage, code: &str, force: bool) -> Result<bool, StorageError> {
    let layout = &storage.layout;
    let options = &storage.options;
    let dir = layout.segments(code);
    let names = list_names(&dir)?;
    // Unsorted segments a sorted one covers are leftovers of a crash after the sort's rename.
    let leftovers = covered(&names);
    for name in &leftovers {
        remove(&layout.segment_path(code, name))?;
    }
    if !leftovers.is_empty() {
        logtank_durable::fsync_dir(&dir)?;
    }
    let unsorted: Vec<SegmentName> = names
        .into_iter()
        .filter(|n| n.kind == SegmentKind::Unsorted && !leftovers.contains(n))
        .collect();
    if unsorted.is_empty() {
        return Ok(false);
    }
    let bytes: u64 = unsorted
        .iter()
        .filter_map(|n| std::fs::metadata(layout.segment_path(code, n)).ok())
        .map(|m| m.len())
        .sum();
    let needed =
        unsorted.len() > options.sort_unsorted_segments_max || bytes > options.sort_unsorted_bytes_max;
    if !(force || needed) {
        return Ok(false);
    }
    let from = unsorted[0].from;
    let to = unsorted[unsorted.len() - 1].to;

    // Phase 1: compact in memory, spilling sorted runs when the memory budget is used.
    let mut runs: Vec<std::path::PathBuf> = Vec::new();
    let mut pending: BTreeMap<String, LogRecord> = BTreeMap::new();
    let mut pending_bytes = 0usize;
    let mut encoded = Vec::new();
    for name in &unsorted {
        let mut cursor = RecordCursor::open(&layout.segment_path(code, name), &options.limits)?;
        while let Some(record) = cursor.next_record()? {
            let Some(docid) = record.docid.clone() else {
                continue;
            };
            encoded.clear();
            codec::encode_record(&mut encoded, &record);
            pending_bytes += encoded.len() + RECORD_OVERHEAD_BYTES;
            match pending.get_mut(&docid) {
                Some(earlier) => merge_into(earlier, record),
                None => {
                    pending.insert(docid, record);
                }
            }
            if pending_bytes >= options.sort_memory_bytes {
                let run = dir.join(format!(".run-{from:020}-{}", runs.len()));
                write_run(&dir, &run, std::mem::take(&mut pending))?;
                runs.push(run);
                pending_bytes = 0;
            }
        }
    }

    // Phase 2: write the output, merging the runs (oldest first) with what is still in memory.
    let mut out = SegmentWriter::create(&dir, &format!("{from:020}-{to:020}.sorted"))?;
    if runs.is_empty() {
        for record in pending.into_values() {
            encoded.clear();
            codec::encode_record(&mut encoded, &record);
            out.append(&encoded)?;
        }
    } else {
        if !pending.is_empty() {
            let run = dir.join(format!(".run-{from:020}-{}", runs.len()));
            write_run(&dir, &run, pending)?;
            runs.push(run);
        }
        let inputs = runs
            .iter()
            .map(|run| RecordCursor::open(run, &options.limits))
            .collect::<Result<Vec<_>, _>>()?;
        merge_sorted(
            inputs,
            |records| {
                let mut records = records.into_iter();
                let mut merged = records.next()?;
                for later in records {
                    merge_into(&mut merged, later);
                }
                Some(merged)
            },
            |record| {
                encoded.clear();
                codec::encode_record(&mut encoded, &record);
                out.append(&encoded)
            },
        )?;
    }
    let name = SegmentName {
        from,
        to,
        kind: SegmentKind::Sorted,
        records: out.records(),
    };
    out.finish(&layout.segment_path(code, &name))?;
    for input in &unsorted {
        remove(&layout.segment_path(code, input))?;
    }
    for run in &runs {
        remove(run)?;
    }
    logtank_durable::fsync_dir(&dir)?;
    log::info!(
        "sorter: index {code}: {} unsorted segments ({bytes} bytes, {} runs) sorted into {name}",
        unsorted.len(),
        runs.len().max(1)
    );
    Ok(true)
}

fn write_run(
    dir: &std::path::Path,
    path: &std::path::Path,
    records: BTreeMap<String, LogRecord>,
) -> Result<(), StorageError> {
    let label = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("run")
        .to_string();
    let mut out = SegmentWriter::create(dir, &label)?;
    let mut encoded = Vec::new();
    for record in records.into_values() {
        encoded.clear();
        codec::encode_record(&mut encoded, &record);
        out.append(&encoded)?;
    }
    out.finish(path)?;
    Ok(())
}

fn remove(path: &std::path::Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(path),
    }
}
