//! `logtank status`: this host at a glance. One line per daemon from its admin endpoint's `/status` (daemon,
//! lifecycle state, role, readonly, and the status line it sends systemd), then the marker files under the
//! data root that decide its role (DESIGN §2): `master`, `storage/safe_to_read` (or the older
//! `safe_to_read`) and `readonly`. Exits 1 when coordd, the writer or the indexes reader does not answer, so
//! scripts can tell. The bookies (`--bookie-admin`, those `logtank up` and `logtank-bookie@1..3` use) are
//! shown when they answer and "not running" otherwise without changing the exit status: most hosts run none.
//! A writer in bookies mode gets a second line: its log, the replication state, entries replicated and the
//! batches acknowledged on the local journal alone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::Value;

/// How long one admin endpoint may take to connect and answer: it serves from memory, so a slow one is as
/// good as down for a person waiting.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest `/status` document read: a few hundred bytes in practice.
const STATUS_BYTES_MAX: u64 = 1 << 20;

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// logtank-writer's admin endpoint.
    #[arg(long, default_value = "127.0.0.1:9150", value_name = "HOST:PORT")]
    pub writer_admin: String,
    /// logtank-indexes' admin endpoint.
    #[arg(long, default_value = "127.0.0.1:9151", value_name = "HOST:PORT")]
    pub indexes_admin: String,
    /// logtank-coordd's admin endpoint.
    #[arg(long, default_value = "127.0.0.1:9152", value_name = "HOST:PORT")]
    pub coordd_admin: String,
    /// The bookies' admin endpoints, comma-separated.
    #[arg(
        long,
        default_value = "127.0.0.1:9161,127.0.0.1:9162,127.0.0.1:9163",
        value_name = "HOST:PORT,…"
    )]
    pub bookie_admin: String,
    /// The data root whose marker files are shown (`logtank up` uses ./logtank-data).
    #[arg(long, env = "LOGTANK_DATA_ROOT", default_value = "/data")]
    pub data_root: PathBuf,
}

pub fn run(args: StatusArgs) -> Result<ExitCode> {
    let mut all_up = true;
    for (name, addr) in [
        ("coordd", &args.coordd_admin),
        ("writer", &args.writer_admin),
        ("indexes", &args.indexes_admin),
    ] {
        match fetch_status(addr) {
            Ok(doc) => {
                println!("{name:<8} {addr:<21} {}", describe(&doc));
                if let Some(line) = replication(&doc) {
                    println!("{:<8} {:<21} {line}", "", "");
                }
            }
            Err(e) => {
                all_up = false;
                println!("{name:<8} {addr:<21} down ({e})");
            }
        }
    }
    for (i, addr) in args
        .bookie_admin
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .enumerate()
    {
        let name = format!("bookie-{}", i + 1);
        match fetch_status(addr) {
            Ok(doc) => println!("{name:<8} {addr:<21} {}", describe(&doc)),
            Err(e) => println!("{name:<8} {addr:<21} not running ({e})"),
        }
    }
    println!("{}", markers(&args.data_root));
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// "running, role master, writable: serving 127.0.0.1:15000, …".
pub fn describe(doc: &Value) -> String {
    let text = |key: &str| doc.get(key).and_then(Value::as_str).unwrap_or("?").to_string();
    let readonly = match doc.get("readonly").and_then(Value::as_bool) {
        Some(true) => "readonly",
        Some(false) => "writable",
        None => "readonly ?",
    };
    let line = text("status");
    let line = if line.is_empty() { "-".into() } else { line };
    format!(
        "{}, role {}, {readonly}, up {}: {line}",
        text("state"),
        text("role"),
        uptime(doc.get("uptime_s").and_then(Value::as_u64))
    )
}

/// A writer in bookies mode: "replication in step (ledger 3), log /logtank/logs/…, 120 entries, 0 batches
/// local only"; `None` for other daemons and a writer without replication.
pub fn replication(doc: &Value) -> Option<String> {
    if doc.get("replication").and_then(Value::as_str) != Some("bookies") {
        return None;
    }
    let text = |key: &str| doc.get(key).and_then(Value::as_str).unwrap_or("?").to_string();
    let number = |key: &str| {
        doc.get(key)
            .and_then(Value::as_u64)
            .map_or("?".into(), |n| n.to_string())
    };
    Some(format!(
        "replication {}, log {}, {} entries, {} batches local only",
        text("replication_state"),
        text("replication_log"),
        number("replication_entries"),
        number("replication_local_only_batches"),
    ))
}

fn uptime(seconds: Option<u64>) -> String {
    match seconds {
        Some(s) => humantime::format_duration(Duration::from_secs(s)).to_string(),
        None => "?".into(),
    }
}

/// The marker files' line.
pub fn markers(root: &Path) -> String {
    if !root.is_dir() {
        return format!("markers  {}: no such directory", root.display());
    }
    let yes_no = |present: bool| if present { "yes" } else { "no" };
    let safe = if root.join("storage/safe_to_read").exists() {
        "yes".to_string()
    } else if root.join("safe_to_read").exists() {
        "yes (the older <data>/safe_to_read)".to_string()
    } else {
        "no".to_string()
    };
    format!(
        "markers  {}: master {}, safe_to_read {safe}, readonly {}",
        root.display(),
        yes_no(root.join("master").exists()),
        yes_no(root.join("readonly").exists()),
    )
}

/// `GET /status` on an admin endpoint, parsed.
pub fn fetch_status(addr: &str) -> Result<Value> {
    let (code, body) = http_get(addr, "/status")?;
    if code != 200 {
        bail!("HTTP {code}");
    }
    serde_json::from_str(&body).map_err(|e| anyhow!("/status is not JSON: {e}"))
}

/// A minimal HTTP/1.1 GET (the admin endpoints answer with Content-Length and close): status code, body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| anyhow!("{e}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&target, ADMIN_TIMEOUT).map_err(|e| anyhow!("{e}"))?;
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .take(STATUS_BYTES_MAX)
        .read_to_string(&mut response)
        .map_err(|e| anyhow!("{e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| head.starts_with("HTTP/1."))
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a daemon's /status document becomes one readable line.
    #[test]
    fn describes_a_status_document() {
        let doc = serde_json::json!({
            "daemon": "writer", "state": "running", "role": "standalone", "readonly": false,
            "uptime_s": 65, "status": "serving 127.0.0.1:15000, ack=fsync, 3 batches, readonly: no"
        });
        assert_eq!(
            describe(&doc),
            "running, role standalone, writable, up 1m 5s: serving 127.0.0.1:15000, ack=fsync, 3 batches, readonly: no"
        );
    }

    // Proves a writer in bookies mode gets its replication line, and one without does not.
    #[test]
    fn describes_replication() {
        let doc = serde_json::json!({
            "daemon": "writer", "replication": "bookies", "replication_state": "in step (ledger 3)",
            "replication_log": "/logtank/logs/w1", "replication_entries": 120,
            "replication_local_only_batches": 0
        });
        assert_eq!(
            replication(&doc).unwrap(),
            "replication in step (ledger 3), log /logtank/logs/w1, 120 entries, 0 batches local only"
        );
        assert_eq!(replication(&serde_json::json!({"replication": "none"})), None);
    }

    // Proves the marker line reports each marker, the older safe_to_read place included.
    #[test]
    fn marker_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(markers(root).ends_with("master no, safe_to_read no, readonly no"));
        std::fs::write(root.join("master"), "").unwrap();
        std::fs::write(root.join("safe_to_read"), "").unwrap();
        assert!(markers(root).contains("master yes, safe_to_read yes (the older"));
        std::fs::create_dir(root.join("storage")).unwrap();
        std::fs::write(root.join("storage/safe_to_read"), "").unwrap();
        std::fs::write(root.join("readonly"), "").unwrap();
        assert!(markers(root).ends_with("master yes, safe_to_read yes, readonly yes"));
        assert!(markers(&root.join("nope")).ends_with("no such directory"));
    }
}
