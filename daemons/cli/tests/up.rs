//! `logtank up` as a real process supervising real processes: stand-in daemons (small Python programs that
//! serve `/ping` and a running `/status` on their admin port and exit 0 on SIGTERM) take the place of daemons not built yet.
// Helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests; a failed
// unwrap in a test helper is a test failure, which is what we want.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const FAKE_DAEMON: &str = r#"#!/usr/bin/env python3
import http.server, os, signal, sys
args = sys.argv[1:]
admin = args[args.index("--admin-listen") + 1]
data = args[args.index("--data-root") + 1]
name = os.path.basename(sys.argv[0])
if os.environ.get("FAKE_FAIL") == name:
    sys.exit(3)
class Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        bodies = {"/ping": b"pong", "/status": b'{"state": "running"}'}
        body = bodies.get(self.path, b"?")
        self.send_response(200 if self.path in bodies else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
host, port = admin.rsplit(":", 1)
server = http.server.HTTPServer((host, int(port)), Ping)
def stop(*_):
    open(os.path.join(data, name + ".stopped"), "w").close()
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
print(name, "serving", flush=True)
server.serve_forever()
"#;

/// Interrupts `up` (Ctrl-C) when dropped, so a failing test leaves no suite running.
struct InterruptOnDrop(u32);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGINT);
    }
}

fn install_fakes(bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    for name in ["logtank-coordd", "logtank-writer", "logtank-indexes"] {
        let path = bin.join(name);
        std::fs::write(&path, FAKE_DAEMON).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The port offset of test `slot` (0, 1, 2): admin ports 9150–9152 + offset stay below the ephemeral range
/// (32768+), where an outgoing connection could already hold one. Slots are 3 apart, so one test's three
/// consecutive admin ports never meet another's, and processes 10 apart.
fn port_offset(slot: u16) -> u16 {
    10000 + (std::process::id() % 1000) as u16 * 10 + slot * 3
}

// Proves `up` starts every daemon, prints every endpoint, and on Ctrl-C stops them all cleanly and exits 0.
#[test]
fn up_starts_prints_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    install_fakes(&dir.path().join("bin"));
    let offset = port_offset(0);
    let mut up = Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args(["up", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--bin-dir")
        .arg(dir.path().join("bin"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _interrupt = InterruptOnDrop(up.id());
    let (tx, rx) = mpsc::channel();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("up never said it was ready");
        let done = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let printed = printed.join("\n");
    for port in [2181, 15000, 15100, 16000, 9150, 9151, 9152] {
        assert!(
            printed.contains(&format!("127.0.0.1:{}", port + offset)),
            "port {port} missing from:\n{printed}"
        );
    }
    for admin in [9150, 9151, 9152] {
        assert!(logtank_cli::up::ping(
            format!("127.0.0.1:{}", admin + offset).parse().unwrap()
        ));
    }
    kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).unwrap();
    let status = up.wait().unwrap();
    assert!(status.success(), "up exited with {status}");
    for name in ["logtank-coordd", "logtank-writer", "logtank-indexes"] {
        assert!(
            dir.path().join("data").join(format!("{name}.stopped")).exists(),
            "{name} was not stopped by SIGTERM"
        );
    }
}

// Proves a daemon that fails at start-up makes `up` stop what it started and exit non-zero.
#[test]
fn up_fails_when_a_daemon_fails() {
    let dir = tempfile::tempdir().unwrap();
    install_fakes(&dir.path().join("bin"));
    let status = Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args(["up", "--port-offset", &port_offset(1).to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--bin-dir")
        .arg(dir.path().join("bin"))
        .env("FAKE_FAIL", "logtank-writer")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(
        dir.path().join("data/logtank-coordd.stopped").exists(),
        "coordd was left running"
    );
}

// Proves the README's first commands work on the real daemons: `up` runs coordd, the writer and the indexes
// reader as an active master (with --replicate, the writer in bookies mode), `generate` then `recover` in a
// second terminal sees every record, `status` shows every daemon, the replication and the markers, and
// Ctrl-C stops them all cleanly.
#[test]
fn up_runs_the_real_suite_end_to_end() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_logtank")).parent().unwrap();
    for name in ["logtank-coordd", "logtank-writer", "logtank-indexes"] {
        assert!(
            bin_dir.join(name).is_file(),
            "{name} is not built in {}: run `cargo build --workspace --bins` (cargo test --workspace does)",
            bin_dir.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let offset = port_offset(2);
    let port = |p: u16| (p + offset).to_string();
    let mut up = Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args([
            "up",
            "--replicate",
            "--port-offset",
            &offset.to_string(),
            "--data-dir",
        ])
        .arg(&data)
        .arg("--bin-dir")
        .arg(bin_dir)
        .stdout(Stdio::piped())
        // What up and its daemons said, for a failure's message (a CI run once saw up exit before ready).
        .stderr(std::fs::File::create(dir.path().join("up.stderr")).unwrap())
        .spawn()
        .unwrap();
    let _interrupt = InterruptOnDrop(up.id());
    let (tx, rx) = mpsc::channel();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|e| {
            let stderr = std::fs::read_to_string(dir.path().join("up.stderr")).unwrap_or_default();
            panic!("up never said it was ready ({e}); it printed {printed:?}, and on stderr:\n{stderr}")
        });
        let done = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let printed = printed.join("\n");
    assert!(!printed.contains("not built yet"), "{printed}");
    assert!(data.join("master").exists() && data.join("storage/safe_to_read").exists());

    let logtank = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_logtank"))
            .args(args)
            .env("LOGTANK_WRITER", format!("127.0.0.1:{}", port(15000)))
            .env("LOGTANK_READER", format!("127.0.0.1:{}", port(15100)))
            .env("LOGTANK_MANAGER", format!("127.0.0.1:{}", port(16000)))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status, text, err)
    };
    let (status, generated, err) = logtank(&["generate", "demo", "1000"]);
    assert!(status.success(), "{generated}{err}");
    let (status, recovered, err) = logtank(&["recover", "demo"]);
    assert!(status.success(), "{recovered}{err}");
    assert!(
        recovered.starts_with("recovered demo: 1000 records, "),
        "{recovered}"
    );
    let documents = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("documents after replay: "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    assert_eq!(documents(&recovered), documents(&generated));
    let (status, text, err) = logtank(&[
        "status",
        "--writer-admin",
        &format!("127.0.0.1:{}", port(9150)),
        "--indexes-admin",
        &format!("127.0.0.1:{}", port(9151)),
        "--coordd-admin",
        &format!("127.0.0.1:{}", port(9152)),
        "--bookie-admin",
        &format!(
            "127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            port(9161),
            port(9162),
            port(9163)
        ),
        "--data-root",
        data.to_str().unwrap(),
    ]);
    assert!(status.success(), "{text}{err}");
    assert!(
        text.contains("indexes  ") && text.contains("role master"),
        "{text}"
    );
    assert!(
        text.contains("master yes, safe_to_read yes, readonly no"),
        "{text}"
    );
    // --replicate: the writer's batches are entries on the bookies too, and status says so.
    assert!(printed.contains("the writer replicates every batch"), "{printed}");
    assert!(text.contains("replication in step (ledger "), "{text}");
    let entries = text
        .split(" log /logtank/logs/")
        .nth(1)
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|n| n.strip_suffix(" entries"))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(entries.unwrap_or(0) > 0, "{text}");
    assert_eq!(text.matches("bookie-").count(), 3, "{text}");
    assert!(!text.contains("not running"), "{text}");

    // The three bookies, as the DistributedLog cluster guide shows them, and a ledger through them.
    for p in [3181, 3182, 3183, 9161, 9162, 9163] {
        assert!(
            printed.contains(&format!("127.0.0.1:{}", port(p))),
            "{p} missing from:\n{printed}"
        );
    }
    let coord = format!("127.0.0.1:{}", port(2181));
    let (status, text, err) = logtank(&["zk", "--server", &coord, "ls", "/ledgers/available"]);
    assert!(status.success(), "{text}{err}");
    let mut listed: Vec<&str> = text.lines().collect();
    listed.sort();
    let mut expected: Vec<String> = [3181, 3182, 3183]
        .iter()
        .map(|p| format!("127.0.0.1:{}", port(*p)))
        .collect();
    expected.push("readonly".into());
    expected.sort();
    assert_eq!(listed, expected);
    let mut ledger = Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args([
            "ledgers",
            "--coord",
            &coord,
            "write",
            "--ensemble",
            "3",
            "--write-quorum",
            "2",
            "--ack-quorum",
            "2",
        ])
        .args(["--password", "pw"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = ledger.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"one\ntwo\nthree\n").unwrap();
    drop(stdin);
    let output = ledger.wait_with_output().unwrap();
    assert!(output.status.success());
    let id = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let (status, text, err) = logtank(&["ledgers", "--coord", &coord, "read", &id, "--password", "pw"]);
    assert!(status.success(), "{text}{err}");
    assert_eq!(text, "one\ntwo\nthree\n");

    kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).unwrap();
    let status = up.wait().unwrap();
    assert!(status.success(), "up exited with {status}");
}
