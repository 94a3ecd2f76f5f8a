//! What the two ports do with a call: the reader port (`server.listen`, 15100) serves `read_page`, the
//! manager port (`indexes.manager_listen`, 16000) the six LogManager methods. A method of the other port,
//! or `send_batch`, gets UNKNOWN_METHOD with the port that serves it; the connection stays usable.
//!
//! Storage calls do blocking file IO and run on tokio's blocking pool. Their errors go back as application
//! exceptions carrying [`StorageError`]'s message, which is written for the operator reading it on the
//! client side.
//!
//! Gating (DESIGN §4, unlike IndexTank, which never gated): `read_page` is served only by the active master
//! (both markers, not fenced), so a recovery never silently reads an incomplete or stale history; the
//! manager's `enqueue_for_optimization` and `delete_index` queue work for the pipeline, which runs only on
//! the active master, so they are refused elsewhere too. The informational calls are always served.

use std::sync::Arc;

use logtank_storage::{Storage, StorageError};
use logtank_thrift::{
    encode_exception, encode_index_log_info_reply, encode_list_existing_indexes_reply,
    encode_optimization_queue_reply, encode_raw_log_info_reply, encode_read_page_reply, encode_void_reply,
    Call, ExceptionKind, LogPageToken, Method,
};

use logtank_thrift_server::{Broken, Handler};

use crate::metrics::IndexesMetrics;
use crate::roles::Roles;

/// What both ports share.
#[derive(Debug)]
pub struct Shared {
    pub storage: Arc<Storage>,
    pub roles: Arc<Roles>,
    pub metrics: IndexesMetrics,
    /// Who may call the LogManager's state-changing methods (`delete_index`, `enqueue_for_optimization`):
    /// `indexes.manager_state_changes_from`.
    pub state_changes_from: Vec<crate::config::AddressRange>,
}

/// The metrics label of a storage error.
pub fn error_label(e: &StorageError) -> &'static str {
    match e {
        StorageError::Io { .. } => "io",
        StorageError::InvalidIndexCode(_) => "invalid_index_code",
        StorageError::NoSuchIndex(_) => "no_such_index",
        StorageError::TokenExpired { .. } => "token_expired",
        StorageError::InvalidToken { .. } => "invalid_token",
        StorageError::Corrupt { .. } => "corrupt",
        StorageError::Gap { .. } => "gap",
        StorageError::Locked { .. } => "locked",
        _ => "other",
    }
}

/// The metrics label of a call the codec refused (its exception went back; the connection goes on).
fn refusal_label(kind: ExceptionKind) -> &'static str {
    match kind {
        ExceptionKind::UnknownMethod => "unknown_method",
        ExceptionKind::InvalidMessageType => "invalid_message_type",
        _ => "invalid_arguments",
    }
}

/// Why a call failed before or inside storage.
enum Failure {
    Refused(crate::roles::NotServing),
    /// A state-changing call from an address `indexes.manager_state_changes_from` does not name.
    NotAllowed(String),
    Storage(StorageError),
    /// The blocking task died (a panic: the process is aborting anyway) or was cancelled.
    Internal(String),
}

impl Shared {
    /// Whether `peer` may delete indexes and queue optimizations.
    pub fn may_change_state(&self, peer: std::net::SocketAddr) -> bool {
        self.state_changes_from.iter().any(|r| r.contains(peer.ip()))
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Storage) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, Failure> {
        let storage = self.storage.clone();
        match tokio::task::spawn_blocking(move || f(&storage)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Storage(e)),
            Err(e) => Err(Failure::Internal(format!("the storage task failed: {e}"))),
        }
    }

    /// Counts a connection closed for bytes that are not a call (`protocol`); a client leaving inside a
    /// request is not an error of ours to count.
    fn broken(&self, cause: Broken) {
        if cause == Broken::Protocol {
            self.metrics.error("protocol");
        }
    }

    /// Writes the exception for `failure`, counts it, and logs what an operator should see.
    fn fail(&self, name: &str, seqid: i32, what: &str, failure: Failure, out: &mut Vec<u8>) {
        let (label, message) = match failure {
            Failure::Refused(r) => (r.label(), r.to_string()),
            Failure::NotAllowed(m) => {
                log::warn!("{what}: {m}");
                ("not_allowed", m)
            }
            Failure::Storage(e) => {
                let label = error_label(&e);
                match &e {
                    // The host's own data is broken: the operator must hear of it, not only the client.
                    StorageError::Corrupt { .. } | StorageError::Io { .. } | StorageError::Gap { .. } => {
                        log::error!("{what}: {e}")
                    }
                    _ => log::debug!("{what}: {e}"),
                }
                (label, e.to_string())
            }
            Failure::Internal(m) => {
                log::error!("{what}: {m}");
                ("internal", m)
            }
        };
        self.metrics.error(label);
        encode_exception(out, name, seqid, ExceptionKind::InternalError, &message);
    }
}

/// The LogReader port: `read_page`.
#[derive(Debug, Clone)]
pub struct ReaderPort(pub Arc<Shared>);

/// The LogManager port: the six manager methods.
#[derive(Debug, Clone)]
pub struct ManagerPort(pub Arc<Shared>);

fn wrong_port(name: &str, seqid: i32, method: Method, here: &str, out: &mut Vec<u8>) {
    let there = match method {
        Method::ReadPage => "the LogReader port (server.listen, 15100 by default)",
        Method::SendBatch => "logtank-writer (15000 by default)",
        _ => "the LogManager port (indexes.manager_listen, 16000 by default)",
    };
    encode_exception(
        out,
        name,
        seqid,
        ExceptionKind::UnknownMethod,
        &format!("{method} is not served on this {here} port: it is served by {there}"),
    );
}

impl Handler for ReaderPort {
    async fn handle(
        &self,
        _peer: std::net::SocketAddr,
        name: &str,
        seqid: i32,
        call: Call,
        out: &mut Vec<u8>,
    ) {
        let shared = &self.0;
        let Call::ReadPage { index_code, token } = call else {
            shared.metrics.error("unknown_method");
            return wrong_port(name, seqid, call.method(), "LogReader", out);
        };
        let what = format!("read_page {index_code:?}");
        match read_page(shared, index_code, token).await {
            Ok(page) => {
                shared.metrics.page_served(page.record_count, page.records.len());
                encode_read_page_reply(out, seqid, page.record_count, &page.records, page.next.as_ref());
            }
            Err(f) => shared.fail(name, seqid, &what, f, out),
        }
    }

    fn refused(&self, kind: ExceptionKind) {
        self.0.metrics.error(refusal_label(kind));
    }

    fn broken(&self, cause: Broken) {
        self.0.broken(cause);
    }

    fn connections(&self, delta: i64) {
        self.0.metrics.reader_connections.inc_by(delta);
    }
}

async fn read_page(
    shared: &Arc<Shared>,
    code: String,
    token: LogPageToken,
) -> Result<logtank_storage::Page, Failure> {
    shared.roles.check_serving().map_err(Failure::Refused)?;
    shared
        .blocking(move |storage| storage.read_page(&code, &token))
        .await
}

impl Handler for ManagerPort {
    async fn handle(
        &self,
        peer: std::net::SocketAddr,
        name: &str,
        seqid: i32,
        call: Call,
        out: &mut Vec<u8>,
    ) {
        let shared = &self.0;
        let method = call.method();
        let what = match &call {
            Call::GetIndexLogInfo { index_code }
            | Call::EnqueueForOptimization { index_code, .. }
            | Call::DeleteIndex { index_code } => format!("{method} {index_code:?}"),
            _ => method.to_string(),
        };
        let result: Result<(), Failure> = match call {
            Call::GetIndexLogInfo { index_code } => shared
                .blocking(move |s| s.index_log_info(&index_code))
                .await
                .map(|info| encode_index_log_info_reply(out, seqid, &info)),
            Call::GetRawLogInfo => shared
                .blocking(|s| s.raw_log_info())
                .await
                .map(|info| encode_raw_log_info_reply(out, seqid, &info)),
            Call::EnqueueForOptimization { .. } | Call::DeleteIndex { .. }
                if !shared.may_change_state(peer) =>
            {
                Err(Failure::NotAllowed(format!(
                    "{method} from {} refused: state-changing LogManager calls are accepted from the addresses \
                     in indexes.manager_state_changes_from only",
                    peer.ip()
                )))
            }
            Call::EnqueueForOptimization {
                index_code,
                priority,
                score,
            } => match shared.roles.check_serving() {
                Err(r) => Err(Failure::Refused(r)),
                Ok(()) => shared
                    .blocking(move |s| s.enqueue_for_optimization(&index_code, priority, score))
                    .await
                    // The next cycle takes it (IndexTank's worker polled its queue every 5 s); nothing
                    // wakes the pipeline for it, so the queue can be seen before it is worked off.
                    .map(|()| encode_void_reply(out, name, seqid)),
            },
            Call::DeleteIndex { index_code } => match shared.roles.check_serving() {
                Err(r) => Err(Failure::Refused(r)),
                Ok(()) => {
                    let code = index_code.clone();
                    shared.blocking(move |s| s.delete_index(&code)).await.map(|()| {
                        log::info!("delete_index {index_code:?}: queued; the cleaner removes it");
                        shared.roles.wakeup().notify();
                        encode_void_reply(out, name, seqid)
                    })
                }
            },
            Call::GetOptimizationQueue => shared
                .blocking(|s| Ok(s.optimization_queue()))
                .await
                .map(|queue| encode_optimization_queue_reply(out, seqid, &queue)),
            Call::ListExistingIndexes => shared
                .blocking(|s| s.list_indexes())
                .await
                .map(|codes| encode_list_existing_indexes_reply(out, seqid, &codes)),
            Call::ReadPage { .. } | Call::SendBatch(_) | Call::SendBatchRaw(_) => {
                shared.metrics.error("unknown_method");
                return wrong_port(name, seqid, method, "LogManager", out);
            }
        };
        match result {
            Ok(()) => shared.metrics.manager_call(method.name()),
            Err(f) => shared.fail(name, seqid, &what, f, out),
        }
    }

    fn refused(&self, kind: ExceptionKind) {
        self.0.metrics.error(refusal_label(kind));
    }

    fn broken(&self, cause: Broken) {
        self.0.broken(cause);
    }

    fn connections(&self, delta: i64) {
        self.0.metrics.manager_connections.inc_by(delta);
    }
}
