//! The runtime's lifecycle, tested on a real process: a tiny line-echo daemon built on `daemon::run`.
//!
//! Re-exec pattern: each test spawns this same test binary with `--exact testd_child`; with
//! `LOGTANK_TESTD_ARGS` set, that "test" runs the daemon and exits the process with its exit code. The
//! parent plays systemd: it binds the `NOTIFY_SOCKET` datagram socket, sets `WATCHDOG_USEC`, sends signals
//! with kill(1), and reads stderr. Children run under `sh -c 'WATCHDOG_PID=$$ … exec'` because sd-notify
//! only honours `WATCHDOG_USEC` when `WATCHDOG_PID` is the daemon's own pid, which the parent cannot know
//! before spawning; `exec` keeps the shell's pid.

// The harness helpers below are test code too, but clippy's `allow-unwrap-in-tests` only recognises
// `#[test]` functions and `#[cfg(test)]` modules. The test daemon itself does not unwrap.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clap::Parser;
use logtank_runtime::config::{AdminConfig, IoConfig, LogConfig, ServerConfig};
use logtank_runtime::daemon::{run_named, Daemon, DaemonContext};
use logtank_runtime::shutdown::{Shutdown, WorkTracker};
use logtank_runtime::{CommonArgs, StatusSource};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Every wait in these tests ends by this deadline; hitting it is a failure, never an expected path.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------
// The test daemon: echoes each line with a configurable prefix.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TestdConfig {
    server: ServerConfig,
    admin: AdminConfig,
    log: LogConfig,
    io: IoConfig,
    echo: EchoSection,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EchoSection {
    /// Put before every echoed line; changeable at reload.
    prefix: String,
}

impl Default for TestdConfig {
    fn default() -> Self {
        TestdConfig {
            server: ServerConfig::new("127.0.0.1:0", "/nonexistent"),
            admin: AdminConfig::new("127.0.0.1:0"),
            log: LogConfig::default(),
            io: IoConfig::default(),
            echo: EchoSection::default(),
        }
    }
}

logtank_runtime::impl_daemon_config!(TestdConfig {
    fn warnings(&self) -> Vec<String> {
        if self.echo.prefix.len() > 64 {
            vec!["echo.prefix is longer than 64 bytes".to_owned()]
        } else {
            Vec::new()
        }
    }
});

/// State shared by the connections, the daemon object and `/status`.
struct Shared {
    prefix: RwLock<String>,
    tracker: WorkTracker,
    lines: Counter,
    served: AtomicU64,
}

impl StatusSource for Shared {
    fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        let prefix = self.prefix.read().map(|p| p.clone()).unwrap_or_default();
        fields.insert("prefix".into(), prefix.into());
        fields.insert("in_flight".into(), self.tracker.in_flight().into());
        fields.insert("served".into(), self.served.load(Ordering::Relaxed).into());
        fields
    }
}

struct Testd {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Daemon for Testd {
    type Config = TestdConfig;
    const NAME: &'static str = "testd";

    async fn start(config: TestdConfig, ctx: DaemonContext) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            prefix: RwLock::new(config.echo.prefix.clone()),
            tracker: WorkTracker::new(),
            lines: Counter::default(),
            served: AtomicU64::new(0),
        });
        ctx.metrics()
            .with_registry(|r| r.register("echo_lines", "Lines echoed", shared.lines.clone()));
        ctx.set_status_source(shared.clone());
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), ctx.shutdown().clone()));
        Ok(Testd {
            addr,
            admin_addr: ctx.admin_addr(),
            shared,
            accept,
        })
    }

    fn status_line(&self) -> String {
        // The parent finds the bound ports here.
        format!(
            "echo on {} admin on {} served {}",
            self.addr,
            self.admin_addr,
            self.shared.served.load(Ordering::Relaxed)
        )
    }

    async fn reload(&mut self, config: TestdConfig) -> anyhow::Result<()> {
        let mut prefix = self
            .shared
            .prefix
            .write()
            .map_err(|_| anyhow::anyhow!("prefix lock poisoned"))?;
        *prefix = config.echo.prefix;
        Ok(())
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        self.accept.await?;
        log::info!(
            "waiting for {} in-flight requests",
            self.shared.tracker.in_flight()
        );
        self.shared.tracker.wait_idle().await;
        log::info!("echo drained");
        Ok(())
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    log::debug!("connection from {peer}");
                    tokio::spawn(connection(stream, shared.clone(), shutdown.clone()));
                }
                Err(e) => log::warn!("accept failed: {e}"),
            },
            _ = shutdown.wait() => return,
        }
    }
}

/// Special lines: `!error` logs an error; `!hold` replies only after shutdown began (an in-flight request
/// at SIGTERM by construction); `!stuck` never replies (a drain that overruns its deadline).
async fn connection(stream: tokio::net::TcpStream, shared: Arc<Shared>, shutdown: Shutdown) {
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                _ => return,
            },
            _ = shutdown.wait() => return,
        };
        let _guard = shared.tracker.start();
        match line.as_str() {
            "!error" => log::error!("client asked for an error line"),
            "!hold" => shutdown.wait().await,
            "!stuck" => std::future::pending::<()>().await,
            _ => {}
        }
        let prefix = shared.prefix.read().map(|p| p.clone()).unwrap_or_default();
        // Counted before the reply, so a client that got its echo always sees it in /metrics and /status.
        shared.lines.inc();
        shared.served.fetch_add(1, Ordering::Relaxed);
        if write
            .write_all(format!("{prefix}{line}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[derive(Parser)]
struct TestdCli {
    #[command(flatten)]
    common: CommonArgs,
}

// Not a test: the daemon's entry point when this binary is re-executed by the tests below.
#[test]
fn testd_child() {
    let Ok(args) = std::env::var("LOGTANK_TESTD_ARGS") else {
        return;
    };
    let argv = std::iter::once("testd").chain(args.split('\n').filter(|a| !a.is_empty()));
    let cli = TestdCli::try_parse_from(argv).unwrap();
    let code = run_named::<Testd>(Testd::NAME, cli.common);
    std::process::exit(i32::from(code));
}

// ---------------------------------------------------------------------------------------------------
// The parent side: a child process with its notify socket and captured output.

/// A running test daemon; killed on drop so a failing test leaves no process behind.
struct Proc {
    child: Child,
    notify: UnixDatagram,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<String>>,
    messages: Vec<String>,
    dir: tempfile::TempDir,
}

struct Spawn<'a> {
    args: Vec<String>,
    env: Vec<(&'a str, &'a str)>,
    config: Option<&'a str>,
}

impl<'a> Spawn<'a> {
    fn new(config: &'a str) -> Self {
        Spawn {
            args: Vec::new(),
            env: Vec::new(),
            config: Some(config),
        }
    }

    fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    fn env(mut self, key: &'a str, value: &'a str) -> Self {
        self.env.push((key, value));
        self
    }

    fn start(self) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut args = self.args;
        if let Some(config) = self.config {
            std::fs::write(dir.path().join("testd.toml"), config).unwrap();
            args.insert(0, "--config".into());
            args.insert(1, dir.path().join("testd.toml").display().to_string());
        }
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$@\"")
            .arg("sh")
            .arg(exe)
            .args([
                "--exact",
                "testd_child",
                "--nocapture",
                "--quiet",
                "--test-threads=1",
            ])
            .env("LOGTANK_TESTD_ARGS", args.join("\n"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in self.env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut stdout_pipe = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout_pipe.read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        Proc {
            child,
            notify,
            stderr,
            stdout,
            messages: Vec::new(),
            dir,
        }
    }
}

impl Proc {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("testd.toml")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Receives notify messages until one satisfies `pred`; returns it. All are kept in `self.messages`.
    fn wait_message(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + DEADLINE;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < until {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.messages.push(message.clone());
                    if pred(&message) {
                        return message;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "daemon exited ({status}) while waiting for {what}; stderr:\n{}",
                            self.stderr_text()
                        );
                    }
                }
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        panic!(
            "no {what} within {DEADLINE:?}; got {:?}; stderr:\n{}",
            self.messages,
            self.stderr_text()
        );
    }

    /// Waits for READY=1 and returns (echo address, admin address) from its STATUS line.
    fn wait_ready(&mut self) -> (SocketAddr, SocketAddr) {
        let ready = self.wait_message("READY=1", |m| m.lines().any(|l| l == "READY=1"));
        let status = ready
            .lines()
            .find_map(|l| l.strip_prefix("STATUS="))
            .expect("READY=1 comes with STATUS=");
        let words: Vec<&str> = status.split_whitespace().collect();
        let after = |w: &str| {
            words
                .iter()
                .position(|x| *x == w)
                .map(|i| words[i + 2].parse().unwrap())
        };
        (after("echo").unwrap(), after("admin").unwrap())
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "daemon did not exit within {DEADLINE:?}; stderr:\n{}",
            self.stderr_text()
        );
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until a stderr line satisfies `pred`; returns it.
    fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + DEADLINE;
        while Instant::now() < until {
            if let Some(line) = self.stderr.lock().unwrap().iter().find(|l| pred(l)) {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no stderr line with {what} within {DEADLINE:?}; stderr:\n{}",
            self.stderr_text()
        );
    }

    /// Runs to completion (for `--check-config` and failed starts): exit status, stdout, stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let status = self.wait_exit();
        // The reader threads finish once the pipes close; wait for the text, within the deadline.
        let until = Instant::now() + DEADLINE;
        while (Arc::strong_count(&self.stdout) > 1 || Arc::strong_count(&self.stderr) > 1)
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stdout = self.stdout.lock().unwrap().clone();
        (status, stdout, self.stderr_text())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request-response on a new connection.
fn echo(addr: SocketAddr, line: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply
}

/// A raw HTTP/1.1 GET; returns (status code, headers, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_owned(), body.to_owned())
}

fn status_json(admin: SocketAddr) -> Value {
    let (code, _, body) = http_get(admin, "/status");
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

/// Polls `/status` until `pred` holds.
fn wait_status(admin: SocketAddr, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let status = status_json(admin);
        if pred(&status) {
            return status;
        }
        assert!(Instant::now() < until, "/status never showed {what}: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn position(messages: &[String], pred: impl Fn(&str) -> bool) -> Option<usize> {
    messages.iter().position(|m| pred(m))
}

const GOOD_CONFIG: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[echo]\nprefix = \"v1: \"\n";

fn is_timestamped(line: &str) -> bool {
    // 2026-01-02T03:04:05.678Z
    let b = line.as_bytes();
    b.len() > 24 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[..4].iter().all(u8::is_ascii_digit)
}

// ---------------------------------------------------------------------------------------------------
// The tests.

// Proves the notify sequence READY=1 (with STATUS) → WATCHDOG=1 → STOPPING=1, that a request in flight
// at SIGTERM is completed before exit, and that the process then exits 0.
#[test]
fn ready_watchdog_stopping_and_drain() {
    let mut d = Spawn::new(GOOD_CONFIG).env("WATCHDOG_USEC", "200000").start();
    let (echo_addr, admin) = d.wait_ready();
    assert!(
        d.messages[0].contains("READY=1") && d.messages[0].contains("STATUS=echo on "),
        "{:?}",
        d.messages
    );
    d.wait_message("WATCHDOG=1", |m| m.contains("WATCHDOG=1"));

    let mut held = TcpStream::connect(echo_addr).unwrap();
    held.set_read_timeout(Some(DEADLINE)).unwrap();
    held.write_all(b"!hold\n").unwrap();
    wait_status(admin, "one request in flight", |s| s["in_flight"] == 1);

    d.signal("TERM");
    let mut reply = String::new();
    BufReader::new(&held).read_line(&mut reply).unwrap();
    assert_eq!(reply, "v1: !hold\n");
    d.wait_message("STOPPING=1", |m| m.contains("STOPPING=1"));
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", d.stderr_text());

    let ready = position(&d.messages, |m| m.contains("READY=1")).unwrap();
    let watchdog = position(&d.messages, |m| m.contains("WATCHDOG=1")).unwrap();
    let stopping = position(&d.messages, |m| m.contains("STOPPING=1")).unwrap();
    assert!(ready < watchdog && watchdog < stopping, "{:?}", d.messages);
    let stderr = d.stderr_text();
    assert!(stderr.contains("echo drained"), "{stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
}

// Proves a drain that overruns server.shutdown_timeout_ms is cut off: error logged, exit code 1.
#[test]
fn shutdown_past_deadline_exits_1() {
    let config = format!("{GOOD_CONFIG}\n");
    let mut d = Spawn::new(&config)
        .arg("--set")
        .arg("server.shutdown_timeout_ms=300")
        .start();
    let (echo_addr, admin) = d.wait_ready();
    let mut stuck = TcpStream::connect(echo_addr).unwrap();
    stuck.write_all(b"!stuck\n").unwrap();
    wait_status(admin, "one request in flight", |s| s["in_flight"] == 1);
    d.signal("TERM");
    assert_eq!(d.wait_exit().code(), Some(1));
    assert!(
        d.stderr_text().contains("shutdown did not finish within 300 ms"),
        "{}",
        d.stderr_text()
    );
}

// Proves a broken config on SIGHUP is reported (file, line, key; at <3> in journal format) while the
// daemon keeps serving with the old config, after RELOADING=1 + MONOTONIC_USEC and READY=1; and that
// journald-format lines carry <6>/<3> prefixes.
#[test]
fn broken_reload_keeps_running_and_says_why() {
    let mut d = Spawn::new(GOOD_CONFIG).env("JOURNAL_STREAM", "8:12345").start();
    let (echo_addr, admin) = d.wait_ready();
    let ready_count = d.messages.len();

    std::fs::write(d.config_path(), "[echo]\nprefx = \"v2: \"\n").unwrap();
    d.signal("HUP");
    let reloading = d.wait_message("RELOADING=1", |m| m.contains("RELOADING=1"));
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    let ready = d.wait_message("READY=1 after reload", |m| m.contains("READY=1"));
    assert!(ready.contains("last reload failed"), "{ready}");
    assert!(d.messages.len() > ready_count);

    assert_eq!(echo(echo_addr, "still here"), "v1: still here\n");
    let why = d.wait_stderr("the reload error", |l| l.contains("reload failed"));
    let expected = format!("{}:2: key 'echo.prefx': unknown field", d.config_path().display());
    assert!(why.starts_with("<3>") && why.contains(&expected), "{why}");
    assert!(status_json(admin)["status"]
        .as_str()
        .unwrap()
        .contains("last reload failed"));

    echo(echo_addr, "!error");
    d.wait_stderr("<3> from the daemon", |l| {
        l == "<3>client asked for an error line"
    });
    d.wait_stderr("<6> ready line", |l| l.starts_with("<6>ready: echo on "));
    let stderr = d.stderr_text();
    assert!(
        stderr.lines().all(|l| l.is_empty() || l.starts_with('<')),
        "every stderr line has a priority prefix:\n{stderr}"
    );
    assert!(
        !stderr.lines().any(is_timestamped),
        "no timestamps under journald:\n{stderr}"
    );

    d.signal("TERM");
    assert_eq!(d.wait_exit().code(), Some(0));
}

// Proves a valid config change on SIGHUP is applied (prefix in /status and replies, log level now debug),
// and that without JOURNAL_STREAM log lines are timestamped.
#[test]
fn valid_reload_is_applied() {
    let mut d = Spawn::new(GOOD_CONFIG).start();
    let (echo_addr, admin) = d.wait_ready();
    assert_eq!(echo(echo_addr, "a"), "v1: a\n");
    assert!(!d.stderr_text().contains("DEBUG"));

    let v2 = GOOD_CONFIG.replace("v1: ", "v2: ") + "\n[log]\nlevel = \"debug\"\n";
    std::fs::write(d.config_path(), v2).unwrap();
    d.signal("HUP");
    d.wait_message("RELOADING=1", |m| m.contains("RELOADING=1"));
    let ready = d.wait_message("READY=1 after reload", |m| m.contains("READY=1"));
    assert!(!ready.contains("reload failed"), "{ready}");

    assert_eq!(status_json(admin)["prefix"], "v2: ");
    assert_eq!(echo(echo_addr, "b"), "v2: b\n");
    let debug = d.wait_stderr("a debug line", |l| {
        l.contains("DEBUG") && l.contains("connection from")
    });
    assert!(is_timestamped(&debug), "{debug}");
    let info = d.wait_stderr("the reload line", |l| l.contains("configuration reloaded"));
    assert!(is_timestamped(&info) && info.contains(" INFO "), "{info}");

    d.signal("INT");
    assert_eq!(d.wait_exit().code(), Some(0));
}

// Proves the admin endpoints: /ping → pong, /metrics → Prometheus text with runtime and daemon metrics,
// /status → JSON with version and uptime, unknown path → 404; and that --listen/--admin-listen apply.
#[test]
fn admin_endpoints() {
    let mut d = Spawn::new("")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--admin-listen")
        .arg("127.0.0.1:0")
        .start();
    let (echo_addr, admin) = d.wait_ready();
    echo(echo_addr, "count me");

    let (code, _, body) = http_get(admin, "/ping");
    assert_eq!((code, body.as_str()), (200, "pong"));

    let (code, head, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.contains("logtank_echo_lines_total 1"), "{body}");
    assert!(body.contains("logtank_build_info{version=\""), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");

    let status = status_json(admin);
    assert_eq!(status["daemon"], "testd");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_s"].is_u64(), "{status}");
    assert_eq!(status["state"], "running");
    assert_eq!(status["role"], "standalone");
    assert_eq!(status["readonly"], false);
    assert_eq!(status["served"], 1);

    assert_eq!(http_get(admin, "/nope").0, 404);
    d.signal("TERM");
    assert_eq!(d.wait_exit().code(), Some(0));
}

// Proves --check-config: a bad key exits 1 naming file:line and key on stderr; a good config prints the
// effective config (with warnings as comments) and exits 0; neither starts the daemon.
#[test]
fn check_config() {
    let bad = Spawn::new("[server]\nlisten = \"127.0.0.1:0\"\n[echo]\nprefx = 1\n")
        .arg("--check-config")
        .start();
    let path = bad.config_path();
    let (status, stdout, stderr) = bad.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:4: key 'echo.prefx'", path.display())),
        "{stderr}"
    );
    assert!(!stdout.contains("[server]"), "{stdout}");

    let long_prefix = format!("[echo]\nprefix = \"{}\"\n", "x".repeat(65));
    let good = Spawn::new(&long_prefix)
        .arg("--check-config")
        .arg("--set")
        .arg("server.listen=127.0.0.1:7")
        .start();
    let (status, stdout, stderr) = good.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("# warning: echo.prefix is longer than 64 bytes"),
        "{stdout}"
    );
    assert!(stdout.contains("[server]\nlisten = \"127.0.0.1:7\""), "{stdout}");
    assert!(stdout.contains("shutdown_timeout_ms = 10000"), "{stdout}");
    assert!(stdout.contains("[echo]"), "{stdout}");
}

// Proves a bad config, a missing explicit config file and a bad --set each stop a normal start with
// exit code 78 (EX_CONFIG) and a message naming the problem, before READY=1.
#[test]
fn bad_config_at_start_exits_78() {
    let bad = Spawn::new("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout_ms = \"soon\"\n").start();
    let path = bad.config_path();
    let (status, _, stderr) = bad.finish();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3: key 'server.shutdown_timeout_ms'", path.display())),
        "{stderr}"
    );

    let mut missing = Spawn::new("");
    missing.config = None;
    let (status, _, stderr) = missing
        .arg("--config")
        .arg("/nonexistent/testd.toml")
        .start()
        .finish();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/testd.toml: cannot read config file"),
        "{stderr}"
    );

    let (status, _, stderr) = Spawn::new("")
        .arg("--set")
        .arg("server.shutdown_timeout_ms=soon")
        .start()
        .finish();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(
            "--set server.shutdown_timeout_ms=soon: key 'server.shutdown_timeout_ms': invalid type"
        ),
        "{stderr}"
    );
}
