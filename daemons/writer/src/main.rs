use clap::Parser;
use logtank_runtime::CommonArgs;

/// logtank-writer: the storage writer (IndexTank's LogWriter.send_batch over Thrift, port 15000).
#[derive(Parser, Debug)]
#[command(name = "logtank-writer", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Refuse writes from start, same as --set readonly.enabled=true (applied after every --set)
    #[arg(long)]
    readonly: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logtank_runtime::run::<logtank_writer::Writer>(logtank_writer::with_readonly_flag(
        cli.common,
        cli.readonly,
    ))
}
