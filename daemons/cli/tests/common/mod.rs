//! Shared by the CLI's tests against the real daemons: `logtank-writer` and `logtank-indexes` on ephemeral
//! ports over one temp data root that is an active master (`master` and `storage/safe_to_read`), and
//! `logtank` runs with `LOGTANK_WRITER`/`READER`/`MANAGER` pointing at them.
//!
//! The daemon binaries are found beside this crate's `logtank` (target/debug), where `cargo test --workspace`
//! builds them (`CARGO_BIN_EXE_*` only names a crate's own binaries); `LOGTANK_BIN_DIR` points elsewhere.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use logtank_indexes::{MANAGER_SERVING_PREFIX, READER_SERVING_PREFIX};
use logtank_testkit::Spec;

/// A daemon process (logtank-testkit's), killed on drop.
pub use logtank_testkit::DaemonProcess as Daemon;
pub use logtank_testkit::WAIT_MAX;

/// Where the daemon binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOGTANK_BIN_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_BIN_EXE_logtank"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The path of a daemon binary; panics with what to do when it is not built.
pub fn daemon_binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p logtank-writer -p logtank-indexes -p logtank-coordd` \
         (cargo test --workspace builds them), or set LOGTANK_BIN_DIR",
        path.display()
    );
    path
}

/// Starts the daemon `binary` (found by [`daemon_binary`]) with `args`, its stderr copied to `log`; returns
/// once it is ready, with the address of its `serving_prefix` line as `addr()`.
pub fn start_daemon(binary: &str, args: Vec<String>, log: PathBuf, serving_prefix: &'static str) -> Daemon {
    Daemon::start(Spec {
        binary: daemon_binary(binary),
        args,
        serving_prefix,
        log_path: log,
        ..Spec::default()
    })
}

/// A writer and an indexes reader sharing one data root, as on a master.
pub struct Suite {
    pub root: PathBuf,
    pub writer: SocketAddr,
    pub reader: SocketAddr,
    pub manager: SocketAddr,
    pub writer_admin: SocketAddr,
    pub indexes_admin: SocketAddr,
    daemons: Vec<Daemon>,
    _dir: tempfile::TempDir,
}

impl Suite {
    /// Starts both daemons; `writer_set` are extra `--set KEY=VALUE` for the writer.
    pub fn start(writer_set: &[&str]) -> Suite {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("storage")).unwrap();
        std::fs::write(root.join("master"), "").unwrap();
        std::fs::write(root.join("storage/safe_to_read"), "").unwrap();
        let common = |name: &str| -> Vec<String> {
            let config = dir.path().join(format!("{name}.toml"));
            std::fs::write(&config, "").unwrap();
            let mut args: Vec<String> = vec![
                "--config".into(),
                config.display().to_string(),
                "--data-root".into(),
                root.display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--admin-listen".into(),
                "127.0.0.1:0".into(),
                "--set".into(),
                "io.class=none".into(),
            ];
            if name == "writer" {
                for set in writer_set {
                    args.extend(["--set".to_string(), set.to_string()]);
                }
            }
            args
        };
        let writer = start_daemon(
            "logtank-writer",
            common("writer"),
            dir.path().join("writer.log"),
            logtank_writer::SERVING_PREFIX,
        );
        let mut indexes_args = common("indexes");
        indexes_args.extend(
            [
                "--manager-listen",
                "127.0.0.1:0",
                "--set",
                "indexes.marker_poll_ms=50",
                "--set",
                "pipeline.idle_ms=50",
            ]
            .map(String::from),
        );
        let indexes = Daemon::start(Spec {
            binary: daemon_binary("logtank-indexes"),
            args: indexes_args,
            serving_prefix: READER_SERVING_PREFIX,
            also_serving: vec![MANAGER_SERVING_PREFIX],
            log_path: dir.path().join("indexes.log"),
            ..Spec::default()
        });
        Suite {
            root,
            writer: writer.addr(),
            writer_admin: writer.admin(),
            reader: indexes.addr(),
            manager: indexes.addr_of(MANAGER_SERVING_PREFIX),
            indexes_admin: indexes.admin(),
            daemons: vec![writer, indexes],
            _dir: dir,
        }
    }

    /// `logtank ARGS` against this suite.
    pub fn logtank(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_logtank"));
        command
            .env("LOGTANK_WRITER", self.writer.to_string())
            .env("LOGTANK_READER", self.reader.to_string())
            .env("LOGTANK_MANAGER", self.manager.to_string())
            .stdin(Stdio::null());
        command
    }

    /// Runs `logtank ARGS`, asserting success; its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let output = self.logtank().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "logtank {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(Daemon::log_file_text)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The number after `prefix` in `text` ("recovered demo: 1000 records" with prefix "recovered demo: ").
pub fn number_after(text: &str, prefix: &str) -> u64 {
    let rest = text
        .split(prefix)
        .nth(1)
        .unwrap_or_else(|| panic!("{prefix:?} not in:\n{text}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in:\n{text}"))
}
