//! The Apache ZooKeeper client protocol (3.5–3.8) as pure codecs, shared by coordd's server side and the
//! tests: bytes in, typed records or a [`DecodeError`] out. No IO, no tokio, no sockets (STYLE §1), so every
//! decoder can be fuzzed and property-tested on its own.
//!
//! - [`jute`]: the field encoding (ints, longs, strings, buffers, vectors).
//! - [`proto`]: opcodes, error codes, `Stat`, ACLs, the handshake, every request and reply record.
//! - [`frame`]: splitting a byte stream into length-prefixed frames, four-letter-word detection.
#![forbid(unsafe_code)]

pub mod frame;
pub mod jute;
pub mod proto;

pub use proto::*;

/// Why a frame could not be decoded. Each of these ends the connection, as ZooKeeper does for a record it
/// cannot deserialize (the client gets no reply it could misread).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame ends inside a {what}")]
    Truncated { what: &'static str },
    #[error("invalid {what} length {len}")]
    BadLength { what: &'static str, len: i64 },
    #[error("string is not valid UTF-8")]
    NotUtf8,
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("operation {0} is not allowed inside this multi")]
    BadMultiOp(i32),
    #[error("frame length {len} outside 0..={max}")]
    FrameLength { len: i64, max: usize },
}
