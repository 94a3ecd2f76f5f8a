//! Crash test with real processes: a child appends in durable mode from several threads and reports every
//! acknowledged sequence number; the parent `kill -9`s it at a random moment, reopens the journal and checks
//! that every acknowledged record is present and intact. Runs on both IO paths.
//!
//! Cycles: `LOGTANK_CRASH_CYCLES` (default 10 here; `tests/run` sets 50).
// Helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests; a failed
// unwrap in a test helper is a test failure, which is what we want.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use logtank_journal::{IoBackend, Journal, JournalOptions};
use rand::Rng;

const CHILD_DIR_ENV: &str = "LOGTANK_CRASH_CHILD_DIR";
const CHILD_BACKEND_ENV: &str = "LOGTANK_CRASH_CHILD_BACKEND";
const CHILD_CYCLE_ENV: &str = "LOGTANK_CRASH_CHILD_CYCLE";
const CHILD_THREADS: u64 = 4;

fn options(backend: IoBackend) -> JournalOptions {
    // Small segments, so kills also land around segment rolls.
    JournalOptions {
        segment_size_bytes: 256 << 10,
        record_bytes_max: 8192,
        io_backend: backend,
        ..Default::default()
    }
}

/// Opens the journal, waiting out the moment after a kill -9 in which the dead child's lock may still be held
/// (another test's child forked in between inherits the lock's descriptor until it execs).
fn open_after_crash(dir: &Path, backend: IoBackend) -> (Journal, logtank_journal::RecoveryReport) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Journal::open(dir, options(backend)) {
            Err(logtank_journal::Error::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
}

fn make_payload(cycle: u64, thread: u64, counter: u64) -> Vec<u8> {
    let mut p = format!("{cycle}:{thread}:{counter}:").into_bytes();
    let filler = (counter * 31 + thread * 7) % 2000;
    p.extend((0..filler).map(|i| (i as u8) ^ (counter as u8)));
    p
}

/// Checks that a payload is one `make_payload` could have produced, and returns its identity.
fn parse_payload(p: &[u8]) -> Option<(u64, u64, u64)> {
    let head = &p[..p.len().min(64)];
    let mut fields = head
        .split(|&b| b == b':')
        .map(|f| std::str::from_utf8(f).unwrap_or(""));
    let (cycle, thread, counter) = (
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
    );
    (make_payload(cycle, thread, counter) == p).then_some((cycle, thread, counter))
}

// Not a test on its own: the body of the child process the crash tests start (it returns at once otherwise).
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let backend: IoBackend = std::env::var(CHILD_BACKEND_ENV).unwrap().parse().unwrap();
    let cycle: u64 = std::env::var(CHILD_CYCLE_ENV).unwrap().parse().unwrap();
    let (journal, _) = open_after_crash(Path::new(&dir), backend);
    let journal = std::sync::Arc::new(journal);
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|thread| {
            let journal = std::sync::Arc::clone(&journal);
            std::thread::spawn(move || {
                for counter in 0.. {
                    let seq = journal.append(&make_payload(cycle, thread, counter)).unwrap();
                    journal.wait_durable(seq).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {seq} {thread} {counter}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn run_cycles(backend: IoBackend, backend_name: &str) {
    let cycles: u64 = std::env::var("LOGTANK_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let mut rng = rand::rng();
    let mut torn_tails = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_BACKEND_ENV, backend_name)
            .env(CHILD_CYCLE_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(rest) = line.strip_prefix("ACK ") else {
                    continue;
                };
                let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                if tx.send((f[0], (cycle, f[1], f[2]))).is_err() {
                    break;
                }
            }
        });
        // Kill after a random number of acknowledgements, plus a random few milliseconds, so kills land in
        // appends, writes, fsyncs and rolls alike.
        let wanted_acks = rng.random_range(1..400);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while seen < wanted_acks {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((seq, id)) => {
                    acked.insert(seq, id);
                    seen += 1;
                }
                Err(_) => panic!("cycle {cycle}: the child acknowledged only {seen} records in 30 s"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..5000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for (seq, id) in rx.try_iter() {
            acked.insert(seq, id);
        }

        let (journal, report) = open_after_crash(dir.path(), backend);
        torn_tails += usize::from(report.torn_tail.is_some());
        let mut present = HashMap::new();
        for record in journal.read_from(1).unwrap() {
            let record = record.unwrap();
            let id = parse_payload(&record.payload)
                .unwrap_or_else(|| panic!("cycle {cycle}: record {} holds bytes no child wrote", record.seq));
            present.insert(record.seq, id);
        }
        for (seq, id) in &acked {
            assert_eq!(
                present.get(seq),
                Some(id),
                "cycle {cycle}: acknowledged record {seq} lost or changed"
            );
        }
        journal.close().unwrap();
    }
    eprintln!("{backend_name}: {cycles} kill -9 cycles, {} acknowledged records intact, {torn_tails} torn tails cut", acked.len());
}

// Proves acknowledged durable records survive kill -9 on the io_uring path.
#[test]
fn crash_io_uring() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    run_cycles(IoBackend::IoUring, "io_uring");
}

// Proves acknowledged durable records survive kill -9 on the pwrite + fdatasync fallback.
#[test]
fn crash_pwrite() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    run_cycles(IoBackend::Pwrite, "pwrite");
}
