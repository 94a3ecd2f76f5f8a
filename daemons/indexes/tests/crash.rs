//! Proves the pipeline's durability under kill -9: many closed raw segments of random adds, updates and
//! deletes over several indexes, thresholds small enough that dealing, sorting and optimizing all happen,
//! `read_guard_ms = 0` so the cleaner removes superseded segments at once; the daemon is killed at random
//! moments while it works and restarted, more raw input arrives between cycles, and at the end every index
//! recovered through `read_page` equals applying the written records in order (`merge::apply`, the model).
//!
//! Cycles: `LOGTANK_INDEXES_CRASH_CYCLES` (default 3). Seed: `LOGTANK_INDEXES_CRASH_SEED` (default random;
//! printed, so a failure can be replayed).
//!
//! The same under power cuts (`LOGTANK_POWER_CUTS`, default 3; tests/run runs 30): the data root on
//! logtank-powerfs, cut before each kill (mostly right after one of the pipeline's writes: mid-deal,
//! mid-sort, mid-optimize, mid-clean), so every output the pipeline adopts must have been made durable
//! before the input it replaces was let go.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use logtank_powerfs::{CutMode, PowerFs};
use logtank_storage::merge::{apply, Docs};
use logtank_thrift::LogRecord;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const INDEXES: usize = 5;
const DOCIDS: usize = 25;
/// Batches of raw input written before each cycle.
const BATCHES_PER_CYCLE: usize = 200;

fn random_map(rng: &mut StdRng, prefix: &str) -> BTreeMap<String, String> {
    (0..rng.random_range(1..4))
        .map(|_| {
            (
                format!("{prefix}{}", rng.random_range(0..4)),
                format!("v{}", rng.random_range(0..1000)),
            )
        })
        .collect()
}

fn random_record(rng: &mut StdRng) -> LogRecord {
    let code = format!("i{}", rng.random_range(0..INDEXES));
    let docid = format!("d{}", rng.random_range(0..DOCIDS));
    let mut record = LogRecord {
        index_code: Some(code),
        docid: Some(docid),
        timestamp_ms: Some(1_700_000_000_000 + rng.random_range(0..1_000_000)),
        ..LogRecord::default()
    };
    let variables = |rng: &mut StdRng| -> BTreeMap<i32, f64> {
        (0..rng.random_range(1..3))
            .map(|_| {
                (
                    rng.random_range(0..3),
                    f64::from(rng.random_range(0..100u32)) / 4.0,
                )
            })
            .collect()
    };
    match rng.random_range(0..100) {
        // An add: the whole document, sometimes with boosts and categories.
        0..50 => {
            let mut fields = random_map(rng, "f");
            fields.insert("timestamp".into(), "1700000000".into());
            fields.insert("text".into(), "w".repeat(rng.random_range(10..120)));
            record.fields = Some(fields);
            if rng.random_bool(0.4) {
                record.variables = Some(variables(rng));
            }
            if rng.random_bool(0.3) {
                record.categories = Some(random_map(rng, "c"));
            }
        }
        // An update of boosts or categories only.
        50..70 => {
            if rng.random_bool(0.5) {
                record.variables = Some(variables(rng));
            } else {
                record.categories = Some(random_map(rng, "c"));
            }
        }
        // A bare delete.
        70..85 => record.deleted = true,
        // Delete, then add again.
        85..95 => {
            record.deleted = true;
            record.fields = Some(random_map(rng, "f"));
        }
        // A record that carries nothing.
        _ => {}
    }
    record
}

#[test]
fn kill_9_while_dealing_sorting_and_optimizing_loses_nothing() {
    run(false);
}

#[test]
fn power_cuts_while_dealing_sorting_and_optimizing_lose_nothing() {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    run(true);
}

/// fsyncs every file and directory under `root`: what the test itself wrote is durable before a cut.
fn sync_tree(root: &std::path::Path) {
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sync_tree(&path);
        } else {
            std::fs::File::open(&path).unwrap().sync_all().unwrap();
        }
    }
    std::fs::File::open(root).unwrap().sync_all().unwrap();
}

fn run(power_cuts: bool) {
    let env = if power_cuts {
        "LOGTANK_POWER_CUTS"
    } else {
        "LOGTANK_INDEXES_CRASH_CYCLES"
    };
    let cycles: u32 = std::env::var(env).ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::var("LOGTANK_INDEXES_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("crash test: {cycles} cycles, seed {seed} (LOGTANK_INDEXES_CRASH_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut powerfs = power_cuts.then(|| PowerFs::mount_under(dir.path()).unwrap());
    let data = powerfs
        .as_ref()
        .map_or(dir.path().to_path_buf(), |fs| fs.path().to_path_buf());
    let root = data.as_path();
    make_master(root);
    let mut written: BTreeMap<String, Vec<LogRecord>> = BTreeMap::new();
    let mut write = |rng: &mut StdRng| {
        let batches: Vec<Vec<LogRecord>> = (0..BATCHES_PER_CYCLE)
            .map(|_| (0..rng.random_range(1..6)).map(|_| random_record(rng)).collect())
            .collect();
        for record in batches.iter().flatten() {
            let code = record.index_code.clone().unwrap();
            written.entry(code).or_default().push(record.clone());
        }
        write_raw(root, &batches);
    };

    write(&mut rng);
    if power_cuts {
        sync_tree(root);
    }
    let config = "[pipeline]\nidle_ms = 20\npage_bytes = 8192\nsort_unsorted_segments_max = 2\n\
                  sort_unsorted_bytes_max = 16384\nsort_memory_bytes = 4096\n\
                  optimize_unoptimized_segments_min = 1\noptimize_inputs_max = 3\nread_guard_ms = 0\n";
    // Under power cuts each run of the daemon is cut after a random number of its writes once it serves:
    // dealing, sorting, optimizing or cleaning (a cut at a random time mostly finds it idle).
    let arm = |fs: &Option<PowerFs>, rng: &mut StdRng, cycle: u32| {
        if let Some(fs) = fs {
            fs.cut_after_writes(rng.random_range(1..250), CutMode::alternating(cycle.into()));
        }
    };
    let mut daemon = Daemon::start_on(dir.path(), root, "indexes", config, &[]);
    arm(&powerfs, &mut rng, 0);
    let (mut forgotten, mut entries_undone) = (0, 0);
    let layout = daemon.layout();
    let mut killed_with_work_pending = 0;
    for cycle in 0..cycles {
        // Some kills land while raw segments are being dealt or sorted, some once dealing caught up (the
        // sorter, optimizer and cleaner at work), some after a whole pass (a restart on a quiet state).
        let phase = if powerfs.is_some() {
            10
        } else {
            rng.random_range(0..10)
        };
        match phase {
            // Power cuts: armed at the start.
            10 => {}
            0..4 => std::thread::sleep(Duration::from_millis(rng.random_range(10..300))),
            4..7 => {
                eventually("dealing to catch up", || {
                    journal_files(&layout.raw_live()).len() == 1
                });
                std::thread::sleep(Duration::from_millis(rng.random_range(0..100)));
            }
            _ => daemon.wait_idle_after(0),
        }
        let pending = journal_files(&layout.raw_live()).len() > 1;
        // The power goes first: the armed cut, or one now if the daemon wrote less than it was armed for.
        if let Some(fs) = &powerfs {
            let mode = CutMode::alternating(cycle.into());
            let report = fs
                .wait_armed_cut(Duration::from_secs(1))
                .unwrap_or_else(|| fs.cut_as(mode));
            forgotten += report.bytes_forgotten;
            entries_undone += report.entries_undone;
        }
        daemon.kill9();
        if let Some(fs) = powerfs.take() {
            powerfs = Some(fs.remount().unwrap());
        }
        if pending {
            killed_with_work_pending += 1;
        }
        eprintln!(
            "cycle {cycle}: killed ({}), {} raw segments live, {} in history",
            if pending {
                "undealt raw segments left"
            } else {
                "dealing done"
            },
            journal_files(&layout.raw_live()).len(),
            journal_files(&layout.raw_history()).len()
        );
        // The writer goes on meanwhile: more closed raw segments.
        write(&mut rng);
        daemon.start_again();
        // Armed once it serves (a cut while it starts would only fail its start), not after the last cycle.
        if cycle + 1 < cycles {
            arm(&powerfs, &mut rng, cycle + 1);
        }
    }

    // Let it finish: everything but the writer's newest segment dealt, then a cycle with nothing to do.
    eventually_or(
        "every closed raw segment dealt",
        || journal_files(&layout.raw_live()).len() == 1,
        || tail(&daemon.log(), 40),
    );
    let cycles_done = daemon.cycles();
    daemon.wait_idle_after(cycles_done);
    let log = daemon.log();
    assert!(!log.contains("panic"), "{log}");
    eprintln!(
        "{killed_with_work_pending} of {cycles} {} came while raw segments were undealt \
         ({forgotten} unsynced bytes and {entries_undone} unsynced directory entries forgotten)",
        if power_cuts { "power cuts" } else { "kills" }
    );

    let mut reader = daemon.reader_client();
    let mut manager = daemon.manager_client();
    let existing = manager.list_existing_indexes().unwrap();
    assert_eq!(existing, written.keys().cloned().collect::<Vec<_>>());
    let check = |reader: &mut logtank_thrift::Client, what: &str| {
        for (code, records) in &written {
            let mut expected = Docs::new();
            for record in records {
                apply(&mut expected, record);
            }
            let (pages, _) = read_all(reader, code).unwrap();
            let mut recovered = Docs::new();
            for record in &pages {
                apply(&mut recovered, record);
            }
            assert_eq!(recovered, expected, "index {code}, {what} (seed {seed})");
        }
    };
    check(&mut reader, "as the crashes left it");

    // Optimize every index once more, so the recovery also goes through a fresh snapshot.
    let cycles_done = daemon.cycles();
    for code in written.keys() {
        manager.enqueue_for_optimization(code, 0, 1.0).unwrap();
    }
    daemon.wait_idle_after(cycles_done + 1);
    let mut optimized = 0;
    for code in written.keys() {
        let info = manager.get_index_log_info(code).unwrap();
        assert_eq!(info.optimized_segments.len(), 1, "{code}: {info:?}");
        optimized += info.optimized_record_count;
    }
    check(&mut reader, "after a final optimization");
    let log = daemon.log();
    eprintln!(
        "{} sorts and {} optimizations in all; {optimized} documents in the final snapshots",
        log.matches("sorter: index").count(),
        log.matches("optimizer: index").count()
    );
    assert!(log.contains("dealer: dealt raw segment"), "the dealer ran");
    assert!(log.contains("sorter: index"), "the sorter ran");
    daemon.stop();
}
