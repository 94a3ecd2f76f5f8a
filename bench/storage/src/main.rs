//! `storage-bench`: see the library. Prints the report as Markdown on stdout, progress on stderr.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = logtank_bench_storage::Args::parse();
    print!("{}", logtank_bench_storage::run(args)?);
    Ok(())
}
