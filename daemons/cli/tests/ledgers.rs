//! `logtank ledgers …` and `logtank bookie …` as an operator and a script use them, against real coordination
//! and three real bookies (binaries beside `logtank` in target/): metaformat asks and refuses, `bookie format`
//! reads the bookie's own config and refuses another bookie's directories, `ledgers write` prints the id
//! of a closed ledger and `ledgers read` its lines, and the other commands show what happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{start_daemon, Daemon};
use logtank_coord::test_support::{ServerKind, TestServer};

fn logtank(coord: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args(args)
        .env("LOGTANK_COORD", coord)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn bookie_config(dir: &Path, n: u16, port: u16, coord: &str) -> std::path::PathBuf {
    let path = dir.join(format!("bookie-{n}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_root = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [io]\nclass = \"none\"\n[coord]\nservers = \"{coord}\"\n[bookie]\nsegment_size_bytes = 8388608\n",
            dir.join(format!("bookie-{n}")).display()
        ),
    )
    .unwrap();
    path
}

// Proves the cluster commands end to end: metaformat (asked, refused over ledgers), bookie format (from the
// config; refuses another bookie's directories), bookie list, ledgers write/read/list/info/tail/recover/delete.
#[test]
fn ledgers_and_bookie_commands() {
    let kind = ServerKind::under_test().pop().unwrap();
    let server = TestServer::start(&kind);
    let coord = server.connect_string();
    let dir = tempfile::tempdir().unwrap();

    let o = logtank(&coord, &["ledgers", "metaformat"], b"");
    assert!(o.status.success(), "{}", text(&o));
    // Formatting again asks; a closed stdin is a no.
    let o = logtank(&coord, &["ledgers", "metaformat"], b"");
    assert!(
        !o.status.success() && text(&o).contains("nothing changed"),
        "{}",
        text(&o)
    );

    let mut bookies: Vec<Daemon> = Vec::new();
    let mut configs = Vec::new();
    for n in 1..=3u16 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = bookie_config(dir.path(), n, port, &coord);
        let o = logtank(
            &coord,
            &["bookie", "format", "--config", config.to_str().unwrap()],
            b"",
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("formatted bookie 127.0.0.1:{port}")),
            "{}",
            text(&o)
        );
        bookies.push(start_daemon(
            "logtank-bookie",
            vec!["--config".into(), config.display().to_string()],
            dir.path().join(format!("bookie-{n}.log")),
            logtank_bookie::SERVING_PREFIX,
        ));
        configs.push((config, port));
    }
    // Bookie 2's config on bookie 1's port: its directories hold bookie 2's cookie; refused without --force.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&configs[1].0)
            .unwrap()
            .replace(&configs[1].1.to_string(), "1"),
    )
    .unwrap();
    let o = logtank(
        &coord,
        &["bookie", "format", "--config", other.to_str().unwrap()],
        b"",
    );
    assert!(
        !o.status.success() && text(&o).contains("--force"),
        "{}",
        text(&o)
    );

    let o = logtank(&coord, &["bookie", "list"], b"");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).matches("writable").count(),
        3,
        "{}",
        text(&o)
    );

    let lines: String = (0..500).map(|i| format!("line {i}\n")).collect();
    let o = logtank(
        &coord,
        &[
            "ledgers",
            "write",
            "--ensemble",
            "3",
            "--write-quorum",
            "2",
            "--ack-quorum",
            "2",
            "--password",
            "pw",
        ],
        lines.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8(o.stdout.clone()).unwrap().trim().to_string();
    let o = logtank(&coord, &["ledgers", "read", &id, "--password", "pw"], b"");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), lines);
    let o = logtank(&coord, &["ledgers", "tail", &id], b"");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        lines,
        "tail of a closed ledger prints it and ends"
    );
    let o = logtank(&coord, &["ledgers", "list", "-l"], b"");
    assert!(
        text(&o).contains("Closed") && text(&o).contains("last entry 499"),
        "{}",
        text(&o)
    );
    let o = logtank(&coord, &["ledgers", "info", &id], b"");
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["state"], "CLOSED");
    assert_eq!(info["last_entry_id"], 499);

    // An open ledger (created, never closed) is recovered and closed by `recover`.
    let o = logtank(&coord, &["ledgers", "create", "--password", "pw"], b"");
    assert!(o.status.success(), "{}", text(&o));
    let open = String::from_utf8(o.stdout.clone()).unwrap().trim().to_string();
    let o = logtank(&coord, &["ledgers", "recover", &open, "--password", "pw"], b"");
    assert!(text(&o).contains("closed at entry -1"), "{}", text(&o));

    // metaformat refuses a root that holds ledgers.
    let o = logtank(&coord, &["ledgers", "metaformat", "--yes"], b"");
    assert!(
        !o.status.success() && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    for ledger in [&id, &open] {
        let o = logtank(&coord, &["ledgers", "delete", ledger], b"");
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = logtank(&coord, &["ledgers", "read", &id, "--password", "pw"], b"");
    assert!(
        !o.status.success() && text(&o).contains("no ledger"),
        "{}",
        text(&o)
    );
    for b in bookies.iter_mut() {
        b.stop();
    }
}
