//! Faults the data layer must survive or report: corrupt raw segments are never dealt or served, a gap in
//! the raw log stops the dealer, the writer's journal reopens after the dealer moved its old segments away,
//! and a deal interrupted before its progress was recorded is redone to the same files.

use std::fs;
use std::path::Path;

use logtank_journal::{Journal, JournalOptions};
use logtank_storage::{Layout, Storage, StorageError, StorageOptions};
use logtank_thrift::{codec, LogPageToken, LogRecord};

fn journal_options() -> JournalOptions {
    JournalOptions {
        segment_size_bytes: 4096,
        record_bytes_max: 2048,
        new_segment_on_open: true,
        ..JournalOptions::default()
    }
}

/// Appends `batches` batches of 3 records of index `code` and closes the journal (several segments).
fn write_raw(layout: &Layout, code: &str, batches: usize) {
    let (journal, _) = Journal::open(&layout.raw_live(), journal_options()).expect("journal");
    for b in 0..batches {
        let mut payload = Vec::new();
        for r in 0..3 {
            let record = LogRecord {
                index_code: Some(code.into()),
                docid: Some(format!("doc-{b}-{r}")),
                timestamp_ms: Some(1),
                fields: Some([("text".to_string(), "x".repeat(200))].into()),
                ..LogRecord::default()
            };
            codec::encode_record(&mut payload, &record);
        }
        journal.append(&payload).expect("append");
    }
    journal.close().expect("close");
}

fn raw_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".journal"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_all(storage: &Storage, code: &str) -> Result<usize, StorageError> {
    let mut token = LogPageToken::default();
    let mut records = 0;
    loop {
        let page = storage.read_page(code, &token)?;
        records += page.record_count;
        match page.next {
            Some(next) => token = next,
            None => return Ok(records),
        }
    }
}

fn read_docids(storage: &Storage, code: &str) -> std::collections::BTreeSet<String> {
    let mut token = LogPageToken::default();
    let mut docids = std::collections::BTreeSet::new();
    loop {
        let page = storage.read_page(code, &token).expect("read_page");
        let mut rest = &page.records[..];
        while !rest.is_empty() {
            let (record, used) =
                codec::decode_record(rest, &logtank_thrift::binary::Limits::default()).expect("decode");
            docids.extend(record.docid);
            rest = &rest[used..];
        }
        match page.next {
            Some(next) => token = next,
            None => return docids,
        }
    }
}

#[test]
fn a_corrupt_closed_raw_segment_is_neither_dealt_nor_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), StorageOptions::default()).expect("open");
    write_raw(&layout, "idx", 20);
    let live = raw_files(&layout.raw_live());
    assert!(live.len() >= 3, "several segments: {live:?}");
    // Flip a byte inside the first record of the first segment.
    let first = layout.raw_live().join(&live[0]);
    let mut bytes = fs::read(&first).expect("read");
    bytes[100] ^= 0x55;
    fs::write(&first, bytes).expect("write");

    let err = storage
        .deal(&|| true)
        .expect_err("the dealer refuses a corrupt segment");
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&live[0]), "names the file: {err}");
    assert_eq!(raw_files(&layout.raw_live()), live, "nothing archived");
    let err = read_all(&storage, "idx").expect_err("reads do not serve it");
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

#[test]
fn a_gap_in_the_raw_log_stops_the_dealer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), StorageOptions::default()).expect("open");
    write_raw(&layout, "idx", 10);
    assert!(storage.deal(&|| true).expect("deal") >= 1);
    write_raw(&layout, "idx", 20);
    let live = raw_files(&layout.raw_live());
    assert!(live.len() >= 3, "{live:?}");
    // Lose the oldest undealt segment.
    fs::remove_file(layout.raw_live().join(&live[0])).expect("remove");
    let err = storage.deal(&|| true).expect_err("a gap is an error");
    assert!(matches!(err, StorageError::Gap { .. }), "{err}");
}

#[test]
fn the_journal_reopens_after_the_dealer_archived_its_old_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), StorageOptions::default()).expect("open");
    write_raw(&layout, "idx", 20);
    let dealt = storage.deal(&|| true).expect("deal");
    assert!(dealt >= 2, "dealt {dealt}");
    // The writer restarts: its journal now starts at a later segment, and sequence numbers go on.
    write_raw(&layout, "idx", 5);
    assert!(storage.deal(&|| true).expect("deal again") >= 1);
    assert_eq!(read_all(&storage, "idx").expect("read"), 25 * 3);
}

#[test]
fn a_deal_redone_after_a_crash_writes_the_same_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), StorageOptions::default()).expect("open");
    write_raw(&layout, "idx", 20);
    storage.deal(&|| true).expect("deal");
    let segments_dir = layout.segments("idx");
    let mut before: Vec<_> = fs::read_dir(&segments_dir)
        .expect("segments")
        .map(|e| e.expect("entry").file_name())
        .collect();
    before.sort();
    // Crash before the progress was recorded: the raw segments are back in live, the info is gone.
    for name in raw_files(&layout.raw_history()) {
        fs::rename(layout.raw_history().join(&name), layout.raw_live().join(&name)).expect("move back");
    }
    fs::remove_file(layout.dealer_info()).expect("remove info");
    storage.deal(&|| true).expect("deal again");
    let mut after: Vec<_> = fs::read_dir(&segments_dir)
        .expect("segments")
        .map(|e| e.expect("entry").file_name())
        .collect();
    after.sort();
    assert_eq!(before, after, "the same unsorted segments, no duplicates");
    assert_eq!(read_all(&storage, "idx").expect("read"), 20 * 3);
}

#[test]
fn a_missing_index_is_an_error_and_bad_codes_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), StorageOptions::default()).expect("open");
    write_raw(&layout, "idx", 2);
    let err = read_all(&storage, "other").expect_err("missing index");
    assert!(matches!(err, StorageError::NoSuchIndex(_)), "{err}");
    assert_eq!(read_all(&storage, "idx").expect("undealt raw counts"), 6);
    for bad in ["../x", "", "a/b", ".hidden", &"x".repeat(129)] {
        let err = read_all(&storage, bad).expect_err("bad code");
        assert!(matches!(err, StorageError::InvalidIndexCode(_)), "{bad:?}: {err}");
    }
    let garbage = LogPageToken {
        page_type: Some(logtank_thrift::PageType::Live),
        timestamp: Some(1),
        file_position: Some(41),
        ..LogPageToken::default()
    };
    let err = storage.read_page("idx", &garbage).expect_err("bad position");
    assert!(matches!(err, StorageError::InvalidToken { .. }), "{err}");
}

/// `read_page` of an index with no directory remembers what it scanned of the undealt raw log (each such
/// call used to scan all of it: unbounded work for a client sending made-up index codes). The memory must
/// not go stale: an index that arrives later, in the same segment or a new one, is found, and so is one
/// that is dealt meanwhile.
#[test]
fn indexes_that_arrive_after_a_miss_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), StorageOptions::default()).expect("open");
    let options = JournalOptions {
        segment_size_bytes: 1 << 20,
        ..journal_options()
    };
    let (journal, _) = Journal::open(&layout.raw_live(), options).expect("journal");
    let append = |code: &str| {
        let mut payload = Vec::new();
        let record = LogRecord {
            index_code: Some(code.into()),
            docid: Some("d".into()),
            timestamp_ms: Some(1),
            ..LogRecord::default()
        };
        codec::encode_record(&mut payload, &record);
        let seq = journal.append(&payload).expect("append");
        journal.wait_durable(seq).expect("durable");
    };
    append("first");
    for _ in 0..3 {
        let err = read_all(&storage, "later").expect_err("not there yet");
        assert!(matches!(err, StorageError::NoSuchIndex(_)), "{err}");
    }
    // The same segment, grown since the scans.
    append("later");
    assert_eq!(
        read_all(&storage, "later").expect("found in the grown segment"),
        1
    );
    journal.close().expect("close");
    write_raw(&layout, "newest", 1);
    assert_eq!(read_all(&storage, "newest").expect("found in a new segment"), 3);
    storage.deal(&|| true).expect("deal");
    assert_eq!(read_all(&storage, "later").expect("dealt"), 1);
    assert!(matches!(
        read_all(&storage, "never").expect_err("never written"),
        StorageError::NoSuchIndex(_)
    ));
}

/// A raw segment naming more indexes than the dealer writes at once (256: a file and a buffer each) is
/// dealt in passes, and every index gets all of its records.
#[test]
fn a_segment_naming_many_indexes_is_dealt_in_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), StorageOptions::default()).expect("open");
    let options = JournalOptions {
        segment_size_bytes: 4 << 20,
        record_bytes_max: 1 << 20,
        ..journal_options()
    };
    let codes: Vec<String> = (0..600).map(|i| format!("index-{i}")).collect();
    {
        let (journal, _) = Journal::open(&layout.raw_live(), options.clone()).expect("journal");
        for round in 0..2 {
            for chunk in codes.chunks(100) {
                let mut payload = Vec::new();
                for code in chunk {
                    let record = LogRecord {
                        index_code: Some(code.clone()),
                        docid: Some(format!("doc-{round}")),
                        timestamp_ms: Some(1),
                        ..LogRecord::default()
                    };
                    codec::encode_record(&mut payload, &record);
                }
                journal.append(&payload).expect("append");
            }
        }
        journal.close().expect("close");
    }
    // A new segment closes the one written above, so the dealer takes it.
    let (journal, _) = Journal::open(&layout.raw_live(), options).expect("reopen");
    storage.deal(&|| true).expect("deal");
    journal.close().expect("close");
    for code in &codes {
        assert_eq!(read_all(&storage, code).expect("read"), 2, "{code}");
        let segments = fs::read_dir(layout.segments(code)).expect("segments").count();
        assert_eq!(segments, 1, "{code}: one unsorted segment");
    }
}

/// Regression: with two snapshots of an index, the newest is the one kept and read, and the pipeline
/// settles (it used to delete the newest snapshot and rebuild it every cycle).
#[test]
fn the_newest_snapshot_is_kept_and_the_pipeline_settles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let options = StorageOptions {
        sort_unsorted_segments_max: 1,
        optimize_unoptimized_segments_min: 0,
        read_guard: std::time::Duration::ZERO,
        ..StorageOptions::default()
    };
    let storage = Storage::open(layout.clone(), options).expect("open");
    for round in 0..3 {
        write_raw(&layout, "idx", 20);
        let mut cycles = 0;
        while storage.run_cycle(&|| true).expect("cycle").did_something() {
            cycles += 1;
            assert!(cycles < 10, "round {round}: the pipeline does not settle");
        }
        let (_, optimized) = storage.index_segments("idx").expect("segments");
        assert_eq!(optimized.len(), 1, "round {round}: {optimized:?}");
        // The same 60 docids are written each round: compaction folds them, none is lost.
        assert_eq!(read_docids(&storage, "idx").len(), 60, "round {round}");
    }
}

/// Records come back without index_code whether they were dealt or still only in the raw log.
#[test]
fn records_are_served_without_index_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let storage = Storage::open(layout.clone(), StorageOptions::default()).expect("open");
    write_raw(&layout, "idx", 12);
    storage.deal(&|| true).expect("deal");
    let mut token = LogPageToken::default();
    let mut seen = 0;
    loop {
        let page = storage.read_page("idx", &token).expect("read");
        let mut rest = &page.records[..];
        while !rest.is_empty() {
            let (record, used) =
                codec::decode_record(rest, &logtank_thrift::binary::Limits::default()).expect("decode");
            assert_eq!(record.index_code, None);
            assert!(record.docid.is_some());
            seen += 1;
            rest = &rest[used..];
        }
        match page.next {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(seen, 36);
}
