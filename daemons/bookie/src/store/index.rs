//! The in-memory index of the entry store (pure: no IO): for each ledger its state and where each entry's
//! record is in the journal, and for each journal segment how many of its bytes are still live (what
//! compaction reads to pick segments). Rebuilt at open by replaying the journal in order; later records win.
//!
//! Invariants: a slot points at the newest record of its entry; a segment's live bytes are the frames of
//! the records some slot or some ledger's state points at; live ≤ total.

use std::collections::{BTreeMap, HashMap};

use logtank_bookie_proto::MasterKey;
use logtank_journal::frame::frame_len;
use logtank_journal::Location;

use super::record::LedgerState;

/// Where one record is: enough for `Journal::read_located`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub seq: u64,
    pub segment: u64,
    pub offset: u32,
    pub len: u32,
}

impl Slot {
    pub fn from_location(loc: &Location) -> Slot {
        Slot {
            seq: loc.seq,
            segment: loc.segment,
            // Segments are at most 1 GiB (logtank_journal::SEGMENT_BYTES_MAX).
            offset: loc.offset as u32,
            len: loc.payload_len,
        }
    }

    pub fn location(&self) -> Location {
        Location {
            seq: self.seq,
            segment: self.segment,
            offset: u64::from(self.offset),
            payload_len: self.len,
        }
    }

    fn frame_bytes(&self) -> u64 {
        frame_len(self.len as usize) as u64
    }
}

/// One ledger as this bookie holds it.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// `None` only for a ledger whose entries were replayed before any state record (not written by this
    /// bookie; kept readable, and the first add or fence sets the key).
    pub master_key: Option<MasterKey>,
    pub fenced: bool,
    pub explicit_lac: i64,
    /// The newest state record.
    pub state_slot: Option<Slot>,
    pub entries: BTreeMap<i64, Slot>,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            master_key: None,
            fenced: false,
            explicit_lac: -1,
            state_slot: None,
            entries: BTreeMap::new(),
        }
    }

    pub fn state(&self, ledger_id: u64) -> LedgerState {
        LedgerState {
            ledger_id,
            master_key: self.master_key.unwrap_or_default(),
            fenced: self.fenced,
            explicit_lac: self.explicit_lac,
        }
    }
}

/// Bytes of one journal segment: every record's frame, and those still pointed at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentUsage {
    pub total_bytes: u64,
    pub live_bytes: u64,
}

#[derive(Debug, Default)]
pub struct Index {
    pub ledgers: HashMap<u64, Ledger>,
    pub segments: BTreeMap<u64, SegmentUsage>,
    /// Entries indexed, over all ledgers.
    pub entries: u64,
    /// Payload bytes of the indexed entries.
    pub entry_bytes: u64,
}

impl Index {
    /// Counts a record's frame in its segment; `live` if a slot will point at it.
    fn account(&mut self, slot: &Slot, live: bool) {
        let usage = self.segments.entry(slot.segment).or_default();
        usage.total_bytes += slot.frame_bytes();
        if live {
            usage.live_bytes += slot.frame_bytes();
        }
    }

    fn release(&mut self, slot: &Slot) {
        if let Some(usage) = self.segments.get_mut(&slot.segment) {
            usage.live_bytes = usage.live_bytes.saturating_sub(slot.frame_bytes());
        }
    }

    /// A state record was written (or replayed) at `slot`.
    pub fn put_state(&mut self, state: &LedgerState, slot: Slot) {
        self.account(&slot, true);
        let ledger = self.ledgers.entry(state.ledger_id).or_insert_with(Ledger::new);
        let old = ledger.state_slot.replace(slot);
        ledger.master_key = Some(state.master_key);
        ledger.fenced |= state.fenced;
        ledger.explicit_lac = ledger.explicit_lac.max(state.explicit_lac);
        if let Some(old) = old {
            self.release(&old);
        }
    }

    /// An entry record was written (or replayed) at `slot`; it replaces an older copy of the entry.
    pub fn put_entry(&mut self, ledger_id: u64, entry_id: i64, slot: Slot) {
        self.account(&slot, true);
        let ledger = self.ledgers.entry(ledger_id).or_insert_with(Ledger::new);
        match ledger.entries.insert(entry_id, slot) {
            Some(old) => {
                self.entry_bytes = self.entry_bytes + u64::from(slot.len) - u64::from(old.len);
                self.release(&old);
            }
            None => {
                self.entries += 1;
                self.entry_bytes += u64::from(slot.len);
            }
        }
    }

    /// Forgets a ledger (deleted from the metadata); its records become dead bytes. Returns whether it was
    /// held.
    pub fn remove_ledger(&mut self, ledger_id: u64) -> bool {
        let Some(ledger) = self.ledgers.remove(&ledger_id) else {
            return false;
        };
        for slot in ledger.entries.values() {
            self.release(slot);
            self.entries -= 1;
            self.entry_bytes -= u64::from(slot.len);
        }
        if let Some(slot) = &ledger.state_slot {
            self.release(slot);
        }
        true
    }

    /// Moves a slot that still points at `from` to `to` (compaction copied the record); a slot changed
    /// meanwhile (a newer add of the entry) is left alone and the copy counts as dead.
    pub fn relocate_entry(&mut self, ledger_id: u64, entry_id: i64, from: Slot, to: Slot) {
        let moved = match self
            .ledgers
            .get_mut(&ledger_id)
            .and_then(|l| l.entries.get_mut(&entry_id))
        {
            Some(slot) if *slot == from => {
                *slot = to;
                true
            }
            _ => false,
        };
        self.account(&to, moved);
        if moved {
            self.release(&from);
        }
    }

    /// As [`Index::relocate_entry`], for a ledger's state record.
    pub fn relocate_state(&mut self, ledger_id: u64, from: Slot, to: Slot) {
        let moved = match self.ledgers.get_mut(&ledger_id) {
            Some(ledger) if ledger.state_slot == Some(from) => {
                ledger.state_slot = Some(to);
                true
            }
            _ => false,
        };
        self.account(&to, moved);
        if moved {
            self.release(&from);
        }
    }

    /// The segment no longer exists.
    pub fn drop_segment(&mut self, segment: u64) {
        self.segments.remove(&segment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64, segment: u64, len: u32) -> Slot {
        Slot {
            seq,
            segment,
            offset: 32 + seq as u32 * 100,
            len,
        }
    }

    fn state(ledger_id: u64, fenced: bool) -> LedgerState {
        LedgerState {
            ledger_id,
            master_key: [1; 20],
            fenced,
            explicit_lac: -1,
        }
    }

    // Proves live bytes follow the newest copy of each record: a re-added entry, a newer state, a
    // removed ledger and a relocation each move bytes from live to dead, never below zero.
    #[test]
    fn live_bytes_follow_the_newest_records() {
        let mut index = Index::default();
        index.put_state(&state(1, false), slot(1, 1, 38));
        index.put_entry(1, 0, slot(2, 1, 100));
        index.put_entry(1, 1, slot(3, 1, 100));
        let all = index.segments[&1];
        assert_eq!(all.total_bytes, all.live_bytes);
        index.put_entry(1, 1, slot(4, 2, 100)); // re-added (recovery) into segment 2
        index.put_state(&state(1, true), slot(5, 2, 38)); // fenced
        let seg1 = index.segments[&1];
        assert_eq!(seg1.live_bytes, frame_len(100) as u64);
        assert!(index.ledgers[&1].fenced);
        assert_eq!((index.entries, index.entry_bytes), (2, 200));

        // Compaction copies segment 1's live entry 0 into segment 3, then segment 1 is dead.
        index.relocate_entry(1, 0, slot(2, 1, 100), slot(6, 3, 100));
        assert_eq!(index.segments[&1].live_bytes, 0);
        // A stale relocation (the slot moved on) leaves the index alone and counts the copy as dead.
        index.relocate_entry(1, 1, slot(3, 1, 100), slot(7, 3, 100));
        assert_eq!(index.ledgers[&1].entries[&1], slot(4, 2, 100));
        let seg3 = index.segments[&3];
        assert_eq!(
            (seg3.live_bytes, seg3.total_bytes),
            (frame_len(100) as u64, 2 * frame_len(100) as u64)
        );

        assert!(index.remove_ledger(1));
        assert!(!index.remove_ledger(1));
        assert!(index.segments.values().all(|u| u.live_bytes == 0));
        assert_eq!((index.entries, index.entry_bytes), (0, 0));
    }
}
