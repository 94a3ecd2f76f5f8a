//! Property tests of recovery on real files: random truncation and random byte flips at random offsets never make
//! the journal return a wrong record, and a torn tail is cut so appends continue after it.
// Helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests; a failed
// unwrap in a test helper is a test failure, which is what we want.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use logtank_journal::{frame, Error, IoBackend, Journal, JournalOptions};
use proptest::prelude::*;

fn options() -> JournalOptions {
    JournalOptions {
        segment_size_bytes: 1 << 20,
        record_bytes_max: 4096,
        io_backend: IoBackend::Pwrite,
        ..Default::default()
    }
}

/// Writes `payloads` (waiting for durability where `durable_every` says, so hints vary) and returns the segment.
fn build(dir: &std::path::Path, payloads: &[Vec<u8>], durable_every: usize) -> std::path::PathBuf {
    let (journal, _) = Journal::open(dir, options()).unwrap();
    for (i, p) in payloads.iter().enumerate() {
        let seq = journal.append(p).unwrap();
        if (i + 1) % durable_every == 0 {
            journal.wait_durable(seq).unwrap();
        }
    }
    let path = journal.segments()[0].path.clone();
    journal.close().unwrap();
    path
}

/// Reopens, reads everything, and checks each record against what was written.
fn reopen_and_check(dir: &std::path::Path, payloads: &[Vec<u8>]) -> Result<usize, TestCaseError> {
    match Journal::open(dir, options()) {
        Ok((journal, report)) => {
            let mut count = 0;
            for record in journal.read_from(1).unwrap() {
                let record =
                    record.map_err(|e| TestCaseError::fail(format!("read failed after open: {e}")))?;
                let expected = payloads.get(record.seq as usize - 1);
                prop_assert_eq!(Some(&record.payload), expected, "wrong record {}", record.seq);
                count += 1;
            }
            prop_assert_eq!(count as u64, report.next_seq - 1);
            // Appends continue after whatever was cut, and survive another reopen.
            let seq = journal.append(b"after recovery").unwrap();
            journal.wait_durable(seq).unwrap();
            journal.close().unwrap();
            let (journal, report) = Journal::open(dir, options()).unwrap();
            prop_assert!(report.torn_tail.is_none());
            let last = journal.read_from(seq).unwrap().next().unwrap().unwrap();
            prop_assert_eq!(last.payload, b"after recovery".to_vec());
            Ok(count)
        }
        Err(Error::Corrupt { .. }) => Ok(0),
        Err(other) => Err(TestCaseError::fail(format!("unexpected error {other}"))),
    }
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    // Proves a tail cut at any offset (zeroed, as a crash leaves preallocated space) loses exactly the records
    // that were not whole, keeps every whole one, and lets appends continue.
    #[test]
    fn random_truncation(payloads in payloads(), durable_every in 1usize..8, cut: u64) {
        let dir = tempfile::tempdir().unwrap();
        let segment = build(dir.path(), &payloads, durable_every);
        let frames_end: Vec<u64> = payloads.iter().scan(frame::SEGMENT_HEADER_BYTES as u64, |end, p| {
            let payload_end = *end + (frame::FRAME_HEADER_BYTES + p.len()) as u64;
            *end += frame::frame_len(p.len()) as u64;
            Some(payload_end)
        }).collect();
        let total = *frames_end.last().unwrap();
        let cut = frame::SEGMENT_HEADER_BYTES as u64 + cut % (total - frame::SEGMENT_HEADER_BYTES as u64 + 1);
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.write_all_at(&vec![0u8; (total - cut) as usize], cut).unwrap();
        let whole = frames_end.iter().filter(|&&end| end <= cut).count();
        let count = reopen_and_check(dir.path(), &payloads)?;
        prop_assert_eq!(count, whole);
    }

    // Proves the same for a file physically cut short (a filesystem that lost the preallocation).
    #[test]
    fn random_file_shortening(payloads in payloads(), cut: u64) {
        let dir = tempfile::tempdir().unwrap();
        let segment = build(dir.path(), &payloads, 1000);
        let len = std::fs::metadata(&segment).unwrap().len();
        let used: u64 = frame::SEGMENT_HEADER_BYTES as u64
            + payloads.iter().map(|p| frame::frame_len(p.len()) as u64).sum::<u64>();
        let cut = frame::SEGMENT_HEADER_BYTES as u64 + cut % (used.min(len) - frame::SEGMENT_HEADER_BYTES as u64 + 1);
        OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
        reopen_and_check(dir.path(), &payloads)?;
    }

    // Proves random byte flips anywhere after the header never yield a wrong record: open either refuses with
    // a corruption error or returns a prefix of exactly what was written.
    #[test]
    fn random_byte_flips(payloads in payloads(), durable_every in 1usize..8,
                         flips in proptest::collection::vec((any::<u64>(), 1u8..=255), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let segment = build(dir.path(), &payloads, durable_every);
        let used: u64 = frame::SEGMENT_HEADER_BYTES as u64
            + payloads.iter().map(|p| frame::frame_len(p.len()) as u64).sum::<u64>();
        let file = OpenOptions::new().read(true).write(true).open(&segment).unwrap();
        for (at, mask) in flips {
            let at = frame::SEGMENT_HEADER_BYTES as u64 + at % (used + 64 - frame::SEGMENT_HEADER_BYTES as u64);
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at).unwrap();
            file.write_all_at(&[byte[0] ^ mask], at).unwrap();
        }
        reopen_and_check(dir.path(), &payloads)?;
    }
}
