use clap::Parser;
use logtank_runtime::CommonArgs;

/// logtank-bookie: BookKeeper-style ledger storage (the bookie protocol, port 3180+N).
#[derive(Parser, Debug)]
#[command(name = "logtank-bookie", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Instance N: config /etc/logtank/bookie-N.toml and log name logtank-bookie-N (the unit
    /// logtank-bookie@N passes it)
    #[arg(long, value_name = "N")]
    instance: Option<u16>,

    /// Refuse adds from start, same as --set bookie.readonly=true (applied after every --set)
    #[arg(long)]
    readonly: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let name = match cli.instance {
        Some(n) => format!("bookie-{n}"),
        None => "bookie".to_string(),
    };
    let common = logtank_bookie::with_readonly_flag(cli.common, cli.readonly);
    std::process::ExitCode::from(logtank_runtime::daemon::run_named::<logtank_bookie::Bookie>(
        &name, common,
    ))
}
