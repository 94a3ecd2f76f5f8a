//! `storage-bench`: logtank's storage benchmarks (DESIGN §8), results in `docs/benchmarks.md`.
//!
//! - [`writes`]: logtank-writer's `send_batch` against Redis 7 streams (`XADD`, `appendfsync everysec`),
//!   the same 1 KiB records pipelined to the same depth over the same connections, in one run, with the
//!   disk's own bandwidth and fdatasync latency; the writer with `ack = "fsync"` and `ack = "write"`.
//! - [`recovery`]: a full recovery of a 1 GiB index from logtank-indexes' `read_page`, from the page
//!   cache, with records left encoded and decoded.
//!
//! The servers are the release binaries (`--bin-dir`, by default beside this one) and Debian's
//! `redis-server`, each started on free loopback ports in a fresh directory under `--dir` and stopped
//! after its measurement. Benchmarks, not tests: nothing here asserts a time. The one thing checked is
//! that a recovery returns every record written (an early end is a bug, not a result).
//!
//! Modules: [`record`] (the documents, pure), [`resp`] (the Redis protocol, pure), [`load`] (connections
//! and the measured window), [`procs`] (child servers, `/proc`), [`disk`] (dd, fdatasync).
#![forbid(unsafe_code)]

pub mod disk;
pub mod load;
pub mod procs;
pub mod record;
pub mod recovery;
pub mod resp;
pub mod writes;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The longest measured phase accepted, so a typo cannot start a benchmark that never ends.
pub const PHASE_SECONDS_MAX: f64 = 3600.0;

/// Which benchmarks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// Both, writes first.
    All,
    /// logtank-writer vs Redis streams (and the disk).
    Writer,
    /// Recovery of one index through logtank-indexes.
    Reader,
}

/// logtank's storage benchmarks (DESIGN §8): logtank-writer against Redis 7 streams, and a full recovery of one
/// index through logtank-indexes. Prints a Markdown report on stdout, progress on stderr.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "storage-bench", version)]
pub struct Args {
    /// What to run.
    #[arg(value_enum, default_value_t = Which::All)]
    pub which: Which,
    /// Working directory for the servers' data (created; each server's subdirectory is removed after it).
    #[arg(long, default_value = "target/bench-storage")]
    pub dir: PathBuf,
    /// Where logtank-writer and logtank-indexes are [default: the directory of this binary].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// A smoke run of 15–30 s: 2-s phases, 64 MiB dd, a 64 MiB index, one timed pass.
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub quiet: procs::Quiet,
    #[command(flatten)]
    pub writes: writes::WriteArgs,
    #[command(flatten)]
    pub recovery: recovery::RecoveryArgs,
}

/// Where a benchmark works and finds its binaries.
#[derive(Debug, Clone)]
pub struct Env {
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub quiet: procs::Quiet,
}

/// Runs what `args` asks and returns the report as Markdown.
pub fn run(mut args: Args) -> Result<String> {
    if args.quick {
        args.writes.seconds = args.writes.seconds.min(2.0);
        args.writes.warmup_seconds = args.writes.warmup_seconds.min(1.0);
        args.writes.dd_mib = args.writes.dd_mib.min(64);
        args.recovery.index_bytes = args.recovery.index_bytes.min(64 << 20);
        args.recovery.passes = args.recovery.passes.min(1);
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the directory of storage-bench")?
            .to_path_buf(),
    };
    std::fs::create_dir_all(&args.dir)?;
    let env = Env {
        dir: args.dir.canonicalize()?,
        bin_dir,
        quiet: args.quiet,
    };
    let mut out = String::new();
    out.push_str(&machine_line(&env.dir));
    if matches!(args.which, Which::All | Which::Writer) {
        out.push_str(&writes::run(&env, &args.writes)?.to_markdown());
    }
    if matches!(args.which, Which::All | Which::Reader) {
        out.push_str(&recovery::run(&env, &args.recovery)?.to_markdown());
    }
    Ok(out)
}

/// A fresh (emptied) directory.
pub fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// CPU model and count, memory, kernel and the filesystem of `dir`, for the report.
fn machine_line(dir: &Path) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1 << 20) as f64);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let fs = std::process::Command::new("df")
        .args(["--output=source,fstype"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    format!(
        "machine: {cpus} × {model}, {mem_gib:.0} GiB, kernel {}, {} on {fs}\n",
        kernel.trim(),
        dir.display()
    )
}
