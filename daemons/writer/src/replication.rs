//! Bookies mode (`[replication] mode = "bookies"`, `docs/replication.md`): every record of the raw log is
//! also an entry of a ledger on the bookies, in the same order, and a batch is acknowledged only once both
//! the local journal (as `writer.ack` says) and `ack_quorum` bookies have it. The writer plays DistributedLog's
//! write proxy: many clients' batches, one log, one ordered stream of entries.
//!
//! The log is a chain of ledgers (`logtank_ledger::logs`, `/logtank/logs/<writer_id>`): entry `k` of a ledger
//! is record `first_seq + k`; a new ledger starts with each raw segment, and after every recovery.
//!
//! Invariants:
//! - records go to the journal and to the ledger under one lock, so the ledger's order is the journal's;
//! - before the writer accepts a batch (at start, after a quorum loss) the log is **in step**: the last ledger
//!   recovered (fenced, closed) and the two sides made equal: records the ledgers lack are sent from the local
//!   journal, records the local journal lacks (the ledgers had them acknowledged with `ack = "write"`) are
//!   appended to it from the ledgers. Both are prefixes of one sequence, so the longer one's extra records are
//!   a suffix, and no acknowledged batch is lost either way;
//! - every change of the log's metadata is a compare-and-set: a conflict means another process took the log
//!   over (or a recovery fenced this writer's ledger): the writer stops accepting batches (fenced).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use logtank_coord::Coord;
use logtank_journal::{Journal, Location};
use logtank_ledger::logs::{self, LogCas, LogLedger, LogMetadata};
use logtank_ledger::{ClientOptions, Layout, LedgerClient, LedgerError, LedgerWriter, PendingAdd};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::config::{QuorumLoss, ReplicationSection};

/// Records sent from the local journal (or copied from the ledgers) per batch while getting in step.
const CATCH_UP_IN_FLIGHT_MAX: usize = 1000;
/// How often a writer out of step (bookies unavailable) tries again.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(2);

/// What `/status` and the status line say about replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationState {
    /// Getting in step (recovering the last ledger, catching up).
    Syncing,
    /// Every acknowledged batch is in the ledgers too.
    InStep { ledger: u64 },
    /// Fewer than `ack_quorum` bookies take entries; the reason.
    QuorumLost(String),
    /// Another process took this writer's log over; nothing more is accepted.
    Fenced(String),
}

impl std::fmt::Display for ReplicationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicationState::Syncing => write!(f, "syncing"),
            ReplicationState::InStep { ledger } => write!(f, "in step (ledger {ledger})"),
            ReplicationState::QuorumLost(why) => write!(f, "quorum lost: {why}"),
            ReplicationState::Fenced(why) => write!(f, "fenced: {why}"),
        }
    }
}

/// The replication metrics (`logtank_writer_replication_…`).
#[derive(Debug, Clone)]
pub struct ReplicationMetrics {
    /// From a record's append to its entry's acknowledgement by the ack quorum.
    pub latency_seconds: Histogram,
    pub entries_in_flight: Gauge,
    pub entries: Counter,
    pub ensemble_changes: Counter,
    pub quorum_losses: Counter,
    /// Batches acknowledged on the local journal alone (`on_quorum_loss = "local"`).
    pub local_only_batches: Counter,
    pub ledgers_created: Counter,
    pub ledgers_deleted: Counter,
}

impl Default for ReplicationMetrics {
    fn default() -> Self {
        ReplicationMetrics {
            latency_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            entries_in_flight: Gauge::default(),
            entries: Counter::default(),
            ensemble_changes: Counter::default(),
            quorum_losses: Counter::default(),
            local_only_batches: Counter::default(),
            ledgers_created: Counter::default(),
            ledgers_deleted: Counter::default(),
        }
    }
}

impl ReplicationMetrics {
    pub fn register(&self, metrics: &logtank_runtime::Metrics) {
        metrics.with_registry(|r| {
            let r = r.sub_registry_with_prefix("writer_replication");
            r.register(
                "latency_seconds",
                "Append to acknowledgement by the ack quorum",
                self.latency_seconds.clone(),
            );
            r.register(
                "entries_in_flight",
                "Entries sent to bookies and not yet acknowledged",
                self.entries_in_flight.clone(),
            );
            r.register(
                "entries",
                "Entries acknowledged by the ack quorum",
                self.entries.clone(),
            );
            r.register(
                "ensemble_changes",
                "Bookies replaced in the log's ledgers",
                self.ensemble_changes.clone(),
            );
            r.register(
                "quorum_losses",
                "Times fewer than ack_quorum bookies took entries",
                self.quorum_losses.clone(),
            );
            r.register(
                "local_only_batches",
                "Batches acknowledged on the local journal alone (on_quorum_loss = local)",
                self.local_only_batches.clone(),
            );
            r.register(
                "ledgers_created",
                "Ledgers started for the log",
                self.ledgers_created.clone(),
            );
            r.register(
                "ledgers_deleted",
                "Ledgers deleted by retention",
                self.ledgers_deleted.clone(),
            );
        });
    }
}

/// Why a batch could not be replicated.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("the log {path} was taken over by another writer process with the same writer id ({reason}); this writer accepts nothing more")]
    Fenced { path: String, reason: String },
    #[error("replication to the bookies failed ({0}); the batch was not acknowledged: send it again")]
    QuorumLost(String),
    #[error("{0}")]
    Local(String),
    /// The local raw log and the log's ledgers are not one log: the operator must decide (restore, or
    /// another writer id); the writer does not start.
    #[error("the local raw log and the ledgers of {path} are not one log: {why}")]
    Diverged { path: String, why: String },
}

/// The ledger being written.
struct Current {
    writer: LedgerWriter,
    ledger_id: u64,
    segment: u64,
    /// The record the next entry is.
    next_seq: u64,
}

struct Inner {
    log: LogMetadata,
    version: i32,
    current: Option<Current>,
    /// The writer is in step: every record up to the journal's last is in the ledgers (or sent there).
    in_step: bool,
    /// The log has been in step once since the start. Until then nothing is accepted, in either
    /// `on_quorum_loss` mode: the ledgers may hold records the journal lacks, which a local-only record would
    /// contradict.
    synced_once: bool,
}

/// The writer's replication; see the module documentation.
pub struct Replicator {
    client: LedgerClient,
    journal: Arc<Journal>,
    settings: ReplicationSection,
    writer_id: String,
    inner: tokio::sync::Mutex<Inner>,
    state: Mutex<ReplicationState>,
    pub metrics: ReplicationMetrics,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("writer_id", &self.writer_id)
            .finish_non_exhaustive()
    }
}

/// A batch appended to the journal and, in step, to the ledger.
#[derive(Debug)]
pub struct Appended {
    pub location: Location,
    /// The entry's acknowledgement; `None` when the batch went to the local journal alone.
    pub replicated: Option<PendingAdd>,
    started: Instant,
}

impl Replicator {
    /// Connects the ledger client and gets the log in step with the local journal (recovering its last
    /// ledger), before the writer accepts a batch.
    pub async fn start(
        coord: Coord,
        journal: Arc<Journal>,
        settings: ReplicationSection,
        writer_id: String,
    ) -> Result<Replicator, ReplicationError> {
        let layout =
            Layout::new(&settings.ledgers_root).map_err(|e| ReplicationError::Local(e.to_string()))?;
        let options = ClientOptions {
            add_timeout: Duration::from_millis(settings.add_timeout_ms),
            ..ClientOptions::default()
        };
        let client = LedgerClient::new(coord, layout, options);
        let replicator = Replicator {
            client,
            journal,
            settings,
            writer_id: writer_id.clone(),
            inner: tokio::sync::Mutex::new(Inner {
                // Read (or created) by the first sync.
                log: LogMetadata::new(&writer_id),
                version: -1,
                current: None,
                in_step: false,
                synced_once: false,
            }),
            state: Mutex::new(ReplicationState::Syncing),
            metrics: ReplicationMetrics::default(),
        };
        let mut inner = replicator.inner.lock().await;
        match replicator.get_in_step(&mut inner).await {
            Ok(()) => {}
            Err(e @ (ReplicationError::Fenced { .. } | ReplicationError::Diverged { .. })) => return Err(e),
            // Bookies or coordination unavailable: the writer starts and refuses batches until the resync
            // task (or the next batch) gets the log in step.
            Err(e) => log::warn!("replication not in step at start: {e}; batches are refused until it is"),
        }
        drop(inner);
        Ok(replicator)
    }

    pub fn state(&self) -> ReplicationState {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_state(&self, state: ReplicationState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    pub fn writer_id(&self) -> &str {
        &self.writer_id
    }

    pub fn entry_bytes_max(&self) -> u32 {
        self.settings.entry_bytes_max
    }

    /// Appends a batch's payload to the journal and, in step, to the ledger, in one order. Blocking journal
    /// work runs on this thread (`append` stages bytes; it waits only when the disk is far behind).
    pub async fn append(&self, payload: &[u8]) -> Result<Appended, ReplicationError> {
        let mut inner = self.inner.lock().await;
        if let ReplicationState::Fenced(why) = self.state() {
            return Err(ReplicationError::Fenced {
                path: logs::log_path(&self.writer_id),
                reason: why,
            });
        }
        if !inner.in_step {
            // After a quorum loss: try to get in step now (bounded by the client's timeouts).
            if let Err(e) = self.get_in_step(&mut inner).await {
                let local = self.settings.on_quorum_loss == QuorumLoss::Local && inner.synced_once;
                if !local || matches!(e, ReplicationError::Fenced { .. }) {
                    return Err(e);
                }
            }
        }
        let mut locations = Vec::with_capacity(1);
        let journal = self.journal.clone();
        let appended = block_in_place(|| journal.append_many_located(&[payload], &mut locations));
        appended.map_err(|e| ReplicationError::Local(format!("appending to the journal: {e}")))?;
        let location = locations[0];
        let started = Instant::now();
        if !inner.in_step {
            // on_quorum_loss = "local": the journal alone; sent to the ledgers once they are back.
            self.metrics.local_only_batches.inc();
            return Ok(Appended {
                location,
                replicated: None,
                started,
            });
        }
        match self.send(&mut inner, location, payload.to_vec()).await {
            Ok(pending) => Ok(Appended {
                location,
                replicated: Some(pending),
                started,
            }),
            Err(e) => {
                self.lost(&mut inner, &e);
                match self.settings.on_quorum_loss {
                    QuorumLoss::Local if !matches!(e, ReplicationError::Fenced { .. }) => {
                        self.metrics.local_only_batches.inc();
                        Ok(Appended {
                            location,
                            replicated: None,
                            started,
                        })
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Waits for a batch's entry (when it was sent) to be acknowledged by the ack quorum.
    pub async fn acknowledged(&self, appended: Appended) -> Result<(), ReplicationError> {
        let Some(pending) = appended.replicated else {
            return Ok(());
        };
        self.metrics.entries_in_flight.inc();
        let result = pending.wait().await;
        self.metrics.entries_in_flight.dec();
        match result {
            Ok(_) => {
                self.metrics.entries.inc();
                let changes = self.client.ensemble_changes();
                let seen = self.metrics.ensemble_changes.get();
                if changes > seen {
                    self.metrics.ensemble_changes.inc_by(changes - seen);
                }
                self.metrics
                    .latency_seconds
                    .observe(appended.started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                let e = classify(&self.writer_id, e);
                let mut inner = self.inner.lock().await;
                self.lost(&mut inner, &e);
                drop(inner);
                match (self.settings.on_quorum_loss, &e) {
                    (QuorumLoss::Local, ReplicationError::QuorumLost(_)) => {
                        self.metrics.local_only_batches.inc();
                        log::warn!(
                            "batch at record {} acknowledged on the local journal alone: {e}",
                            appended.location.seq
                        );
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// The writer is out of step (the ledger failed): forget the ledger; the next append (or the resync
    /// task) recovers it and catches up.
    fn lost(&self, inner: &mut Inner, e: &ReplicationError) {
        match e {
            ReplicationError::Fenced { reason, .. } => {
                if !matches!(self.state(), ReplicationState::Fenced(_)) {
                    log::error!("{e}");
                }
                self.set_state(ReplicationState::Fenced(reason.clone()));
            }
            _ => {
                if inner.in_step {
                    log::error!("replication out of step: {e}");
                    self.metrics.quorum_losses.inc();
                }
                self.set_state(ReplicationState::QuorumLost(e.to_string()));
            }
        }
        inner.in_step = false;
        inner.current = None;
    }

    /// Sends one record (at `location`) to the current ledger, starting a new one for a new segment.
    async fn send(
        &self,
        inner: &mut Inner,
        location: Location,
        payload: Vec<u8>,
    ) -> Result<PendingAdd, ReplicationError> {
        let roll = match &inner.current {
            Some(c) => c.segment != location.segment,
            None => true,
        };
        if roll {
            self.roll(inner, location.segment, location.seq).await?;
        }
        let Some(current) = inner.current.as_mut() else {
            unreachable!("rolled above")
        };
        // The ledger's order is the journal's (both under this lock).
        assert_eq!(
            current.next_seq, location.seq,
            "ledger {} out of step with the journal",
            current.ledger_id
        );
        current.next_seq += 1;
        current
            .writer
            .append(payload)
            .await
            .map_err(|e| classify(&self.writer_id, e))
    }

    /// Closes the current ledger (its adds acknowledged) and starts one for `segment` from record `first_seq`,
    /// both in one compare-and-set of the log.
    async fn roll(&self, inner: &mut Inner, segment: u64, first_seq: u64) -> Result<(), ReplicationError> {
        let mut next = inner.log.clone();
        if let Some(current) = inner.current.take() {
            let last_seq = current.next_seq - 1;
            current
                .writer
                .close()
                .await
                .map_err(|e| classify(&self.writer_id, e))?;
            if let Some(open) = next.ledgers.last_mut() {
                open.last_seq = Some(last_seq);
            }
        }
        if next.open_ledger().is_some() {
            return Err(ReplicationError::Local(
                "the log has an open ledger this writer does not hold".into(),
            ));
        }
        let custom = [
            ("writer".to_string(), self.writer_id.clone()),
            ("segment".to_string(), segment.to_string()),
        ]
        .into_iter()
        .collect();
        let writer = self
            .client
            .create(
                self.settings.ensemble_size,
                self.settings.write_quorum,
                self.settings.ack_quorum,
                self.settings.password.as_bytes(),
                custom,
            )
            .await
            .map_err(|e| classify(&self.writer_id, e))?;
        self.metrics.ledgers_created.inc();
        let ledger_id = writer.id();
        next.ledgers.push(LogLedger {
            ledger_id,
            segment,
            first_seq,
            last_seq: None,
        });
        self.cas(inner, next).await?;
        inner.current = Some(Current {
            writer,
            ledger_id,
            segment,
            next_seq: first_seq,
        });
        self.set_state(ReplicationState::InStep { ledger: ledger_id });
        Ok(())
    }

    async fn cas(&self, inner: &mut Inner, next: LogMetadata) -> Result<(), ReplicationError> {
        let client = self.client_coord();
        match logs::write_log(&client, &next, Some(inner.version)).await {
            Ok(LogCas::Written(v)) => {
                inner.log = next;
                inner.version = v;
                Ok(())
            }
            Ok(LogCas::Conflict) => Err(ReplicationError::Fenced {
                path: logs::log_path(&self.writer_id),
                reason: "its metadata changed under this writer".into(),
            }),
            Err(e) => Err(ReplicationError::QuorumLost(e.to_string())),
        }
    }

    fn client_coord(&self) -> logtank_coord::zookeeper_client::Client {
        self.client.coord().client()
    }

    /// Gets the log in step with the local journal (see the module documentation). Until the first time
    /// it succeeds the local journal may be behind the ledgers (their extra records are copied); later it
    /// never is.
    async fn get_in_step(&self, inner: &mut Inner) -> Result<(), ReplicationError> {
        self.set_state(ReplicationState::Syncing);
        inner.current = None;
        let at_start = !inner.synced_once;
        let result = self.sync(inner, at_start).await;
        match &result {
            Ok(()) => {
                inner.in_step = true;
                inner.synced_once = true;
                if let Some(c) = &inner.current {
                    self.set_state(ReplicationState::InStep { ledger: c.ledger_id });
                } else {
                    self.set_state(ReplicationState::InStep {
                        ledger: inner.log.ledgers.last().map_or(0, |l| l.ledger_id),
                    });
                }
                log::info!(
                    "replication of {} in step: records up to {} in the ledgers",
                    logs::log_path(&self.writer_id),
                    self.journal.last_appended()
                );
            }
            Err(e) => self.lost(inner, e),
        }
        result
    }

    async fn sync(&self, inner: &mut Inner, at_start: bool) -> Result<(), ReplicationError> {
        // 1. Re-read the log (another process may have changed it) and recover its open ledger.
        let client = self.client_coord();
        let found = logs::read_log(&client, &self.writer_id)
            .await
            .map_err(|e| ReplicationError::QuorumLost(e.to_string()))?;
        let (log, version) = match found {
            Some(found) => found,
            None if at_start => {
                let log = LogMetadata::new(&self.writer_id);
                match logs::write_log(&client, &log, None).await {
                    Ok(LogCas::Written(v)) => (log, v),
                    Ok(LogCas::Conflict) => {
                        return Err(ReplicationError::Fenced {
                            path: logs::log_path(&self.writer_id),
                            reason: "created by another process meanwhile".into(),
                        })
                    }
                    Err(e) => return Err(ReplicationError::QuorumLost(e.to_string())),
                }
            }
            None => {
                return Err(ReplicationError::Fenced {
                    path: logs::log_path(&self.writer_id),
                    reason: "its metadata was deleted".into(),
                })
            }
        };
        if version != inner.version && !at_start {
            return Err(ReplicationError::Fenced {
                path: logs::log_path(&self.writer_id),
                reason: "its metadata changed under this writer".into(),
            });
        }
        inner.log = log;
        inner.version = version;
        if let Some(open) = inner.log.open_ledger().cloned() {
            let reader = self
                .client
                .open(open.ledger_id, self.settings.password.as_bytes(), true)
                .await
                .map_err(|e| classify(&self.writer_id, e))?;
            let last_entry = reader.metadata().last_entry_id;
            let last_seq = (open.first_seq as i64 + last_entry) as u64;
            let mut next = inner.log.clone();
            if let Some(l) = next.ledgers.last_mut() {
                l.last_seq = Some(last_seq);
            }
            self.cas(inner, next).await?;
        }
        let local_last = self.journal.last_appended();
        let replicated_to = match inner.log.last_closed_seq() {
            Some(seq) => seq,
            // A new log starts with the next record.
            None => local_last,
        };
        if at_start {
            self.check_one_log(inner, local_last, replicated_to).await?;
        }
        // 2. The ledgers ahead of the journal (ack = "write" acknowledged records the journal lost, or
        //    records the bookies had before the local fsync): copy them in, at start only.
        if replicated_to > local_last {
            if !at_start {
                return Err(ReplicationError::Local(format!(
                    "the ledgers hold records up to {replicated_to}, the journal up to {local_last}"
                )));
            }
            self.copy_from_ledgers(inner, local_last + 1, replicated_to)
                .await?;
        }
        // 3. The journal ahead of the ledgers: send its extra records.
        if replicated_to < local_last {
            self.send_from_journal(inner, replicated_to + 1, local_last)
                .await?;
        }
        Ok(())
    }

    /// At start: the journal and the ledgers must be prefixes of one sequence. The journal must reach the
    /// ledgers' first record (a replacement host with an empty raw log must be restored first), and the last
    /// record both hold must be the same bytes (another host's raw log under this writer id is refused).
    async fn check_one_log(
        &self,
        inner: &Inner,
        local_last: u64,
        replicated_to: u64,
    ) -> Result<(), ReplicationError> {
        let Some(first) = inner.log.ledgers.first().map(|l| l.first_seq) else {
            return Ok(());
        };
        let path = logs::log_path(&self.writer_id);
        if replicated_to >= first && local_last + 1 < first {
            return Err(ReplicationError::Diverged {
                path,
                why: format!(
                    "its ledgers hold records {first}..={replicated_to} and this raw log ends at record {local_last}; \
                     restore it from the ledgers first (stop the writer, move storage/raw/live aside, \
                     `logtank raw restore --writer {} --data-root DIR`) or give this writer another replication.writer_id",
                    self.writer_id
                ),
            });
        }
        let both = local_last.min(replicated_to);
        if both < first || both == 0 {
            return Ok(());
        }
        let Some(ledger) = inner
            .log
            .ledgers
            .iter()
            .find(|l| l.first_seq <= both && l.last_seq.is_some_and(|last| both <= last))
        else {
            return Ok(());
        };
        // Dealt and moved to raw history: nothing local to compare with.
        if self.journal.segments().first().is_none_or(|s| s.first_seq > both) {
            return Ok(());
        }
        let journal = self.journal.clone();
        let local = block_in_place(|| -> Result<Option<Vec<u8>>, logtank_journal::Error> {
            let mut reader = journal.read_from(both)?;
            match reader.next() {
                Some(record) => {
                    let record = record?;
                    Ok((record.seq == both).then_some(record.payload))
                }
                None => Ok(None),
            }
        });
        let local = match local {
            Ok(local) => local,
            // The journal's list of segments is its own: the indexes daemon's dealer may have moved this
            // closed segment to raw history since (another process, on a restored host at once). Then
            // there is nothing local to compare with, as above.
            Err(logtank_journal::Error::Io { path, source })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                log::info!(
                    "record {both} is no longer in the live raw log ({} was moved, dealt); not compared with the ledgers",
                    path.display()
                );
                None
            }
            Err(e) => {
                return Err(ReplicationError::Local(format!(
                    "reading record {both} of the journal: {e}"
                )))
            }
        };
        let Some(local) = local else { return Ok(()) };
        let reader = self
            .client
            .open(ledger.ledger_id, self.settings.password.as_bytes(), false)
            .await
            .map_err(|e| classify(&self.writer_id, e))?;
        let entry = (both - ledger.first_seq) as i64;
        let replicated = reader
            .read_range(entry, entry)
            .await
            .map_err(|e| classify(&self.writer_id, e))?;
        if replicated.first().map(|(_, p)| p.as_slice()) != Some(local.as_slice()) {
            return Err(ReplicationError::Diverged {
                path,
                why: format!(
                    "record {both} differs between this raw log and ledger {}; is this raw log another host's? \
                     Give this writer its own replication.writer_id, or restore this host's raw log from the ledgers",
                    ledger.ledger_id
                ),
            });
        }
        Ok(())
    }

    /// Appends records `from..=to` from the ledgers to the local journal (in order, with their sequence
    /// numbers), waiting until they are durable.
    async fn copy_from_ledgers(&self, inner: &mut Inner, from: u64, to: u64) -> Result<(), ReplicationError> {
        log::warn!(
            "the journal lacks records {from}..={to} that the ledgers of {} hold: copying them from the ledgers",
            logs::log_path(&self.writer_id)
        );
        let mut next = from;
        for l in inner.log.ledgers.clone() {
            let Some(last) = l.last_seq else { continue };
            if last < next || l.first_seq > to {
                continue;
            }
            let reader = self
                .client
                .open(l.ledger_id, self.settings.password.as_bytes(), false)
                .await
                .map_err(|e| classify(&self.writer_id, e))?;
            let first_entry = (next - l.first_seq) as i64;
            let last_entry = (last.min(to) - l.first_seq) as i64;
            let mut entry = first_entry;
            while entry <= last_entry {
                let upto = (entry + CATCH_UP_IN_FLIGHT_MAX as i64 - 1).min(last_entry);
                let records = reader
                    .read_range(entry, upto)
                    .await
                    .map_err(|e| classify(&self.writer_id, e))?;
                let payloads: Vec<Vec<u8>> = records.into_iter().map(|(_, p)| p).collect();
                let journal = self.journal.clone();
                let (first, last_appended) = block_in_place(|| journal.append_many(&payloads))
                    .map_err(|e| ReplicationError::Local(format!("appending to the journal: {e}")))?;
                assert_eq!(
                    first, next,
                    "records copied from the ledgers keep their sequence numbers"
                );
                next = last_appended + 1;
                entry = upto + 1;
            }
        }
        if next <= to {
            return Err(ReplicationError::Local(format!(
                "the ledgers of {} lack records {next}..={to} their metadata says they hold",
                logs::log_path(&self.writer_id)
            )));
        }
        let journal = self.journal.clone();
        journal
            .durable(to)
            .await
            .map_err(|e| ReplicationError::Local(format!("the journal: {e}")))
    }

    /// Sends records `from..=to` of the local journal to new ledgers, waiting for their acknowledgement.
    async fn send_from_journal(&self, inner: &mut Inner, from: u64, to: u64) -> Result<(), ReplicationError> {
        log::info!(
            "sending records {from}..={to} of the local journal to the ledgers of {}",
            logs::log_path(&self.writer_id)
        );
        let journal = self.journal.clone();
        let mut reader = block_in_place(|| journal.read_from(from))
            .map_err(|e| ReplicationError::Local(format!("reading the journal from {from}: {e}")))?;
        let mut pending = std::collections::VecDeque::new();
        loop {
            let journal_reader = &mut reader;
            let Some(record) = block_in_place(|| journal_reader.next()) else {
                break;
            };
            let record = record.map_err(|e| ReplicationError::Local(format!("reading the journal: {e}")))?;
            if record.seq > to {
                break;
            }
            let location = record.location();
            pending.push_back(self.send(inner, location, record.payload).await?);
            while pending.len() >= CATCH_UP_IN_FLIGHT_MAX {
                if let Some(p) = pending.pop_front() {
                    p.wait().await.map_err(|e| classify(&self.writer_id, e))?;
                }
            }
            if record.seq == to {
                break;
            }
        }
        for p in pending {
            p.wait().await.map_err(|e| classify(&self.writer_id, e))?;
        }
        Ok(())
    }

    /// Tries to get back in step every [`RESYNC_INTERVAL`] while out of step, until `shutdown`.
    pub async fn resync_forever(self: Arc<Self>, shutdown: logtank_runtime::Shutdown) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RESYNC_INTERVAL) => {}
                _ = shutdown.wait() => return,
            }
            if matches!(self.state(), ReplicationState::QuorumLost(_)) {
                let mut inner = self.inner.lock().await;
                if !inner.in_step {
                    if let Err(e) = self.get_in_step(&mut inner).await {
                        log::debug!("replication still out of step: {e}");
                    }
                }
            }
        }
    }

    /// Retention: deletes the ledgers all of whose records are older than the oldest raw segment still on
    /// this host (the indexes daemon's cleaner deleted them past raw-history retention, after dealing).
    pub async fn delete_ledgers_before(&self, oldest_local_seq: u64) -> Result<usize, ReplicationError> {
        let mut inner = self.inner.lock().await;
        let doomed: Vec<LogLedger> = inner
            .log
            .ledgers
            .iter()
            .take_while(|l| l.last_seq.is_some_and(|last| last < oldest_local_seq))
            .cloned()
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut next = inner.log.clone();
        next.ledgers.drain(..doomed.len());
        self.cas(&mut inner, next).await?;
        drop(inner);
        for l in &doomed {
            match self.client.delete(l.ledger_id).await {
                Ok(()) | Err(LedgerError::NoSuchLedger { .. }) => {
                    self.metrics.ledgers_deleted.inc();
                }
                Err(e) => log::warn!("retention: deleting ledger {}: {e}", l.ledger_id),
            }
        }
        log::info!(
            "retention: deleted {} ledgers of {} (records before {oldest_local_seq})",
            doomed.len(),
            logs::log_path(&self.writer_id)
        );
        Ok(doomed.len())
    }

    /// Closes the current ledger at a clean stop (its adds have been acknowledged).
    pub async fn close(&self) {
        let mut inner = self.inner.lock().await;
        if let Some(current) = inner.current.take() {
            let last_seq = current.next_seq - 1;
            match current.writer.close().await {
                Ok(_) => {
                    let mut next = inner.log.clone();
                    if let Some(open) = next.ledgers.last_mut() {
                        open.last_seq = Some(last_seq);
                    }
                    if let Err(e) = self.cas(&mut inner, next).await {
                        log::warn!("closing the log's ledger at stop: {e} (the next start recovers it)");
                    }
                }
                Err(e) => log::warn!(
                    "closing ledger {} at stop: {e} (the next start recovers it)",
                    current.ledger_id
                ),
            }
        }
    }
}

/// A ledger error as replication sees it: fenced (another process took over) or a lost quorum.
fn classify(writer_id: &str, e: LedgerError) -> ReplicationError {
    match e {
        LedgerError::Fenced { ledger } => ReplicationError::Fenced {
            path: logs::log_path(writer_id),
            reason: format!("ledger {ledger} was fenced by a recovery"),
        },
        other => ReplicationError::QuorumLost(other.to_string()),
    }
}

fn block_in_place<T>(f: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
