//! `logtank bench replication`: what bookies mode costs the writer, in one run, against the writer without
//! replication and against Redis 7 with both of its AOF fsync policies, with the same load as
//! `storage-bench writer` (16 connections × one request of 100 records of 1 KiB in flight each).
//!
//! Per round, one server at a time on a fresh directory: logtank-writer `replication.mode = "none"`, then a
//! fresh coordd and three local bookies with the writer in bookies mode (E = Qw = 3, Qa = 2), then Redis
//! `appendfsync everysec` and `appendfsync always`. Every writer row has `writer.ack = "fsync"`.
//! Targets (issue 12): bookies mode ≥ 0.5× mode none, and ≥ 2× Redis `always` (the closest durability
//! Redis offers on one machine). Nothing here asserts a time; the report is Markdown.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use logtank_bench_storage::load::{Content, Window};
use logtank_bench_storage::procs::{self, Quiet};
use logtank_bench_storage::writes::{self, Row, WriteArgs};
use logtank_bench_storage::{disk, fresh_dir, Env};

use crate::Cluster;

#[derive(clap::Args, Debug, Clone)]
pub struct ReplicationArgs {
    /// Working directory (wiped per server); on the disk being measured.
    #[arg(long, default_value = "target/bench-replication")]
    pub dir: PathBuf,
    /// Where logtank-writer, logtank-coordd and logtank-bookie are (default: beside this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Seconds each server is measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 3.0)]
    pub warmup_seconds: f64,
    /// Connections, one thread each, one request in flight each.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Records per send_batch, and XADDs per pipelined round trip.
    #[arg(long, default_value_t = 100)]
    pub batch_records: usize,
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Times the four servers are measured, one after the other each time.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// MiB written by the dd probe of the disk.
    #[arg(long, default_value_t = 512)]
    pub dd_mib: u64,
    #[command(flatten)]
    pub quiet: Quiet,
}

/// One round's rows.
#[derive(Debug)]
struct Round {
    none: Row,
    bookies: Row,
    everysec: Row,
    always: Row,
}

pub fn run(args: &ReplicationArgs) -> Result<String> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the directory of this executable")?
            .to_path_buf(),
    };
    std::fs::create_dir_all(&args.dir)?;
    let env = Env {
        dir: args.dir.canonicalize()?,
        bin_dir: bin_dir.clone(),
        quiet: args.quiet,
    };
    let writer_bin = procs::binary(
        &bin_dir,
        "logtank-writer",
        "cargo build --release -p logtank-writer",
    )?;
    let redis_bin = procs::on_path("redis-server", "redis-server")?;
    let write_args = WriteArgs {
        seconds: args.seconds,
        warmup_seconds: args.warmup_seconds,
        connections: args.connections,
        batch_records: args.batch_records,
        record_bytes: args.record_bytes,
        dd_mib: args.dd_mib,
        redis_maxlen: 4_000_000,
        rounds: args.rounds,
        no_redis: false,
        redis_no_aof_rewrite: false,
    };
    let content = Content {
        index_code: "bench".into(),
        batch_records: args.batch_records,
        record_bytes: args.record_bytes,
    };
    let window = Window {
        warmup: Duration::from_secs_f64(args.warmup_seconds),
        measure: Duration::from_secs_f64(args.seconds),
    };
    let load_before = procs::load_average();
    eprintln!("disk: dd {} MiB oflag=direct, fdatasyncs", args.dd_mib);
    let disk = disk::measure(&fresh_dir(&env.dir.join("disk"))?, args.dd_mib)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rounds = Vec::new();
    for round in 1..=args.rounds.max(1) {
        eprintln!("round {round} of {}", args.rounds.max(1));
        let fsync = "writer.ack=fsync".to_string();
        let none = writes::writer_row_with(
            &env,
            &writer_bin,
            "logtank-writer, replication none",
            std::slice::from_ref(&fsync),
            &content,
            window,
            &write_args,
        )?;
        let cluster_dir = fresh_dir(&env.dir.join("cluster"))?;
        let cluster = Cluster::start(&bin_dir, &cluster_dir, 3, &[], &runtime)?;
        let bookies = writes::writer_row_with(
            &env,
            &writer_bin,
            "logtank-writer, replication bookies (E=Qw=3, Qa=2)",
            &[
                fsync,
                format!("coord.servers={}", cluster.coord_servers()),
                "replication.mode=bookies".into(),
                "replication.password=bench".into(),
            ],
            &content,
            window,
            &write_args,
        );
        cluster.stop(&runtime)?;
        writes::remove(&cluster_dir)?;
        let bookies = bookies?;
        let everysec = writes::redis_row(&env, &redis_bin, "everysec", &content, window, &write_args)?;
        let always = writes::redis_row(&env, &redis_bin, "always", &content, window, &write_args)?;
        rounds.push(Round {
            none,
            bookies,
            everysec,
            always,
        });
    }
    Ok(report(args, &disk, &rounds, load_before, procs::load_average()))
}

fn report(
    args: &ReplicationArgs,
    disk: &disk::Disk,
    rounds: &[Round],
    load_before: Option<f64>,
    load_after: Option<f64>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### Replication: {} connections × {} records of {} bytes per round trip, {:.0} s measured after {:.0} s warm-up\n",
        args.connections, args.batch_records, args.record_bytes, args.seconds, args.warmup_seconds
    );
    let _ = writeln!(
        s,
        "| server | records/s | MB/s | p50 / p99 / max per round trip | server CPU | server CPU per record | client CPU | other CPU | refused |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    let several = rounds.len() > 1;
    for (i, r) in rounds.iter().enumerate() {
        let round = if several {
            format!(" (round {})", i + 1)
        } else {
            String::new()
        };
        for row in [&r.none, &r.bookies, &r.everysec, &r.always] {
            let l = &row.result;
            let _ = writeln!(
                s,
                "| {}{round} | {:.0} | {:.1} | {:.2} / {:.2} / {:.2} ms | {:.0} % | {:.1} µs | {:.0} % | {:.0} % | {} |",
                row.name,
                l.records_per_s(),
                row.mb_per_s(),
                writes::ms(l.latency.quantile(0.5)),
                writes::ms(l.latency.quantile(0.99)),
                writes::ms(l.latency.max()),
                l.percent(l.server_cpu_s),
                writes::cpu_per_record(l) * 1e6,
                l.percent(l.client_cpu_s),
                l.other_percent(),
                l.errors,
            );
        }
    }
    let _ = writeln!(
        s,
        "| disk: dd bs=1M oflag=direct, {} MiB | | {:.0} | one 4 KiB write+fdatasync p50 / p99: {:.2} / {:.2} ms | | | | | |\n",
        args.dd_mib,
        disk.dd_bytes_per_s / 1e6,
        disk.fdatasync_p50.as_secs_f64() * 1e3,
        disk.fdatasync_p99.as_secs_f64() * 1e3
    );
    for (i, r) in rounds.iter().enumerate() {
        let round = if several {
            format!(" (round {})", i + 1)
        } else {
            String::new()
        };
        let rate = |row: &Row| row.result.records_per_s();
        let p99 = |row: &Row| row.result.latency.quantile(0.99).max(1) as f64;
        let _ = writeln!(
            s,
            "- **bookies / none{round}: {:.2}× records/s** (target ≥ 0.5×), p99 {:.2}×",
            rate(&r.bookies) / rate(&r.none),
            p99(&r.bookies) / p99(&r.none)
        );
        let _ = writeln!(
            s,
            "- **bookies / Redis appendfsync always{round}: {:.2}× records/s** (target ≥ 2×), p99 {:.2}×",
            rate(&r.bookies) / rate(&r.always),
            p99(&r.bookies) / p99(&r.always)
        );
        let _ = writeln!(
            s,
            "- bookies / Redis appendfsync everysec{round}: {:.2}× records/s, p99 {:.2}×; none / Redis everysec {:.2}×",
            rate(&r.bookies) / rate(&r.everysec),
            p99(&r.bookies) / p99(&r.everysec),
            rate(&r.none) / rate(&r.everysec)
        );
        for row in [&r.none, &r.bookies, &r.everysec, &r.always] {
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
        "- CPU in % of one CPU; \"other\" is the rest of the machine; load average before / after: {} / {}",
        writes::fmt_load(load_before),
        writes::fmt_load(load_after)
    );
    s
}
