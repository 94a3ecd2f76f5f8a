//! `logtank-thrift-server`: the one server loop of every storage-protocol port (logtank-writer's LogWriter,
//! logtank-indexes' LogReader and LogManager). One task per connection and the connection's frame handling
//! live here once (STYLE #5), over the runtime's bounded accept loop ([`accept_bounded`]); what a call does
//! is the [`Handler`]'s business.
//! The codec stays in `logtank-thrift`, which does no IO; this crate is where tokio meets it.
//!
//! Strict binary protocol, unframed, one request at a time per connection, as IndexTank's clients expect:
//! - A well-framed call is handed to the handler, whose reply (a REPLY or an EXCEPTION message) is written
//!   back before the next call is read. Calls a client pipelined are served in order.
//! - A well-framed call the codec refuses (unknown method, wrong message type, bad arguments, an invalid
//!   `index_code`) gets its exception, and the connection stays usable: the stream is still in step.
//! - Bytes that are not a call (garbage, a non-strict header, a length over a limit) get a PROTOCOL_ERROR
//!   exception if a name and seqid were read, then that connection is closed with one log line; the port
//!   keeps serving everyone else.
//! - Shutdown: the accept loop stops, idle connections close, a request being handled is finished and
//!   answered, and one half received may complete within [`SHUTDOWN_READ_GRACE`]. Every connection holds a
//!   [`WorkTracker`] guard until it has ended, so `wait_idle` means no connection is left.
//!
//! Bounds: at most [`PortOptions::connections_max`] connections (the rest wait in the kernel's backlog; a
//! failed accept pauses the loop for `logtank_runtime::accept::ACCEPT_ERROR_PAUSE`); a
//! connection's receive buffer never holds more than the limits' `message_bytes_max`, and is given back
//! after a large request.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use logtank_runtime::{accept_bounded, PerAddressLimit, Shutdown, WorkTracker};
use logtank_thrift::binary::Limits;
use logtank_thrift::{Call, CallDecoder, ExceptionKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Connections served at once per port unless the port says otherwise; more wait in the kernel's accept
/// queue. File descriptors are the limit that matters, and the units' `LimitNOFILE=` is well above this.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// Bytes asked of the socket per read unless the port says otherwise: requests of a few hundred bytes.
pub const READ_CHUNK_BYTES_DEFAULT: usize = 64 << 10;
/// A connection's buffers are given back once they are empty and larger than this, or twice the port's
/// read chunk if that is more, so one large message does not pin its memory for the connection's life.
pub const IDLE_BUFFER_BYTES_MIN: usize = 1 << 20;
/// A client that does not take its reply within this long is dropped (a page is a few MiB at most).
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections one client address may hold on a port unless the port says otherwise: a quarter of
/// [`CONNECTIONS_MAX_DEFAULT`], so a host that opens sockets and sends nothing cannot take the port from
/// everyone else, while one API host still has room for a large pool.
pub const CONNECTIONS_PER_ADDRESS_MAX_DEFAULT: usize = 256;
/// A connection that starts no request for this long is closed (clients reconnect; an idle socket must
/// not hold a slot for ever).
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// Once a request's first bytes arrived, the rest must arrive within this (a client that sends a byte a
/// minute holds its slot and its buffer for nothing).
pub const REQUEST_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// After shutdown, how long a connection in the middle of a request may take to send the rest.
pub const SHUTDOWN_READ_GRACE: Duration = Duration::from_secs(2);

/// What a port does with the calls it receives, and where its counters go.
pub trait Handler: Send + Sync + 'static {
    /// Serves one call that decoded well from `peer`, appending exactly one message (REPLY or EXCEPTION,
    /// echoing `name` and `seqid`) to `out`.
    fn handle(
        &self,
        peer: SocketAddr,
        name: &str,
        seqid: i32,
        call: Call,
        out: &mut Vec<u8>,
    ) -> impl Future<Output = ()> + Send;

    /// A well-framed call the codec refused with `kind` (its exception has been sent; the connection goes
    /// on), for metrics.
    fn refused(&self, kind: ExceptionKind);

    /// A connection is being closed because its stream broke, for metrics.
    fn broken(&self, cause: Broken);

    /// Connections open on this port changed by `delta`, for metrics.
    fn connections(&self, delta: i64);
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The bytes are not a call that can be read (garbage, a non-strict header, a length over a limit, a
    /// request larger than the buffer). A PROTOCOL_ERROR went back if a name and seqid were known.
    Protocol,
    /// The client left inside a request, the socket failed, a reply was not taken in time, or a request
    /// half received at shutdown did not complete within the grace, or a request did not arrive whole
    /// within the port's `request_read_timeout`.
    Stream,
    /// Not served at all: its address already held the port's per-address limit of connections.
    Refused,
}

/// How a port serves: its name in log lines, the decoder's limits and the connection bounds.
#[derive(Debug, Clone, Copy)]
pub struct PortOptions {
    /// `LogWriter`, `LogReader`, `LogManager`: the start of every log line about the port.
    pub name: &'static str,
    /// Bounds on what a client may send; `message_bytes_max` also bounds each connection's receive buffer.
    pub limits: Limits,
    pub connections_max: usize,
    /// Connections one client address may hold (0 = no limit besides `connections_max`); more are
    /// accepted and closed at once.
    pub connections_per_address_max: usize,
    /// A connection with no request started for this long is closed.
    pub idle_timeout: Duration,
    /// A request must be received whole within this of its first bytes.
    pub request_read_timeout: Duration,
    /// Bytes asked of the socket per read; a port receiving large requests reads more at once.
    pub read_chunk_bytes: usize,
    /// The level of the one line logged when a connection is closed because it broke.
    pub broken_log_level: log::Level,
    /// `send_batch` reaches the handler as [`Call::SendBatchRaw`] (see [`CallDecoder::with_raw_batches`]).
    pub raw_batches: bool,
}

impl PortOptions {
    /// A port with the defaults: [`CONNECTIONS_MAX_DEFAULT`], [`READ_CHUNK_BYTES_DEFAULT`], broken
    /// connections logged at info.
    pub fn new(name: &'static str, limits: Limits) -> PortOptions {
        PortOptions {
            name,
            limits,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_address_max: CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            request_read_timeout: REQUEST_READ_TIMEOUT_DEFAULT,
            read_chunk_bytes: READ_CHUNK_BYTES_DEFAULT,
            broken_log_level: log::Level::Info,
            raw_batches: false,
        }
    }

    fn idle_buffer_bytes_max(&self) -> usize {
        self.read_chunk_bytes.saturating_mul(2).max(IDLE_BUFFER_BYTES_MIN)
    }
}

/// Accepts clients on `listener` until `shutdown`, each connection on its own task served by `handler`.
/// Every connection holds a guard of `tracker` until it has ended (and dropped its handle on `handler`).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    options: PortOptions,
    handler: Arc<H>,
    tracker: WorkTracker,
    shutdown: Shutdown,
) {
    let per_address = PerAddressLimit::default();
    let on_accept = |stream: TcpStream, peer: SocketAddr, permit| {
        let Some(slot) = per_address.try_acquire(peer.ip(), options.connections_per_address_max) else {
            log::warn!(
                "{}: {} already holds {} connections (the per-address limit); closing a new one",
                options.name,
                peer.ip(),
                options.connections_per_address_max
            );
            handler.broken(Broken::Refused);
            drop(stream);
            return;
        };
        let guard = tracker.start();
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        tokio::spawn(async move {
            handler.connections(1);
            Connection::new(stream, peer, options)
                .serve(&*handler, &shutdown)
                .await;
            handler.connections(-1);
            // The handler may hold what the daemon closes once every connection is done (the writer's
            // journal): gone before the tracker says so.
            drop(handler);
            drop(guard);
            drop(slot);
            drop(permit);
        });
    };
    accept_bounded(
        listener,
        options.connections_max,
        options.name,
        shutdown.clone(),
        on_accept,
    )
    .await;
}

/// One client connection: the socket and its buffers.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    options: PortOptions,
    /// Bytes received and not yet consumed; never more than `limits.message_bytes_max`.
    inbuf: Vec<u8>,
    /// Remembers how far the message being received was walked, so a large message arriving in many
    /// reads is walked once, not once per read.
    decoder: CallDecoder,
    out: Vec<u8>,
    /// Set when shutdown finds a request half received: the rest must arrive by then.
    grace_until: Option<Instant>,
    /// When the first bytes of the request being received arrived (None between requests).
    request_started: Option<Instant>,
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed between requests, or shutdown found the connection idle.
    Closed,
    /// The stream cannot be read any further; logged once with the reason.
    Broken(Broken, String),
}

/// What one read brought.
enum Read {
    Bytes,
    /// End of stream, or shutdown while nothing of a request had arrived.
    End,
    /// Shutdown, and the half-received request did not complete within the grace.
    GraceOver,
    /// No request started within the idle timeout.
    Idle,
    /// A request started and did not arrive whole within the request read timeout.
    RequestTimedOut,
}

impl Connection {
    fn new(stream: TcpStream, peer: SocketAddr, options: PortOptions) -> Connection {
        Connection {
            stream,
            peer,
            options,
            inbuf: Vec::new(),
            decoder: if options.raw_batches {
                CallDecoder::with_raw_batches(options.limits)
            } else {
                CallDecoder::new(options.limits)
            },
            out: Vec::new(),
            grace_until: None,
            request_started: None,
        }
    }

    /// Serves calls until the client leaves, the stream breaks, or shutdown (between requests).
    async fn serve<H: Handler>(mut self, handler: &H, shutdown: &Shutdown) {
        let name = self.options.name;
        match self.serve_inner(handler, shutdown).await {
            End::Closed => log::debug!("{name}: {} disconnected", self.peer),
            End::Broken(cause, why) => {
                handler.broken(cause);
                log::log!(
                    self.options.broken_log_level,
                    "{name}: closing the connection of {}: {why}",
                    self.peer
                );
            }
        }
    }

    async fn serve_inner<H: Handler>(&mut self, handler: &H, shutdown: &Shutdown) -> End {
        let max = self.options.limits.message_bytes_max;
        loop {
            match self.decoder.decode(&self.inbuf) {
                Ok(Some((incoming, used))) => {
                    self.inbuf.drain(..used);
                    self.request_started = None;
                    if self.inbuf.is_empty() && self.inbuf.capacity() > self.options.idle_buffer_bytes_max() {
                        self.inbuf = Vec::new();
                    }
                    self.out.clear();
                    match incoming.call {
                        Ok(call) => {
                            handler
                                .handle(self.peer, &incoming.name, incoming.seqid, call, &mut self.out)
                                .await
                        }
                        Err(ref message) => {
                            handler.refused(incoming.error_kind);
                            log::debug!("{}: {}: {message}", self.options.name, self.peer);
                            incoming.encode_error_reply(&mut self.out);
                        }
                    }
                    if let Err(e) = self.write_out().await {
                        return End::Broken(Broken::Stream, format!("sending the reply: {e}"));
                    }
                    // Pipelined requests may already be buffered.
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.out.clear();
                    if e.encode_reply(&mut self.out) {
                        // The connection closes next; a client that does not read gets nothing.
                        let _ = self.write_out().await;
                    }
                    return End::Broken(Broken::Protocol, format!("protocol error: {e}"));
                }
            }
            if self.inbuf.len() >= max {
                // The decoder refuses a message past the limit before this; kept as the buffer's own bound.
                return End::Broken(
                    Broken::Protocol,
                    format!("a request larger than {max} bytes (the message limit) was not read"),
                );
            }
            match self.read_more(shutdown).await {
                Ok(Read::Bytes) => {}
                Ok(Read::End) if self.inbuf.is_empty() => return End::Closed,
                Ok(Read::End) => {
                    return End::Broken(
                        Broken::Stream,
                        format!(
                            "the client closed the connection inside a request ({} bytes of an incomplete \
                             message)",
                            self.inbuf.len()
                        ),
                    )
                }
                Ok(Read::Idle) => {
                    log::debug!(
                        "{}: closing the connection of {}: idle for {} s",
                        self.options.name,
                        self.peer,
                        self.options.idle_timeout.as_secs()
                    );
                    return End::Closed;
                }
                Ok(Read::RequestTimedOut) => {
                    let why = format!(
                        "{} bytes of a request did not complete within {} ms",
                        self.inbuf.len(),
                        self.options.request_read_timeout.as_millis()
                    );
                    return End::Broken(Broken::Stream, why);
                }
                Ok(Read::GraceOver) => {
                    let why = format!(
                        "shutting down, and {} bytes of an incomplete request did not complete within {} ms",
                        self.inbuf.len(),
                        SHUTDOWN_READ_GRACE.as_millis()
                    );
                    return End::Broken(Broken::Stream, why);
                }
                Err(e) => return End::Broken(Broken::Stream, format!("reading: {e}")),
            }
        }
    }

    /// Reads what the socket has, up to the buffer's bound. Once shutdown has fired, an empty buffer ends
    /// the connection and a half-received request gets until the grace runs out.
    async fn read_more(&mut self, shutdown: &Shutdown) -> std::io::Result<Read> {
        let want = self
            .options
            .read_chunk_bytes
            .min(self.options.limits.message_bytes_max - self.inbuf.len());
        self.inbuf.reserve(want);
        let read = loop {
            if shutdown.is_triggered() {
                if self.inbuf.is_empty() {
                    return Ok(Read::End);
                }
                let until = *self
                    .grace_until
                    .get_or_insert_with(|| Instant::now() + SHUTDOWN_READ_GRACE);
                let read = read_some(&mut self.stream, &mut self.inbuf, want);
                match tokio::time::timeout_at(until, read).await {
                    Ok(r) => break r,
                    Err(_) => return Ok(Read::GraceOver),
                }
            }
            // Between requests the idle timeout runs; inside one, the request's own read timeout.
            let (deadline, expired) = if self.inbuf.is_empty() {
                (Instant::now() + self.options.idle_timeout, Read::Idle)
            } else {
                let started = *self.request_started.get_or_insert_with(Instant::now);
                (started + self.options.request_read_timeout, Read::RequestTimedOut)
            };
            tokio::select! {
                r = read_some(&mut self.stream, &mut self.inbuf, want) => break r,
                _ = shutdown.wait() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(expired),
            }
        };
        Ok(if read? == 0 { Read::End } else { Read::Bytes })
    }

    async fn write_out(&mut self) -> std::io::Result<()> {
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        let result = match tokio::time::timeout(REPLY_WRITE_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the client did not take its reply within {} s",
                    REPLY_WRITE_TIMEOUT.as_secs()
                ),
            )),
        };
        if self.out.capacity() > self.options.idle_buffer_bytes_max() {
            self.out = Vec::new();
        }
        result
    }
}

/// Reads at most `want` bytes onto the end of `buf`. Cancel-safe: bytes are appended only by a read that
/// completed.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> std::io::Result<usize> {
    let mut limited = (&mut *stream).take(want as u64);
    limited.read_buf(buf).await
}
