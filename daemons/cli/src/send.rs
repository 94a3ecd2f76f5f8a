//! `logtank send [FILE|-]`: records from JSON lines (see [`crate::records`]) to the writer's `send_batch`,
//! `--batch-size` records per batch, one batch at a time on one connection, then a summary. With
//! `--writer A,B,C` each batch goes to every writer at once (fan-out, `docs/replication.md`): the first
//! `--required N` must acknowledge it, the others' failures are counted and reported at the end.
//!
//! A batch is parsed whole before it is sent, so a bad line stops the command before any record of its batch
//! leaves; the error names the line and says how many records were sent before it. The writer logs a batch
//! atomically (one journal record), so a batch it refuses left nothing behind; its message is printed as the
//! writer wrote it.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use logtank_thrift::{ClientError, FanOut, LogBatch, LogRecord};

use crate::endpoint::{self, WRITER_DEFAULT};
use crate::progress::Progress;
use crate::records::parse_line;

/// The largest `--batch-size`: the writer's own default limit on records per batch.
pub const BATCH_RECORDS_MAX: u64 = 100_000;
/// The longest input line read: ten times the writer's largest record, so no acceptable record is cut, and a
/// file that is not JSON lines (one huge line) cannot fill memory.
const LINE_BYTES_MAX: u64 = 100 << 20;

#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// The writer (logtank-writer's send_batch port), or several, `A,B,C`: each batch goes to all of them.
    #[arg(long, env = "LOGTANK_WRITER", default_value = WRITER_DEFAULT, value_name = "HOST:PORT[,…]")]
    pub writer: String,
    /// With several writers: how many of them, the first listed, must acknowledge each batch (default all);
    /// the others may fail (counted and reported).
    #[arg(long, value_name = "N")]
    pub required: Option<usize>,
    /// The index_code of records that carry none.
    #[arg(long, value_name = "CODE")]
    pub index: Option<String>,
    /// Records per send_batch call.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=BATCH_RECORDS_MAX))]
    pub batch_size: u64,
    /// JSON lines, one record per line; `-` (the default) reads stdin.
    #[arg(default_value = "-", value_name = "FILE|-")]
    pub file: PathBuf,
}

pub fn run(args: SendArgs) -> Result<ExitCode> {
    if let Some(code) = &args.index {
        logtank_thrift::validate_index_code(code).map_err(|e| anyhow::anyhow!("--index: {e}"))?;
    }
    endpoint::fan_out_unconnected(&args.writer, args.required)?;
    let stdin = args.file.as_os_str() == "-";
    let name = if stdin {
        "stdin".to_string()
    } else {
        args.file.display().to_string()
    };
    let input: Box<dyn Read> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args.file).with_context(|| format!("opening {name}"))?)
    };
    let mut input = BufReader::new(input);
    // Connected at the first full batch: a file that is bad from its first lines fails without a writer.
    let mut client = None;
    let mut sender = BatchSender::new(Progress::new("batches", true));

    let mut batch = LogBatch::default();
    let mut first_line = 0;
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        number += 1;
        line.clear();
        let read = (&mut input)
            .take(LINE_BYTES_MAX)
            .read_line(&mut line)
            .with_context(|| format!("{name}: line {number}: cannot read it"))?;
        if read == 0 {
            break;
        }
        if read as u64 == LINE_BYTES_MAX && !line.ends_with('\n') {
            bail!("{name}: line {number}: longer than {LINE_BYTES_MAX} bytes; is this JSON lines?");
        }
        let parsed = parse_line(&line, number, args.index.as_deref());
        let record = match parsed {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(e) => {
                sender.progress.clear();
                bail!("{name}: {e}; {}", sender.sent_so_far());
            }
        };
        if batch.records.is_empty() {
            first_line = number;
        }
        batch.records.push(record);
        if batch.records.len() as u64 == args.batch_size {
            sender.send(&mut client, &batch, &args, (first_line, number))?;
            batch.records.clear();
        }
    }
    if !batch.records.is_empty() {
        sender.send(&mut client, &batch, &args, (first_line, number - 1))?;
    }
    sender.progress.clear();
    println!("sent {}", sender.progress.line());
    eprint!("{}", sender.optional.report());
    Ok(ExitCode::SUCCESS)
}

/// Sends batches and counts them (bytes as encoded on the wire), and the batches optional writers missed.
#[derive(Debug)]
pub struct BatchSender {
    pub progress: Progress,
    optional: endpoint::OptionalFailures,
    scratch: Vec<u8>,
}

impl BatchSender {
    pub fn new(progress: Progress) -> BatchSender {
        BatchSender {
            progress,
            optional: endpoint::OptionalFailures::default(),
            scratch: Vec::new(),
        }
    }

    /// Sends one batch; the error names the input lines it came from.
    fn send(
        &mut self,
        client: &mut Option<FanOut>,
        batch: &LogBatch,
        args: &SendArgs,
        lines: (u64, u64),
    ) -> Result<()> {
        let client = match client {
            Some(client) => client,
            None => client.insert(endpoint::fan_out(&args.writer, args.required)?),
        };
        let bytes = encoded_bytes(&mut self.scratch, &batch.records);
        match client.send_batch(batch) {
            Ok(optional) => {
                self.optional.add(optional);
                self.progress.add(batch.records.len() as u64, bytes);
                Ok(())
            }
            Err(e) => {
                self.progress.clear();
                let what = match &e.error {
                    ClientError::Application { .. } => "refused",
                    _ => "failed on",
                };
                bail!(
                    "the writer at {} {what} the batch of lines {}-{}: {}; {}",
                    e.writer,
                    lines.0,
                    lines.1,
                    e.error,
                    self.sent_so_far()
                );
            }
        }
    }

    fn sent_so_far(&self) -> String {
        match self.progress.totals.records {
            0 => "nothing was sent".to_string(),
            n => format!("{n} records before it were sent"),
        }
    }
}

/// The records' size as the writer receives them (Thrift binary).
pub fn encoded_bytes(scratch: &mut Vec<u8>, records: &[LogRecord]) -> u64 {
    scratch.clear();
    for record in records {
        logtank_thrift::encode_record(scratch, record);
    }
    scratch.len() as u64
}
