//! Paged reads of an index's history for recovery: the latest snapshot, then the per-index segments after
//! it, then the raw log from the first segment the dealer has not dealt, filtered by index.
//!
//! Token fields (IndexTank's, opaque to clients): while inside a segment, `type` + `timestamp` name the
//! segment and `file_position` the next frame; between segments, `next_type` + `next_timestamp` say where
//! to continue. `timestamp` is a raw sequence number: a snapshot's `to`, a per-index segment's `from` (with
//! [`SORTED_FLAG`] set for a sorted one), a raw segment's first sequence number.
//!
//! A recovery never ends early. If the segment a token points to was compacted away, the read restarts at
//! the start of the segment that replaced it (replaying an overlap is harmless under the merge rules); if
//! nothing replaced it, or a snapshot changed under the reader (its bare deletes are gone, so no overlap is
//! safe), the error says to restart. No token means the stream ended: the reader reached the end of the
//! newest raw segment as it was at that moment.

use std::fs::File;
use std::time::SystemTime;

use logtank_journal::frame::{FRAME_ALIGN_BYTES, SEGMENT_HEADER_BYTES};
use logtank_thrift::{codec, LogPageToken, PageType};

use crate::error::StorageError;
use crate::framed::FramedFile;
use crate::names::SegmentKind;
use crate::raw;
use crate::Storage;

/// Set in a token's `timestamp` for a sorted segment (raw sequence numbers stay far below it): an unsorted
/// and the sorted segment replacing it can start at the same sequence, and a position in one means
/// nothing in the other.
pub const SORTED_FLAG: i64 = 1 << 62;
/// Segment transitions one page may make before it returns (each one either reads or moves forward).
const TRANSITIONS_PER_PAGE_MAX: usize = 100_000;

/// One page: `record_count` encoded `LogRecord` structs back to back, ready to go on the wire as they are.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Page {
    pub record_count: usize,
    pub records: Vec<u8>,
    /// `None`: the end of the stream.
    pub next: Option<LogPageToken>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    Start,
    Optimized {
        to: u64,
        offset: u64,
    },
    Index {
        kind: SegmentKind,
        from: u64,
        offset: u64,
    },
    Live {
        first_seq: u64,
        offset: u64,
    },
    /// The per-index segment containing this sequence, or else the first starting at or after it.
    NextIndex {
        at: u64,
    },
    /// The raw segment starting at (or containing) this sequence; 0: the oldest.
    NextLive {
        at: u64,
    },
    End,
}

pub(crate) fn read_page(storage: &Storage, code: &str, token: &LogPageToken) -> Result<Page, StorageError> {
    let layout = &storage.layout;
    let mut pos = decode_token(code, token)?;
    let index_dir = layout.index(code);
    if index_dir.is_dir() {
        touch(&layout.last_read(code));
    } else {
        // No directory: an index so new that only the raw log holds it, or one that was deleted.
        let missing = match pos {
            Pos::Start => !undealt_raw_has(storage, code)?,
            Pos::Optimized { .. } | Pos::Index { .. } => true,
            _ => false,
        };
        if missing {
            return Err(StorageError::NoSuchIndex(code.into()));
        }
    }
    let mut page = Page::default();
    let mut budget = storage.options.page_bytes;
    for _ in 0..TRANSITIONS_PER_PAGE_MAX {
        if budget == 0 || pos == Pos::End {
            break;
        }
        pos = step(storage, code, pos, &mut page, &mut budget)?;
    }
    page.next = encode_token(pos);
    Ok(page)
}

/// Advances from `pos` once: reads some of a segment, or resolves where to continue.
fn step(
    storage: &Storage,
    code: &str,
    pos: Pos,
    page: &mut Page,
    budget: &mut usize,
) -> Result<Pos, StorageError> {
    let layout = &storage.layout;
    Ok(match pos {
        Pos::End => Pos::End,
        Pos::Start => {
            let (_, optimized) = storage.index_segments(code)?;
            match optimized.last() {
                Some(latest) => Pos::Optimized {
                    to: latest.to,
                    offset: 0,
                },
                None => Pos::NextIndex { at: 0 },
            }
        }
        Pos::Optimized { to, offset } => {
            let (_, optimized) = storage.index_segments(code)?;
            let Some(name) = optimized.iter().find(|o| o.to == to) else {
                return Err(expired(
                    code,
                    format!("snapshot up to sequence {to} was replaced"),
                ));
            };
            let path = layout.segment_path(code, name);
            let Some(file) = FramedFile::open(&path)? else {
                return Err(expired(code, format!("snapshot {name} was removed")));
            };
            match read_records(code, &file, offset, budget, page, None)? {
                Read::More(offset) => Pos::Optimized { to, offset },
                Read::Finished => Pos::NextIndex { at: to },
            }
        }
        Pos::NextIndex { at } => {
            // The dealer's progress is read before the listing: a segment dealt in between is then found
            // by the listing, never skipped.
            let dealt_up_to = storage.dealer_next_seq()?;
            let (segments, optimized) = storage.index_segments(code)?;
            let containing = segments.iter().find(|s| s.from <= at && at < s.to);
            // A snapshot newer than this position may have absorbed (and the cleaner removed) segments after
            // it; without a segment that covers the position itself, skipping ahead could skip records.
            // (Found by the recovery property test once the cleaner kept the newest snapshot.)
            if containing.is_none() && optimized.last().is_some_and(|o| o.to > at) {
                return Err(expired(
                    code,
                    format!("a newer snapshot absorbed the segments after sequence {at}"),
                ));
            }
            let next = containing.or_else(|| segments.iter().find(|s| s.from >= at));
            match next {
                Some(s) => Pos::Index {
                    kind: s.kind,
                    from: s.from,
                    offset: 0,
                },
                // Raw sequence numbers from here on (per-index names may be offset on a promoted slave).
                None => Pos::NextLive {
                    at: dealt_up_to.unwrap_or(0),
                },
            }
        }
        Pos::Index { kind, from, offset } => {
            let (segments, _) = storage.index_segments(code)?;
            // Two segments may start at the same sequence (seen after a slave's promotion, cause not yet found): the
            // longer covers the shorter, and picking it keeps the position moving forward instead of looping.
            let current = segments
                .iter()
                .filter(|s| s.kind == kind && s.from == from)
                .max_by_key(|s| s.to);
            let Some(name) = current else {
                // Replaced (an unsorted segment sorted, sorted ones merged): restart what replaced it.
                return match segments.iter().find(|s| s.from <= from && from < s.to) {
                    Some(s) => Ok(Pos::Index {
                        kind: s.kind,
                        from: s.from,
                        offset: 0,
                    }),
                    None => Err(expired(
                        code,
                        format!("{} segment from sequence {from} was removed", kind.as_str()),
                    )),
                };
            };
            let path = layout.segment_path(code, name);
            let Some(file) = FramedFile::open(&path)? else {
                // Removed between the listing and the open: resolve again next step.
                return Ok(Pos::Index { kind, from, offset });
            };
            let to = name.to;
            match read_records(code, &file, offset, budget, page, None)? {
                Read::More(offset) => Pos::Index { kind, from, offset },
                Read::Finished => Pos::NextIndex { at: to },
            }
        }
        Pos::NextLive { at } => {
            let all = raw::list_all(layout)?;
            if all.is_empty() {
                return Ok(Pos::End);
            }
            let exact = all.iter().find(|s| s.first_seq == at);
            let containing = all.iter().rev().find(|s| s.first_seq <= at);
            match exact.or(containing) {
                Some(s) => Pos::Live {
                    first_seq: s.first_seq,
                    offset: 0,
                },
                None if at == 0 => Pos::Live {
                    first_seq: all[0].first_seq,
                    offset: 0,
                },
                None => {
                    return Err(expired(
                        code,
                        format!(
                            "raw log from sequence {at} is gone (the oldest kept starts at {})",
                            all[0].first_seq
                        ),
                    ))
                }
            }
        }
        Pos::Live { first_seq, offset } => {
            // Listed before reading: a segment that is not the newest now is complete, so reaching its
            // end means moving on; reaching the end of the newest ends the stream.
            let all = raw::list_all(layout)?;
            let newer = all.iter().find(|s| s.first_seq > first_seq).cloned();
            let Some(file) = open_raw(storage, first_seq)? else {
                return Err(expired(
                    code,
                    format!("raw segment {first_seq} is gone (removed by retention)"),
                ));
            };
            match read_records(code, &file, offset, budget, page, Some(newer.is_none()))? {
                Read::More(offset) => Pos::Live { first_seq, offset },
                Read::Finished => match newer {
                    Some(next) => Pos::Live {
                        first_seq: next.first_seq,
                        offset: 0,
                    },
                    None => Pos::End,
                },
            }
        }
    })
}

enum Read {
    /// Stopped at the page budget; continue at this offset.
    More(u64),
    Finished,
}

/// Appends records of `file` from `offset` to the page. `raw_head`: `None` for a per-index segment (one
/// record per frame), `Some(is_newest)` for a raw segment (a batch per frame, filtered by `code`; a bad
/// frame at the end of the newest is a write in progress, not corruption).
fn read_records(
    code: &str,
    file: &FramedFile,
    offset: u64,
    budget: &mut usize,
    page: &mut Page,
    raw_head: Option<bool>,
) -> Result<Read, StorageError> {
    let start = offset.max(SEGMENT_HEADER_BYTES as u64);
    if !start.is_multiple_of(FRAME_ALIGN_BYTES as u64) || start > file.len() {
        return Err(StorageError::InvalidToken {
            code: code.into(),
            reason: format!(
                "file_position {offset} is not a record boundary of {}",
                file.path().display()
            ),
        });
    }
    let span = file.read_span(start, *budget)?;
    let limits = logtank_thrift::binary::Limits::default();
    for frame in &span.frames {
        let payload = span.payload(frame);
        match raw_head {
            None => {
                page.records.extend_from_slice(payload);
                page.record_count += 1;
            }
            Some(_) => {
                for record in raw::batch_records(payload, &limits) {
                    let record = record.map_err(|reason| StorageError::Corrupt {
                        path: file.path().into(),
                        offset: frame.offset,
                        reason,
                    })?;
                    let matches =
                        codec::record_index_code(record, &limits).map_err(|e| StorageError::Corrupt {
                            path: file.path().into(),
                            offset: frame.offset,
                            reason: e.to_string(),
                        })? == Some(code);
                    if matches {
                        // Served as dealt records are: without index_code (the IDL's promise).
                        codec::copy_record_without_index_code(record, &limits, &mut page.records).map_err(
                            |e| StorageError::Corrupt {
                                path: file.path().into(),
                                offset: frame.offset,
                                reason: e.to_string(),
                            },
                        )?;
                        page.record_count += 1;
                    }
                }
            }
        }
    }
    let consumed = (span.next_offset - start) as usize;
    *budget = budget.saturating_sub(consumed.max(1));
    if let Some(bad) = span.bad {
        if raw_head == Some(true) {
            return Ok(Read::Finished);
        }
        if span.frames.is_empty() && start != SEGMENT_HEADER_BYTES as u64 {
            return Err(StorageError::InvalidToken {
                code: code.into(),
                reason: format!(
                    "no record starts at file_position {start} of {} ({bad})",
                    file.path().display()
                ),
            });
        }
        return Err(StorageError::Corrupt {
            path: file.path().into(),
            offset: span.next_offset,
            reason: bad,
        });
    }
    if span.at_end {
        Ok(Read::Finished)
    } else {
        Ok(Read::More(span.next_offset))
    }
}

fn open_raw(storage: &Storage, first_seq: u64) -> Result<Option<FramedFile>, StorageError> {
    let layout = &storage.layout;
    // Live first, then history (the dealer may archive it meanwhile), then live once more.
    for path in [
        raw::live_path(layout, first_seq),
        raw::history_path(layout, first_seq),
    ] {
        if let Some(file) = FramedFile::open(&path)? {
            return Ok(Some(file));
        }
    }
    Ok(None)
}

/// The index codes found in each undealt raw segment, and how far each was scanned. A `read_page` of an
/// index with no directory (too new to be dealt, or not there at all) must know whether the raw log holds
/// it; scanning every undealt segment for each such call let any client make the reader walk gigabytes per
/// request with made-up index codes. Scanned once per byte instead, the codes kept per segment until it is
/// dealt.
#[derive(Debug, Default)]
pub(crate) struct UndealtCodes {
    segments: std::collections::BTreeMap<u64, ScannedSegment>,
}

#[derive(Debug, Default)]
struct ScannedSegment {
    /// Where the next unscanned frame starts.
    offset: u64,
    codes: std::collections::HashSet<String>,
}

/// Whether any raw segment not dealt yet holds a record of `code` (an index too new to have a directory).
fn undealt_raw_has(storage: &Storage, code: &str) -> Result<bool, StorageError> {
    let next = storage.dealer_next_seq()?.unwrap_or(0);
    let limits = logtank_thrift::binary::Limits::default();
    let mut cache = storage.undealt_codes.lock().unwrap_or_else(|p| p.into_inner());
    let undealt: Vec<_> = raw::list(&storage.layout.raw_live(), false)?
        .into_iter()
        .filter(|s| next == 0 || s.first_seq >= next)
        .collect();
    // Dealt (or removed) segments are answered by the index directories from now on.
    cache
        .segments
        .retain(|first, _| undealt.iter().any(|s| s.first_seq == *first));
    let mut found = false;
    for segment in undealt {
        let scanned = cache.segments.entry(segment.first_seq).or_default();
        let Some(file) = FramedFile::open(&segment.path)? else {
            continue;
        };
        loop {
            let span = file.read_span(scanned.offset, 8 << 20)?;
            for frame in &span.frames {
                for record in raw::batch_records(span.payload(frame), &limits).flatten() {
                    if let Ok(Some(c)) = codec::record_index_code(record, &limits) {
                        if !scanned.codes.contains(c) {
                            scanned.codes.insert(c.to_string());
                        }
                    }
                }
            }
            // Only whole frames count as scanned: the head segment's tail may be a write in progress.
            scanned.offset = span.next_offset;
            if span.at_end || span.bad.is_some() || span.frames.is_empty() {
                break;
            }
        }
        found |= scanned.codes.contains(code);
    }
    Ok(found)
}

fn touch(path: &std::path::Path) {
    let result = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = result {
        log::warn!("cannot touch {}: {e}", path.display());
    }
}

fn expired(code: &str, what: String) -> StorageError {
    StorageError::TokenExpired {
        code: code.into(),
        what,
    }
}

fn decode_token(code: &str, token: &LogPageToken) -> Result<Pos, StorageError> {
    let invalid = |reason: &str| StorageError::InvalidToken {
        code: code.into(),
        reason: reason.into(),
    };
    let seq = |value: i64, what: &str| u64::try_from(value).map_err(|_| invalid(&format!("negative {what}")));
    if let Some(timestamp) = token.timestamp {
        let offset = seq(token.file_position.unwrap_or(0), "file_position")?;
        return Ok(match token.page_type {
            Some(PageType::Optimized) => Pos::Optimized {
                to: seq(timestamp, "timestamp")?,
                offset,
            },
            Some(PageType::Index) => {
                let kind = if timestamp & SORTED_FLAG != 0 {
                    SegmentKind::Sorted
                } else {
                    SegmentKind::Unsorted
                };
                Pos::Index {
                    kind,
                    from: seq(timestamp & !SORTED_FLAG, "timestamp")?,
                    offset,
                }
            }
            Some(PageType::Live) => Pos::Live {
                first_seq: seq(timestamp, "timestamp")?,
                offset,
            },
            _ => return Err(invalid("a timestamp needs type optimized, index or live")),
        });
    }
    if let Some(next) = token.next_timestamp {
        let at = seq(next, "next_timestamp")?;
        return Ok(match token.next_type {
            Some(PageType::Index) => Pos::NextIndex { at },
            Some(PageType::Live) => Pos::NextLive { at },
            _ => return Err(invalid("a next_timestamp needs next_type index or live")),
        });
    }
    Ok(Pos::Start)
}

fn encode_token(pos: Pos) -> Option<LogPageToken> {
    let at = |page_type, timestamp: i64, offset: u64| LogPageToken {
        page_type: Some(page_type),
        timestamp: Some(timestamp),
        file_position: Some(offset as i64),
        ..LogPageToken::default()
    };
    let next = |next_type, at: u64| LogPageToken {
        next_type: Some(next_type),
        next_timestamp: Some(at as i64),
        ..LogPageToken::default()
    };
    Some(match pos {
        Pos::End => return None,
        Pos::Start => LogPageToken::default(),
        Pos::Optimized { to, offset } => at(PageType::Optimized, to as i64, offset),
        Pos::Index { kind, from, offset } => {
            let flag = if kind == SegmentKind::Sorted {
                SORTED_FLAG
            } else {
                0
            };
            at(PageType::Index, from as i64 | flag, offset)
        }
        Pos::Live { first_seq, offset } => at(PageType::Live, first_seq as i64, offset),
        Pos::NextIndex { at } => next(PageType::Index, at),
        Pos::NextLive { at } => next(PageType::Live, at),
    })
}
