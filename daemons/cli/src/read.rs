//! `logtank read`, `logtank recover` and `logtank tail`: an index's history through the reader's
//! `read_page`, the way an index engine recovers it.
//!
//! `read` and `recover` page from the initial token until a page comes back without a next token (the end of
//! the stream as it was at that moment), with a live progress line on stderr when it is a terminal. `read`
//! prints the records as JSON lines (or only counts them); `recover` replays them with the replay model of
//! `logtank_storage::merge::apply` and reports how many documents the index holds. Pages are fetched raw
//! (`read_page_raw`) and each record decoded once, so the byte counts are the wire's.
//!
//! `tail` follows an index; how it resumes after the end of the stream is [`Follow`]'s documentation (and
//! its `--help`).

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use logtank_storage::merge::{apply, Docs};
use logtank_thrift::{Client, ClientError, Limits, LogPageToken, LogRecord, RawPage};

use crate::endpoint::{self, READER_DEFAULT};
use crate::progress::Progress;
use crate::records::to_json_line;

/// How many times `recover --retry` starts again after "token expired" before it gives up: each restart
/// means the index was compacted under the reader, which the read guard makes rare; more than a few in a
/// row means something else is wrong.
const RECOVER_RESTARTS_MAX: u32 = 10;
/// The shortest `tail --interval-ms`: polling faster only loads the reader.
const TAIL_INTERVAL_MS_MIN: u64 = 10;

#[derive(Args, Debug, Clone)]
pub struct ReadArgs {
    /// The index code.
    pub index: String,
    /// The reader (logtank-indexes' read_page port).
    #[arg(long, env = "LOGTANK_READER", default_value = READER_DEFAULT, value_name = "HOST:PORT")]
    pub reader: String,
    /// Print the records as JSON lines (the default); the summary goes to stderr.
    #[arg(long, conflicts_with = "summary")]
    pub json: bool,
    /// Print only the summary (records, pages, MB, rate), on stdout.
    #[arg(long)]
    pub summary: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RecoverArgs {
    /// The index code.
    pub index: String,
    /// The reader (logtank-indexes' read_page port).
    #[arg(long, env = "LOGTANK_READER", default_value = READER_DEFAULT, value_name = "HOST:PORT")]
    pub reader: String,
    /// On "token expired" (the index was compacted under the read), start again from the beginning, as an
    /// index engine does (at most 10 times).
    #[arg(long)]
    pub retry: bool,
}

#[derive(Args, Debug, Clone)]
#[command(after_long_help = TAIL_HELP)]
pub struct TailArgs {
    /// The index codes to follow.
    #[arg(required = true, value_name = "INDEX")]
    pub indexes: Vec<String>,
    /// The reader (logtank-indexes' read_page port).
    #[arg(long, env = "LOGTANK_READER", default_value = READER_DEFAULT, value_name = "HOST:PORT")]
    pub reader: String,
    /// Pause between polls once every index is caught up.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print each index's history first, then follow (default: only what arrives from now on).
    #[arg(long)]
    pub from_beginning: bool,
}

const TAIL_HELP: &str = "\
How tail resumes: a page without a next token ends the stream as it was at that moment, so there is no
token for \"after the last record\". tail keeps the last token it was given and the records that came back
from it, and every --interval-ms reads from that token again, skipping the records that come back
byte-for-byte identical to those already printed; whatever follows is new. A position in the raw log
never changes once written (the reader follows a raw segment into history when it is dealt), so a caught-up
tail prints exactly the new records. If the index was compacted under that token (sorted, optimized), the
reader restarts at the segment that replaced it and tail prints that overlap again; replaying an overlap is
harmless under the merge rules (a delete resets, last writer wins per key), so a consumer's state stays
right. On \"token expired\" tail says so on stderr and prints the index again from the beginning, for the
same reason. An index that does not exist yet is waited for; a reader that goes away is reconnected.
Lines always carry index_code. Ctrl-C stops.";

pub fn read(args: ReadArgs) -> Result<ExitCode> {
    logtank_thrift::validate_index_code(&args.index).map_err(|e| anyhow!("{e}"))?;
    let mut client = endpoint::connect("reader", &args.reader)?;
    let mut progress = Progress::new("pages", true);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut token = LogPageToken::default();
    loop {
        let page = read_page(&mut client, &args.reader, &args.index, &token, &mut progress)?;
        if !args.summary {
            for record in decode_records(&page)? {
                writeln!(out, "{}", to_json_line(&record, &args.index)).context("writing to stdout")?;
            }
        }
        match page.next {
            Some(next) => token = next,
            None => break,
        }
    }
    out.flush().context("writing to stdout")?;
    progress.clear();
    if args.summary {
        println!("read {}: {}", args.index, progress.line());
    } else {
        eprintln!("read {}: {}", args.index, progress.line());
    }
    Ok(ExitCode::SUCCESS)
}

/// One page, counted; a server error becomes the reader's message with what was asked.
fn read_page(
    client: &mut Client,
    reader: &str,
    index: &str,
    token: &LogPageToken,
    progress: &mut Progress,
) -> Result<RawPage> {
    match client.read_page_raw(index, token) {
        Ok(page) => {
            progress.add(page.record_count as u64, page.records.len() as u64);
            Ok(page)
        }
        Err(e) => {
            progress.clear();
            Err(reader_error(reader, index, e))
        }
    }
}

fn reader_error(reader: &str, index: &str, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Application { message, .. } => {
            anyhow!("the reader at {reader} refused read_page {index:?}: {message}")
        }
        e => anyhow!("read_page {index:?} from the reader at {reader}: {e}"),
    }
}

/// The records of a raw page, decoded.
pub fn decode_records(page: &RawPage) -> Result<Vec<LogRecord>> {
    split_records(page)?
        .into_iter()
        .map(|bytes| {
            logtank_thrift::decode_record(bytes, &Limits::default())
                .map(|(record, _)| record)
                .map_err(|e| anyhow!("the reader sent a record that does not decode: {e}"))
        })
        .collect()
}

/// The encoded records of a raw page, one slice each.
fn split_records(page: &RawPage) -> Result<Vec<&[u8]>> {
    let limits = Limits::default();
    let mut records = Vec::with_capacity(page.record_count);
    let mut rest = &page.records[..];
    while !rest.is_empty() {
        let n = logtank_thrift::record_len(rest, &limits)
            .map_err(|e| anyhow!("the reader sent a page that does not split into records: {e}"))?;
        records.push(&rest[..n]);
        rest = &rest[n..];
    }
    if records.len() != page.record_count {
        bail!(
            "the reader's page says {} records but holds {}",
            page.record_count,
            records.len()
        );
    }
    Ok(records)
}

pub fn recover(args: RecoverArgs) -> Result<ExitCode> {
    logtank_thrift::validate_index_code(&args.index).map_err(|e| anyhow!("{e}"))?;
    let mut client = endpoint::connect("reader", &args.reader)?;
    let mut progress = Progress::new("pages", true);
    let mut restarts = 0;
    let docs = loop {
        match replay(&mut client, &args.index, &mut progress) {
            Ok(docs) => break docs,
            Err(e) if args.retry && endpoint::is_token_expired(&e) && restarts < RECOVER_RESTARTS_MAX => {
                restarts += 1;
                progress.clear();
                eprintln!(
                    "logtank recover: {e}; starting again from the beginning ({restarts} of {RECOVER_RESTARTS_MAX})"
                );
                progress.reset();
            }
            Err(e) => {
                progress.clear();
                let hint = if endpoint::is_token_expired(&e) && !args.retry {
                    " (--retry starts again from the beginning by itself)"
                } else {
                    ""
                };
                return Err(reader_error(&args.reader, &args.index, e).context(format!(
                    "recovery of {:?} stopped after {} records{hint}",
                    args.index, progress.totals.records
                )));
            }
        }
    };
    progress.clear();
    println!("recovered {}: {}", args.index, progress.line());
    println!("documents after replay: {}", docs.len());
    Ok(ExitCode::SUCCESS)
}

/// Reads the whole index from the initial token and replays it.
fn replay(client: &mut Client, index: &str, progress: &mut Progress) -> Result<Docs, ClientError> {
    let mut docs = Docs::new();
    let mut bad = None;
    // Pipelined: the reader builds the next page while this one is decoded and replayed.
    client.read_pages_raw(index, &LogPageToken::default(), |page| {
        progress.add(page.record_count as u64, page.records.len() as u64);
        match decode_records(&page) {
            Ok(records) => {
                for record in &records {
                    apply(&mut docs, record);
                }
                true
            }
            Err(e) => {
                bad = Some(ClientError::Protocol(e.to_string()));
                false
            }
        }
    })?;
    match bad {
        Some(e) => Err(e),
        None => Ok(docs),
    }
}

/// Why a poll stopped.
#[derive(Debug)]
pub enum PollError {
    Reader(ClientError),
    /// Printing failed (stdout closed).
    Output(std::io::Error),
}

impl From<ClientError> for PollError {
    fn from(e: ClientError) -> PollError {
        PollError::Reader(e)
    }
}

/// Following one index (see `TAIL_HELP` for why this is correct).
#[derive(Debug)]
pub struct Follow {
    pub index: String,
    /// Where the next read starts.
    token: LogPageToken,
    /// The encoded records the last read from `token` returned (the page that ended the stream), already
    /// printed; a read from `token` that returns them again skips them.
    seen: Vec<Vec<u8>>,
    /// Whether the index existed at the last poll (to say "waiting" once).
    existed: Option<bool>,
}

impl Follow {
    pub fn new(index: &str) -> Follow {
        Follow {
            index: index.to_string(),
            token: LogPageToken::default(),
            seen: Vec::new(),
            existed: None,
        }
    }

    /// Reads from the resume point to the end of the stream; hands every new record to `emit`.
    pub fn poll(
        &mut self,
        client: &mut Client,
        emit: &mut dyn FnMut(&str, LogRecord) -> std::io::Result<()>,
    ) -> Result<(), PollError> {
        loop {
            let page = match client.read_page_raw(&self.index, &self.token) {
                Ok(page) => page,
                Err(e) if endpoint::is_no_such_index(&e) => {
                    if self.existed != Some(false) {
                        eprintln!("logtank tail: {e}; waiting for it");
                    }
                    self.existed = Some(false);
                    return Ok(());
                }
                Err(e) if endpoint::is_token_expired(&e) => {
                    eprintln!(
                        "logtank tail: {e}; printing {:?} again from the beginning",
                        self.index
                    );
                    self.token = LogPageToken::default();
                    self.seen.clear();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.existed = Some(true);
            let records = split_records(&page).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let skip = records
                .iter()
                .zip(&self.seen)
                .take_while(|(got, seen)| got == seen)
                .count();
            for bytes in &records[skip..] {
                let (record, _) = logtank_thrift::decode_record(bytes, &Limits::default())
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                emit(&self.index, record).map_err(PollError::Output)?;
            }
            match page.next {
                Some(next) => {
                    self.token = next;
                    self.seen.clear();
                }
                None => {
                    self.seen = records.into_iter().map(<[u8]>::to_vec).collect();
                    return Ok(());
                }
            }
        }
    }
}

pub fn tail(args: TailArgs) -> Result<ExitCode> {
    for index in &args.indexes {
        logtank_thrift::validate_index_code(index).map_err(|e| anyhow!("{e}"))?;
    }
    if args.interval_ms < TAIL_INTERVAL_MS_MIN {
        bail!("--interval-ms must be at least {TAIL_INTERVAL_MS_MIN}");
    }
    let mut client = Some(endpoint::connect("reader", &args.reader)?);
    let mut follows: Vec<Follow> = args.indexes.iter().map(|i| Follow::new(i)).collect();
    let stdout = std::io::stdout();
    let mut print = |index: &str, record: LogRecord| -> std::io::Result<()> {
        writeln!(stdout.lock(), "{}", to_json_line(&record, index))
    };
    if !args.from_beginning {
        // Catch up silently: only what arrives from now on is printed.
        let mut skip = |_: &str, _: LogRecord| Ok(());
        for follow in &mut follows {
            if let Some(c) = client.as_mut() {
                match follow.poll(c, &mut skip) {
                    Ok(()) => {}
                    Err(PollError::Reader(e)) => return Err(reader_error(&args.reader, &follow.index, e)),
                    Err(PollError::Output(e)) => return Err(e).context("writing to stdout"),
                }
            }
        }
    }
    let mut away = false;
    loop {
        if client.is_none() {
            client = endpoint::connect("reader", &args.reader).ok();
            if client.is_some() && away {
                eprintln!("logtank tail: the reader at {} is back", args.reader);
                away = false;
            }
        }
        if let Some(c) = client.as_mut() {
            for follow in &mut follows {
                match follow.poll(c, &mut print) {
                    Ok(()) => {}
                    Err(PollError::Reader(e)) if endpoint::is_connection_error(&e) => {
                        eprintln!(
                            "logtank tail: the reader at {} went away ({e}); reconnecting",
                            args.reader
                        );
                        away = true;
                        client = None;
                        break;
                    }
                    Err(PollError::Reader(e)) => return Err(reader_error(&args.reader, &follow.index, e)),
                    Err(PollError::Output(e)) => return Err(e).context("writing to stdout"),
                }
            }
        }
        std::io::stdout().flush().context("writing to stdout")?;
        std::thread::sleep(Duration::from_millis(args.interval_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use logtank_thrift::{Call, ClientConfig, ExceptionKind, LogBatch, LogPage};

    /// What the scripted reader answers: the pages from the initial token and from "t1".
    type Script = Arc<Mutex<BTreeMap<Option<i64>, Result<LogPage, String>>>>;

    /// A reader on loopback answering `read_page` from `script`, keyed by the token's timestamp.
    fn scripted_reader(script: Script) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let limits = Limits::default();
                match logtank_thrift::decode_call(&buf, &limits).unwrap() {
                    Some((call, n)) => {
                        buf.drain(..n);
                        let Ok(Call::ReadPage { token, .. }) = call.call else {
                            panic!("not a read_page: {call:?}")
                        };
                        let mut out = Vec::new();
                        match script.lock().unwrap()[&token.timestamp].clone() {
                            Ok(page) => logtank_thrift::encode_page_reply(&mut out, call.seqid, &page),
                            Err(m) => logtank_thrift::encode_exception(
                                &mut out,
                                "read_page",
                                call.seqid,
                                ExceptionKind::InternalError,
                                &m,
                            ),
                        }
                        stream.write_all(&out).unwrap();
                    }
                    None => {
                        let n = stream.read(&mut chunk).unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        });
        Client::connect(addr, &ClientConfig::default()).unwrap()
    }

    fn rec(docid: &str, value: &str) -> LogRecord {
        LogRecord {
            docid: Some(docid.into()),
            fields: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
            ..LogRecord::default()
        }
    }

    fn page(records: &[LogRecord], next: Option<i64>) -> Result<LogPage, String> {
        Ok(LogPage {
            batch: LogBatch {
                records: records.to_vec(),
            },
            next_page_token: next.map(|t| LogPageToken {
                page_type: Some(logtank_thrift::PageType::Live),
                timestamp: Some(t),
                file_position: Some(0),
                ..LogPageToken::default()
            }),
        })
    }

    // Proves tail prints exactly the new records when the history under its token is unchanged, never skips
    // a record it has not printed when the history was compacted (it prints the overlap, and a replay of what
    // it printed equals the replay of the history), and starts again on "token expired".
    #[test]
    fn follow_resumes_without_losing_records() {
        let a1 = LogRecord {
            variables: Some(BTreeMap::from([(0, 1.0)])),
            ..rec("a", "1")
        };
        let (a2, a3) = (rec("a", "2"), rec("b", "3"));
        let script: Script = Arc::new(Mutex::new(BTreeMap::new()));
        let set = |token: Option<i64>, reply: Result<LogPage, String>| {
            script.lock().unwrap().insert(token, reply);
        };
        let mut client = scripted_reader(script.clone());
        let mut follow = Follow::new("i");
        let mut printed: Vec<LogRecord> = Vec::new();
        let mut poll = |follow: &mut Follow, printed: &mut Vec<LogRecord>| {
            let mut emit = |_: &str, r: LogRecord| {
                printed.push(r);
                Ok(())
            };
            follow.poll(&mut client, &mut emit).unwrap();
        };

        // Two pages, the second ends the stream.
        set(None, page(std::slice::from_ref(&a1), Some(1)));
        set(Some(1), page(std::slice::from_ref(&a2), None));
        poll(&mut follow, &mut printed);
        assert_eq!(printed, [a1.clone(), a2.clone()]);
        // Nothing new: the page from the last token comes back identical, nothing is printed.
        poll(&mut follow, &mut printed);
        assert_eq!(printed.len(), 2);
        // A new record after the same position: only it is printed.
        set(Some(1), page(&[a2.clone(), a3.clone()], None));
        poll(&mut follow, &mut printed);
        assert_eq!(printed, [a1.clone(), a2.clone(), a3.clone()]);
        // Compacted under the token (a1+a2 merged into one record, as a sort does), plus a new record: the
        // overlap is printed again, the new record is not lost.
        let merged = {
            let mut m = a1.clone();
            logtank_storage::merge::merge_into(&mut m, a2.clone());
            m
        };
        let a4 = rec("c", "4");
        set(Some(1), page(&[merged.clone(), a3.clone(), a4.clone()], None));
        poll(&mut follow, &mut printed);
        assert_eq!(printed[3..], [merged.clone(), a3.clone(), a4.clone()]);
        let replay = |records: &[LogRecord]| {
            let mut docs = Docs::new();
            records.iter().for_each(|r| apply(&mut docs, r));
            docs
        };
        assert_eq!(
            replay(&printed),
            replay(&[a1.clone(), a2.clone(), a3.clone(), a4.clone()])
        );
        // Token expired: everything again from the beginning (harmless), then caught up.
        set(
            Some(1),
            Err(
                "the read position of index \"i\" is gone (x): restart the recovery from the beginning"
                    .into(),
            ),
        );
        set(None, page(&[merged.clone(), a3.clone(), a4.clone()], None));
        let before = printed.len();
        poll(&mut follow, &mut printed);
        assert_eq!(printed.len(), before + 3);
        poll(&mut follow, &mut printed);
        assert_eq!(printed.len(), before + 3);
    }
}
