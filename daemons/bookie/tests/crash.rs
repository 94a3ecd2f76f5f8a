//! `kill -9` of a bookie under load, over and over (`LOGTANK_BOOKIE_CRASH_CYCLES`, default 5; tests/run runs
//! 30): after each restart every entry it acknowledged in that cycle, and at every tenth cycle and the last
//! every entry of every cycle so far, is served by it byte for byte, and nothing it serves fails its digest. Cycles alternate the journal's IO path (io_uring, pwrite).
//! The same under power cuts (`LOGTANK_POWER_CUTS`, default 5; tests/run runs 30): the bookie's journal and
//! ledger directories on logtank-powerfs, which forgets at the cut every write and directory entry no fsync
//! covered (every other cut tearing the last file's unsynced end), just before the kill.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{default_server, payload, Cluster, Raw};
use logtank_bookie_proto::{parse_entry, ReadRequest, Request, Status};
use logtank_powerfs::{CutMode, PowerFs};
use rand::Rng;

fn cycles(power_cuts: bool) -> usize {
    let env = if power_cuts {
        "LOGTANK_POWER_CUTS"
    } else {
        "LOGTANK_BOOKIE_CRASH_CYCLES"
    };
    std::env::var(env).ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

#[test]
fn every_acknowledged_entry_survives_kill9() {
    run(false);
}

#[test]
fn every_acknowledged_entry_survives_power_cuts() {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    run(true);
}

fn run(power_cuts: bool) {
    let pdir = tempfile::tempdir().unwrap();
    let mut powerfs = power_cuts.then(|| PowerFs::mount_under(pdir.path()).unwrap());
    let mut cluster = match &powerfs {
        Some(fs) => {
            let (journal, ledgers) = (fs.path().join("journal"), fs.path().join("ledgers"));
            let keys = format!(
                "journal_dir = \"{}\"\nledgers_dir = \"{}\"\n",
                journal.display(),
                ledgers.display()
            );
            let mut cluster = Cluster::start_with(&default_server(), 0, "/ledgers", &keys, "");
            cluster.add_bookie_with_dirs(&journal, &ledgers);
            cluster
        }
        None => Cluster::start(&default_server(), 1),
    };
    let cycles = cycles(power_cuts);
    let mut forgotten = 0;
    let mut rng = rand::rng();
    // ledger → every entry acknowledged in its cycle.
    let mut acked: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    let config = cluster.bookies[0].config.clone();
    let original = std::fs::read_to_string(&config).unwrap();
    for cycle in 0..cycles {
        let backend = if cycle % 2 == 0 { "io_uring" } else { "pwrite" };
        std::fs::write(&config, format!("{original}io_backend = \"{backend}\"\n")).unwrap();
        let kill_after = Duration::from_millis(rng.random_range(50..400));
        let (id, load, mut acks) = cluster.block_on(async {
            let writer = cluster
                .client
                .create(1, 1, 1, b"pw", Default::default())
                .await
                .unwrap();
            let id = writer.id();
            let (tx, acks) = tokio::sync::mpsc::channel(100_000);
            let load = tokio::spawn(async move {
                for i in 0.. {
                    let Ok(pending) = writer.append(payload(id, i)).await else {
                        break;
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Ok(e) = pending.wait().await {
                            let _ = tx.send(e).await;
                        }
                    });
                }
            });
            tokio::time::sleep(kill_after).await;
            (id, load, acks)
        });
        // The power goes first: nothing the bookie does after it reaches a disk.
        if let Some(fs) = &powerfs {
            // Both modes on both IO paths (which alternate every cycle).
            let mode = CutMode::alternating((cycle / 2) as u64);
            // Right after a write, so the cut always finds something written and not yet synced.
            forgotten += fs
                .cut_after_writes_or_now(rng.random_range(1..50), mode)
                .bytes_forgotten;
        }
        cluster.bookies[0].process.kill9();
        if let Some(fs) = powerfs.take() {
            powerfs = Some(fs.remount().unwrap());
        }
        let entries = cluster.block_on(async {
            // The writer fails once the bookie is gone; every acknowledgement sent before is collected (the
            // channel closes when the load and its waiters have ended).
            let mut entries = Vec::new();
            let collect = async {
                while let Some(e) = acks.recv().await {
                    entries.push(e);
                }
            };
            tokio::time::timeout(Duration::from_secs(60), collect)
                .await
                .expect("the writer gives up within its timeouts once the bookie is gone");
            let _ = load.await;
            entries
        });
        eprintln!(
            "cycle {cycle} ({backend}): ledger {id}, {} entries acknowledged before {} at {kill_after:?}",
            entries.len(),
            if power_cuts { "the power cut" } else { "kill -9" }
        );
        acked.insert(id, entries);
        let started = Instant::now();
        cluster.bookies[0].process.start_again();
        eprintln!("  restarted in {:?}", started.elapsed());
        // This cycle's entries after every restart; every cycle's so far each tenth cycle and at the end (the
        // reads of everything each time would grow with the square of the cycles).
        if cycle % 10 == 9 || cycle + 1 == cycles {
            verify(&cluster, &acked);
        } else {
            verify(
                &cluster,
                &acked.range(id..=id).map(|(k, v)| (*k, v.clone())).collect(),
            );
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(total > 0, "no entry was ever acknowledged: the load did not run");
    let what = if power_cuts {
        "power cuts"
    } else {
        "kill -9 cycles"
    };
    eprintln!(
        "{total} acknowledged entries checked over {cycles} {what} ({forgotten} unsynced bytes forgotten)"
    );
}

/// Every acknowledged entry of every cycle is served, byte for byte, with a valid digest. Reads are
/// pipelined in batches (responses may come back in any order: matched by entry id).
fn verify(cluster: &Cluster, acked: &BTreeMap<u64, Vec<i64>>) {
    const BATCH: usize = 500;
    let mut raw = Raw::connect(cluster.bookies[0].addr());
    for (&ledger, entries) in acked {
        for batch in entries.chunks(BATCH) {
            for &e in batch {
                raw.send(&Request::Read(ReadRequest::plain(ledger, e)));
            }
            for _ in batch {
                let r = raw.recv().expect("a response");
                let e = r.entry_id;
                assert_eq!(
                    r.status,
                    Status::EOK,
                    "acknowledged entry {ledger}:{e} lost after a crash"
                );
                let view =
                    parse_entry(&r.body).unwrap_or_else(|err| panic!("{ledger}:{e} served corrupt: {err}"));
                assert_eq!((view.header.ledger_id, view.header.entry_id), (ledger, e));
                assert_eq!(view.payload, payload(ledger, e as usize), "{ledger}:{e} content");
            }
        }
    }
}
