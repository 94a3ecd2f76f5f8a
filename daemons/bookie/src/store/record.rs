//! The bookie's journal records (pure: bytes in, values out). The journal is also the entry store
//! (docs/bookie.md), so a record is one of two things:
//!
//! - an **entry**: the entry exactly as the client sent it (ledger id, entry id, LAC, length, digest,
//!   payload), so a read serves the record's bytes as they are. Ledger ids are below 2^63, so the first
//!   byte of an entry record is below 0x80;
//! - a **ledger state** record, `0xFF` first: ledger id (8) · master key (20) · flags (1, bit 0 fenced) ·
//!   explicit LAC (8), big-endian. Written when the bookie first sees a ledger, when it is fenced, when a
//!   writer records an explicit LAC, and by compaction; the newest one of a ledger is its state.

use logtank_bookie_proto::{MasterKey, ENTRY_OVERHEAD_BYTES, MASTER_KEY_BYTES};

const STATE_MARKER: u8 = 0xFF;
const FLAG_FENCED: u8 = 0x1;
/// Marker, ledger id, key, flags, explicit LAC.
pub const STATE_RECORD_BYTES: usize = 1 + 8 + MASTER_KEY_BYTES + 1 + 8;

/// A ledger's durable state, as a state record carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerState {
    pub ledger_id: u64,
    pub master_key: MasterKey,
    pub fenced: bool,
    /// The highest LAC a writer recorded with write-LAC; -1 if none.
    pub explicit_lac: i64,
}

impl LedgerState {
    pub fn encode(&self) -> [u8; STATE_RECORD_BYTES] {
        let mut b = [0u8; STATE_RECORD_BYTES];
        b[0] = STATE_MARKER;
        b[1..9].copy_from_slice(&self.ledger_id.to_be_bytes());
        b[9..29].copy_from_slice(&self.master_key);
        b[29] = if self.fenced { FLAG_FENCED } else { 0 };
        b[30..38].copy_from_slice(&self.explicit_lac.to_be_bytes());
        b
    }
}

/// A journal record of the bookie, borrowed from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    Entry {
        ledger_id: u64,
        entry_id: i64,
        bytes: &'a [u8],
    },
    State(LedgerState),
}

/// Why a payload is not a bookie record (the journal's checksum held, so this is a bug or another
/// program's journal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("a record of {0} bytes is neither an entry nor a ledger state")]
    Length(usize),
}

pub fn decode(payload: &[u8]) -> Result<Record<'_>, BadRecord> {
    match payload.first() {
        Some(&STATE_MARKER) => {
            if payload.len() != STATE_RECORD_BYTES {
                return Err(BadRecord::Length(payload.len()));
            }
            let mut master_key = [0u8; MASTER_KEY_BYTES];
            master_key.copy_from_slice(&payload[9..29]);
            Ok(Record::State(LedgerState {
                ledger_id: u64::from_be_bytes(payload[1..9].try_into().unwrap_or_default()),
                master_key,
                fenced: payload[29] & FLAG_FENCED != 0,
                explicit_lac: i64::from_be_bytes(payload[30..38].try_into().unwrap_or_default()),
            }))
        }
        Some(_) if payload.len() >= ENTRY_OVERHEAD_BYTES => {
            let (ledger_id, entry_id) =
                logtank_bookie_proto::entry::peek_ids(payload).ok_or(BadRecord::Length(payload.len()))?;
            Ok(Record::Entry {
                ledger_id,
                entry_id,
                bytes: payload,
            })
        }
        _ => Err(BadRecord::Length(payload.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logtank_bookie_proto::{encode_entry, EntryHeader};

    #[test]
    fn state_and_entry_records_decode() {
        let state = LedgerState {
            ledger_id: 42,
            master_key: [7; 20],
            fenced: true,
            explicit_lac: 9,
        };
        assert_eq!(decode(&state.encode()), Ok(Record::State(state)));
        let mut entry = Vec::new();
        let header = EntryHeader {
            ledger_id: 42,
            entry_id: 3,
            lac: 2,
            length: 10,
        };
        encode_entry(&mut entry, &header, b"abc");
        assert_eq!(
            decode(&entry),
            Ok(Record::Entry {
                ledger_id: 42,
                entry_id: 3,
                bytes: &entry
            })
        );
        assert!(decode(&[0xFF, 1]).is_err());
        assert!(decode(&[1, 2, 3]).is_err());
        assert!(decode(&[]).is_err());
    }
}
