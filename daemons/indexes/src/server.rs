//! A Thrift storage-protocol server port: the accept loop, one task per connection, and the connection's
//! frame handling (STYLE #5). What a call does is the [`Handler`]'s business; this module only moves bytes:
//! strict binary protocol, unframed, one request at a time per connection, as IndexTank's clients expect.
//!
//! - A well-framed call is handed to the handler, whose reply (a REPLY or an EXCEPTION message) is written
//!   back before the next call is read.
//! - A well-framed call that cannot be served (unknown method, bad arguments, invalid `index_code`) gets
//!   its exception and the connection stays usable: the stream is still in step.
//! - Bytes that are not a call (garbage, a non-strict header, a length over the limit) get a
//!   PROTOCOL_ERROR exception if a name and seqid were read, then that connection is closed; the port keeps
//!   serving everyone else.
//!
//! Nothing here is specific to logtank-indexes; the writer has its own loop for now, and this module is
//! written so a shared server module can absorb both.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use logtank_runtime::{Shutdown, WorkTracker};
use logtank_thrift::binary::Limits;
use logtank_thrift::{Call, CallDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Connections served at once per port; more wait in the kernel's accept queue. Index engines keep one
/// connection each while they recover, operators a few.
pub const CONNECTIONS_MAX: usize = 1024;
/// Bytes asked of the socket per read.
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// The receive buffer shrinks back to this after a large request, so one big message does not pin memory.
pub const IDLE_BUFFER_BYTES_MAX: usize = 1 << 20;
/// A client that does not take its reply within this long is dropped (a page is a few MiB at most).
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the accept loop waits after a failed accept (out of file descriptors): no spinning.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// What a port does with the calls it receives.
pub trait Handler: Send + Sync + 'static {
    /// Serves one call that decoded well, appending exactly one message (REPLY or EXCEPTION, echoing
    /// `name` and `seqid`) to `out`.
    fn handle(
        &self,
        name: &str,
        seqid: i32,
        call: Call,
        out: &mut Vec<u8>,
    ) -> impl Future<Output = ()> + Send;

    /// A call the protocol layer refused (`label`: `unknown_method`, `protocol`, …), for metrics.
    fn refused(&self, label: &'static str);

    /// Connections open on this port changed by `delta`, for metrics.
    fn connections(&self, delta: i64);
}

/// One port: its handler and its limits.
#[derive(Debug)]
pub struct Port<H> {
    /// `LogReader`, `LogManager`: for log lines.
    pub name: &'static str,
    pub handler: Arc<H>,
    /// Bounds on what a client may send; `message_bytes_max` bounds each connection's receive buffer.
    pub limits: Limits,
}

impl<H> Clone for Port<H> {
    fn clone(&self) -> Self {
        Port {
            name: self.name,
            handler: self.handler.clone(),
            limits: self.limits,
        }
    }
}

/// Accepts clients on `listener` until `shutdown`. Each connection runs in its own task; a request in
/// progress at shutdown holds a guard of `tracker` until its reply is written.
pub async fn accept_loop<H: Handler>(
    listener: TcpListener,
    port: Port<H>,
    tracker: WorkTracker,
    shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
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
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                log::warn!("{}: accept failed: {e}", port.name);
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (port, tracker, shutdown) = (port.clone(), tracker.clone(), shutdown.clone());
        tokio::spawn(async move {
            port.handler.connections(1);
            Connection::new(stream, peer, &port)
                .serve(&port, &tracker, &shutdown)
                .await;
            port.handler.connections(-1);
            drop(permit);
        });
    }
}

/// One client connection: the socket and its buffers.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes received and not yet consumed; never more than `limits.message_bytes_max`.
    inbuf: Vec<u8>,
    /// Remembers how far the message being received was walked, so each read does not start over.
    decoder: CallDecoder,
    out: Vec<u8>,
    buffer_max: usize,
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed, or the server is stopping between requests.
    Closed,
    /// The stream cannot be read any further.
    Broken(String),
}

impl Connection {
    pub fn new<H>(stream: TcpStream, peer: SocketAddr, port: &Port<H>) -> Connection {
        Connection {
            stream,
            peer,
            inbuf: Vec::new(),
            decoder: CallDecoder::new(port.limits),
            out: Vec::new(),
            buffer_max: port.limits.message_bytes_max,
        }
    }

    /// Serves calls until the client leaves, the stream breaks, or shutdown (between requests).
    pub async fn serve<H: Handler>(mut self, port: &Port<H>, tracker: &WorkTracker, shutdown: &Shutdown) {
        let end = self.serve_inner(port, tracker, shutdown).await;
        match end {
            End::Closed => log::debug!("{}: {} disconnected", port.name, self.peer),
            End::Broken(why) => log::info!("{}: closing the connection of {}: {why}", port.name, self.peer),
        }
    }

    async fn serve_inner<H: Handler>(
        &mut self,
        port: &Port<H>,
        tracker: &WorkTracker,
        shutdown: &Shutdown,
    ) -> End {
        loop {
            match self.decoder.decode(&self.inbuf) {
                Ok(Some((incoming, used))) => {
                    let _guard = tracker.start();
                    self.inbuf.drain(..used);
                    if self.inbuf.is_empty() && self.inbuf.capacity() > IDLE_BUFFER_BYTES_MAX {
                        self.inbuf = Vec::new();
                    }
                    self.out.clear();
                    match incoming.call {
                        Ok(call) => {
                            port.handler
                                .handle(&incoming.name, incoming.seqid, call, &mut self.out)
                                .await
                        }
                        Err(ref message) => {
                            port.handler.refused(refusal_label(incoming.error_kind));
                            log::debug!("{}: {}: {message}", port.name, self.peer);
                            incoming.encode_error_reply(&mut self.out);
                        }
                    }
                    if let Err(e) = self.write_out().await {
                        return End::Broken(format!("writing the reply: {e}"));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    port.handler.refused("protocol");
                    self.out.clear();
                    if e.encode_reply(&mut self.out) {
                        // The connection closes next; a client that does not read gets nothing.
                        let _ = self.write_out().await;
                    }
                    return End::Broken(e.message);
                }
            }
            if self.inbuf.len() >= self.buffer_max {
                // The decoder refuses a message past the limit before this; kept as the buffer's own bound.
                return End::Broken(format!(
                    "a request larger than {} bytes (the message limit)",
                    self.buffer_max
                ));
            }
            match self.read_more(shutdown).await {
                Ok(true) => {}
                Ok(false) if self.inbuf.is_empty() => return End::Closed,
                Ok(false) => {
                    return End::Broken(format!(
                        "closed in the middle of a request ({} bytes received)",
                        self.inbuf.len()
                    ))
                }
                Err(e) => return End::Broken(format!("reading: {e}")),
            }
        }
    }

    /// Reads what the socket has, up to the buffer's bound. `Ok(false)`: end of stream, or shutdown while
    /// waiting.
    async fn read_more(&mut self, shutdown: &Shutdown) -> std::io::Result<bool> {
        let old = self.inbuf.len();
        let want = READ_CHUNK_BYTES.min(self.buffer_max - old);
        self.inbuf.resize(old + want, 0);
        let read = tokio::select! {
            r = self.stream.read(&mut self.inbuf[old..]) => r,
            _ = shutdown.wait() => Ok(0),
        };
        match read {
            Ok(n) => {
                self.inbuf.truncate(old + n);
                Ok(n > 0)
            }
            Err(e) => {
                self.inbuf.truncate(old);
                Err(e)
            }
        }
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
        if self.out.capacity() > IDLE_BUFFER_BYTES_MAX {
            self.out = Vec::new();
        }
        result
    }
}

fn refusal_label(kind: logtank_thrift::ExceptionKind) -> &'static str {
    match kind {
        logtank_thrift::ExceptionKind::UnknownMethod => "unknown_method",
        logtank_thrift::ExceptionKind::InvalidMessageType => "invalid_message_type",
        _ => "invalid_arguments",
    }
}
