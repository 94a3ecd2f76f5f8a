//! The client port: the accept loop (the runtime's [`accept_bounded`], with the per-IP connection limit on
//! top) and one task pair per connection.
//! The reader splits frames and decodes them into [`Command`]s for the core; the writer sends whatever the
//! core queued in the connection's [`Outbox`]. Neither touches the tree.
//!
//! A connection's first 4 bytes are either a frame length (the handshake follows) or a four-letter word,
//! which is answered with text and the connection closed, as ZooKeeper does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logtank_runtime::{accept_bounded, PerAddressLimit, Shutdown};
use logtank_zk::frame::{four_letter_word, next_frame, Frame};
use logtank_zk::{ConnectRequest, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::CoorddConfig;
use crate::core::{Command, Outbox, Outgoing};

/// Bytes read from a socket per call.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Connections open at once, from every client. Each holds a file descriptor, and the unit's
/// `LimitNOFILE=` is 65536, so this names the bound the system already sets (STYLE #6) without lowering
/// it; the per-IP limit (`limits.connections_per_ip_max`) is the one that bites.
const CONNECTIONS_MAX: usize = 65_536;
/// The accept loop's name in its log lines.
const PORT_NAME: &str = "ZooKeeper clients";

/// Accepts clients until `shutdown`; then drops its command sender so the core can finish.
pub async fn accept_loop(
    listener: TcpListener,
    commands: mpsc::Sender<Command>,
    config: Arc<CoorddConfig>,
    shutdown: Shutdown,
) {
    let per_ip = PerAddressLimit::default();
    let mut next_conn: u64 = 1;
    let on_accept = |stream: TcpStream, peer: SocketAddr, permit| {
        let Some(guard) = per_ip.try_acquire(peer.ip(), config.limits.connections_per_ip_max) else {
            log::warn!(
                "too many connections from {} (limits.connections_per_ip_max = {}); closing",
                peer.ip(),
                config.limits.connections_per_ip_max
            );
            drop(stream);
            return;
        };
        let conn = next_conn;
        next_conn += 1;
        let (commands, config, shutdown) = (commands.clone(), config.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve(stream, conn, peer, commands, config, shutdown).await;
            drop(guard);
            drop(permit);
        });
    };
    accept_bounded(listener, CONNECTIONS_MAX, PORT_NAME, shutdown.clone(), on_accept).await;
}

/// Why reading a connection stopped.
enum ReadEnd {
    /// The client went away, sent something invalid, or the core closed it: tell the core.
    Gone,
    /// The server is stopping: leave the session to the core's final flush.
    Shutdown,
}

async fn serve(
    stream: TcpStream,
    conn: u64,
    peer: SocketAddr,
    commands: mpsc::Sender<Command>,
    config: Arc<CoorddConfig>,
    shutdown: Shutdown,
) {
    let (mut rd, wr) = stream.into_split();
    let frame_max = config.limits.frame_bytes_max;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    // Handshake or four-letter word, within limits.handshake_timeout_ms.
    let handshake_by =
        tokio::time::Instant::now() + Duration::from_millis(config.limits.handshake_timeout_ms);
    let connect = loop {
        match next_frame(&buf, frame_max) {
            _ if buf.len() >= 4 && four_letter_word(&buf).is_some() => {
                let word = four_letter_word(&buf).unwrap_or("ruok");
                let text = if config.four_letter_words.allows(word) {
                    let (tx, rx) = oneshot::channel();
                    if commands
                        .send(Command::FourLetter { word, reply: tx })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    rx.await.unwrap_or_default()
                } else {
                    format!("{word} is not executed because it is not in the whitelist.\n")
                };
                let mut wr = wr;
                let _ = wr.write_all(text.as_bytes()).await;
                let _ = wr.shutdown().await;
                return;
            }
            Ok(Frame::Complete { payload, used }) => {
                let req = ConnectRequest::decode(payload);
                buf.drain(..used);
                match req {
                    Ok(r) => break r,
                    Err(e) => {
                        log::info!("bad handshake from {peer}: {e}; closing");
                        return;
                    }
                }
            }
            Ok(Frame::Incomplete) => {}
            Err(e) => {
                log::info!("connection from {peer}: {e}; closing");
                return;
            }
        }
        match tokio::time::timeout_at(handshake_by, read_more(&mut rd, &mut buf, &shutdown)).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                log::info!(
                    "connection from {peer}: no handshake within {} ms (limits.handshake_timeout_ms); closing",
                    config.limits.handshake_timeout_ms
                );
                return;
            }
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(Notify::new());
    let abort = Arc::new(Notify::new());
    let stall_max = Duration::from_millis(config.limits.write_stall_timeout_ms);
    let writer = tokio::spawn(write_loop(
        wr,
        rx,
        queued_bytes.clone(),
        closed.clone(),
        abort.clone(),
        stall_max,
        peer,
    ));
    let outbox = Outbox {
        tx,
        queued_bytes,
        abort,
    };
    if commands
        .send(Command::Connect {
            conn,
            req: connect,
            peer,
            outbox,
        })
        .await
        .is_err()
    {
        return;
    }
    let end = read_requests(
        &mut rd, &mut buf, conn, peer, &commands, frame_max, &shutdown, &closed,
    )
    .await;
    if let ReadEnd::Gone = end {
        let _ = commands.send(Command::Disconnected { conn }).await;
    }
    drop(commands);
    let _ = writer.await;
}

/// Reads more bytes; false at EOF, on error or at shutdown.
async fn read_more(rd: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut Vec<u8>, shutdown: &Shutdown) -> bool {
    let start = buf.len();
    buf.resize(start + READ_CHUNK_BYTES, 0);
    let n = tokio::select! {
        r = rd.read(&mut buf[start..]) => r.unwrap_or(0),
        _ = shutdown.wait() => 0,
    };
    buf.truncate(start + n);
    n > 0
}

#[allow(clippy::too_many_arguments)]
async fn read_requests(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
    conn: u64,
    peer: SocketAddr,
    commands: &mpsc::Sender<Command>,
    frame_max: usize,
    shutdown: &Shutdown,
    closed: &Notify,
) -> ReadEnd {
    loop {
        // Decode every whole frame already buffered.
        let mut consumed = 0;
        loop {
            match next_frame(&buf[consumed..], frame_max) {
                Ok(Frame::Complete { payload, used }) => {
                    match Request::decode(payload) {
                        Ok((header, req)) => {
                            let cmd = Command::Request {
                                conn,
                                xid: header.xid,
                                req,
                                received: Instant::now(),
                            };
                            if commands.send(cmd).await.is_err() {
                                return ReadEnd::Shutdown;
                            }
                        }
                        Err(e) => {
                            log::info!("connection from {peer}: undecodable request: {e}; closing");
                            return ReadEnd::Gone;
                        }
                    }
                    consumed += used;
                }
                Ok(Frame::Incomplete) => break,
                Err(e) => {
                    log::info!("connection from {peer}: {e}; closing");
                    return ReadEnd::Gone;
                }
            }
        }
        buf.drain(..consumed);
        let start = buf.len();
        buf.resize(start + READ_CHUNK_BYTES, 0);
        let n = tokio::select! {
            r = rd.read(&mut buf[start..]) => r.unwrap_or(0),
            _ = closed.notified() => 0,
            _ = shutdown.wait() => {
                buf.truncate(start);
                return ReadEnd::Shutdown;
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            return ReadEnd::Gone;
        }
    }
}

/// Writes what the core queued until a `Close`, an abort, a write error, or a write that makes no
/// progress for `stall_max` (a client that stopped reading: without the bound its socket, its per-IP slot
/// and its queued replies would be held for as long as it likes).
async fn write_loop(
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    queued_bytes: Arc<AtomicUsize>,
    closed: Arc<Notify>,
    abort: Arc<Notify>,
    stall_max: Duration,
    peer: SocketAddr,
) {
    let mut out = BufWriter::with_capacity(64 << 10, wr);
    let written = async {
        'outer: while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Frame(frame) => {
                        queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
                        if !within(stall_max, peer, out.write_all(&frame)).await {
                            break 'outer;
                        }
                    }
                    Outgoing::Close => break 'outer,
                }
                next = rx.try_recv().ok();
            }
            if !within(stall_max, peer, out.flush()).await {
                break;
            }
        }
        let _ = within(stall_max, peer, out.flush()).await;
        let _ = within(stall_max, peer, out.shutdown()).await;
    };
    tokio::select! {
        () = written => {}
        () = abort.notified() => {}
    }
    closed.notify_one();
}

/// Runs one write step; false if it failed or made no progress within `stall_max`.
async fn within(
    stall_max: Duration,
    peer: SocketAddr,
    step: impl std::future::Future<Output = std::io::Result<()>>,
) -> bool {
    match tokio::time::timeout(stall_max, step).await {
        Ok(r) => r.is_ok(),
        Err(_) => {
            log::info!(
                "connection from {peer}: a reply could not be written for {} ms (limits.write_stall_timeout_ms); closing",
                stall_max.as_millis()
            );
            false
        }
    }
}
