//! `zk-bench`: the ZooKeeper-protocol load tool (see the library's documentation). Prints the report as a
//! Markdown table, or as JSON with `--json`.

use clap::Parser;

/// Load a ZooKeeper-protocol server (coordd or ZooKeeper) with pipelined sessions and report ops/s,
/// latency percentiles and the server's RSS per phase.
#[derive(Parser, Debug)]
#[command(name = "zk-bench", version)]
struct Cli {
    #[command(flatten)]
    args: logtank_bench_zk::Args,
    /// Print the report as JSON (one object) instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = logtank_bench_zk::run(&cli.args)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(())
}
