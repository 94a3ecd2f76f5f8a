use clap::Parser;
use logtank_indexes::{Cli, Indexes};

fn main() -> std::process::ExitCode {
    logtank_runtime::run::<Indexes>(Cli::parse().into_common())
}
