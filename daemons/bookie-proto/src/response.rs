//! Responses, bookie → client. After the length: header (the request's opcode, flags 0) · return code
//! (int32) · ledger id (8) · entry id (8), 24 bytes, then a body:
//!
//! | response | body |
//! |---|---|
//! | add, write LAC | none |
//! | read, `EOK` | the entry as stored (header, digest, payload) |
//! | read LAC, `EOK` | explicit LAC (8, `-1`: none) · the last entry the bookie holds (may be absent) |
//!
//! Responses of one connection may come back in any order (a read need not wait for the fsync of an add
//! sent before it); a client matches them to requests by opcode, ledger and entry, as BookKeeper's v2
//! client does.

use crate::frame::put_frame;
use crate::header::{OpCode, PacketHeader, PACKET_HEADER_BYTES, PROTOCOL_VERSION};
use crate::status::Status;
use crate::{be_i64, be_u32, be_u64, DecodeError};

/// Header, return code, ledger id, entry id.
pub const RESPONSE_HEADER_BYTES: usize = PACKET_HEADER_BYTES + 4 + 8 + 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub op: OpCode,
    pub status: Status,
    pub ledger_id: u64,
    pub entry_id: i64,
    pub body: Vec<u8>,
}

/// The body of a successful read-LAC response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLacBody<'a> {
    /// The highest LAC a writer recorded with write-LAC, `-1` if none.
    pub explicit_lac: i64,
    /// The last entry the bookie holds, whose header carries the LAC piggybacked on it.
    pub last_entry: Option<&'a [u8]>,
}

impl ReadLacBody<'_> {
    pub fn encode(explicit_lac: i64, last_entry: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + last_entry.map_or(0, <[u8]>::len));
        out.extend_from_slice(&explicit_lac.to_be_bytes());
        if let Some(entry) = last_entry {
            out.extend_from_slice(entry);
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<ReadLacBody<'_>, DecodeError> {
        if body.len() < 8 {
            return Err(DecodeError::Truncated {
                what: "read LAC body",
                len: body.len(),
            });
        }
        Ok(ReadLacBody {
            explicit_lac: be_i64(body, 0),
            last_entry: (body.len() > 8).then(|| &body[8..]),
        })
    }
}

/// Appends `resp` as one frame.
pub fn encode_response(out: &mut Vec<u8>, resp: &Response) {
    put_frame(out, |out| {
        out.extend_from_slice(&PacketHeader::new(resp.op, 0).encode());
        out.extend_from_slice(&resp.status.0.to_be_bytes());
        out.extend_from_slice(&resp.ledger_id.to_be_bytes());
        out.extend_from_slice(&resp.entry_id.to_be_bytes());
        out.extend_from_slice(&resp.body);
    });
}

/// Decodes one frame's bytes (without the length) as a response.
pub fn decode_response(body: &[u8]) -> Result<Response, DecodeError> {
    if body.len() < RESPONSE_HEADER_BYTES {
        return Err(DecodeError::Truncated {
            what: "response header",
            len: body.len(),
        });
    }
    let header = PacketHeader::decode(body);
    if header.version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(header.version));
    }
    let status = Status(be_u32(body, 4) as i32);
    let rest = &body[RESPONSE_HEADER_BYTES..];
    match header.op {
        OpCode::AddEntry | OpCode::WriteLac if !rest.is_empty() => {
            return Err(DecodeError::Trailing(rest.len()))
        }
        // The EBADREQ answer to a request of an opcode this protocol does not serve echoes that opcode.
        OpCode::ReadLac if status.is_ok() => {
            ReadLacBody::decode(rest)?;
        }
        _ => {}
    }
    Ok(Response {
        op: header.op,
        status,
        ledger_id: be_u64(body, 8),
        entry_id: be_i64(body, 16),
        body: rest.to_vec(),
    })
}
