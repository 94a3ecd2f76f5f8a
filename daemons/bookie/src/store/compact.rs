//! Compaction: a closed journal segment whose live bytes have fallen below a fraction of its size has its
//! live records copied to the head of the journal, then it is removed, so deleted ledgers' space comes back.
//!
//! The copy never loses a record and never blocks adds for long: records are checked and copied in batches
//! of at most [`COMPACTION_BATCH_BYTES_MAX`] under the index lock (so a newer add or fence of the same
//! record, appended before the copy, makes the copy unnecessary, and one appended after it wins at replay
//! by coming later), the index is pointed at the copies only once they are durable (until then reads go to
//! the old segment, which still exists), and the segment is removed only once nothing points into it. A
//! crash anywhere leaves the old records, the copies, or both: replay takes the later ones, which are the
//! same bytes.

use std::time::{Duration, Instant};

use super::index::Slot;
use super::record::{self, Record};
use super::{LedgerStore, Refusal, SegmentUsage, StoreError};

/// Bytes of live records checked and copied per hold of the index lock.
pub const COMPACTION_BATCH_BYTES_MAX: usize = 1 << 20;

/// Bounds the copying rate: compaction sleeps so that it averages at most `bytes_per_sec`.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: u64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Throttle {
        Throttle {
            bytes_per_sec: bytes_per_sec.max(1),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// How long to sleep after `bytes` more were copied.
    fn pause_after(&mut self, bytes: u64) -> Duration {
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        due.saturating_sub(self.started.elapsed())
    }
}

/// What a compaction of one segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub segment: u64,
    pub records_copied: u64,
    pub bytes_copied: u64,
    /// The segment's bytes given back (its usage before the copy).
    pub bytes_freed: u64,
    /// False when it was stopped before the end (shutdown), or a record stayed live.
    pub removed: bool,
}

/// A record copied, to be pointed at once durable.
enum Copied {
    Entry {
        ledger_id: u64,
        entry_id: i64,
        from: Slot,
        to: Slot,
    },
    State {
        ledger_id: u64,
        from: Slot,
        to: Slot,
    },
}

impl LedgerStore {
    /// Closed segments whose live bytes are at most `live_fraction_max` of their records' bytes, emptiest
    /// first. The head segment (being appended to) is never one.
    pub fn compaction_candidates(&self, live_fraction_max: f64) -> Vec<(u64, SegmentUsage)> {
        let segments = self.journal.segments();
        let Some((_head, closed)) = segments.split_last() else {
            return Vec::new();
        };
        let index = self.lock();
        let mut candidates: Vec<(u64, SegmentUsage)> = closed
            .iter()
            .map(|s| {
                (
                    s.first_seq,
                    index.segments.get(&s.first_seq).copied().unwrap_or_default(),
                )
            })
            .filter(|(_, u)| u.live_bytes as f64 <= u.total_bytes as f64 * live_fraction_max)
            .collect();
        candidates.sort_by(|a, b| {
            let fraction = |u: &SegmentUsage| u.live_bytes as f64 / u.total_bytes.max(1) as f64;
            fraction(&a.1).total_cmp(&fraction(&b.1))
        });
        candidates
    }

    /// Copies the live records of `segment` to the head and removes it. `stop` is asked between batches;
    /// a stopped compaction leaves the segment in place (the copies made are harmless duplicates).
    pub fn compact_segment(
        &self,
        segment: u64,
        throttle: &mut Throttle,
        stop: &dyn Fn() -> bool,
    ) -> Result<CompactionOutcome, StoreError> {
        let dir = self.journal.dir().to_path_buf();
        let journal_error = |source| StoreError::Journal {
            dir: dir.clone(),
            source,
        };
        let before = self.lock().segments.get(&segment).copied().unwrap_or_default();
        let mut outcome = CompactionOutcome {
            segment,
            records_copied: 0,
            bytes_copied: 0,
            bytes_freed: before.total_bytes,
            removed: false,
        };
        let mut copied: Vec<Copied> = Vec::new();
        let mut batch: Vec<(Slot, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0;
        let mut reader = self.journal.read_from(segment).map_err(journal_error)?;
        loop {
            let record = match reader.next() {
                Some(r) => Some(r.map_err(journal_error)?),
                None => None,
            };
            let done = match &record {
                Some(r) => r.segment != segment,
                None => true,
            };
            if let Some(record) = record.filter(|r| r.segment == segment) {
                batch_bytes += record.payload.len();
                batch.push((Slot::from_location(&record.location()), record.payload));
            }
            if batch_bytes >= COMPACTION_BATCH_BYTES_MAX || (done && !batch.is_empty()) {
                let bytes = self
                    .copy_live(&batch, &mut copied)
                    .map_err(|r| StoreError::BadRecord {
                        dir: dir.clone(),
                        seq: batch[0].0.seq,
                        reason: r.reason,
                    })?;
                outcome.bytes_copied += bytes;
                batch.clear();
                batch_bytes = 0;
                std::thread::sleep(throttle.pause_after(bytes));
                if stop() {
                    break;
                }
            }
            if done {
                break;
            }
        }
        outcome.records_copied = copied.len() as u64;
        if let Some(last) = copied
            .iter()
            .map(|c| match c {
                Copied::Entry { to, .. } | Copied::State { to, .. } => to.seq,
            })
            .max()
        {
            self.journal.wait_durable(last).map_err(journal_error)?;
        }
        let mut index = self.lock();
        for c in copied {
            match c {
                Copied::Entry {
                    ledger_id,
                    entry_id,
                    from,
                    to,
                } => index.relocate_entry(ledger_id, entry_id, from, to),
                Copied::State { ledger_id, from, to } => index.relocate_state(ledger_id, from, to),
            }
        }
        let live = index.segments.get(&segment).map_or(0, |u| u.live_bytes);
        if stop() || live > 0 {
            if live > 0 {
                log::warn!("compaction of segment {segment}: {live} bytes still live after the copy; kept");
            }
            return Ok(outcome);
        }
        self.journal.remove_segment(segment).map_err(journal_error)?;
        index.drop_segment(segment);
        drop(index);
        // The cached descriptor would keep the removed file's blocks allocated.
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&segment);
        outcome.removed = true;
        Ok(outcome)
    }

    /// Appends copies of the live records of one batch (under the index lock) and remembers them.
    fn copy_live(&self, batch: &[(Slot, Vec<u8>)], copied: &mut Vec<Copied>) -> Result<u64, Refusal> {
        let index = self.lock();
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        let mut pending: Vec<Copied> = Vec::new();
        for (slot, payload) in batch {
            let decoded = record::decode(payload).map_err(|e| Refusal {
                status: logtank_bookie_proto::Status::EIO,
                reason: e.to_string(),
            })?;
            match decoded {
                Record::Entry {
                    ledger_id,
                    entry_id,
                    bytes,
                } => {
                    let live = index
                        .ledgers
                        .get(&ledger_id)
                        .and_then(|l| l.entries.get(&entry_id))
                        .is_some_and(|s| s == slot);
                    if live {
                        payloads.push(bytes.to_vec());
                        pending.push(Copied::Entry {
                            ledger_id,
                            entry_id,
                            from: *slot,
                            to: *slot,
                        });
                    }
                }
                Record::State(state) => {
                    // The ledger's current state, not the old record's: a fence since then must survive.
                    if let Some(ledger) = index.ledgers.get(&state.ledger_id) {
                        if ledger.state_slot == Some(*slot) {
                            payloads.push(ledger.state(state.ledger_id).encode().to_vec());
                            pending.push(Copied::State {
                                ledger_id: state.ledger_id,
                                from: *slot,
                                to: *slot,
                            });
                        }
                    }
                }
            }
        }
        if payloads.is_empty() {
            return Ok(0);
        }
        let mut locations = Vec::with_capacity(payloads.len());
        self.journal
            .append_many_located(&payloads, &mut locations)
            .map_err(|e| Refusal {
                status: logtank_bookie_proto::Status::EIO,
                reason: e.to_string(),
            })?;
        drop(index);
        let bytes = payloads.iter().map(|p| p.len() as u64).sum();
        for (mut c, loc) in pending.into_iter().zip(&locations) {
            match &mut c {
                Copied::Entry { to, .. } | Copied::State { to, .. } => *to = Slot::from_location(loc),
            }
            copied.push(c);
        }
        Ok(bytes)
    }
}
