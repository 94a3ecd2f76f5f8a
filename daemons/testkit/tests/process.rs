//! The testkit against a real daemon: a minimal one on logtank-runtime (a listener on the runtime's
//! `accept_bounded`, its serving line, nothing else), so the start-up line, `READY=1`, `STOPPING=1` and the
//! exit codes are the runtime's own, as every logtank daemon's are.
//!
//! Re-exec pattern (as the runtime's and the journal's tests): the kit starts this same test binary with
//! `--exact fake_daemon_child`; with `LOGTANK_TESTKIT_FAKE_ARGS` set, that "test" runs the daemon and exits
//! the process with its exit code.

// clippy's `allow-unwrap-in-tests` does not reach the helpers outside `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use clap::Parser;
use logtank_runtime::config::{AdminConfig, IoConfig, LogConfig, ServerConfig};
use logtank_runtime::daemon::{run_named, Daemon, DaemonContext, STARTING_LINE};
use logtank_runtime::{accept_bounded, CommonArgs};
use logtank_testkit::{DaemonProcess, Spec};
use serde::{Deserialize, Serialize};

/// The fake daemon's arguments, one per line (the test binary's own argv is the test harness's).
const FAKE_ARGS_ENV: &str = "LOGTANK_TESTKIT_FAKE_ARGS";
/// The fake daemon's published serving line, as a daemon library publishes its own.
const SERVING_PREFIX: &str = "serving fake protocol on ";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FakeConfig {
    server: ServerConfig,
    admin: AdminConfig,
    log: LogConfig,
    io: IoConfig,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            server: ServerConfig::new("127.0.0.1:0", "/nonexistent"),
            admin: AdminConfig::new("127.0.0.1:0"),
            log: LogConfig::default(),
            io: IoConfig::default(),
        }
    }
}

logtank_runtime::impl_daemon_config!(FakeConfig);

struct Fake {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Daemon for Fake {
    type Config = FakeConfig;
    const NAME: &'static str = "fake";

    async fn start(config: FakeConfig, ctx: DaemonContext) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
        let addr = listener.local_addr()?;
        // Connections are accepted and dropped: the tests only need the port to be there.
        let accept = tokio::spawn(accept_bounded(
            listener,
            4,
            "fake",
            ctx.shutdown().clone(),
            |_, _, _| {},
        ));
        log::info!("{SERVING_PREFIX}{addr}");
        Ok(Fake { addr, accept })
    }

    fn status_line(&self) -> String {
        format!("serving {}", self.addr)
    }

    async fn reload(&mut self, _config: FakeConfig) -> anyhow::Result<()> {
        Ok(())
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.accept.await;
        Ok(())
    }
}

#[derive(Parser)]
struct FakeCli {
    #[command(flatten)]
    common: CommonArgs,
}

/// The child side of the re-exec: a no-op test unless the kit started it.
#[test]
fn fake_daemon_child() {
    let Ok(args) = std::env::var(FAKE_ARGS_ENV) else {
        return;
    };
    let argv = std::iter::once("fake").chain(args.split('\n').filter(|a| !a.is_empty()));
    let cli = FakeCli::try_parse_from(argv).unwrap();
    std::process::exit(i32::from(run_named::<Fake>(Fake::NAME, cli.common)));
}

/// The fake daemon with `config` as its config file, in `dir`.
fn spec(dir: &Path, config: &str) -> Spec {
    let path = dir.join("fake.toml");
    std::fs::write(&path, config).unwrap();
    Spec {
        binary: std::env::current_exe().unwrap(),
        args: [
            "--exact",
            "fake_daemon_child",
            "--nocapture",
            "--quiet",
            "--test-threads=1",
        ]
        .map(String::from)
        .to_vec(),
        serving_prefix: SERVING_PREFIX,
        log_path: dir.join("fake.log"),
        env: vec![(FAKE_ARGS_ENV.into(), format!("--config\n{}", path.display()))],
        ..Spec::default()
    }
}

/// The message of a panic caught by `catch_unwind`.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

// Proves `start` returns a daemon that is ready (serving address and admin address from its lines, READY=1
// received), and `stop` ends it with exit 0 after the runtime's STOPPING=1, every message kept.
#[test]
fn start_waits_for_readiness_and_stop_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = DaemonProcess::start(spec(dir.path(), ""));
    TcpStream::connect(fake.addr()).unwrap();
    assert_eq!(fake.status()["status"], format!("serving {}", fake.addr()));
    assert!(fake.notify_messages().iter().any(|m| m.contains("READY=1")));
    assert!(fake.wait_log(SERVING_PREFIX).contains(&fake.addr().to_string()));
    assert!(fake.is_running());
    fake.stop();
    assert!(!fake.is_running());
    assert_eq!(fake.pid(), 0);
    assert!(
        fake.notify_messages().iter().any(|m| m.contains("STOPPING=1")),
        "{:?}",
        fake.notify_messages()
    );
}

// Proves a restart (after SIGTERM or SIGKILL) is a new process with the same spec, ready on its new ports,
// its lines kept apart from the earlier runs' while the log file holds them all.
#[test]
fn restarts_run_the_same_spec_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = DaemonProcess::start(spec(dir.path(), ""));
    let first = fake.pid();
    fake.restart();
    let second = fake.pid();
    assert_ne!(first, second);
    fake.restart_after_kill9();
    assert_ne!(fake.pid(), second);
    TcpStream::connect(fake.addr()).unwrap();
    assert_eq!(fake.log_text().matches(STARTING_LINE).count(), 1);
    assert_eq!(fake.log_file_text().matches(STARTING_LINE).count(), 3);
    fake.kill9();
    fake.start_again();
    assert!(fake.is_running());
}

// Proves `start_failing` returns the exit status and the log of a daemon that refuses to start (a bad
// config: exit 78), and that `start` fails at once, with the log, for the same daemon.
#[test]
fn a_daemon_that_does_not_start_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "[server]\nno_such_key = 1\n";
    let (status, log) = DaemonProcess::start_failing(spec(dir.path(), bad));
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(log.contains("no_such_key"), "{log}");
    let failed = std::panic::catch_unwind(|| DaemonProcess::start(spec(dir.path(), bad)));
    let text = panic_text(failed.unwrap_err());
    assert!(text.contains("exited at start"), "{text}");
    assert!(text.contains("no_such_key"), "{text}");
}

// Proves `wait_log` gives up as soon as the run has ended without the line, instead of waiting it out.
#[test]
fn wait_log_fails_at_once_once_the_run_ended() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = DaemonProcess::start(spec(dir.path(), ""));
    fake.stop();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fake.wait_log("never logged")));
    let text = panic_text(failed.unwrap_err());
    assert!(text.contains("ended without a log line"), "{text}");
}
