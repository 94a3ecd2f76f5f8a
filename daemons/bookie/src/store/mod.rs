//! The entry store: the bookie's journal (logtank-journal: group commit, io_uring) is where entries live,
//! and an in-memory [`Index`] says where each one is (docs/bookie.md says why: one disk write per byte
//! instead of BookKeeper's two). No sockets here; the connections call it, the compactor thread runs
//! [`LedgerStore::compact_segment`].
//!
//! Invariants:
//! - a record is appended and indexed under the index lock, so the journal's order is the index's order: a
//!   fence appended after an add is durable only once that add is, and the fencing read that waits for it
//!   sees the add;
//! - nothing is served before it is durable: a slot whose sequence number is past the durable mark reads as
//!   absent (the add has not been acknowledged either);
//! - a record read back is the one indexed (the journal checks checksum, length and sequence number);
//!   anything else is corruption, answered `EIO` and logged, never served;
//! - a segment is removed only once no slot and no ledger state points into it.

mod compact;
pub mod index;
pub mod record;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use logtank_bookie_proto::{parse_entry, AddRequest, MasterKey, Status, LAST_ENTRY};
use logtank_journal::{Journal, JournalOptions, Location, TornTail};

pub use compact::{CompactionOutcome, Throttle};
pub use index::{Index, Ledger, SegmentUsage, Slot};
use record::{LedgerState, Record};

/// Why the store could not be opened or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("entry store {}: {source}", dir.display())]
    Journal {
        dir: PathBuf,
        source: logtank_journal::Error,
    },
    #[error("entry store {}: record {seq}: {reason}", dir.display())]
    BadRecord { dir: PathBuf, seq: u64, reason: String },
}

/// A request the store refuses: the status the client gets and why, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: Status,
    pub reason: String,
}

impl Refusal {
    fn new(status: Status, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// What opening found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub ledgers: usize,
    pub entries: u64,
    pub entry_bytes: u64,
    pub segments: usize,
    pub records_replayed: u64,
    pub elapsed: Duration,
    pub torn_tail: Option<TornTail>,
}

/// Counts for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub ledgers: u64,
    pub entries: u64,
    pub entry_bytes: u64,
    pub segments: u64,
    pub live_bytes: u64,
    pub total_bytes: u64,
}

/// The entry store of one bookie. Cheap to share behind an `Arc`.
pub struct LedgerStore {
    journal: Journal,
    index: Mutex<Index>,
    /// Segment files opened for reads, by first sequence number.
    files: Mutex<HashMap<u64, Arc<File>>>,
}

impl std::fmt::Debug for LedgerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerStore")
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl LedgerStore {
    /// Opens (creating if needed) the store in `dir`: the journal recovers (a torn tail is cut), then every
    /// record is replayed into the index.
    pub fn open(dir: &Path, options: JournalOptions) -> Result<(LedgerStore, OpenReport), StoreError> {
        let started = Instant::now();
        let options = JournalOptions {
            allow_segment_gaps: true,
            ..options
        };
        let journal_error = |source| StoreError::Journal {
            dir: dir.to_path_buf(),
            source,
        };
        let mut index = Index::default();
        let mut replayed = 0;
        let mut bad: Option<(u64, String)> = None;
        // The index is built from the journal's own recovery read: each record is read and verified once.
        let (journal, report) = Journal::open_visiting(dir, options, &mut |location, payload| {
            let slot = Slot::from_location(&location);
            match record::decode(payload) {
                Ok(Record::Entry {
                    ledger_id, entry_id, ..
                }) => index.put_entry(ledger_id, entry_id, slot),
                Ok(Record::State(state)) => index.put_state(&state, slot),
                Err(e) => {
                    if bad.is_none() {
                        bad = Some((location.seq, e.to_string()));
                    }
                }
            }
            replayed += 1;
        })
        .map_err(journal_error)?;
        if let Some((seq, reason)) = bad {
            return Err(StoreError::BadRecord {
                dir: dir.to_path_buf(),
                seq,
                reason,
            });
        }
        let report = OpenReport {
            ledgers: index.ledgers.len(),
            entries: index.entries,
            entry_bytes: index.entry_bytes,
            segments: journal.segments().len(),
            records_replayed: replayed,
            elapsed: started.elapsed(),
            torn_tail: report.torn_tail,
        };
        let store = LedgerStore {
            journal,
            index: Mutex::new(index),
            files: Mutex::new(HashMap::new()),
        };
        Ok((store, report))
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every update of the index is a few inserts that leave it consistent; a panic elsewhere while it
        // was held (a bug, which aborts the daemon anyway) does not make it unusable.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, payloads: &[&[u8]], locations: &mut Vec<Location>) -> Result<(), Refusal> {
        self.journal
            .append_many_located(payloads, locations)
            .map(|_| ())
            .map_err(|e| match e {
                // Not a failure: the journal goes on once the disk takes a segment; readonly till then.
                logtank_journal::Error::CannotGrow(_) => {
                    Refusal::new(Status::EREADONLY, format!("journal: {e}"))
                }
                e => Refusal::new(Status::EIO, format!("journal: {e}")),
            })
    }

    /// Stores an entry (after checking its digest, key and the fence) and returns the journal sequence
    /// number whose durability acknowledges it.
    pub fn add(&self, req: &AddRequest) -> Result<u64, Refusal> {
        check_ids(req.ledger_id, req.entry_id)?;
        if let Err(e) = parse_entry(&req.entry) {
            return Err(Refusal::new(Status::EBADREQ, e.to_string()));
        }
        let mut index = self.lock();
        let needs_state = match index.ledgers.get(&req.ledger_id) {
            Some(ledger) => {
                check_key(ledger, req.ledger_id, &req.master_key)?;
                if ledger.fenced && !req.is_recovery() {
                    return Err(Refusal::new(
                        Status::EFENCED,
                        format!("ledger {} is fenced", req.ledger_id),
                    ));
                }
                ledger.master_key.is_none()
            }
            None => true,
        };
        let mut locations = Vec::with_capacity(2);
        if needs_state {
            let state = LedgerState {
                ledger_id: req.ledger_id,
                master_key: req.master_key,
                fenced: false,
                explicit_lac: -1,
            };
            self.append(&[&state.encode(), &req.entry], &mut locations)?;
            index.put_state(&state, Slot::from_location(&locations[0]));
        } else {
            self.append(&[&req.entry], &mut locations)?;
        }
        let loc = locations[locations.len() - 1];
        index.put_entry(req.ledger_id, req.entry_id, Slot::from_location(&loc));
        Ok(loc.seq)
    }

    /// Fences a ledger (creating it with `master_key` if this bookie holds none of it, so a late add of the
    /// old writer is refused too) and returns the sequence number to wait for before answering.
    pub fn fence(&self, ledger_id: u64, master_key: &MasterKey) -> Result<u64, Refusal> {
        check_ids(ledger_id, 0)?;
        let mut index = self.lock();
        let mut state = match index.ledgers.get(&ledger_id) {
            Some(ledger) => {
                check_key(ledger, ledger_id, master_key)?;
                if ledger.fenced {
                    // Fenced already: durable once its state record is.
                    return Ok(ledger.state_slot.map_or(0, |s| s.seq));
                }
                ledger.state(ledger_id)
            }
            None => LedgerState {
                ledger_id,
                master_key: *master_key,
                fenced: false,
                explicit_lac: -1,
            },
        };
        state.master_key = *master_key;
        state.fenced = true;
        let mut locations = Vec::with_capacity(1);
        self.append(&[&state.encode()], &mut locations)?;
        index.put_state(&state, Slot::from_location(&locations[0]));
        Ok(locations[0].seq)
    }

    /// Records an explicit LAC; returns the sequence number to wait for (0 if nothing had to be written).
    pub fn write_lac(&self, ledger_id: u64, master_key: &MasterKey, lac: i64) -> Result<u64, Refusal> {
        check_ids(ledger_id, 0)?;
        let mut index = self.lock();
        let Some(ledger) = index.ledgers.get(&ledger_id) else {
            return Err(Refusal::new(Status::ENOLEDGER, format!("no ledger {ledger_id}")));
        };
        check_key(ledger, ledger_id, master_key)?;
        if lac <= ledger.explicit_lac {
            return Ok(ledger.state_slot.map_or(0, |s| s.seq));
        }
        let mut state = ledger.state(ledger_id);
        state.explicit_lac = lac;
        let mut locations = Vec::with_capacity(1);
        self.append(&[&state.encode()], &mut locations)?;
        index.put_state(&state, Slot::from_location(&locations[0]));
        Ok(locations[0].seq)
    }

    /// The entry as stored; [`LAST_ENTRY`] reads the highest durable entry.
    pub fn read(&self, ledger_id: u64, entry_id: i64) -> Result<Vec<u8>, Refusal> {
        // A slot can point into a segment compaction removes between the lookup and the open: look again.
        let mut attempts = 0;
        loop {
            let slot = self.lookup(ledger_id, entry_id)?;
            match self.read_slot(&slot) {
                Err(e) if e.status == Status::ENOENTRY && attempts == 0 => attempts += 1,
                other => return other,
            }
        }
    }

    fn lookup(&self, ledger_id: u64, entry_id: i64) -> Result<Slot, Refusal> {
        let durable = self.journal.marks().durable;
        let index = self.lock();
        let Some(ledger) = index.ledgers.get(&ledger_id) else {
            return Err(Refusal::new(Status::ENOLEDGER, format!("no ledger {ledger_id}")));
        };
        let slot = if entry_id == LAST_ENTRY {
            ledger.entries.values().rev().find(|s| s.seq <= durable)
        } else {
            ledger.entries.get(&entry_id).filter(|s| s.seq <= durable)
        };
        slot.copied().ok_or_else(|| {
            Refusal::new(
                Status::ENOENTRY,
                format!("ledger {ledger_id} has no entry {entry_id} here"),
            )
        })
    }

    fn read_slot(&self, slot: &Slot) -> Result<Vec<u8>, Refusal> {
        let file = match self.file(slot.segment) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Refusal::new(Status::ENOENTRY, "segment removed by compaction"))
            }
            Err(e) => return Err(Refusal::new(Status::EIO, e.to_string())),
        };
        self.journal.read_located(&file, &slot.location()).map_err(|e| {
            log::error!("reading an entry: {e}");
            Refusal::new(Status::EIO, e.to_string())
        })
    }

    fn file(&self, segment: u64) -> std::io::Result<Arc<File>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = files.get(&segment) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.journal.segment_path(segment))?);
        files.insert(segment, file.clone());
        Ok(file)
    }

    /// The explicit LAC and the last durable entry (absent if the ledger has none yet).
    pub fn read_lac(&self, ledger_id: u64) -> Result<(i64, Option<Vec<u8>>), Refusal> {
        let explicit_lac = {
            let index = self.lock();
            let Some(ledger) = index.ledgers.get(&ledger_id) else {
                return Err(Refusal::new(Status::ENOLEDGER, format!("no ledger {ledger_id}")));
            };
            ledger.explicit_lac
        };
        match self.read(ledger_id, LAST_ENTRY) {
            Ok(entry) => Ok((explicit_lac, Some(entry))),
            Err(e) if e.status == Status::ENOENTRY => Ok((explicit_lac, None)),
            Err(e) => Err(e),
        }
    }

    /// The ledgers this bookie holds records of, for garbage collection.
    pub fn ledger_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.lock().ledgers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Forgets a ledger whose metadata is gone; its bytes become garbage that compaction reclaims.
    pub fn delete_ledger(&self, ledger_id: u64) -> bool {
        self.lock().remove_ledger(ledger_id)
    }

    pub fn stats(&self) -> StoreStats {
        let index = self.lock();
        StoreStats {
            ledgers: index.ledgers.len() as u64,
            entries: index.entries,
            entry_bytes: index.entry_bytes,
            segments: self.journal.segments().len() as u64,
            live_bytes: index.segments.values().map(|u| u.live_bytes).sum(),
            total_bytes: index.segments.values().map(|u| u.total_bytes).sum(),
        }
    }

    /// Writes and fsyncs everything appended and closes the journal.
    pub fn close(self) -> Result<(), StoreError> {
        let dir = self.journal.dir().to_path_buf();
        self.journal
            .close()
            .map_err(|source| StoreError::Journal { dir, source })
    }
}

/// Ledger ids are below 2^63 (the first byte of an entry record tells entries from state records) and entry
/// ids are not negative.
fn check_ids(ledger_id: u64, entry_id: i64) -> Result<(), Refusal> {
    if ledger_id > i64::MAX as u64 || entry_id < 0 {
        return Err(Refusal::new(
            Status::EBADREQ,
            format!("ledger id {ledger_id} or entry id {entry_id} out of range"),
        ));
    }
    Ok(())
}

fn check_key(ledger: &Ledger, ledger_id: u64, key: &MasterKey) -> Result<(), Refusal> {
    match &ledger.master_key {
        Some(k) if k != key => Err(Refusal::new(
            Status::EUA,
            format!("wrong master key for ledger {ledger_id}"),
        )),
        _ => Ok(()),
    }
}
