//! The dealer: deals every closed raw segment (all but the writer's newest) into one unsorted segment per
//! index it holds, records its progress, then archives the raw segment to `raw/history`.
//!
//! Order of durable steps for raw segment `[from, to)`: unsorted segments written, fsynced and renamed →
//! `dealer.next_seq.info` = `to` → raw segment renamed to history. A crash before the info is written deals
//! the segment again, producing the same file names (the rename replaces them); a crash after it only
//! archives. Continuity is exact: the next segment to deal must start at the recorded sequence number.

use std::collections::{HashMap, HashSet};

use logtank_thrift::codec;

use crate::error::StorageError;
use crate::framed::{FramedFile, SegmentWriter};
use crate::layout::check_index_code;
use crate::names::{SegmentKind, SegmentName};
use crate::raw::{self, RawSegment};
use crate::{fsutil, Storage};

/// Bytes of raw segment read per step.
const DEAL_READ_BYTES: usize = 8 << 20;
/// Per-index segments written at once while dealing one raw segment: open files and write buffers are
/// what a raw segment naming many indexes would otherwise cost without bound (the writer bounds the
/// indexes of one batch, not of a segment). Beyond it the segment is read again for the rest.
pub(crate) const DEAL_OUTPUTS_OPEN_MAX: usize = 256;
/// The write buffer of each per-index segment being dealt (DEAL_OUTPUTS_OPEN_MAX of them: 16 MiB).
const DEAL_OUTPUT_BUFFER_BYTES: usize = 64 << 10;

pub(crate) fn deal_closed_segments(
    storage: &Storage,
    keep_going: &dyn Fn() -> bool,
) -> Result<usize, StorageError> {
    let layout = &storage.layout;
    let live = raw::list(&layout.raw_live(), false)?;
    let mut next = storage.dealer_next_seq()?;
    let offset = fsutil::read_u64_file(&layout.dealer_seq_offset_info())?.unwrap_or(0);
    let mut dealt_until_ms = fsutil::read_u64_file(&layout.dealer_dealt_until_info())?;
    let mut dealt = 0;
    for pair in live.windows(2) {
        if !keep_going() {
            break;
        }
        let (segment, to) = (&pair[0], pair[1].first_seq);
        match next {
            Some(n) if to <= n => {
                // Dealt before a crash that came before its archiving.
                archive(storage, segment)?;
                continue;
            }
            Some(n) if segment.first_seq != n => {
                return Err(StorageError::Gap {
                    expected: n,
                    found: segment.first_seq,
                    path: segment.path.clone(),
                });
            }
            _ => {}
        }
        let newest_ms = deal_one(storage, segment, to, offset)?;
        logtank_durable::write_atomically(&layout.dealer_info(), format!("{to}\n").as_bytes())?;
        next = Some(to);
        // Written after the progress: after a crash in between it lags, which only makes a slave keep more
        // of its own raw log than it needs to.
        if newest_ms > dealt_until_ms {
            dealt_until_ms = newest_ms;
            if let Some(ms) = newest_ms {
                logtank_durable::write_atomically(
                    &layout.dealer_dealt_until_info(),
                    format!("{ms}\n").as_bytes(),
                )?;
            }
        }
        archive(storage, segment)?;
        dealt += 1;
    }
    Ok(dealt)
}

fn archive(storage: &Storage, segment: &RawSegment) -> Result<(), StorageError> {
    let target = raw::history_path(&storage.layout, segment.first_seq);
    logtank_durable::rename_durably(&segment.path, &target)?;
    log::info!(
        "dealer: archived raw segment {} to {}",
        segment.path.display(),
        target.display()
    );
    Ok(())
}

/// Writes the unsorted segments of raw segment `[segment.first_seq, to)`, named `offset` further on;
/// returns the newest `timestamp_ms` dealt.
fn deal_one(
    storage: &Storage,
    segment: &RawSegment,
    to: u64,
    offset: u64,
) -> Result<Option<u64>, StorageError> {
    let layout = &storage.layout;
    let limits = &storage.options.limits;
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        path: segment.path.clone(),
        offset,
        reason,
    };
    let Some(file) = FramedFile::open(&segment.path)? else {
        return Err(StorageError::Invalid(format!(
            "raw segment {} vanished while dealing",
            segment.path.display()
        )));
    };
    let from = segment.first_seq;
    if file.first_seq != from {
        return Err(corrupt(
            0,
            format!(
                "the header says the segment starts at sequence {}",
                file.first_seq
            ),
        ));
    }
    let (named_from, named_to) = (from + offset, to + offset);
    let label = format!("{named_from:020}-{named_to:020}.unsorted");
    let mut newest_ms: Option<u64> = None;
    let mut skipped = 0u64;
    // At most DEAL_OUTPUTS_OPEN_MAX indexes are written at once (a file and a buffer each): a raw segment
    // naming more is dealt in passes, each over the indexes the earlier ones did not take.
    let mut dealt: HashSet<String> = HashSet::new();
    let mut passes = 0usize;
    loop {
        let first_pass = passes == 0;
        passes += 1;
        let mut outputs: HashMap<String, SegmentWriter> = HashMap::new();
        let mut deferred = false;
        let mut expected_seq = from;
        let mut offset = 0;
        let mut encoded = Vec::new();
        let abandon = |outputs: HashMap<String, SegmentWriter>| {
            for (_, writer) in outputs {
                writer.abandon();
            }
        };
        loop {
            let span = file.read_span(offset, DEAL_READ_BYTES)?;
            for frame in &span.frames {
                if frame.seq != expected_seq {
                    abandon(outputs);
                    return Err(corrupt(
                        frame.offset,
                        format!("sequence {} where {expected_seq} was expected", frame.seq),
                    ));
                }
                expected_seq += 1;
                for record in raw::batch_records(span.payload(frame), limits) {
                    let decoded = record.map_err(|e| corrupt(frame.offset, e)).and_then(|r| {
                        codec::decode_record(r, limits).map_err(|e| corrupt(frame.offset, e.to_string()))
                    });
                    let (mut record, _) = match decoded {
                        Ok(d) => d,
                        Err(e) => {
                            abandon(outputs);
                            return Err(e);
                        }
                    };
                    let Some(code) = record.index_code.take() else {
                        skipped += u64::from(first_pass);
                        continue;
                    };
                    if check_index_code(&code).is_err() || record.docid.is_none() {
                        skipped += u64::from(first_pass);
                        continue;
                    }
                    if first_pass {
                        if let Some(ms) = record.timestamp_ms.and_then(|ms| u64::try_from(ms).ok()) {
                            newest_ms = newest_ms.max(Some(ms));
                        }
                    }
                    if dealt.contains(&code) {
                        continue;
                    }
                    let open = outputs.len();
                    let writer = match outputs.get_mut(&code) {
                        Some(writer) => writer,
                        None if open >= DEAL_OUTPUTS_OPEN_MAX => {
                            deferred = true;
                            continue;
                        }
                        None => {
                            let writer = match SegmentWriter::create_buffered(
                                &layout.segments(&code),
                                &label,
                                DEAL_OUTPUT_BUFFER_BYTES,
                            ) {
                                Ok(w) => w,
                                Err(e) => {
                                    abandon(outputs);
                                    return Err(e);
                                }
                            };
                            outputs.entry(code).or_insert(writer)
                        }
                    };
                    encoded.clear();
                    codec::encode_record(&mut encoded, &record);
                    if let Err(e) = writer.append(&encoded) {
                        abandon(outputs);
                        return Err(e);
                    }
                }
            }
            if let Some(bad) = span.bad {
                abandon(outputs);
                return Err(corrupt(
                    span.next_offset,
                    format!("{bad}; a closed raw segment must be whole: refusing to deal it"),
                ));
            }
            if span.at_end || span.frames.is_empty() {
                break;
            }
            offset = span.next_offset;
        }
        if expected_seq != to {
            abandon(outputs);
            return Err(corrupt(
                offset,
                format!(
                    "the segment ends before sequence {expected_seq}, but the next raw segment starts at {to}"
                ),
            ));
        }
        for (code, writer) in outputs {
            let name = SegmentName {
                from: named_from,
                to: named_to,
                kind: SegmentKind::Unsorted,
                records: writer.records(),
            };
            writer.finish(&layout.segment_path(&code, &name))?;
            dealt.insert(code);
        }
        if !deferred {
            break;
        }
    }
    if skipped > 0 {
        log::warn!(
            "dealer: skipped {skipped} records without a valid index_code or docid in {}",
            segment.path.display()
        );
    }
    let indexes = dealt.len();
    if passes > 1 {
        log::warn!(
            "dealer: raw segment {} names {indexes} indexes, more than {DEAL_OUTPUTS_OPEN_MAX} at once: dealt in {passes} passes",
            segment.path.display()
        );
    }
    log::info!(
        "dealer: dealt raw segment {} (sequences {from}..{to}) into {indexes} indexes",
        segment.path.display()
    );
    Ok(newest_ms)
}
