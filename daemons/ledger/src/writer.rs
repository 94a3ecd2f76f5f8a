//! [`LedgerWriter`]: the one writer of a ledger. One task owns the ledger's write state; adds reach it through
//! a channel and come back as [`PendingAdd`]s, so many can be in flight (bounded by
//! `ClientOptions::adds_in_flight_max`).
//!
//! Rules (BookKeeper's, `reference/bookkeeper.md` §3.1):
//! - entry `e` goes to the write set of the fragment it belongs to; an ack counts only from a bookie of that
//!   write set; `e` is acknowledged once `Qa` such acks are in and every lower entry is acknowledged, so
//!   acknowledgements are in order and the LAC only grows;
//! - a bookie that fails (error, timeout, refused) is replaced by a writable bookie outside the ensemble: a
//!   new fragment from the first unacknowledged entry (LAC + 1) is written by compare-and-set on the
//!   metadata, and every unacknowledged entry is sent to the members of its new write set that do not have
//!   it. With no bookie to spare, the writer goes on without the failed one as long as every write set still
//!   has `Qa` others (BookKeeper's delayed ensemble change); otherwise the unacknowledged adds fail;
//! - `EFENCED` from any bookie, or metadata that is no longer OPEN, means a recovery took the ledger over:
//!   every unacknowledged add fails with [`LedgerError::Fenced`] and the writer is done.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use logtank_bookie_proto::{
    encode_entry, AddRequest, EntryHeader, MasterKey, Request, Status, FLAG_RECOVERY_ADD,
};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::meta::{self, Cas};
use crate::metadata::{Fragment, LedgerMetadata, LedgerState};
use crate::{Inner, LedgerError, METADATA_CAS_ATTEMPTS_MAX};

/// Commands queued to the writer task beyond those being served.
const COMMAND_QUEUE_MAX: usize = 256;

enum Command {
    Add {
        payload: Vec<u8>,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<i64, LedgerError>>,
    },
    Close {
        reply: oneshot::Sender<Result<LedgerMetadata, LedgerError>>,
    },
}

/// An add on its way: await [`PendingAdd::wait`] for its entry id once acknowledged.
#[derive(Debug)]
pub struct PendingAdd {
    reply: oneshot::Receiver<Result<i64, LedgerError>>,
    ledger_id: u64,
}

impl PendingAdd {
    pub async fn wait(self) -> Result<i64, LedgerError> {
        self.reply.await.unwrap_or(Err(LedgerError::Closed {
            ledger: self.ledger_id,
        }))
    }
}

/// The writer of one ledger; see the module documentation.
#[derive(Debug)]
pub struct LedgerWriter {
    ledger_id: u64,
    commands: mpsc::Sender<Command>,
    /// Why the writer can add nothing more, once it cannot (so `append` fails at once).
    broken: Arc<std::sync::Mutex<Option<String>>>,
    in_flight: Arc<Semaphore>,
    lac: watch::Receiver<i64>,
    task: tokio::task::JoinHandle<()>,
}

impl LedgerWriter {
    pub(crate) fn start(
        inner: Arc<Inner>,
        ledger_id: u64,
        master_key: MasterKey,
        metadata: LedgerMetadata,
        version: i32,
    ) -> LedgerWriter {
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let adds_max = inner.options.adds_in_flight_max.max(1);
        let (lac_tx, lac) = watch::channel(-1);
        let broken = Arc::new(std::sync::Mutex::new(None));
        let task = WriterTask {
            broken_shared: broken.clone(),
            inner,
            ledger_id,
            master_key,
            metadata,
            version,
            next_entry: 0,
            length: 0,
            lac: -1,
            acked_length: 0,
            pending: VecDeque::new(),
            failed_bookies: HashSet::new(),
            broken: None,
            in_flight: FuturesUnordered::new(),
            lac_tx,
        };
        LedgerWriter {
            ledger_id,
            commands,
            broken,
            in_flight: Arc::new(Semaphore::new(adds_max)),
            lac,
            task: tokio::spawn(task.run(command_rx)),
        }
    }

    pub fn id(&self) -> u64 {
        self.ledger_id
    }

    /// The last entry acknowledged (-1 before the first).
    pub fn last_add_confirmed(&self) -> i64 {
        *self.lac.borrow()
    }

    /// Queues an add (waiting while `adds_in_flight_max` are in flight) and returns at once; the entry id
    /// comes with the acknowledgement.
    pub async fn append(&self, payload: Vec<u8>) -> Result<PendingAdd, LedgerError> {
        let closed = || LedgerError::Closed {
            ledger: self.ledger_id,
        };
        let broken = self
            .broken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(why) = broken {
            return Err(broken_error(self.ledger_id, &why));
        }
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Add {
                payload,
                permit,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        Ok(PendingAdd {
            reply: rx,
            ledger_id: self.ledger_id,
        })
    }

    /// Adds one entry and waits for its acknowledgement.
    pub async fn add(&self, payload: Vec<u8>) -> Result<i64, LedgerError> {
        self.append(payload).await?.wait().await
    }

    /// Waits for every add in flight, then closes the ledger (its last entry is the LAC) and returns the
    /// final metadata.
    pub async fn close(self) -> Result<LedgerMetadata, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let closed = LedgerError::Closed {
            ledger: self.ledger_id,
        };
        if self.commands.send(Command::Close { reply }).await.is_err() {
            return Err(closed);
        }
        let result = rx.await.unwrap_or(Err(closed));
        let _ = self.task.await;
        result
    }
}

/// One bookie's answer to one add.
struct AddResult {
    entry_id: i64,
    bookie: String,
    result: Result<Status, LedgerError>,
}

/// An entry sent and not yet acknowledged.
struct Pending {
    entry_id: i64,
    /// The add, encoded once for every bookie of its write set.
    request: Arc<Request>,
    acked: Vec<String>,
    sent_to: Vec<String>,
    reply: Option<oneshot::Sender<Result<i64, LedgerError>>>,
    _permit: OwnedSemaphorePermit,
    length: u64,
}

struct WriterTask {
    inner: Arc<Inner>,
    ledger_id: u64,
    master_key: MasterKey,
    metadata: LedgerMetadata,
    version: i32,
    next_entry: i64,
    /// Ledger length including the last entry assigned.
    length: u64,
    lac: i64,
    /// Ledger length up to and including the LAC.
    acked_length: u64,
    /// Entries lac+1, lac+2, … in order.
    pending: VecDeque<Pending>,
    /// Bookies of the current ensemble that failed and could not be replaced (delayed ensemble change).
    failed_bookies: HashSet<String>,
    /// Set once the writer can add nothing more (fenced, closed, not enough bookies).
    broken: Option<String>,
    /// The same, for the handle.
    broken_shared: Arc<std::sync::Mutex<Option<String>>>,
    /// Adds sent and not yet answered, polled by the task itself (no task per send).
    in_flight: FuturesUnordered<BoxFuture<'static, AddResult>>,
    lac_tx: watch::Sender<i64>,
}

impl WriterTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut closing: Option<oneshot::Sender<Result<LedgerMetadata, LedgerError>>> = None;
        loop {
            if closing.is_some() && self.pending.is_empty() {
                let result = self.close().await;
                if let Some(reply) = closing.take() {
                    let _ = reply.send(result);
                }
                return;
            }
            tokio::select! {
                command = commands.recv(), if closing.is_none() => match command {
                    Some(Command::Add { payload, permit, reply }) => self.add(payload, permit, reply),
                    Some(Command::Close { reply }) => closing = Some(reply),
                    // Dropped without close: fail what is in flight and stop.
                    None => {
                        self.fail_all(|l| LedgerError::Closed { ledger: l });
                        return;
                    }
                },
                Some(result) = self.in_flight.next(), if !self.in_flight.is_empty() => self.on_result(result).await,
            }
        }
    }

    fn add(
        &mut self,
        payload: Vec<u8>,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<i64, LedgerError>>,
    ) {
        if let Some(why) = &self.broken {
            let _ = reply.send(Err(self.broken_error(why)));
            return;
        }
        let entry_id = self.next_entry;
        self.next_entry += 1;
        self.length += payload.len() as u64;
        let header = EntryHeader {
            ledger_id: self.ledger_id,
            entry_id,
            lac: self.lac,
            length: self.length,
        };
        let mut bytes = Vec::new();
        encode_entry(&mut bytes, &header, &payload);
        let request = Request::Add(AddRequest {
            flags: 0,
            master_key: self.master_key,
            ledger_id: self.ledger_id,
            entry_id,
            entry: bytes,
        });
        self.pending.push_back(Pending {
            entry_id,
            request: Arc::new(request),
            acked: Vec::new(),
            sent_to: Vec::new(),
            reply: Some(reply),
            _permit: permit,
            length: self.length,
        });
        let index = self.pending.len() - 1;
        self.send_missing(index);
    }

    /// Sends pending entry `index` to the members of its write set that neither have it nor were sent it.
    fn send_missing(&mut self, index: usize) {
        let entry_id = self.pending[index].entry_id;
        let write_set = self.metadata.write_set(entry_id);
        for bookie in write_set {
            let p = &mut self.pending[index];
            if p.acked.contains(&bookie)
                || p.sent_to.contains(&bookie)
                || self.failed_bookies.contains(&bookie)
            {
                continue;
            }
            p.sent_to.push(bookie.clone());
            let request = p.request.clone();
            let inner = self.inner.clone();
            self.in_flight.push(Box::pin(async move {
                let timeout = inner.options.add_timeout;
                let result = inner
                    .pool
                    .call(&bookie, &request, timeout)
                    .await
                    .map(|r| r.status);
                AddResult {
                    entry_id,
                    bookie,
                    result,
                }
            }));
        }
    }

    async fn on_result(&mut self, result: AddResult) {
        let Some(index) = self.pending_index(result.entry_id) else {
            return; // Acknowledged already, or failed.
        };
        let in_write_set = self.metadata.write_set(result.entry_id).contains(&result.bookie);
        match result.result {
            Ok(status) if status.is_ok() => {
                let p = &mut self.pending[index];
                p.sent_to.retain(|b| b != &result.bookie);
                if in_write_set && !p.acked.contains(&result.bookie) {
                    p.acked.push(result.bookie);
                }
                self.acknowledge_ready();
            }
            Ok(Status::EFENCED) => {
                log::info!(
                    "ledger {}: bookie {} says it is fenced; the writer stops",
                    self.ledger_id,
                    result.bookie
                );
                self.set_broken("fenced".into());
                self.fail_all(|l| LedgerError::Fenced { ledger: l });
            }
            other => {
                let reason = match other {
                    Ok(status) => format!("answered {status}"),
                    Err(e) => e.to_string(),
                };
                self.pending[index].sent_to.retain(|b| b != &result.bookie);
                if in_write_set {
                    self.bookie_failed(&result.bookie, &reason).await;
                }
            }
        }
    }

    fn pending_index(&self, entry_id: i64) -> Option<usize> {
        let first = self.pending.front()?.entry_id;
        let index = usize::try_from(entry_id - first).ok()?;
        (index < self.pending.len()).then_some(index)
    }

    /// Acknowledges, in order, every entry at the front that has its ack quorum.
    fn acknowledge_ready(&mut self) {
        let qa = self.metadata.ack_quorum;
        while self.pending.front().is_some_and(|p| p.acked.len() >= qa) {
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            self.lac = p.entry_id;
            self.acked_length = p.length;
            if let Some(reply) = p.reply.take() {
                let _ = reply.send(Ok(p.entry_id));
            }
        }
        self.lac_tx.send_replace(self.lac);
    }

    /// A bookie of the current ensemble failed an add: replace it, or go on without it, or give up.
    async fn bookie_failed(&mut self, bookie: &str, reason: &str) {
        if self.broken.is_some()
            || self.failed_bookies.contains(bookie)
            || !self.metadata.current_ensemble().iter().any(|b| b == bookie)
        {
            return; // A stale answer from a bookie replaced (or given up on) already.
        }
        log::warn!(
            "ledger {}: bookie {bookie} failed an add ({reason})",
            self.ledger_id
        );
        match self.change_ensemble(bookie).await {
            Ok(true) => {}
            Ok(false) => {
                // No bookie to spare: go on without it while every write set keeps an ack quorum.
                self.failed_bookies.insert(bookie.to_string());
                let qa = self.metadata.ack_quorum;
                let ensemble = self.metadata.current_ensemble();
                let live = ensemble
                    .iter()
                    .filter(|b| !self.failed_bookies.contains(*b))
                    .count();
                // Write sets are Qw consecutive members: the worst one loses min(failed, Qw) members.
                let worst =
                    self.metadata.write_quorum - self.failed_bookies.len().min(self.metadata.write_quorum);
                if worst < qa {
                    let why = format!(
                        "not enough bookies: {live} of the ensemble's {} answer and no writable bookie outside it \
                         can replace {bookie}",
                        ensemble.len()
                    );
                    log::error!("ledger {}: {why}; unacknowledged adds fail", self.ledger_id);
                    self.set_broken(why);
                    let err = self.broken.clone().unwrap_or_default();
                    self.fail_all(|l| LedgerError::Unrecoverable {
                        ledger: l,
                        reason: err.clone(),
                    });
                } else {
                    log::warn!(
                        "ledger {}: no writable bookie can replace {bookie}; going on with {live} bookies (ack quorum {qa})",
                        self.ledger_id
                    );
                }
            }
            Err(e) => {
                log::error!("ledger {}: ensemble change failed: {e}", self.ledger_id);
                let fenced = matches!(e, LedgerError::Fenced { .. });
                self.set_broken(e.to_string());
                if fenced {
                    self.fail_all(|l| LedgerError::Fenced { ledger: l });
                } else {
                    let why = e.to_string();
                    self.fail_all(|l| LedgerError::Unrecoverable {
                        ledger: l,
                        reason: why.clone(),
                    });
                }
            }
        }
    }

    /// Replaces `failed` with a writable bookie outside the ensemble in a new fragment from LAC + 1 and
    /// resends the unacknowledged entries. `Ok(false)` if no bookie can replace it.
    async fn change_ensemble(&mut self, failed: &str) -> Result<bool, LedgerError> {
        for _ in 0..METADATA_CAS_ATTEMPTS_MAX {
            let (writable, _) =
                crate::admin::list_bookies(&self.inner.coord.client(), &self.inner.layout).await?;
            let ensemble = self.metadata.current_ensemble().to_vec();
            let Some(replacement) = writable
                .iter()
                .find(|b| !ensemble.contains(b) && !self.failed_bookies.contains(*b))
                .cloned()
            else {
                return Ok(false);
            };
            // Only the bookie that just failed is replaced; others are replaced at their own failure.
            let bookies: Vec<String> = ensemble
                .iter()
                .map(|b| {
                    if b == failed {
                        replacement.clone()
                    } else {
                        b.clone()
                    }
                })
                .collect();
            let first_entry = self.lac + 1;
            let mut next = self.metadata.clone();
            match next.ensembles.last_mut() {
                // Nothing was written in the newest fragment yet: change it in place.
                Some(last) if last.first_entry == first_entry => last.bookies = bookies,
                _ => next.ensembles.push(Fragment { first_entry, bookies }),
            }
            match meta::cas_ledger(&self.inner, self.ledger_id, &next, self.version).await? {
                Cas::Written(version) => {
                    log::info!(
                        "ledger {}: ensemble change from entry {first_entry}: {failed} replaced by {replacement}",
                        self.ledger_id
                    );
                    self.metadata = next;
                    self.version = version;
                    self.failed_bookies.remove(failed);
                    self.inner
                        .ensemble_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for p in self.pending.iter_mut() {
                        // Acks count only from the new write set; entries in flight to others are moot.
                        let write_set = self.metadata.write_set(p.entry_id);
                        p.acked.retain(|b| write_set.contains(b));
                        p.sent_to.retain(|b| write_set.contains(b));
                    }
                    for index in 0..self.pending.len() {
                        self.send_missing(index);
                    }
                    self.acknowledge_ready();
                    return Ok(true);
                }
                Cas::Conflict(now, version) => {
                    if now.state != LedgerState::Open {
                        return Err(LedgerError::Fenced {
                            ledger: self.ledger_id,
                        });
                    }
                    self.metadata = now;
                    self.version = version;
                }
            }
        }
        Err(LedgerError::MetadataConflict {
            ledger: self.ledger_id,
            reason: format!("the ensemble change lost {METADATA_CAS_ATTEMPTS_MAX} compare-and-sets"),
        })
    }

    fn set_broken(&mut self, why: String) {
        *self
            .broken_shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.clone());
        self.broken = Some(why);
    }

    fn broken_error(&self, why: &str) -> LedgerError {
        broken_error(self.ledger_id, why)
    }

    fn fail_all(&mut self, error: impl Fn(u64) -> LedgerError) {
        for mut p in self.pending.drain(..) {
            if let Some(reply) = p.reply.take() {
                let _ = reply.send(Err(error(self.ledger_id)));
            }
        }
    }

    /// Writes state CLOSED with the LAC as the last entry, by compare-and-set.
    async fn close(&mut self) -> Result<LedgerMetadata, LedgerError> {
        if let Some(why) = self.broken.clone() {
            return Err(self.broken_error(&why));
        }
        let length = self.acked_length;
        for _ in 0..METADATA_CAS_ATTEMPTS_MAX {
            let mut next = self.metadata.clone();
            next.state = LedgerState::Closed;
            next.last_entry_id = self.lac;
            next.length = length;
            match meta::cas_ledger(&self.inner, self.ledger_id, &next, self.version).await? {
                Cas::Written(_) => {
                    log::info!("closed ledger {} at entry {}", self.ledger_id, self.lac);
                    return Ok(next);
                }
                Cas::Conflict(now, version) if now.state == LedgerState::Open => {
                    self.metadata = now;
                    self.version = version;
                }
                Cas::Conflict(now, _) if now.is_closed() && now.last_entry_id == self.lac => return Ok(now),
                Cas::Conflict(..) => {
                    return Err(LedgerError::Fenced {
                        ledger: self.ledger_id,
                    })
                }
            }
        }
        Err(LedgerError::MetadataConflict {
            ledger: self.ledger_id,
            reason: "close lost every compare-and-set".into(),
        })
    }
}

fn broken_error(ledger: u64, why: &str) -> LedgerError {
    if why == "fenced" {
        LedgerError::Fenced { ledger }
    } else {
        LedgerError::Unrecoverable {
            ledger,
            reason: why.to_string(),
        }
    }
}

/// An add of ledger recovery (accepted on a fenced ledger), of the entry exactly as it was read.
pub(crate) fn recovery_add(master_key: MasterKey, entry: Vec<u8>) -> Option<Request> {
    AddRequest::new(FLAG_RECOVERY_ADD, master_key, entry).map(Request::Add)
}
