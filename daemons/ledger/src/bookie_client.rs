//! Connections to bookies: one TCP connection per bookie, shared by every ledger of the client, with many
//! requests in flight (bounded by [`ClientOptions::requests_in_flight_max`]). Responses may come back in any
//! order; each is matched to the oldest request waiting with the same opcode, ledger and entry (as
//! BookKeeper's v2 client does). A broken connection fails every request waiting on it, and the next request
//! connects again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use logtank_bookie_proto::{decode_response, encode_request, next_frame, Frame, OpCode, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{ClientOptions, LedgerError};

/// Outgoing frames queued per connection before senders wait.
const WRITE_QUEUE_MAX: usize = 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 256 << 10;

type Key = (u8, u64, i64);
type Waiters = Arc<Mutex<HashMap<Key, VecDeque<oneshot::Sender<Result<Response, String>>>>>>;

/// One live connection.
struct Connection {
    writes: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    /// Set by the reader task when the connection ends.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

/// The connections of one client, by bookie id (`host:port`).
#[derive(Clone)]
pub struct BookiePool {
    options: ClientOptions,
    connections: Arc<Mutex<HashMap<String, Arc<Connection>>>>,
    /// Bounds requests in flight per bookie.
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl std::fmt::Debug for BookiePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookiePool").finish_non_exhaustive()
    }
}

impl BookiePool {
    pub fn new(options: ClientOptions) -> BookiePool {
        BookiePool {
            options,
            connections: Arc::default(),
            slots: Arc::default(),
        }
    }

    /// Sends `request` to `bookie` and waits (bounded by `timeout`) for its response.
    pub async fn call(
        &self,
        bookie: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, LedgerError> {
        let what = || {
            format!(
                "{} of {}:{} on bookie {bookie}",
                request.op().name(),
                request.ids().0,
                request.ids().1
            )
        };
        match tokio::time::timeout(timeout, self.call_untimed(bookie, request)).await {
            Ok(result) => result,
            Err(_) => Err(LedgerError::Timeout {
                what: what(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    async fn call_untimed(&self, bookie: &str, request: &Request) -> Result<Response, LedgerError> {
        let slots = self.slots(bookie);
        let _permit = slots
            .acquire()
            .await
            .map_err(|_| unreachable_error(bookie, "client closed"))?;
        let conn = self.connection(bookie).await?;
        let (ledger, entry) = request.ids();
        let key = (request.op().to_u8(), ledger, entry);
        let (tx, rx) = oneshot::channel();
        conn.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .push_back(tx);
        let mut frame = Vec::new();
        encode_request(&mut frame, request);
        if conn.writes.send(frame).await.is_err() {
            self.forget(bookie, &conn);
            return Err(unreachable_error(bookie, "connection closed"));
        }
        match rx.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(reason)) => {
                self.forget(bookie, &conn);
                Err(unreachable_error(bookie, &reason))
            }
            Err(_) => {
                self.forget(bookie, &conn);
                Err(unreachable_error(bookie, "connection closed"))
            }
        }
    }

    fn slots(&self, bookie: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .entry(bookie.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.options.requests_in_flight_max)))
            .clone()
    }

    /// Drops a broken connection so the next request makes a new one.
    fn forget(&self, bookie: &str, conn: &Arc<Connection>) {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        if connections.get(bookie).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            connections.remove(bookie);
        }
    }

    async fn connection(&self, bookie: &str) -> Result<Arc<Connection>, LedgerError> {
        {
            let connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(conn) = connections.get(bookie) {
                if !conn.closed.load(std::sync::atomic::Ordering::Acquire) {
                    return Ok(conn.clone());
                }
            }
        }
        let stream =
            match tokio::time::timeout(self.options.connect_timeout, TcpStream::connect(bookie)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(unreachable_error(bookie, &format!("cannot connect: {e}"))),
                Err(_) => {
                    return Err(unreachable_error(
                        bookie,
                        &format!(
                            "no connection within {} ms",
                            self.options.connect_timeout.as_millis()
                        ),
                    ))
                }
            };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (writes, write_rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let waiters: Waiters = Arc::default();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(write_loop(wr, write_rx));
        tokio::spawn(read_loop(
            rd,
            waiters.clone(),
            closed.clone(),
            self.options.frame_bytes_max,
            bookie.to_string(),
        ));
        let conn = Arc::new(Connection {
            writes,
            waiters,
            closed,
        });
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        // Two callers may have connected at once: keep the first live one, the other closes unused.
        let entry = connections
            .entry(bookie.to_string())
            .or_insert_with(|| conn.clone());
        if entry.closed.load(std::sync::atomic::Ordering::Acquire) {
            *entry = conn;
        }
        Ok(entry.clone())
    }
}

fn unreachable_error(bookie: &str, reason: &str) -> LedgerError {
    LedgerError::BookieUnreachable {
        bookie: bookie.to_string(),
        reason: reason.to_string(),
    }
}

async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut frames: mpsc::Receiver<Vec<u8>>) {
    let mut batch = Vec::new();
    while let Some(frame) = frames.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        // Everything queued meanwhile goes in the same write.
        while batch.len() < READ_CHUNK_BYTES {
            match frames.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.write_all(&batch).await.is_err() {
            return;
        }
    }
}

async fn read_loop(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    waiters: Waiters,
    closed: Arc<std::sync::atomic::AtomicBool>,
    frame_bytes_max: usize,
    bookie: String,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let reason = loop {
        let mut used_total = 0;
        let mut failure = None;
        loop {
            match next_frame(&buf[used_total..], frame_bytes_max) {
                Ok(Frame::Complete { body, used }) => {
                    match decode_response(body) {
                        Ok(response) => deliver(&waiters, response),
                        Err(e) => failure = Some(format!("undecodable response: {e}")),
                    }
                    used_total += used;
                    if failure.is_some() {
                        break;
                    }
                }
                Ok(Frame::Incomplete) => break,
                Err(e) => {
                    failure = Some(format!("bad response frame: {e}"));
                    break;
                }
            }
        }
        buf.drain(..used_total);
        if let Some(reason) = failure {
            break reason;
        }
        let start = buf.len();
        buf.resize(start + READ_CHUNK_BYTES, 0);
        match rd.read(&mut buf[start..]).await {
            Ok(0) => {
                buf.truncate(start);
                break "the bookie closed the connection".to_string();
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) => break format!("read failed: {e}"),
        }
    };
    closed.store(true, std::sync::atomic::Ordering::Release);
    log::debug!("connection to bookie {bookie} ended: {reason}");
    let pending: Vec<_> = waiters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .flat_map(|(_, q)| q)
        .collect();
    for tx in pending {
        let _ = tx.send(Err(reason.clone()));
    }
}

fn deliver(waiters: &Waiters, response: Response) {
    let key = (response.op.to_u8(), response.ledger_id, response.entry_id);
    let mut waiters = waiters.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(queue) = waiters.get_mut(&key) else {
        log::debug!(
            "a response nobody waits for: {} {}:{}",
            OpCode::name(response.op),
            response.ledger_id,
            response.entry_id
        );
        return;
    };
    // Waiters that gave up (timed out) are skipped: the response goes to the oldest one still waiting.
    let mut tx = queue.pop_front();
    while tx.as_ref().is_some_and(|t| t.is_closed()) {
        tx = queue.pop_front();
    }
    if queue.is_empty() {
        waiters.remove(&key);
    }
    if let Some(tx) = tx {
        let _ = tx.send(Ok(response));
    }
}
