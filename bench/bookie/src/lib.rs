//! `logtank bench bookie`: the bookie target of DESIGN §8 (and issue 11's), measured in one run against the
//! disk's own limits: a fresh coordd and three local bookies (release binaries beside this one), ledgers of
//! E = Qw = 3, Qa = 2 with 1 KiB entries and many adds in flight, through logtank-ledger's client.
//!
//! 1. The disk: `dd oflag=direct` bandwidth, one 4 KiB write + fdatasync (p50, p99).
//! 2. Peak: `--ledgers` ledgers, `--in-flight` adds each, for `--seconds`: entries/s, MB/s, add latency
//!    p50/p99/p999, and the bytes the bookies wrote per payload byte (`/proc/<pid>/io`).
//! 3. Half the peak rate (paced): add latency p50/p99/p999.
//! 4. Ratios: throughput ÷ (dd bandwidth ÷ (3 bookies × bytes written per payload byte)), target ≥ 0.5; p99
//!    at half the peak rate ÷ one fdatasync's p99, target ≤ 3.
//! 5. With `--restart-entries N`: one bookie filled with N entries, stopped, and the time its restart takes
//!    until it serves.
//! 6. With `--shapes`: the entry store's two shapes, in process on one disk: the journal as the entry store
//!    (logtank's) against a journal plus separate entry logs (BookKeeper's), same appends.
//!
//! Nothing here asserts a time; the report is Markdown for `docs/benchmarks.md`.
#![forbid(unsafe_code)]

mod cluster;
mod load;
pub mod replication;
mod shapes;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::Args as ClapArgs;
use logtank_bench_storage::disk;

pub use cluster::Cluster;

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Where the cluster's data goes (wiped first); on the disk being measured.
    #[arg(long, default_value = "target/bench-bookie")]
    pub dir: PathBuf,
    /// Where logtank-coordd and logtank-bookie are (default: beside this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Ledgers written at once.
    #[arg(long, default_value_t = 4)]
    pub ledgers: usize,
    /// Adds in flight per ledger.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    #[arg(long, default_value_t = 1024)]
    pub entry_bytes: usize,
    /// Length of each measured phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// MiB written by the dd probe.
    #[arg(long, default_value_t = 512)]
    pub dd_mib: u64,
    /// Fill one bookie with this many entries and time its restart (0: skip).
    #[arg(long, default_value_t = 0)]
    pub restart_entries: u64,
    /// Also measure the entry store's two shapes (journal only vs journal + entry log).
    #[arg(long)]
    pub shapes: bool,
    /// A `[bookie]` setting for every bookie, KEY=VALUE in TOML (e.g. io_backend="pwrite"); repeatable.
    #[arg(long = "bookie", value_name = "KEY=VALUE")]
    pub bookie_settings: Vec<String>,
}

/// Runs everything the arguments ask for; returns the Markdown report.
pub fn run(args: &Args) -> Result<String> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let dir = logtank_bench_storage::fresh_dir(&args.dir)?;
    let mut out = String::new();
    eprintln!("measuring the disk (dd {} MiB, fdatasync)", args.dd_mib);
    let disk = disk::measure(&dir.join("disk"), args.dd_mib)?;
    writeln!(
        out,
        "## bookie: 3 local bookies, E=Qw=3, Qa=2, {} B entries\n",
        args.entry_bytes
    )?;
    writeln!(
        out,
        "disk: dd oflag=direct {:.0} MB/s; 4 KiB write + fdatasync p50 {:.2} ms, p99 {:.2} ms\n",
        disk.dd_bytes_per_s / 1e6,
        ms(disk.fdatasync_p50),
        ms(disk.fdatasync_p99)
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    {
        let cluster = Cluster::start(&bin_dir, &dir.join("cluster"), 3, &args.bookie_settings, &runtime)?;
        eprintln!(
            "peak: {} ledgers × {} adds in flight for {} s",
            args.ledgers, args.in_flight, args.seconds
        );
        let before = device_written_bytes(&dir);
        let peak = runtime.block_on(load::run(&cluster.client, args, None))?;
        let written = device_written_bytes(&dir).saturating_sub(before);
        // What one bookie writes per payload byte of its copy (three copies of every payload byte).
        let per_copy = written as f64 / (3.0 * peak.payload_bytes.max(1) as f64);
        let half_rate = peak.entries_per_s() / 2.0;
        eprintln!(
            "half the peak rate: {half_rate:.0} entries/s for {} s",
            args.seconds
        );
        let half = runtime.block_on(load::run(&cluster.client, args, Some(half_rate)))?;
        writeln!(out, "| load | entries/s | MB/s | add p50 ms | p99 ms | p999 ms |")?;
        writeln!(out, "|---|---|---|---|---|---|")?;
        for (name, r) in [("peak", &peak), ("half the peak rate", &half)] {
            writeln!(
                out,
                "| {name} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} |",
                r.entries_per_s(),
                r.mb_per_s(),
                ms(r.p50),
                ms(r.p99),
                ms(r.p999)
            )?;
        }
        let limit = disk.dd_bytes_per_s / (3.0 * per_copy);
        writeln!(
            out,
            "\nbytes written to the disk per payload byte, per copy: {:.2} ({} MB written for {} MB of payload × 3 \
             bookies; /proc/diskstats)",
            per_copy,
            written / 1_000_000,
            peak.payload_bytes / 1_000_000
        )?;
        writeln!(
            out,
            "throughput ÷ (dd ÷ (3 × bytes written per payload byte)) = {:.1} MB/s ÷ {:.1} MB/s = **{:.2}** \
             (target ≥ 0.5)",
            peak.payload_bytes_per_s() / 1e6,
            limit / 1e6,
            peak.payload_bytes_per_s() / limit
        )?;
        writeln!(
            out,
            "p99 at half the peak rate ÷ fdatasync p99 = {:.2} ms ÷ {:.2} ms = **{:.2}** (target ≤ 3)\n",
            ms(half.p99),
            ms(disk.fdatasync_p99),
            ms(half.p99) / ms(disk.fdatasync_p99)
        )?;
        cluster.stop(&runtime)?;
    }
    if args.restart_entries > 0 {
        let report = cluster::restart_time(&bin_dir, &dir.join("restart"), args, &runtime)?;
        writeln!(out, "{report}")?;
    }
    if args.shapes {
        let report = shapes::run(&dir.join("shapes"), args.entry_bytes, disk.dd_bytes_per_s)?;
        writeln!(out, "{report}")?;
    }
    Ok(out)
}

/// Bytes written so far to the block device holding `path` (sectors written, from `/proc/diskstats`), so a
/// measurement counts what reached the disk: zero-filled segments, fsync'd partial pages, metadata. The whole
/// device: run on a quiet machine. 0 if the device is not found (e.g. a tmpfs).
pub fn device_written_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    std::fs::read_to_string("/proc/diskstats")
        .ok()
        .and_then(|stats| {
            stats.lines().find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let matches = f.len() > 9 && f[0].parse() == Ok(major) && f[1].parse() == Ok(minor);
                matches.then(|| f[9].parse::<u64>().ok()).flatten()
            })
        })
        .map_or(0, |sectors| sectors * 512)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
