//! A real ZooKeeper-protocol server for integration tests: Debian's Apache ZooKeeper, and logtank-coordd when
//! `LOGTANK_COORDD` names its binary. Test-only (feature `test-support`); every crate whose tests need a
//! server (this one, the CLI, later the daemons) enables the feature on its dev-dependency, so the recipe for
//! starting a server lives once, next to the client it serves.
//!
//! Each [`TestServer`] runs in its own temp dir on a free loopback port and is killed when dropped. A watchdog
//! (`sh`) kills it too if the test process dies without unwinding (SIGKILL, abort), so no server outlives
//! its test run.
//!
//! [`TcpProxy`] stands between a client and a server so a test can cut the network (a partition) and heal
//! it: the only way to expire a session that works the same against every server.
//!
//! Helpers here panic with a message saying what to do: they run inside tests, where a panic is a failure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `[coord]` section of a daemon under test pointed at `servers`: a session timeout short enough that a
/// test expires it within seconds by cutting a [`TcpProxy`], and a connect timeout to match.
pub fn daemon_coord_section(servers: &str) -> String {
    format!("[coord]\nservers = \"{servers}\"\nsession_timeout_ms = 4000\nconnect_timeout_ms = 2000\n")
}

/// The environment variable naming a logtank-coordd binary to run every server test against as well.
pub const COORDD_ENV: &str = "LOGTANK_COORDD";
/// Set (non-empty), every server test runs against a three-server ZooKeeper ensemble as well, and the
/// ensemble's own tests run ([`ensemble_tests_enabled`]).
pub const ENSEMBLE_ENV: &str = "LOGTANK_ZK_ENSEMBLE";

/// Whether the ensemble tests run: only in their own `tests/run` step ([`ENSEMBLE_ENV`]), where nothing
/// else runs beside them. Three JVMs take nine ports found free a moment before they bind them; beside the
/// rest of the suite (many daemons on ports found the same way) that raced, and other tests failed to
/// bind. A test calls this and returns early (saying so) when it is false.
pub fn ensemble_tests_enabled() -> bool {
    let on = std::env::var_os(ENSEMBLE_ENV).is_some_and(|v| !v.is_empty());
    if !on {
        eprintln!("SKIPPED: the ZooKeeper ensemble tests run with {ENSEMBLE_ENV}=1 (tests/run's coord-ensemble step)");
    }
    on
}
/// Debian's ZooKeeper server jar; its manifest's Class-Path names its dependencies.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// The tick both servers run with: ZooKeeper bounds session timeouts to 2..20 ticks (4 s to 40 s here).
pub const TICK_MS: u64 = 2000;
/// How long a server may take to answer `ruok`: a JVM starting on a busy 2-core machine is slow.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How often a port turned out to be taken before we give up (another process bound it between our probe
/// and the server's bind).
const START_ATTEMPTS_MAX: u32 = 3;
/// The most of a server's log a failure message quotes.
const LOG_TAIL_BYTES_MAX: usize = 4000;

/// Which server to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKind {
    /// Debian's Apache ZooKeeper 3.8 (`apt-get install zookeeper`), standalone.
    ZooKeeper,
    /// A logtank-coordd binary.
    Coordd(PathBuf),
    /// Three Debian ZooKeeper servers in one quorum on loopback (a client port, a peer port and an
    /// election port each): [`TestServer::kill_leader`] and [`TestServer::restart_member`] test what
    /// survives a leader's death.
    ZooKeeperEnsemble,
}

impl ServerKind {
    /// The servers the tests must pass against: ZooKeeper always, coordd too when [`COORDD_ENV`] is set, a
    /// three-server ensemble too when [`ENSEMBLE_ENV`] is.
    ///
    /// # Panics
    /// When ZooKeeper is not installed: a test that silently skipped its server would prove nothing.
    pub fn under_test() -> Vec<ServerKind> {
        check_zookeeper_installed();
        let mut kinds = vec![ServerKind::ZooKeeper];
        // A three-server ensemble as well, when asked (tests/run's coord-ensemble step): three JVMs per test.
        if std::env::var_os(ENSEMBLE_ENV).is_some_and(|v| !v.is_empty()) {
            kinds.push(ServerKind::ZooKeeperEnsemble);
        }
        if let Some(bin) = std::env::var_os(COORDD_ENV).filter(|v| !v.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "{COORDD_ENV}={} is not a file; build it (cargo build -p logtank-coordd) or unset {COORDD_ENV}",
                bin.display()
            );
            kinds.push(ServerKind::Coordd(bin));
        }
        kinds
    }

    pub fn name(&self) -> &'static str {
        match self {
            ServerKind::ZooKeeper => "zookeeper",
            ServerKind::Coordd(_) => "coordd",
            ServerKind::ZooKeeperEnsemble => "zookeeper-ensemble",
        }
    }
}

/// Runs `test` once against each server of [`ServerKind::under_test`], each freshly started.
pub fn for_each_server(mut test: impl FnMut(&TestServer)) {
    for kind in ServerKind::under_test() {
        let server = TestServer::start(&kind);
        eprintln!("--- against {} at {}", kind.name(), server.connect_string());
        test(&server);
    }
}

/// A running server (or ensemble); killed on drop.
#[derive(Debug)]
pub struct TestServer {
    kind: ServerKind,
    /// One for a standalone server; three for [`ServerKind::ZooKeeperEnsemble`].
    members: Vec<Member>,
    // Last, so the directory goes after the processes using it.
    dir: tempfile::TempDir,
}

/// One server process.
#[derive(Debug)]
struct Member {
    /// Its ZooKeeper server id (`myid`), 1-based; 1 for a standalone server.
    id: u32,
    /// `None` while killed ([`TestServer::kill_leader`]).
    child: Option<Child>,
    watchdog: Option<Child>,
    port: u16,
    log: PathBuf,
    /// How to start it again: its config (or data) directory.
    dir: PathBuf,
}

impl Member {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl TestServer {
    /// Starts `kind` on a free loopback port and waits for `ruok` → `imok`.
    ///
    /// # Panics
    /// If the server cannot be started or does not answer within [`START_TIMEOUT`], with its log's tail.
    pub fn start(kind: &ServerKind) -> TestServer {
        if *kind == ServerKind::ZooKeeper {
            check_zookeeper_installed();
        }
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS_MAX {
            let dir = tempfile::Builder::new()
                .prefix(&format!("logtank-{}-", kind.name()))
                .tempdir()
                .expect("creating a temp dir for the test server");
            let members = match kind {
                ServerKind::ZooKeeperEnsemble => spawn_ensemble(dir.path()),
                _ => {
                    let port = free_port();
                    let log = dir.path().join("server.log");
                    let child = spawn(kind, dir.path(), port, &log);
                    vec![Member {
                        id: 1,
                        watchdog: spawn_watchdog(child.id()),
                        child: Some(child),
                        port,
                        log,
                        dir: dir.path().to_path_buf(),
                    }]
                }
            };
            let mut server = TestServer {
                kind: kind.clone(),
                members,
                dir,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("{last_failure}");
    }

    /// The ensemble member that leads now (its id), by `srvr`; `None` for a standalone server or while
    /// there is no quorum.
    pub fn leader(&self) -> Option<u32> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .find(|m| four_letter_word(m.port, "srvr").is_ok_and(|a| a.contains("Mode: leader")))
            .map(|m| m.id)
    }

    /// Kills the ensemble's leader (SIGKILL) and returns its id; the other two elect a new one.
    ///
    /// # Panics
    /// When this is not an ensemble, or no member leads.
    pub fn kill_leader(&mut self) -> u32 {
        assert_eq!(
            self.kind,
            ServerKind::ZooKeeperEnsemble,
            "only an ensemble has a leader to kill"
        );
        let leader = self.leader().expect("an ensemble member that leads");
        self.members
            .iter_mut()
            .find(|m| m.id == leader)
            .expect("the leader is a member")
            .kill();
        leader
    }

    /// Starts a killed ensemble member again and waits until it serves (as a follower, or the leader).
    ///
    /// # Panics
    /// When `id` is not a killed member, or it does not rejoin within [`START_TIMEOUT`].
    pub fn restart_member(&mut self, id: u32) {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.id == id && m.child.is_none())
            .expect("a killed ensemble member");
        let child = spawn_ensemble_member(&member.dir, &member.log);
        member.watchdog = spawn_watchdog(child.id());
        member.child = Some(child);
        if let Err(failure) = self.wait_ready() {
            panic!("{failure}");
        }
    }

    /// The connect string of this server (`127.0.0.1:PORT`; every member's, comma-separated, for an
    /// ensemble).
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The (first member's) client port.
    pub fn port(&self) -> u16 {
        self.members[0].port
    }

    pub fn kind(&self) -> &ServerKind {
        &self.kind
    }

    /// The server's temp dir (its data lives under it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a four-letter word (`ruok`, `srvr`, `cons`, …) and returns the whole answer.
    pub fn four_letter_word(&self, word: &str) -> std::io::Result<String> {
        four_letter_word(self.port(), word)
    }

    /// The data of node `path` as text, or `None` when it does not exist, read by a fresh session standing in
    /// for an index engine or an operator looking. Blocking: for test code outside a runtime.
    ///
    /// # Panics
    /// If the server cannot be reached or the read fails otherwise, or the data is not UTF-8.
    pub fn node_data(&self, path: &str) -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to read a node with");
        runtime.block_on(async {
            let client = zookeeper_client::Client::connect(&self.connect_string())
                .await
                .unwrap_or_else(|e| panic!("connecting to {} to read {path}: {e}", self.connect_string()));
            // A fresh session may land on an ensemble follower behind the leader: sync first.
            let _ = client.sync(path).await;
            match client.get_data(path).await {
                Ok((data, _)) => Some(String::from_utf8(data).expect("node data is text")),
                Err(crate::ZkError::NoNode) => None,
                Err(e) => panic!("get {path}: {e}"),
            }
        })
    }

    /// The end of the server's log (each member's, for an ensemble), for failure messages.
    pub fn log_tail(&self) -> String {
        let each = LOG_TAIL_BYTES_MAX / self.members.len().max(1);
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read(&m.log).unwrap_or_default();
                let start = text.len().saturating_sub(each);
                format!("[server {}]\n{}", m.id, String::from_utf8_lossy(&text[start..]))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls until `ruok` → `imok` and `srvr` reports a mode, the process exits, or [`START_TIMEOUT`]
    /// passes. ZooKeeper answers `imok` before it serves sessions (it closes handshakes with "ZooKeeperServer
    /// not running" for a moment), so `ruok` alone is not readiness.
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            for m in &mut self.members {
                if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                    let name = self.kind.name();
                    return Err(format!(
                        "{name} (server {}) exited at start ({status}); log {}:\n{}",
                        m.id,
                        m.log.display(),
                        String::from_utf8_lossy(&std::fs::read(&m.log).unwrap_or_default())
                    ));
                }
            }
            let ready = self.members.iter().filter(|m| m.child.is_some()).all(|m| {
                four_letter_word(m.port, "ruok").is_ok_and(|a| a == "imok")
                    && four_letter_word(m.port, "srvr").is_ok_and(|a| a.contains("Mode: "))
            });
            if ready {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{} did not answer ruok on {} within {:?}; logs:\n{}",
                    self.kind.name(),
                    self.connect_string(),
                    START_TIMEOUT,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// Sends a four-letter word to a server on loopback and reads the answer to its end.
pub fn four_letter_word(port: u16, word: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Panics, saying how to install it, unless Debian's ZooKeeper server and a JVM are here.
fn check_zookeeper_installed() {
    let java = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        java && Path::new(ZOOKEEPER_JAR).is_file(),
        "these tests run against a real ZooKeeper server, and it is not installed (need `java` and {ZOOKEEPER_JAR}): \
         run tests/compat/setup, or `apt-get install -y zookeeper zookeeper-bin` (tests/run installs it)"
    );
}

/// A port that was free a moment ago. The server binds it itself (it takes a config, not a socket), so a
/// race with another process is possible; `start` retries with a new port if the server then fails.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

fn spawn(kind: &ServerKind, dir: &Path, port: u16, log: &Path) -> Child {
    let log_file = std::fs::File::create(log).expect("creating the test server's log");
    let stderr = log_file.try_clone().expect("cloning the log file handle");
    let mut command = match kind {
        ServerKind::ZooKeeper => zookeeper_command(dir, port),
        ServerKind::Coordd(bin) => coordd_command(bin, dir, port),
        ServerKind::ZooKeeperEnsemble => unreachable!("an ensemble's members start in spawn_ensemble"),
    };
    command
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", kind.name()))
}

fn zookeeper_command(dir: &Path, port: u16) -> Command {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("creating the ZooKeeper data dir");
    let cfg = dir.join("zoo.cfg");
    let text = format!(
        "tickTime={TICK_MS}\n\
         dataDir={}\n\
         clientPort={port}\n\
         clientPortAddress=127.0.0.1\n\
         4lw.commands.whitelist=*\n\
         admin.enableServer=false\n\
         maxClientCnxns=0\n",
        data.display()
    );
    std::fs::write(&cfg, text).expect("writing zoo.cfg");
    java_command("org.apache.zookeeper.server.ZooKeeperServerMain", &cfg, dir)
}

/// A JVM running ZooKeeper's `main_class` on `cfg`.
fn java_command(main_class: &str, cfg: &Path, dir: &Path) -> Command {
    // slf4j-simple, when present, sends the server's log to stderr (our log file) instead of nowhere.
    let mut classpath = vec!["/etc/zookeeper/conf", ZOOKEEPER_JAR];
    if Path::new("/usr/share/java/slf4j-simple.jar").is_file() {
        classpath.push("/usr/share/java/slf4j-simple.jar");
    }
    let mut command = Command::new("java");
    command
        .args([
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dzookeeper.admin.enableServer=false",
            "-cp",
            &classpath.join(":"),
            main_class,
        ])
        .arg(cfg)
        .current_dir(dir);
    command
}

/// The members of a three-server ensemble, each in `dir/server-N` with its `myid`, started.
fn spawn_ensemble(dir: &Path) -> Vec<Member> {
    check_zookeeper_installed();
    // Client, peer and election port of each member.
    let ports: Vec<[u16; 3]> = (0..3).map(|_| [free_port(), free_port(), free_port()]).collect();
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("server.{}=127.0.0.1:{}:{}\n", i + 1, p[1], p[2]))
        .collect();
    (0..3)
        .map(|i| {
            let id = i as u32 + 1;
            let member_dir = dir.join(format!("server-{id}"));
            let data = member_dir.join("data");
            std::fs::create_dir_all(&data).expect("creating an ensemble member's data dir");
            std::fs::write(data.join("myid"), format!("{id}\n")).expect("writing myid");
            let text = format!(
                "tickTime={TICK_MS}\n\
                 initLimit=10\n\
                 syncLimit=5\n\
                 dataDir={}\n\
                 clientPort={}\n\
                 clientPortAddress=127.0.0.1\n\
                 4lw.commands.whitelist=*\n\
                 admin.enableServer=false\n\
                 maxClientCnxns=0\n\
                 {servers}",
                data.display(),
                ports[i][0]
            );
            std::fs::write(member_dir.join("zoo.cfg"), text).expect("writing zoo.cfg");
            let log = member_dir.join("server.log");
            let child = spawn_ensemble_member(&member_dir, &log);
            Member {
                id,
                watchdog: spawn_watchdog(child.id()),
                child: Some(child),
                port: ports[i][0],
                log,
                dir: member_dir,
            }
        })
        .collect()
}

/// Starts (or starts again) the ensemble member configured in `member_dir`, appending to its log.
fn spawn_ensemble_member(member_dir: &Path, log: &Path) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("opening an ensemble member's log");
    let stderr = log_file.try_clone().expect("cloning the log file handle");
    java_command(
        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        &member_dir.join("zoo.cfg"),
        member_dir,
    )
    .stdin(Stdio::null())
    .stdout(log_file)
    .stderr(stderr)
    .spawn()
    .unwrap_or_else(|e| panic!("starting a ZooKeeper ensemble member: {e}"))
}

fn coordd_command(bin: &Path, dir: &Path, port: u16) -> Command {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("creating the coordd data dir");
    let cfg = dir.join("coordd.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_root = \"{}\"\ntick_ms = {TICK_MS}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        data.display()
    );
    std::fs::write(&cfg, text).expect("writing coordd.toml");
    let mut command = Command::new(bin);
    command.arg("--config").arg(&cfg).current_dir(dir);
    command
}

/// A shell loop that kills `child` once this test process is gone, for the deaths Drop never sees.
fn spawn_watchdog(child: u32) -> Option<Child> {
    Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null"#,
            "logtank-test-watchdog",
        ])
        .arg(std::process::id().to_string())
        .arg(child.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// A loopback TCP proxy to one server whose network a test can cut and heal.
///
/// While cut, every proxied connection is closed and new ones are accepted and closed at once: to the client
/// it looks like a server that is unreachable, and to the server like a client that went silent, so the
/// server expires the session after its timeout, exactly as in a real partition.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
}

#[derive(Debug, Default)]
struct ProxyShared {
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both sockets of every live proxied connection, to shut down on `cut`.
    live: Mutex<Vec<TcpStream>>,
}

impl TcpProxy {
    /// Starts a proxy on a free loopback port forwarding to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> TcpProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(ProxyShared::default());
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if accepting.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port)) else {
                    continue;
                };
                forward(&accepting, client, server);
            }
        });
        TcpProxy { addr, shared }
    }

    /// The connect string clients use to go through the proxy.
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// Closes every connection through the proxy and refuses new ones until [`TcpProxy::heal`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let live = std::mem::take(&mut *self.shared.live.lock().unwrap_or_else(|e| e.into_inner()));
        for stream in live {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies both ways on two threads; each direction shuts the other socket's write side when it ends.
fn forward(shared: &ProxyShared, client: TcpStream, server: TcpStream) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
        for s in [&client, &server] {
            if let Ok(s) = s.try_clone() {
                live.push(s);
            }
        }
    }
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
    };
    pipe(client, server2);
    pipe(server, client2);
}
