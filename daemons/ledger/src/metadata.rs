//! Ledger metadata, one node per ledger (`Layout::ledger`): JSON, so `logtank zk get` shows it as it is.
//! Every change is a compare-and-set on the node's version, which is what makes one writer, ensemble changes
//! and recovery safe against each other.
//!
//! ```json
//! {"format":1,"ensemble_size":3,"write_quorum":2,"ack_quorum":2,"state":"OPEN","last_entry_id":-1,
//!  "length":0,"digest_type":"CRC32C","ctime_ms":1764000000000,"custom":{"writer":"w1"},
//!  "ensembles":[{"first_entry":0,"bookies":["127.0.0.1:3181","127.0.0.1:3182","127.0.0.1:3183"]}]}
//! ```
//!
//! `ensembles` are BookKeeper's fragments: from `first_entry` on (to the next fragment's), entry `e` is
//! written to the `write_quorum` bookies starting at index `e mod ensemble_size` of that fragment's list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::LedgerError;

pub const METADATA_FORMAT: u32 = 1;
/// The largest ensemble a ledger may have; far more than any deployment of this suite.
pub const ENSEMBLE_SIZE_MAX: usize = 64;
/// Custom metadata is for a few labels (who wrote the ledger, for what).
pub const CUSTOM_BYTES_MAX: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerState {
    /// Being written; readers see entries up to the last add confirmed.
    Open,
    /// A reader is recovering it (fenced); its last entry is not settled yet.
    InRecovery,
    /// Closed: `last_entry_id` and `length` are final.
    Closed,
}

/// One fragment: the ensemble entries from `first_entry` on are written to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    pub first_entry: i64,
    pub bookies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerMetadata {
    pub format: u32,
    pub ensemble_size: usize,
    pub write_quorum: usize,
    pub ack_quorum: usize,
    pub state: LedgerState,
    /// -1 while open, or closed empty.
    pub last_entry_id: i64,
    /// Payload bytes of entries `0..=last_entry_id` (once closed).
    pub length: u64,
    /// Always `CRC32C` (the only digest this suite uses; named for readers who know BookKeeper's four).
    pub digest_type: String,
    pub ctime_ms: u64,
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
    pub ensembles: Vec<Fragment>,
}

impl LedgerMetadata {
    pub fn new(
        ensemble: Vec<String>,
        write_quorum: usize,
        ack_quorum: usize,
        custom: BTreeMap<String, String>,
        ctime_ms: u64,
    ) -> Result<LedgerMetadata, LedgerError> {
        let metadata = LedgerMetadata {
            format: METADATA_FORMAT,
            ensemble_size: ensemble.len(),
            write_quorum,
            ack_quorum,
            state: LedgerState::Open,
            last_entry_id: -1,
            length: 0,
            digest_type: "CRC32C".into(),
            ctime_ms,
            custom,
            ensembles: vec![Fragment {
                first_entry: 0,
                bookies: ensemble,
            }],
        };
        metadata.validate().map_err(LedgerError::InvalidArgument)?;
        Ok(metadata)
    }

    /// Checks what a reader relies on: E ≥ Qw ≥ Qa ≥ 1, fragments from entry 0 in increasing order, each of
    /// E distinct bookies.
    pub fn validate(&self) -> Result<(), String> {
        let (e, w, a) = (self.ensemble_size, self.write_quorum, self.ack_quorum);
        if !(1..=ENSEMBLE_SIZE_MAX).contains(&e) || w > e || a > w || a == 0 {
            return Err(format!(
                "ensemble {e}, write quorum {w}, ack quorum {a}: need {ENSEMBLE_SIZE_MAX} ≥ E ≥ Qw ≥ Qa ≥ 1"
            ));
        }
        if self.format != METADATA_FORMAT {
            return Err(format!(
                "metadata format {} (this client reads {METADATA_FORMAT})",
                self.format
            ));
        }
        if self.digest_type != "CRC32C" {
            return Err(format!(
                "digest type {} (only CRC32C is supported)",
                self.digest_type
            ));
        }
        let custom: usize = self.custom.iter().map(|(k, v)| k.len() + v.len()).sum();
        if custom > CUSTOM_BYTES_MAX {
            return Err(format!(
                "custom metadata of {custom} bytes (at most {CUSTOM_BYTES_MAX})"
            ));
        }
        let Some(first) = self.ensembles.first() else {
            return Err("no ensemble".into());
        };
        if first.first_entry != 0 {
            return Err(format!(
                "the first fragment starts at entry {}",
                first.first_entry
            ));
        }
        for pair in self.ensembles.windows(2) {
            if pair[1].first_entry <= pair[0].first_entry {
                return Err("fragments out of order".into());
            }
        }
        for fragment in &self.ensembles {
            let mut distinct = fragment.bookies.clone();
            distinct.sort();
            distinct.dedup();
            if fragment.bookies.len() != e || distinct.len() != e {
                return Err(format!(
                    "fragment at entry {} has {} bookies ({} distinct), not {e}",
                    fragment.first_entry,
                    fragment.bookies.len(),
                    distinct.len()
                ));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(path: &str, bytes: &[u8]) -> Result<LedgerMetadata, LedgerError> {
        let bad = |reason: String| LedgerError::BadMetadata {
            path: path.to_string(),
            reason,
        };
        let metadata: LedgerMetadata = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        metadata.validate().map_err(bad)?;
        Ok(metadata)
    }

    /// The fragment entry `entry` belongs to.
    pub fn fragment_of(&self, entry: i64) -> &Fragment {
        let index = self.ensembles.partition_point(|f| f.first_entry <= entry).max(1) - 1;
        &self.ensembles[index]
    }

    /// The bookies entry `entry` is written to, in write-set order.
    pub fn write_set(&self, entry: i64) -> Vec<String> {
        let fragment = self.fragment_of(entry);
        write_set_indexes(entry, self.ensemble_size, self.write_quorum)
            .map(|i| fragment.bookies[i].clone())
            .collect()
    }

    /// The newest fragment's ensemble (where new entries go).
    pub fn current_ensemble(&self) -> &[String] {
        self.ensembles.last().map_or(&[], |f| &f.bookies[..])
    }

    pub fn is_closed(&self) -> bool {
        self.state == LedgerState::Closed
    }
}

/// The ensemble positions entry `entry` is written to: `write_quorum` positions from `entry mod E`.
pub fn write_set_indexes(
    entry: i64,
    ensemble_size: usize,
    write_quorum: usize,
) -> impl Iterator<Item = usize> {
    let start = entry.rem_euclid(ensemble_size as i64) as usize;
    (0..write_quorum).map(move |i| (start + i) % ensemble_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bookies(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("127.0.0.1:318{i}")).collect()
    }

    #[test]
    fn write_sets_stripe_and_follow_fragments() {
        let mut m = LedgerMetadata::new(bookies(3), 2, 2, BTreeMap::new(), 0).expect("valid");
        assert_eq!(m.write_set(0), ["127.0.0.1:3181", "127.0.0.1:3182"]);
        assert_eq!(m.write_set(2), ["127.0.0.1:3183", "127.0.0.1:3181"]);
        m.ensembles.push(Fragment {
            first_entry: 5,
            bookies: vec![
                "127.0.0.1:3184".into(),
                "127.0.0.1:3182".into(),
                "127.0.0.1:3183".into(),
            ],
        });
        m.validate().expect("valid");
        assert_eq!(m.write_set(4), ["127.0.0.1:3182", "127.0.0.1:3183"]);
        assert_eq!(m.write_set(6), ["127.0.0.1:3184", "127.0.0.1:3182"]);
        let json = m.to_json();
        assert_eq!(LedgerMetadata::from_json("/x", &json).expect("parses"), m);
    }

    #[test]
    fn invalid_quorums_and_fragments_are_refused() {
        assert!(LedgerMetadata::new(bookies(3), 4, 2, BTreeMap::new(), 0).is_err());
        assert!(LedgerMetadata::new(bookies(3), 2, 3, BTreeMap::new(), 0).is_err());
        assert!(LedgerMetadata::new(bookies(2), 1, 0, BTreeMap::new(), 0).is_err());
        let mut dup = bookies(3);
        dup[2] = dup[0].clone();
        assert!(LedgerMetadata::new(dup, 2, 2, BTreeMap::new(), 0).is_err());
        assert!(LedgerMetadata::from_json("/x", b"{\"format\":1}").is_err());
        assert!(LedgerMetadata::from_json("/x", b"garbage").is_err());
    }
}
