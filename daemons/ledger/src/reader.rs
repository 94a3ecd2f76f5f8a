//! [`LedgerReader`]: reads of a ledger's entries from the bookies of their write sets, each checked (digest,
//! ledger and entry id) before it is returned; the next bookie of the write set is asked when one fails.
//! A closed ledger is read up to its last entry; an open one up to the last add confirmed, which
//! [`LedgerReader::tail`] follows as the ledger grows.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use logtank_bookie_proto::{parse_entry, ReadLacBody, ReadLacRequest, ReadRequest, Request, Status};

use crate::meta;
use crate::metadata::LedgerMetadata;
use crate::{Inner, LedgerError};

/// Reads a range keeps in flight.
const READS_IN_FLIGHT_MAX: usize = 64;

#[derive(Debug)]
pub struct LedgerReader {
    inner: Arc<Inner>,
    ledger_id: u64,
    metadata: LedgerMetadata,
}

impl LedgerReader {
    pub(crate) fn new(inner: Arc<Inner>, ledger_id: u64, metadata: LedgerMetadata) -> LedgerReader {
        LedgerReader {
            inner,
            ledger_id,
            metadata,
        }
    }

    pub fn id(&self) -> u64 {
        self.ledger_id
    }

    pub fn metadata(&self) -> &LedgerMetadata {
        &self.metadata
    }

    /// The last entry, if the ledger is closed.
    pub fn last_entry(&self) -> Option<i64> {
        self.metadata.is_closed().then_some(self.metadata.last_entry_id)
    }

    /// Reads the metadata again (an open ledger may have been closed or changed ensemble meanwhile).
    pub async fn refresh(&mut self) -> Result<(), LedgerError> {
        self.metadata = meta::read_ledger(&self.inner, self.ledger_id).await?.0;
        Ok(())
    }

    /// Entry `entry`'s payload.
    pub async fn read(&self, entry: i64) -> Result<Vec<u8>, LedgerError> {
        read_entry(&self.inner, &self.metadata, self.ledger_id, entry).await
    }

    /// Entries `from..=to` in order, many reads in flight.
    pub async fn read_range(&self, from: i64, to: i64) -> Result<Vec<(i64, Vec<u8>)>, LedgerError> {
        if to < from {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let metadata = &self.metadata;
        let ledger_id = self.ledger_id;
        let results: Vec<Result<(i64, Vec<u8>), LedgerError>> = stream::iter(from..=to)
            .map(|e| async move { read_entry(inner, metadata, ledger_id, e).await.map(|p| (e, p)) })
            .buffered(READS_IN_FLIGHT_MAX)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// How far an open ledger may be read: the highest LAC any bookie of the last ensemble knows (from its
    /// last entry's header and the explicit LAC); for a closed ledger its last entry.
    pub async fn last_add_confirmed(&self) -> Result<i64, LedgerError> {
        if let Some(last) = self.last_entry() {
            return Ok(last);
        }
        let timeout = self.inner.options.read_timeout;
        let request = Request::ReadLac(ReadLacRequest {
            ledger_id: self.ledger_id,
        });
        let mut lac = -1;
        let mut answered = 0;
        let mut failures = Vec::new();
        for bookie in self.metadata.current_ensemble() {
            match self.inner.pool.call(bookie, &request, timeout).await {
                Ok(r) if r.status.is_ok() => {
                    answered += 1;
                    if let Ok(body) = ReadLacBody::decode(&r.body) {
                        lac = lac.max(body.explicit_lac);
                        if let Some(Ok(entry)) = body.last_entry.map(parse_entry) {
                            lac = lac.max(entry.header.lac);
                        }
                    }
                }
                Ok(r) if r.status == Status::ENOLEDGER => answered += 1,
                Ok(r) => failures.push(format!("{bookie}: {}", r.status)),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if answered == 0 {
            return Err(LedgerError::Unrecoverable {
                ledger: self.ledger_id,
                reason: format!(
                    "no bookie of ledger {} answered for its LAC: {}",
                    self.ledger_id,
                    failures.join("; ")
                ),
            });
        }
        // The LAC of the entries in an older fragment is that fragment's end at least.
        Ok(lac.max(self.metadata.ensembles.last().map_or(0, |f| f.first_entry) - 1))
    }

    /// Follows the ledger: calls `each` for every entry from `from` on, in order, as it becomes readable
    /// (up to the LAC), until the ledger is closed and read to its end or `each` returns false. Polls the
    /// LAC every `ClientOptions::tail_poll_interval` when there is nothing new.
    pub async fn tail(
        &mut self,
        from: i64,
        mut each: impl FnMut(i64, Vec<u8>) -> bool,
    ) -> Result<(), LedgerError> {
        let mut next = from;
        loop {
            let closed = self.metadata.is_closed();
            let lac = self.last_add_confirmed().await?;
            if next <= lac {
                for (entry, payload) in self.read_range(next, lac).await? {
                    if !each(entry, payload) {
                        return Ok(());
                    }
                }
                next = lac + 1;
                continue;
            }
            if closed {
                return Ok(());
            }
            tokio::time::sleep(self.inner.options.tail_poll_interval).await;
            self.refresh().await?;
        }
    }
}

/// Reads one entry from its write set, trying each bookie in turn; checks digest and ids.
async fn read_entry(
    inner: &Inner,
    metadata: &LedgerMetadata,
    ledger_id: u64,
    entry: i64,
) -> Result<Vec<u8>, LedgerError> {
    if metadata.is_closed() && entry > metadata.last_entry_id || entry < 0 {
        return Err(LedgerError::NoSuchEntry {
            ledger: ledger_id,
            entry,
            detail: Some(format!("the ledger ends at entry {}", metadata.last_entry_id)),
        });
    }
    let mut failures = Vec::new();
    let mut missing = 0;
    let write_set = metadata.write_set(entry);
    for bookie in &write_set {
        let request = Request::Read(ReadRequest::plain(ledger_id, entry));
        match inner
            .pool
            .call(bookie, &request, inner.options.read_timeout)
            .await
        {
            Ok(r) if r.status.is_ok() => {
                match parse_entry(&r.body) {
                    Ok(view) if view.header.ledger_id == ledger_id && view.header.entry_id == entry => {
                        return Ok(view.payload.to_vec())
                    }
                    Ok(view) => failures.push(format!(
                        "{bookie} sent entry {}:{} instead",
                        view.header.ledger_id, view.header.entry_id
                    )),
                    Err(e) => {
                        log::warn!("ledger {ledger_id} entry {entry} from bookie {bookie}: {e}; trying the next bookie");
                        failures.push(format!("{bookie}: {e}"));
                    }
                }
            }
            Ok(r) if r.status == Status::ENOENTRY || r.status == Status::ENOLEDGER => {
                missing += 1;
                failures.push(format!("{bookie}: {}", r.status));
            }
            Ok(r) => failures.push(format!("{bookie}: {}", r.status)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if missing == write_set.len() {
        return Err(LedgerError::NoSuchEntry {
            ledger: ledger_id,
            entry,
            detail: Some("no bookie of its write set has it".into()),
        });
    }
    Err(LedgerError::Unrecoverable {
        ledger: ledger_id,
        reason: format!(
            "entry {entry} of ledger {ledger_id} could not be read: {}",
            failures.join("; ")
        ),
    })
}
