//! Crash test with real processes: a child appends in durable mode from several threads and reports every
//! acknowledged sequence number; the parent `kill -9`s it at a random moment, reopens the journal and checks
//! that every acknowledged record is present and intact. Runs on both IO paths, and on both again with power
//! cuts: the journal lives on the power-loss file system (logtank-powerfs), which forgets at the cut every
//! write and directory entry no fsync covered (every other cut tears the last file's unsynced end), and only
//! then is the child killed.
//!
//! Cycles: `LOGTANK_CRASH_CYCLES` (default 10 here; `tests/run` sets 50); power cuts: `LOGTANK_POWER_CUTS`
//! (default 10; `tests/run` sets 30).
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
use logtank_powerfs::{CutMode, PowerFs};
use rand::Rng;

const CHILD_DIR_ENV: &str = "LOGTANK_CRASH_CHILD_DIR";
const CHILD_BACKEND_ENV: &str = "LOGTANK_CRASH_CHILD_BACKEND";
const CHILD_CYCLE_ENV: &str = "LOGTANK_CRASH_CHILD_CYCLE";
const CHILD_THREADS_ENV: &str = "LOGTANK_CRASH_CHILD_THREADS";

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
    let threads: u64 = std::env::var(CHILD_THREADS_ENV).unwrap().parse().unwrap();
    let threads: Vec<_> = (0..threads)
        .map(|thread| {
            let journal = std::sync::Arc::clone(&journal);
            std::thread::spawn(move || {
                for counter in 0.. {
                    // After a power cut every write and fsync fails (EIO): nothing more is acknowledged.
                    let Ok(seq) = journal.append(&make_payload(cycle, thread, counter)) else {
                        return;
                    };
                    if journal.wait_durable(seq).is_err() {
                        return;
                    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill9,
    PowerCut,
}

fn run_cycles(backend: IoBackend, backend_name: &str, fault: Fault) {
    let (cycles_env, what) = match fault {
        Fault::Kill9 => ("LOGTANK_CRASH_CYCLES", "kill -9 cycles"),
        Fault::PowerCut => ("LOGTANK_POWER_CUTS", "power cuts"),
    };
    let cycles: u64 = std::env::var(cycles_env)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let mut powerfs = match fault {
        Fault::Kill9 => None,
        Fault::PowerCut => {
            if let Err(why) = PowerFs::available() {
                eprintln!("SKIPPED: {why}");
                return;
            }
            Some(PowerFs::mount_under(dir.path()).unwrap())
        }
    };
    let data = powerfs
        .as_ref()
        .map_or(dir.path().to_path_buf(), |fs| fs.path().to_path_buf());
    let mut acked: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let mut rng = rand::rng();
    let mut torn_tails = 0;
    let (mut bytes_forgotten, mut torn_cuts) = (0, 0);
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, &data)
            .env(CHILD_BACKEND_ENV, backend_name)
            .env(CHILD_CYCLE_ENV, cycle.to_string())
            // More appenders at a cut: more written and not yet synced for it to forget.
            .env(CHILD_THREADS_ENV, if powerfs.is_some() { "16" } else { "4" })
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
        // The power goes first: what the child does after it (EIO everywhere) reaches no disk.
        let cut = powerfs.as_ref().map(|fs| {
            let mode = CutMode::alternating(cycle);
            // Half the cuts right after a write (something certainly unsynced), half at the random moment.
            if cycle % 4 < 2 {
                fs.cut_after_writes_or_now(rng.random_range(1..20), mode)
            } else {
                fs.cut_as(mode)
            }
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for (seq, id) in rx.try_iter() {
            acked.insert(seq, id);
        }
        if let (Some(fs), Some(cut)) = (powerfs.take(), cut) {
            bytes_forgotten += cut.bytes_forgotten;
            torn_cuts += usize::from(cut.torn.is_some());
            powerfs = Some(fs.remount().unwrap());
        }

        let (journal, report) = open_after_crash(&data, backend);
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
    eprintln!(
        "{backend_name}: {cycles} {what}, {} acknowledged records intact, {torn_tails} torn tails cut \
         ({bytes_forgotten} unsynced bytes forgotten, {torn_cuts} cuts tore a write)",
        acked.len()
    );
}

// Proves acknowledged durable records survive kill -9 on the io_uring path.
#[test]
fn crash_io_uring() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    run_cycles(IoBackend::IoUring, "io_uring", Fault::Kill9);
}

// Proves acknowledged durable records survive kill -9 on the pwrite + fdatasync fallback.
#[test]
fn crash_pwrite() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    run_cycles(IoBackend::Pwrite, "pwrite", Fault::Kill9);
}

// Proves acknowledged durable records survive power cuts on the io_uring path: the journal's fsyncs and its
// directory fsyncs are what keep them, not the page cache.
#[test]
fn power_cut_io_uring() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    run_cycles(IoBackend::IoUring, "io_uring", Fault::PowerCut);
}

// The same on the pwrite + fdatasync fallback.
#[test]
fn power_cut_pwrite() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    run_cycles(IoBackend::Pwrite, "pwrite", Fault::PowerCut);
}
