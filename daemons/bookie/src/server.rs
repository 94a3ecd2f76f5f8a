//! The bookie port: the accept loop and one task per connection (frames in, responses out).
//!
//! Per connection:
//! - frames are read into a buffer bounded by `bookie.frame_bytes_max`; a length outside it cannot be
//!   followed, so the connection is closed (one log line); a whole frame that is not a request we serve gets
//!   `EBADREQ` and the connection goes on, unless it is another protocol version;
//! - at most `bookie.requests_in_flight_max` requests are in flight; one more gets `ETOOMANYREQUESTS`;
//! - an add is answered once the journal's durable mark covers it (one watch on the journal per connection,
//!   not one waiter per request); so is a write of the LAC; a fencing read is served once its fence is
//!   durable; other reads go to the blocking pool (a positional read of the journal) and are answered as they
//!   complete, in any order (responses name their ledger and entry);
//! - a connection that sends nothing for `bookie.idle_timeout_ms`, with nothing in flight, is closed;
//! - at shutdown nothing more is read; what is in flight is answered, then the connection closes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use logtank_bookie_proto::{
    decode_request, encode_response, next_frame, Frame, ReadLacBody, ReadRequest, Request, Response, Status,
};
use logtank_runtime::readonly::Readonly;
use logtank_runtime::{Shutdown, WorkTracker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::metrics::BookieMetrics;
use crate::store::{LedgerStore, Refusal};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// A client that does not take its responses for this long is dropped.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// At shutdown, how long a connection waits for its requests in flight to be answered.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(5);

/// The settings a reload may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSettings {
    pub frame_bytes_max: usize,
    pub requests_in_flight_max: usize,
    pub idle_timeout: Duration,
}

/// What every connection shares.
pub struct Service {
    pub store: Arc<LedgerStore>,
    pub readonly: Arc<Readonly>,
    pub metrics: BookieMetrics,
    pub settings: RwLock<PortSettings>,
    /// Stops the daemon (the journal failed: nothing more can be made durable).
    pub fail: Box<dyn Fn(String) + Send + Sync>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    fn settings(&self) -> PortSettings {
        *self
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Accepts connections until `shutdown` (at most `connections_max` at once); each holds a guard of
/// `tracker` until it has ended.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    connections_max: usize,
    tracker: WorkTracker,
    shutdown: Shutdown,
) {
    let connection_shutdown = shutdown.clone();
    logtank_runtime::accept_bounded(
        listener,
        connections_max,
        "bookie port",
        shutdown,
        move |stream, peer, permit| {
            let guard = tracker.start();
            let service = service.clone();
            let shutdown = connection_shutdown.clone();
            tokio::spawn(async move {
                service.metrics.connections.inc();
                Connection::new(service.clone(), peer).run(stream, shutdown).await;
                service.metrics.connections.dec();
                drop(permit);
                drop(guard);
            });
        },
    )
    .await;
}

/// A response that may go once the journal's durable mark reaches `seq`.
struct Waiting {
    seq: u64,
    then: Then,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

enum Then {
    Respond(Response),
    /// A fencing read: read once the fence is durable.
    Read(ReadRequest),
}

struct Connection {
    service: Arc<Service>,
    peer: SocketAddr,
    /// Requests in flight; sized once, at connect.
    in_flight: Arc<Semaphore>,
    in_flight_max: usize,
    waiting: VecDeque<Waiting>,
    /// Responses made while serving frames, sent (with backpressure) before the next read.
    outbox: Vec<Vec<u8>>,
    /// The highest journal record the frames being served need durable.
    durable_wanted: u64,
    out: Option<mpsc::Sender<Vec<u8>>>,
}

impl Connection {
    fn new(service: Arc<Service>, peer: SocketAddr) -> Connection {
        let max = service.settings().requests_in_flight_max;
        Connection {
            service,
            peer,
            in_flight: Arc::new(Semaphore::new(max)),
            in_flight_max: max,
            waiting: VecDeque::new(),
            outbox: Vec::new(),
            durable_wanted: 0,
            out: None,
        }
    }

    async fn run(mut self, stream: TcpStream, shutdown: Shutdown) {
        let (mut rd, wr) = stream.into_split();
        let settings = self.service.settings();
        let (out, out_rx) = mpsc::channel(settings.requests_in_flight_max + 16);
        let writer = tokio::spawn(write_loop(wr, out_rx, self.peer));
        self.out = Some(out);
        let mut marks = self.service.store.journal().subscribe();
        let mut buf: Vec<u8> = Vec::new();
        let mut last_input = tokio::time::Instant::now();
        let reason = loop {
            let settings = self.service.settings();
            let taken = self.take_frames(&mut buf, settings.frame_bytes_max);
            if !self.flush().await {
                break "the response writer stopped".to_string();
            }
            if let Err(reason) = taken {
                break reason;
            }
            let idle = self.in_flight.available_permits() == self.in_flight_max;
            let idle_deadline = last_input + settings.idle_timeout;
            tokio::select! {
                read = read_more(&mut rd, &mut buf) => match read {
                    Ok(0) => break "the client closed the connection".to_string(),
                    Ok(_) => last_input = tokio::time::Instant::now(),
                    Err(e) => break format!("read failed: {e}"),
                },
                changed = marks.changed(), if !self.waiting.is_empty() => {
                    if changed.is_err() {
                        break "the journal closed".into();
                    }
                    let m = *marks.borrow_and_update();
                    if m.failed {
                        self.fail_waiting();
                        (self.service.fail)("the entry store's journal failed; restart to recover".into());
                        break "the journal failed".into();
                    }
                    self.release(m.durable);
                    if !self.flush().await {
                        break "the response writer stopped".to_string();
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline), if idle => {
                    break format!("idle for {} ms", settings.idle_timeout.as_millis());
                }
                _ = shutdown.wait() => break "shutting down".into(),
            }
        };
        log::debug!("bookie connection {}: {reason}", self.peer);
        self.drain(&mut marks).await;
        self.out = None;
        let _ = writer.await;
    }

    /// Serves every whole frame at the head of `buf`, then asks the journal once for the fsync that covers
    /// every add among them (one wake-up of the journal thread per read, not per add).
    fn take_frames(&mut self, buf: &mut Vec<u8>, frame_bytes_max: usize) -> Result<(), String> {
        let mut used_total = 0;
        self.durable_wanted = 0;
        let result = loop {
            match next_frame(&buf[used_total..], frame_bytes_max) {
                Ok(Frame::Complete { body, used }) => {
                    let close = self.serve(body);
                    used_total += used;
                    if let Some(why) = close {
                        break Err(why);
                    }
                }
                Ok(Frame::Incomplete) => break Ok(()),
                Err(e) => {
                    log::info!(
                        "bookie connection {}: {e} (bookie.frame_bytes_max); closing",
                        self.peer
                    );
                    break Err(e.to_string());
                }
            }
        };
        buf.drain(..used_total);
        if self.durable_wanted > 0 {
            if let Err(e) = self.service.store.journal().request_durable(self.durable_wanted) {
                log::debug!("request_durable({}): {e}", self.durable_wanted);
            }
        }
        if buf.capacity() > 2 * (frame_bytes_max + READ_CHUNK_BYTES) && buf.is_empty() {
            *buf = Vec::new(); // Give back what one large request took.
        }
        result
    }

    /// Serves one frame; `Some(reason)` if the connection must close after it.
    fn serve(&mut self, body: &[u8]) -> Option<String> {
        let request = match decode_request(body) {
            Ok(r) => r,
            Err(bad) => {
                log::info!("bookie connection {}: {bad}", self.peer);
                self.send(bad.response());
                return bad.close.then(|| bad.to_string());
            }
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.send(request.respond(Status::ETOOMANYREQUESTS, Vec::new()));
            return None;
        };
        let started = Instant::now();
        let store = &self.service.store;
        let outcome: Result<(u64, Then), Refusal> = match &request {
            Request::Add(add) => match self.add_refusal(add) {
                Some(refusal) => Err(refusal),
                None => store
                    .add(add)
                    .map(|seq| (seq, Then::Respond(request.respond(Status::EOK, Vec::new())))),
            },
            Request::Read(read) => match read.master_key {
                Some(key) => store
                    .fence(read.ledger_id, &key)
                    .map(|seq| (seq, Then::Read(read.clone()))),
                None => {
                    self.read_later(read.clone(), started, permit);
                    return None;
                }
            },
            Request::ReadLac(r) => {
                self.read_lac_later(request.clone(), r.ledger_id, started, permit);
                return None;
            }
            Request::WriteLac(w) => store
                .write_lac(w.ledger_id, &w.master_key, w.lac)
                .map(|seq| (seq, Then::Respond(request.respond(Status::EOK, Vec::new())))),
        };
        match outcome {
            Ok((seq, then)) => {
                self.durable_wanted = self.durable_wanted.max(seq);
                self.waiting.push_back(Waiting {
                    seq,
                    then,
                    started,
                    _permit: permit,
                });
                self.service.metrics.waiting_for_fsync.inc();
                // Already durable (a fence on a ledger fenced long ago): no mark change will come.
                let durable = store.journal().marks().durable;
                self.release(durable);
            }
            Err(refusal) => {
                if refusal.status == Status::EIO {
                    log::error!("bookie connection {}: {}", self.peer, refusal.reason);
                } else {
                    log::debug!("bookie connection {}: {}", self.peer, refusal.reason);
                }
                self.send(request.respond(refusal.status, Vec::new()));
            }
        }
        None
    }

    /// Why an add is refused before it reaches the store: readonly (a recovery add of high priority still
    /// goes through while the disk has room, as in BookKeeper, so recoveries can finish).
    fn add_refusal(&self, add: &logtank_bookie_proto::AddRequest) -> Option<Refusal> {
        let readonly = &self.service.readonly;
        if !readonly.is_on() {
            return None;
        }
        if add.is_recovery() && !readonly.disk_full() {
            return None;
        }
        Some(Refusal {
            status: Status::EREADONLY,
            reason: readonly.refusal().unwrap_or_else(|| "readonly".into()),
        })
    }

    /// Answers every waiting request the durable mark now covers.
    fn release(&mut self, durable: u64) {
        let mut index = 0;
        while index < self.waiting.len() {
            if self.waiting[index].seq > durable {
                index += 1;
                continue;
            }
            let Some(w) = self.waiting.remove(index) else {
                break;
            };
            self.service.metrics.waiting_for_fsync.dec();
            match w.then {
                Then::Respond(response) => {
                    if response.op == logtank_bookie_proto::OpCode::AddEntry {
                        self.service
                            .metrics
                            .add_seconds
                            .observe(w.started.elapsed().as_secs_f64());
                    }
                    self.send(response);
                }
                Then::Read(read) => self.read_later(read, w.started, w._permit),
            }
        }
    }

    /// A read on the blocking pool (a positional read of a segment file), answered when done.
    fn read_later(&self, read: ReadRequest, started: Instant, permit: OwnedSemaphorePermit) {
        let request = Request::Read(read);
        self.blocking(request, started, permit, |store, request| {
            let Request::Read(read) = request else {
                unreachable!("a read")
            };
            store
                .read(read.ledger_id, read.entry_id)
                .map(|entry| request.respond(Status::EOK, entry))
        });
    }

    fn read_lac_later(
        &self,
        request: Request,
        ledger_id: u64,
        started: Instant,
        permit: OwnedSemaphorePermit,
    ) {
        self.blocking(request, started, permit, move |store, request| {
            store.read_lac(ledger_id).map(|(explicit, last)| {
                request.respond(Status::EOK, ReadLacBody::encode(explicit, last.as_deref()))
            })
        });
    }

    /// Serves `request` with `serve` on the blocking pool and sends the response (a refusal's status if it
    /// fails) when done; the permit goes with it.
    fn blocking(
        &self,
        request: Request,
        started: Instant,
        permit: OwnedSemaphorePermit,
        serve: impl FnOnce(&LedgerStore, &Request) -> Result<Response, Refusal> + Send + 'static,
    ) {
        let Some(out) = self.out.clone() else { return };
        let service = self.service.clone();
        tokio::task::spawn_blocking(move || {
            let response = serve(&service.store, &request)
                .unwrap_or_else(|refusal| request.respond(refusal.status, Vec::new()));
            service
                .metrics
                .read_seconds
                .observe(started.elapsed().as_secs_f64());
            send_blocking(&service, &out, &response);
            drop(permit);
        });
    }

    fn fail_waiting(&mut self) {
        for w in std::mem::take(&mut self.waiting) {
            self.service.metrics.waiting_for_fsync.dec();
            let response = match w.then {
                Then::Respond(r) => Response {
                    status: Status::EIO,
                    body: Vec::new(),
                    ..r
                },
                Then::Read(read) => Request::Read(read).respond(Status::EIO, Vec::new()),
            };
            self.send(response);
        }
    }

    /// After the last read: answer what is in flight (bounded), so a stop never drops an acknowledged add.
    async fn drain(&mut self, marks: &mut tokio::sync::watch::Receiver<logtank_journal::Marks>) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN_MAX;
        while !self.waiting.is_empty() {
            let m = *marks.borrow_and_update();
            if m.failed {
                self.fail_waiting();
                self.flush().await;
                break;
            }
            self.release(m.durable);
            if !self.flush().await || self.waiting.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, marks.changed()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        // Blocking reads hold permits until they have sent their responses.
        self.flush().await;
        let max = self.in_flight_max as u32;
        let _ = tokio::time::timeout_at(deadline, self.in_flight.acquire_many(max)).await;
    }

    /// Queues a response; [`Connection::flush`] sends it.
    fn send(&mut self, response: Response) {
        self.service.metrics.respond(response.op.name(), response.status);
        let mut frame = Vec::with_capacity(28 + response.body.len());
        encode_response(&mut frame, &response);
        self.outbox.push(frame);
    }

    /// Hands the queued responses to the writer, waiting while its queue is full (a client that does not
    /// read its responses stops being read from). False once the writer has stopped.
    async fn flush(&mut self) -> bool {
        let Some(out) = &self.out else { return false };
        for frame in self.outbox.drain(..) {
            if out.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }
}

fn send_blocking(service: &Service, out: &mpsc::Sender<Vec<u8>>, response: &Response) {
    service.metrics.respond(response.op.name(), response.status);
    let mut frame = Vec::with_capacity(28 + response.body.len());
    encode_response(&mut frame, response);
    let _ = out.blocking_send(frame);
}

/// Appends what the socket has to `buf`. Cancel-safe (it runs inside `select!`): `read_buf` only ever
/// appends bytes that were read.
async fn read_more(rd: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK_BYTES);
    rd.read_buf(buf).await
}

async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut frames: mpsc::Receiver<Vec<u8>>,
    peer: SocketAddr,
) {
    let mut batch = Vec::new();
    while let Some(frame) = frames.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < READ_CHUNK_BYTES {
            match frames.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(RESPONSE_WRITE_TIMEOUT, wr.write_all(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::debug!("bookie connection {peer}: write failed: {e}");
                return;
            }
            Err(_) => {
                log::info!(
                    "bookie connection {peer}: responses not taken for {} s; dropping the client",
                    RESPONSE_WRITE_TIMEOUT.as_secs()
                );
                return;
            }
        }
    }
    let _ = wr.shutdown().await;
}
