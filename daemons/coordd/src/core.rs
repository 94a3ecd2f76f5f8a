//! The one task that owns the tree, the sessions and the watch tables (DESIGN §9). Connection tasks only
//! decode and encode frames and talk to it through a bounded channel of [`Command`]s, which it drains many
//! at a time.
//!
//! A write is applied to the tree at once, given its zxid and appended to the transaction log; its reply,
//! and every frame queued after it for any connection, waits in [`Core::pending`] until the log is durable
//! up to it. So no client ever sees a change before it is on disk, replies leave in request order, and a
//! watch event reaches a client before the reply of the write that fired it and before any later read can
//! show the change. Reads queued behind nothing are answered at once; reads behind a write wait for its
//! fsync, exactly as in ZooKeeper's standalone pipeline. One fsync covers every write of a batch.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logtank_journal::{Journal, Marks};
use logtank_zk::{
    encode_notification, encode_reply, err, perms, xid, Acl, ClientInfo, ConnectRequest, ConnectResponse, Id,
    MultiResult, ReadOp, Request, Response, SetWatches,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::acl::{digest_id, AuthIds};
use crate::config::CoorddConfig;
use crate::metrics::CoorddMetrics;
use crate::sasl::{SaslOutcome, SaslServer};
use crate::snapshot;
use crate::state::{Caller, SessionMeta, State, WriteOutcome};
use crate::txn::{Txn, TxnBody};
use crate::watches::{Event, Kind, Watches};

/// Commands taken from the channel per turn of the loop: one fsync can cover this many writes.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Capacity of the command channel; connection tasks wait when it is full (backpressure).
pub const COMMAND_QUEUE_MAX: usize = 8192;
/// Frames queued for sending before their fsync; past this the core stops taking commands until the
/// journal catches up.
const PENDING_FRAMES_MAX: usize = 1 << 20;

/// What a connection task sends the core.
#[derive(Debug)]
pub enum Command {
    Connect {
        conn: u64,
        req: ConnectRequest,
        peer: SocketAddr,
        outbox: Outbox,
    },
    Request {
        conn: u64,
        xid: i32,
        req: Request,
        received: Instant,
    },
    Disconnected {
        conn: u64,
    },
    FourLetter {
        word: &'static str,
        reply: oneshot::Sender<String>,
    },
    Status {
        reply: oneshot::Sender<StatusInfo>,
    },
}

/// A frame for a connection, or the order to close it once everything before it is sent.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Vec<u8>),
    Close,
}

/// The sending half of a connection's queue; `queued_bytes` lets the core spot a client that stopped
/// reading.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub tx: mpsc::UnboundedSender<Outgoing>,
    pub queued_bytes: Arc<AtomicUsize>,
    /// Closes the connection now, even while its writer waits on a client that does not read (a
    /// `Close` queued behind unwritten replies would never be reached).
    pub abort: Arc<tokio::sync::Notify>,
}

/// What `/status` and `srvr` report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatusInfo {
    pub zxid: i64,
    pub znodes: usize,
    pub sessions: usize,
    pub connections: usize,
    pub watches: usize,
    pub ephemerals: usize,
    pub outstanding: usize,
    pub received: u64,
    pub sent: u64,
    pub approximate_data_bytes: u64,
    pub last_snapshot_zxid: i64,
}

struct Connection {
    outbox: Outbox,
    peer: SocketAddr,
    session: Option<i64>,
    /// Shared so a request can hold it while the core mutates other state; replaced on change.
    auth: Arc<AuthIds>,
    sasl: Option<SaslServer>,
    received: u64,
    sent: u64,
    closing: bool,
}

struct LiveSession {
    conn: Option<u64>,
    last_seen: Instant,
    timeout: Duration,
}

struct Pending {
    seq: u64,
    conn: u64,
    out: Outgoing,
}

/// A snapshot being written on another thread.
struct SnapshotJob {
    done: oneshot::Receiver<Result<i64, String>>,
}

pub struct Core {
    config: CoorddConfig,
    state: State,
    watches: Watches,
    journal: Arc<Journal>,
    marks: watch::Receiver<Marks>,
    durable: u64,
    last_seq: u64,
    conns: HashMap<u64, Connection>,
    live: HashMap<i64, LiveSession>,
    pending: VecDeque<Pending>,
    next_session_id: i64,
    txns_since_snapshot: u64,
    snapshot_job: Option<SnapshotJob>,
    last_snapshot_zxid: i64,
    metrics: CoorddMetrics,
    received: u64,
    sent: u64,
    events: Vec<Event>,
    /// Why the transaction log cannot take writes (it cannot create its next segment: a full or failing
    /// disk): coordd is read-only meanwhile ([`Core::log_refuses`]).
    log_refusal: Option<String>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("zxid", &self.state.last_zxid)
            .field("connections", &self.conns.len())
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// ZooKeeper's session id layout: server id 1 in the top byte, then milliseconds, then a counter, so ids
/// from a later start never collide with earlier ones.
/// The code a failed write is logged with: the reply's, or for a failed multi (which replies OK) the
/// first op error that is not OK or RUNTIME_INCONSISTENCY, i.e. the op that failed.
fn failed_write_code(out: &WriteOutcome) -> i32 {
    if out.err != 0 {
        return out.err;
    }
    match &out.response {
        Response::Multi(results) => results
            .iter()
            .find_map(|r| match r {
                MultiResult::Error(code) if *code != 0 && *code != err::RUNTIME_INCONSISTENCY => Some(*code),
                _ => None,
            })
            .unwrap_or(err::RUNTIME_INCONSISTENCY),
        _ => err::RUNTIME_INCONSISTENCY,
    }
}

fn initial_session_id() -> i64 {
    let ms = now_ms() as u64;
    (((ms << 24) >> 8) | (1u64 << 56)) as i64
}

impl Core {
    pub fn new(
        config: CoorddConfig,
        state: State,
        journal: Arc<Journal>,
        metrics: CoorddMetrics,
        last_snapshot_zxid: i64,
    ) -> Core {
        let marks = journal.subscribe();
        let m = journal.marks();
        let now = Instant::now();
        // Sessions restored from disk get a full timeout from now, as in ZooKeeper, so clients can reconnect.
        let live = state
            .sessions
            .iter()
            .map(|(id, meta)| {
                let timeout = Duration::from_millis(meta.timeout_ms.max(0) as u64);
                (
                    *id,
                    LiveSession {
                        conn: None,
                        last_seen: now,
                        timeout,
                    },
                )
            })
            .collect();
        let next_session_id = initial_session_id().max(state.sessions.keys().max().map_or(0, |m| m + 1));
        Core {
            config,
            state,
            watches: Watches::new(),
            last_seq: journal.last_appended(),
            journal,
            marks,
            durable: m.durable,
            conns: HashMap::new(),
            live,
            pending: VecDeque::new(),
            next_session_id,
            txns_since_snapshot: 0,
            snapshot_job: None,
            last_snapshot_zxid,
            metrics,
            received: 0,
            sent: 0,
            events: Vec::new(),
            log_refusal: None,
        }
    }

    /// Runs until `commands` closes (every connection task and the listener are gone), then flushes.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) -> anyhow::Result<()> {
        let tick = Duration::from_millis((self.config.server.tick_ms / 2).max(10));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let container_every = Duration::from_millis(self.config.limits.container_check_interval_ms.max(100));
        let mut container_ticker = tokio::time::interval(container_every);
        container_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH_COMMANDS_MAX);
        loop {
            let accepting = self.pending.len() < PENDING_FRAMES_MAX;
            tokio::select! {
                n = commands.recv_many(&mut batch, BATCH_COMMANDS_MAX), if accepting => {
                    if n == 0 {
                        break;
                    }
                    let before = self.last_seq;
                    for cmd in batch.drain(..) {
                        self.handle(cmd);
                    }
                    if self.last_seq > before {
                        self.journal.request_durable(self.last_seq)?;
                    }
                    self.maybe_snapshot();
                }
                changed = self.marks.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the transaction log stopped");
                    }
                    let m = *self.marks.borrow_and_update();
                    if m.failed {
                        anyhow::bail!("the transaction log failed; stopping so nothing unsynced is served");
                    }
                    self.durable = m.durable;
                    self.release();
                    self.log_refuses();
                }
                _ = ticker.tick() => {
                    let before = self.last_seq;
                    self.expire_sessions();
                    if self.last_seq > before {
                        self.journal.request_durable(self.last_seq)?;
                    }
                }
                _ = container_ticker.tick() => {
                    let before = self.last_seq;
                    self.remove_expired_nodes();
                    if self.last_seq > before {
                        self.journal.request_durable(self.last_seq)?;
                    }
                }
                done = async { self.snapshot_job.as_mut().map(|j| &mut j.done).expect("guarded").await },
                    if self.snapshot_job.is_some() => {
                    self.snapshot_job = None;
                    match done {
                        Ok(Ok(zxid)) => {
                            self.last_snapshot_zxid = zxid;
                            log::info!("snapshot at zxid 0x{zxid:x} written");
                        }
                        Ok(Err(e)) => log::error!("snapshot failed: {e}"),
                        Err(_) => log::error!("snapshot thread ended without a result"),
                    }
                }
            }
        }
        // Everything appended becomes durable, then every queued frame goes out.
        if self.last_seq > self.durable {
            self.journal.durable(self.last_seq).await?;
            self.durable = self.last_seq;
        }
        self.release();
        if let Some(job) = self.snapshot_job.take() {
            let _ = job.done.await;
        }
        // No snapshot at shutdown: with a large tree it takes seconds (against systemd's stop timeout), and
        // the next start replays at most `snapshot_every_txns` records, which is cheaper than writing it.
        Ok(())
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Connect {
                conn,
                req,
                peer,
                outbox,
            } => self.connect(conn, req, peer, outbox),
            Command::Request {
                conn,
                xid,
                req,
                received,
            } => {
                self.received += 1;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.received += 1;
                }
                self.request(conn, xid, req);
                self.metrics
                    .request_latency
                    .observe(received.elapsed().as_secs_f64());
            }
            Command::Disconnected { conn } => self.disconnected(conn),
            Command::FourLetter { word, reply } => {
                let _ = reply.send(crate::fourlw::answer(word, self));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    pub fn status(&self) -> StatusInfo {
        StatusInfo {
            zxid: self.state.last_zxid,
            znodes: self.state.tree.node_count(),
            sessions: self.state.sessions.len(),
            connections: self.conns.len(),
            watches: self.watches.total(),
            ephemerals: self.state.tree.ephemeral_count(),
            outstanding: self.pending.len(),
            received: self.received,
            sent: self.sent,
            approximate_data_bytes: self.state.tree.approximate_data_bytes(),
            last_snapshot_zxid: self.last_snapshot_zxid,
        }
    }

    pub fn config(&self) -> &CoorddConfig {
        &self.config
    }

    pub fn watches(&self) -> &Watches {
        &self.watches
    }

    /// (peer, session, received, sent) per connection, for `cons`/`stat`.
    pub fn connections(&self) -> Vec<(SocketAddr, Option<i64>, u64, u64)> {
        let mut v: Vec<_> = self
            .conns
            .values()
            .map(|c| (c.peer, c.session, c.received, c.sent))
            .collect();
        v.sort_by_key(|c| c.0);
        v
    }

    // ---- sending ----------------------------------------------------------------------------------------

    /// Queues a frame for `conn` that may leave once the log is durable up to `seq`.
    fn send_after(&mut self, conn: u64, seq: u64, out: Outgoing) {
        if self.pending.is_empty() && seq <= self.durable {
            self.deliver(conn, out);
        } else {
            self.pending.push_back(Pending { seq, conn, out });
        }
    }

    /// Queues a frame behind everything already appended.
    fn send(&mut self, conn: u64, out: Outgoing) {
        self.send_after(conn, self.last_seq, out);
    }

    fn release(&mut self) {
        while self.pending.front().is_some_and(|p| p.seq <= self.durable) {
            if let Some(p) = self.pending.pop_front() {
                self.deliver(p.conn, p.out);
            }
        }
        self.metrics.outstanding.set(self.pending.len() as i64);
    }

    fn deliver(&mut self, conn: u64, out: Outgoing) {
        let limit = self.config.limits.outbound_bytes_max;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        match out {
            Outgoing::Frame(frame) => {
                let queued = c.outbox.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed) + frame.len();
                c.sent += 1;
                self.sent += 1;
                let _ = c.outbox.tx.send(Outgoing::Frame(frame));
                if queued > limit {
                    log::warn!(
                        "closing connection from {}: {queued} bytes of replies unread",
                        c.peer
                    );
                    c.closing = true;
                    c.outbox.abort.notify_one();
                }
            }
            Outgoing::Close => {
                c.closing = true;
                let _ = c.outbox.tx.send(Outgoing::Close);
            }
        }
    }

    // ---- the transaction log ---------------------------------------------------------------------------

    /// Whether the log refuses writes now (it cannot create its next segment), asked before anything is
    /// applied: coordd is then read-only, as a ZooKeeper server without a quorum is. Writes get
    /// NOTREADONLY, new sessions are turned away, sessions do not expire and TTL and container nodes stay
    /// (each of those is a write); reads and watches go on. Asks the journal itself, not the marks
    /// channel, so a write right after the journal turned is refused rather than applied.
    fn log_refuses(&mut self) -> bool {
        let refusal = self.journal.cannot_grow();
        match (&self.log_refusal, &refusal) {
            (None, Some(why)) => log::error!(
                "read-only: the transaction log cannot create its next segment ({why}); writes are refused \
                 with NOTREADONLY and new sessions turned away, reads are served, until it can"
            ),
            (Some(_), None) => log::info!("the transaction log takes writes again: leaving read-only"),
            _ => {}
        }
        self.log_refusal = refusal;
        self.log_refusal.is_some()
    }

    /// Logs one transaction. A log that cannot take it is fatal: the in-memory tree would run ahead of
    /// the disk. (A log that cannot grow is seen before anything is applied: [`Core::log_refuses`].)
    fn log_txn(&mut self, txn: &Txn) -> u64 {
        match self.journal.append(&txn.encode()) {
            Ok(seq) => {
                self.last_seq = seq;
                self.txns_since_snapshot += 1;
                self.metrics.txns.inc();
                seq
            }
            Err(e) => {
                log::error!("transaction log append failed: {e}; stopping");
                std::process::exit(1);
            }
        }
    }

    fn next_zxid(&self) -> i64 {
        self.state.last_zxid + 1
    }

    /// Sends the notifications `events` to their sessions' connections, after `seq`.
    fn notify(&mut self, seq: u64) {
        let events = std::mem::take(&mut self.events);
        for e in &events {
            if let Some(conn) = self.live.get(&e.session).and_then(|l| l.conn) {
                self.send_after(
                    conn,
                    seq,
                    Outgoing::Frame(encode_notification(e.event_type, &e.path)),
                );
            }
        }
        self.events = events;
        self.events.clear();
    }

    // ---- sessions ---------------------------------------------------------------------------------------

    fn connect(&mut self, conn: u64, req: ConnectRequest, peer: SocketAddr, outbox: Outbox) {
        let with_ro = req.read_only.is_some();
        self.conns.insert(
            conn,
            Connection {
                outbox,
                peer,
                session: None,
                auth: Arc::new(AuthIds::for_ip(&peer.ip().to_string())),
                sasl: None,
                received: 0,
                sent: 0,
                closing: false,
            },
        );
        if req.last_zxid_seen > self.state.last_zxid {
            // The client has seen a newer state than ours: let it try another server (ZooKeeper does).
            log::info!(
                "refusing session 0x{:x} from {peer}: client saw zxid 0x{:x}, ours is 0x{:x}",
                req.session_id,
                req.last_zxid_seen,
                self.state.last_zxid
            );
            self.send(conn, Outgoing::Close);
            return;
        }
        if req.session_id == 0 {
            if self.log_refuses() {
                // A new session is a write; the client tries another server, or this one later.
                log::info!("refusing a new session from {peer}: read-only (the transaction log cannot grow)");
                self.send(conn, Outgoing::Close);
                return;
            }
            let min = self.config.server.min_session_timeout_ms() as i64;
            let max = self.config.server.max_session_timeout_ms() as i64;
            let timeout_ms = i64::from(req.timeout_ms).clamp(min, max) as i32;
            let session = self.next_session_id;
            self.next_session_id += 1;
            let password: [u8; 16] = rand::random();
            let meta = SessionMeta { timeout_ms, password };
            let zxid = self.next_zxid();
            self.state.open_session(session, meta, zxid);
            let seq = self.log_txn(&Txn {
                zxid,
                time_ms: now_ms(),
                session,
                body: TxnBody::CreateSession(meta),
            });
            self.attach(conn, session, timeout_ms);
            log::debug!("session 0x{session:x} opened from {peer}, timeout {timeout_ms} ms");
            let resp = ConnectResponse {
                timeout_ms,
                session_id: session,
                password,
                with_read_only: with_ro,
            };
            self.send_after(conn, seq, Outgoing::Frame(resp.encode()));
            return;
        }
        let valid = self
            .state
            .sessions
            .get(&req.session_id)
            .filter(|m| m.password[..] == req.password[..]);
        match valid.copied() {
            Some(meta) if self.live.contains_key(&req.session_id) => {
                self.attach(conn, req.session_id, meta.timeout_ms);
                let resp = ConnectResponse {
                    timeout_ms: meta.timeout_ms,
                    session_id: req.session_id,
                    password: meta.password,
                    with_read_only: with_ro,
                };
                self.send(conn, Outgoing::Frame(resp.encode()));
            }
            _ => {
                self.send(conn, Outgoing::Frame(ConnectResponse::expired(with_ro).encode()));
                self.send(conn, Outgoing::Close);
            }
        }
        self.metrics.sessions.set(self.state.sessions.len() as i64);
    }

    /// Binds a session to a connection; a connection it had before is closed (the client moved).
    fn attach(&mut self, conn: u64, session: i64, timeout_ms: i32) {
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        let old = self.live.insert(
            session,
            LiveSession {
                conn: Some(conn),
                last_seen: Instant::now(),
                timeout,
            },
        );
        if let Some(old_conn) = old.and_then(|o| o.conn).filter(|c| *c != conn) {
            if let Some(c) = self.conns.get_mut(&old_conn) {
                c.session = None;
            }
            self.watches.forget_session(session);
            self.send(old_conn, Outgoing::Close);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session);
        }
        self.metrics.sessions.set(self.state.sessions.len() as i64);
    }

    fn disconnected(&mut self, conn: u64) {
        let Some(c) = self.conns.remove(&conn) else { return };
        if let Some(session) = c.session {
            if let Some(l) = self.live.get_mut(&session) {
                if l.conn == Some(conn) {
                    l.conn = None;
                    l.last_seen = Instant::now();
                    self.watches.forget_session(session);
                }
            }
        }
        self.pending.retain(|p| p.conn != conn);
    }

    fn expire_sessions(&mut self) {
        if self.log_refuses() {
            return; // An expiry is a write: sessions wait for the log.
        }
        let now = Instant::now();
        // ZooKeeper rounds expiry to the next tick; expiring a little late is what clients expect.
        let tick = Duration::from_millis(self.config.server.tick_ms);
        let expired: Vec<i64> = self
            .live
            .iter()
            .filter(|(_, l)| now.duration_since(l.last_seen) > l.timeout + tick / 2)
            .map(|(id, _)| *id)
            .collect();
        for session in expired {
            log::info!("session 0x{session:x} expired");
            self.metrics.sessions_expired.inc();
            self.end_session(session);
        }
    }

    /// Logs a closeSession for `session`, fires its ephemerals' watches, and closes its connection.
    fn end_session(&mut self, session: i64) -> u64 {
        let zxid = self.next_zxid();
        let seq = self.log_txn(&Txn {
            zxid,
            time_ms: now_ms(),
            session,
            body: TxnBody::CloseSession,
        });
        let triggers = self.state.close_session(session, zxid);
        let ended = self.live.remove(&session);
        self.watches.forget_session(session);
        let (live, conns) = (&self.live, &self.conns);
        self.watches.fire(
            &triggers,
            |s, acl| may_read(live, conns, s, acl),
            &mut self.events,
        );
        self.notify(seq);
        if let Some(conn) = ended.and_then(|l| l.conn) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.session = None;
            }
            self.send_after(conn, seq, Outgoing::Close);
        }
        self.metrics.sessions.set(self.state.sessions.len() as i64);
        seq
    }

    /// Deletes empty containers that once had children, and TTL nodes past their TTL with no children.
    fn remove_expired_nodes(&mut self) {
        if self.log_refuses() {
            return;
        }
        let now = now_ms();
        for path in self.state.tree.expirable() {
            let Some(node) = self.state.tree.get(&path) else {
                continue;
            };
            if !node.children.is_empty() {
                continue;
            }
            let due = if node.is_container() {
                node.cversion > 0
            } else {
                node.ttl_ms().is_some_and(|ttl| now - node.mtime > ttl)
            };
            if due {
                let req = Request::DeleteContainer {
                    path: path.to_string(),
                };
                self.write(None, 0, 0, req);
            }
        }
    }

    // ---- requests ---------------------------------------------------------------------------------------

    fn request(&mut self, conn: u64, xid: i32, req: Request) {
        let Some(c) = self.conns.get(&conn) else { return };
        let Some(session) = c.session else {
            // A request before the handshake finished (or after the session ended): drop the connection.
            self.send(conn, Outgoing::Close);
            return;
        };
        if let Some(l) = self.live.get_mut(&session) {
            l.last_seen = Instant::now();
        }
        if req.is_write() {
            if self.log_refuses() {
                let frame = encode_reply(xid, self.state.last_zxid, err::NOT_READONLY, &Response::Empty);
                self.send_after(conn, self.last_seq, Outgoing::Frame(frame));
                return;
            }
            if matches!(req, Request::CloseSession) {
                let seq = self.end_session(session);
                let frame = encode_reply(xid, self.state.last_zxid, 0, &Response::Empty);
                // end_session queued a Close behind the reply's position; send the reply first.
                self.pending
                    .retain(|p| !(p.conn == conn && matches!(p.out, Outgoing::Close)));
                self.send_after(conn, seq, Outgoing::Frame(frame));
                self.send_after(conn, seq, Outgoing::Close);
                return;
            }
            self.write(Some(conn), session, xid, req);
            return;
        }
        self.read(conn, session, xid, req);
    }

    /// A write from `conn` (or from the server itself when `conn` is None).
    fn write(&mut self, conn: Option<u64>, session: i64, xid: i32, req: Request) {
        let zxid = self.next_zxid();
        let time = now_ms();
        let auth = conn.and_then(|c| self.conns.get(&c)).map(|c| c.auth.clone());
        let resolved = match &auth {
            Some(a) => self
                .state
                .resolve(req, a)
                .and_then(|r| self.check_loggable(session, r)),
            None => Ok(req),
        };
        let (code, response, body) = match resolved {
            Err(code) => {
                self.state.last_zxid = zxid;
                (code, Response::Empty, TxnBody::Error(code))
            }
            Ok(resolved) => {
                let caller = Caller {
                    session,
                    auth: auth.as_deref(),
                };
                let out = self.state.apply_write(&resolved, zxid, time, caller);
                let (live, conns) = (&self.live, &self.conns);
                self.watches.fire(
                    &out.triggers,
                    |s, acl| may_read(live, conns, s, acl),
                    &mut self.events,
                );
                let body = if out.applied {
                    TxnBody::Request(resolved)
                } else {
                    TxnBody::Error(failed_write_code(&out))
                };
                (out.err, out.response, body)
            }
        };
        let seq = self.log_txn(&Txn {
            zxid,
            time_ms: time,
            session,
            body,
        });
        self.notify(seq);
        if let Some(conn) = conn {
            self.send_after(
                conn,
                seq,
                Outgoing::Frame(encode_reply(xid, zxid, code, &response)),
            );
        }
    }

    /// A request fits in a frame, but resolving `auth` ACLs replaces each such entry with every identity the
    /// session holds, so its log record can outgrow the log's record limit. That is the client's error
    /// (BADARGUMENTS, as for any write the server cannot take), found before anything is applied; it must
    /// never reach the log, where a refused append stops the server.
    fn check_loggable(&self, session: i64, req: Request) -> Result<Request, i32> {
        if !matches!(
            req,
            Request::Create(_) | Request::SetAcl { .. } | Request::Multi(_)
        ) {
            return Ok(req);
        }
        let mut w = logtank_zk::jute::Writer::new();
        req.encode_body(&mut w);
        let max = crate::config::txn_bytes_max(self.config.limits.frame_bytes_max) as usize;
        // The record's header: kind, zxid, time, session, opcode.
        let len = w.buf.len() + 1 + 8 + 8 + 8 + 4;
        if len > max {
            log::info!(
                "session 0x{session:x}: a {} request resolves to a {len}-byte log record (at most {max}); refused",
                req.opcode()
            );
            return Err(err::BAD_ARGUMENTS);
        }
        Ok(req)
    }

    fn reply(&mut self, conn: u64, xid: i32, result: Result<Response, i32>) {
        let zxid = self.state.last_zxid;
        let frame = match result {
            Ok(body) => encode_reply(xid, zxid, 0, &body),
            Err(code) => encode_reply(xid, zxid, code, &Response::Empty),
        };
        self.send(conn, Outgoing::Frame(frame));
    }

    fn watch_allowed(&self, session: i64) -> Result<(), i32> {
        if self.watches.session_count(session) >= self.config.limits.watches_per_session_max {
            log::warn!("session 0x{session:x} reached limits.watches_per_session_max");
            return Err(err::THROTTLED_OP);
        }
        Ok(())
    }

    fn read(&mut self, conn: u64, session: i64, xid: i32, req: Request) {
        let auth = match self.conns.get(&conn) {
            Some(c) => c.auth.clone(),
            None => return,
        };
        let result: Result<Response, i32> = match req {
            Request::Ping => {
                let frame = encode_reply(xid::PING, self.state.last_zxid, 0, &Response::Empty);
                self.send(conn, Outgoing::Frame(frame));
                return;
            }
            Request::Exists { path, watch } => {
                let r = self
                    .watch_allowed(session)
                    .or_else(|e| if watch { Err(e) } else { Ok(()) });
                r.and_then(|_| {
                    if watch {
                        self.watches.add(Kind::Data, &path, session);
                    }
                    self.state.stat(&path).map(Response::Stat).ok_or(err::NO_NODE)
                })
            }
            Request::GetData { path, watch } => self.get_data(&path, watch, session, &auth),
            Request::GetChildren { path, watch } => self
                .get_children(&path, watch, session, &auth)
                .map(|(children, _)| Response::Children(children)),
            Request::GetChildren2 { path, watch } => self
                .get_children(&path, watch, session, &auth)
                .map(|(children, stat)| Response::Children2 { children, stat }),
            Request::GetAcl { path } => self.get_acl(&path, &auth),
            Request::Sync { path } => Ok(Response::Sync { path }),
            Request::MultiRead(ops) => Ok(self.multi_read(&ops, &auth)),
            Request::Reconfig => Err(err::UNIMPLEMENTED),
            Request::CheckWatches { path, watch_type } => {
                if self.watches.check(&path, watch_type, session) {
                    Ok(Response::Empty)
                } else {
                    Err(err::NO_WATCHER)
                }
            }
            Request::RemoveWatches { path, watch_type } => {
                if self.watches.remove_type(&path, watch_type, session) {
                    Ok(Response::Empty)
                } else {
                    Err(err::NO_WATCHER)
                }
            }
            Request::Auth {
                scheme,
                auth: credentials,
            } => {
                self.auth(conn, xid, &scheme, &credentials);
                return;
            }
            Request::SetWatches(sw) => self.set_watches(conn, session, &sw).map(|()| Response::Empty),
            Request::Sasl { token } => match self.sasl(conn, &token) {
                Err(code) => {
                    // As ZooKeeper: the failure reply (zxid 0), then the connection is closed.
                    self.send(
                        conn,
                        Outgoing::Frame(encode_reply(xid, 0, code, &Response::Empty)),
                    );
                    self.send(conn, Outgoing::Close);
                    return;
                }
                ok => ok,
            },
            Request::GetEphemerals { prefix } => {
                let mut paths: Vec<String> = self
                    .state
                    .tree
                    .ephemerals_of(session)
                    .iter()
                    .filter(|p| p.starts_with(prefix.as_str()))
                    .map(|p| p.to_string())
                    .collect();
                paths.sort();
                Ok(Response::Strings(paths))
            }
            Request::GetAllChildrenNumber { path } => match self.state.read_node(&path, perms::READ, &auth) {
                Ok(_) => Ok(Response::Number(
                    self.state.tree.descendant_count(&path).unwrap_or(0) as i32,
                )),
                Err(e) => Err(e),
            },
            Request::AddWatch { path, mode } => self.watch_allowed(session).and_then(|_| {
                let kind = match mode {
                    0 => Kind::Persistent,
                    1 => Kind::Recursive,
                    _ => return Err(err::BAD_ARGUMENTS),
                };
                self.watches.add(kind, &path, session);
                Ok(Response::ErrorBody(0))
            }),
            Request::WhoAmI => Ok(Response::WhoAmI(who_am_i(&auth))),
            Request::Unknown(code) => {
                log::debug!(
                    "unknown opcode {code} from {}",
                    self.conns
                        .get(&conn)
                        .map_or(String::new(), |c| c.peer.to_string())
                );
                self.send(
                    conn,
                    Outgoing::Frame(encode_reply(xid, -1, err::UNIMPLEMENTED, &Response::Empty)),
                );
                return;
            }
            // Writes never reach here.
            _ => Err(err::UNIMPLEMENTED),
        };
        self.reply(conn, xid, result);
    }

    fn get_data(&mut self, path: &str, watch: bool, session: i64, auth: &AuthIds) -> Result<Response, i32> {
        let node = self.state.read_node(path, perms::READ, auth)?;
        let resp = Response::GetData {
            data: node.data.as_ref().map(|d| d.to_vec()),
            stat: node.stat(),
        };
        if watch {
            self.watch_allowed(session)?;
            self.watches.add(Kind::Data, path, session);
        }
        Ok(resp)
    }

    fn get_children(
        &mut self,
        path: &str,
        watch: bool,
        session: i64,
        auth: &AuthIds,
    ) -> Result<(Vec<String>, logtank_zk::Stat), i32> {
        let node = self.state.read_node(path, perms::READ, auth)?;
        let stat = node.stat();
        let children = node.children.iter().map(|c| c.to_string()).collect();
        if watch {
            self.watch_allowed(session)?;
            self.watches.add(Kind::Child, path, session);
        }
        Ok((children, stat))
    }

    fn get_acl(&self, path: &str, auth: &AuthIds) -> Result<Response, i32> {
        let node = self.state.read_node(path, perms::READ | perms::ADMIN, auth)?;
        let mut acl = (*node.acl).clone();
        if !auth.allows(&node.acl, perms::ADMIN) {
            // Without ADMIN the digest hashes stay hidden, as in ZooKeeper.
            for a in acl.iter_mut().filter(|a| a.id.scheme == "digest") {
                let user = a.id.id.split(':').next().unwrap_or("").to_string();
                a.id.id = format!("{user}:x");
            }
        }
        Ok(Response::GetAcl {
            acl,
            stat: node.stat(),
        })
    }

    fn multi_read(&self, ops: &[ReadOp], auth: &AuthIds) -> Response {
        let results = ops
            .iter()
            .map(|o| match o {
                ReadOp::GetData { path } => match self.state.read_node(path, perms::READ, auth) {
                    Ok(n) => MultiResult::GetData {
                        data: n.data.as_ref().map(|d| d.to_vec()),
                        stat: n.stat(),
                    },
                    Err(e) => MultiResult::Error(e),
                },
                ReadOp::GetChildren { path } => match self.state.read_node(path, perms::READ, auth) {
                    Ok(n) => MultiResult::GetChildren {
                        children: n.children.iter().map(|c| c.to_string()).collect(),
                    },
                    Err(e) => MultiResult::Error(e),
                },
            })
            .collect();
        Response::Multi(results)
    }

    /// `setWatches(2)` after a reconnect: anything that changed since the client's last zxid fires now. A
    /// session already at `limits.watches_per_session_max` gets no more watches this way either: the reply
    /// is THROTTLEDOP, as for a watch-setting read, and the watches past the limit are not set.
    fn set_watches(&mut self, conn: u64, session: i64, sw: &SetWatches) -> Result<(), i32> {
        use logtank_zk::event;
        let rel = sw.relative_zxid;
        let max = self.config.limits.watches_per_session_max;
        let mut fire: Vec<(i32, String)> = Vec::new();
        let mut wanted: Vec<(Kind, &String)> = Vec::new();
        for path in &sw.data {
            match self.state.tree.get(path) {
                None => fire.push((event::NODE_DELETED, path.clone())),
                Some(n) if n.mzxid > rel => fire.push((event::NODE_DATA_CHANGED, path.clone())),
                Some(_) => wanted.push((Kind::Data, path)),
            }
        }
        for path in &sw.exist {
            match self.state.tree.get(path) {
                Some(_) => fire.push((event::NODE_CREATED, path.clone())),
                None => wanted.push((Kind::Data, path)),
            }
        }
        for path in &sw.child {
            match self.state.tree.get(path) {
                None => fire.push((event::NODE_DELETED, path.clone())),
                Some(n) if n.pzxid > rel => fire.push((event::NODE_CHILDREN_CHANGED, path.clone())),
                Some(_) => wanted.push((Kind::Child, path)),
            }
        }
        wanted.extend(sw.persistent.iter().map(|p| (Kind::Persistent, p)));
        wanted.extend(sw.persistent_recursive.iter().map(|p| (Kind::Recursive, p)));
        let mut refused = 0usize;
        for (kind, path) in wanted {
            if self.watches.session_count(session) >= max {
                refused += 1;
            } else {
                self.watches.add(kind, path, session);
            }
        }
        for (t, path) in fire {
            self.send(conn, Outgoing::Frame(encode_notification(t, &path)));
        }
        if refused > 0 {
            log::warn!(
                "session 0x{session:x} reached limits.watches_per_session_max; {refused} watches of a setWatches not set"
            );
            return Err(err::THROTTLED_OP);
        }
        Ok(())
    }

    /// `addauth`. The reply echoes the request's xid, as ZooKeeper's `processPacket` does: the Java client
    /// and kazoo send -4 (`AUTHPACKET_XID`), the Rust `zookeeper-client` a regular xid it then waits for.
    fn auth(&mut self, conn: u64, xid: i32, scheme: &str, credentials: &[u8]) {
        let super_digest = self.config.auth.super_digest.clone();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let ok = match scheme {
            "digest" => match std::str::from_utf8(credentials) {
                Ok(user_password) if user_password.contains(':') => {
                    let id = digest_id(user_password);
                    let auth = Arc::make_mut(&mut c.auth);
                    // As ZooKeeper: the super user gets the `super` id first, then its digest id.
                    let is_super = super_digest.as_deref() == Some(id.as_str());
                    let added = (!is_super
                        || auth.add(Id {
                            scheme: "super".into(),
                            id: String::new(),
                        }))
                        && auth.add(Id {
                            scheme: "digest".into(),
                            id,
                        });
                    if !added {
                        log::info!(
                            "connection from {} already holds {} identities; addauth refused",
                            c.peer,
                            crate::acl::IDS_PER_CONNECTION_MAX
                        );
                    } else if is_super {
                        auth.is_super = true;
                    }
                    added
                }
                _ => false,
            },
            "ip" => true,
            "world" => true,
            _ => false,
        };
        let zxid = 0;
        if ok {
            self.send(
                conn,
                Outgoing::Frame(encode_reply(xid, zxid, 0, &Response::Empty)),
            );
        } else {
            log::info!("authentication with scheme '{scheme}' failed");
            self.send(
                conn,
                Outgoing::Frame(encode_reply(xid, zxid, err::AUTH_FAILED, &Response::Empty)),
            );
            self.send(conn, Outgoing::Close);
        }
    }

    fn sasl(&mut self, conn: u64, token: &[u8]) -> Result<Response, i32> {
        let users = &self.config.auth.sasl_users;
        if users.is_empty() {
            return Err(err::AUTH_FAILED);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return Err(err::AUTH_FAILED);
        };
        let server = c.sasl.get_or_insert_with(SaslServer::new);
        match server.step(token, users) {
            SaslOutcome::Continue(reply) => Ok(Response::Sasl { token: reply }),
            SaslOutcome::Done { reply, user } => {
                c.sasl = None;
                if !Arc::make_mut(&mut c.auth).add(Id {
                    scheme: "sasl".into(),
                    id: user,
                }) {
                    log::info!(
                        "connection from {} holds too many identities; SASL login refused",
                        c.peer
                    );
                    return Err(err::AUTH_FAILED);
                }
                Ok(Response::Sasl { token: reply })
            }
            SaslOutcome::Failed(why) => {
                log::info!("SASL authentication from {} failed: {why}", c.peer);
                c.sasl = None;
                Err(err::AUTH_FAILED)
            }
        }
    }

    // ---- snapshots --------------------------------------------------------------------------------------

    fn maybe_snapshot(&mut self) {
        if self.snapshot_job.is_some()
            || self.txns_since_snapshot < self.config.persistence.snapshot_every_txns
        {
            return;
        }
        self.txns_since_snapshot = 0;
        let (tx, rx) = oneshot::channel();
        let job = self.snapshot_inputs();
        std::thread::Builder::new()
            .name("coordd-snapshot".into())
            .spawn(move || {
                let _ = tx.send(job.run());
            })
            .map_or_else(|e| log::error!("cannot start snapshot thread: {e}"), |_| ());
        self.snapshot_job = Some(SnapshotJob { done: rx });
    }

    /// An O(1) copy of the state for a snapshot thread.
    fn snapshot_inputs(&self) -> SnapshotInputs {
        SnapshotInputs {
            tree: self.state.tree.clone(),
            sessions: self.state.sessions.iter().map(|(k, v)| (*k, *v)).collect(),
            zxid: self.state.last_zxid,
            seq: self.last_seq,
            journal: self.journal.clone(),
            retained: self.config.persistence.snapshots_retained,
        }
    }
}

/// whoAmI as ZooKeeper 3.8 answers it: credentials added by auth first, the connection's ip last; a digest
/// id shows only its user name.
fn who_am_i(auth: &AuthIds) -> Vec<ClientInfo> {
    let (ip, others): (Vec<&Id>, Vec<&Id>) = auth.ids.iter().partition(|id| id.scheme == "ip");
    others
        .into_iter()
        .chain(ip)
        .map(|id| ClientInfo {
            auth_scheme: id.scheme.clone(),
            user: if id.scheme == "digest" {
                id.id.split(':').next().unwrap_or("").to_string()
            } else {
                id.id.clone()
            },
        })
        .collect()
}

/// Whether a session's connection may READ a node with `acl` (decides who hears of a change).
fn may_read(
    live: &HashMap<i64, LiveSession>,
    conns: &HashMap<u64, Connection>,
    session: i64,
    acl: &[Acl],
) -> bool {
    live.get(&session)
        .and_then(|l| l.conn)
        .and_then(|c| conns.get(&c))
        .is_some_and(|c| c.auth.allows(acl, perms::READ))
}

struct SnapshotInputs {
    tree: crate::tree::DataTree,
    sessions: Vec<(i64, SessionMeta)>,
    zxid: i64,
    seq: u64,
    journal: Arc<Journal>,
    retained: usize,
}

impl SnapshotInputs {
    /// Waits until the log covers the snapshot (so a snapshot never holds a change the log could lose),
    /// writes it, prunes old snapshots and the log before the oldest one kept.
    fn run(self) -> Result<i64, String> {
        if self.seq > 0 {
            self.journal.wait_durable(self.seq).map_err(|e| e.to_string())?;
        }
        let dir = crate::persist::snapshot_dir(self.journal.dir());
        snapshot::write(&dir, &self.tree, &self.sessions, self.zxid, self.seq).map_err(|e| e.to_string())?;
        if let Some(oldest) = snapshot::prune(&dir, self.retained).map_err(|e| e.to_string())? {
            let seq = snapshot::load_journal_seq(&oldest.path).map_err(|e| e.to_string())?;
            self.journal.drop_before(seq + 1).map_err(|e| e.to_string())?;
        }
        Ok(self.zxid)
    }
}
