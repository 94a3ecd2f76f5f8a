//! Ledger metadata in coordination: id allocation, create, read, compare-and-set, delete.

use std::time::Duration;

use logtank_coord::zookeeper_client::CreateMode;
use logtank_coord::ZkError;

use crate::metadata::LedgerMetadata;
use crate::{Inner, LedgerError};

/// Retries of an operation that failed for a reason a reconnect cures (connection loss).
const TRANSIENT_RETRIES_MAX: u32 = 5;
const TRANSIENT_RETRY_PAUSE: Duration = Duration::from_millis(200);

fn transient(e: &ZkError) -> bool {
    matches!(e, ZkError::ConnectionLoss | ZkError::Timeout | ZkError::Throttled)
}

/// Allocates a ledger id (an ephemeral sequential node under `idgen`, deleted at once: the counter is the
/// parent's, so ids never repeat) and creates the ledger's metadata node. Returns the id and the node's
/// version.
pub(crate) async fn create_ledger(
    inner: &Inner,
    metadata: &LedgerMetadata,
) -> Result<(u64, i32), LedgerError> {
    let layout = &inner.layout;
    let idgen = layout.idgen();
    let client = inner.coord.client();
    let ephemeral = CreateMode::EphemeralSequential.with_acls(logtank_coord::node_acls());
    let persistent = CreateMode::Persistent.with_acls(logtank_coord::node_acls());
    let prefix = format!("{idgen}/ID-");
    for _ in 0..TRANSIENT_RETRIES_MAX {
        let (_, sequence) = match client.create(&prefix, b"", &ephemeral).await {
            Ok(created) => created,
            Err(ZkError::NoNode) => return Err(LedgerError::NotFormatted { path: idgen }),
            Err(e) if transient(&e) => {
                tokio::time::sleep(TRANSIENT_RETRY_PAUSE).await;
                continue;
            }
            Err(e) => return Err(LedgerError::coord("allocate a ledger id", &idgen, e)),
        };
        let id = sequence.into_i64() as u64;
        // The node only carried the counter; it goes with the session anyway.
        let _ = client.delete(&format!("{prefix}{sequence}"), None).await;
        if id > crate::layout::LEDGER_ID_MAX {
            return Err(LedgerError::InvalidArgument(format!(
                "ledger id {id} does not fit the layout"
            )));
        }
        let path = layout.ledger(id);
        let data = metadata.to_json();
        let created = match client.create(&path, &data, &persistent).await {
            Err(ZkError::NoNode) => {
                let parent = &path[..path.rfind('/').unwrap_or(0)];
                client
                    .mkdir(parent, &persistent)
                    .await
                    .map_err(|e| LedgerError::coord("create", parent, e))?;
                client.create(&path, &data, &persistent).await
            }
            other => other,
        };
        match created {
            Ok((stat, _)) => return Ok((id, stat.version)),
            // A metadata node without an id allocation (written by hand, or by another layout): skip the id.
            Err(ZkError::NodeExists) => {
                log::warn!("{path} exists although its id was just allocated; skipping it")
            }
            Err(e) => return Err(LedgerError::coord("create", &path, e)),
        }
    }
    Err(LedgerError::coord(
        "allocate a ledger id",
        &idgen,
        ZkError::ConnectionLoss,
    ))
}

/// The ledger's metadata and its node version.
pub(crate) async fn read_ledger(inner: &Inner, ledger_id: u64) -> Result<(LedgerMetadata, i32), LedgerError> {
    let path = inner.layout.ledger(ledger_id);
    let mut attempt = 0;
    loop {
        match inner.coord.client().get_data(&path).await {
            Ok((data, stat)) => return Ok((LedgerMetadata::from_json(&path, &data)?, stat.version)),
            Err(ZkError::NoNode) => {
                return Err(LedgerError::NoSuchLedger {
                    ledger: ledger_id,
                    path,
                })
            }
            Err(e) if transient(&e) && attempt < TRANSIENT_RETRIES_MAX => {
                attempt += 1;
                tokio::time::sleep(TRANSIENT_RETRY_PAUSE).await;
            }
            Err(e) => return Err(LedgerError::coord("read metadata", &path, e)),
        }
    }
}

/// What a compare-and-set found.
pub(crate) enum Cas {
    /// Written; the node's new version.
    Written(i32),
    /// The node changed since `version` was read: here is what it holds now.
    Conflict(LedgerMetadata, i32),
}

/// Writes `metadata` if the node is still at `version`.
pub(crate) async fn cas_ledger(
    inner: &Inner,
    ledger_id: u64,
    metadata: &LedgerMetadata,
    version: i32,
) -> Result<Cas, LedgerError> {
    let path = inner.layout.ledger(ledger_id);
    let data = metadata.to_json();
    match inner.coord.client().set_data(&path, &data, Some(version)).await {
        Ok(stat) => Ok(Cas::Written(stat.version)),
        Err(ZkError::NoNode) => Err(LedgerError::NoSuchLedger {
            ledger: ledger_id,
            path,
        }),
        Err(ZkError::BadVersion) => {
            let (now, version) = read_ledger(inner, ledger_id).await?;
            Ok(Cas::Conflict(now, version))
        }
        Err(e) if transient(&e) => {
            // The write may or may not have happened: look.
            let (now, now_version) = read_ledger(inner, ledger_id).await?;
            if now == *metadata && now_version == version + 1 {
                Ok(Cas::Written(now_version))
            } else {
                Ok(Cas::Conflict(now, now_version))
            }
        }
        Err(e) => Err(LedgerError::coord("update metadata", &path, e)),
    }
}

pub(crate) async fn delete_ledger(inner: &Inner, ledger_id: u64) -> Result<(), LedgerError> {
    let path = inner.layout.ledger(ledger_id);
    match inner.coord.client().delete(&path, None).await {
        Ok(()) => {
            log::info!("deleted ledger {ledger_id}");
            Ok(())
        }
        Err(ZkError::NoNode) => Err(LedgerError::NoSuchLedger {
            ledger: ledger_id,
            path,
        }),
        Err(e) => Err(LedgerError::coord("delete", &path, e)),
    }
}
