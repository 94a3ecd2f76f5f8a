//! Shared by the CLI's tests against the real daemons: `logtank-writer` and `logtank-indexes` on ephemeral
//! ports over one temp data root that is an active master (`master` and `storage/safe_to_read`), and
//! `logtank` runs with `LOGTANK_WRITER`/`READER`/`MANAGER` pointing at them.
//!
//! The daemon binaries are found beside this crate's `logtank` (target/debug), where `cargo test --workspace`
//! builds them (`CARGO_BIN_EXE_*` only names a crate's own binaries); `LOGTANK_BIN_DIR` points elsewhere.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest any condition is polled for.
pub const WAIT_MAX: Duration = Duration::from_secs(60);

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

/// One daemon process, killed on drop.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `binary` with `args`, its stderr copied to `log`; returns once every `markers` line (e.g.
    /// "serving LogReader on ") has appeared, with the address that follows each.
    pub fn start(binary: &str, args: &[String], log: PathBuf, markers: &[&str]) -> (Daemon, Vec<SocketAddr>) {
        let mut child = Command::new(daemon_binary(binary))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let markers_owned: Vec<String> = markers.iter().map(|m| m.to_string()).collect();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(log_path).unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                for (i, marker) in markers_owned.iter().enumerate() {
                    if let Some(rest) = line.split(marker.as_str()).nth(1) {
                        if let Some(addr) = rest
                            .split_whitespace()
                            .next()
                            .and_then(|a| a.trim_end_matches(',').parse::<SocketAddr>().ok())
                        {
                            let _ = tx.send((i, addr));
                        }
                    }
                }
            }
        });
        let mut addrs = vec![None; markers.len()];
        let deadline = Instant::now() + WAIT_MAX;
        while addrs.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok((i, addr)) => addrs[i] = Some(addr),
                Err(_) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        panic!("{binary} exited at start ({status}):\n{text}");
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{binary} did not start:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        (
            Daemon { child, log },
            addrs.into_iter().map(Option::unwrap).collect(),
        )
    }
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
        let (writer, writer_addrs) = Daemon::start(
            "logtank-writer",
            &common("writer"),
            dir.path().join("writer.log"),
            &["serving LogWriter.send_batch on ", ", admin "],
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
        let (indexes, indexes_addrs) = Daemon::start(
            "logtank-indexes",
            &indexes_args,
            dir.path().join("indexes.log"),
            &["serving LogReader on ", "serving LogManager on ", ", admin "],
        );
        Suite {
            root,
            writer: writer_addrs[0],
            writer_admin: writer_addrs[1],
            reader: indexes_addrs[0],
            manager: indexes_addrs[1],
            indexes_admin: indexes_addrs[2],
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
            .map(|d| std::fs::read_to_string(&d.log).unwrap_or_default())
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
