//! The storage protocol: IndexTank's LogWriter / LogReader / LogManager Thrift services over the binary
//! protocol (strict message headers, unframed). Pure codecs (no IO, STYLE §1) plus a blocking client.
//!
//! - [`binary`]: the primitive layer (`Reader`, `Writer`, `Limits`, wire type ids).
//! - [`codec`]: the structs of [`types`] to and from bytes; byte-level walks over encoded `LogRecord`s
//!   (`record_len`, `record_index_code`) for paths that copy records without decoding them.
//! - [`service`]: calls and replies of the three services, server side (`decode_call`, reply encoders)
//!   and client side (`encode_call`, `decode_*_reply`).
//! - [`rules`]: what the protocol's values must satisfy beyond their wire shape (index codes).
//! - [`client`]: a blocking client over `std::net::TcpStream`, the one module that does IO.
#![forbid(unsafe_code)]

pub mod binary;
pub mod client;
pub mod codec;
pub mod fanout;
pub mod rules;
pub mod service;
pub mod types;

pub use binary::Limits;
pub use client::{Client, ClientConfig, ClientError};
pub use codec::*;
pub use fanout::{FanOut, OptionalFailure, RequiredFailure};
pub use rules::*;
pub use service::*;
pub use types::*;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside the value: on a stream, wait for more and try again.
    #[error("incomplete: the data ends inside the value")]
    Incomplete,
    /// The bytes can never become a valid value (what is wrong, and where).
    #[error("{0}")]
    Invalid(String),
}

impl DecodeError {
    /// Adds where the error happened (" in field 4 of LogRecord") to an `Invalid` message.
    pub(crate) fn context(self, where_: impl FnOnce() -> String) -> DecodeError {
        match self {
            DecodeError::Incomplete => DecodeError::Incomplete,
            DecodeError::Invalid(m) => DecodeError::Invalid(format!("{m} {}", where_())),
        }
    }
}
