//! The bookie protocol as pure codecs: bytes in, typed values or an error out. No IO, no tokio, no sockets
//! (STYLE #1), so every decoder is fuzzed and property-tested on its own. The byte-by-byte description, and
//! where it differs from BookKeeper's v2 protocol and why, is `docs/bookie-protocol.md`.
//!
//! The layout is BookKeeper's v2 binary protocol: every message is a big-endian `int32` length and that many
//! bytes; a message starts with a packet header (`version << 24 | opcode << 16 | flags`). An entry as the
//! client formats it (and the bookie stores it, byte for byte) is a 32-byte header (ledger id, entry id,
//! last add confirmed, ledger length), a 4-byte CRC32C digest over that header and the payload, then the
//! payload.
//!
//! - [`frame`]: length framing, bounded by the reader's limit.
//! - [`header`]: the packet header, opcodes and flags. [`status`]: BookKeeper's v2 return codes.
//! - [`entry`]: the entry format, its digest, and the master key derived from a ledger's password.
//! - [`request`] and [`response`]: every message of both directions.
#![forbid(unsafe_code)]

pub mod entry;
pub mod frame;
pub mod header;
pub mod request;
pub mod response;
pub mod status;

pub use entry::{
    encode_entry, master_key, parse_entry, EntryError, EntryHeader, EntryView, MasterKey, DIGEST_BYTES,
    ENTRY_HEADER_BYTES, ENTRY_OVERHEAD_BYTES, MASTER_KEY_BYTES,
};
pub use frame::{next_frame, Frame, FrameError, FRAME_BYTES_MAX_DEFAULT};
pub use header::{
    OpCode, PacketHeader, FLAG_DO_FENCING, FLAG_HIGH_PRIORITY, FLAG_RECOVERY_ADD, PROTOCOL_VERSION,
};
pub use request::{
    decode_request, encode_request, AddRequest, BadRequest, ReadLacRequest, ReadRequest, Request,
    WriteLacRequest,
};
pub use response::{decode_response, encode_response, ReadLacBody, Response};
pub use status::Status;

/// The entry id that names "the last entry this bookie holds" in a read (BookKeeper's
/// `LAST_ADD_CONFIRMED`): the client learns the last add confirmed from that entry's header.
pub const LAST_ENTRY: i64 = -1;

/// Why a response (on the client side) could not be decoded. The stream is out of step after any of these:
/// the client closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message ends inside the {what} ({len} bytes)")]
    Truncated { what: &'static str, len: usize },
    #[error("protocol version {0} (this client speaks version {PROTOCOL_VERSION})")]
    Version(u8),
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
}

/// Reads a big-endian `u64` at `at`; the caller checked the length.
fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    be_u64(bytes, at) as i64
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}
