//! The storage protocol: IndexTank's LogWriter / LogReader / LogManager Thrift services over the binary
//! protocol (strict message headers, unframed). Pure codecs (no IO, STYLE §1) plus a blocking client.
#![forbid(unsafe_code)]

pub mod types;

pub use types::*;
