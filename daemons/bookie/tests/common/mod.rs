//! Shared by the bookie's integration tests: a cluster of real `logtank-bookie` processes (through
//! logtank-testkit) on fixed loopback ports (a bookie's id is its address, written in its cookie), their
//! data in a temp dir, coordination from logtank-coord's test server (coordd when `LOGTANK_COORDD` names
//! it, Debian's ZooKeeper otherwise or when asked), the root formatted and each bookie formatted as an
//! operator would, and logtank-ledger's client to write and read through them.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use logtank_bookie_proto::{decode_response, encode_request, next_frame, Frame, Request, Response};
use logtank_coord::test_support::{ServerKind, TestServer};
use logtank_coord::{Coord, CoordConfig};
use logtank_ledger::{admin, ClientOptions, Layout, LedgerClient};
use logtank_testkit::{DaemonProcess, Spec};

/// The coordination server most tests run against: coordd when `LOGTANK_COORDD` names it (tests/run does),
/// else Debian's ZooKeeper.
pub fn default_server() -> ServerKind {
    ServerKind::under_test().pop().unwrap()
}

/// A port free right now (bound and released): bookies need fixed ports.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One bookie of a [`Cluster`].
pub struct TestBookie {
    pub process: DaemonProcess,
    pub id: String,
    pub port: u16,
    pub config: PathBuf,
    pub data_root: PathBuf,
    pub journal_dir: PathBuf,
}

impl TestBookie {
    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    pub fn admin(&self) -> SocketAddr {
        self.process.admin()
    }
}

pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub server: TestServer,
    pub coord: Coord,
    pub layout: Layout,
    pub client: LedgerClient,
    pub bookies: Vec<TestBookie>,
    /// Extra sections every bookie's config gets.
    pub extra: String,
    /// Extra `[bookie]` keys every bookie's config gets.
    pub extra_bookie_keys: String,
    pub dir: tempfile::TempDir,
}

/// The `[bookie]` keys every test bookie gets unless the test says otherwise: small segments (so tests
/// cross rolls and compaction has something to do) with frames to fit, a fast disk check.
const BOOKIE_KEYS: [(&str, &str); 3] = [
    ("segment_size_bytes", "4194304"),
    ("frame_bytes_max", "1048576"),
    ("disk_check_interval_ms", "100"),
];

/// The config of a test bookie: fixed port, ephemeral admin port, the [`BOOKIE_KEYS`] with `bookie_keys`
/// (TOML lines `key = value`) on top, and `extra` sections.
pub fn bookie_config(
    data_root: &Path,
    port: u16,
    servers: &str,
    root: &str,
    bookie_keys: &str,
    extra: &str,
) -> String {
    let mut keys: std::collections::BTreeMap<String, String> = BOOKIE_KEYS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for line in bookie_keys.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("bookie keys are `key = value` lines");
        keys.insert(k.trim().to_string(), v.trim().to_string());
    }
    let bookie: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_root = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [io]\nclass = \"none\"\n\n[coord]\nservers = \"{servers}\"\nsession_timeout_ms = 4000\nconnect_timeout_ms = 5000\n\n\
         {extra}\n[bookie]\nledgers_root = \"{root}\"\n{bookie}",
        data_root.display()
    )
}

impl Cluster {
    /// Coordination of `kind`, the root `/ledgers` formatted, `n` bookies formatted and started.
    pub fn start(kind: &ServerKind, n: usize) -> Cluster {
        Cluster::start_with(kind, n, "/ledgers", "", "")
    }

    /// As [`Cluster::start`] with a root, `[bookie]` keys (`bookie_keys`, TOML lines) and other sections
    /// (`extra`) for every bookie.
    pub fn start_with(kind: &ServerKind, n: usize, root: &str, bookie_keys: &str, extra: &str) -> Cluster {
        // The ledger client's log lines (ensemble changes, failed bookies) in the test's output.
        let _ = logtank_runtime::logging::init(
            "bookie-test",
            &logtank_runtime::LogConfig {
                level: std::env::var("LOGTANK_TEST_LOG").unwrap_or_else(|_| "info".into()),
                syslog: None,
            },
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = TestServer::start(kind);
        let coord = rt
            .block_on(Coord::connect(&CoordConfig::with_servers(
                server.connect_string(),
            )))
            .unwrap();
        let layout = Layout::new(root).unwrap();
        rt.block_on(admin::metaformat(&coord.client(), &layout, false))
            .unwrap();
        let options = ClientOptions {
            add_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let client = LedgerClient::new(coord.clone(), layout.clone(), options);
        let mut cluster = Cluster {
            rt,
            server,
            coord,
            layout,
            client,
            bookies: Vec::new(),
            extra: format!("{extra}\n"),
            extra_bookie_keys: bookie_keys.to_string(),
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..n {
            cluster.add_bookie(&[]);
        }
        cluster
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Formats and starts one more bookie (`args`: e.g. `--readonly`); returns its index.
    pub fn add_bookie(&mut self, args: &[&str]) -> usize {
        let data_root = self.dir.path().join(format!("bookie-{}", self.bookies.len() + 1));
        self.add_bookie_at(args, data_root.join("journal"), data_root.join("ledgers"))
    }

    /// As [`Cluster::add_bookie`], with directories of its own (the config must say so too:
    /// `extra_bookie_keys` with `journal_dir` and `ledgers_dir`).
    pub fn add_bookie_with_dirs(&mut self, journal_dir: &Path, ledgers_dir: &Path) -> usize {
        self.add_bookie_at(&[], journal_dir.to_path_buf(), ledgers_dir.to_path_buf())
    }

    fn add_bookie_at(&mut self, args: &[&str], journal_dir: PathBuf, ledgers_dir: PathBuf) -> usize {
        let index = self.bookies.len() + 1;
        let data_root = self.dir.path().join(format!("bookie-{index}"));
        let port = free_port();
        let config = self.write_config(index, &data_root, port);
        self.format_dirs(port, &journal_dir, &ledgers_dir, false).unwrap();
        let process = DaemonProcess::start(self.spec(index, &config, args));
        self.bookies.push(TestBookie {
            process,
            id: format!("127.0.0.1:{port}"),
            port,
            config,
            data_root,
            journal_dir,
        });
        index - 1
    }

    pub fn write_config(&self, index: usize, data_root: &Path, port: u16) -> PathBuf {
        let config = self.dir.path().join(format!("bookie-{index}.toml"));
        let text = bookie_config(
            data_root,
            port,
            &self.server.connect_string(),
            self.layout.root(),
            &self.extra_bookie_keys,
            &self.extra,
        );
        std::fs::write(&config, text).unwrap();
        config
    }

    pub fn spec(&self, index: usize, config: &Path, args: &[&str]) -> Spec {
        let mut all = vec!["--config".to_string(), config.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        Spec {
            binary: env!("CARGO_BIN_EXE_logtank-bookie").into(),
            args: all,
            serving_prefix: logtank_bookie::SERVING_PREFIX,
            log_path: self.dir.path().join(format!("bookie-{index}.log")),
            env: vec![("RUST_BACKTRACE".into(), "1".into())],
            ..Spec::default()
        }
    }

    /// What `logtank bookie format` does, in process.
    pub fn format_dirs(
        &self,
        port: u16,
        journal_dir: &Path,
        ledgers_dir: &Path,
        force: bool,
    ) -> anyhow::Result<()> {
        let identity = logtank_bookie::setup::Identity {
            bookie_id: format!("127.0.0.1:{port}"),
            journal_dir: journal_dir.to_path_buf(),
            ledgers_dir: ledgers_dir.to_path_buf(),
        };
        self.block_on(logtank_bookie::setup::format(
            &self.coord.client(),
            &self.layout,
            &identity,
            force,
        ))?;
        Ok(())
    }

    /// The id of a new, empty ledger of ensemble `e` (for raw protocol tests: a bookie's GC forgets the
    /// entries of ledgers without metadata).
    pub fn new_ledger(&self, e: usize) -> u64 {
        self.block_on(self.client.create(e, e, e, b"pw", Default::default()))
            .unwrap()
            .id()
    }

    /// The writable and readonly bookies registered.
    pub fn registered(&self) -> (Vec<String>, Vec<String>) {
        self.block_on(admin::list_bookies(&self.coord.client(), &self.layout))
            .unwrap()
    }

    /// Writes `count` entries (`entry-<ledger>-<i>`) to a new ledger with many adds in flight, closes it, and
    /// returns its id and the payloads.
    pub fn write_ledger(&self, e: usize, qw: usize, qa: usize, count: usize) -> (u64, Vec<Vec<u8>>) {
        self.block_on(async {
            let writer = self
                .client
                .create(e, qw, qa, b"pw", Default::default())
                .await
                .unwrap();
            let id = writer.id();
            let payloads: Vec<Vec<u8>> = (0..count).map(|i| payload(id, i)).collect();
            let mut pending = Vec::new();
            for p in &payloads {
                pending.push(writer.append(p.clone()).await.unwrap());
            }
            for (i, p) in pending.into_iter().enumerate() {
                assert_eq!(p.wait().await.unwrap(), i as i64, "acknowledged in order");
            }
            let metadata = writer.close().await.unwrap();
            assert_eq!(metadata.last_entry_id, count as i64 - 1);
            (id, payloads)
        })
    }

    /// Reads a ledger back whole (recovery open when `recover`) and returns the payloads.
    pub fn read_ledger(&self, id: u64, recover: bool) -> Vec<Vec<u8>> {
        self.block_on(async {
            let reader = self.client.open(id, b"pw", recover).await.unwrap();
            let last = match reader.last_entry() {
                Some(l) => l,
                None => reader.last_add_confirmed().await.unwrap(),
            };
            reader
                .read_range(0, last)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, p)| p)
                .collect()
        })
    }
}

/// The payload of entry `i` of ledger `ledger`: distinct per entry, varied in length.
pub fn payload(ledger: u64, i: usize) -> Vec<u8> {
    let mut p = format!("entry-{ledger}-{i}-").into_bytes();
    p.extend(std::iter::repeat_n(b'x' + (i % 7) as u8, i * 37 % 900));
    p
}

/// A raw protocol connection, for bad input and for checking statuses byte by byte.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, request: &Request) {
        let mut frame = Vec::new();
        encode_request(&mut frame, request);
        self.stream.write_all(&frame).unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next response; `None` if the bookie closed the connection.
    pub fn recv(&mut self) -> Option<Response> {
        loop {
            if let Ok(Frame::Complete { body, used }) = next_frame(&self.buf, 64 << 20) {
                let response = decode_response(body).unwrap();
                self.buf.drain(..used);
                return Some(response);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading a response: {e}"),
            }
        }
    }

    pub fn call(&mut self, request: &Request) -> Response {
        self.send(request);
        self.recv().expect("a response")
    }
}
