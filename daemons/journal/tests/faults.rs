//! Disk faults, injected by the power-loss file system (logtank-powerfs): a failed fsync, and a segment that
//! cannot be created. Root only (each test says so and passes otherwise; tests/run runs as root).
//!
//! A failed fsync loses the writes it should have covered, as Linux loses them (the pages are marked clean,
//! a later fsync succeeds): the journal must stop, and what a reopen trusts must be what the disk holds, so
//! a power cut after the reopen forgets nothing it acknowledged.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use logtank_journal::{IoBackend, Journal, JournalOptions};
use logtank_powerfs::{CutMode, Fault, FaultOp, PowerFs};

fn options(backend: IoBackend) -> JournalOptions {
    JournalOptions {
        segment_size_bytes: 64 << 10,
        record_bytes_max: 4096,
        io_backend: backend,
        ..Default::default()
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!("record {seq}:").into_bytes();
    p.resize(300 + (seq % 200) as usize, seq as u8);
    p
}

fn mounted() -> Option<(tempfile::TempDir, PowerFs)> {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount_under(dir.path()).unwrap();
    Some((dir, fs))
}

/// Every record in the journal at `dir`, in order, checked against [`payload`]; the count.
fn check_contents(dir: &Path, backend: IoBackend) -> u64 {
    let (journal, report) = Journal::open(dir, options(backend)).unwrap();
    let mut seq = 0;
    for record in journal.read_from(1).unwrap() {
        let record = record.unwrap();
        seq += 1;
        assert_eq!(record.seq, seq);
        assert_eq!(record.payload, payload(seq), "record {seq}");
    }
    assert_eq!(seq, report.records);
    journal.close().unwrap();
    seq
}

fn append_durably(journal: &Journal, from: u64, count: u64) -> Result<u64, logtank_journal::Error> {
    let mut last = from - 1;
    for seq in from..from + count {
        last = journal.append(&payload(seq))?;
        assert_eq!(last, seq);
    }
    journal.wait_durable(last)?;
    Ok(last)
}

fn failed_fsync(backend: IoBackend) {
    let Some((_dir, fs)) = mounted() else { return };
    let dir = fs.path().join("journal");
    let (journal, _) = Journal::open(&dir, options(backend)).unwrap();
    let acked = append_durably(&journal, 1, 100).unwrap();
    // On the segment being written (the spare made for the next roll is not data).
    let segment = journal.segments().last().unwrap().path.clone();
    let segment = segment.file_name().unwrap().to_str().unwrap();
    fs.inject(Fault::new(FaultOp::Fsync, libc::EIO).on_paths_containing(segment).times(1));
    let err = append_durably(&journal, acked + 1, 50).unwrap_err();
    assert!(matches!(err, logtank_journal::Error::Failed(_)), "{err}");
    assert!(err.to_string().contains("Input/output error"), "{err}");
    assert_eq!(fs.faults_hit(), 1);
    // Poisoned: nothing more is taken (a later fsync would succeed and prove nothing).
    assert!(journal.append(b"more").is_err());
    let durable = journal.marks().durable;
    assert!(durable >= acked, "durable {durable} < acknowledged {acked}");
    assert!(journal.close().is_err());

    // The restart: what it counts is what the disk holds, so no record of the failed fsync is served.
    let records = check_contents(&dir, backend);
    assert_eq!(records, durable, "the reopened journal holds exactly what was durable");
    // New writes go on from there, and a power cut after them forgets nothing acknowledged.
    let (journal, _) = Journal::open(&dir, options(backend)).unwrap();
    let acked = append_durably(&journal, records + 1, 100).unwrap();
    let report = fs.cut_as(CutMode::Tear);
    drop(journal);
    let fs = fs.remount().unwrap();
    let records = check_contents(&fs.path().join("journal"), backend);
    assert!(records >= acked, "{records} records after the cut, {acked} acknowledged ({report:?})");
    eprintln!("{backend:?}: the failed fsync lost {} unacknowledged records; {records} after the cut", 150 - durable);
}

#[test]
fn a_failed_fsync_is_not_trusted_after_the_restart_io_uring() {
    failed_fsync(IoBackend::IoUring);
}

#[test]
fn a_failed_fsync_is_not_trusted_after_the_restart_pwrite() {
    failed_fsync(IoBackend::Pwrite);
}

fn segment_cannot_be_created(backend: IoBackend) {
    let Some((_dir, fs)) = mounted() else { return };
    let dir = fs.path().join("journal");
    let (journal, _) = Journal::open(&dir, options(backend)).unwrap();
    let acked = append_durably(&journal, 1, 10).unwrap();
    fs.inject(Fault::new(FaultOp::Create, libc::ENOSPC).on_paths_containing("journal/"));
    // Far past one segment: a roll (or the spare made for it) needs a new file.
    let mut last_acked = acked;
    let mut failure = None;
    for seq in acked + 1..acked + 1000 {
        match journal.append(&payload(seq)).and_then(|s| journal.wait_durable(s).map(|()| s)) {
            Ok(s) => last_acked = s,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a journal that cannot create a segment fails");
    assert!(failure.to_string().contains("No space left on device"), "{failure}");
    drop(journal);
    // While the fault lasts, a reopen either fails with the reason or (when the last segment has room)
    // opens, and then fails the same way at the next roll: never a panic, never a record lost.
    match Journal::open(&dir, options(backend)) {
        Err(e) => assert!(e.to_string().contains("No space left on device"), "{e}"),
        Ok((journal, report)) => {
            let mut seq = report.next_seq;
            let failure = loop {
                match journal.append(&payload(seq)).and_then(|s| journal.wait_durable(s).map(|()| s)) {
                    Ok(s) => last_acked = s,
                    Err(e) => break e,
                }
                seq += 1;
                assert!(seq < report.next_seq + 1000, "a journal that cannot roll kept taking records");
            };
            assert!(failure.to_string().contains("No space left on device"), "{failure}");
        }
    }
    fs.clear_faults();
    let records = check_contents(&dir, backend);
    assert!(records >= last_acked, "{records} records, {last_acked} acknowledged");
}

#[test]
fn a_segment_that_cannot_be_created_fails_the_journal_cleanly_io_uring() {
    segment_cannot_be_created(IoBackend::IoUring);
}

#[test]
fn a_segment_that_cannot_be_created_fails_the_journal_cleanly_pwrite() {
    segment_cannot_be_created(IoBackend::Pwrite);
}
