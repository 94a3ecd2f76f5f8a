//! Requests, client → bookie. Each is one frame (see [`crate::frame`]); after the length:
//!
//! | request | layout |
//! |---|---|
//! | add | header · master key (20) · entry (header 32, digest 4, payload) |
//! | read | header · ledger id (8) · entry id (8) · master key (20) only with `FLAG_DO_FENCING` |
//! | read LAC | header · ledger id (8) |
//! | write LAC | header · master key (20) · ledger id (8) · LAC (8) |
//!
//! An add names its ledger and entry only inside the entry (as in BookKeeper), so the two cannot disagree.

use crate::entry::{peek_ids, MasterKey, ENTRY_OVERHEAD_BYTES, MASTER_KEY_BYTES};
use crate::frame::put_frame;
use crate::header::{
    OpCode, PacketHeader, FLAG_DO_FENCING, FLAG_RECOVERY_ADD, PACKET_HEADER_BYTES, PROTOCOL_VERSION,
};
use crate::response::Response;
use crate::status::Status;
use crate::{be_i64, be_u64};

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Add(AddRequest),
    Read(ReadRequest),
    ReadLac(ReadLacRequest),
    WriteLac(WriteLacRequest),
}

/// Store an entry. `entry` is what the bookie stores and serves back, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    pub flags: u16,
    pub master_key: MasterKey,
    pub ledger_id: u64,
    pub entry_id: i64,
    pub entry: Vec<u8>,
}

impl AddRequest {
    /// Builds an add of already-encoded entry bytes (see [`crate::encode_entry`]). `None` if the bytes are
    /// too short to be an entry.
    pub fn new(flags: u16, master_key: MasterKey, entry: Vec<u8>) -> Option<AddRequest> {
        if entry.len() < ENTRY_OVERHEAD_BYTES {
            return None;
        }
        let (ledger_id, entry_id) = peek_ids(&entry)?;
        Some(AddRequest {
            flags,
            master_key,
            ledger_id,
            entry_id,
            entry,
        })
    }

    /// An add of ledger recovery, accepted on a fenced ledger.
    pub fn is_recovery(&self) -> bool {
        self.flags & FLAG_RECOVERY_ADD != 0
    }
}

/// Read one entry; `entry_id` [`crate::LAST_ENTRY`] reads the last entry the bookie holds. With a master
/// key (the fencing read of ledger recovery) the bookie fences the ledger durably before answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub flags: u16,
    pub ledger_id: u64,
    pub entry_id: i64,
    pub master_key: Option<MasterKey>,
}

impl ReadRequest {
    pub fn plain(ledger_id: u64, entry_id: i64) -> ReadRequest {
        ReadRequest {
            flags: 0,
            ledger_id,
            entry_id,
            master_key: None,
        }
    }

    pub fn fencing(ledger_id: u64, entry_id: i64, master_key: MasterKey) -> ReadRequest {
        ReadRequest {
            flags: FLAG_DO_FENCING,
            ledger_id,
            entry_id,
            master_key: Some(master_key),
        }
    }
}

/// The ledger's explicit LAC and its last entry (a tailing reader's "how far may I read").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLacRequest {
    pub ledger_id: u64,
}

/// Records an explicit LAC: a writer with nothing new to add tells readers how far they may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLacRequest {
    pub master_key: MasterKey,
    pub ledger_id: u64,
    pub lac: i64,
}

impl Request {
    pub fn op(&self) -> OpCode {
        match self {
            Request::Add(_) => OpCode::AddEntry,
            Request::Read(_) => OpCode::ReadEntry,
            Request::ReadLac(_) => OpCode::ReadLac,
            Request::WriteLac(_) => OpCode::WriteLac,
        }
    }

    /// The ledger and entry the response will name.
    pub fn ids(&self) -> (u64, i64) {
        match self {
            Request::Add(a) => (a.ledger_id, a.entry_id),
            Request::Read(r) => (r.ledger_id, r.entry_id),
            Request::ReadLac(r) => (r.ledger_id, crate::LAST_ENTRY),
            Request::WriteLac(w) => (w.ledger_id, w.lac),
        }
    }

    /// The response of `status` and `body` to this request.
    pub fn respond(&self, status: Status, body: Vec<u8>) -> Response {
        let (ledger_id, entry_id) = self.ids();
        Response {
            op: self.op(),
            status,
            ledger_id,
            entry_id,
            body,
        }
    }
}

/// Appends `req` as one frame.
pub fn encode_request(out: &mut Vec<u8>, req: &Request) {
    put_frame(out, |out| match req {
        Request::Add(a) => {
            out.extend_from_slice(&PacketHeader::new(OpCode::AddEntry, a.flags).encode());
            out.extend_from_slice(&a.master_key);
            out.extend_from_slice(&a.entry);
        }
        Request::Read(r) => {
            let mut flags = r.flags & !FLAG_DO_FENCING;
            if r.master_key.is_some() {
                flags |= FLAG_DO_FENCING;
            }
            out.extend_from_slice(&PacketHeader::new(OpCode::ReadEntry, flags).encode());
            out.extend_from_slice(&r.ledger_id.to_be_bytes());
            out.extend_from_slice(&r.entry_id.to_be_bytes());
            if let Some(key) = &r.master_key {
                out.extend_from_slice(key);
            }
        }
        Request::ReadLac(r) => {
            out.extend_from_slice(&PacketHeader::new(OpCode::ReadLac, 0).encode());
            out.extend_from_slice(&r.ledger_id.to_be_bytes());
        }
        Request::WriteLac(w) => {
            out.extend_from_slice(&PacketHeader::new(OpCode::WriteLac, 0).encode());
            out.extend_from_slice(&w.master_key);
            out.extend_from_slice(&w.ledger_id.to_be_bytes());
            out.extend_from_slice(&w.lac.to_be_bytes());
        }
    });
}

/// A frame that is not a request this bookie serves. The frame was whole, so the stream is still in step
/// and the connection can go on, except when `close` says the peer does not speak this protocol at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub op: OpCode,
    /// As far as they could be read (0 otherwise), for the `EBADREQ` response.
    pub ledger_id: u64,
    pub entry_id: i64,
    pub reason: String,
    pub close: bool,
}

impl BadRequest {
    /// The `EBADREQ` response that tells the client its request was refused.
    pub fn response(&self) -> Response {
        Response {
            op: self.op,
            status: Status::EBADREQ,
            ledger_id: self.ledger_id,
            entry_id: self.entry_id,
            body: Vec::new(),
        }
    }
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad {} request: {}", self.op.name(), self.reason)
    }
}

/// Decodes one frame's bytes (without the length) as a request.
pub fn decode_request(body: &[u8]) -> Result<Request, BadRequest> {
    let bad = |op, ledger_id, entry_id, reason: String, close| BadRequest {
        op,
        ledger_id,
        entry_id,
        reason,
        close,
    };
    if body.len() < PACKET_HEADER_BYTES {
        let reason = format!("{} bytes cannot hold a packet header", body.len());
        return Err(bad(OpCode::Other(0), 0, 0, reason, true));
    }
    let header = PacketHeader::decode(body);
    if header.version != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {} (this bookie speaks version {PROTOCOL_VERSION})",
            header.version
        );
        return Err(bad(header.op, 0, 0, reason, true));
    }
    let rest = &body[PACKET_HEADER_BYTES..];
    let ids = |b: &[u8]| {
        if b.len() >= 16 {
            (be_u64(b, 0), be_i64(b, 8))
        } else {
            (0, 0)
        }
    };
    let size_error = |what: &str, want: String| format!("{what} of {} bytes, expected {want}", rest.len());
    match header.op {
        OpCode::AddEntry => {
            let entry_at = MASTER_KEY_BYTES;
            let (l, e) = ids(rest.get(entry_at..).unwrap_or_default());
            if rest.len() < entry_at + ENTRY_OVERHEAD_BYTES {
                let want = format!("at least {}", entry_at + ENTRY_OVERHEAD_BYTES);
                return Err(bad(header.op, l, e, size_error("add body", want), false));
            }
            let mut master_key = [0u8; MASTER_KEY_BYTES];
            master_key.copy_from_slice(&rest[..MASTER_KEY_BYTES]);
            Ok(Request::Add(AddRequest {
                flags: header.flags,
                master_key,
                ledger_id: l,
                entry_id: e,
                entry: rest[entry_at..].to_vec(),
            }))
        }
        OpCode::ReadEntry => {
            let (l, e) = ids(rest);
            let fencing = header.has(FLAG_DO_FENCING);
            let want = if fencing { 16 + MASTER_KEY_BYTES } else { 16 };
            if rest.len() != want {
                return Err(bad(
                    header.op,
                    l,
                    e,
                    size_error("read body", want.to_string()),
                    false,
                ));
            }
            let master_key = fencing.then(|| {
                let mut key = [0u8; MASTER_KEY_BYTES];
                key.copy_from_slice(&rest[16..]);
                key
            });
            Ok(Request::Read(ReadRequest {
                flags: header.flags,
                ledger_id: l,
                entry_id: e,
                master_key,
            }))
        }
        OpCode::ReadLac => {
            if rest.len() != 8 {
                let l = if rest.len() >= 8 { be_u64(rest, 0) } else { 0 };
                let reason = size_error("read LAC body", "8".into());
                return Err(bad(header.op, l, crate::LAST_ENTRY, reason, false));
            }
            Ok(Request::ReadLac(ReadLacRequest {
                ledger_id: be_u64(rest, 0),
            }))
        }
        OpCode::WriteLac => {
            let want = MASTER_KEY_BYTES + 16;
            let (l, lac) = ids(rest.get(MASTER_KEY_BYTES..).unwrap_or_default());
            if rest.len() != want {
                return Err(bad(
                    header.op,
                    l,
                    lac,
                    size_error("write LAC body", want.to_string()),
                    false,
                ));
            }
            let mut master_key = [0u8; MASTER_KEY_BYTES];
            master_key.copy_from_slice(&rest[..MASTER_KEY_BYTES]);
            Ok(Request::WriteLac(WriteLacRequest {
                master_key,
                ledger_id: l,
                lac,
            }))
        }
        OpCode::Other(code) => {
            let (l, e) = ids(rest);
            Err(bad(header.op, l, e, format!("unknown opcode {code}"), false))
        }
    }
}
