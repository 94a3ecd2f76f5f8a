//! `logtank raw restore`: rebuilds a lost writer's raw log from its ledgers (`docs/replication.md`). Every
//! record of the log `/logtank/logs/<writer>` that the ledgers hold is written, with its sequence number, into
//! `<data_root>/storage/raw/…` in the journal's own format, one file per raw segment as the writer had them:
//! segments the dealer of this data root has already dealt (its `dealer.next_seq.info`) to `raw/history`, the
//! others to `raw/live`. Each entry's digest is checked on read; the files are checked once written (the
//! journal's own verification) and only then renamed into place. The log's open ledger, if any, is recovered
//! first (fenced and closed): restore is for a writer that is gone. Run as root (the operator's usual way),
//! what it creates is given to the logtank user when there is one (as the package's tmpfiles make
//! `/data/storage`), so the writer and the indexes reader can use it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use logtank_journal::frame::{encode_frame, SegmentHeader};
use logtank_ledger::logs::{self, LogLedger};

use crate::ledgers_cmd::Cluster;

/// Entries read from the bookies per request batch.
const READ_BATCH_ENTRIES: i64 = 1000;

#[derive(Args, Debug)]
pub struct RawArgs {
    #[command(subcommand)]
    pub command: RawCommand,
}

#[derive(Subcommand, Debug)]
pub enum RawCommand {
    /// Write a writer's log, from its ledgers, into a data root's raw log (a replacement host, a promoted
    /// master).
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub cluster: Cluster,
    /// The writer's id (its `replication.writer_id`, by default the address it registered: host:15000).
    #[arg(long)]
    pub writer: String,
    /// The data root to write into (its storage/raw/live must hold no segment yet).
    #[arg(long)]
    pub data_root: PathBuf,
    /// The ledgers' password (`replication.password`).
    #[arg(long, default_value = "")]
    pub password: String,
}

pub fn run(args: RawArgs) -> Result<ExitCode> {
    match args.command {
        RawCommand::Restore(a) => crate::ledgers_cmd::runtime()?.block_on(restore(a)),
    }
}

/// One raw segment being rebuilt: its records in order.
struct Segment {
    /// The writer's segment (the log's `segment` of its ledgers).
    segment: u64,
    first_seq: u64,
    next_seq: u64,
    bytes: Vec<u8>,
}

impl Segment {
    fn new(segment: u64, first_seq: u64) -> Segment {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&SegmentHeader { first_seq }.encode());
        Segment {
            segment,
            first_seq,
            next_seq: first_seq,
            bytes,
        }
    }
}

async fn restore(args: RestoreArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let layout = logtank_storage::Layout::new(args.data_root.clone());
    let (live, history) = (layout.raw_live(), layout.raw_history());
    for dir in [&live, &history] {
        logtank_durable::create_dir_all_durably(dir)?;
    }
    if segment_names(&live)?.next().is_some() {
        bail!(
            "{} already holds raw segments: restore writes into an empty raw log (move them aside first)",
            live.display()
        );
    }
    let dealt_to = read_number(&layout.dealer_info())?.unwrap_or(0);
    let client = args.cluster.client().await?;
    let Some((log, _)) = logs::read_log(&client.coord().client(), &args.writer).await? else {
        bail!(
            "no log {} in coordination: was the writer in bookies mode (replication.mode = \"bookies\") with this id?",
            logs::log_path(&args.writer)
        );
    };
    if log.ledgers.is_empty() {
        bail!(
            "the log {} has no ledgers: nothing was replicated",
            logs::log_path(&args.writer)
        );
    }
    let mut current: Option<Segment> = None;
    let mut written: Vec<(PathBuf, u64)> = Vec::new();
    let mut records = 0u64;
    for ledger in &log.ledgers {
        let (reader, last_seq) = open_ledger(&client, ledger, &args.password).await?;
        if current.as_ref().is_some_and(|s| s.segment != ledger.segment) {
            // A new raw segment starts with this ledger.
            if let Some(done) = current.take() {
                written.push(write_segment(done, &live, &history, dealt_to)?);
            }
        }
        let mut next = ledger.first_seq;
        while next <= last_seq {
            let from = (next - ledger.first_seq) as i64;
            let to = (from + READ_BATCH_ENTRIES - 1).min((last_seq - ledger.first_seq) as i64);
            for (_, payload) in reader.read_range(from, to).await? {
                let segment = current.get_or_insert_with(|| Segment::new(ledger.segment, next));
                if segment.next_seq != next {
                    bail!(
                        "ledger {} is out of step with the log: record {next} after {}",
                        ledger.ledger_id,
                        segment.next_seq
                    );
                }
                encode_frame(&mut segment.bytes, next, next, &payload);
                segment.next_seq += 1;
                next += 1;
                records += 1;
            }
        }
    }
    if let Some(done) = current.take() {
        if done.next_seq > done.first_seq {
            written.push(write_segment(done, &live, &history, dealt_to)?);
        }
    }
    // The journal's own verification of what was written (every frame's checksum, sequence continuity).
    let (_, report) = logtank_journal::Reader::open_dir(&live, 1, logtank_journal::frame::PAYLOAD_BYTES_MAX)
        .with_context(|| format!("verifying {}", live.display()))?;
    let mut created = vec![
        layout.storage(),
        live.parent().unwrap_or(&live).to_path_buf(),
        live.clone(),
        history.clone(),
    ];
    created.extend(written.iter().map(|(path, _)| path.clone()));
    give_to_service_user(&created)?;
    for (path, records) in &written {
        eprintln!("restored {} ({records} records)", path.display());
    }
    println!(
        "restored {records} raw records (one per batch) of {} into {} segments under {} in {:.1} s (raw/live now ends at record {})",
        logs::log_path(&args.writer),
        written.len(),
        layout.storage().display(),
        started.elapsed().as_secs_f64(),
        report.next_seq - 1
    );
    Ok(ExitCode::SUCCESS)
}

/// Opens a ledger of the log (recovering the open one) and returns it with the log's last record in it.
async fn open_ledger(
    client: &logtank_ledger::LedgerClient,
    ledger: &LogLedger,
    password: &str,
) -> Result<(logtank_ledger::LedgerReader, u64)> {
    let open = ledger.last_seq.is_none();
    let reader = client
        .open(ledger.ledger_id, password.as_bytes(), open)
        .await
        .with_context(|| format!("opening ledger {} of the log", ledger.ledger_id))?;
    let last_entry = reader.metadata().last_entry_id;
    let last_seq = match ledger.last_seq {
        Some(last) => last,
        None => (ledger.first_seq as i64 + last_entry) as u64,
    };
    Ok((reader, last_seq))
}

/// Writes a rebuilt segment: to a temporary name, fsynced, renamed into `raw/history` when the data root's
/// dealer has dealt all of it, else `raw/live`, the directory fsynced.
fn write_segment(segment: Segment, live: &Path, history: &Path, dealt_to: u64) -> Result<(PathBuf, u64)> {
    let records = segment.next_seq - segment.first_seq;
    let dir = if segment.next_seq <= dealt_to {
        history
    } else {
        live
    };
    let path = dir.join(format!("{:020}.journal", segment.first_seq));
    logtank_durable::write_atomically(&path, &segment.bytes)?;
    Ok((path, records))
}

/// The user the writer's and the indexes reader's units run as (the package creates it).
const SERVICE_USER: &str = "logtank";

/// As root, gives `paths` to the service user when it exists (a packaged host); otherwise changes nothing.
fn give_to_service_user(paths: &[PathBuf]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Some(user) = nix::unistd::User::from_name(SERVICE_USER)? else {
        return Ok(());
    };
    for path in paths {
        nix::unistd::chown(path, Some(user.uid), Some(user.gid))
            .with_context(|| format!("giving {} to {SERVICE_USER}", path.display()))?;
    }
    Ok(())
}

fn segment_names(dir: &Path) -> Result<impl Iterator<Item = String>> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".journal"))
        .collect();
    Ok(names.into_iter())
}

fn read_number(path: &Path) -> Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(Some(text.trim().parse().with_context(|| {
                format!("{}: not a number: {text:?}", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
