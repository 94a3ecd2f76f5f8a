//! A log as a chain of ledgers: BookKeeper's "ledgers to logs" and DistributedLog's log segments
//! (`reference/bookkeeper.md` §3.3, §4). A writer's raw log is replicated record by record into ledgers;
//! each ledger holds a run of consecutive records (entry `k` = record `first_seq + k`), and the log's
//! metadata, one node per writer, lists them in order:
//!
//! ```json
//! {"format":1,"writer":"host:15000","ledgers":[
//!   {"ledger_id":12,"segment":1,"first_seq":1,"last_seq":5000},
//!   {"ledger_id":13,"segment":5001,"first_seq":5001,"last_seq":null}]}
//! ```
//!
//! `segment` is the raw segment (the local journal's segment, by its first record) the records belong to, so a
//! restore lays them out as the writer had them; a segment may span several ledgers (a new one is started after
//! a recovery). Every change is a compare-and-set on the node's version: a second process with the same writer
//! id fences the first (it recovers the open ledger, whose bookies then refuse the first's adds) and the
//! first's next change of the list fails.

use serde::{Deserialize, Serialize};

use logtank_coord::zookeeper_client::{Client, CreateMode};
use logtank_coord::ZkError;

use crate::LedgerError;

pub const LOG_FORMAT: u32 = 1;
/// Where the logs live in coordination (next to the suite's other nodes).
pub const LOGS_ROOT: &str = "/logtank/logs";
/// A log node's JSON must fit a ZooKeeper node (1 MiB by default); retention keeps the list far shorter.
pub const LOG_LEDGERS_MAX: usize = 5000;

/// One ledger of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLedger {
    pub ledger_id: u64,
    /// The raw segment (its first record) these records belong to.
    pub segment: u64,
    pub first_seq: u64,
    /// The last record, once the ledger is closed; `None` while it is written.
    pub last_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMetadata {
    pub format: u32,
    pub writer: String,
    pub ledgers: Vec<LogLedger>,
}

impl LogMetadata {
    pub fn new(writer: &str) -> LogMetadata {
        LogMetadata {
            format: LOG_FORMAT,
            writer: writer.to_string(),
            ledgers: Vec::new(),
        }
    }

    /// Checks what a reader relies on: records in order, contiguous, only the last ledger open.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != LOG_FORMAT {
            return Err(format!(
                "log format {} (this client reads {LOG_FORMAT})",
                self.format
            ));
        }
        if self.ledgers.len() > LOG_LEDGERS_MAX {
            return Err(format!(
                "{} ledgers (at most {LOG_LEDGERS_MAX})",
                self.ledgers.len()
            ));
        }
        for pair in self.ledgers.windows(2) {
            let Some(last) = pair[0].last_seq else {
                return Err(format!("ledger {} is open but not the last", pair[0].ledger_id));
            };
            // Closed ledgers hold first_seq..=last_seq (an empty one: last_seq = first_seq - 1), and the next
            // one goes on from the record after.
            if pair[1].first_seq != last + 1 {
                return Err(format!(
                    "ledger {} starts at record {}, not {} after ledger {}",
                    pair[1].ledger_id,
                    pair[1].first_seq,
                    last + 1,
                    pair[0].ledger_id
                ));
            }
            if pair[1].segment < pair[0].segment {
                return Err(format!(
                    "ledger {} goes back to an older segment",
                    pair[1].ledger_id
                ));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(path: &str, bytes: &[u8]) -> Result<LogMetadata, LedgerError> {
        let bad = |reason: String| LedgerError::BadMetadata {
            path: path.to_string(),
            reason,
        };
        let m: LogMetadata = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        m.validate().map_err(bad)?;
        Ok(m)
    }

    /// The open ledger at the end, if there is one.
    pub fn open_ledger(&self) -> Option<&LogLedger> {
        self.ledgers.last().filter(|l| l.last_seq.is_none())
    }

    /// The last record the closed ledgers hold.
    pub fn last_closed_seq(&self) -> Option<u64> {
        self.ledgers.iter().rev().find_map(|l| l.last_seq)
    }
}

/// The node of writer `writer`'s log.
pub fn log_path(writer: &str) -> String {
    format!("{LOGS_ROOT}/{writer}")
}

/// The log and its node version; `None` if the writer never replicated.
pub async fn read_log(client: &Client, writer: &str) -> Result<Option<(LogMetadata, i32)>, LedgerError> {
    let path = log_path(writer);
    match client.get_data(&path).await {
        Ok((data, stat)) => Ok(Some((LogMetadata::from_json(&path, &data)?, stat.version))),
        Err(ZkError::NoNode) => Ok(None),
        Err(e) => Err(LedgerError::coord("read", &path, e)),
    }
}

/// What a compare-and-set of a log found.
#[derive(Debug)]
pub enum LogCas {
    Written(i32),
    /// Another process changed the log since `version`: this writer is fenced.
    Conflict,
}

/// Writes `log` if its node is still at `version` (`None`: creates it, which fails if it exists).
pub async fn write_log(
    client: &Client,
    log: &LogMetadata,
    version: Option<i32>,
) -> Result<LogCas, LedgerError> {
    log.validate().map_err(LedgerError::InvalidArgument)?;
    let path = log_path(&log.writer);
    let data = log.to_json();
    match version {
        Some(v) => match client.set_data(&path, &data, Some(v)).await {
            Ok(stat) => Ok(LogCas::Written(stat.version)),
            Err(ZkError::BadVersion) | Err(ZkError::NoNode) => Ok(LogCas::Conflict),
            Err(e) => Err(LedgerError::coord("update", &path, e)),
        },
        None => {
            let persistent = CreateMode::Persistent.with_acls(logtank_coord::node_acls());
            let created = match client.create(&path, &data, &persistent).await {
                Err(ZkError::NoNode) => {
                    client
                        .mkdir(LOGS_ROOT, &persistent)
                        .await
                        .map_err(|e| LedgerError::coord("create", LOGS_ROOT, e))?;
                    client.create(&path, &data, &persistent).await
                }
                other => other,
            };
            match created {
                Ok((stat, _)) => Ok(LogCas::Written(stat.version)),
                Err(ZkError::NodeExists) => Ok(LogCas::Conflict),
                Err(e) => Err(LedgerError::coord("create", &path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(id: u64, segment: u64, first: u64, last: Option<u64>) -> LogLedger {
        LogLedger {
            ledger_id: id,
            segment,
            first_seq: first,
            last_seq: last,
        }
    }

    #[test]
    fn only_the_last_ledger_may_be_open_and_records_never_overlap() {
        let mut log = LogMetadata::new("h:1");
        log.ledgers = vec![
            ledger(1, 1, 1, Some(10)),
            ledger(2, 1, 11, Some(20)),
            ledger(3, 21, 21, None),
        ];
        assert_eq!(log.validate(), Ok(()));
        assert_eq!(log.open_ledger().map(|l| l.ledger_id), Some(3));
        assert_eq!(log.last_closed_seq(), Some(20));
        assert_eq!(
            LogMetadata::from_json("/x", &log.to_json()).unwrap_or_else(|e| panic!("{e}")),
            log
        );
        log.ledgers[1].last_seq = None;
        assert!(log.validate().is_err(), "an open ledger before the last");
        log.ledgers[1].last_seq = Some(20);
        log.ledgers[2].first_seq = 15;
        assert!(log.validate().is_err(), "overlap");
        log.ledgers[2].first_seq = 22;
        assert!(log.validate().is_err(), "a gap");
    }
}
