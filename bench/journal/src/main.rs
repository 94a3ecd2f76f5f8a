//! Journal benchmark (not a test): measures the journal against the disk's own limits in the same run.
//!
//! - 64 KiB append bandwidth, as a ratio of `dd if=/dev/zero oflag=direct bs=1M` on the same filesystem;
//! - appends/s of 100-byte records acknowledged at `written`;
//! - p50/p99 time to durable with 1, 16 and 256 concurrent waiters, as a ratio of one 4 KiB write+fdatasync.
//!
//! Run: `cargo run --release -p logtank-bench-journal -- --dir target/bench-journal`

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use logtank_journal::{IoBackend, Journal, JournalOptions};

#[derive(Parser, Debug)]
struct Args {
    /// Directory on the filesystem to measure (created; emptied before each step).
    #[arg(long, default_value = "target/bench-journal")]
    dir: PathBuf,
    /// MiB written by the bandwidth steps (dd and journal alike).
    #[arg(long, default_value_t = 1024)]
    bandwidth_mib: u64,
    /// Records appended by the appends/s step.
    #[arg(long, default_value_t = 3_000_000)]
    small_records: u64,
    /// Seconds each durable-latency step runs.
    #[arg(long, default_value_t = 3)]
    latency_seconds: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    println!(
        "journal benchmark in {} ({})",
        args.dir.display(),
        filesystem_of(&args.dir)
    );

    let dd = dd_bandwidth(&args.dir, args.bandwidth_mib)?;
    println!("\n| measurement | value | ratio |\n|---|---|---|");
    println!(
        "| dd oflag=direct bs=1M | {:.0} MB/s | 1.00 (baseline) |",
        dd / 1e6
    );
    for backend in [IoBackend::IoUring, IoBackend::Pwrite] {
        let bw = append_bandwidth(&args.dir, backend, args.bandwidth_mib)?;
        println!(
            "| journal 64 KiB appends, {backend:?}, durable at end | {:.0} MB/s | {:.2} of dd |",
            bw / 1e6,
            bw / dd
        );
    }
    for backend in [IoBackend::IoUring, IoBackend::Pwrite] {
        let rate = small_appends(&args.dir, backend, args.small_records)?;
        println!(
            "| 100-byte appends/s, {backend:?}, ack=written | {:.2} M/s | target ≥ 1 M/s |",
            rate / 1e6
        );
    }
    let (fsync, fsync_p99) = single_fdatasync(&args.dir)?;
    println!(
        "| one 4 KiB write+fdatasync, p50 / p99 of 200 | {:.0} / {:.0} µs | 1.00 (baseline) |",
        micros(fsync),
        micros(fsync_p99)
    );
    for backend in [IoBackend::IoUring, IoBackend::Pwrite] {
        for waiters in [1, 16, 256] {
            let (p50, p99, rate) = durable_latency(&args.dir, backend, waiters, args.latency_seconds)?;
            println!(
                "| durable, {backend:?}, {waiters} waiters: p50 / p99 | {:.0} / {:.0} µs ({:.0} records/s) | p50 {:.2}×, p99 {:.2}× one fdatasync's |",
                micros(p50),
                micros(p99),
                rate,
                p50.as_secs_f64() / fsync.as_secs_f64(),
                p99.as_secs_f64() / fsync_p99.as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn filesystem_of(dir: &Path) -> String {
    Command::new("df")
        .args(["--output=source,fstype", "-h"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown filesystem".into())
}

fn fresh(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    Ok(path)
}

/// Bytes/s of `dd if=/dev/zero oflag=direct bs=1M` writing `mib` MiB into a new file.
fn dd_bandwidth(dir: &Path, mib: u64) -> Result<f64> {
    let out = fresh(dir, "dd.bin")?;
    let started = Instant::now();
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", out.display()))
        .args(["bs=1M", "oflag=direct", "status=none"])
        .arg(format!("count={mib}"))
        .status()
        .context("running dd")?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("dd failed: {status}");
    }
    std::fs::remove_file(&out)?;
    Ok((mib << 20) as f64 / elapsed.as_secs_f64())
}

fn open(dir: &Path, backend: IoBackend, segment_size_bytes: u64) -> Result<Journal> {
    let options = JournalOptions {
        io_backend: backend,
        segment_size_bytes,
        ..Default::default()
    };
    Ok(Journal::open(dir, options)?.0)
}

/// Bytes/s of 64 KiB appends, from the first append to the last one being durable.
fn append_bandwidth(dir: &Path, backend: IoBackend, mib: u64) -> Result<f64> {
    let path = fresh(dir, "bandwidth")?;
    let journal = open(&path, backend, 64 << 20)?;
    let record = vec![0x5Au8; 64 << 10];
    let count = (mib << 20) / record.len() as u64;
    let started = Instant::now();
    let mut last = 0;
    for _ in 0..count {
        last = journal.append(&record)?;
    }
    journal.wait_durable(last)?;
    let elapsed = started.elapsed();
    journal.close()?;
    std::fs::remove_dir_all(&path)?;
    Ok((count * record.len() as u64) as f64 / elapsed.as_secs_f64())
}

/// Records/s of 100-byte appends from one thread, until the last is written.
fn small_appends(dir: &Path, backend: IoBackend, count: u64) -> Result<f64> {
    let path = fresh(dir, "small")?;
    let journal = open(&path, backend, 256 << 20)?;
    let record = [0xA5u8; 100];
    let started = Instant::now();
    let mut last = 0;
    for _ in 0..count {
        last = journal.append(&record)?;
    }
    journal.wait_written(last)?;
    let elapsed = started.elapsed();
    journal.close()?;
    std::fs::remove_dir_all(&path)?;
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// The p50 and p99 of 200 single 4 KiB pwrite + fdatasync into a zero-filled file (as journal segments are).
fn single_fdatasync(dir: &Path) -> Result<(Duration, Duration)> {
    let path = fresh(dir, "fdatasync.bin")?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    file.write_all_at(&vec![0u8; 4096 * 200], 0)?;
    file.sync_all()?;
    let block = [0x33u8; 4096];
    let mut samples: Vec<Duration> = (0..200u64)
        .map(|i| {
            let started = Instant::now();
            file.write_all_at(&block, i * 4096)?;
            file.sync_data()?;
            Ok(started.elapsed())
        })
        .collect::<std::io::Result<_>>()?;
    std::fs::remove_file(&path)?;
    samples.sort();
    Ok((samples[samples.len() / 2], samples[samples.len() * 99 / 100]))
}

/// p50 and p99 of append-to-durable with `waiters` threads, each appending 100 bytes and waiting, in a loop.
fn durable_latency(
    dir: &Path,
    backend: IoBackend,
    waiters: usize,
    seconds: u64,
) -> Result<(Duration, Duration, f64)> {
    let path = fresh(dir, "latency")?;
    let journal = Arc::new(open(&path, backend, 64 << 20)?);
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..waiters)
        .map(|_| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut samples = Vec::new();
                let record = [0x11u8; 100];
                while Instant::now() < until {
                    let t = Instant::now();
                    let seq = journal.append(&record)?;
                    journal.wait_durable(seq)?;
                    samples.push(t.elapsed());
                }
                Ok(samples)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(
            t.join()
                .map_err(|_| anyhow::anyhow!("latency thread panicked"))??,
        );
    }
    let elapsed = started.elapsed();
    drop(journal);
    std::fs::remove_dir_all(&path)?;
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Ok((pick(0.50), pick(0.99), all.len() as f64 / elapsed.as_secs_f64()))
}
