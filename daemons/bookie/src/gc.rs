//! Garbage collection: every `gc.interval_ms` (or on `POST /gc`), the ledgers this bookie holds are compared
//! with the metadata (a ledger is forgotten only if its metadata node is gone when asked directly, so a
//! ledger created after the listing is never taken for a deleted one), then segments left mostly dead are
//! compacted on the compactor thread (IO class best-effort 7, throttled to `gc.compaction_rate_bytes_per_sec`).
//!
//! BookKeeper's users' top complaints about space not coming back (reference §6.3) shaped this: the pass runs
//! at start and on a timer, a full disk does not stop it (compaction is what frees space; it writes only the
//! live records it copies), and every pass says what it did in the log and at `POST /gc`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logtank_coord::Coord;
use logtank_ledger::{admin, Layout};
use logtank_runtime::ioprio::{self, IoClass, IoPriority};
use logtank_runtime::Shutdown;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::BookieMetrics;
use crate::store::{LedgerStore, Throttle};

/// Compaction yields the disk to adds and reads (DESIGN §5: the dealer-like work runs at best-effort 7).
const COMPACTION_IO: IoPriority = IoPriority {
    class: IoClass::BestEffort,
    level: 7,
};
/// Passes asked for (`POST /gc`) beyond the one running.
const TRIGGER_QUEUE_MAX: usize = 4;

/// What one pass did; the body of `POST /gc`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub ledgers_deleted: Vec<u64>,
    pub segments_compacted: u64,
    pub bytes_copied: u64,
    pub bytes_freed: u64,
    /// Why the metadata comparison was skipped (coordination unavailable), if it was.
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct GcSettings {
    pub interval: Duration,
    pub live_fraction_max: f64,
    pub rate_bytes_per_sec: u64,
}

/// Asks the GC task for a pass now and waits for its report.
#[derive(Debug, Clone)]
pub struct GcHandle {
    trigger: mpsc::Sender<oneshot::Sender<GcReport>>,
}

impl GcHandle {
    pub async fn run_now(&self) -> Option<GcReport> {
        let (tx, rx) = oneshot::channel();
        self.trigger.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// Starts the GC task; it ends at shutdown (a compaction in progress stops between batches).
pub fn start(
    coord: Coord,
    layout: Layout,
    store: Arc<LedgerStore>,
    metrics: BookieMetrics,
    settings: Arc<std::sync::RwLock<GcSettings>>,
    shutdown: Shutdown,
) -> (GcHandle, tokio::task::JoinHandle<()>) {
    let (trigger, mut triggers) = mpsc::channel::<oneshot::Sender<GcReport>>(TRIGGER_QUEUE_MAX);
    let task = tokio::spawn(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let mut first = true;
        loop {
            let interval = settings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .interval;
            let reply = if first {
                first = false;
                None
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => None,
                    t = triggers.recv() => t,
                    _ = shutdown.wait() => break,
                }
            };
            let s = *settings.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let pass = pass(&coord, &layout, &store, &metrics, s, stop.clone());
            let report = tokio::select! {
                r = pass => r,
                _ = shutdown.wait() => {
                    stop.store(true, Ordering::Release);
                    break;
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(report);
            }
        }
    });
    (GcHandle { trigger }, task)
}

async fn pass(
    coord: &Coord,
    layout: &Layout,
    store: &Arc<LedgerStore>,
    metrics: &BookieMetrics,
    settings: GcSettings,
    stop: Arc<AtomicBool>,
) -> GcReport {
    let mut report = GcReport::default();
    match deleted_ledgers(coord, layout, store).await {
        Ok(deleted) => {
            for id in deleted {
                if store.delete_ledger(id) {
                    log::info!("gc: ledger {id} was deleted from the metadata; its entries are garbage now");
                    metrics.ledgers_garbage_collected.inc();
                    report.ledgers_deleted.push(id);
                }
            }
        }
        Err(e) => {
            log::warn!("gc: cannot compare ledgers with the metadata: {e}; compaction only");
            report.skipped = Some(e.to_string());
        }
    }
    let store = store.clone();
    let compacted = tokio::task::spawn_blocking(move || {
        // A blocking-pool thread: compaction's IO class for this job only, the thread's own afterwards (the
        // pool also serves reads, which must not run at level 7).
        let before = ioprio::get_current_thread().ok();
        if let Err(e) = ioprio::set_current_thread(COMPACTION_IO) {
            log::debug!("gc: cannot set the compaction IO class: {e}");
        }
        let mut throttle = Throttle::new(settings.rate_bytes_per_sec);
        let mut outcomes = Vec::new();
        for (segment, _usage) in store.compaction_candidates(settings.live_fraction_max) {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let stop_flag = stop.clone();
            match store.compact_segment(segment, &mut throttle, &move || stop_flag.load(Ordering::Acquire)) {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    log::error!("gc: compacting segment {segment}: {e}");
                    break;
                }
            }
        }
        if let Some(before) = before {
            let _ = ioprio::set_current_thread(before);
        }
        outcomes
    })
    .await
    .unwrap_or_default();
    for outcome in compacted.iter().filter(|o| o.removed) {
        log::info!(
            "gc: compacted segment {}: {} live records ({} bytes) copied, {} bytes freed",
            outcome.segment,
            outcome.records_copied,
            outcome.bytes_copied,
            outcome.bytes_freed
        );
        metrics.compactions.inc();
        metrics.compacted_bytes.inc_by(outcome.bytes_copied);
        report.segments_compacted += 1;
        report.bytes_copied += outcome.bytes_copied;
        report.bytes_freed += outcome.bytes_freed;
    }
    report
}

/// Ledgers held here whose metadata is gone.
async fn deleted_ledgers(
    coord: &Coord,
    layout: &Layout,
    store: &LedgerStore,
) -> Result<Vec<u64>, logtank_ledger::LedgerError> {
    let client = coord.client();
    let listed: std::collections::HashSet<u64> =
        admin::list_ledgers(&client, layout).await?.into_iter().collect();
    let mut deleted = Vec::new();
    for id in store.ledger_ids() {
        if listed.contains(&id) {
            continue;
        }
        // Created after the listing, or really gone: ask for this one node.
        if !admin::ledger_exists(&client, layout, id).await? {
            deleted.push(id);
        }
    }
    Ok(deleted)
}
