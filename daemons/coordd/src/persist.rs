//! Where coordd keeps its state and how it comes back: `<data_root>/coordd/log/` is the transaction log
//! (the journal library: checksummed frames, group commit), `<data_root>/coordd/snapshots/` the
//! snapshots. Recovery loads the newest snapshot that verifies and replays the log records after it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use logtank_journal::{Journal, JournalOptions};

use crate::config::CoorddConfig;
use crate::snapshot;
use crate::state::{Caller, State};
use crate::txn::{Txn, TxnBody};

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// Snapshots live beside the log directory.
pub fn snapshot_dir(log_dir: &Path) -> PathBuf {
    log_dir.parent().unwrap_or(log_dir).join("snapshots")
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    pub journal: Arc<Journal>,
    pub state: State,
    pub snapshot_zxid: i64,
    pub replayed: u64,
    pub elapsed: Duration,
}

pub fn recover(
    config: &CoorddConfig,
    thread_init: Option<Arc<dyn Fn() + Send + Sync>>,
) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let data_dir = config.server.data_dir();
    let log = log_dir(&data_dir);
    let snaps = snapshot_dir(&log);
    for dir in [&data_dir, &log, &snaps] {
        // Durably: a log or snapshot directory whose entry a power cut forgets takes the log with it.
        logtank_durable::create_dir_all_durably(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let ttl = config.limits.ttl_nodes_enabled;
    let mut state = State::new(ttl);
    let mut covered_seq = 0u64;
    let mut snapshot_zxid = 0;
    snapshot::remove_leftovers(&snaps)?;
    for file in snapshot::list(&snaps)? {
        let load_started = Instant::now();
        match snapshot::load(&file.path, ttl) {
            Ok(loaded) => {
                state = loaded.state;
                covered_seq = loaded.journal_seq;
                snapshot_zxid = file.zxid;
                log::info!(
                    "loaded snapshot {} ({} znodes, {} sessions) in {:.1} ms",
                    file.path.display(),
                    state.tree.node_count(),
                    state.sessions.len(),
                    load_started.elapsed().as_secs_f64() * 1e3
                );
                break;
            }
            Err(e) => log::error!("{e}; trying an older snapshot"),
        }
    }
    let options = JournalOptions {
        segment_size_bytes: config.persistence.log_segment_size_bytes,
        fsync_interval: Duration::from_millis(100),
        // Validated with the config.
        io_backend: config.persistence.log_io.parse().unwrap_or_default(),
        record_bytes_max: crate::config::txn_bytes_max(config.limits.frame_bytes_max),
        thread_init,
        ..JournalOptions::default()
    };
    let (journal, report) =
        Journal::open(&log, options).with_context(|| format!("opening {}", log.display()))?;
    if let Some(torn) = &report.torn_tail {
        log::warn!("transaction log had a torn tail, truncated: {torn:?}");
    }
    let first = journal.segments().first().map(|s| s.first_seq);
    if let Some(first) = first {
        if first > covered_seq + 1 && report.next_seq > first {
            anyhow::bail!(
                "transaction log starts at record {first} but the newest usable snapshot covers only up to {covered_seq}: \
                 records are missing; refusing to start with a partial state"
            );
        }
    }
    let mut replayed = 0u64;
    if report.next_seq > covered_seq + 1 {
        for record in journal.read_from(covered_seq + 1)? {
            let record = record?;
            let txn = Txn::decode(&record.payload)
                .with_context(|| format!("transaction log record {} does not decode", record.seq))?;
            replay(&mut state, &txn);
            replayed += 1;
        }
    }
    let elapsed = started.elapsed();
    log::info!(
        "recovered zxid 0x{:x}: {} znodes, {} sessions, {replayed} transactions replayed in {:.1} ms",
        state.last_zxid,
        state.tree.node_count(),
        state.sessions.len(),
        elapsed.as_secs_f64() * 1e3
    );
    Ok(Recovered {
        journal: Arc::new(journal),
        state,
        snapshot_zxid,
        replayed,
        elapsed,
    })
}

/// Applies one logged transaction. It was valid when logged, so failing now means the log and the code
/// disagree: that is reported, never silently skipped.
pub fn replay(state: &mut State, txn: &Txn) {
    match &txn.body {
        TxnBody::Request(req) => {
            let out = state.apply_write(
                req,
                txn.zxid,
                txn.time_ms,
                Caller {
                    session: txn.session,
                    auth: None,
                },
            );
            if out.err != 0 {
                log::error!(
                    "replaying zxid 0x{:x} gave error {} (it succeeded when logged)",
                    txn.zxid,
                    out.err
                );
            }
        }
        TxnBody::CreateSession(meta) => state.open_session(txn.session, *meta, txn.zxid),
        TxnBody::CloseSession => {
            state.close_session(txn.session, txn.zxid);
        }
        TxnBody::Error(_) => state.last_zxid = state.last_zxid.max(txn.zxid),
    }
}
