//! The recovery invariant: for random interleavings of adds, updates, deletes and re-adds across several
//! indexes, while the dealer, sorter, optimizer and cleaner run (and recoveries are paused half-way across
//! them), replaying every page of an index gives exactly the state of applying that index's records in
//! arrival order.

use std::collections::BTreeMap;
use std::time::Duration;

use logtank_journal::{Journal, JournalOptions};
use logtank_storage::merge::{apply, Docs};
use logtank_storage::{Layout, Storage, StorageError, StorageOptions};
use logtank_thrift::binary::Limits;
use logtank_thrift::{codec, LogPageToken, LogRecord};
use proptest::prelude::*;

const INDEXES: [&str; 3] = ["alpha", "beta-2", "g.3"];

#[derive(Debug, Clone)]
enum Step {
    /// A batch of (index, record) appended to the raw log.
    Batch(Vec<(usize, LogRecord)>),
    Deal,
    Sort(usize),
    Optimize(usize),
    Clean,
    /// Reads `pages` more pages of a recovery of this index in progress (starting one if none).
    ReadSome {
        index: usize,
        pages: usize,
    },
}

fn record() -> impl Strategy<Value = LogRecord> {
    let map = || proptest::option::of(proptest::collection::btree_map("[a-c]", "[x-z]{0,3}", 0..3));
    (
        0u8..12,
        any::<bool>(),
        map(),
        proptest::option::of(proptest::collection::btree_map(0i32..4, -1.0f64..1.0, 0..3)),
        map(),
    )
        .prop_map(|(doc, deleted, fields, variables, categories)| LogRecord {
            docid: Some(format!("doc-{doc}")),
            timestamp_ms: Some(1),
            deleted,
            fields,
            variables,
            categories,
            ..LogRecord::default()
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec((0..INDEXES.len(), record()), 1..10).prop_map(Step::Batch),
        2 => Just(Step::Deal),
        1 => (0..INDEXES.len()).prop_map(Step::Sort),
        1 => (0..INDEXES.len()).prop_map(Step::Optimize),
        1 => Just(Step::Clean),
        2 => (0..INDEXES.len(), 1usize..4).prop_map(|(index, pages)| Step::ReadSome { index, pages }),
    ]
}

fn options() -> StorageOptions {
    StorageOptions {
        page_bytes: 200,
        sort_unsorted_segments_max: 2,
        sort_unsorted_bytes_max: 4 << 10,
        sort_memory_bytes: 512,
        optimize_unoptimized_segments_min: 1,
        optimize_inputs_max: 3,
        read_guard: Duration::ZERO,
        raw_history_retention: Duration::from_secs(3600),
        deleted_index_retention: Duration::ZERO,
        limits: Limits::default(),
    }
}

/// A recovery in progress: the engine's state and where it continues.
#[derive(Default)]
struct Recovery {
    docs: Docs,
    token: LogPageToken,
    done: bool,
}

/// Reads one page into `recovery`; a token-expired error restarts it from scratch (allowed, and counted).
fn read_one(storage: &Storage, code: &str, recovery: &mut Recovery, restarts: &mut usize) {
    match storage.read_page(code, &recovery.token) {
        Ok(page) => {
            let limits = Limits::default();
            let mut rest = &page.records[..];
            let mut count = 0;
            while !rest.is_empty() {
                let (record, used) = codec::decode_record(rest, &limits).expect("page record decodes");
                apply(&mut recovery.docs, &record);
                rest = &rest[used..];
                count += 1;
            }
            assert_eq!(count, page.record_count);
            match page.next {
                Some(next) => recovery.token = next,
                None => recovery.done = true,
            }
        }
        Err(StorageError::TokenExpired { .. }) => {
            *restarts += 1;
            *recovery = Recovery::default();
        }
        Err(StorageError::NoSuchIndex(_)) => recovery.done = true,
        Err(e) => panic!("read_page({code}) failed: {e}"),
    }
}

fn run(steps: Vec<Step>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), options()).expect("storage opens");
    let (journal, _) = Journal::open(
        &layout.raw_live(),
        JournalOptions {
            segment_size_bytes: 4096,
            record_bytes_max: 3000,
            ..JournalOptions::default()
        },
    )
    .expect("journal opens");
    let keep_going = || true;
    let mut model: BTreeMap<usize, Docs> = BTreeMap::new();
    let mut in_progress: BTreeMap<usize, Recovery> = BTreeMap::new();
    let mut restarts = 0;
    for step in steps {
        match step {
            Step::Batch(records) => {
                let mut payload = Vec::new();
                for (index, record) in &records {
                    let mut record = record.clone();
                    record.index_code = Some(INDEXES[*index].to_string());
                    codec::encode_record(&mut payload, &record);
                }
                if payload.len() > 3000 {
                    continue;
                }
                let seq = journal.append(&payload).expect("append");
                journal.wait_durable(seq).expect("durable");
                for (index, record) in &records {
                    apply(model.entry(*index).or_default(), record);
                }
            }
            Step::Deal => {
                storage.deal(&keep_going).expect("deal");
            }
            Step::Sort(i) => {
                if layout.index(INDEXES[i]).is_dir() {
                    storage.sort_index(INDEXES[i], true).expect("sort");
                }
            }
            Step::Optimize(i) => {
                storage.optimize_index(INDEXES[i]).expect("optimize");
            }
            Step::Clean => {
                storage.clean().expect("clean");
            }
            Step::ReadSome { index, pages } => {
                let recovery = in_progress.entry(index).or_default();
                if recovery.done {
                    // A finished recovery saw the log as it was then: start another one.
                    *recovery = Recovery::default();
                }
                for _ in 0..pages {
                    if recovery.done {
                        break;
                    }
                    read_one(&storage, INDEXES[index], recovery, &mut restarts);
                }
            }
        }
    }
    // Everything written is durable; let the pipeline run once more, then finish every recovery in
    // progress and start a fresh one of each index.
    storage.run_cycle(&keep_going).expect("cycle");
    for (index, code) in INDEXES.iter().enumerate() {
        let expected = model.get(&index).cloned().unwrap_or_default();
        // A recovery that finished earlier ended at the head as it was then; only unfinished ones go on.
        let unfinished = in_progress.remove(&index).filter(|r| !r.done).unwrap_or_default();
        let mut runs = vec![unfinished, Recovery::default()];
        for recovery in &mut runs {
            let mut pages = 0;
            while !recovery.done {
                read_one(&storage, code, recovery, &mut restarts);
                pages += 1;
                assert!(pages < 100_000, "recovery of {code} does not end");
            }
            assert_eq!(
                recovery.docs, expected,
                "index {code}: replayed state differs from the model"
            );
        }
    }
    journal.close().expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("LOGTANK_RECOVERY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16),
        ..ProptestConfig::default()
    })]

    #[test]
    fn replaying_all_pages_gives_the_model_state(steps in proptest::collection::vec(step(), 1..250)) {
        run(steps);
    }
}
