//! `logtank bench zk`: the ZooKeeper-protocol load tool (`bench/zk`), for coordd or any ZooKeeper;
//! `logtank bench bookie`: three local bookies against the disk's limits (`bench/bookie`);
//! `logtank bench replication`: the writer without and with bookies mode against Redis AOF everysec/always.
//! `bench/zk/compare` drives it against both servers side by side; results are in docs/benchmarks.md.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// N sessions × M outstanding requests of create/set/get/delete/mixed; ops/s, latency percentiles, RSS.
    Zk {
        #[command(flatten)]
        args: logtank_bench_zk::Args,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Three local bookies (a fresh coordd beside them), E=Qw=3 Qa=2 ledgers under load, against the disk's
    /// own limits; with --restart-entries, a restart with that many entries; with --shapes, the entry
    /// store's two shapes.
    Bookie {
        #[command(flatten)]
        args: logtank_bench_bookie::Args,
    },
    /// The writer in replication mode none, in bookies mode (three local bookies, E=Qw=3 Qa=2) and Redis 7
    /// (XADD, AOF everysec and always), same load: records/s, p99, ratios (needs redis-server on PATH).
    Replication {
        #[command(flatten)]
        args: logtank_bench_bookie::replication::ReplicationArgs,
    },
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Bookie { args } => {
            print!("{}", logtank_bench_bookie::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Replication { args } => {
            print!("{}", logtank_bench_bookie::replication::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Zk { args, json } => {
            let report = logtank_bench_zk::run(&args)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_markdown());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
