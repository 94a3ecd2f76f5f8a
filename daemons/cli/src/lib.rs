//! The `logtank` command: run the suite locally (`up`), inspect journals (`journal …`), and look into
//! coordination (`zk …`), measure a server (`bench zk`).
//!
//! Later issues add the client commands (send, read, recover, tail, status) here.
#![forbid(unsafe_code)]

pub mod bench_cmd;
pub mod journal_cmd;
pub mod up;
pub mod zk_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "logtank",
    version,
    about = "logtank: the durable write log behind a search service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the suite on this machine in the foreground, on loopback; Ctrl-C stops it.
    Up(up::UpArgs),
    /// Inspect or repair a journal directory (offline: stop the daemon that owns it first).
    Journal {
        #[command(subcommand)]
        command: journal_cmd::JournalCommand,
    },
    /// A ZooKeeper shell for coordd or a ZooKeeper ensemble: one command, or commands from stdin.
    Zk(zk_cmd::ZkArgs),
    /// Load tools that measure a running server (see docs/benchmarks.md).
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCommand,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Journal { command } => journal_cmd::run(command),
        Command::Zk(args) => zk_cmd::run(args),
        Command::Bench { command } => bench_cmd::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("logtank: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the daemon binaries are: next to this executable (a cargo build or /usr/bin with /usr/sbin), then PATH.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    let candidates = beside
        .into_iter()
        .chain([PathBuf::from("/usr/sbin").join(name)])
        .chain(
            std::env::var_os("PATH")
                .map(|paths| {
                    std::env::split_paths(&paths)
                        .map(|p| p.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    candidates.into_iter().find(|p| p.is_file())
}
