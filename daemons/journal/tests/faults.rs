//! Disk faults, injected by the power-loss file system (logtank-powerfs): a failed fsync, and a segment that
//! cannot be created. Root only (each test says so and passes otherwise; tests/run runs as root).
//!
//! A segment that cannot be created (a full disk) is not a failure: appends are refused with the reason
//! and the journal goes on by itself once the disk takes the segment.
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
    fs.inject(
        Fault::new(FaultOp::Fsync, libc::EIO)
            .on_paths_containing(segment)
            .times(1),
    );
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
    assert_eq!(
        records, durable,
        "the reopened journal holds exactly what was durable"
    );
    // New writes go on from there, and a power cut after them forgets nothing acknowledged.
    let (journal, _) = Journal::open(&dir, options(backend)).unwrap();
    let acked = append_durably(&journal, records + 1, 100).unwrap();
    let report = fs.cut_as(CutMode::Tear);
    drop(journal);
    let fs = fs.remount().unwrap();
    let records = check_contents(&fs.path().join("journal"), backend);
    assert!(
        records >= acked,
        "{records} records after the cut, {acked} acknowledged ({report:?})"
    );
    eprintln!(
        "{backend:?}: the failed fsync lost {} unacknowledged records; {records} after the cut",
        150 - durable
    );
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
    let mut acked = append_durably(&journal, 1, 10).unwrap();
    fs.inject(Fault::new(FaultOp::Create, libc::ENOSPC).on_paths_containing("journal/"));
    // Far past one segment: a roll needs the next segment, which cannot be created.
    let mut refused = None;
    for seq in acked + 1..acked + 1000 {
        match journal.append(&payload(seq)) {
            Ok(s) => {
                assert_eq!(s, seq);
                // Durable, unless it is staged for the segment that cannot be made (then it waits).
                journal.request_durable(s).unwrap();
                loop {
                    let marks = journal.marks();
                    if marks.durable >= s {
                        acked = s;
                        break;
                    }
                    if marks.cannot_grow {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a journal that cannot create a segment refuses appends");
    assert!(
        matches!(refused, logtank_journal::Error::CannotGrow(_)),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("No space left on device"),
        "{refused}"
    );
    assert!(journal.marks().cannot_grow && !journal.marks().failed);
    let staged = journal.last_appended();
    // Refused early (the spare for the next roll failed) or at the roll (a record staged for it waits).
    assert!(staged >= acked);
    // The disk has room again: the journal goes on by itself, the staged records first.
    fs.clear_faults();
    journal.wait_durable(staged).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while journal.marks().cannot_grow {
        assert!(
            std::time::Instant::now() < deadline,
            "the journal never tried the segment again"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let last = append_durably(&journal, staged + 1, 300).unwrap();
    journal.close().unwrap();
    assert!(last > acked);
    assert_eq!(check_contents(&dir, backend), last);
}

#[test]
fn a_segment_that_cannot_be_created_refuses_appends_until_it_can_io_uring() {
    segment_cannot_be_created(IoBackend::IoUring);
}

#[test]
fn a_segment_that_cannot_be_created_refuses_appends_until_it_can_pwrite() {
    segment_cannot_be_created(IoBackend::Pwrite);
}

// Proves a journal that starts a new segment at every open (the writer's) still opens on a disk that cannot
// create one, going on in its last segment: a daemon restarted on a full disk is not stopped by it.
#[test]
fn an_open_that_cannot_start_a_new_segment_goes_on_in_the_last_one() {
    let Some((_dir, fs)) = mounted() else { return };
    let dir = fs.path().join("journal");
    let options = || JournalOptions {
        new_segment_on_open: true,
        ..options(IoBackend::Pwrite)
    };
    let (journal, _) = Journal::open(&dir, options()).unwrap();
    let acked = append_durably(&journal, 1, 5).unwrap();
    journal.close().unwrap();
    fs.inject(Fault::new(FaultOp::Create, libc::ENOSPC).on_paths_containing("journal/"));
    let (journal, report) = Journal::open(&dir, options()).expect("opens on the last segment");
    assert_eq!(report.segments.len(), 1);
    // Appends go on in it until the journal sees that its spare segment cannot be made either; then they
    // are refused (CannotGrow), never lost.
    let mut acked = acked;
    for seq in acked + 1..acked + 6 {
        match journal.append(&payload(seq)) {
            Ok(s) => {
                journal.request_durable(s).unwrap();
                while journal.marks().durable < s && !journal.marks().cannot_grow {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                if journal.marks().durable >= s {
                    acked = s;
                }
            }
            Err(e) => {
                assert!(matches!(e, logtank_journal::Error::CannotGrow(_)), "{e}");
                break;
            }
        }
    }
    fs.clear_faults();
    let staged = journal.last_appended();
    journal.wait_durable(staged).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while journal.marks().cannot_grow {
        assert!(
            std::time::Instant::now() < deadline,
            "the journal never tried the segment again"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let last = append_durably(&journal, staged + 1, 5).unwrap();
    assert!(last > acked);
    journal.close().unwrap();
    assert_eq!(check_contents(&dir, IoBackend::Pwrite), last);
}
