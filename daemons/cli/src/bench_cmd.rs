//! `logtank bench zk`: the ZooKeeper-protocol load tool (`bench/zk`), for coordd or any ZooKeeper.
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
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
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
