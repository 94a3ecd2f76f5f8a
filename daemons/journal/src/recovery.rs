//! Opening a journal directory: verify every record of every segment, truncate a torn tail, and refuse to open
//! on corruption anywhere else.
//!
//! The rule that separates the two: a record is only ever lost to a crash if it was not yet durable. A bad
//! record in any segment but the last is corruption, because the journal fsyncs a segment before it starts the
//! next. In the last segment, a bad record at sequence `s` is corruption when a later valid frame carries a
//! durable hint ≥ `s` (the writer knew `s` was fsynced when it encoded that frame); otherwise it is the torn
//! tail of a write that never became durable, and everything from it on is discarded (zeroed, so no stale frame
//! can resurface later).

use std::fs;
use std::path::{Path, PathBuf};

use crate::frame::{decode_frame, Decoded, SegmentHeader, FRAME_ALIGN_BYTES, SEGMENT_HEADER_BYTES};
use crate::segment::{self, SegmentMeta};
use crate::{Error, ResultExt};

/// Whether open may repair a torn tail on disk or only report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Repair,
    Verify,
}

/// A torn tail found (and, when opened for writing, discarded) at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    /// Bytes of partial, never-durable data after `offset` that were discarded.
    pub discarded_bytes: u64,
    pub reason: String,
}

/// What open found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: Vec<SegmentMeta>,
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// Valid records in the journal.
    pub records: u64,
    /// Where the next frame goes in the last segment.
    pub tail_offset: u64,
    pub torn_tail: Option<TornTail>,
}

/// How a segment's scan ended.
#[derive(Debug)]
struct Scan {
    records: u64,
    next_seq: u64,
    end_offset: usize,
    bad: Option<String>,
}

/// What an open may take on trust (see `JournalOptions::allow_segment_gaps` and `verified_before_seq`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Skip {
    /// A segment may start after the previous one's last record: the records between were removed.
    pub gaps: bool,
    /// A segment all of whose records are below this was verified before: only its header is checked.
    pub verified_before_seq: u64,
}

/// Called with every valid record recovery reads, in order (its location and payload). Records of a segment
/// that later turns out corrupt are visited too; the open then fails, so the visitor's result is moot.
pub(crate) type Visit<'a> = &'a mut dyn FnMut(crate::Location, &[u8]);

pub(crate) fn recover(
    dir: &Path,
    payload_max: u32,
    mode: Mode,
    skip: Skip,
    visit: Visit<'_>,
) -> Result<RecoveryReport, Error> {
    let segments = segment::list(dir, mode == Mode::Repair)?;
    let mut report = RecoveryReport {
        segments: segments.clone(),
        next_seq: segments.first().map_or(1, |s| s.first_seq),
        records: 0,
        tail_offset: SEGMENT_HEADER_BYTES as u64,
        torn_tail: None,
    };
    for (index, meta) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let next_first = segments.get(index + 1).map(|s| s.first_seq);
        let trusted = next_first.is_some_and(|next| next <= skip.verified_before_seq);
        if mode == Mode::Repair && !trusted && index + 2 >= segments.len() {
            read_from_disk_next(&meta.path)?;
        }
        let data = if trusted {
            read_header(&meta.path)?
        } else {
            fs::read(&meta.path).with_path(&meta.path)?
        };
        let header =
            SegmentHeader::decode(&data).map_err(|e| corrupt(meta, 0, meta.first_seq, e.to_string()))?;
        if header.first_seq != meta.first_seq {
            let reason = format!("header says the segment starts at sequence {}", header.first_seq);
            return Err(corrupt(meta, 0, meta.first_seq, reason));
        }
        if skip.gaps && meta.first_seq > report.next_seq {
            // The records between were in a segment the owner removed.
            report.next_seq = meta.first_seq;
        }
        if meta.first_seq != report.next_seq {
            let reason = format!(
                "records {}..{} are missing before this segment",
                report.next_seq, meta.first_seq
            );
            return Err(corrupt(meta, 0, meta.first_seq, reason));
        }
        if let (true, Some(next)) = (trusted, next_first) {
            report.next_seq = next;
            continue;
        }
        let scan = scan_segment(&data, meta.first_seq, payload_max, &mut *visit);
        report.records += scan.records;
        report.next_seq = scan.next_seq;
        report.tail_offset = scan.end_offset as u64;
        let Some(reason) = scan.bad else { continue };
        if !is_last || later_frame_declares_durable(&data, scan.end_offset, scan.next_seq, payload_max) {
            return Err(corrupt(meta, scan.end_offset as u64, scan.next_seq, reason));
        }
        let discarded_bytes = last_nonzero(&data[scan.end_offset..]) as u64;
        let torn = TornTail {
            path: meta.path.clone(),
            offset: scan.end_offset as u64,
            discarded_bytes,
            reason,
        };
        if mode == Mode::Repair {
            truncate_torn_tail(&meta.path, scan.end_offset as u64, data.len() as u64)?;
            log::warn!(
                "journal {}: discarded a torn tail of {} bytes at offset {} (records from sequence {} were never \
                 durable): {}",
                meta.path.display(),
                torn.discarded_bytes,
                torn.offset,
                scan.next_seq,
                torn.reason
            );
        }
        report.torn_tail = Some(torn);
    }
    Ok(report)
}

/// Makes the next read of `path` come from the disk, not the page cache. The last segments are the ones a
/// failed fsync can have left wrong: Linux marks pages whose writeback failed clean, so the cache still
/// shows records the disk never got, and a new descriptor's fdatasync succeeds over them. Whatever the
/// cache holds dirty (the previous process's unsynced writes) is written first; a disk that refuses that
/// is an error, not a journal to open. Then the clean pages are dropped (`POSIX_FADV_DONTNEED`), so
/// recovery scans what is really there and treats anything past it as never written.
fn read_from_disk_next(path: &Path) -> Result<(), Error> {
    let file = fs::File::open(path).with_path(path)?;
    file.sync_data().with_path(path)?;
    if let Err(e) =
        nix::fcntl::posix_fadvise(&file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)
    {
        // Advice only: without it recovery reads the cache, as before.
        log::debug!(
            "journal recovery: posix_fadvise(DONTNEED) of {}: {e}",
            path.display()
        );
    }
    Ok(())
}

/// The header of a segment whose records are taken on trust.
fn read_header(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    fs::File::open(path)
        .and_then(|f| f.take(SEGMENT_HEADER_BYTES as u64).read_to_end(&mut header))
        .with_path(path)?;
    Ok(header)
}

/// Walks the frames of one segment from its header until the first position that is not the next valid record.
fn scan_segment(data: &[u8], first_seq: u64, payload_max: u32, visit: Visit<'_>) -> Scan {
    let mut scan = Scan {
        records: 0,
        next_seq: first_seq,
        end_offset: SEGMENT_HEADER_BYTES,
        bad: None,
    };
    loop {
        let rest = &data[scan.end_offset..];
        match decode_frame(rest, payload_max) {
            Decoded::Frame(f) if f.seq == scan.next_seq => {
                visit(
                    crate::Location {
                        seq: f.seq,
                        segment: first_seq,
                        offset: scan.end_offset as u64,
                        payload_len: f.payload.len() as u32,
                    },
                    f.payload,
                );
                scan.records += 1;
                scan.next_seq += 1;
                scan.end_offset += f.frame_len;
            }
            Decoded::Frame(f) => {
                scan.bad = Some(format!("sequence {} where {} was expected", f.seq, scan.next_seq));
                return scan;
            }
            Decoded::End => {
                if last_nonzero(rest) > 0 {
                    scan.bad = Some("a zeroed record header is followed by data".to_string());
                }
                return scan;
            }
            Decoded::Invalid(why) => {
                scan.bad = Some(why.to_string());
                return scan;
            }
        }
    }
}

/// Looks past a bad record for a valid frame that proves the bad record had been made durable.
fn later_frame_declares_durable(data: &[u8], bad_offset: usize, bad_seq: u64, payload_max: u32) -> bool {
    (bad_offset + FRAME_ALIGN_BYTES..data.len())
        .step_by(FRAME_ALIGN_BYTES)
        .any(|pos| {
            matches!(decode_frame(&data[pos..], payload_max),
                 Decoded::Frame(f) if f.seq > bad_seq && f.durable_hint >= bad_seq)
        })
}

/// The length of `bytes` up to and including its last non-zero byte.
fn last_nonzero(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// Cuts the file at `offset` and zero-fills it back to its size, so the discarded range reads as zeros.
fn truncate_torn_tail(path: &Path, offset: u64, size: u64) -> Result<(), Error> {
    let file = segment::open_existing(path)?;
    file.set_len(offset).with_path(path)?;
    segment::preallocate(&file, size).with_path(path)?;
    file.sync_all().with_path(path)
}

fn corrupt(meta: &SegmentMeta, offset: u64, seq: u64, reason: String) -> Error {
    Error::Corrupt {
        path: meta.path.clone(),
        offset,
        seq,
        reason,
    }
}

/// Salvages a journal that refuses to open: cuts the segment at `path` at `offset` and moves every later
/// segment into a `salvaged-<unix time>` directory beside it (nothing is deleted). Records from the cut on are
/// no longer part of the journal; the operator decides what to do with the moved files.
pub fn salvage(dir: &Path, path: &Path, offset: u64) -> Result<Vec<PathBuf>, Error> {
    let segments = segment::list(dir, true)?;
    let index = segments
        .iter()
        .position(|s| s.path.file_name() == path.file_name())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} is not a segment of {}",
                path.display(),
                dir.display()
            ))
        })?;
    let target = &segments[index];
    let size = fs::metadata(&target.path).with_path(&target.path)?.len();
    if offset < SEGMENT_HEADER_BYTES as u64
        || offset > size
        || !offset.is_multiple_of(FRAME_ALIGN_BYTES as u64)
    {
        return Err(Error::InvalidArgument(format!(
            "offset {offset} is not a frame boundary inside {} (use the offset the open error named)",
            target.path.display()
        )));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("salvaged-{stamp}"));
    let mut moved = Vec::new();
    // Keep a copy of the cut-off part of the target segment too.
    fs::create_dir_all(&aside).with_path(&aside)?;
    let copy = aside.join(target.path.file_name().unwrap_or_default());
    fs::copy(&target.path, &copy).with_path(&copy)?;
    moved.push(copy);
    for later in &segments[index + 1..] {
        let to = aside.join(later.path.file_name().unwrap_or_default());
        fs::rename(&later.path, &to).with_path(&to)?;
        moved.push(to);
    }
    logtank_durable::fsync_dir(&aside)?;
    truncate_torn_tail(&target.path, offset, size)?;
    logtank_durable::fsync_dir(dir)?;
    Ok(moved)
}
