//! Proves the writer's durability promise with kill -9 under load (`ack = "fsync"`): after a restart every
//! acknowledged batch is in the raw log, and every batch in the raw log is whole (all its records, in
//! order). Cycles: `LOGTANK_WRITER_CRASH_CYCLES` (default 5; tests/run runs more). The same under power
//! cuts: the data root on logtank-powerfs, which forgets at the cut everything no fsync covered, before the
//! kill; `LOGTANK_POWER_CUTS` (default 5; tests/run runs 30).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use logtank_powerfs::{CutMode, PowerFs};
use logtank_thrift::LogBatch;
use rand::Rng;

/// Client threads sending at once, so acknowledgements share fsyncs and batches interleave.
const CLIENTS: usize = 4;
/// The most records in one batch of this test.
const RECORDS_PER_BATCH_MAX: usize = 40;

/// `c<cycle>-t<thread>-b<n>` identifies a batch; its records are `<batch>-r<i>`.
fn batch_key(cycle: u32, thread: usize, n: u32) -> String {
    format!("c{cycle}-t{thread}-b{n}")
}

fn make_batch(key: &str, records: usize) -> LogBatch {
    LogBatch {
        records: (0..records)
            .map(|i| record("crash", &format!("{key}-r{i}")))
            .collect(),
    }
}

#[test]
fn acknowledged_batches_survive_kill_9() {
    run(false);
}

#[test]
fn acknowledged_batches_survive_power_cuts() {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    run(true);
}

fn run(power_cuts: bool) {
    let (env, default) = if power_cuts {
        ("LOGTANK_POWER_CUTS", 5)
    } else {
        ("LOGTANK_WRITER_CRASH_CYCLES", 5)
    };
    let cycles: u32 = std::env::var(env)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so the cycles cross segment rolls as well as restarts.
    let extra = "[writer]\nsegment_size_bytes = 1048576\nbatch_bytes_max = 262144\n";
    let mut rng = rand::rng();
    // Every batch sent (key → record count) and every batch acknowledged, over all cycles.
    let sent: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut powerfs = power_cuts.then(|| PowerFs::mount_under(dir.path()).unwrap());
    let mut w = match &powerfs {
        Some(fs) => Writer::start_on(dir.path(), fs.path(), extra, &[]),
        None => Writer::start(dir.path(), extra, &[]),
    };
    let mut forgotten = 0;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let (addr, sent, acked, stop) = (w.addr, sent.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut rng = rand::rng();
                    let mut c = client(addr);
                    for n in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let key = batch_key(cycle, t, n);
                        let records = rng.random_range(1..=RECORDS_PER_BATCH_MAX);
                        sent.lock().unwrap().insert(key.clone(), records);
                        match c.send_batch(&make_batch(&key, records)) {
                            Ok(()) => {
                                acked.lock().unwrap().insert(key);
                            }
                            // Killed: this batch and the connection are in an unknown state.
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        // A power cut first (every other one tearing the last file's unsynced end), then the process dies.
        if let Some(fs) = &powerfs {
            let mode = CutMode::alternating(cycle.into());
            // Half the cuts right after a write (something certainly unsynced), half at the random moment.
            let report = if cycle % 4 < 2 {
                fs.cut_after_writes_or_now(rng.random_range(1..20), mode)
            } else {
                fs.cut_as(mode)
            };
            forgotten += report.bytes_forgotten;
        }
        w.kill9();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        // The writer recovers the raw log (cutting a torn tail) at start; stopped again, it is read back.
        if let Some(fs) = powerfs.take() {
            powerfs = Some(fs.remount().unwrap());
        }
        w = w.start_again();
        w.stop();
        check(
            w.data_root(),
            cycle,
            &sent.lock().unwrap(),
            &acked.lock().unwrap(),
        );
        w = w.restart();
    }
    w.stop();
    let acked = acked.lock().unwrap().len();
    assert!(
        acked >= 100,
        "too few batches acknowledged to prove anything: {acked}"
    );
    let what = if power_cuts {
        "power cuts"
    } else {
        "kill -9 cycles"
    };
    eprintln!(
        "{acked} acknowledged batches checked over {cycles} {what} ({forgotten} unsynced bytes forgotten)"
    );
}

/// Every acknowledged batch is present once; every present batch is one that was sent, whole and in order.
fn check(root: &std::path::Path, cycle: u32, sent: &BTreeMap<String, usize>, acked: &BTreeSet<String>) {
    let mut present = BTreeSet::new();
    for records in read_raw_log(root) {
        let first = records[0].docid.clone().unwrap();
        let key = first.rsplit_once("-r").unwrap().0.to_string();
        let expected = *sent
            .get(&key)
            .unwrap_or_else(|| panic!("cycle {cycle}: batch {key} in the log was never sent"));
        let docids: Vec<String> = records.iter().map(|r| r.docid.clone().unwrap()).collect();
        let whole: Vec<String> = (0..expected).map(|i| format!("{key}-r{i}")).collect();
        assert_eq!(docids, whole, "cycle {cycle}: batch {key} is not whole");
        assert!(
            records
                .iter()
                .all(|r| r.timestamp_ms.is_some() && r.index_code.as_deref() == Some("crash")),
            "cycle {cycle}: batch {key} lost its timestamp or index_code"
        );
        assert!(present.insert(key.clone()), "cycle {cycle}: batch {key} twice");
    }
    let lost: Vec<&String> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "cycle {cycle}: {} acknowledged batches lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
}
