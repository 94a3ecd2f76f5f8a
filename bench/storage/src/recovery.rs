//! Benchmark 2: a full recovery of one large index through logtank-indexes' `read_page`, from the page
//! cache (DESIGN §8: ≥ 500 MB/s for a 1 GiB index).
//!
//! 1. **Fill.** `--index-bytes` of one index go straight into `<root>/storage/raw/live` with
//!    `logtank_journal::Journal`, exactly as logtank-writer stores them: one journal record per batch of
//!    100, its payload the batch's records Thrift-encoded back to back with `timestamp_ms` and `index_code`
//!    set, 50 MiB segments. Then the journal is opened once more with `new_segment_on_open`, as a writer
//!    restart does, so every segment holding the index is closed and the dealer takes all of them.
//!    Docids are unique, so compaction keeps every record and the recovery must return all of them.
//! 2. **Deal.** The `master` and `storage/safe_to_read` markers are created and logtank-indexes started;
//!    the benchmark waits until `get_raw_log_info` lists only the newest raw segment as undealt and the
//!    pipeline reports a cycle with nothing to do (`/status` `pipeline_idle`): dealt, sorted, optimized.
//! 3. **Read.** One full `read_page_raw` pass warms the page cache (reported as the first pass); then
//!    `--passes` timed passes of `read_page_raw` from the initial token until a page without a next token
//!    (pipelined with `Client::read_pages_raw`: the next page is asked for while this one arrives)
//!    (records left encoded: what an engine that decodes lazily pays), then one pass of `read_page` that
//!    decodes every record into `LogRecord`s (what a plain Thrift client pays).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logtank_journal::{Journal, JournalOptions};
use logtank_thrift::{encode_record, Client, ClientConfig, IndexLogInfo, LogPageToken, RawLogInfo};

use crate::procs::{self, cpu_seconds, MachineCpu, Server};
use crate::record::{self, set_docid, Rng};
use crate::writes::fmt_load;
use crate::{fresh_dir, Env};

/// The index the benchmark fills and recovers.
const INDEX_CODE: &str = "recovery-bench";
/// logtank-writer's default raw segment size (`writer.segment_size_bytes`, IndexTank's 50 MiB).
const WRITER_SEGMENT_BYTES: u64 = 50 << 20;
/// Records per raw batch, as the write benchmark's clients send them.
const FILL_BATCH_RECORDS: usize = 100;
/// Distinct record bodies in the fill (docids are all distinct).
const FILL_POOL: usize = 256;
/// The recovery's target (DESIGN §8).
const TARGET_BYTES_PER_S: f64 = 500e6;
/// How often the pipeline's progress is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The most pages one recovery may take before it is declared stuck (a 1 GiB index is ~200 pages of 5 MiB).
const PAGES_MAX: u64 = 10_000_000;

/// Flags of the recovery benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct RecoveryArgs {
    /// Bytes of the index (stored records) to fill and recover.
    #[arg(long, default_value_t = 1 << 30)]
    pub index_bytes: u64,
    /// Size of one stored record.
    #[arg(long, default_value_t = 1024)]
    pub recovery_record_bytes: usize,
    /// Timed read_page_raw passes (after the warming one).
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// Skip the decoding (read_page) pass.
    #[arg(long)]
    pub no_decode: bool,
    /// Longest wait for the pipeline to deal, sort and optimize the index.
    #[arg(long, default_value_t = 600)]
    pub settle_timeout_s: u64,
}

/// One pass over the whole index.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pass {
    pub elapsed: Duration,
    pub pages: u64,
    pub records: u64,
    /// Encoded record bytes delivered.
    pub bytes: u64,
    /// CPU seconds of logtank-indexes and of this process during the pass.
    pub server_cpu_s: f64,
    pub client_cpu_s: f64,
    /// CPU seconds the whole machine was busy during the pass (other processes: this minus the two above).
    pub machine_cpu_s: f64,
    /// The index's files in the page cache just before the pass.
    pub resident_before: Option<f64>,
}

impl Pass {
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Debug, Clone)]
pub struct RecoveryReport {
    pub args: RecoveryArgs,
    pub written_records: u64,
    pub written_bytes: u64,
    pub fill: Duration,
    pub raw_segments: usize,
    pub settle: Duration,
    pub index_info: IndexLogInfo,
    pub raw_info: RawLogInfo,
    pub page_bytes_on_disk: u64,
    pub warm: Pass,
    pub raw: Vec<Pass>,
    pub decoded: Option<Pass>,
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
    /// The machine's busy percentage just before the passes (with `--quiet-wait-s`).
    pub quiet: Option<f64>,
}

pub fn run(env: &Env, args: &RecoveryArgs) -> Result<RecoveryReport> {
    let bin = procs::binary(
        &env.bin_dir,
        "logtank-indexes",
        "cargo build --release -p logtank-indexes",
    )?;
    let load_before = procs::load_average();
    let dir = fresh_dir(&env.dir.join("recovery"))?;
    let root = dir.join("data");
    let raw_live = root.join("storage/raw/live");
    std::fs::create_dir_all(&raw_live)?;

    eprintln!(
        "recovery: filling {} MiB of one index into {}",
        args.index_bytes >> 20,
        raw_live.display()
    );
    let started = Instant::now();
    let (written_records, written_bytes) = fill(&raw_live, args)?;
    let fill_time = started.elapsed();
    let raw_segments = std::fs::read_dir(&raw_live)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".journal"))
        .count();

    std::fs::write(root.join("master"), b"")?;
    std::fs::write(root.join("storage/safe_to_read"), b"")?;
    let config = dir.join("indexes.toml");
    std::fs::write(&config, "# storage-bench: built-in defaults, flags below\n")?;
    let reader: SocketAddr = ([127, 0, 0, 1], procs::free_port()?).into();
    let manager: SocketAddr = ([127, 0, 0, 1], procs::free_port()?).into();
    let admin: SocketAddr = ([127, 0, 0, 1], procs::free_port()?).into();
    let argv: Vec<OsString> = vec![
        "--config".into(),
        config.into(),
        "--listen".into(),
        reader.to_string().into(),
        "--manager-listen".into(),
        manager.to_string().into(),
        "--admin-listen".into(),
        admin.to_string().into(),
        "--data-root".into(),
        root.clone().into(),
    ];
    let mut server = Server::spawn("logtank-indexes", &bin, &argv, &dir.join("indexes.log"))?;
    server.wait_listening(reader)?;
    server.wait_listening(manager)?;
    let started = Instant::now();
    let (raw_info, index_info) = settle(&mut server, manager, admin, args)?;
    let settle_time = started.elapsed();
    let index_dir = root.join("storage/indexes").join(INDEX_CODE);
    let page_bytes_on_disk = dir_bytes(&index_dir);

    let mut client = Client::connect(reader, &ClientConfig::default())
        .with_context(|| format!("connecting to the reader on {reader}"))?;
    let pid = server.pid();
    let quiet = env.quiet.wait("recovery");
    eprintln!("recovery: warming pass");
    let warm = pass(&mut client, pid, &index_dir, false)?;
    check_complete(&warm, written_records, written_bytes)?;
    let mut raw = Vec::new();
    for i in 0..args.passes {
        eprintln!("recovery: timed read_page_raw pass {}", i + 1);
        let p = pass(&mut client, pid, &index_dir, false)?;
        check_complete(&p, written_records, written_bytes)?;
        raw.push(p);
    }
    let decoded = if args.no_decode {
        None
    } else {
        eprintln!("recovery: read_page pass (decoding every record)");
        let mut p = pass(&mut client, pid, &index_dir, true)?;
        check_complete(&p, written_records, written_bytes)?;
        p.bytes = warm.bytes;
        Some(p)
    };
    drop(client);
    server.stop()?;
    std::fs::remove_dir_all(&dir)?;
    let _ = std::process::Command::new("sync").status();
    Ok(RecoveryReport {
        args: args.clone(),
        written_records,
        written_bytes,
        fill: fill_time,
        raw_segments,
        settle: settle_time,
        index_info,
        raw_info,
        page_bytes_on_disk,
        warm,
        raw,
        decoded,
        load_before,
        load_after: procs::load_average(),
        quiet,
    })
}

/// Appends batches of unique-docid records until `index_bytes` are stored; returns records and bytes.
fn fill(raw_live: &Path, args: &RecoveryArgs) -> Result<(u64, u64)> {
    let options = |new_segment_on_open| JournalOptions {
        segment_size_bytes: WRITER_SEGMENT_BYTES,
        new_segment_on_open,
        ..JournalOptions::default()
    };
    let (journal, _) = Journal::open(raw_live, options(true)).context("opening the raw log")?;
    let mut rng = Rng::new(42);
    let mut pool: Vec<_> = (0..FILL_POOL)
        .map(|_| record::make_record(&mut rng, INDEX_CODE, "doc-", args.recovery_record_bytes))
        .collect();
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for r in &mut pool {
        r.timestamp_ms = Some(timestamp_ms);
    }
    let (mut records, mut bytes, mut last) = (0u64, 0u64, 0u64);
    let mut payload = Vec::with_capacity(FILL_BATCH_RECORDS * (args.recovery_record_bytes + 64));
    while bytes < args.index_bytes {
        payload.clear();
        for _ in 0..FILL_BATCH_RECORDS {
            if bytes >= args.index_bytes {
                break;
            }
            let r = &mut pool[(records % FILL_POOL as u64) as usize];
            if let Some(docid) = r.docid.as_mut() {
                set_docid(docid, "doc-", records);
            }
            let before = payload.len();
            encode_record(&mut payload, r);
            bytes += (payload.len() - before) as u64;
            records += 1;
        }
        last = journal.append(&payload)?;
    }
    journal.wait_durable(last)?;
    journal.close()?;
    // A writer restart: a new head segment, so every segment holding the index is closed.
    let (journal, _) = Journal::open(raw_live, options(true))?;
    journal.close()?;
    Ok((records, bytes))
}

/// Waits until everything but the newest raw segment is dealt and a pipeline cycle found nothing to do.
fn settle(
    server: &mut Server,
    manager: SocketAddr,
    admin: SocketAddr,
    args: &RecoveryArgs,
) -> Result<(RawLogInfo, IndexLogInfo)> {
    let mut client = Client::connect(manager, &ClientConfig::default())?;
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let raw = client.get_raw_log_info()?;
        let status: serde_json::Value =
            serde_json::from_str(&procs::http_get(admin, "/status")?).unwrap_or_default();
        if let Some(e) = status["pipeline_error"].as_str() {
            bail!("the pipeline failed: {e}\n{}", server.log_tail());
        }
        let idle = status["pipeline_idle"].as_bool() == Some(true);
        if raw.undealt_segments.len() <= 1 && idle {
            let info = client.get_index_log_info(INDEX_CODE)?;
            eprintln!("recovery: settled after {:.1} s", started.elapsed().as_secs_f64());
            return Ok((raw, info));
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "recovery: {:.0} s: {} raw segments undealt, pipeline {} (cycles {})",
                started.elapsed().as_secs_f64(),
                raw.undealt_segments.len(),
                if idle { "idle" } else { "busy" },
                status["pipeline_cycles"]
            );
        }
        if started.elapsed() > Duration::from_secs(args.settle_timeout_s) {
            bail!(
                "the pipeline did not settle within {} s (--settle-timeout-s): {} raw segments undealt\n{}",
                args.settle_timeout_s,
                raw.undealt_segments.len(),
                server.log_tail()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One full recovery from the initial token; `decode` = `read_page` (every record decoded), else
/// `read_page_raw`.
fn pass(client: &mut Client, server_pid: u32, index_dir: &Path, decode: bool) -> Result<Pass> {
    let resident_before = resident_fraction(index_dir);
    let server0 = cpu_seconds(server_pid).unwrap_or(0.0);
    let own0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let machine0 = MachineCpu::now();
    let started = Instant::now();
    let mut p = Pass {
        resident_before,
        ..Pass::default()
    };
    if decode {
        let mut token = LogPageToken::default();
        loop {
            // The records' wire bytes are those of the raw passes (set by the caller).
            let page = client.read_page(INDEX_CODE, &token)?;
            p.records += page.batch.records.len() as u64;
            p.pages += 1;
            match page.next_page_token {
                Some(t) => token = t,
                None => break,
            }
            if p.pages > PAGES_MAX {
                bail!("the recovery did not end after {PAGES_MAX} pages");
            }
        }
    } else {
        // Pipelined, as `logtank recover` reads: the next page is asked for while this one arrives.
        client.read_pages_raw(INDEX_CODE, &LogPageToken::default(), |page| {
            p.records += page.record_count as u64;
            p.bytes += page.records.len() as u64;
            p.pages += 1;
            p.pages <= PAGES_MAX
        })?;
        if p.pages > PAGES_MAX {
            bail!("the recovery did not end after {PAGES_MAX} pages");
        }
    }
    p.elapsed = started.elapsed();
    p.server_cpu_s = cpu_seconds(server_pid).unwrap_or(0.0) - server0;
    p.client_cpu_s = cpu_seconds(std::process::id()).unwrap_or(0.0) - own0;
    if let (Some(a), Some(b)) = (machine0, MachineCpu::now()) {
        p.machine_cpu_s = a.busy_seconds_until(&b);
    }
    Ok(p)
}

/// A recovery that returns fewer records than were written ended early: that is a bug, not a result.
fn check_complete(p: &Pass, records: u64, bytes: u64) -> Result<()> {
    if p.records != records {
        bail!(
            "the recovery returned {} records in {} pages, but {records} were written ({bytes} bytes)",
            p.records,
            p.pages
        );
    }
    Ok(())
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            _ => vec![e.path()],
        })
        .collect()
}

/// The fraction of the files under `dir` held in the page cache (util-linux `fincore`); `None` if it
/// cannot tell. This VM pages out page cache nobody touched for about a minute, so "from the page cache"
/// is checked, not assumed.
fn resident_fraction(dir: &Path) -> Option<f64> {
    let files = files_under(dir);
    if files.is_empty() {
        return None;
    }
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES,SIZE"])
        .args(&files)
        .output()
        .ok()?;
    let (mut resident, mut size) = (0u64, 0u64);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut v = line.split_whitespace().map(|x| x.parse::<u64>().ok());
        resident += v.next()??;
        size += v.next()??;
    }
    (size > 0).then(|| (resident as f64 / size as f64).min(1.0))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn segments_line(info: &IndexLogInfo) -> String {
    format!(
        "{} optimized, {} sorted, {} unsorted segments; {} optimized + {} unoptimized records",
        info.optimized_segments.len(),
        info.sorted_segments.len(),
        info.unsorted_segments.len(),
        info.optimized_record_count,
        info.unoptimized_record_count
    )
}

impl RecoveryReport {
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n### Recovery of one index: {} records of {} bytes ({:.1} MiB)\n",
            self.written_records,
            self.args.recovery_record_bytes,
            self.written_bytes as f64 / (1 << 20) as f64
        );
        let _ = writeln!(
            s,
            "| pass | time | MB/s | ratio to 500 MB/s | pages | records | indexes CPU | client CPU | other CPU | in page cache before |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        let mut row = |name: &str, p: &Pass| {
            let secs = p.elapsed.as_secs_f64();
            let _ = writeln!(
                s,
                "| {name} | {:.2} s | {:.0} | {:.2}× | {} | {} | {:.0} % | {:.0} % | {:.0} % | {} |",
                secs,
                p.bytes_per_s() / 1e6,
                p.bytes_per_s() / TARGET_BYTES_PER_S,
                p.pages,
                p.records,
                100.0 * p.server_cpu_s / secs,
                100.0 * p.client_cpu_s / secs,
                100.0 * (p.machine_cpu_s - p.server_cpu_s - p.client_cpu_s).max(0.0) / secs,
                p.resident_before
                    .map_or("?".into(), |r| format!("{:.0} %", 100.0 * r)),
            );
        };
        row("first pass (warms the page cache), read_page_raw", &self.warm);
        for (i, p) in self.raw.iter().enumerate() {
            row(&format!("read_page_raw, pass {}", i + 1), p);
        }
        if let Some(p) = &self.decoded {
            row("read_page, every record decoded", p);
        }
        s.push('\n');
        if let Some(best) = self.raw.iter().map(Pass::bytes_per_s).reduce(f64::max) {
            let mut all: Vec<f64> = self.raw.iter().map(Pass::bytes_per_s).collect();
            all.sort_by(f64::total_cmp);
            let median = all[all.len() / 2];
            let _ = writeln!(
                s,
                "- **read_page_raw: median {:.0} MB/s = {:.2}× the 500 MB/s target** (best {:.0} MB/s)",
                median / 1e6,
                median / TARGET_BYTES_PER_S,
                best / 1e6
            );
        }
        let _ = writeln!(
            s,
            "- delivered per pass: {} bytes of records (as stored per index: index_code stripped; {} bytes were written)",
            self.warm.bytes, self.written_bytes
        );
        let _ = writeln!(
            s,
            "- fill: {:.1} s straight into the raw log ({} segments of 50 MiB, the empty head included); pipeline settled {:.1} s after start",
            self.fill.as_secs_f64(),
            self.raw_segments,
            self.settle.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "- index after the pipeline: {}; {:.1} MiB on disk; undealt raw segments: {}",
            segments_line(&self.index_info),
            self.page_bytes_on_disk as f64 / (1 << 20) as f64,
            self.raw_info.undealt_segments.len()
        );
        let _ = writeln!(
            s,
            "- CPU in % of one CPU; load average before / after: {} / {}{}",
            fmt_load(self.load_before),
            fmt_load(self.load_after),
            self.quiet.map_or(String::new(), |b| format!(
                "; the machine was {b:.0} % busy just before the passes"
            ))
        );
        s
    }
}
