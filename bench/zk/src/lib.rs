//! `zk-bench` (later `logtank bench zk`): logtank's own load tool for ZooKeeper-protocol servers, used to
//! compare logtank-coordd with Apache ZooKeeper (DESIGN §8; `bench/zk/compare`, `docs/benchmarks.md`).
//!
//! Load model: `--sessions` sessions, each one TCP connection keeping `--outstanding` requests in flight
//! (pipelined, replies matched in order: [`client`]), values of `--value-bytes`. Phases run one after the
//! other over the key space `<root>/k<index>`:
//!
//! - `create` appends keys after the last one, `delete` removes keys from the first one;
//! - `set`, `get` and `mixed` (`--read-percent` gets, the rest sets) pick keys uniformly at random.
//!
//! Each phase ends after `--ops` operations (for `delete`, also when no key is left) or after `--seconds`,
//! whichever comes first. Per phase the report has ops/s, latency percentiles (from just before a request is
//! written to just after its reply is read), errors, and with `--server-pid` the server's RSS before and
//! after and its CPU use; the tool's own CPU use shows whether it, not the server, was the limit.
//!
//! The client is deliberately cheap: the `logtank-zk` codecs, no watches, one task per session, by default
//! on one thread (`--threads`), so on a small machine most of the CPU is left to the server.
#![forbid(unsafe_code)]

pub mod client;
pub mod histogram;
mod procfs;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logtank_zk::{err, Acl, CreateKind, CreateRequest, ReplyHeader, Request};
use serde::Serialize;

use crate::client::{Pipeline, Session};
use crate::histogram::Histogram;

/// Sessions one run may open (ZooKeeper's and coordd's per-IP connection limits are far lower by default).
pub const SESSIONS_MAX: usize = 4096;
/// Requests in flight per session: ZooKeeper throttles past 1000 outstanding requests in total
/// (`globalOutstandingLimit`), so more than this only measures its throttle.
pub const OUTSTANDING_MAX: usize = 10_000;
/// Largest value: the request must fit in ZooKeeper's default 1 MiB frame with its path and header.
pub const VALUE_BYTES_MAX: usize = 1_000_000;
/// Longest a phase may run, so a typo cannot start a benchmark that never ends.
pub const PHASE_SECONDS_MAX: f64 = 24.0 * 3600.0;

/// What a phase does to the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Create new keys after the existing ones.
    Create,
    /// setData on random existing keys.
    Set,
    /// getData on random existing keys.
    Get,
    /// Delete keys, oldest first.
    Delete,
    /// `--read-percent` getData, the rest setData, on random existing keys.
    Mixed,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Set => "set",
            Phase::Get => "get",
            Phase::Delete => "delete",
            Phase::Mixed => "mixed",
        }
    }
}

/// `zk-bench` / `logtank bench zk` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The server, host:port (coordd or ZooKeeper).
    #[arg(long, default_value = "127.0.0.1:2181")]
    pub server: String,
    /// Sessions (one TCP connection each).
    #[arg(long, default_value_t = 8)]
    pub sessions: usize,
    /// Requests each session keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub outstanding: usize,
    /// Bytes of each value written by create and set.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Phases, in order (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "create,set,get,mixed,delete"
    )]
    pub phases: Vec<Phase>,
    /// Operations per phase (all sessions together); a phase also ends after --seconds.
    #[arg(long, default_value_t = 100_000)]
    pub ops: u64,
    /// Seconds per phase (a phase also ends after --ops); unset: --ops alone decides.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Percentage of getData in the mixed phase; the rest is setData.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub read_percent: u32,
    /// Parent of the keys (created with its parents if missing; removed after a delete phase that empties it).
    #[arg(long, default_value = "/zk-bench")]
    pub root: String,
    /// Keys that already exist under --root (k0 … k<N-1>), for runs without a create phase.
    #[arg(long, default_value_t = 0)]
    pub existing_keys: u64,
    /// The server's pid, to report its RSS (VmRSS) and CPU use around each phase.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Session timeout asked for, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub session_timeout_ms: i32,
    /// Longest wait for any reply before the run fails, in seconds.
    #[arg(long, default_value_t = 60)]
    pub reply_timeout_secs: u64,
    /// Threads the load tool runs on (1: a single-threaded runtime, leaving the other cores to the server).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Before each phase, wait up to this many seconds for a quiet machine (a shared machine's builds and
    /// tests would otherwise compete with the server); 0: do not wait. Sessions are pinged meanwhile.
    #[arg(long, default_value_t = 0.0)]
    pub quiet_wait_secs: f64,
    /// A quiet machine: its CPU use over one second at most this, in percent of one CPU.
    #[arg(long, default_value_t = 30.0)]
    pub quiet_cpu_percent: f64,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// One phase's results.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub phase: Phase,
    /// Replies received (errors included).
    pub ops: u64,
    /// Replies with a non-zero error code.
    pub errors: u64,
    /// The first error code seen, if any.
    pub first_error: Option<i32>,
    pub seconds: f64,
    /// Successful replies per second.
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Keys in the key space after the phase.
    pub keys_after: u64,
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_bytes: Option<u64>,
    /// Server CPU time over the phase's wall time (100 = one core busy).
    pub server_cpu_percent: Option<f64>,
    /// The load tool's own CPU time over the phase's wall time.
    pub client_cpu_percent: f64,
    /// The whole machine's CPU use over the phase (200 = two CPUs busy): what is not the server's or the
    /// tool's is other processes competing with the benchmark.
    pub machine_cpu_percent: Option<f64>,
    /// Seconds spent waiting for a quiet machine before the phase (`--quiet-wait-secs`).
    pub quiet_wait_secs: f64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: String,
    pub sessions: usize,
    pub outstanding: usize,
    pub value_bytes: usize,
    pub threads: usize,
    pub server_rss_start_bytes: Option<u64>,
    pub server_rss_end_bytes: Option<u64>,
    pub phases: Vec<PhaseReport>,
}

impl Report {
    /// The report as a Markdown table, one row per phase.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "server {}: {} sessions × {} outstanding, {}-byte values, load tool on {} thread(s)\n",
            self.server, self.sessions, self.outstanding, self.value_bytes, self.threads
        );
        let _ = writeln!(
            s,
            "| phase | ops | errors | s | ops/s | p50 µs | p99 µs | p99.9 µs | max µs | server RSS after | server CPU | tool CPU | machine CPU |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for p in &self.phases {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0}% | {} |",
                p.phase.name(),
                p.ops,
                p.errors,
                p.seconds,
                p.ops_per_sec,
                p.p50_us,
                p.p99_us,
                p.p999_us,
                p.max_us,
                p.server_rss_after_bytes.map_or("-".into(), mib),
                p.server_cpu_percent.map_or("-".into(), |c| format!("{c:.0}%")),
                p.client_cpu_percent,
                p.machine_cpu_percent.map_or("-".into(), |c| format!("{c:.0}%")),
            );
        }
        if let (Some(a), Some(b)) = (self.server_rss_start_bytes, self.server_rss_end_bytes) {
            let _ = writeln!(s, "\nserver RSS: {} at start, {} at end", mib(a), mib(b));
        }
        s
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Runs the benchmark on a runtime of its own (`--threads` workers). Call [`run_async`] from inside a runtime.
pub fn run(args: &Args) -> Result<Report> {
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run_async(args))
}

fn check(args: &Args) -> Result<()> {
    if args.sessions == 0 || args.sessions > SESSIONS_MAX {
        bail!("--sessions must be 1..={SESSIONS_MAX}");
    }
    if args.outstanding == 0 || args.outstanding > OUTSTANDING_MAX {
        bail!("--outstanding must be 1..={OUTSTANDING_MAX}");
    }
    if args.value_bytes > VALUE_BYTES_MAX {
        bail!("--value-bytes must be at most {VALUE_BYTES_MAX}");
    }
    if !(0.0..=PHASE_SECONDS_MAX).contains(&args.quiet_wait_secs) {
        bail!("--quiet-wait-secs must be in [0, {PHASE_SECONDS_MAX}]");
    }
    if let Some(s) = args.seconds {
        if !(s > 0.0 && s <= PHASE_SECONDS_MAX) {
            bail!("--seconds must be in (0, {PHASE_SECONDS_MAX}]");
        }
    }
    if !args.root.starts_with('/') || args.root.ends_with('/') || args.root.len() < 2 {
        bail!("--root must be an absolute path other than / without a trailing slash");
    }
    if args.phases.is_empty() {
        bail!("--phases is empty");
    }
    Ok(())
}

/// Runs the benchmark on the current tokio runtime.
pub async fn run_async(args: &Args) -> Result<Report> {
    check(args)?;
    let reply_timeout = Duration::from_secs(args.reply_timeout_secs.max(1));
    let mut handles = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        let server = args.server.clone();
        let timeout_ms = args.session_timeout_ms;
        handles.push(tokio::spawn(async move {
            Session::connect(&server, timeout_ms, reply_timeout).await
        }));
    }
    let mut sessions = Vec::with_capacity(args.sessions);
    for h in handles {
        sessions.push(h.await??);
    }
    ensure_path(&mut sessions[0], &args.root).await?;

    let rss_start = args.server_pid.and_then(procfs::rss_bytes);
    let mut keys = KeyRange {
        lo: 0,
        hi: args.existing_keys,
    };
    let mut phases = Vec::with_capacity(args.phases.len());
    let mut deleted_any = false;
    for &phase in &args.phases {
        let waited = wait_quiet(args, &mut sessions).await?;
        let (mut report, back) = run_phase(args, phase, sessions, &mut keys).await?;
        report.quiet_wait_secs = waited;
        sessions = back;
        if !args.quiet {
            eprintln!(
                "zk-bench: {:<6} {:>9} ops {:>6.2} s {:>9.0} ops/s  p50 {:>6.0} µs  p99 {:>7.0} µs  errors {}",
                phase.name(),
                report.ops,
                report.seconds,
                report.ops_per_sec,
                report.p50_us,
                report.p99_us,
                report.errors
            );
        }
        deleted_any |= phase == Phase::Delete;
        phases.push(report);
    }
    if deleted_any && keys.lo == keys.hi {
        // The key space is empty again: leave the server as we found it (best effort; its parents stay).
        let _ = sessions[0]
            .call(&Request::Delete {
                path: args.root.clone(),
                version: -1,
            })
            .await;
    }
    let rss_end = args.server_pid.and_then(procfs::rss_bytes);
    for s in sessions {
        s.close().await?;
    }
    Ok(Report {
        server: args.server.clone(),
        sessions: args.sessions,
        outstanding: args.outstanding,
        value_bytes: args.value_bytes,
        threads: args.threads.max(1),
        server_rss_start_bytes: rss_start,
        server_rss_end_bytes: rss_end,
        phases,
    })
}

/// Waits (at most `--quiet-wait-secs`) until the machine's CPU use over a second is at most
/// `--quiet-cpu-percent`, pinging every session each second; returns the seconds waited.
async fn wait_quiet(args: &Args, sessions: &mut [Session]) -> Result<f64> {
    let started = Instant::now();
    if args.quiet_wait_secs <= 0.0 {
        return Ok(0.0);
    }
    let mut said = false;
    loop {
        let before = procfs::machine_cpu();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for s in sessions.iter_mut() {
            s.ping().await?;
        }
        let busy = before
            .zip(procfs::machine_cpu())
            .and_then(|(a, b)| procfs::machine_cpu_percent(a, b));
        let waited = started.elapsed().as_secs_f64();
        match busy {
            Some(b) if b > args.quiet_cpu_percent && waited < args.quiet_wait_secs => {
                if !said && !args.quiet {
                    eprintln!("zk-bench: waiting for a quiet machine ({b:.0}% CPU busy)");
                    said = true;
                }
            }
            _ => return Ok(waited),
        }
    }
}

/// Creates `path` and its missing parents (empty, open ACL).
async fn ensure_path(session: &mut Session, path: &str) -> Result<()> {
    for (i, _) in path.match_indices('/').skip(1).chain([(path.len(), "")]) {
        let p = &path[..i];
        let (h, _) = session.call(&create_request(p.to_string(), None)).await?;
        if h.err != 0 && h.err != err::NODE_EXISTS {
            bail!("creating {p}: error {}", h.err);
        }
    }
    Ok(())
}

fn create_request(path: String, data: Option<Vec<u8>>) -> Request {
    Request::Create(CreateRequest {
        kind: CreateKind::Create,
        path,
        data,
        acl: vec![Acl::world_all()],
        flags: 0,
        ttl_ms: 0,
    })
}

/// Keys `lo..hi` exist.
#[derive(Debug, Clone, Copy)]
struct KeyRange {
    lo: u64,
    hi: u64,
}

/// What every session of a phase shares: the op counter and the end.
#[derive(Debug)]
struct PhaseShared {
    phase: Phase,
    /// Operations handed out so far; for create and delete also the offset of the next key.
    issued: AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
    keys: KeyRange,
    root: String,
    value: Vec<u8>,
    read_percent: u32,
}

impl PhaseShared {
    /// Operations actually handed out (the counter overshoots by one per session at the end).
    fn handed_out(&self) -> u64 {
        self.issued.load(Ordering::Relaxed).min(self.limit)
    }
}

/// One session's share of a phase: hands out requests, records replies.
#[derive(Debug)]
struct Work {
    shared: Arc<PhaseShared>,
    rng: u64,
    latency: Histogram,
    ops: u64,
    errors: u64,
    first_error: Option<i32>,
}

impl Work {
    fn key(&self, index: u64) -> String {
        format!("{}/k{index}", self.shared.root)
    }

    /// xorshift64*: cheap, and uniform enough to spread requests over the keys.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11
    }

    fn random_key(&mut self) -> String {
        let KeyRange { lo, hi } = self.shared.keys;
        let r = self.random();
        self.key(lo + r % (hi - lo).max(1))
    }

    fn set(&mut self) -> Request {
        let path = self.random_key();
        Request::SetData {
            path,
            data: Some(self.shared.value.clone()),
            version: -1,
        }
    }

    fn get(&mut self) -> Request {
        Request::GetData {
            path: self.random_key(),
            watch: false,
        }
    }
}

impl Pipeline for Work {
    fn next(&mut self) -> Option<Request> {
        let s = &*self.shared;
        if s.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let n = s.issued.fetch_add(1, Ordering::Relaxed);
        if n >= s.limit {
            return None;
        }
        let (phase, keys, read_percent) = (s.phase, s.keys, u64::from(s.read_percent));
        Some(match phase {
            Phase::Create => create_request(self.key(keys.hi + n), Some(self.shared.value.clone())),
            Phase::Delete => Request::Delete {
                path: self.key(keys.lo + n),
                version: -1,
            },
            Phase::Set => self.set(),
            Phase::Get => self.get(),
            Phase::Mixed => {
                if self.random() % 100 < read_percent {
                    self.get()
                } else {
                    self.set()
                }
            }
        })
    }

    fn done(&mut self, header: ReplyHeader, _body: &[u8], latency: Duration) {
        self.ops += 1;
        self.latency.record(latency.as_nanos() as u64);
        if header.err != 0 {
            self.errors += 1;
            self.first_error.get_or_insert(header.err);
        }
    }
}

async fn run_phase(
    args: &Args,
    phase: Phase,
    sessions: Vec<Session>,
    keys: &mut KeyRange,
) -> Result<(PhaseReport, Vec<Session>)> {
    let existing = keys.hi - keys.lo;
    if matches!(phase, Phase::Set | Phase::Get | Phase::Mixed) && existing == 0 {
        bail!(
            "phase {} needs keys: run a create phase first or pass --existing-keys",
            phase.name()
        );
    }
    let limit = match phase {
        Phase::Delete => args.ops.min(existing),
        _ => args.ops,
    };
    let value: Vec<u8> = (0..args.value_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let rss_before = args.server_pid.and_then(procfs::rss_bytes);
    let server_cpu_before = args.server_pid.and_then(procfs::cpu_seconds);
    let client_cpu_before = procfs::own_cpu_seconds();
    let machine_before = procfs::machine_cpu();
    let started = Instant::now();
    let shared = Arc::new(PhaseShared {
        phase,
        issued: AtomicU64::new(0),
        limit,
        deadline: args.seconds.map(|s| started + Duration::from_secs_f64(s)),
        keys: *keys,
        root: args.root.clone(),
        value,
        read_percent: args.read_percent,
    });
    let mut tasks = Vec::with_capacity(sessions.len());
    for (i, mut session) in sessions.into_iter().enumerate() {
        let mut work = Work {
            shared: shared.clone(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) << 17) ^ started.elapsed().subsec_nanos() as u64,
            latency: Histogram::default(),
            ops: 0,
            errors: 0,
            first_error: None,
        };
        let outstanding = args.outstanding;
        tasks.push(tokio::spawn(async move {
            let r = session.pipeline(&mut work, outstanding).await;
            (session, work, r)
        }));
    }
    let mut back = Vec::with_capacity(tasks.len());
    let mut latency = Histogram::default();
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    for t in tasks {
        let (session, work, r) = t.await?;
        r.with_context(|| format!("phase {}", phase.name()))?;
        latency.merge(&work.latency);
        ops += work.ops;
        errors += work.errors;
        first_error = first_error.or(work.first_error);
        back.push(session);
    }
    let seconds = started.elapsed().as_secs_f64();
    let client_cpu = procfs::own_cpu_seconds() - client_cpu_before;
    let machine_cpu = machine_before
        .zip(procfs::machine_cpu())
        .and_then(|(a, b)| procfs::machine_cpu_percent(a, b));
    let server_cpu = args
        .server_pid
        .and_then(procfs::cpu_seconds)
        .zip(server_cpu_before)
        .map(|(after, before)| after - before);
    let rss_after = args.server_pid.and_then(procfs::rss_bytes);
    let handed_out = shared.handed_out();
    match phase {
        Phase::Create => keys.hi += handed_out,
        Phase::Delete => keys.lo += handed_out,
        _ => {}
    }
    let us = |ns: u64| ns as f64 / 1e3;
    let report = PhaseReport {
        phase,
        ops,
        errors,
        first_error,
        seconds,
        ops_per_sec: (ops - errors) as f64 / seconds.max(1e-9),
        p50_us: us(latency.quantile(0.50)),
        p99_us: us(latency.quantile(0.99)),
        p999_us: us(latency.quantile(0.999)),
        max_us: us(latency.max()),
        keys_after: keys.hi - keys.lo,
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        server_cpu_percent: server_cpu.map(|c| 100.0 * c / seconds.max(1e-9)),
        client_cpu_percent: 100.0 * client_cpu / seconds.max(1e-9),
        machine_cpu_percent: machine_cpu,
        quiet_wait_secs: 0.0,
    };
    Ok((report, back))
}
