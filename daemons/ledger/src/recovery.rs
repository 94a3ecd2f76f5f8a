//! Ledger recovery (`open` with recovery; `reference/bookkeeper.md` §3.3): settle the last entry of a ledger
//! whose writer may be gone, so that no entry any writer saw acknowledged is lost and nothing past it is ever
//! readable.
//!
//! 1. Metadata → IN_RECOVERY (compare-and-set), so a writer's ensemble change or close fails.
//! 2. A fencing read of the last entry to every bookie of the last fragment: each makes the fence durable
//!    before it answers, so from then on the old writer's adds fail. Enough answers means every write set
//!    has `Qw − Qa + 1` of them: then at least one answering bookie of every write set holds any entry that
//!    was acknowledged (it had `Qa` acks in a write set of `Qw`).
//! 3. From the highest LAC seen on, read each entry and re-add it (recovery adds, which a fenced ledger
//!    accepts) to its whole write set, until an entry is known missing (`Qw − Qa + 1` of its write set say
//!    they do not have it: then it cannot have been acknowledged).
//! 4. Metadata → CLOSED with that last entry (compare-and-set; a concurrent recovery that closed it first
//!    wins, with the same answer).

use std::sync::Arc;

use futures::future;
use logtank_bookie_proto::{parse_entry, MasterKey, ReadRequest, Request, Status, LAST_ENTRY};

use crate::meta::{self, Cas};
use crate::metadata::{write_set_indexes, LedgerMetadata, LedgerState};
use crate::writer::recovery_add;
use crate::{Inner, LedgerError, METADATA_CAS_ATTEMPTS_MAX};

pub(crate) async fn recover(
    inner: &Arc<Inner>,
    ledger_id: u64,
    key: MasterKey,
    mut metadata: LedgerMetadata,
    mut version: i32,
) -> Result<LedgerMetadata, LedgerError> {
    // 1. IN_RECOVERY.
    for _ in 0..METADATA_CAS_ATTEMPTS_MAX {
        if metadata.is_closed() {
            return Ok(metadata);
        }
        if metadata.state == LedgerState::InRecovery {
            break;
        }
        let mut next = metadata.clone();
        next.state = LedgerState::InRecovery;
        match meta::cas_ledger(inner, ledger_id, &next, version).await? {
            Cas::Written(v) => {
                metadata = next;
                version = v;
                break;
            }
            Cas::Conflict(now, v) => {
                metadata = now;
                version = v;
            }
        }
    }
    log::info!("recovering ledger {ledger_id}");

    // 2. Fence the last ensemble and learn the highest LAC.
    let fragment = metadata
        .ensembles
        .last()
        .cloned()
        .unwrap_or_else(|| unreachable!("validated"));
    let timeout = inner.options.read_timeout;
    let answers = future::join_all(fragment.bookies.iter().map(|bookie| {
        let request = Request::Read(ReadRequest::fencing(ledger_id, LAST_ENTRY, key));
        let inner = inner.clone();
        let bookie = bookie.clone();
        async move { (bookie.clone(), inner.pool.call(&bookie, &request, timeout).await) }
    }))
    .await;
    let mut answered = vec![false; fragment.bookies.len()];
    let mut max_lac = -1i64;
    let mut max_entry = -1i64;
    for (i, (bookie, answer)) in answers.into_iter().enumerate() {
        match answer {
            Ok(r) if r.status.is_ok() => match parse_entry(&r.body) {
                Ok(view) if view.header.ledger_id == ledger_id => {
                    answered[i] = true;
                    max_lac = max_lac.max(view.header.lac);
                    max_entry = max_entry.max(view.header.entry_id);
                }
                Ok(_) => log::warn!("recovery of {ledger_id}: bookie {bookie} sent another ledger's entry"),
                Err(e) => log::warn!("recovery of {ledger_id}: bookie {bookie} sent a bad entry: {e}"),
            },
            Ok(r) if r.status == Status::ENOENTRY || r.status == Status::ENOLEDGER => answered[i] = true,
            Ok(r) if r.status == Status::EUA => {
                return Err(LedgerError::InvalidArgument(format!(
                    "wrong password for ledger {ledger_id} (bookie {bookie} refused the master key)"
                )))
            }
            Ok(r) => log::warn!(
                "recovery of {ledger_id}: bookie {bookie} answered {} to the fencing read",
                r.status
            ),
            Err(e) => log::warn!("recovery of {ledger_id}: {e}"),
        }
    }
    let (e, qw, qa) = (metadata.ensemble_size, metadata.write_quorum, metadata.ack_quorum);
    let coverage = qw - qa + 1;
    for start in 0..e {
        let got = write_set_indexes(start as i64, e, qw)
            .filter(|&i| answered[i])
            .count();
        if got < coverage {
            return Err(LedgerError::Unrecoverable {
                ledger: ledger_id,
                reason: format!(
                    "recovery of ledger {ledger_id} needs {coverage} answers from each write set of {}, and the \
                     write set from position {start} gave {got}: start the missing bookies and try again",
                    fragment.bookies.join(", ")
                ),
            });
        }
    }
    log::debug!("recovery of {ledger_id}: fenced; highest LAC {max_lac}, highest entry {max_entry}");

    // 3. Read forward from the LAC, re-adding each entry found, until one is known missing. Entries before
    // the last fragment were acknowledged when it was made (it starts at the LAC then + 1).
    let mut next = (max_lac + 1).max(fragment.first_entry);
    let mut last = next - 1;
    let mut length = if last < 0 {
        0
    } else {
        entry_length(inner, &metadata, ledger_id, last).await?
    };
    while let Some(bytes) = read_for_recovery(inner, &metadata, ledger_id, next).await? {
        let view = parse_entry(&bytes).map_err(|e| LedgerError::BadEntry {
            ledger: ledger_id,
            entry: next,
            bookie: "?".into(),
            reason: e.to_string(),
        })?;
        length = view.header.length;
        readd(inner, &metadata, ledger_id, key, next, bytes).await?;
        last = next;
        next += 1;
    }

    // 4. CLOSED.
    for _ in 0..METADATA_CAS_ATTEMPTS_MAX {
        if metadata.is_closed() {
            return Ok(metadata);
        }
        let mut closed = metadata.clone();
        closed.state = LedgerState::Closed;
        closed.last_entry_id = last;
        closed.length = length;
        match meta::cas_ledger(inner, ledger_id, &closed, version).await? {
            Cas::Written(_) => {
                log::info!("recovered ledger {ledger_id}: closed at entry {last} ({length} bytes)");
                return Ok(closed);
            }
            Cas::Conflict(now, v) => {
                metadata = now;
                version = v;
            }
        }
    }
    Err(LedgerError::MetadataConflict {
        ledger: ledger_id,
        reason: "closing after recovery lost every compare-and-set".into(),
    })
}

/// The ledger length recorded in entry `entry` (the LAC's entry, where recovery starts).
async fn entry_length(
    inner: &Arc<Inner>,
    metadata: &LedgerMetadata,
    ledger_id: u64,
    entry: i64,
) -> Result<u64, LedgerError> {
    match read_for_recovery(inner, metadata, ledger_id, entry).await? {
        Some(bytes) => parse_entry(&bytes)
            .map(|v| v.header.length)
            .map_err(|e| LedgerError::BadEntry {
                ledger: ledger_id,
                entry,
                bookie: "?".into(),
                reason: e.to_string(),
            }),
        None => Err(LedgerError::Unrecoverable {
            ledger: ledger_id,
            reason: format!(
                "entry {entry} of ledger {ledger_id} is acknowledged but no bookie of its write set has it"
            ),
        }),
    }
}

/// Entry `entry` from its write set: `Some(bytes)` from the first bookie that has it, `None` once
/// `Qw − Qa + 1` bookies said they do not (then it was never acknowledged), an error if neither can be told.
async fn read_for_recovery(
    inner: &Arc<Inner>,
    metadata: &LedgerMetadata,
    ledger_id: u64,
    entry: i64,
) -> Result<Option<Vec<u8>>, LedgerError> {
    let coverage = metadata.write_quorum - metadata.ack_quorum + 1;
    let mut missing = 0;
    let mut failures = Vec::new();
    for bookie in metadata.write_set(entry) {
        let request = Request::Read(ReadRequest::plain(ledger_id, entry));
        match inner
            .pool
            .call(&bookie, &request, inner.options.read_timeout)
            .await
        {
            Ok(r) if r.status.is_ok() => match parse_entry(&r.body) {
                Ok(v) if v.header.ledger_id == ledger_id && v.header.entry_id == entry => {
                    return Ok(Some(r.body))
                }
                Ok(_) => failures.push(format!("{bookie}: another entry's bytes")),
                Err(e) => failures.push(format!("{bookie}: {e}")),
            },
            Ok(r) if r.status == Status::ENOENTRY || r.status == Status::ENOLEDGER => {
                missing += 1;
                if missing >= coverage {
                    return Ok(None);
                }
            }
            Ok(r) => failures.push(format!("{bookie}: {}", r.status)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(LedgerError::Unrecoverable {
        ledger: ledger_id,
        reason: format!(
            "recovery of ledger {ledger_id} cannot tell whether entry {entry} exists: {missing} bookies lack it, \
             {coverage} must to settle it; {}",
            failures.join("; ")
        ),
    })
}

/// Writes a recovered entry to its whole write set with recovery adds; `Qa` must succeed.
async fn readd(
    inner: &Arc<Inner>,
    metadata: &LedgerMetadata,
    ledger_id: u64,
    key: MasterKey,
    entry: i64,
    bytes: Vec<u8>,
) -> Result<(), LedgerError> {
    let Some(request) = recovery_add(key, bytes) else {
        return Err(LedgerError::BadEntry {
            ledger: ledger_id,
            entry,
            bookie: "?".into(),
            reason: "too short".into(),
        });
    };
    let timeout = inner.options.add_timeout;
    let results = future::join_all(metadata.write_set(entry).into_iter().map(|bookie| {
        let inner = inner.clone();
        let request = request.clone();
        async move { (bookie.clone(), inner.pool.call(&bookie, &request, timeout).await) }
    }))
    .await;
    let mut acked = 0;
    let mut failures = Vec::new();
    for (bookie, result) in results {
        match result {
            Ok(r) if r.status.is_ok() => acked += 1,
            Ok(r) => failures.push(format!("{bookie}: {}", r.status)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if acked >= metadata.ack_quorum {
        Ok(())
    } else {
        Err(LedgerError::Unrecoverable {
            ledger: ledger_id,
            reason: format!(
                "re-adding entry {entry} of ledger {ledger_id} reached {acked} bookies, {} needed: {}",
                metadata.ack_quorum,
                failures.join("; ")
            ),
        })
    }
}
