//! A blocking client for the three storage services over one `std::net::TcpStream`: one request at a
//! time, as the services expect. The only module of this crate that does IO; the bytes on the wire come
//! from [`crate::service`]'s pure encoders and decoders.
//!
//! After an IO or protocol error the connection may be out of step with the server (half a request sent,
//! half a reply read), so the client refuses further calls with [`ClientError::Closed`]: connect again.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::binary::{Limits, MessageScanner};
use crate::service::*;
use crate::types::*;
use crate::DecodeError;

/// How long `connect` waits for a TCP handshake by default.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// How long one read or write may block by default. IndexTank's API used 500 ms for writes; a page read
/// from a cold disk can take longer, so the default is generous and callers tighten it.
pub const IO_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Bytes asked of the socket per read.
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// The receive buffer shrinks back to this after a large reply, so one big page does not pin memory.
pub const IDLE_BUFFER_BYTES_MAX: usize = 1 << 20;

/// Connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub connect_timeout_ms: u64,
    /// 0 = block forever.
    pub read_timeout_ms: u64,
    /// 0 = block forever.
    pub write_timeout_ms: u64,
    /// Bounds on what the server may send back.
    pub limits: Limits,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            read_timeout_ms: IO_TIMEOUT_MS_DEFAULT,
            write_timeout_ms: IO_TIMEOUT_MS_DEFAULT,
            limits: Limits::default(),
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // No `#[source]`: the message already holds the IO error, and a chain printer would say it twice.
    #[error("storage connection: {0}")]
    Io(io::Error),
    /// The server's bytes are not a valid reply to our call.
    #[error("storage protocol error: {0}")]
    Protocol(String),
    /// The server answered with an exception; the message is the server's own.
    #[error("{message}")]
    Application { kind: ExceptionKind, message: String },
    /// The server closed the connection, or an earlier error left it unusable.
    #[error("storage connection closed")]
    Closed,
}

type Decoder<T> = fn(&[u8], &Limits) -> Result<(IncomingReply<T>, usize), DecodeError>;

/// A connection to one storage service.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    seqid: i32,
    limits: Limits,
    broken: bool,
}

impl Client {
    /// Connects to the first address of `addr` that accepts within the timeout.
    pub fn connect(addr: impl ToSocketAddrs, config: &ClientConfig) -> Result<Client, ClientError> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match Self::connect_one(a, config) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address resolved to nothing",
            ))
        }))
    }

    fn connect_one(addr: SocketAddr, config: &ClientConfig) -> Result<Client, ClientError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms.max(1));
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        Self::from_stream(stream, config)
    }

    /// Wraps an already connected stream (tests, proxies).
    pub fn from_stream(stream: TcpStream, config: &ClientConfig) -> Result<Client, ClientError> {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        stream.set_read_timeout(ms(config.read_timeout_ms))?;
        stream.set_write_timeout(ms(config.write_timeout_ms))?;
        // Requests are written whole in one call; Nagle would only delay them.
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            inbuf: Vec::new(),
            out: Vec::new(),
            seqid: 0,
            limits: config.limits,
            broken: false,
        })
    }

    pub fn send_batch(&mut self, batch: &LogBatch) -> Result<(), ClientError> {
        // Encoded from a borrowed batch: `Call::SendBatch` owns one, so build the message by hand.
        self.call_with(
            Method::SendBatch,
            |out, seqid| {
                encode_send_batch_call(out, seqid, batch);
            },
            decode_send_batch_reply,
        )
    }

    pub fn read_page(&mut self, index_code: &str, token: &LogPageToken) -> Result<LogPage, ClientError> {
        let call = Call::ReadPage {
            index_code: index_code.to_string(),
            token: *token,
        };
        self.call(&call, decode_read_page_reply)
    }

    /// `read_page` with the records left encoded (no per-record decoding: fast paths and benchmarks).
    pub fn read_page_raw(&mut self, index_code: &str, token: &LogPageToken) -> Result<RawPage, ClientError> {
        let call = Call::ReadPage {
            index_code: index_code.to_string(),
            token: *token,
        };
        self.call(&call, decode_whole_read_page_reply_raw)
    }

    /// Reads an index's log from `start` to its last page, handing each page to `each` (which returns
    /// `false` to stop early), with the next request on the wire while this page is still arriving: when a
    /// reply's first bytes hold the next token (logtank's servers write it before the records), the next
    /// `read_page` is sent at once, so the server builds page n+1 while this client receives and walks page
    /// n. Against a server that writes the records first it is [`Client::read_page_raw`] in a loop.
    ///
    /// An exception (e.g. an expired token) ends it with [`ClientError::Application`], the connection still
    /// usable. Stopping early costs the one page already asked for, which is read and dropped.
    pub fn read_pages_raw(
        &mut self,
        index_code: &str,
        start: &LogPageToken,
        mut each: impl FnMut(RawPage) -> bool,
    ) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Closed);
        }
        self.broken = true;
        let mut asked = self.send_read_page(index_code, start)?;
        loop {
            let mut scanner = MessageScanner::new();
            let mut early = None;
            let mut peeked = false;
            let end = loop {
                if !peeked {
                    match peek_read_page_reply(&self.inbuf, &self.limits) {
                        PagePeek::Incomplete => {}
                        PagePeek::NoEarlyToken => peeked = true,
                        PagePeek::Next(token) => {
                            peeked = true;
                            early = Some((self.send_read_page(index_code, &token)?, token));
                        }
                    }
                }
                match scanner.scan(&self.inbuf, &self.limits) {
                    Ok(Some(end)) => break end,
                    Ok(None) => self.read_more()?,
                    Err(e) => return Err(self.scan_error(e, decode_read_page_reply_raw)),
                }
            };
            let decoded = decode_whole_read_page_reply_raw(&self.inbuf[..end], &self.limits);
            self.inbuf.drain(..end);
            let (reply, _) = decoded.map_err(|e| ClientError::Protocol(e.to_string()))?;
            check_reply(Method::ReadPage, asked, &reply)?;
            let page = match reply.result {
                Ok(page) => page,
                Err(e) => {
                    // Nothing was asked early of a reply that is an exception: the connection is in step.
                    self.broken = false;
                    return Err(ClientError::Application {
                        kind: e.kind,
                        message: e.message,
                    });
                }
            };
            let next = page.next;
            if let Some((_, token)) = early {
                if next != Some(token) {
                    return Err(ClientError::Protocol(format!(
                        "read_page reply's next token changed between its first field ({token:?}) and the \
                         decoded page ({next:?})"
                    )));
                }
            }
            let go_on = each(page);
            match (next, early) {
                (None, _) => break,
                (Some(_), Some((seqid, _))) if !go_on => {
                    let reply = self.receive(decode_whole_read_page_reply_raw)?;
                    check_reply(Method::ReadPage, seqid, &reply)?;
                    break;
                }
                (Some(_), None) if !go_on => break,
                (Some(_), Some((seqid, _))) => asked = seqid,
                (Some(token), None) => asked = self.send_read_page(index_code, &token)?,
            }
        }
        // The buffer kept its size across the pages of the read; not beyond it.
        if self.inbuf.capacity() > IDLE_BUFFER_BYTES_MAX {
            self.inbuf.shrink_to(IDLE_BUFFER_BYTES_MAX);
        }
        self.broken = false;
        Ok(())
    }

    /// Writes one `read_page` call; returns its sequence id.
    fn send_read_page(&mut self, index_code: &str, token: &LogPageToken) -> Result<i32, ClientError> {
        self.seqid = self.seqid.wrapping_add(1);
        let seqid = self.seqid;
        let call = Call::ReadPage {
            index_code: index_code.to_string(),
            token: *token,
        };
        self.out.clear();
        encode_call(&mut self.out, seqid, &call);
        self.stream.write_all(&self.out)?;
        Ok(seqid)
    }

    pub fn get_index_log_info(&mut self, index_code: &str) -> Result<IndexLogInfo, ClientError> {
        let call = Call::GetIndexLogInfo {
            index_code: index_code.to_string(),
        };
        self.call(&call, decode_get_index_log_info_reply)
    }

    pub fn get_raw_log_info(&mut self) -> Result<RawLogInfo, ClientError> {
        self.call(&Call::GetRawLogInfo, decode_get_raw_log_info_reply)
    }

    pub fn enqueue_for_optimization(
        &mut self,
        index_code: &str,
        priority: i32,
        score: f64,
    ) -> Result<(), ClientError> {
        let call = Call::EnqueueForOptimization {
            index_code: index_code.to_string(),
            priority,
            score,
        };
        self.call(&call, decode_enqueue_for_optimization_reply)
    }

    pub fn delete_index(&mut self, index_code: &str) -> Result<(), ClientError> {
        let call = Call::DeleteIndex {
            index_code: index_code.to_string(),
        };
        self.call(&call, decode_delete_index_reply)
    }

    pub fn get_optimization_queue(&mut self) -> Result<BTreeMap<String, QueueScore>, ClientError> {
        self.call(&Call::GetOptimizationQueue, decode_get_optimization_queue_reply)
    }

    pub fn list_existing_indexes(&mut self) -> Result<Vec<String>, ClientError> {
        self.call(&Call::ListExistingIndexes, decode_list_existing_indexes_reply)
    }

    fn call<T>(&mut self, call: &Call, decode: Decoder<T>) -> Result<T, ClientError> {
        self.call_with(call.method(), |out, seqid| encode_call(out, seqid, call), decode)
    }

    fn call_with<T>(
        &mut self,
        method: Method,
        encode: impl FnOnce(&mut Vec<u8>, i32),
        decode: Decoder<T>,
    ) -> Result<T, ClientError> {
        if self.broken {
            return Err(ClientError::Closed);
        }
        // Until the reply is in, an error leaves the connection out of step.
        self.broken = true;
        self.seqid = self.seqid.wrapping_add(1);
        let seqid = self.seqid;
        self.out.clear();
        encode(&mut self.out, seqid);
        self.stream.write_all(&self.out)?;
        let reply = self.receive(decode)?;
        check_reply(method, seqid, &reply)?;
        self.broken = false;
        reply.result.map_err(|e| ClientError::Application {
            kind: e.kind,
            message: e.message,
        })
    }

    /// Reads until one whole reply is buffered and decodes it. The scanner remembers how far it walked,
    /// so a large reply arriving in many reads is walked once while it comes in (and once to decode).
    fn receive<T>(&mut self, decode: Decoder<T>) -> Result<IncomingReply<T>, ClientError> {
        let mut scanner = MessageScanner::new();
        loop {
            match scanner.scan(&self.inbuf, &self.limits) {
                Ok(Some(end)) => {
                    let decoded = decode(&self.inbuf[..end], &self.limits);
                    self.inbuf.drain(..end);
                    if self.inbuf.capacity() > IDLE_BUFFER_BYTES_MAX {
                        self.inbuf.shrink_to(IDLE_BUFFER_BYTES_MAX);
                    }
                    return match decoded {
                        Ok((reply, _)) => Ok(reply),
                        Err(e) => Err(ClientError::Protocol(e.to_string())),
                    };
                }
                Ok(None) => self.read_more()?,
                Err(e) => return Err(self.scan_error(e, decode)),
            }
        }
    }

    /// A scan error, said in the typed decoder's words when it meets the same error (they name the field).
    fn scan_error<T>(&self, e: DecodeError, decode: Decoder<T>) -> ClientError {
        let scan_message = e.to_string();
        let message = match decode(&self.inbuf, &self.limits) {
            Err(DecodeError::Invalid(m)) if m.starts_with(&scan_message) => m,
            _ => scan_message,
        };
        ClientError::Protocol(message)
    }

    /// Appends what one read of the socket brings to the receive buffer.
    fn read_more(&mut self) -> Result<(), ClientError> {
        let old = self.inbuf.len();
        self.inbuf.resize(old + READ_CHUNK_BYTES, 0);
        let n = loop {
            match self.stream.read(&mut self.inbuf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.inbuf.truncate(old);
                return Err(e.into());
            }
        };
        self.inbuf.truncate(old + n);
        if n == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }
}

/// Checks a reply answers the call we sent (method and sequence id).
fn check_reply<T>(method: Method, seqid: i32, reply: &IncomingReply<T>) -> Result<(), ClientError> {
    if reply.name != method.name() {
        return Err(ClientError::Protocol(format!(
            "asked {method}, the server replied to {:?}",
            reply.name
        )));
    }
    if reply.seqid != seqid {
        return Err(ClientError::Protocol(format!(
            "reply to {method} has sequence id {}, expected {seqid}",
            reply.seqid
        )));
    }
    Ok(())
}
