//! The client port, `LogWriter.send_batch`: logtank-thrift-server's loop (accept, at most
//! `writer.connections_max` connections, one request at a time per connection, Thrift binary, strict headers,
//! unframed) with [`WriterPort`] as its handler.
//!
//! A connection's buffer is bounded by the Thrift limits' `message_bytes_max` (`writer.batch_bytes_max` +
//! [`MESSAGE_OVERHEAD_BYTES`]) and read [`READ_CHUNK_BYTES`] at a time. Each complete message is answered
//! before the next is read: a batch is checked ([`crate::batch`]), appended as one journal record, and
//! acknowledged once the journal says it is written or durable (`writer.ack`); the journal's group commit
//! lets every connection waiting at the same moment share one fsync.
//!
//! What a client can get wrong, and what it gets back:
//! - a bad batch, readonly, a journal failure: an application exception with the reason; the connection
//!   stays usable;
//! - another method: UNKNOWN_METHOD; the connection stays usable;
//! - bytes that are not a Thrift call, a declared length over a limit, a message larger than the buffer:
//!   PROTOCOL_ERROR if the call's name and seqid could be read, then the connection is closed and one
//!   line is logged (warn). A connection closed in the middle of a message is logged the same way. Every
//!   connection closed so counts as a `protocol` rejection. The daemon keeps serving everyone else.

use std::sync::Arc;
use std::time::Instant;

use logtank_journal::Journal;
use logtank_runtime::DaemonContext;
use logtank_thrift::{encode_exception, encode_void_reply, Call, ExceptionKind, Limits};
use logtank_thrift_server::{Broken, Handler, PortOptions};

use crate::batch::{self, Refused};
use crate::config::AckMode;
use crate::metrics::Reason;
use crate::Shared;

/// Bytes asked of the socket per read: batches run to megabytes, so larger reads than the Thrift server's
/// default (a connection's buffers are given back once empty and larger than twice this).
pub const READ_CHUNK_BYTES: usize = 1 << 20;
/// Message bytes beyond `writer.batch_bytes_max`: the message header, the list header, and the
/// difference between a client's encoding and ours (timestamps a client already set).
pub const MESSAGE_OVERHEAD_BYTES: usize = 64 << 10;

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

/// How the client port serves: `LogWriter` in log lines, the limits of [`thrift_limits`], and a broken
/// connection logged at warn (a client that sends what is not a batch is a bug to find).
pub fn port_options(limits: Limits, section: &crate::config::WriterSection) -> PortOptions {
    PortOptions {
        connections_max: section.connections_max,
        connections_per_address_max: section.connections_per_address_max,
        idle_timeout: std::time::Duration::from_millis(section.idle_timeout_ms),
        request_read_timeout: std::time::Duration::from_millis(section.request_read_timeout_ms),
        read_chunk_bytes: READ_CHUNK_BYTES,
        broken_log_level: log::Level::Warn,
        raw_batches: true,
        ..PortOptions::new("LogWriter", limits)
    }
}

/// The client port's handler: `send_batch` into the journal, the writer's metrics.
pub(crate) struct WriterPort {
    pub shared: Arc<Shared>,
    pub journal: Arc<Journal>,
    pub daemon: DaemonContext,
}

impl Handler for WriterPort {
    /// Answers one call that decoded well into `out`.
    async fn handle(
        &self,
        _peer: std::net::SocketAddr,
        name: &str,
        seqid: i32,
        call: Call,
        out: &mut Vec<u8>,
    ) {
        let metrics = &self.shared.metrics;
        let batch = match call {
            Call::SendBatchRaw(batch) => batch,
            // Only from a decoder without raw batches (the port asks for them): served all the same.
            Call::SendBatch(batch) => logtank_thrift::RawBatch::from_batch(&batch),
            other => {
                metrics.reject(Reason::UnknownMethod);
                let message = format!(
                    "{} is not served here: logtank-writer serves LogWriter.send_batch only ({} belongs to {:?})",
                    name,
                    other.method(),
                    other.method().service()
                );
                encode_exception(out, name, seqid, ExceptionKind::UnknownMethod, &message);
                return;
            }
        };
        let started = Instant::now();
        match send_batch(batch, self).await {
            Ok(()) => {
                encode_void_reply(out, name, seqid);
                metrics.ack_seconds.observe(started.elapsed().as_secs_f64());
            }
            Err((reason, kind, message)) => {
                metrics.reject(reason);
                encode_exception(out, name, seqid, kind, &message);
            }
        }
    }

    fn refused(&self, kind: ExceptionKind) {
        self.shared.metrics.reject(match kind {
            ExceptionKind::UnknownMethod => Reason::UnknownMethod,
            _ => Reason::Invalid,
        });
    }

    fn broken(&self, cause: Broken) {
        self.shared.metrics.reject(match cause {
            Broken::Protocol => Reason::Protocol,
            Broken::Stream | Broken::Refused => Reason::Connection,
        });
    }

    fn connections(&self, delta: i64) {
        self.shared.metrics.connections.inc_by(delta);
    }
}

type Failure = (Reason, ExceptionKind, String);

/// Checks, appends and waits for the acknowledgement mark of one batch.
async fn send_batch(batch: logtank_thrift::RawBatch, ctx: &WriterPort) -> Result<(), Failure> {
    let shared = &ctx.shared;
    let settings = shared.settings();
    if let Some(refusal) = shared.readonly.refusal() {
        return Err((Reason::Readonly, ExceptionKind::Unknown, refusal));
    }
    let limits = settings.batch_limits();
    let decode_limits = thrift_limits(limits.batch_bytes_max);
    let prepared = batch::prepare(&batch, batch::now_ms(), &limits, &decode_limits).map_err(
        |Refused {
             reason,
             kind,
             message,
         }| (reason, kind, message),
    )?;
    if prepared.records == 0 {
        shared.count_batch(0, 0);
        return Ok(());
    }
    let journal = &ctx.journal;
    if let Some(replicator) = &shared.replication {
        return replicated_batch(
            replicator,
            journal,
            &prepared.payload,
            prepared.records,
            settings.ack,
            ctx,
        )
        .await;
    }
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

/// Bookies mode: the batch goes to the journal and the ledger in one order, and is acknowledged once the
/// journal's mark (`writer.ack`) and the ack quorum of bookies both have it.
async fn replicated_batch(
    replicator: &crate::replication::Replicator,
    journal: &Journal,
    payload: &[u8],
    records: usize,
    ack: AckMode,
    ctx: &WriterPort,
) -> Result<(), Failure> {
    if payload.len() > replicator.entry_bytes_max() as usize {
        return Err((
            Reason::TooLarge,
            ExceptionKind::Unknown,
            format!(
                "a batch of {} bytes is more than replication.entry_bytes_max ({}) allows a bookie entry: send smaller batches",
                payload.len(),
                replicator.entry_bytes_max()
            ),
        ));
    }
    let appended = replicator.append(payload).await.map_err(replication_failure)?;
    let seq = appended.location.seq;
    let local = async {
        match ack {
            AckMode::Fsync => journal.durable(seq).await,
            AckMode::Write => journal.written(seq).await,
        }
    };
    let (local, replicated) = tokio::join!(local, replicator.acknowledged(appended));
    local.map_err(|e| journal_failure(ctx, "waiting for", e))?;
    replicated.map_err(replication_failure)?;
    ctx.shared.count_batch(records, payload.len());
    Ok(())
}

fn replication_failure(e: crate::replication::ReplicationError) -> Failure {
    (
        Reason::Replication,
        ExceptionKind::Unknown,
        format!("logtank-writer: {e}"),
    )
}

fn multi_threaded() -> bool {
    tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
}

/// A journal error: the batch may or may not be in the log, so the client must retry; a failed journal
/// stops the daemon (systemd restarts it, and recovery decides what is in the log).
fn journal_failure(ctx: &WriterPort, what: &str, e: logtank_journal::Error) -> Failure {
    let message = format!(
        "logtank-writer could not log the batch ({what} the journal: {e}); it was not acknowledged: send it again"
    );
    match &e {
        logtank_journal::Error::RecordTooLarge { .. } => (Reason::TooLarge, ExceptionKind::Unknown, message),
        logtank_journal::Error::Closed => (Reason::Journal, ExceptionKind::InternalError, message),
        // Not a failure: the journal goes on by itself once the disk takes a segment. Readonly until then.
        logtank_journal::Error::CannotGrow(why) => {
            ctx.shared
                .readonly
                .set_storage_fault(Some(crate::cannot_grow_reason(why)));
            let refusal = ctx.shared.readonly.refusal().unwrap_or(message);
            (Reason::Readonly, ExceptionKind::Unknown, refusal)
        }
        _ => {
            ctx.daemon.fail(format!("the raw log journal failed: {e}"));
            (Reason::Journal, ExceptionKind::InternalError, message)
        }
    }
}
