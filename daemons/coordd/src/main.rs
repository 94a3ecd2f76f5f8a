use clap::Parser;
use logtank_runtime::CommonArgs;

/// logtank-coordd: a coordination daemon speaking the Apache ZooKeeper client protocol.
#[derive(Parser, Debug)]
#[command(name = "logtank-coordd", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    logtank_runtime::run::<logtank_coordd::Coordd>(Cli::parse().common)
}
