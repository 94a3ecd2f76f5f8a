//! A minimal pipelining ZooKeeper client over the `logtank-zk` codecs: one TCP connection per session, the
//! handshake, synchronous calls for set-up, and [`Session::pipeline`], which keeps up to `outstanding`
//! requests in flight and matches replies to requests in order (a ZooKeeper server answers one connection's
//! requests in the order it received them, so the reply to the oldest request in flight is always next).
//!
//! It does only what a load generator needs: no watches, no reconnects, no pings (phases keep the session
//! busy, and the session timeout is far longer than any pause between them).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use logtank_zk::frame::{next_frame, Frame, FRAME_BYTES_MAX_DEFAULT};
use logtank_zk::jute::{Reader, Writer};
use logtank_zk::{xid, ConnectRequest, ConnectResponse, ReplyHeader, Request, PASSWORD_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Largest reply frame accepted: ZooKeeper's default `jute.maxbuffer`.
const FRAME_BYTES_MAX: usize = FRAME_BYTES_MAX_DEFAULT;
/// Bytes asked of the socket per read; one read usually carries many pipelined replies.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// One request of a pipeline, and what to do with its reply.
pub trait Pipeline {
    /// The next request to send, or `None` when this session has sent its share.
    fn next(&mut self) -> Option<Request>;
    /// The reply header (and body) of a request `next` returned, `latency` after it was written.
    fn done(&mut self, header: ReplyHeader, body: &[u8], latency: Duration);
}

/// A request sent and not answered yet.
#[derive(Debug)]
struct InFlight {
    xid: i32,
    sent: Instant,
}

#[derive(Debug)]
pub struct Session {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    /// Received bytes not yet consumed, from `start`.
    buf: Vec<u8>,
    start: usize,
    next_xid: i32,
    pub session_id: i64,
    pub timeout_ms: i32,
    reply_timeout: Duration,
}

impl Session {
    /// Connects and creates a new session asking for `timeout_ms`.
    pub async fn connect(server: &str, timeout_ms: i32, reply_timeout: Duration) -> Result<Session> {
        let stream = tokio::time::timeout(reply_timeout, TcpStream::connect(server))
            .await
            .map_err(|_| anyhow!("connecting to {server}: timed out"))?
            .with_context(|| format!("connecting to {server}"))?;
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms,
            session_id: 0,
            password: vec![0; PASSWORD_BYTES],
            read_only: Some(false),
        };
        wr.write_all(&req.encode()).await?;
        let mut s = Session {
            rd,
            wr,
            buf: Vec::with_capacity(READ_CHUNK_BYTES),
            start: 0,
            next_xid: 1,
            session_id: 0,
            timeout_ms: 0,
            reply_timeout,
        };
        let payload = s
            .read_frame()
            .await
            .with_context(|| format!("handshake with {server}"))?;
        let resp = ConnectResponse::decode(&payload)?;
        if resp.session_id == 0 || resp.timeout_ms <= 0 {
            bail!("{server} refused the session (timeout {} ms)", resp.timeout_ms);
        }
        s.session_id = resp.session_id;
        s.timeout_ms = resp.timeout_ms;
        Ok(s)
    }

    fn take_xid(&mut self) -> i32 {
        let x = self.next_xid;
        // Positive xids only: the negative ones are reserved (pings, notifications, auth).
        self.next_xid = if x == i32::MAX { 1 } else { x + 1 };
        x
    }

    /// Whole next frame's payload, reading as needed (bounded by the reply timeout).
    async fn read_frame(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Frame::Complete { payload, used } = next_frame(&self.buf[self.start..], FRAME_BYTES_MAX)? {
                let p = payload.to_vec();
                self.start += used;
                return Ok(p);
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK_BYTES);
        let n = tokio::time::timeout(self.reply_timeout, self.rd.read_buf(&mut self.buf))
            .await
            .map_err(|_| anyhow!("no reply within {:?}", self.reply_timeout))??;
        if n == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }

    /// Sends one request and waits for its reply: header and body bytes.
    pub async fn call(&mut self, req: &Request) -> Result<(ReplyHeader, Vec<u8>)> {
        let x = self.take_xid();
        let mut out = Vec::with_capacity(128);
        encode_request(&mut out, x, req);
        self.wr.write_all(&out).await?;
        loop {
            let payload = self.read_frame().await?;
            let mut r = Reader::new(&payload);
            let h = ReplyHeader::decode(&mut r)?;
            if h.xid == xid::NOTIFICATION || h.xid == xid::PING {
                continue;
            }
            if h.xid != x {
                bail!("reply for xid {} while waiting for {x}", h.xid);
            }
            return Ok((h, r.rest().to_vec()));
        }
    }

    /// Pings the server (keeps the session alive while the tool waits between phases).
    pub async fn ping(&mut self) -> Result<()> {
        let mut out = Vec::with_capacity(16);
        encode_request(&mut out, xid::PING, &Request::Ping);
        self.wr.write_all(&out).await?;
        loop {
            let payload = self.read_frame().await?;
            let h = ReplyHeader::decode(&mut Reader::new(&payload))?;
            if h.xid == xid::PING {
                return Ok(());
            }
            if h.xid != xid::NOTIFICATION {
                bail!("reply for xid {} while waiting for a ping", h.xid);
            }
        }
    }

    /// Closes the session (its ephemerals go) and the connection.
    pub async fn close(mut self) -> Result<()> {
        let (h, _) = self.call(&Request::CloseSession).await?;
        if h.err != 0 {
            bail!("closeSession failed with error {}", h.err);
        }
        let _ = self.wr.shutdown().await;
        Ok(())
    }

    /// Runs `work` with up to `outstanding` requests in flight until it has no more requests and every
    /// reply is in. Requests are written in batches (as many as the window allows at once); a reply's
    /// latency runs from just before its request was written to just after its reply was read.
    pub async fn pipeline<P: Pipeline>(&mut self, work: &mut P, outstanding: usize) -> Result<()> {
        let outstanding = outstanding.max(1);
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(outstanding);
        let mut out: Vec<u8> = Vec::with_capacity(outstanding * 160);
        let mut exhausted = false;
        loop {
            // Fill the window, then send the batch in one write.
            while !exhausted && in_flight.len() < outstanding {
                match work.next() {
                    Some(req) => {
                        let x = self.take_xid();
                        encode_request(&mut out, x, &req);
                        in_flight.push_back(InFlight {
                            xid: x,
                            sent: Instant::now(),
                        });
                    }
                    None => exhausted = true,
                }
            }
            if !out.is_empty() {
                self.write_while_reading(&out, &mut in_flight, work).await?;
                out.clear();
            }
            self.take_replies(&mut in_flight, work)?;
            if in_flight.is_empty() && exhausted {
                return Ok(());
            }
            if !exhausted && in_flight.len() < outstanding {
                // Replies freed room in the window: send more before waiting.
                continue;
            }
            self.read_more().await?;
        }
    }

    /// Writes `out` while also reading replies, so a large batch can never deadlock against a server
    /// that stops reading until its replies are read.
    async fn write_while_reading<P: Pipeline>(
        &mut self,
        out: &[u8],
        in_flight: &mut VecDeque<InFlight>,
        work: &mut P,
    ) -> Result<()> {
        let mut written = 0;
        while written < out.len() {
            if self.start > 0 && self.start * 2 >= self.buf.len() {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(READ_CHUNK_BYTES);
            tokio::select! {
                n = self.wr.write(&out[written..]) => {
                    let n = n?;
                    if n == 0 {
                        bail!("the server closed the connection");
                    }
                    written += n;
                }
                n = self.rd.read_buf(&mut self.buf) => {
                    if n? == 0 {
                        bail!("the server closed the connection");
                    }
                    self.take_replies(in_flight, work)?;
                }
                _ = tokio::time::sleep(self.reply_timeout) => bail!("write stalled for {:?}", self.reply_timeout),
            }
        }
        Ok(())
    }

    /// Matches every whole reply frame buffered against the oldest requests in flight.
    fn take_replies<P: Pipeline>(&mut self, in_flight: &mut VecDeque<InFlight>, work: &mut P) -> Result<()> {
        loop {
            let Frame::Complete { payload, used } = next_frame(&self.buf[self.start..], FRAME_BYTES_MAX)?
            else {
                return Ok(());
            };
            let now = Instant::now();
            let mut r = Reader::new(payload);
            let h = ReplyHeader::decode(&mut r)?;
            let body = r.rest();
            self.start += used;
            if h.xid == xid::NOTIFICATION || h.xid == xid::PING {
                continue;
            }
            let Some(req) = in_flight.pop_front() else {
                bail!("reply for xid {} with no request in flight", h.xid);
            };
            if h.xid != req.xid {
                bail!(
                    "reply for xid {} while the oldest request in flight is {}: replies out of order",
                    h.xid,
                    req.xid
                );
            }
            work.done(h, body, now.saturating_duration_since(req.sent));
        }
    }
}

/// Appends one request frame (length, xid, opcode, body) to `out`.
pub fn encode_request(out: &mut Vec<u8>, x: i32, req: &Request) {
    let mut w = Writer {
        buf: std::mem::take(out),
    };
    let at = w.buf.len();
    w.buf.extend_from_slice(&[0; 4]);
    w.i32(x).i32(req.opcode());
    req.encode_body(&mut w);
    let len = (w.buf.len() - at - 4) as i32;
    w.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    *out = w.buf;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_frames_decode_as_the_server_reads_them() {
        // Two frames appended to one buffer split and decode back to the requests sent.
        let mut out = Vec::new();
        let a = Request::GetData {
            path: "/a".into(),
            watch: false,
        };
        let b = Request::Delete {
            path: "/b".into(),
            version: -1,
        };
        encode_request(&mut out, 7, &a);
        encode_request(&mut out, 8, &b);
        let Frame::Complete { payload, used } = next_frame(&out, FRAME_BYTES_MAX).unwrap() else {
            panic!()
        };
        assert_eq!(Request::decode(payload).unwrap().1, a);
        let Frame::Complete { payload, .. } = next_frame(&out[used..], FRAME_BYTES_MAX).unwrap() else {
            panic!()
        };
        let (h, req) = Request::decode(payload).unwrap();
        assert_eq!((h.xid, req), (8, b));
    }
}
