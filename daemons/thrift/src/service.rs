//! Calls and replies of the three storage services (`LogWriter`, `LogReader`, `LogManager`), both sides,
//! as pure functions. A message is a strict header (`0x8001_0000 | type`, method name, seqid) followed by
//! one struct: `<method>_args` for a call, `<method>_result` (field 0 `success`, absent for void) for a
//! reply, or `TApplicationException { 1: message, 2: type }` for an error.
//!
//! Server side: [`decode_call`] splits the next message off a stream buffer. A message whose framing is
//! broken makes the stream unusable ([`CallDecodeError`]: reply PROTOCOL_ERROR if possible, close). A
//! well-framed message the server cannot serve (unknown method, missing or malformed argument, invalid
//! `index_code`) comes back as [`IncomingCall`] with `call: Err(..)`: reply the exception, keep the
//! connection (the stream is still in step).
//!
//! Client side: [`encode_call`] and one `decode_<method>_reply` per method, which turn EXCEPTION messages
//! into [`ApplicationException`]s.

use std::collections::BTreeMap;
use std::fmt;

use crate::binary::{message_type, ttype, Limits, MessageScanner, Reader, Writer};
use crate::codec::{
    read_index_log_info, read_list, read_page, read_page_token, read_queue_score, read_raw_log_info,
    read_struct, write_batch, write_index_log_info, write_page, write_page_raw, write_page_token,
    write_queue_score, write_raw_log_info,
};
use crate::rules::validate_index_code;
use crate::types::*;
use crate::DecodeError;

/// The three services; each daemon port serves one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    LogWriter,
    LogReader,
    LogManager,
}

/// Every method of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    SendBatch,
    ReadPage,
    GetIndexLogInfo,
    GetRawLogInfo,
    EnqueueForOptimization,
    DeleteIndex,
    GetOptimizationQueue,
    ListExistingIndexes,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::SendBatch,
        Method::ReadPage,
        Method::GetIndexLogInfo,
        Method::GetRawLogInfo,
        Method::EnqueueForOptimization,
        Method::DeleteIndex,
        Method::GetOptimizationQueue,
        Method::ListExistingIndexes,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Method::SendBatch => "send_batch",
            Method::ReadPage => "read_page",
            Method::GetIndexLogInfo => "get_index_log_info",
            Method::GetRawLogInfo => "get_raw_log_info",
            Method::EnqueueForOptimization => "enqueue_for_optimization",
            Method::DeleteIndex => "delete_index",
            Method::GetOptimizationQueue => "get_optimization_queue",
            Method::ListExistingIndexes => "list_existing_indexes",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn service(self) -> Service {
        match self {
            Method::SendBatch => Service::LogWriter,
            Method::ReadPage => Service::LogReader,
            _ => Service::LogManager,
        }
    }

    /// Whether the reply carries no value (`void` methods still get a reply: none of them is oneway).
    pub fn is_void(self) -> bool {
        matches!(
            self,
            Method::SendBatch | Method::EnqueueForOptimization | Method::DeleteIndex
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `TApplicationException.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionKind {
    Unknown,
    UnknownMethod,
    InvalidMessageType,
    WrongMethodName,
    BadSequenceId,
    MissingResult,
    InternalError,
    ProtocolError,
    /// A code newer Thrift versions define (8 and up); kept so nothing is lost.
    Other(i32),
}

impl ExceptionKind {
    pub fn code(self) -> i32 {
        match self {
            ExceptionKind::Unknown => 0,
            ExceptionKind::UnknownMethod => 1,
            ExceptionKind::InvalidMessageType => 2,
            ExceptionKind::WrongMethodName => 3,
            ExceptionKind::BadSequenceId => 4,
            ExceptionKind::MissingResult => 5,
            ExceptionKind::InternalError => 6,
            ExceptionKind::ProtocolError => 7,
            ExceptionKind::Other(c) => c,
        }
    }

    pub fn from_code(code: i32) -> ExceptionKind {
        match code {
            0 => ExceptionKind::Unknown,
            1 => ExceptionKind::UnknownMethod,
            2 => ExceptionKind::InvalidMessageType,
            3 => ExceptionKind::WrongMethodName,
            4 => ExceptionKind::BadSequenceId,
            5 => ExceptionKind::MissingResult,
            6 => ExceptionKind::InternalError,
            7 => ExceptionKind::ProtocolError,
            c => ExceptionKind::Other(c),
        }
    }
}

/// An error the server sent back (a Thrift `TApplicationException`); its text is the server's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApplicationException {
    pub kind: ExceptionKind,
    pub message: String,
}

/// One decoded call.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    SendBatch(LogBatch),
    /// `send_batch` from a decoder made with [`CallDecoder::with_raw_batches`]: the records as sent.
    SendBatchRaw(RawBatch),
    ReadPage {
        index_code: String,
        token: LogPageToken,
    },
    GetIndexLogInfo {
        index_code: String,
    },
    GetRawLogInfo,
    EnqueueForOptimization {
        index_code: String,
        priority: i32,
        score: f64,
    },
    DeleteIndex {
        index_code: String,
    },
    GetOptimizationQueue,
    ListExistingIndexes,
}

impl Call {
    pub fn method(&self) -> Method {
        match self {
            Call::SendBatch(_) | Call::SendBatchRaw(_) => Method::SendBatch,
            Call::ReadPage { .. } => Method::ReadPage,
            Call::GetIndexLogInfo { .. } => Method::GetIndexLogInfo,
            Call::GetRawLogInfo => Method::GetRawLogInfo,
            Call::EnqueueForOptimization { .. } => Method::EnqueueForOptimization,
            Call::DeleteIndex { .. } => Method::DeleteIndex,
            Call::GetOptimizationQueue => Method::GetOptimizationQueue,
            Call::ListExistingIndexes => Method::ListExistingIndexes,
        }
    }
}

/// A well-framed message from a client. `index_code` arguments in `call` are already validated
/// ([`validate_index_code`]); the records of a batch are not (that is the writer's check, per record).
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingCall {
    /// The method name as sent (replies must echo it).
    pub name: String,
    pub seqid: i32,
    /// `Err` with a clear message when the call cannot be served: reply an exception of kind
    /// `error_kind` (see [`IncomingCall::encode_error_reply`]) and keep the connection.
    pub call: Result<Call, String>,
    /// The exception kind for `call: Err` (UNKNOWN_METHOD, INVALID_MESSAGE_TYPE or PROTOCOL_ERROR);
    /// `Unknown` when `call` is `Ok`.
    pub error_kind: ExceptionKind,
}

impl IncomingCall {
    /// Appends the exception reply for a call that cannot be served; returns false (writing nothing) if
    /// the call is fine.
    pub fn encode_error_reply(&self, out: &mut Vec<u8>) -> bool {
        match &self.call {
            Ok(_) => false,
            Err(message) => {
                encode_exception(out, &self.name, self.seqid, self.error_kind, message);
                true
            }
        }
    }
}

/// The stream cannot be read any further (garbage, a non-strict header, an unknown type id, a length over
/// a limit). Reply a PROTOCOL_ERROR exception if `name` and `seqid` are known, then close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallDecodeError {
    pub seqid: Option<i32>,
    pub name: Option<String>,
    pub message: String,
}

impl CallDecodeError {
    /// Appends the PROTOCOL_ERROR reply if there is anyone to address it to.
    pub fn encode_reply(&self, out: &mut Vec<u8>) -> bool {
        match (&self.name, self.seqid) {
            (Some(name), Some(seqid)) => {
                encode_exception(out, name, seqid, ExceptionKind::ProtocolError, &self.message);
                true
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Server side.

/// Decodes the next call at the start of `buf`. `Ok(None)`: the message is not complete yet (read more and
/// call again with the longer buffer). `Ok(Some((call, n)))`: the first `n` bytes were one message.
///
/// Each call walks the buffer from its start; a connection that receives large messages in many reads
/// should keep a [`CallDecoder`], which resumes where it stopped.
pub fn decode_call(buf: &[u8], limits: &Limits) -> Result<Option<(IncomingCall, usize)>, CallDecodeError> {
    CallDecoder::new(*limits).decode(buf)
}

/// [`decode_call`] for one connection's stream, remembering how far it has walked the message being
/// received, so a 64 MiB batch arriving in 64 KiB reads is walked once, not a thousand times.
///
/// The message is walked twice in all: first its shape is checked by skipping (no allocation; this finds
/// incomplete and broken messages), then the arguments are decoded from the delimited bytes, where any
/// error is about the arguments only and the stream is still in step.
#[derive(Debug, Clone)]
pub struct CallDecoder {
    limits: Limits,
    scanner: MessageScanner,
    raw_batches: bool,
}

impl CallDecoder {
    pub fn new(limits: Limits) -> Self {
        CallDecoder {
            limits,
            scanner: MessageScanner::new(),
            raw_batches: false,
        }
    }

    /// A decoder that hands `send_batch` over as [`Call::SendBatchRaw`]: the records' bytes delimited but
    /// not decoded, for a server that stores them as sent and checks them while copying (the writer).
    pub fn with_raw_batches(limits: Limits) -> Self {
        CallDecoder {
            raw_batches: true,
            ..CallDecoder::new(limits)
        }
    }

    /// Like [`decode_call`]. Between calls the caller may only append to `buf`; once a message (or an
    /// error) is returned, the decoder starts afresh and the caller drains the `n` bytes consumed.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(IncomingCall, usize)>, CallDecodeError> {
        let mut r = Reader::new(buf, &self.limits);
        let header = match r.read_message_header() {
            Ok(h) => h,
            Err(DecodeError::Incomplete) => return Ok(None),
            Err(DecodeError::Invalid(message)) => {
                self.scanner = MessageScanner::new();
                return Err(CallDecodeError {
                    seqid: None,
                    name: None,
                    message,
                });
            }
        };
        let body_start = r.position();
        let end = match self.scanner.scan(buf, &self.limits) {
            Ok(Some(end)) => end,
            Ok(None) | Err(DecodeError::Incomplete) => return Ok(None),
            Err(DecodeError::Invalid(m)) => {
                self.scanner = MessageScanner::new();
                let m = with_context(m, header.name, buf, body_start, &self.limits);
                return Err(CallDecodeError {
                    seqid: Some(header.seqid),
                    name: Some(header.name.to_string()),
                    message: format!("invalid message {}: {m}", header.name),
                });
            }
        };
        self.scanner = MessageScanner::new();
        let body = &buf[body_start..end];
        let decoded = call_from_body(
            header.name,
            header.message_type,
            body,
            &self.limits,
            self.raw_batches,
        );
        let (call, error_kind) = match decoded {
            Ok(call) => (Ok(call), ExceptionKind::Unknown),
            Err((kind, message)) => (Err(message), kind),
        };
        let incoming = IncomingCall {
            name: header.name.to_string(),
            seqid: header.seqid,
            call,
            error_kind,
        };
        Ok(Some((incoming, end)))
    }
}

/// The most message bytes decoded again to say where a scanner error is (see [`with_context`]).
pub const CONTEXT_DECODE_BYTES_MAX: usize = 1 << 20;

/// The scanner knows what is wrong but not in which field; the arguments' decoder, run over the same
/// bytes, meets the same error and says where ("… in field 4 of LogRecord in element 2 of …"). Its message
/// is used only when it is that same error (an argument error earlier in the message could come first).
///
/// That decode builds every record before the error, so it runs only when the bytes received are at most
/// [`CONTEXT_DECODE_BYTES_MAX`]: past that, a hostile client's huge broken batch would cost a full decode
/// (and its allocations) for a better-worded error; the scanner's message, which says what is wrong, goes
/// back with the offset instead.
fn with_context(scan_message: String, name: &str, buf: &[u8], body_start: usize, limits: &Limits) -> String {
    let Some(method) = Method::from_name(name) else {
        return scan_message;
    };
    if buf.len().saturating_sub(body_start) > CONTEXT_DECODE_BYTES_MAX {
        return format!(
            "{scan_message} (within the first {} bytes of the message)",
            buf.len()
        );
    }
    match read_args(&mut Reader::resume(buf, 0, body_start, limits), method, false) {
        Err(DecodeError::Invalid(m)) if m.starts_with(&scan_message) => m,
        _ => scan_message,
    }
}

fn call_from_body(
    name: &str,
    mtype: u8,
    body: &[u8],
    limits: &Limits,
    raw_batches: bool,
) -> Result<Call, (ExceptionKind, String)> {
    // Thrift's own processors accept ONEWAY like CALL (they look only at the name); none of our methods
    // is oneway, so such a caller simply gets a reply it may ignore.
    if mtype == message_type::REPLY || mtype == message_type::EXCEPTION {
        return Err((
            ExceptionKind::InvalidMessageType,
            format!("message {name:?} has type {mtype} (a reply or exception): a server accepts only calls"),
        ));
    }
    let Some(method) = Method::from_name(name) else {
        let known: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
        return Err((
            ExceptionKind::UnknownMethod,
            format!(
                "unknown method {name:?}; the storage services have {}",
                known.join(", ")
            ),
        ));
    };
    let mut r = Reader::new_complete(body, limits);
    let args = read_args(&mut r, method, raw_batches).map_err(|e| {
        (
            ExceptionKind::ProtocolError,
            format!("invalid arguments to {method}: {e}"),
        )
    })?;
    args.into_call(method)
        .map_err(|m| (ExceptionKind::ProtocolError, m))
}

/// The union of every method's arguments, as found on the wire.
#[derive(Default)]
struct Args {
    batch: Option<LogBatch>,
    raw_batch: Option<RawBatch>,
    index_code: Option<String>,
    token: Option<LogPageToken>,
    priority: Option<i32>,
    score: Option<f64>,
}

fn read_args(r: &mut Reader<'_>, method: Method, raw_batches: bool) -> Result<Args, DecodeError> {
    let mut a = Args::default();
    let struct_name = format!("{method}_args");
    read_struct(r, &struct_name, |r, t, id| {
        use Method::*;
        match (method, id, t) {
            (SendBatch, 1, ttype::STRUCT) if raw_batches => {
                a.raw_batch = Some(crate::codec::read_batch_raw(r)?)
            }
            (SendBatch, 1, ttype::STRUCT) => a.batch = Some(crate::codec::read_batch(r)?),
            (ReadPage | GetIndexLogInfo | EnqueueForOptimization | DeleteIndex, 1, ttype::STRING) => {
                a.index_code = Some(r.read_string()?.to_owned())
            }
            (ReadPage, 2, ttype::STRUCT) => a.token = Some(read_page_token(r)?),
            (EnqueueForOptimization, 2, ttype::I32) => a.priority = Some(r.read_i32()?),
            (EnqueueForOptimization, 3, ttype::DOUBLE) => a.score = Some(r.read_double()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

impl Args {
    fn into_call(self, method: Method) -> Result<Call, String> {
        fn required<T>(v: Option<T>, method: Method, id: i16, name: &str) -> Result<T, String> {
            v.ok_or_else(|| format!("{method}: argument {id} ({name}) is missing"))
        }
        let code = |v: Option<String>| -> Result<String, String> {
            let code = required(v, method, 1, "index_code")?;
            validate_index_code(&code)
                .map(|()| code)
                .map_err(|e| format!("{method}: {e}"))
        };
        Ok(match method {
            Method::SendBatch => match self.raw_batch {
                Some(raw) => Call::SendBatchRaw(raw),
                None => Call::SendBatch(required(self.batch, method, 1, "batch")?),
            },
            Method::ReadPage => Call::ReadPage {
                index_code: code(self.index_code)?,
                token: required(self.token, method, 2, "token")?,
            },
            Method::GetIndexLogInfo => Call::GetIndexLogInfo {
                index_code: code(self.index_code)?,
            },
            Method::GetRawLogInfo => Call::GetRawLogInfo,
            Method::EnqueueForOptimization => Call::EnqueueForOptimization {
                index_code: code(self.index_code)?,
                priority: required(self.priority, method, 2, "priority")?,
                score: required(self.score, method, 3, "score")?,
            },
            Method::DeleteIndex => Call::DeleteIndex {
                index_code: code(self.index_code)?,
            },
            Method::GetOptimizationQueue => Call::GetOptimizationQueue,
            Method::ListExistingIndexes => Call::ListExistingIndexes,
        })
    }
}

/// A REPLY message whose result struct holds `success` (written by `success`, which writes the field
/// header and value) or nothing (void).
fn encode_reply_with(out: &mut Vec<u8>, name: &str, seqid: i32, success: impl FnOnce(&mut Writer<'_>)) {
    let mut w = Writer::new(out);
    w.message_header(name, message_type::REPLY, seqid);
    success(&mut w);
    w.stop();
}

/// The reply to a void method (`send_batch`, `enqueue_for_optimization`, `delete_index`).
pub fn encode_void_reply(out: &mut Vec<u8>, name: &str, seqid: i32) {
    encode_reply_with(out, name, seqid, |_| {});
}

/// An EXCEPTION message: `TApplicationException { 1: message, 2: type }`.
pub fn encode_exception(out: &mut Vec<u8>, name: &str, seqid: i32, kind: ExceptionKind, message: &str) {
    let mut w = Writer::new(out);
    w.message_header(name, message_type::EXCEPTION, seqid);
    w.field(ttype::STRING, 1).string(message);
    w.field(ttype::I32, 2).i32(kind.code());
    w.stop();
}

/// The `read_page` reply from records already encoded back to back (copied from a segment file, not
/// re-encoded). `record_count` must be the number of structs in `concatenated_records`.
pub fn encode_read_page_reply(
    out: &mut Vec<u8>,
    seqid: i32,
    record_count: usize,
    concatenated_records: &[u8],
    next: Option<&LogPageToken>,
) {
    encode_reply_with(out, Method::ReadPage.name(), seqid, |w| {
        w.field(ttype::STRUCT, 0);
        write_page_raw(w, record_count, concatenated_records, next);
    });
}

/// The `read_page` reply from a decoded page.
pub fn encode_page_reply(out: &mut Vec<u8>, seqid: i32, page: &LogPage) {
    encode_reply_with(out, Method::ReadPage.name(), seqid, |w| {
        w.field(ttype::STRUCT, 0);
        write_page(w, page);
    });
}

pub fn encode_index_log_info_reply(out: &mut Vec<u8>, seqid: i32, info: &IndexLogInfo) {
    encode_reply_with(out, Method::GetIndexLogInfo.name(), seqid, |w| {
        w.field(ttype::STRUCT, 0);
        write_index_log_info(w, info);
    });
}

pub fn encode_raw_log_info_reply(out: &mut Vec<u8>, seqid: i32, info: &RawLogInfo) {
    encode_reply_with(out, Method::GetRawLogInfo.name(), seqid, |w| {
        w.field(ttype::STRUCT, 0);
        write_raw_log_info(w, info);
    });
}

/// `map<string, QueueScore>`; the names must be distinct (a map on the wire keeps the last duplicate).
pub fn encode_optimization_queue_reply(out: &mut Vec<u8>, seqid: i32, queue: &[(String, QueueScore)]) {
    encode_reply_with(out, Method::GetOptimizationQueue.name(), seqid, |w| {
        w.field(ttype::MAP, 0)
            .map_header(ttype::STRING, ttype::STRUCT, queue.len());
        for (name, score) in queue {
            w.string(name);
            write_queue_score(w, score);
        }
    });
}

pub fn encode_list_existing_indexes_reply(out: &mut Vec<u8>, seqid: i32, indexes: &[String]) {
    encode_reply_with(out, Method::ListExistingIndexes.name(), seqid, |w| {
        w.field(ttype::LIST, 0).list_header(ttype::STRING, indexes.len());
        for name in indexes {
            w.string(name);
        }
    });
}

/// A decoded reply value of any method (tests and tools; clients use the typed decoders).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The reply of a void method.
    Void,
    Page(LogPage),
    IndexLogInfo(IndexLogInfo),
    RawLogInfo(RawLogInfo),
    OptimizationQueue(BTreeMap<String, QueueScore>),
    Indexes(Vec<String>),
}

/// Encodes the reply of `method`. Panics if `reply` is not the kind of value `method` returns (a bug in
/// the caller, not peer data).
pub fn encode_reply(out: &mut Vec<u8>, method: Method, seqid: i32, reply: &Reply) {
    match (method, reply) {
        (m, Reply::Void) if m.is_void() => encode_void_reply(out, m.name(), seqid),
        (Method::ReadPage, Reply::Page(p)) => encode_page_reply(out, seqid, p),
        (Method::GetIndexLogInfo, Reply::IndexLogInfo(i)) => encode_index_log_info_reply(out, seqid, i),
        (Method::GetRawLogInfo, Reply::RawLogInfo(i)) => encode_raw_log_info_reply(out, seqid, i),
        (Method::GetOptimizationQueue, Reply::OptimizationQueue(q)) => {
            let q: Vec<(String, QueueScore)> = q.iter().map(|(k, v)| (k.clone(), *v)).collect();
            encode_optimization_queue_reply(out, seqid, &q)
        }
        (Method::ListExistingIndexes, Reply::Indexes(l)) => encode_list_existing_indexes_reply(out, seqid, l),
        (m, r) => panic!("{m} does not return {r:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Client side.

/// Appends a CALL message for `call`.
pub fn encode_call(out: &mut Vec<u8>, seqid: i32, call: &Call) {
    let mut w = Writer::new(out);
    w.message_header(call.method().name(), message_type::CALL, seqid);
    match call {
        Call::SendBatch(batch) => {
            w.field(ttype::STRUCT, 1);
            write_batch(&mut w, batch);
        }
        Call::SendBatchRaw(batch) => {
            w.field(ttype::STRUCT, 1)
                .field(ttype::LIST, 1)
                .list_header(ttype::STRUCT, batch.count)
                .bytes(&batch.records)
                .stop();
        }
        Call::ReadPage { index_code, token } => {
            w.field(ttype::STRING, 1).string(index_code);
            w.field(ttype::STRUCT, 2);
            write_page_token(&mut w, token);
        }
        Call::GetIndexLogInfo { index_code } | Call::DeleteIndex { index_code } => {
            w.field(ttype::STRING, 1).string(index_code);
        }
        Call::EnqueueForOptimization {
            index_code,
            priority,
            score,
        } => {
            w.field(ttype::STRING, 1).string(index_code);
            w.field(ttype::I32, 2).i32(*priority);
            w.field(ttype::DOUBLE, 3).double(*score);
        }
        Call::GetRawLogInfo | Call::GetOptimizationQueue | Call::ListExistingIndexes => {}
    }
    w.stop();
}

/// A `send_batch` CALL message from a borrowed batch (the same bytes as [`encode_call`] with
/// `Call::SendBatch`, without moving the batch into a `Call`).
pub fn encode_send_batch_call(out: &mut Vec<u8>, seqid: i32, batch: &LogBatch) {
    let mut w = Writer::new(out);
    w.message_header(Method::SendBatch.name(), message_type::CALL, seqid);
    w.field(ttype::STRUCT, 1);
    write_batch(&mut w, batch);
    w.stop();
}

/// One reply as received: whom it answers (the client checks name and seqid) and the value or the
/// server's exception.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingReply<T> {
    pub name: String,
    pub seqid: i32,
    pub result: Result<T, ApplicationException>,
}

/// A `read_page` result with its records left encoded: `records` holds `record_count` encoded `LogRecord`
/// structs back to back (walk them with [`crate::record_len`] / decode with [`crate::decode_record`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawPage {
    pub record_count: usize,
    pub records: Vec<u8>,
    pub next: Option<LogPageToken>,
}

fn read_application_exception(r: &mut Reader<'_>) -> Result<ApplicationException, DecodeError> {
    let mut e = ApplicationException {
        kind: ExceptionKind::Unknown,
        message: String::new(),
    };
    read_struct(r, "TApplicationException", |r, t, id| {
        match (id, t) {
            (1, ttype::STRING) => e.message = r.read_string()?.to_owned(),
            (2, ttype::I32) => e.kind = ExceptionKind::from_code(r.read_i32()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(e)
}

/// Decodes the reply to `method` at the start of `buf`: `Incomplete` until the whole message is there.
/// `success_type` and `read` decode field 0; `absent` is the value when it is missing (void methods) —
/// `None` turns a missing result into a MISSING_RESULT exception, as generated clients do.
fn decode_reply_with<'a, T>(
    buf: &'a [u8],
    limits: &Limits,
    method: Method,
    success_type: u8,
    read: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
    absent: Option<T>,
) -> Result<(IncomingReply<T>, usize), DecodeError> {
    decode_reply_in(buf, limits, false, method, success_type, read, absent)
}

/// [`decode_reply_with`]; `whole`: `buf` is exactly one message, as a [`MessageScanner`] delimited it, so
/// its end need not be found by walking it once more.
fn decode_reply_in<'a, T>(
    buf: &'a [u8],
    limits: &Limits,
    whole: bool,
    method: Method,
    success_type: u8,
    mut read: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
    absent: Option<T>,
) -> Result<(IncomingReply<T>, usize), DecodeError> {
    let mut r = Reader::new(buf, limits);
    let header = r.read_message_header()?;
    let body_start = r.position();
    if whole {
        r = Reader::resume(buf, 0, buf.len(), limits);
    } else {
        r.skip(ttype::STRUCT)
            .map_err(|e| e.context(|| format!("in the reply to {method}")))?;
    }
    let consumed = r.position();
    let mut body = Reader::new_complete(r.since(body_start), limits);
    let result = match header.message_type {
        message_type::EXCEPTION => Err(read_application_exception(&mut body)?),
        message_type::REPLY => {
            let mut success = None;
            read_struct(&mut body, &format!("{method}_result"), |r, t, id| {
                if (id, t) == (0, success_type) {
                    success = Some(read(r)?);
                    return Ok(true);
                }
                Ok(false)
            })?;
            match success.or(absent) {
                Some(v) => Ok(v),
                None => Err(ApplicationException {
                    kind: ExceptionKind::MissingResult,
                    message: format!("{method} failed: the reply carries no result"),
                }),
            }
        }
        t => {
            return Err(DecodeError::Invalid(format!(
                "expected a reply to {method}, got a message of type {t} (a call)"
            )))
        }
    };
    let reply = IncomingReply {
        name: header.name.to_string(),
        seqid: header.seqid,
        result,
    };
    Ok((reply, consumed))
}

fn decode_void(
    buf: &[u8],
    limits: &Limits,
    method: Method,
) -> Result<(IncomingReply<()>, usize), DecodeError> {
    decode_reply_with(buf, limits, method, ttype::STOP, |_| Ok(()), Some(()))
}

pub fn decode_send_batch_reply(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<()>, usize), DecodeError> {
    decode_void(buf, limits, Method::SendBatch)
}

pub fn decode_enqueue_for_optimization_reply(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<()>, usize), DecodeError> {
    decode_void(buf, limits, Method::EnqueueForOptimization)
}

pub fn decode_delete_index_reply(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<()>, usize), DecodeError> {
    decode_void(buf, limits, Method::DeleteIndex)
}

pub fn decode_read_page_reply(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<LogPage>, usize), DecodeError> {
    decode_reply_with(buf, limits, Method::ReadPage, ttype::STRUCT, read_page, None)
}

/// The `read_page` reply with records left encoded (walked with skips, not decoded).
pub fn decode_read_page_reply_raw(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<RawPage>, usize), DecodeError> {
    decode_reply_with(buf, limits, Method::ReadPage, ttype::STRUCT, read_raw_page, None)
}

/// [`decode_read_page_reply_raw`] of exactly one whole message (delimited by a [`MessageScanner`], which
/// checked its shape): one walk less.
pub fn decode_whole_read_page_reply_raw(
    message: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<RawPage>, usize), DecodeError> {
    decode_reply_in(
        message,
        limits,
        true,
        Method::ReadPage,
        ttype::STRUCT,
        read_raw_page,
        None,
    )
}

/// What the first bytes of a `read_page` reply say about the next page, for a client that asks for it
/// before the rest of this one has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePeek {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// The page's first field is its next-page token (logtank's servers write it first).
    Next(LogPageToken),
    /// Anything else: an exception, the last page, or a server that writes the records first.
    NoEarlyToken,
}

/// Looks at the start of a `read_page` reply for the next page's token ([`PagePeek`]). Never walks the
/// records; a broken prefix is `NoEarlyToken` (the full decode reports it).
pub fn peek_read_page_reply(buf: &[u8], limits: &Limits) -> PagePeek {
    let mut r = Reader::new(buf, limits);
    let peek = (|| {
        let header = r.read_message_header()?;
        if header.message_type != message_type::REPLY || header.name != Method::ReadPage.name() {
            return Ok(PagePeek::NoEarlyToken);
        }
        if r.read_field_header()? != Some((ttype::STRUCT, 0)) {
            return Ok(PagePeek::NoEarlyToken);
        }
        if r.read_field_header()? != Some((ttype::STRUCT, 2)) {
            return Ok(PagePeek::NoEarlyToken);
        }
        Ok(PagePeek::Next(read_page_token(&mut r)?))
    })();
    match peek {
        Ok(p) => p,
        Err(DecodeError::Incomplete) => PagePeek::Incomplete,
        Err(DecodeError::Invalid(_)) => PagePeek::NoEarlyToken,
    }
}

fn read_raw_page(r: &mut Reader<'_>) -> Result<RawPage, DecodeError> {
    let mut page = RawPage::default();
    read_struct(r, "LogPage", |r, t, id| {
        match (id, t) {
            (1, ttype::STRUCT) => read_struct(r, "LogBatch", |r, t, id| {
                if (id, t) != (1, ttype::LIST) {
                    return Ok(false);
                }
                let (elem, n) = r.read_list_header()?;
                if n > 0 && elem != ttype::STRUCT {
                    return Err(DecodeError::Invalid(format!(
                        "list<LogRecord> declares elements of type {}",
                        ttype::name(elem)
                    )));
                }
                let start = r.position();
                for i in 0..n {
                    r.skip(ttype::STRUCT)
                        .map_err(|e| e.context(|| format!("in element {i} of list<LogRecord>")))?;
                }
                page.records = r.since(start).to_vec();
                page.record_count = n;
                Ok(true)
            })?,
            (2, ttype::STRUCT) => page.next = Some(read_page_token(r)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(page)
}

pub fn decode_get_index_log_info_reply(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<IndexLogInfo>, usize), DecodeError> {
    decode_reply_with(
        buf,
        limits,
        Method::GetIndexLogInfo,
        ttype::STRUCT,
        read_index_log_info,
        None,
    )
}

pub fn decode_get_raw_log_info_reply(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<RawLogInfo>, usize), DecodeError> {
    decode_reply_with(
        buf,
        limits,
        Method::GetRawLogInfo,
        ttype::STRUCT,
        read_raw_log_info,
        None,
    )
}

pub fn decode_get_optimization_queue_reply(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<BTreeMap<String, QueueScore>>, usize), DecodeError> {
    decode_reply_with(
        buf,
        limits,
        Method::GetOptimizationQueue,
        ttype::MAP,
        read_queue_map,
        None,
    )
}

fn read_queue_map(r: &mut Reader<'_>) -> Result<BTreeMap<String, QueueScore>, DecodeError> {
    let (k, v, n) = r.read_map_header()?;
    if n > 0 && (k, v) != (ttype::STRING, ttype::STRUCT) {
        return Err(DecodeError::Invalid(format!(
            "map<string,QueueScore> declares element types ({}, {})",
            ttype::name(k),
            ttype::name(v)
        )));
    }
    let mut map = BTreeMap::new();
    for _ in 0..n {
        let name = r.read_string()?.to_owned();
        let score = read_queue_score(r)?;
        map.insert(name, score);
    }
    Ok(map)
}

pub fn decode_list_existing_indexes_reply(
    buf: &[u8],
    limits: &Limits,
) -> Result<(IncomingReply<Vec<String>>, usize), DecodeError> {
    decode_reply_with(
        buf,
        limits,
        Method::ListExistingIndexes,
        ttype::LIST,
        |r| {
            read_list(r, ttype::STRING, "list<string>", |r| {
                Ok(r.read_string()?.to_owned())
            })
        },
        None,
    )
}

/// Decodes the reply to any method into a [`Reply`].
pub fn decode_reply(
    buf: &[u8],
    limits: &Limits,
    method: Method,
) -> Result<(IncomingReply<Reply>, usize), DecodeError> {
    fn map<T>(
        x: Result<(IncomingReply<T>, usize), DecodeError>,
        f: impl FnOnce(T) -> Reply,
    ) -> Result<(IncomingReply<Reply>, usize), DecodeError> {
        let (r, n) = x?;
        Ok((
            IncomingReply {
                name: r.name,
                seqid: r.seqid,
                result: r.result.map(f),
            },
            n,
        ))
    }
    match method {
        m if m.is_void() => map(decode_void(buf, limits, m), |()| Reply::Void),
        Method::ReadPage => map(decode_read_page_reply(buf, limits), Reply::Page),
        Method::GetIndexLogInfo => map(decode_get_index_log_info_reply(buf, limits), Reply::IndexLogInfo),
        Method::GetRawLogInfo => map(decode_get_raw_log_info_reply(buf, limits), Reply::RawLogInfo),
        Method::GetOptimizationQueue => map(
            decode_get_optimization_queue_reply(buf, limits),
            Reply::OptimizationQueue,
        ),
        _ => map(decode_list_existing_indexes_reply(buf, limits), Reply::Indexes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    fn one_call(call: &Call) -> IncomingCall {
        let mut out = Vec::new();
        encode_call(&mut out, 42, call);
        let (incoming, n) = decode_call(&out, &lim()).unwrap().unwrap();
        assert_eq!(n, out.len());
        incoming
    }

    /// Each call survives encode → decode.
    #[test]
    fn calls_round_trip() {
        let calls = [
            Call::SendBatch(LogBatch {
                records: vec![LogRecord {
                    index_code: Some("i".into()),
                    docid: Some("d".into()),
                    ..LogRecord::default()
                }],
            }),
            Call::ReadPage {
                index_code: "idx".into(),
                token: LogPageToken {
                    page_type: Some(PageType::Optimized),
                    ..LogPageToken::default()
                },
            },
            Call::GetIndexLogInfo {
                index_code: "x".into(),
            },
            Call::GetRawLogInfo,
            Call::EnqueueForOptimization {
                index_code: "x".into(),
                priority: -3,
                score: 0.5,
            },
            Call::DeleteIndex {
                index_code: "x".into(),
            },
            Call::GetOptimizationQueue,
            Call::ListExistingIndexes,
        ];
        for call in calls {
            let incoming = one_call(&call);
            assert_eq!(incoming.seqid, 42);
            assert_eq!(incoming.name, call.method().name());
            assert_eq!(incoming.call, Ok(call));
        }
    }

    /// An unknown method is answered with UNKNOWN_METHOD and the stream stays in step.
    #[test]
    fn unknown_method_keeps_the_stream() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.message_header("frobnicate", message_type::CALL, 1);
        w.field(ttype::STRING, 1).string("x").stop();
        let first = out.len();
        encode_call(&mut out, 2, &Call::ListExistingIndexes);
        let (incoming, n) = decode_call(&out, &lim()).unwrap().unwrap();
        assert_eq!(n, first);
        assert_eq!(incoming.error_kind, ExceptionKind::UnknownMethod);
        assert!(incoming
            .call
            .unwrap_err()
            .contains("unknown method \"frobnicate\""));
        let (next, _) = decode_call(&out[n..], &lim()).unwrap().unwrap();
        assert_eq!(next.call, Ok(Call::ListExistingIndexes));
    }

    /// Missing arguments and bad index codes are call errors with clear messages, not stream errors.
    #[test]
    fn argument_errors() {
        let mut out = Vec::new();
        Writer::new(&mut out)
            .message_header("send_batch", message_type::CALL, 5)
            .stop();
        let (incoming, _) = decode_call(&out, &lim()).unwrap().unwrap();
        assert_eq!(
            incoming.call,
            Err("send_batch: argument 1 (batch) is missing".to_string())
        );
        assert_eq!(incoming.error_kind, ExceptionKind::ProtocolError);

        let incoming = one_call(&Call::DeleteIndex {
            index_code: "../etc".into(),
        });
        assert!(incoming
            .call
            .unwrap_err()
            .starts_with("delete_index: invalid index_code \"../etc\""));
    }

    /// A length over the limit inside a batch is a stream error whose message says where it is.
    #[test]
    fn stream_error_names_the_field() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.message_header("send_batch", message_type::CALL, 8);
        w.field(ttype::STRUCT, 1)
            .field(ttype::LIST, 1)
            .list_header(ttype::STRUCT, 2);
        w.field(ttype::STRING, 4).string("ok").stop();
        w.field(ttype::STRING, 4).i32(i32::MAX);
        let err = decode_call(&out, &lim()).unwrap_err();
        assert_eq!(err.seqid, Some(8));
        assert_eq!(
            err.message,
            "invalid message send_batch: string length 2147483647 exceeds the limit of 16777216 bytes \
             in field 4 of LogRecord in element 1 of list<LogRecord> in field 1 of LogBatch \
             in field 1 of send_batch_args"
        );
    }

    /// Proves a broken message larger than CONTEXT_DECODE_BYTES_MAX is not decoded a second time to word
    /// its error: the scanner's message comes back without the field path.
    #[test]
    fn a_huge_broken_batch_is_not_decoded_again_for_its_error() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.message_header("send_batch", message_type::CALL, 9);
        w.field(ttype::STRUCT, 1)
            .field(ttype::LIST, 1)
            .list_header(ttype::STRUCT, 3000);
        let docid = "d".repeat(1000);
        for _ in 0..2000 {
            w.field(ttype::STRING, 4).string(&docid).stop();
        }
        w.field(ttype::STRING, 4).i32(i32::MAX);
        assert!(out.len() > CONTEXT_DECODE_BYTES_MAX);
        let err = decode_call(&out, &lim()).unwrap_err();
        assert_eq!(err.seqid, Some(9));
        assert!(
            err.message
                .starts_with("invalid message send_batch: string length 2147483647 exceeds the limit"),
            "{err}"
        );
        assert!(!err.message.contains("in element"), "{err}");
        assert!(err.message.contains("within the first"), "{err}");
    }

    /// Garbage and non-strict headers make the stream unusable.
    #[test]
    fn garbage_is_a_stream_error() {
        let err = decode_call(b"GET / HTTP/1.1\r\n", &lim()).unwrap_err();
        assert!(
            err.message.contains("not a strict binary-protocol header"),
            "{err}"
        );
        assert_eq!(decode_call(&[0x80, 1], &lim()), Ok(None));
    }

    /// Replies survive encode → decode, exceptions come back as ApplicationException.
    #[test]
    fn replies_round_trip() {
        let mut out = Vec::new();
        encode_list_existing_indexes_reply(&mut out, 9, &["a".into(), "b".into()]);
        let (reply, n) = decode_list_existing_indexes_reply(&out, &lim()).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(reply.seqid, 9);
        assert_eq!(reply.result, Ok(vec!["a".to_string(), "b".to_string()]));

        out.clear();
        encode_exception(
            &mut out,
            "read_page",
            3,
            ExceptionKind::InternalError,
            "not safe to read",
        );
        let (reply, _) = decode_read_page_reply(&out, &lim()).unwrap();
        assert_eq!(
            reply.result,
            Err(ApplicationException {
                kind: ExceptionKind::InternalError,
                message: "not safe to read".into()
            })
        );

        out.clear();
        encode_void_reply(&mut out, "read_page", 3);
        let (reply, _) = decode_read_page_reply(&out, &lim()).unwrap();
        assert_eq!(reply.result.unwrap_err().kind, ExceptionKind::MissingResult);
    }

    /// A page reply built from raw record bytes decodes like one built from records, both ways.
    #[test]
    fn raw_page_reply() {
        let records = vec![
            LogRecord {
                docid: Some("a".into()),
                ..LogRecord::default()
            },
            LogRecord {
                docid: Some("b".into()),
                deleted: true,
                ..LogRecord::default()
            },
        ];
        let mut raw = Vec::new();
        for r in &records {
            crate::encode_record(&mut raw, r);
        }
        let next = LogPageToken {
            page_type: Some(PageType::Index),
            timestamp: Some(1),
            ..LogPageToken::default()
        };
        let mut a = Vec::new();
        encode_read_page_reply(&mut a, 1, 2, &raw, Some(&next));
        let page = LogPage {
            batch: LogBatch { records },
            next_page_token: Some(next),
        };
        let mut b = Vec::new();
        encode_page_reply(&mut b, 1, &page);
        // Same length and page; the raw reply has the token first (see write_page_raw).
        assert_eq!(a.len(), b.len());
        assert_eq!(
            decode_read_page_reply(&b, &lim()).unwrap().0.result,
            Ok(page.clone())
        );
        assert_eq!(decode_read_page_reply(&a, &lim()).unwrap().0.result, Ok(page));
        assert_eq!(peek_read_page_reply(&a, &lim()), PagePeek::Next(next));
        let raw_page = decode_read_page_reply_raw(&a, &lim()).unwrap().0.result.unwrap();
        assert_eq!(
            raw_page,
            RawPage {
                record_count: 2,
                records: raw,
                next: Some(next)
            }
        );
    }
}
