//! A slave adopting its master's snapshot (IndexTank's "migration", made safe).
//!
//! The sync (`logtank sync`) copies the master's `dealer*.info` first, then its per-index segments, into
//! `storage/migrating` and renames that to `storage/migrated` when complete. [`Storage::adopt_snapshot`]
//! then swaps it in: the current per-index data goes to `storage/previous`, the snapshot takes its place,
//! and the slave's own raw log (the API writes every batch to every writer) is cut where the snapshot's
//! coverage ends, so that on promotion this host deals its own raw log from there on.
//!
//! Raw sequence numbers are per host, so the two logs are aligned by time: the master records the newest
//! `timestamp_ms` it dealt; the slave keeps its own raw segments from the newest one that ends before that
//! time minus `overlap` (clock skew between the writers plus a margin: replaying an overlap is harmless).
//! Only if such a segment exists is the coverage proven and `safe_to_read` created. The slave's own raw
//! segments before it move to `raw/history`. Per-index segments dealt later on this host are named with an
//! offset (`dealer.seq_offset.info`) that puts them after the master's.

use std::fs;
use std::time::Duration;

use logtank_thrift::codec;

use crate::error::{IoContext, StorageError};
use crate::framed::FramedFile;
use crate::raw::{self, RawSegment};
use crate::{fsutil, Storage};

/// The default `overlap` of an adoption (`sync.overlap_ms`): clock skew between two writers plus a margin.
pub const DEFAULT_ADOPTION_OVERLAP: Duration = Duration::from_secs(60);

/// What an adoption did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    /// The slave's own raw log covers everything after the snapshot: `safe_to_read` was created.
    pub safe_to_read: bool,
    /// The first of this host's raw sequence numbers its dealer will deal after a promotion.
    pub next_seq: u64,
    /// The offset per-index names get from now on.
    pub seq_offset: u64,
    /// Own raw segments moved to history because the snapshot covers them.
    pub pruned_segments: usize,
}

impl Storage {
    /// What a host about to deal does first (logtank-indexes at start, holding the dealer lock): a
    /// complete copy left in `storage/migrated` by a sync interrupted before its adoption is adopted now
    /// (with [`DEFAULT_ADOPTION_OVERLAP`]), and an incomplete copy in `storage/migrating` is removed (the
    /// next sync starts over), so the dealer never runs beside a half-done adoption. A `migrated` the
    /// adoption finds incomplete is removed as well. Returns what was done, for the log.
    pub fn finish_interrupted_sync(&self) -> Result<Option<String>, StorageError> {
        let layout = &self.layout;
        let mut done = Vec::new();
        let migrating = layout.migrating();
        if migrating.exists() {
            fs::remove_dir_all(&migrating).at(&migrating)?;
            logtank_durable::fsync_dir(&layout.storage())?;
            done.push(format!("removed the incomplete copy {}", migrating.display()));
        }
        if layout.migrated().is_dir() {
            match self.adopt_snapshot(DEFAULT_ADOPTION_OVERLAP) {
                Ok(Some(a)) => done.push(format!(
                    "adopted the complete copy a sync left in {} (safe to read: {})",
                    layout.migrated().display(),
                    a.safe_to_read
                )),
                Ok(None) => {}
                Err(StorageError::Invalid(why)) => {
                    let migrated = layout.migrated();
                    fs::remove_dir_all(&migrated).at(&migrated)?;
                    logtank_durable::fsync_dir(&layout.storage())?;
                    done.push(format!("removed {why}"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((!done.is_empty()).then(|| done.join("; ")))
    }

    /// Swaps in `storage/migrated` if there is one (`Ok(None)` otherwise). Idempotent: a crash at any point
    /// is finished by the next call. Only for a host whose pipeline is not running (a slave).
    pub fn adopt_snapshot(&self, overlap: Duration) -> Result<Option<Adoption>, StorageError> {
        let layout = &self.layout;
        let migrated = layout.migrated();
        if !migrated.is_dir() {
            return Ok(None);
        }
        let read = |name: &str| fsutil::read_u64_file(&migrated.join(name));
        let incomplete = |what: &str| {
            StorageError::Invalid(format!(
                "{} is not a complete snapshot: {what} is missing; the next sync replaces it",
                migrated.display()
            ))
        };
        let master_next = read("dealer.next_seq.info")?.ok_or_else(|| incomplete("dealer.next_seq.info"))?;
        let master_until_ms =
            read("dealer.dealt_until_ms.info")?.ok_or_else(|| incomplete("dealer.dealt_until_ms.info"))?;
        let master_offset = read("dealer.seq_offset.info")?.unwrap_or(0);

        let incoming = migrated.join("indexes");
        if incoming.is_dir() {
            let previous = layout.previous();
            if previous.exists() {
                fs::remove_dir_all(&previous).at(&previous)?;
            }
            logtank_durable::create_dir_all_durably(&previous)?;
            for moved in [
                layout.indexes(),
                layout.dealer_info(),
                layout.dealer_dealt_until_info(),
                layout.dealer_seq_offset_info(),
                layout.safe_to_read_marker(),
            ] {
                if moved.exists() {
                    let name = moved.file_name().map(|n| previous.join(n)).unwrap_or_default();
                    logtank_durable::rename_durably(&moved, &name)?;
                }
            }
            logtank_durable::rename_durably(&incoming, &layout.indexes())?;
        }

        // Cut the own raw log where the snapshot's coverage ends (minus the overlap).
        let cut_ms = master_until_ms.saturating_sub(overlap.as_millis() as u64);
        let live = raw::list(&layout.raw_live(), false)?;
        let closed = live.len().saturating_sub(1);
        let mut keep_from = None;
        for (i, segment) in live[..closed].iter().enumerate() {
            match newest_timestamp_ms(self, segment)? {
                Some(ms) if ms < cut_ms => keep_from = Some(i),
                _ => break,
            }
        }
        let safe = keep_from.is_some();
        let keep_from = keep_from.unwrap_or(0);
        let mut pruned = 0;
        for segment in &live[..keep_from] {
            logtank_durable::rename_durably(&segment.path, &raw::history_path(layout, segment.first_seq))?;
            pruned += 1;
        }
        let next_seq = live.get(keep_from).map_or(1, |s| s.first_seq);
        // The infos were copied before the segments, so the snapshot may hold segments the master dealt
        // after them. Its coverage in time is at least what the infos say (the cut above is conservative),
        // but in names it reaches as far as its newest segment: this host's own segments must start after
        // that, or two segments of different content would start at one sequence (a reader looped on that).
        let snapshot_end = (master_next + master_offset).max(self.newest_segment_end()?);
        let seq_offset = snapshot_end.saturating_sub(next_seq);
        logtank_durable::write_atomically(&layout.dealer_info(), format!("{next_seq}\n").as_bytes())?;
        logtank_durable::write_atomically(
            &layout.dealer_seq_offset_info(),
            format!("{seq_offset}\n").as_bytes(),
        )?;
        logtank_durable::write_atomically(
            &layout.dealer_dealt_until_info(),
            format!("{master_until_ms}\n").as_bytes(),
        )?;
        if safe {
            logtank_durable::write_atomically(&layout.safe_to_read_marker(), b"")?;
        }
        fs::remove_dir_all(&migrated).at(&migrated)?;
        logtank_durable::fsync_dir(&layout.storage())?;
        log::info!(
            "sync: adopted the master's snapshot (dealt to its sequence {master_next}, until {master_until_ms} ms; \
             segments to {snapshot_end}); own raw log kept from sequence {next_seq} (dealt as {}), \
             {pruned} older segments moved to history; {}",
            next_seq + seq_offset,
            if safe {
                "coverage proven: safe to read"
            } else {
                "own raw log does not reach back far enough: NOT safe to read yet"
            }
        );
        Ok(Some(Adoption {
            safe_to_read: safe,
            next_seq,
            seq_offset,
            pruned_segments: pruned,
        }))
    }
}

impl Storage {
    /// One past the highest sequence any per-index segment covers (0 without segments).
    fn newest_segment_end(&self) -> Result<u64, StorageError> {
        let mut end = 0;
        for code in self.list_indexes()? {
            let (segments, optimized) = self.index_segments(&code)?;
            end = segments
                .iter()
                .chain(&optimized)
                .map(|n| n.to)
                .fold(end, u64::max);
        }
        Ok(end)
    }
}

/// The newest `timestamp_ms` of a raw segment's records (`None` if it has none).
fn newest_timestamp_ms(storage: &Storage, segment: &RawSegment) -> Result<Option<u64>, StorageError> {
    let Some(file) = FramedFile::open(&segment.path)? else {
        return Ok(None);
    };
    let limits = &storage.options.limits;
    let mut newest = None;
    let mut offset = 0;
    loop {
        let span = file.read_span(offset, 8 << 20)?;
        for frame in &span.frames {
            for record in raw::batch_records(span.payload(frame), limits).flatten() {
                if let Ok((record, _)) = codec::decode_record(record, limits) {
                    let ms = record.timestamp_ms.and_then(|ms| u64::try_from(ms).ok());
                    newest = newest.max(ms);
                }
            }
        }
        if span.at_end || span.bad.is_some() || span.frames.is_empty() {
            return Ok(newest);
        }
        offset = span.next_offset;
    }
}
