//! The write load: N connections, one thread each, each doing one round trip at a time (a `send_batch`
//! of B records to logtank-writer, or B pipelined `XADD`s to Redis), for a warm-up and then a measured
//! window. Only replies that arrive inside the window count, and only acknowledged records (not errors).
//! Latency is per round trip: from just before the request is written to just after its last reply is read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logtank_bench_zk::histogram::Histogram;
use logtank_thrift::{Client, ClientConfig, ClientError, LogBatch, LogRecord};

use crate::procs::{cpu_seconds, MachineCpu};
use crate::record::{self, set_docid, Rng};
use crate::resp::{self, Reply};

/// Connections one run may open (each is a thread).
pub const CONNECTIONS_MAX: usize = 1024;
/// Records per round trip accepted (the writer's own default limit is 100,000 per batch).
pub const BATCH_RECORDS_MAX: usize = 10_000;
/// Distinct record bodies per connection; docids are always new.
const RECORD_POOL: usize = 64;
/// Bytes asked of the socket per read of Redis replies.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// One round trip's outcome.
#[derive(Debug, Default, Clone, Copy)]
pub struct Round {
    /// Records the server acknowledged.
    pub acked: u64,
    /// Records it refused (an exception or an error reply).
    pub errors: u64,
}

/// One connection's load: a round trip at a time.
pub trait Worker: Send {
    fn round(&mut self) -> Result<Round>;
    /// The server's message for the first refused record, if any.
    fn first_error(&self) -> Option<String>;
}

/// The duration of a run.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub acked: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub measured: Duration,
    /// Round-trip latency in nanoseconds.
    pub latency: Histogram,
    /// CPU seconds inside the window: the server (children included), this process, the whole machine.
    pub server_cpu_s: f64,
    pub client_cpu_s: f64,
    pub machine_cpu_s: f64,
    pub cpus: usize,
}

impl LoadResult {
    pub fn records_per_s(&self) -> f64 {
        self.acked as f64 / self.measured.as_secs_f64()
    }

    /// Percent of one CPU, as `top` shows it.
    pub fn percent(&self, cpu_s: f64) -> f64 {
        100.0 * cpu_s / self.measured.as_secs_f64()
    }

    /// CPU the rest of the machine (other engineers' builds) took in the window, in percent of one CPU.
    pub fn other_percent(&self) -> f64 {
        self.percent((self.machine_cpu_s - self.server_cpu_s - self.client_cpu_s).max(0.0))
    }
}

/// Runs `workers` (already connected), one thread each, for `window`; samples the server's CPU (`server_pid`)
/// at the window's edges.
pub fn run<W: Worker>(workers: Vec<W>, window: Window, server_pid: u32) -> Result<LoadResult> {
    let begin = Instant::now() + Duration::from_millis(50) + window.warmup;
    let end = begin + window.measure;
    std::thread::scope(|scope| {
        let threads: Vec<_> = workers
            .into_iter()
            .map(|mut w| scope.spawn(move || drive(&mut w, begin, end).map(|r| (r, w.first_error()))))
            .collect();
        let sample = || {
            (
                cpu_seconds(server_pid).unwrap_or(0.0),
                cpu_seconds(std::process::id()).unwrap_or(0.0),
                MachineCpu::now(),
            )
        };
        sleep_until(begin);
        let (server0, own0, machine0) = sample();
        sleep_until(end);
        let (server1, own1, machine1) = sample();
        let mut total = LoadResult {
            acked: 0,
            errors: 0,
            first_error: None,
            measured: window.measure,
            latency: Histogram::default(),
            server_cpu_s: server1 - server0,
            client_cpu_s: own1 - own0,
            machine_cpu_s: match (machine0, machine1) {
                (Some(a), Some(b)) => a.busy_seconds_until(&b),
                _ => 0.0,
            },
            cpus: machine0.map_or(0, |m| m.cpus),
        };
        for t in threads {
            let ((acked, errors, latency), first_error) = t
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
            total.acked += acked;
            total.errors += errors;
            total.latency.merge(&latency);
            total.first_error = total.first_error.or(first_error);
        }
        Ok(total)
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn drive<W: Worker>(w: &mut W, begin: Instant, end: Instant) -> Result<(u64, u64, Histogram)> {
    let (mut acked, mut errors, mut latency) = (0, 0, Histogram::default());
    loop {
        let sent = Instant::now();
        if sent >= end {
            return Ok((acked, errors, latency));
        }
        let round = w.round()?;
        let done = Instant::now();
        if done >= begin && done < end {
            acked += round.acked;
            errors += round.errors;
            latency.record((done - sent).as_nanos() as u64);
        }
    }
}

/// What each connection sends: `batch_records` records of `record_bytes` stored bytes, for index `code`.
#[derive(Debug, Clone)]
pub struct Content {
    pub index_code: String,
    pub batch_records: usize,
    pub record_bytes: usize,
}

impl Content {
    /// `RECORD_POOL` distinct records for connection `conn`, docids `c<conn>-…`.
    fn pool(&self, conn: usize) -> Vec<LogRecord> {
        let mut rng = Rng::new(conn as u64 + 1);
        let prefix = docid_prefix(conn);
        (0..RECORD_POOL)
            .map(|_| record::make_record(&mut rng, &self.index_code, &prefix, self.record_bytes))
            .collect()
    }

    /// The bytes a Redis entry of this content holds (field names and values).
    pub fn stream_entry_bytes(&self) -> usize {
        let mut rng = Rng::new(1);
        let r = record::make_record(&mut rng, &self.index_code, &docid_prefix(0), self.record_bytes);
        record::stream_entry_bytes(&record::stream_fields(&r))
    }
}

fn docid_prefix(conn: usize) -> String {
    format!("c{conn:04}-")
}

/// A connection to logtank-writer: one `send_batch` per round, as IndexTank's API client does.
#[derive(Debug)]
pub struct WriterWorker {
    client: Client,
    batch: LogBatch,
    prefix: String,
    next: u64,
    first_error: Option<String>,
}

impl WriterWorker {
    pub fn connect(addr: SocketAddr, content: &Content, conn: usize) -> Result<WriterWorker> {
        let client = Client::connect(addr, &ClientConfig::default())
            .with_context(|| format!("connecting to logtank-writer on {addr}"))?;
        let pool = content.pool(conn);
        let batch = LogBatch {
            records: pool.iter().cycle().take(content.batch_records).cloned().collect(),
        };
        Ok(WriterWorker {
            client,
            batch,
            prefix: docid_prefix(conn),
            next: 0,
            first_error: None,
        })
    }
}

impl Worker for WriterWorker {
    fn round(&mut self) -> Result<Round> {
        // New docids every batch; record i of a batch has body i of the pool (as the Redis worker's).
        for r in self.batch.records.iter_mut() {
            if let Some(docid) = r.docid.as_mut() {
                set_docid(docid, &self.prefix, self.next);
            }
            self.next += 1;
        }
        let n = self.batch.records.len() as u64;
        match self.client.send_batch(&self.batch) {
            Ok(()) => Ok(Round { acked: n, errors: 0 }),
            Err(ClientError::Application { message, .. }) => {
                self.first_error.get_or_insert(message);
                Ok(Round { acked: 0, errors: n })
            }
            Err(e) => Err(e).context("send_batch"),
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.clone()
    }
}

/// A connection to Redis: `batch_records` `XADD`s written at once, then their replies read.
#[derive(Debug)]
pub struct RedisWorker {
    stream: TcpStream,
    key: String,
    /// `MAXLEN ~ n`'s n, formatted once.
    maxlen: Option<String>,
    /// Per pooled record: its stream fields (the docid's value is replaced by a new one at each XADD).
    pool: Vec<Vec<(String, String)>>,
    depth: usize,
    prefix: String,
    next: u64,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    docid: String,
    first_error: Option<String>,
}

impl RedisWorker {
    /// `maxlen`: `XADD … MAXLEN ~ n` (approximate trimming, whole macro nodes) so a long run cannot fill
    /// the machine's memory; `None` = no trimming.
    pub fn connect(
        addr: SocketAddr,
        key: &str,
        maxlen: Option<u64>,
        content: &Content,
        conn: usize,
    ) -> Result<RedisWorker> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to redis on {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let pool = content.pool(conn).iter().map(record::stream_fields).collect();
        Ok(RedisWorker {
            stream,
            key: key.to_string(),
            maxlen: maxlen.map(|n| n.to_string()),
            pool,
            depth: content.batch_records,
            prefix: docid_prefix(conn),
            next: 0,
            out: Vec::new(),
            inbuf: Vec::with_capacity(READ_CHUNK_BYTES),
            docid: String::new(),
            first_error: None,
        })
    }

    fn encode_xadd(&mut self, fields: usize) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(8 + 2 * self.pool[fields].len());
        args.extend_from_slice(&[b"XADD", self.key.as_bytes()]);
        if let Some(n) = &self.maxlen {
            args.extend_from_slice(&[b"MAXLEN", b"~", n.as_bytes()]);
        }
        args.push(b"*");
        for (k, v) in &self.pool[fields] {
            args.push(k.as_bytes());
            args.push(if k == "docid" {
                self.docid.as_bytes()
            } else {
                v.as_bytes()
            });
        }
        resp::encode_command(&mut self.out, &args);
    }
}

impl Worker for RedisWorker {
    fn round(&mut self) -> Result<Round> {
        self.out.clear();
        for i in 0..self.depth {
            set_docid(&mut self.docid, &self.prefix, self.next);
            self.next += 1;
            self.encode_xadd(i % self.pool.len());
        }
        self.stream.write_all(&self.out).context("writing to redis")?;
        let mut round = Round::default();
        let mut replies = 0;
        let mut at = 0;
        while replies < self.depth {
            match resp::parse_reply(&self.inbuf[at..])? {
                Some((reply, used)) => {
                    at += used;
                    replies += 1;
                    match reply {
                        Reply::Bulk(Some(_)) => round.acked += 1,
                        Reply::Error(e) => {
                            round.errors += 1;
                            self.first_error.get_or_insert(e);
                        }
                        other => bail!("XADD answered {other:?}"),
                    }
                }
                None => {
                    self.inbuf.drain(..at);
                    at = 0;
                    let old = self.inbuf.len();
                    self.inbuf.resize(old + READ_CHUNK_BYTES, 0);
                    let n = self
                        .stream
                        .read(&mut self.inbuf[old..])
                        .context("reading from redis")?;
                    self.inbuf.truncate(old + n);
                    if n == 0 {
                        bail!("redis closed the connection");
                    }
                }
            }
        }
        self.inbuf.drain(..at);
        Ok(round)
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.clone()
    }
}

/// One command on a new connection, its reply (`INFO`, `PING`, `BGREWRITEAOF`…).
pub fn redis_command(addr: SocketAddr, args: &[&str]) -> Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = Vec::new();
    resp::encode_command(&mut out, args);
    s.write_all(&out)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some((reply, _)) = resp::parse_reply(&buf)? {
            return Ok(reply);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("redis closed the connection before answering {args:?}");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > resp::BULK_BYTES_MAX {
            bail!("redis's answer to {args:?} is too large");
        }
    }
}

/// `field:value` lines of an `INFO` reply.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}
