//! The server loop over loopback, in process: replies and refusals, broken streams, the connection limit, and
//! the drain at shutdown.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logtank_runtime::shutdown::{self, ShutdownTrigger};
use logtank_runtime::WorkTracker;
use logtank_thrift::binary::{message_type, ttype, Writer};
use logtank_thrift::{
    decode_send_batch_reply, encode_exception, encode_send_batch_call, encode_void_reply, Call,
    ExceptionKind, IncomingReply, Limits, LogBatch, LogRecord,
};
use logtank_thrift_server::{serve, Broken, Handler, PortOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers `send_batch` (after `delay`), refuses everything else, and counts what the server reports.
#[derive(Debug, Default)]
struct Counting {
    delay: Duration,
    refused: AtomicUsize,
    protocol: AtomicUsize,
    stream: AtomicUsize,
    not_served: AtomicUsize,
    open: AtomicI64,
}

impl Handler for Counting {
    async fn handle(&self, _peer: SocketAddr, name: &str, seqid: i32, call: Call, out: &mut Vec<u8>) {
        tokio::time::sleep(self.delay).await;
        match call {
            Call::SendBatch(_) => encode_void_reply(out, name, seqid),
            _ => encode_exception(out, name, seqid, ExceptionKind::UnknownMethod, "only send_batch"),
        }
    }

    fn refused(&self, _kind: ExceptionKind) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }

    fn broken(&self, cause: Broken) {
        match cause {
            Broken::Protocol => self.protocol.fetch_add(1, Ordering::SeqCst),
            Broken::Stream => self.stream.fetch_add(1, Ordering::SeqCst),
            Broken::Refused => self.not_served.fetch_add(1, Ordering::SeqCst),
        };
    }

    fn connections(&self, delta: i64) {
        self.open.fetch_add(delta, Ordering::SeqCst);
    }
}

struct Server {
    addr: SocketAddr,
    handler: Arc<Counting>,
    trigger: ShutdownTrigger,
    tracker: WorkTracker,
    accept: tokio::task::JoinHandle<()>,
}

async fn start(handler: Counting, connections_max: usize) -> Server {
    start_with(handler, |o| PortOptions { connections_max, ..o }).await
}

async fn start_with(handler: Counting, options: impl FnOnce(PortOptions) -> PortOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = shutdown::channel();
    let handler = Arc::new(handler);
    let tracker = WorkTracker::new();
    let options = options(PortOptions::new("Test", Limits::default()));
    let accept = tokio::spawn(serve(
        listener,
        options,
        handler.clone(),
        tracker.clone(),
        shutdown,
    ));
    Server {
        addr,
        handler,
        trigger,
        tracker,
        accept,
    }
}

fn call(seqid: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let record = LogRecord {
        docid: Some(format!("d{seqid}")),
        index_code: Some("idx".into()),
        ..LogRecord::default()
    };
    encode_send_batch_call(
        &mut out,
        seqid,
        &LogBatch {
            records: vec![record],
        },
    );
    out
}

/// Reads one reply; `None` if the server closed the connection first.
async fn reply(stream: &mut TcpStream) -> Option<IncomingReply<()>> {
    let mut buf = Vec::new();
    loop {
        if let Ok((reply, used)) = decode_send_batch_reply(&buf, &Limits::default()) {
            assert_eq!(used, buf.len(), "one reply at a time");
            return Some(reply);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("a reply within 30 s")
            .unwrap();
        if n == 0 {
            assert!(buf.is_empty(), "closed inside a reply");
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 30 s: {what}");
}

// Proves pipelined calls are answered in order, a method the codec does not know gets UNKNOWN_METHOD on a
// connection that stays usable, and garbage closes only its own connection, counted as a protocol error.
#[tokio::test]
async fn replies_refusals_and_protocol_errors() {
    let server = start(Counting::default(), 8).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut two = call(1);
    two.extend_from_slice(&call(2));
    s.write_all(&two).await.unwrap();
    assert_eq!(reply(&mut s).await.unwrap().seqid, 1);
    assert_eq!(reply(&mut s).await.unwrap().seqid, 2);

    let mut unknown = Vec::new();
    Writer::new(&mut unknown)
        .message_header("no_such_method", message_type::CALL, 3)
        .stop();
    s.write_all(&unknown).await.unwrap();
    let refused = reply(&mut s).await.unwrap();
    assert_eq!((refused.name.as_str(), refused.seqid), ("no_such_method", 3));
    assert_eq!(refused.result.unwrap_err().kind, ExceptionKind::UnknownMethod);
    assert_eq!(server.handler.refused.load(Ordering::SeqCst), 1);
    s.write_all(&call(4)).await.unwrap();
    assert_eq!(reply(&mut s).await.unwrap().seqid, 4);

    // A string length past every limit once the name and seqid are known: PROTOCOL_ERROR, then closed.
    let mut bad = TcpStream::connect(server.addr).await.unwrap();
    let mut huge = Vec::new();
    Writer::new(&mut huge)
        .message_header("send_batch", message_type::CALL, 77)
        .field(ttype::STRING, 1)
        .i32(0x7fff_fff0);
    bad.write_all(&huge).await.unwrap();
    let protocol = reply(&mut bad).await.unwrap();
    assert_eq!(protocol.seqid, 77);
    assert_eq!(protocol.result.unwrap_err().kind, ExceptionKind::ProtocolError);
    assert!(reply(&mut bad).await.is_none(), "closed after the PROTOCOL_ERROR");
    eventually("the protocol error counted", || {
        server.handler.protocol.load(Ordering::SeqCst) == 1
    })
    .await;

    // Half a call, then the client goes: a broken stream. The first connection is still served.
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    let c = call(5);
    half.write_all(&c[..c.len() / 2]).await.unwrap();
    drop(half);
    eventually("the broken stream counted", || {
        server.handler.stream.load(Ordering::SeqCst) == 1
    })
    .await;
    s.write_all(&call(6)).await.unwrap();
    assert_eq!(reply(&mut s).await.unwrap().seqid, 6);
    assert_eq!(server.handler.open.load(Ordering::SeqCst), 1);
}

// Proves at most `connections_max` connections are served: the next waits until one closes.
#[tokio::test]
async fn connections_beyond_the_limit_wait() {
    let server = start(Counting::default(), 1).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    first.write_all(&call(1)).await.unwrap();
    assert_eq!(reply(&mut first).await.unwrap().seqid, 1);
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    second.write_all(&call(2)).await.unwrap();
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "the second connection was served beside the first"
    );
    drop(first);
    assert_eq!(reply(&mut second).await.unwrap().seqid, 2);
}

// Proves one address holds at most `connections_per_address_max` connections (more are closed at once and
// reported as Refused) while another address is served.
#[tokio::test]
async fn connections_per_address_are_bounded() {
    let server = start_with(Counting::default(), |o| PortOptions {
        connections_per_address_max: 2,
        ..o
    })
    .await;
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(server.addr)
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(from("127.0.0.7").await.unwrap());
    }
    let mut third = from("127.0.0.7").await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut byte)).await;
    assert!(matches!(n, Ok(Ok(0) | Err(_))), "the third was closed: {n:?}");
    let mut other = from("127.0.0.1").await.unwrap();
    other.write_all(&call(5)).await.unwrap();
    assert_eq!(reply(&mut other).await.unwrap().seqid, 5);
    assert_eq!(server.handler.not_served.load(Ordering::SeqCst), 1);
    drop(held);
}

// Proves a connection with no request for `idle_timeout` is closed, and one whose request stops arriving is
// closed after `request_read_timeout` and reported as a broken stream.
#[tokio::test]
async fn idle_and_stalled_connections_are_closed() {
    let server = start_with(Counting::default(), |o| PortOptions {
        idle_timeout: Duration::from_millis(200),
        request_read_timeout: Duration::from_millis(200),
        ..o
    })
    .await;
    let mut byte = [0u8; 1];
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut byte)).await;
    assert!(matches!(n, Ok(Ok(0))), "idle closed: {n:?}");
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&call(1)[..10]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut byte)).await;
    assert!(matches!(n, Ok(Ok(0) | Err(_))), "stalled closed: {n:?}");
    eventually("the stalled request to count as a broken stream", || {
        server.handler.stream.load(Ordering::SeqCst) == 1
    })
    .await;
}

// Proves the drain at shutdown: a call being handled is answered, a call half received completes within the
// grace and is answered, idle connections close, and the tracker is idle once every connection has ended.
#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let server = start(
        Counting {
            delay: Duration::from_millis(300),
            ..Counting::default()
        },
        8,
    )
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(&call(1)).await.unwrap();
    let c = call(2);
    half.write_all(&c[..c.len() / 2]).await.unwrap();
    eventually("three connections open", || {
        server.handler.open.load(Ordering::SeqCst) == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    server.trigger.trigger();
    server.accept.await.unwrap();
    half.write_all(&c[c.len() / 2..]).await.unwrap();
    assert_eq!(reply(&mut busy).await.unwrap().seqid, 1);
    let completed = reply(&mut half).await.unwrap();
    assert_eq!(completed.seqid, 2);
    completed.result.unwrap();
    assert!(reply(&mut idle).await.is_none(), "idle connection closed");
    assert!(reply(&mut busy).await.is_none() && reply(&mut half).await.is_none());
    tokio::time::timeout(Duration::from_secs(10), server.tracker.wait_idle())
        .await
        .expect("every connection ended");
    assert_eq!(server.handler.open.load(Ordering::SeqCst), 0);
    assert_eq!(
        Arc::strong_count(&server.handler),
        1,
        "no connection holds the handler"
    );
}
