//! Where the storage services are and how the commands talk to them: the default addresses (DESIGN §2, on
//! loopback), their environment overrides, one connect with an error that says what to do, and the
//! server errors the commands react to.
//!
//! Every call goes through `logtank_thrift::Client` (blocking, one request at a time per connection); a
//! server's exception reaches the user as the server's own message.

use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::sync::Mutex;

use logtank_thrift::{Client, ClientConfig, ClientError, FanOut, OptionalFailure};

/// IndexTank's LogWriter port on this machine; `LOGTANK_WRITER` overrides it.
pub const WRITER_DEFAULT: &str = "127.0.0.1:15000";
/// IndexTank's LogReader port on this machine; `LOGTANK_READER` overrides it.
pub const READER_DEFAULT: &str = "127.0.0.1:15100";
/// IndexTank's LogManager port on this machine; `LOGTANK_MANAGER` overrides it.
pub const MANAGER_DEFAULT: &str = "127.0.0.1:16000";

/// Connects to `addr`, the service a person knows as `what` ("writer", "reader", "manager").
pub fn connect(what: &str, addr: &str) -> Result<Client> {
    // Formatted here rather than chained: `ClientError::Io` shows its source in its own message already.
    Client::connect(addr, &ClientConfig::default()).map_err(|e| {
        anyhow!(
            "cannot reach the {what} at {addr}: {e} (is logtank running? `logtank up` starts the suite on \
             this machine; --{what} HOST:PORT or LOGTANK_{} points elsewhere)",
            what.to_uppercase()
        )
    })
}

/// The writers of `--writer A,B,C` (one or more `host:port`), of which the first `required` (all, by
/// default) must acknowledge every batch; see `logtank_thrift::FanOut` for what a partial failure means.
pub fn fan_out(writers: &str, required: Option<usize>) -> Result<FanOut> {
    let mut fan_out = fan_out_unconnected(writers, required)?;
    match fan_out.connect() {
        Ok(optional) => {
            for f in optional {
                eprintln!("logtank: the optional writer {} cannot be reached now: {}", f.writer, f.error);
            }
            Ok(fan_out)
        }
        Err(e) => Err(anyhow!(
            "cannot reach the writer at {}: {} (is logtank running? `logtank up` starts the suite on this machine; \
             --writer HOST:PORT or LOGTANK_WRITER points elsewhere)",
            e.writer,
            e.error
        )),
    }
}

/// [`fan_out`] without connecting: checks `--writer` and `--required` before any input is read.
pub fn fan_out_unconnected(writers: &str, required: Option<usize>) -> Result<FanOut> {
    let addrs: Vec<String> = writers
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    let required = required.unwrap_or(addrs.len());
    FanOut::new(addrs, required, ClientConfig::default())
        .map_err(|e| anyhow!("--writer {writers} --required: {e}"))
}

/// Batches optional writers did not take, by writer, for the summary.
#[derive(Debug, Default)]
pub struct OptionalFailures(Mutex<BTreeMap<String, (u64, String)>>);

impl OptionalFailures {
    pub fn add(&self, failures: Vec<OptionalFailure>) {
        if failures.is_empty() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for f in failures {
            let entry = map.entry(f.writer).or_insert((0, String::new()));
            entry.0 += 1;
            entry.1 = f.error.to_string();
        }
    }

    /// One line per optional writer that failed: how many batches it missed and its last error.
    pub fn report(&self) -> String {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(writer, (n, last))| {
                format!("optional writer {writer} missed {n} batches (last error: {last})\n")
            })
            .collect()
    }
}

/// True for the reader's "token expired" error: the position a page token named was compacted or removed,
/// and the read must start again from the beginning. The storage layer's message says "restart the
/// recovery from the beginning"; DESIGN §4 calls it "token expired". Exceptions carry no finer type than
/// INTERNAL_ERROR, so the message is all a client has.
pub fn is_token_expired(e: &ClientError) -> bool {
    match e {
        ClientError::Application { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("token expired") || m.contains("restart the recovery from the beginning")
        }
        _ => false,
    }
}

/// True for the reader's "index … does not exist on this host" (no record of it yet).
pub fn is_no_such_index(e: &ClientError) -> bool {
    matches!(e, ClientError::Application { message, .. } if message.contains("does not exist on this host"))
}

/// True when the connection itself failed (the server went away), as opposed to an answer.
pub fn is_connection_error(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(_) | ClientError::Closed)
}

/// `LOGTANK_COORD_AUTH` (`user:password`): the `coord.auth` credentials for commands that change
/// coordination nodes the daemons created with them. An environment variable, not an argument, so the
/// password does not show in `ps`.
pub fn coord_auth_from_env() -> Option<String> {
    std::env::var("LOGTANK_COORD_AUTH").ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use logtank_thrift::ExceptionKind;

    fn app(message: &str) -> ClientError {
        ClientError::Application {
            kind: ExceptionKind::InternalError,
            message: message.into(),
        }
    }

    // Proves the storage layer's real expiry and missing-index messages are recognised, and nothing else.
    #[test]
    fn recognises_server_errors() {
        let expired =
            "the read position of index \"a\" is gone (raw segment 3 is gone (removed by retention)): \
                       the segment it pointed to was compacted or removed; restart the recovery from the \
                       beginning (an initial token)";
        assert!(is_token_expired(&app(expired)));
        assert!(is_token_expired(&app("token expired")));
        assert!(!is_token_expired(&app("not master")));
        assert!(!is_token_expired(&ClientError::Closed));
        assert!(is_no_such_index(&app("index \"a\" does not exist on this host")));
        assert!(!is_no_such_index(&app(expired)));
    }
}
