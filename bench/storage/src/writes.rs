//! Benchmark 1: logtank-writer's `send_batch` against Redis 7 streams (`XADD`, `appendonly yes`,
//! `appendfsync everysec`), same records, same pipelining depth, same connections, one after the other in
//! one run, with the disk measured first (DESIGN §8: records/s ≥ 2× Redis).
//!
//! Order: disk, writer `ack = "fsync"`, Redis, writer `ack = "write"`: the two writer rows bracket Redis, so
//! a machine that got busier or quieter during the run shows as a difference between them. Each server runs
//! on a fresh directory that is removed (and `sync`ed) before the next one starts.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::disk::{self, Disk};
use crate::load::{self, Content, LoadResult, RedisWorker, Window, WriterWorker};
use crate::procs::{self, Server};
use crate::resp::Reply;
use crate::{fresh_dir, Env};

/// The stream every Redis connection appends to (one log, as the writer's).
const REDIS_KEY: &str = "logtank-bench";
/// The index code of the writer's records.
const INDEX_CODE: &str = "bench";

/// Flags of the write benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteArgs {
    /// Seconds each server is measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of load before each measurement (not counted).
    #[arg(long, default_value_t = 3.0)]
    pub warmup_seconds: f64,
    /// Connections, one thread each, one request in flight each.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Records per send_batch, and XADDs per pipelined round trip.
    #[arg(long, default_value_t = 100)]
    pub batch_records: usize,
    /// Size of a record as the writer stores it (Thrift-encoded, with its timestamp).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// MiB written by the dd measurement of the disk.
    #[arg(long, default_value_t = 512)]
    pub dd_mib: u64,
    /// XADD … MAXLEN ~ N, so a long run cannot fill the memory (0 = no trimming). The default is more
    /// than a 10 s run adds.
    #[arg(long, default_value_t = 4_000_000)]
    pub redis_maxlen: u64,
    /// Times the three servers are measured, one after the other each time (the machine is shared: more
    /// rounds show how much of a difference is noise).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Leave Redis out (the writer rows alone).
    #[arg(long)]
    pub no_redis: bool,
    /// Start Redis with `--auto-aof-rewrite-percentage 0` (no AOF rewrite during the run; by default Redis
    /// rewrites its AOF each time it doubled past 64 MB, forking and writing the whole stream again).
    #[arg(long)]
    pub redis_no_aof_rewrite: bool,
}

/// One server's row.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub result: LoadResult,
    /// Bytes per record for MB/s: the stored record for the writer, field names + values for Redis.
    pub record_bytes: usize,
    /// Anything worth a line under the table (Redis's AOF rewrites, the writer's own count).
    pub notes: Vec<String>,
}

impl Row {
    pub fn mb_per_s(&self) -> f64 {
        self.result.records_per_s() * self.record_bytes as f64 / 1e6
    }
}

/// One round: the writer with `ack = "fsync"`, Redis, the writer with `ack = "write"`.
#[derive(Debug, Clone)]
pub struct Rows {
    pub fsync: Row,
    pub redis: Option<Row>,
    pub write: Row,
}

impl Rows {
    fn all(&self) -> impl Iterator<Item = &Row> {
        [Some(&self.fsync), self.redis.as_ref(), Some(&self.write)]
            .into_iter()
            .flatten()
    }
}

#[derive(Debug, Clone)]
pub struct WriteReport {
    pub args: WriteArgs,
    pub disk: Disk,
    pub rounds: Vec<Rows>,
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
}

pub fn run(env: &Env, args: &WriteArgs) -> Result<WriteReport> {
    if args.connections == 0 || args.connections > load::CONNECTIONS_MAX {
        bail!("--connections must be 1..={}", load::CONNECTIONS_MAX);
    }
    if args.batch_records == 0 || args.batch_records > load::BATCH_RECORDS_MAX {
        bail!("--batch-records must be 1..={}", load::BATCH_RECORDS_MAX);
    }
    if !(args.seconds > 0.0 && args.seconds <= crate::PHASE_SECONDS_MAX) || args.warmup_seconds < 0.0 {
        bail!(
            "--seconds must be in (0, {}] and --warmup-seconds ≥ 0",
            crate::PHASE_SECONDS_MAX
        );
    }
    let writer_bin = procs::binary(
        &env.bin_dir,
        "logtank-writer",
        "cargo build --release -p logtank-writer",
    )?;
    let redis_bin = if args.no_redis {
        None
    } else {
        Some(procs::on_path("redis-server", "redis-server")?)
    };
    let load_before = procs::load_average();
    let content = Content {
        index_code: INDEX_CODE.into(),
        batch_records: args.batch_records,
        record_bytes: args.record_bytes,
    };
    let window = Window {
        warmup: Duration::from_secs_f64(args.warmup_seconds),
        measure: Duration::from_secs_f64(args.seconds),
    };

    eprintln!(
        "disk: dd {} MiB oflag=direct, {} fdatasyncs",
        args.dd_mib,
        disk::FDATASYNC_SAMPLES
    );
    let disk = disk::measure(&fresh_dir(&env.dir.join("disk"))?, args.dd_mib)?;
    let mut rounds = Vec::new();
    for round in 1..=args.rounds.max(1) {
        if args.rounds > 1 {
            eprintln!("round {round} of {}", args.rounds);
        }
        let fsync = writer_row(env, &writer_bin, "fsync", &content, window, args)?;
        let redis = match &redis_bin {
            Some(bin) => Some(redis_row(env, bin, "everysec", &content, window, args)?),
            None => None,
        };
        let write = writer_row(env, &writer_bin, "write", &content, window, args)?;
        rounds.push(Rows { fsync, redis, write });
    }
    Ok(WriteReport {
        args: args.clone(),
        disk,
        rounds,
        load_before,
        load_after: procs::load_average(),
    })
}

fn writer_row(
    env: &Env,
    bin: &Path,
    ack: &str,
    content: &Content,
    window: Window,
    args: &WriteArgs,
) -> Result<Row> {
    writer_row_with(
        env,
        bin,
        &format!("logtank-writer, ack = \"{ack}\""),
        &[format!("writer.ack={ack}")],
        content,
        window,
        args,
    )
}

/// One measurement of a fresh logtank-writer named `name` in the report, started with `--set` `sets`.
pub fn writer_row_with(
    env: &Env,
    bin: &Path,
    name: &str,
    sets: &[String],
    content: &Content,
    window: Window,
    args: &WriteArgs,
) -> Result<Row> {
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = fresh_dir(&env.dir.join(slug))?;
    let config = dir.join("writer.toml");
    std::fs::write(&config, "# storage-bench: built-in defaults, flags below\n")?;
    let port = procs::free_port()?;
    let admin = procs::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let argv: Vec<OsString> = vec![
        "--config".into(),
        config.into(),
        "--listen".into(),
        addr.to_string().into(),
        "--admin-listen".into(),
        format!("127.0.0.1:{admin}").into(),
        "--data-root".into(),
        dir.join("data").into(),
    ];
    let mut argv = argv;
    for set in sets {
        argv.extend(["--set".into(), set.into()]);
    }
    eprintln!(
        "{name}: {} connections × {} records of {} bytes, {:.0} s warm-up + {:.0} s",
        args.connections, args.batch_records, args.record_bytes, args.warmup_seconds, args.seconds
    );
    let mut server = Server::spawn("logtank-writer", bin, &argv, &dir.join("writer.log"))?;
    server.wait_listening(addr)?;
    let quiet = env.quiet.wait("logtank-writer");
    let workers = (0..args.connections)
        .map(|c| WriterWorker::connect(addr, content, c))
        .collect::<Result<Vec<_>>>()?;
    let result = load::run(workers, window, server.pid())?;
    let mut notes = quiet_note(quiet);
    let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    if let Ok(status) = procs::http_get(admin_addr, "/status") {
        let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        notes.push(format!(
            "writer /status at the end: {} batches, {} records, journal IO {}, replication {} {}",
            v["batches"], v["records"], v["journal_io"], v["replication"], v["replication_state"]
        ));
    }
    let stop = server.stop()?;
    notes.push(format!("stopped in {:.2} s after SIGTERM", stop.as_secs_f64()));
    remove(&dir)?;
    Ok(Row {
        name: name.to_string(),
        result,
        record_bytes: args.record_bytes,
        notes,
    })
}

/// One measurement of a fresh Redis with `--appendonly yes --appendfsync {appendfsync}`.
pub fn redis_row(
    env: &Env,
    bin: &Path,
    appendfsync: &str,
    content: &Content,
    window: Window,
    args: &WriteArgs,
) -> Result<Row> {
    let dir = fresh_dir(&env.dir.join(format!("redis-{appendfsync}")))?;
    let port = procs::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let argv: Vec<OsString> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        appendfsync,
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let mut argv = argv;
    if args.redis_no_aof_rewrite {
        argv.extend(["--auto-aof-rewrite-percentage", "0"].map(OsString::from));
    }
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    eprintln!(
        "redis ({version}): {} connections × {} pipelined XADDs, {:.0} s warm-up + {:.0} s",
        args.connections, args.batch_records, args.warmup_seconds, args.seconds
    );
    let mut server = Server::spawn("redis-server", bin, &argv, &dir.join("redis.log"))?;
    server.wait_listening(addr)?;
    wait_redis_ready(addr)?;
    let maxlen = (args.redis_maxlen > 0).then_some(args.redis_maxlen);
    let quiet = env.quiet.wait("redis");
    let workers = (0..args.connections)
        .map(|c| RedisWorker::connect(addr, REDIS_KEY, maxlen, content, c))
        .collect::<Result<Vec<_>>>()?;
    let result = load::run(workers, window, server.pid())?;
    let mut notes = quiet_note(quiet);
    notes.push(version);
    if let Ok(Reply::Bulk(Some(info))) = load::redis_command(addr, &["INFO"]) {
        let info = String::from_utf8_lossy(&info);
        let f = |k: &str| load::info_field(&info, k).unwrap_or_else(|| "?".into());
        notes.push(format!(
            "INFO at the end: used_memory_human {}, aof_rewrites {}, aof_delayed_fsync {}, aof_last_write_status {}",
            f("used_memory_human"),
            f("aof_rewrites"),
            f("aof_delayed_fsync"),
            f("aof_last_write_status"),
        ));
    }
    if let Ok(Reply::Integer(n)) = load::redis_command(addr, &["XLEN", REDIS_KEY]) {
        notes.push(format!("XLEN {REDIS_KEY} = {n} (MAXLEN ~ {})", args.redis_maxlen));
    }
    let stop = server.stop()?;
    notes.push(format!("stopped in {:.2} s after SIGTERM", stop.as_secs_f64()));
    remove(&dir)?;
    Ok(Row {
        name: if args.redis_no_aof_rewrite {
            format!("Redis streams, XADD, appendfsync {appendfsync}, no AOF rewrite")
        } else {
            format!("Redis streams, XADD, appendfsync {appendfsync}")
        },
        result,
        record_bytes: content.stream_entry_bytes(),
        notes,
    })
}

pub fn quiet_note(busy: Option<f64>) -> Vec<String> {
    busy.map(|b| format!("the machine was {b:.0} % busy (of one CPU) just before the measurement"))
        .into_iter()
        .collect()
}

/// Redis answers `-LOADING` while it reads its AOF at start; a fresh directory is quick, but wait anyway.
fn wait_redis_ready(addr: SocketAddr) -> Result<()> {
    for _ in 0..600 {
        if let Ok(Reply::Simple(s)) = load::redis_command(addr, &["PING"]) {
            if s == "PONG" {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("redis on {addr} did not answer PING")
}

/// Removes a run's directory and flushes what the server left dirty, so the next server starts on a quiet disk.
pub fn remove(dir: &PathBuf) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    let _ = std::process::Command::new("sync").status();
    Ok(())
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A row disturbed by other processes: they took at least this much CPU (percent of one) in its window.
const DISTURBED_OTHER_PERCENT: f64 = 30.0;

impl WriteReport {
    pub fn to_markdown(&self) -> String {
        let a = &self.args;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n### Writes: {} connections × {} records of {} bytes per round trip, {:.0} s measured after {:.0} s warm-up\n",
            a.connections, a.batch_records, a.record_bytes, a.seconds, a.warmup_seconds
        );
        let _ = writeln!(
            s,
            "| server | records/s | MB/s | p50 / p99 / max per round trip | server CPU | server CPU per record | client CPU | other CPU | refused |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        let several = self.rounds.len() > 1;
        for (i, rows) in self.rounds.iter().enumerate() {
            for row in rows.all() {
                let r = &row.result;
                let dagger = if r.other_percent() >= DISTURBED_OTHER_PERCENT {
                    " †"
                } else {
                    ""
                };
                let round = if several {
                    format!(" (round {})", i + 1)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "| {}{round} | {:.0}{dagger} | {:.1} ({} B/record) | {:.2} / {:.2} / {:.2} ms | {:.0} % | {:.1} µs | {:.0} % | {:.0} % | {} |",
                    row.name,
                    r.records_per_s(),
                    row.mb_per_s(),
                    row.record_bytes,
                    ms(r.latency.quantile(0.5)),
                    ms(r.latency.quantile(0.99)),
                    ms(r.latency.max()),
                    r.percent(r.server_cpu_s),
                    cpu_per_record(r) * 1e6,
                    r.percent(r.client_cpu_s),
                    r.other_percent(),
                    r.errors,
                );
            }
        }
        let d = &self.disk;
        let _ = writeln!(
            s,
            "| disk: dd bs=1M oflag=direct, {} MiB | | {:.0} | one 4 KiB write+fdatasync p50 / p99: {:.2} / {:.2} ms | | | | | |",
            a.dd_mib,
            d.dd_bytes_per_s / 1e6,
            d.fdatasync_p50.as_secs_f64() * 1e3,
            d.fdatasync_p99.as_secs_f64() * 1e3
        );
        s.push('\n');
        for (i, rows) in self.rounds.iter().enumerate() {
            let Some(redis) = &rows.redis else { continue };
            let base = redis.result.records_per_s();
            let round = if several {
                format!(" (round {})", i + 1)
            } else {
                String::new()
            };
            for row in [&rows.fsync, &rows.write] {
                let _ = writeln!(
                    s,
                    "- **{} / Redis{round}: {:.2}× records/s** (target ≥ 2×), {:.2}× MB/s; p99 {:.2}×; server CPU per record {:.2}×",
                    row.name,
                    row.result.records_per_s() / base,
                    row.mb_per_s() / redis.mb_per_s(),
                    row.result.latency.quantile(0.99) as f64 / redis.result.latency.quantile(0.99).max(1) as f64,
                    cpu_per_record(&row.result) / cpu_per_record(&redis.result),
                );
            }
        }
        if several {
            let median = |f: fn(&Rows) -> Option<f64>| {
                let mut v: Vec<f64> = self.rounds.iter().filter_map(f).collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied()
            };
            let fsync = median(|r| Some(r.fsync.result.records_per_s()));
            let write = median(|r| Some(r.write.result.records_per_s()));
            let redis = median(|r| r.redis.as_ref().map(|x| x.result.records_per_s()));
            if let (Some(f), Some(w), Some(r)) = (fsync, write, redis) {
                let _ = writeln!(
                    s,
                    "- **medians over {} rounds: ack=fsync {:.0}, Redis {:.0}, ack=write {:.0} records/s: fsync / Redis {:.2}×, write / Redis {:.2}×**",
                    self.rounds.len(), f, r, w, f / r, w / r
                );
            }
        }
        if let Some(first) = self.rounds.first() {
            let _ = writeln!(
                s,
                "- writer ack=fsync writes {:.2}× the dd bandwidth in record bytes",
                first.fsync.mb_per_s() * 1e6 / d.dd_bytes_per_s
            );
        }
        for (i, rows) in self.rounds.iter().enumerate() {
            let round = if several {
                format!(" (round {})", i + 1)
            } else {
                String::new()
            };
            for row in rows.all() {
                if let Some(e) = &row.result.first_error {
                    let _ = writeln!(s, "- {}{round}: first refusal: {e}", row.name);
                }
                for n in &row.notes {
                    let _ = writeln!(s, "- {}{round}: {n}", row.name);
                }
            }
        }
        let _ = writeln!(
            s,
            "- CPU in % of one CPU ({} CPUs); \"other\" is the rest of the machine (†: ≥ {DISTURBED_OTHER_PERCENT:.0} %); load average before / after: {} / {}",
            self.rounds.first().map_or(0, |r| r.fsync.result.cpus),
            fmt_load(self.load_before),
            fmt_load(self.load_after)
        );
        s
    }
}

/// Server CPU seconds per acknowledged record.
pub fn cpu_per_record(r: &LoadResult) -> f64 {
    r.server_cpu_s / r.acked.max(1) as f64
}

pub fn fmt_load(l: Option<f64>) -> String {
    l.map_or("?".into(), |l| format!("{l:.2}"))
}
