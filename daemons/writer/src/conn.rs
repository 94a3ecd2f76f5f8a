//! The client port: the accept loop (at most `writer.connections_max` connections) and one task per
//! connection, serving `send_batch` one request at a time (Thrift binary, strict headers, unframed).
//!
//! A connection owns one buffer, bounded by the Thrift limits' `message_bytes_max`. Each complete message
//! is answered before the next is read: a batch is checked ([`crate::batch`]), appended as one journal
//! record, and acknowledged once the journal says it is written or durable (`writer.ack`); the journal's
//! group commit lets every connection waiting at the same moment share one fsync.
//!
//! What a client can get wrong, and what it gets back:
//! - a bad batch, readonly, a journal failure: an application exception with the reason; the connection
//!   stays usable;
//! - another method: UNKNOWN_METHOD; the connection stays usable;
//! - bytes that are not a Thrift call, a declared length over a limit, a message larger than the buffer:
//!   PROTOCOL_ERROR if the call's name and seqid could be read, then the connection is closed and one
//!   line is logged. A connection closed in the middle of a message is logged the same way. The daemon
//!   keeps serving everyone else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logtank_journal::Journal;
use logtank_runtime::{DaemonContext, WorkTracker};
use logtank_thrift::{
    decode_call, encode_exception, encode_void_reply, Call, ExceptionKind, IncomingCall, Limits,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::batch::{self, Refused};
use crate::config::AckMode;
use crate::metrics::Reason;
use crate::Shared;

/// The most bytes one read asks the socket for. A read that returns less means the socket is drained
/// for now, which is when an incomplete message is worth decoding again.
pub const READ_CHUNK_BYTES_MAX: usize = 1 << 20;
/// The first buffer of a connection; it grows (up to the message limit) only for larger messages.
const READ_BUFFER_BYTES_INITIAL: usize = 64 << 10;
/// A connection's buffer is given back when it is larger than this and empty.
const IDLE_BUFFER_BYTES_MAX: usize = 2 * READ_CHUNK_BYTES_MAX;
/// Message bytes beyond `writer.batch_bytes_max`: the message header, the list header, and the
/// difference between a client's encoding and ours (timestamps a client already set).
pub const MESSAGE_OVERHEAD_BYTES: usize = 64 << 10;
/// After shutdown, how long a connection in the middle of a message may take to send the rest.
const SHUTDOWN_READ_GRACE: Duration = Duration::from_secs(2);
/// The longest one accept error pauses the loop (EMFILE and friends: let connections close first).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The Thrift decoder's bounds for a writer with these limits.
pub fn thrift_limits(batch_bytes_max: u32) -> Limits {
    let message_bytes_max = (batch_bytes_max as usize)
        .saturating_add(MESSAGE_OVERHEAD_BYTES)
        .min(i32::MAX as usize);
    Limits {
        message_bytes_max,
        // Bounded by the message alone: a string longer than writer.record_bytes_max is refused by the batch
        // rules with a message naming the record, instead of a protocol error that closes the connection.
        string_bytes_max: message_bytes_max,
        ..Limits::default()
    }
}

/// What every connection task needs.
pub(crate) struct ConnContext {
    pub shared: Arc<Shared>,
    pub journal: Arc<Journal>,
    pub limits: Limits,
    pub daemon: DaemonContext,
    pub tracker: WorkTracker,
}

/// Accepts until shutdown, each connection on its own task; at most `connections_max` at once (the rest
/// wait in the kernel's backlog).
pub(crate) async fn accept_loop(listener: TcpListener, ctx: Arc<ConnContext>, connections_max: usize) {
    let shutdown = ctx.daemon.shutdown().clone();
    let slots = Arc::new(Semaphore::new(connections_max));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let guard = ctx.tracker.start();
                tokio::spawn(async move {
                    ctx.shared.metrics.connections.inc();
                    serve(stream, peer, &ctx).await;
                    ctx.shared.metrics.connections.dec();
                    drop(guard);
                    drop(permit);
                });
            }
            Err(e) => {
                log::warn!("accepting a connection: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// How a connection ended, for the one log line a bad one gets.
enum End {
    /// The client closed between requests, or shutdown found the connection idle.
    Clean,
    /// Logged once at warn with the peer.
    Broken(String),
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: &ConnContext) {
    match serve_inner(&mut stream, ctx).await {
        End::Clean => log::debug!("{peer}: connection closed"),
        End::Broken(why) => {
            ctx.shared.metrics.reject(Reason::Protocol);
            log::warn!("{peer}: closing the connection: {why}");
        }
    }
}

async fn serve_inner(stream: &mut TcpStream, ctx: &ConnContext) -> End {
    let shutdown = ctx.daemon.shutdown().clone();
    let max = ctx.limits.message_bytes_max;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES_INITIAL);
    let mut out: Vec<u8> = Vec::new();
    // Decode again only when worth it: the socket went quiet or the buffer doubled since the last
    // incomplete attempt (a 16 MiB batch arriving in pieces is not walked once per piece).
    let mut last_incomplete = 0usize;
    let mut decode_now = false;
    // Set when shutdown finds a request half read: the rest must arrive by then.
    let mut grace_until: Option<tokio::time::Instant> = None;
    loop {
        if decode_now && !buf.is_empty() {
            decode_now = false;
            match decode_call(&buf, &ctx.limits) {
                Ok(Some((call, used))) => {
                    buf.drain(..used);
                    if buf.is_empty() && buf.capacity() > IDLE_BUFFER_BYTES_MAX {
                        // One large batch must not pin its buffer for the connection's life.
                        buf = Vec::with_capacity(READ_BUFFER_BYTES_INITIAL);
                    }
                    last_incomplete = 0;
                    out.clear();
                    handle(call, ctx, &mut out).await;
                    if let Err(e) = stream.write_all(&out).await {
                        return End::Broken(format!("sending the reply: {e}"));
                    }
                    // Pipelined requests may already be buffered.
                    decode_now = true;
                    continue;
                }
                Ok(None) => last_incomplete = buf.len(),
                Err(e) => {
                    out.clear();
                    if e.encode_reply(&mut out) {
                        let _ = stream.write_all(&out).await;
                    }
                    return End::Broken(format!("protocol error: {e}"));
                }
            }
        }
        if buf.len() >= max {
            let message = format!(
                "the request is larger than {max} bytes (writer.batch_bytes_max + {MESSAGE_OVERHEAD_BYTES}) \
                 and was not read"
            );
            return End::Broken(message);
        }
        let want = (max - buf.len()).min(READ_CHUNK_BYTES_MAX);
        buf.reserve(want);
        let read = if shutdown.is_triggered() {
            if buf.is_empty() {
                return End::Clean;
            }
            let until = *grace_until.get_or_insert_with(|| tokio::time::Instant::now() + SHUTDOWN_READ_GRACE);
            match tokio::time::timeout_at(until, read_some(stream, &mut buf, want)).await {
                Ok(r) => r,
                Err(_) => {
                    return End::Broken(format!(
                        "shutting down, and {} bytes of an incomplete request did not complete within {} ms",
                        buf.len(),
                        SHUTDOWN_READ_GRACE.as_millis()
                    ))
                }
            }
        } else {
            tokio::select! {
                r = read_some(stream, &mut buf, want) => r,
                _ = shutdown.wait() => continue,
            }
        };
        match read {
            Ok(0) if buf.is_empty() => return End::Clean,
            Ok(0) => {
                return End::Broken(format!(
                    "the client closed the connection inside a request ({} bytes of an incomplete message)",
                    buf.len()
                ))
            }
            // Also at the size limit: what is there must be decoded once before it is called too large.
            Ok(n) => decode_now = n < want || buf.len() >= max || buf.len() >= 2 * last_incomplete.max(1),
            Err(e) => return End::Broken(format!("reading: {e}")),
        }
    }
}

/// Reads at most `want` bytes onto the end of `buf`. Cancel-safe: bytes are appended only by a read that
/// completed.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> std::io::Result<usize> {
    let mut limited = (&mut *stream).take(want as u64);
    limited.read_buf(buf).await
}

/// Answers one well-framed message into `out`.
async fn handle(incoming: IncomingCall, ctx: &ConnContext, out: &mut Vec<u8>) {
    let IncomingCall {
        name,
        seqid,
        call,
        error_kind,
    } = incoming;
    let metrics = &ctx.shared.metrics;
    let batch = match call {
        Ok(Call::SendBatch(batch)) => batch,
        Ok(other) => {
            metrics.reject(Reason::UnknownMethod);
            let message = format!(
                "{} is not served here: logtank-writer serves LogWriter.send_batch only ({} belongs to {:?})",
                name,
                other.method(),
                other.method().service()
            );
            encode_exception(out, &name, seqid, ExceptionKind::UnknownMethod, &message);
            return;
        }
        Err(message) => {
            metrics.reject(match error_kind {
                ExceptionKind::UnknownMethod => Reason::UnknownMethod,
                _ => Reason::Invalid,
            });
            encode_exception(out, &name, seqid, error_kind, &message);
            return;
        }
    };
    let started = Instant::now();
    match send_batch(batch, ctx).await {
        Ok(()) => {
            encode_void_reply(out, &name, seqid);
            metrics.ack_seconds.observe(started.elapsed().as_secs_f64());
        }
        Err((reason, kind, message)) => {
            metrics.reject(reason);
            encode_exception(out, &name, seqid, kind, &message);
        }
    }
}

type Failure = (Reason, ExceptionKind, String);

/// Checks, appends and waits for the acknowledgement mark of one batch.
async fn send_batch(batch: logtank_thrift::LogBatch, ctx: &ConnContext) -> Result<(), Failure> {
    let shared = &ctx.shared;
    let settings = shared.settings();
    if let Some(refusal) = shared.readonly.refusal() {
        return Err((Reason::Readonly, ExceptionKind::Unknown, refusal));
    }
    let prepared = batch::prepare(batch, batch::now_ms(), &settings.batch_limits())
        .map_err(|Refused { reason, message }| (reason, ExceptionKind::Unknown, message))?;
    if prepared.records == 0 {
        shared.count_batch(0, 0);
        return Ok(());
    }
    let journal = &ctx.journal;
    // The append copies the payload into the journal's staging buffer and waits when the disk is far
    // behind (bounded staging): blocking, so off the async workers' hands.
    let appended = if multi_threaded() {
        tokio::task::block_in_place(|| journal.append(&prepared.payload))
    } else {
        // A current-thread runtime (an in-process test) cannot hand its only worker over.
        journal.append(&prepared.payload)
    };
    let seq = appended.map_err(|e| journal_failure(ctx, "appending", e))?;
    let acked = match settings.ack {
        AckMode::Fsync => journal.durable(seq).await,
        AckMode::Write => journal.written(seq).await,
    };
    acked.map_err(|e| journal_failure(ctx, "waiting for", e))?;
    shared.count_batch(prepared.records, prepared.payload.len());
    Ok(())
}

fn multi_threaded() -> bool {
    tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
}

/// A journal error: the batch may or may not be in the log, so the client must retry; a failed journal
/// stops the daemon (systemd restarts it, and recovery decides what is in the log).
fn journal_failure(ctx: &ConnContext, what: &str, e: logtank_journal::Error) -> Failure {
    let message = format!(
        "logtank-writer could not log the batch ({what} the journal: {e}); it was not acknowledged: send it again"
    );
    match &e {
        logtank_journal::Error::RecordTooLarge { .. } => (Reason::TooLarge, ExceptionKind::Unknown, message),
        logtank_journal::Error::Closed => (Reason::Journal, ExceptionKind::InternalError, message),
        _ => {
            ctx.daemon.fail(format!("the raw log journal failed: {e}"));
            (Reason::Journal, ExceptionKind::InternalError, message)
        }
    }
}
