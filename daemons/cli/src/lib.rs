//! The `logtank` command: run the suite locally (`up`), see this host's daemons (`status`), write records
//! (`send`, `generate`), read them back (`read`, `recover`, `tail`), manage the per-index logs (`indexes …`),
//! replicate a slave from its master (`sync`), inspect journals (`journal …`), look into coordination
//! (`zk …`), run bookies and ledgers (`bookie …`, `ledgers …`), measure a server (`bench zk`, `bench bookie`).
//!
//! One module per command (`*_cmd.rs` where the plain name is taken); what several share lives once:
//! `endpoint` (addresses, connect, server errors), `records` (JSON lines), `progress` (counts and rates).
#![forbid(unsafe_code)]

pub mod bench_cmd;
pub mod endpoint;
pub mod generate;
pub mod indexes_cmd;
pub mod journal_cmd;
pub mod ledgers_cmd;
pub mod progress;
pub mod raw_cmd;
pub mod read;
pub mod records;
pub mod send;
pub mod status;
pub mod sync_cmd;
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
    /// One line per daemon of this host (its admin /status) and the marker files of its data root.
    Status(status::StatusArgs),
    /// Send records from JSON lines (a file or stdin) to the writer, in batches.
    Send(send::SendArgs),
    /// Generate N document operations (adds, updates, deletes, re-adds) and send them, or print them.
    Generate(generate::GenerateArgs),
    /// Print an index's whole history as JSON lines, as a recovering index engine reads it.
    Read(read::ReadArgs),
    /// Read an index's whole history, replay it, and report records, documents and throughput.
    Recover(read::RecoverArgs),
    /// Follow new records of one or more indexes, as JSON lines.
    Tail(read::TailArgs),
    /// The log manager: list indexes, show their segments, the raw log and the optimization queue.
    Indexes(indexes_cmd::IndexesArgs),
    /// Inspect or repair a journal directory (offline: stop the daemon that owns it first).
    Journal {
        #[command(subcommand)]
        command: journal_cmd::JournalCommand,
    },
    /// One run of a slave's replication: copy the master's dealt segments (rsync) and adopt them.
    Sync(sync_cmd::SyncArgs),
    /// A ZooKeeper shell for coordd or a ZooKeeper ensemble: one command, or commands from stdin.
    Zk(zk_cmd::ZkArgs),
    /// Ledgers on the bookies: metaformat, create, write, read, tail, list, info, recover, delete.
    Ledgers(ledgers_cmd::LedgersArgs),
    /// Bookies: format one (its cookie), list those registered.
    Bookie(ledgers_cmd::BookieArgs),
    /// A writer's raw log: `restore` rebuilds it from its ledgers (bookies mode) into a data root.
    Raw(raw_cmd::RawArgs),
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
        Command::Status(args) => status::run(args),
        Command::Send(args) => send::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Read(args) => read::read(args),
        Command::Recover(args) => read::recover(args),
        Command::Tail(args) => read::tail(args),
        Command::Indexes(args) => indexes_cmd::run(args),
        Command::Journal { command } => journal_cmd::run(command),
        Command::Sync(args) => sync_cmd::run(args),
        Command::Zk(args) => zk_cmd::run(args),
        Command::Ledgers(args) => ledgers_cmd::run_ledgers(args),
        Command::Bookie(args) => ledgers_cmd::run_bookie(args),
        Command::Raw(args) => raw_cmd::run(args),
        Command::Bench { command } => bench_cmd::run(command),
    };
    match result {
        Ok(code) => code,
        // A reader that went away (`logtank read x | head`) is not an error of ours.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logtank: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
