//! The entry store's two shapes, measured in process on one disk with the same appends (issue 11 asked for
//! both, and `docs/bookie.md` decides on these numbers):
//!
//! - **journal only** (logtank's bookie): every entry is one journal record, acknowledged once its group
//!   commit is durable; the journal is the entry store, read back through an index;
//! - **journal + entry log** (BookKeeper's): the same journal, and every entry also written to a separate
//!   entry log by a background thread that fdatasyncs it every second (BookKeeper's checkpoint), with a
//!   bounded queue so the adds wait when the entry log falls behind (its write-cache throttle).
//!
//! Appender threads each add batches of entries and wait for their durability, as many connections do. The
//! bytes written per payload byte are what reached the disk (`/proc/diskstats`).

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use logtank_journal::{Journal, JournalOptions};

const THREADS: usize = 8;
const BATCH_ENTRIES: usize = 16;
const PHASE: Duration = Duration::from_secs(10);
/// Batches queued for the entry log before appenders wait (BookKeeper's write cache, in batches).
const ENTRY_LOG_QUEUE_MAX: usize = 1024;
const ENTRY_LOG_SYNC_INTERVAL: Duration = Duration::from_secs(1);

struct Shape {
    payload_bytes: u64,
    written_bytes: u64,
    elapsed: Duration,
}

fn measure(dir: &Path, entry_bytes: usize, entry_log: bool) -> Result<Shape> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let (journal, _) = Journal::open(
        &dir.join("journal"),
        JournalOptions {
            segment_size_bytes: 128 << 20,
            ..JournalOptions::default()
        },
    )?;
    let journal = Arc::new(journal);
    let stop = Arc::new(AtomicBool::new(false));
    let payload_bytes = Arc::new(AtomicU64::new(0));
    let (log_tx, log_rx) = mpsc::sync_channel::<Vec<u8>>(ENTRY_LOG_QUEUE_MAX);
    let log_thread = entry_log.then(|| {
        let path = dir.join("entry.log");
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut file = File::create(path)?;
            let mut last_sync = Instant::now();
            for batch in log_rx {
                file.write_all(&batch)?;
                if last_sync.elapsed() >= ENTRY_LOG_SYNC_INTERVAL {
                    file.sync_data()?;
                    last_sync = Instant::now();
                }
            }
            file.sync_data()
        })
    });
    let written_before = crate::device_written_bytes(dir);
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let journal = journal.clone();
            let stop = stop.clone();
            let payload_bytes = payload_bytes.clone();
            let log_tx = entry_log.then(|| log_tx.clone());
            std::thread::spawn(move || -> Result<()> {
                let entry = vec![0x5au8; entry_bytes + logtank_bookie_proto::ENTRY_OVERHEAD_BYTES];
                let batch: Vec<&[u8]> = (0..BATCH_ENTRIES).map(|_| &entry[..]).collect();
                while !stop.load(Ordering::Relaxed) {
                    let (_, last) = journal.append_many(&batch)?;
                    if let Some(tx) = &log_tx {
                        tx.send(entry.repeat(BATCH_ENTRIES))?;
                    }
                    journal.wait_durable(last)?;
                    payload_bytes.fetch_add((entry_bytes * BATCH_ENTRIES) as u64, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    drop(log_tx);
    std::thread::sleep(PHASE);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("an appender panicked"))??;
    }
    let elapsed = started.elapsed();
    if let Some(t) = log_thread {
        t.join()
            .map_err(|_| anyhow::anyhow!("the entry log thread panicked"))??;
    }
    let written = crate::device_written_bytes(dir).saturating_sub(written_before);
    if let Ok(j) = Arc::try_unwrap(journal) {
        j.close()?;
    }
    Ok(Shape {
        payload_bytes: payload_bytes.load(Ordering::Relaxed),
        written_bytes: written,
        elapsed,
    })
}

pub fn run(dir: &Path, entry_bytes: usize, dd_bytes_per_s: f64) -> Result<String> {
    eprintln!(
        "entry store shapes: journal only, then journal + entry log ({} s each)",
        PHASE.as_secs()
    );
    let a = measure(&dir.join("journal-only"), entry_bytes, false)?;
    let b = measure(&dir.join("journal-and-entry-log"), entry_bytes, true)?;
    let mut out = String::new();
    writeln!(
        out,
        "### entry store shapes ({THREADS} appenders × batches of {BATCH_ENTRIES} entries of {entry_bytes} B, \
         each batch waiting for its fsync; {} s each; dd {:.0} MB/s)\n",
        PHASE.as_secs(),
        dd_bytes_per_s / 1e6
    )?;
    writeln!(out, "| shape | payload MB/s | written per payload byte | ÷ dd |")?;
    writeln!(out, "|---|---|---|---|")?;
    for (name, s) in [
        ("journal is the entry store (logtank)", &a),
        ("journal + entry log (BookKeeper)", &b),
    ] {
        let rate = s.payload_bytes as f64 / s.elapsed.as_secs_f64();
        writeln!(
            out,
            "| {name} | {:.1} | {:.2} | {:.2} |",
            rate / 1e6,
            s.written_bytes as f64 / s.payload_bytes.max(1) as f64,
            rate / dd_bytes_per_s
        )?;
    }
    let ratio = (a.payload_bytes as f64 / a.elapsed.as_secs_f64())
        / (b.payload_bytes as f64 / b.elapsed.as_secs_f64());
    writeln!(
        out,
        "\njournal only ÷ journal + entry log: **{ratio:.2}×** the payload rate\n"
    )?;
    Ok(out)
}
