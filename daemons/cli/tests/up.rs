//! `logtank up` as a real process supervising real processes: stand-in daemons (small Python programs that
//! serve `/ping` on their admin port and exit 0 on SIGTERM) take the place of daemons not built yet.
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
        body = b"pong" if self.path == "/ping" else b"?"
        self.send_response(200 if self.path == "/ping" else 404)
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

fn install_fakes(bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    for name in ["logtank-coordd", "logtank-writer", "logtank-indexes"] {
        let path = bin.join(name);
        std::fs::write(&path, FAKE_DAEMON).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Keeps the admin ports the stand-ins bind (9150–9152 + offset) below the ephemeral range (32768+), where an
/// outgoing connection could already hold one.
fn port_offset() -> u16 {
    10000 + (std::process::id() % 2000) as u16 * 5
}

// Proves `up` starts every daemon, prints every endpoint, and on Ctrl-C stops them all cleanly and exits 0.
#[test]
fn up_starts_prints_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    install_fakes(&dir.path().join("bin"));
    let offset = port_offset();
    let mut up = Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args(["up", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--bin-dir")
        .arg(dir.path().join("bin"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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
        .args([
            "up",
            "--port-offset",
            &(port_offset() + 1).to_string(),
            "--data-dir",
        ])
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
