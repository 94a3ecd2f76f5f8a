//! `logtank journal verify|dump|salvage`: offline inspection and repair of a journal directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use logtank_journal::{Error, Reader};

/// The record limit used to read journals offline: the format's own maximum, so no valid record is refused.
const RECORD_BYTES_MAX: u32 = logtank_journal::frame::PAYLOAD_BYTES_MAX;

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Verify every record; exit 0 if the journal would open cleanly, 1 on corruption.
    Verify { dir: PathBuf },
    /// Print records as `SEQ<TAB>payload` (payload as text where it is UTF-8, else hex).
    Dump {
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Cut a journal that refuses to open at the offset its error named; later segments are moved aside.
    Salvage {
        /// The segment file the error named.
        segment: PathBuf,
        #[arg(long)]
        offset: u64,
    },
}

pub fn run(command: JournalCommand) -> Result<ExitCode> {
    match command {
        JournalCommand::Verify { dir } => match Reader::open_dir(&dir, 1, RECORD_BYTES_MAX) {
            Ok((_, report)) => {
                let first = report.segments.first().map_or(report.next_seq, |s| s.first_seq);
                println!(
                    "{}: ok, {} records ({}..{}) in {} segments",
                    dir.display(),
                    report.records,
                    first,
                    report.next_seq - 1,
                    report.segments.len()
                );
                if let Some(torn) = report.torn_tail {
                    println!(
                        "torn tail at {} offset {} ({} bytes never made durable; the next open discards them): {}",
                        torn.path.display(),
                        torn.offset,
                        torn.discarded_bytes,
                        torn.reason
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ Error::Corrupt { .. }) => {
                println!("{e}");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e).with_context(|| format!("verifying {}", dir.display())),
        },
        JournalCommand::Dump { dir, from, limit } => {
            let (reader, _) = Reader::open_dir(&dir, from, RECORD_BYTES_MAX)?;
            let mut out = std::io::stdout().lock();
            for record in reader.take(limit.map_or(usize::MAX, |l| l as usize)) {
                let record = record?;
                match std::str::from_utf8(&record.payload) {
                    Ok(text) => writeln!(out, "{}\t{}", record.seq, text.escape_debug())?,
                    Err(_) => writeln!(out, "{}\t0x{}", record.seq, hex(&record.payload))?,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JournalCommand::Salvage { segment, offset } => {
            let dir = segment
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            let moved = logtank_journal::salvage(&dir, &segment, offset)?;
            println!(
                "cut {} at offset {offset}; kept copies of what was cut:",
                segment.display()
            );
            for path in moved {
                println!("  {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
