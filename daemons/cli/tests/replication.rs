//! The writer in bookies mode (`[replication] mode = "bookies"`), with real coordination, real bookies and the
//! real writer and indexes binaries: a machine lost and its log restored onto another data root, a bookie
//! killed under load, fencing of a second writer with the same id, and quorum loss in both modes.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{number_after, start_daemon, stderr, stdout, Daemon};
use logtank_coord::test_support::{ServerKind, TestServer};
use logtank_coord::{Coord, CoordConfig};
use logtank_indexes::{MANAGER_SERVING_PREFIX, READER_SERVING_PREFIX};
use logtank_ledger::{admin, Layout};
use logtank_testkit::{wait_for, Spec};

const PASSWORD: &str = "log-pw";

/// Coordination, bookies, and writers in bookies mode.
struct Cluster {
    rt: tokio::runtime::Runtime,
    server: TestServer,
    coord: Coord,
    bookies: Vec<Daemon>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(kind: &ServerKind, bookies: usize) -> Cluster {
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
        let layout = Layout::new("/ledgers").unwrap();
        rt.block_on(admin::metaformat(&coord.client(), &layout, false))
            .unwrap();
        let mut cluster = Cluster {
            rt,
            server,
            coord,
            bookies: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        for n in 0..bookies {
            cluster.add_bookie(n);
        }
        cluster
    }

    fn add_bookie(&mut self, n: usize) {
        let port = free_port();
        let data = self.dir.path().join(format!("bookie-{n}"));
        let config = self.dir.path().join(format!("bookie-{n}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_root = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [io]\nclass = \"none\"\n[coord]\nservers = \"{}\"\nsession_timeout_ms = 4000\n\
                 [bookie]\nsegment_size_bytes = 8388608\n",
                data.display(),
                self.server.connect_string()
            ),
        )
        .unwrap();
        let identity = logtank_bookie::setup::Identity {
            bookie_id: format!("127.0.0.1:{port}"),
            journal_dir: data.join("journal"),
            ledgers_dir: data.join("ledgers"),
        };
        let layout = Layout::new("/ledgers").unwrap();
        self.rt
            .block_on(logtank_bookie::setup::format(
                &self.coord.client(),
                &layout,
                &identity,
                false,
            ))
            .unwrap();
        self.bookies.push(start_daemon(
            "logtank-bookie",
            vec!["--config".into(), config.display().to_string()],
            self.dir.path().join(format!("bookie-{n}.log")),
            logtank_bookie::SERVING_PREFIX,
        ));
    }

    /// A writer in bookies mode on `root` (a master's data root: the indexes reader can run on it too).
    fn writer(&self, name: &str, root: &Path, writer_id: &str, extra: &str) -> Daemon {
        self.writer_with(name, root, writer_id, extra, &[])
    }

    /// [`Cluster::writer`] with `--set KEY=VALUE` flags.
    fn writer_with(&self, name: &str, root: &Path, writer_id: &str, extra: &str, sets: &[&str]) -> Daemon {
        let config = self.writer_config(name, root, writer_id, extra);
        let mut args = vec!["--config".to_string(), config.display().to_string()];
        for set in sets {
            args.extend(["--set".to_string(), set.to_string()]);
        }
        start_daemon(
            "logtank-writer",
            args,
            self.dir.path().join(format!("{name}.log")),
            logtank_writer::SERVING_PREFIX,
        )
    }

    /// The config file of a writer in bookies mode on `root`.
    fn writer_config(&self, name: &str, root: &Path, writer_id: &str, extra: &str) -> std::path::PathBuf {
        std::fs::create_dir_all(root.join("storage")).unwrap();
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ndata_root = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [io]\nclass = \"none\"\n[writer]\nsegment_size_bytes = 262144\nbatch_bytes_max = 200000\nrecord_bytes_max = 100000\n\
                 [coord]\nservers = \"{}\"\nsession_timeout_ms = 4000\n\
                 [replication]\nmode = \"bookies\"\nwriter_id = \"{writer_id}\"\npassword = \"{PASSWORD}\"\n\
                 add_timeout_ms = 3000\n{extra}\n",
                root.display(),
                self.server.connect_string()
            ),
        )
        .unwrap();
        config
    }

    /// Runs a writer that must refuse to start: its exit code and stderr.
    fn writer_refused(&self, name: &str, root: &Path, writer_id: &str, extra: &str) -> (Option<i32>, String) {
        let config = self.writer_config(name, root, writer_id, extra);
        let mut child = std::process::Command::new(common::daemon_binary("logtank-writer"))
            .args(["--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("the writer on {} started; it should have refused", root.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        (output.status.code(), stderr(&output))
    }

    /// The indexes reader as the active master of `root`.
    fn indexes(&self, name: &str, root: &Path) -> Daemon {
        self.indexes_with(name, root, &[])
    }

    /// [`Cluster::indexes`] with extra `--set KEY=VALUE`.
    fn indexes_with(&self, name: &str, root: &Path, set: &[&str]) -> Daemon {
        std::fs::create_dir_all(root.join("storage")).unwrap();
        std::fs::write(root.join("master"), "").unwrap();
        std::fs::write(root.join("storage/safe_to_read"), "").unwrap();
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, "").unwrap();
        Daemon::start(Spec {
            binary: common::daemon_binary("logtank-indexes"),
            args: [
                "--config",
                &config.display().to_string(),
                "--data-root",
                &root.display().to_string(),
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--manager-listen",
                "127.0.0.1:0",
                "--set",
                "io.class=none",
                "--set",
                "indexes.marker_poll_ms=50",
                "--set",
                "pipeline.idle_ms=50",
            ]
            .map(String::from)
            .into_iter()
            .chain(set.iter().flat_map(|kv| ["--set".to_string(), kv.to_string()]))
            .collect(),
            serving_prefix: READER_SERVING_PREFIX,
            also_serving: vec![MANAGER_SERVING_PREFIX],
            log_path: self.dir.path().join(format!("{name}.log")),
            ..Spec::default()
        })
    }

    /// `logtank ARGS` pointed at this cluster's coordination.
    fn logtank(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_logtank"))
            .args(args)
            .env("LOGTANK_COORD", self.server.connect_string())
            .output()
            .unwrap()
    }

    fn log_ledgers(&self, writer_id: &str) -> logtank_ledger::logs::LogMetadata {
        self.rt
            .block_on(logtank_ledger::logs::read_log(&self.coord.client(), writer_id))
            .unwrap()
            .expect("the writer's log exists")
            .0
    }
}

fn generate(writer: SocketAddr, index: &str, n: u64, seed: u64, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args([
            "generate",
            index,
            &n.to_string(),
            "--seed",
            &seed.to_string(),
            "--writer",
            &writer.to_string(),
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn recover(reader: SocketAddr, index: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args(["recover", index, "--retry", "--reader", &reader.to_string()])
        .output()
        .unwrap()
}

fn documents(text: &str) -> u64 {
    number_after(text, "documents after replay: ")
}

// Proves machine loss costs nothing acknowledged, against coordd and against Debian's ZooKeeper: after
// acknowledged load, the writer is killed and its whole data root deleted; `logtank raw restore` rebuilds
// the raw log from the ledgers onto another data root, where the indexes reader serves every acknowledged
// record (the replay gives exactly the documents the generator says it must).
#[test]
fn a_lost_machine_s_log_is_restored_from_the_ledgers() {
    for kind in ServerKind::under_test() {
        eprintln!("--- against {}", kind.name());
        let cluster = Cluster::start(&kind, 3);
        let root = cluster.dir.path().join("lost-host");
        let mut writer = cluster.writer("writer", &root, "w1:15000", "");
        let mut expected = Vec::new();
        for (index, seed) in [("alpha", 1), ("beta", 2)] {
            let out = generate(
                writer.addr(),
                index,
                3000,
                seed,
                &["--connections", "4", "--record-bytes", "300"],
            );
            assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
            expected.push((index, documents(&stdout(&out))));
        }
        let status = writer.status();
        assert!(
            status["replication_state"]
                .as_str()
                .unwrap()
                .starts_with("in step"),
            "{status}"
        );
        writer.kill9();
        std::fs::remove_dir_all(&root).unwrap();

        let restored = cluster.dir.path().join("replacement-host");
        let out = cluster.logtank(&[
            "raw",
            "restore",
            "--writer",
            "w1:15000",
            "--data-root",
            restored.to_str().unwrap(),
            "--password",
            PASSWORD,
        ]);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).starts_with("restored "), "{}", stdout(&out));
        let indexes = cluster.indexes("indexes", &restored);
        for (index, docs) in &expected {
            let out = recover(indexes.addr(), index);
            assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
            assert_eq!(documents(&stdout(&out)), *docs, "{index}: {}", stdout(&out));
        }
        let log = cluster.log_ledgers("w1:15000");
        assert!(log.ledgers.len() > 1, "segments roll into new ledgers: {log:?}");
        // The replacement host's writer takes the log over with the same id and carries on: its raw log and
        // the ledgers stay one log.
        let writer = cluster.writer("replacement", &restored, "w1:15000", "");
        let out = generate(writer.addr(), "gamma", 500, 3, &[]);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let out = recover(indexes.addr(), "gamma");
        assert_eq!(
            number_after(&stdout(&out), "recovered gamma: "),
            500,
            "{}",
            stdout(&out)
        );
        let ledgers = cluster.log_ledgers("w1:15000").ledgers;
        assert!(
            ledgers.len() > log.ledgers.len(),
            "the replacement writes a new ledger"
        );
    }
}

// Proves a bookie killed under load from several clients costs no client an error: every acknowledged
// record is read back, and the ledger's metadata shows the ensemble change.
#[test]
fn a_bookie_killed_under_load_is_replaced_without_errors() {
    let mut cluster = Cluster::start(&default_server(), 4);
    let root = cluster.dir.path().join("host");
    // One segment, so one ledger, for the whole load: the ledger open at the kill holds the victim and gets
    // the next entries (with small segments a roll could start a ledger without it first).
    let writer = cluster.writer_with(
        "writer",
        &root,
        "w2:15000",
        "",
        &["writer.segment_size_bytes=67108864"],
    );
    let addr = writer.addr();
    let load = std::thread::spawn(move || {
        generate(
            addr,
            "gamma",
            20000,
            7,
            &[
                "--connections",
                "4",
                "--record-bytes",
                "200",
                "--batch-size",
                "20",
            ],
        )
    });
    wait_for("the load to reach the bookies", Duration::from_secs(30), || {
        writer.status()["replication_entries"].as_u64().unwrap_or(0) > 50
    });
    let log = cluster.log_ledgers("w2:15000");
    let open = log.open_ledger().unwrap().ledger_id;
    let ensemble = cluster.rt.block_on(logtank_ledger_metadata(&cluster, open));
    let victim = cluster
        .bookies
        .iter()
        .position(|b| ensemble.contains(&b.addr().to_string()))
        .unwrap();
    cluster.bookies[victim].kill9();
    let out = load.join().unwrap();
    assert!(
        out.status.success(),
        "a client saw an error: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let docs = documents(&stdout(&out));
    let indexes = cluster.indexes("indexes", &root);
    let recovered = recover(indexes.addr(), "gamma");
    assert_eq!(documents(&stdout(&recovered)), docs, "{}", stdout(&recovered));
    // Some ledger of the log changed its ensemble.
    let changed = cluster.log_ledgers("w2:15000").ledgers.iter().any(|l| {
        let m = cluster.rt.block_on(fetch_metadata(&cluster, l.ledger_id));
        m.ensembles.len() > 1
    });
    assert!(changed, "no ledger of the log shows an ensemble change");
    assert!(writer.status()["replication_state"]
        .as_str()
        .unwrap()
        .starts_with("in step"));
}

fn default_server() -> ServerKind {
    ServerKind::under_test().pop().unwrap()
}

async fn fetch_metadata(cluster: &Cluster, ledger: u64) -> logtank_ledger::LedgerMetadata {
    let client = logtank_ledger::LedgerClient::new(
        cluster.coord.clone(),
        Layout::new("/ledgers").unwrap(),
        Default::default(),
    );
    client.metadata(ledger).await.unwrap()
}

async fn logtank_ledger_metadata(cluster: &Cluster, ledger: u64) -> Vec<String> {
    fetch_metadata(cluster, ledger).await.current_ensemble().to_vec()
}

// Proves fencing: a second writer process with the same writer id takes the log over (recovering its open
// ledger); the first one's next batch fails, naming the takeover, and the second one's are accepted.
#[test]
fn a_second_writer_with_the_same_id_fences_the_first() {
    let cluster = Cluster::start(&default_server(), 3);
    let first = cluster.writer("first", &cluster.dir.path().join("a"), "w3:15000", "");
    let out = generate(first.addr(), "delta", 200, 1, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = cluster.writer("second", &cluster.dir.path().join("b"), "w3:15000", "");
    let out = generate(first.addr(), "delta", 10, 2, &[]);
    assert!(!out.status.success(), "the fenced writer still acknowledges");
    assert!(stderr(&out).contains("taken over"), "{}", stderr(&out));
    let out = generate(second.addr(), "delta", 200, 3, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(first.status()["replication_state"]
        .as_str()
        .unwrap()
        .starts_with("fenced"));
}

// Proves quorum loss in both modes: with two of three bookies stopped, `refuse` refuses batches with a clear
// error and accepts them again once the bookies are back; `local` acknowledges them (and counts them), and
// replicates them once the bookies are back.
#[test]
fn quorum_loss_refuses_or_acknowledges_locally_and_resumes() {
    for (mode, id) in [("refuse", "w4:15000"), ("local", "w5:15000")] {
        let mut cluster = Cluster::start(&default_server(), 3);
        let root = cluster.dir.path().join(mode);
        let writer = cluster.writer(mode, &root, id, &format!("on_quorum_loss = \"{mode}\""));
        assert!(generate(writer.addr(), "eps", 100, 1, &[]).status.success());
        cluster.bookies[0].stop();
        cluster.bookies[1].stop();
        let out = generate(writer.addr(), "eps", 50, 2, &[]);
        match mode {
            "refuse" => {
                assert!(!out.status.success(), "acknowledged without a quorum");
                assert!(stderr(&out).contains("replication"), "{}", stderr(&out));
            }
            _ => {
                assert!(out.status.success(), "{}", stderr(&out));
                assert!(
                    writer.status()["replication_local_only_batches"]
                        .as_u64()
                        .unwrap()
                        > 0
                );
            }
        }
        cluster.bookies[0].start_again();
        cluster.bookies[1].start_again();
        wait_for("replication back in step", Duration::from_secs(60), || {
            writer.status()["replication_state"]
                .as_str()
                .unwrap_or("")
                .starts_with("in step")
        });
        let out = generate(writer.addr(), "eps", 100, 3, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

// Proves the writer refuses to start on a raw log that is not its log's (exit 78, so systemd does not
// restart it in a loop, with what to do): an empty raw log on a replacement host, when the log does not
// start at record 1 (an empty one where it does is filled from the ledgers), and another host's raw log
// under the same writer id.
#[test]
fn a_raw_log_that_is_not_the_log_s_is_refused_at_start() {
    let cluster = Cluster::start(&default_server(), 3);
    let root = cluster.dir.path().join("a");
    // The log w7 starts at raw record 31 (one per batch): the raw log had 30 (replicated as w6b) before.
    let writer = cluster.writer("before", &root, "w6b:15000", "");
    assert!(generate(writer.addr(), "zeta", 300, 1, &["--batch-size", "10"])
        .status
        .success());
    drop(writer);
    let writer = cluster.writer("first", &root, "w7:15000", "");
    assert!(generate(writer.addr(), "zeta", 300, 2, &["--batch-size", "10"])
        .status
        .success());
    drop(writer);
    assert_eq!(cluster.log_ledgers("w7:15000").ledgers[0].first_seq, 31);

    let (code, err) = cluster.writer_refused("empty", &cluster.dir.path().join("empty"), "w7:15000", "");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("logtank raw restore --writer w7:15000"), "{err}");
    // Another host's raw log, 50 raw records of its own: its record 50 is not the log's.
    let other = cluster.dir.path().join("other");
    let writer = cluster.writer("other", &other, "w8:15000", "");
    assert!(generate(writer.addr(), "zeta", 500, 3, &["--batch-size", "10"])
        .status
        .success());
    drop(writer);
    let (code, err) = cluster.writer_refused("other-again", &other, "w7:15000", "");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("another host's"), "{err}");
}

// Proves a batch larger than a bookie entry may be is refused in bookies mode, naming the limit, and
// leaves nothing in the raw log or the ledgers; smaller batches go on being accepted.
#[test]
fn a_batch_too_large_for_an_entry_is_refused() {
    let cluster = Cluster::start(&default_server(), 3);
    let root = cluster.dir.path().join("host");
    let writer = cluster.writer("writer", &root, "w9:15000", "entry_bytes_max = 2000");
    let out = generate(
        writer.addr(),
        "eta",
        10,
        1,
        &["--batch-size", "10", "--record-bytes", "300"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("replication.entry_bytes_max (2000)"),
        "{}",
        stderr(&out)
    );
    let out = generate(
        writer.addr(),
        "eta",
        10,
        2,
        &["--batch-size", "1", "--record-bytes", "300"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writer.status()["replication_entries"].as_u64(), Some(10));
}

// Proves retention: once the indexes daemon has dealt raw segments and removed them from raw history, the
// writer deletes the ledgers that held only those records (from the log and from the bookies), and the log
// stays whole from its new first record on.
#[test]
fn ledgers_of_removed_raw_segments_are_deleted() {
    let cluster = Cluster::start(&default_server(), 3);
    let root = cluster.dir.path().join("host");
    let writer = cluster.writer("writer", &root, "w10:15000", "retention_check_interval_ms = 200");
    let out = generate(writer.addr(), "theta", 4000, 1, &["--record-bytes", "300"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = cluster.log_ledgers("w10:15000").ledgers;
    assert!(before.len() > 2, "several segments, several ledgers: {before:?}");
    let _indexes = cluster.indexes_with("indexes", &root, &["pipeline.raw_history_retention_hours=0"]);
    wait_for("retention deletes ledgers", Duration::from_secs(60), || {
        cluster.log_ledgers("w10:15000").ledgers[0].first_seq > 1
    });
    let after = cluster.log_ledgers("w10:15000").ledgers;
    let deleted = &before[..before
        .iter()
        .position(|l| l.ledger_id == after[0].ledger_id)
        .unwrap()];
    assert!(!deleted.is_empty());
    let client = logtank_ledger::LedgerClient::new(
        cluster.coord.clone(),
        Layout::new("/ledgers").unwrap(),
        Default::default(),
    );
    // The log drops the ledgers first (so it never names a deleted one), then they are deleted.
    for l in deleted {
        wait_for(
            &format!("ledger {} to be deleted", l.ledger_id),
            Duration::from_secs(30),
            || {
                matches!(
                    cluster.rt.block_on(client.metadata(l.ledger_id)),
                    Err(logtank_ledger::LedgerError::NoSuchLedger { .. })
                )
            },
        );
    }
    let oldest_local = std::fs::read_dir(root.join("storage/raw/live"))
        .unwrap()
        .chain(std::fs::read_dir(root.join("storage/raw/history")).unwrap())
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".journal")?
                .parse::<u64>()
                .ok()
        })
        .min()
        .unwrap();
    assert!(
        after[0].first_seq <= oldest_local,
        "a ledger went whose records are still here: {after:?}"
    );
    assert!(writer.status()["replication_state"]
        .as_str()
        .unwrap()
        .starts_with("in step"));
}

fn cycles() -> usize {
    std::env::var("LOGTANK_REPLICATION_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Every record of a raw log directory (no process has it open), in order.
fn raw_records(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let (reader, _) =
        logtank_journal::Reader::open_dir(dir, 1, logtank_journal::frame::PAYLOAD_BYTES_MAX).unwrap();
    reader.map(|r| r.map(|r| (r.seq, r.payload)).unwrap()).collect()
}

// Proves kill -9 of a writer in bookies mode loses nothing (`LOGTANK_REPLICATION_CRASH_CYCLES` cycles, 30 in
// tests/run): clients send one-record batches under load while the writer is killed and restarted; at the
// end every acknowledged batch is in the local raw log and in the ledgers, each whole, and the two logs are
// the same records with the same sequence numbers.
#[test]
fn kill9_of_a_writer_in_bookies_mode_keeps_both_logs_whole() {
    use logtank_thrift::{Client, ClientConfig, LogBatch, LogRecord};
    use std::sync::{Arc, Mutex};

    let cluster = Cluster::start(&default_server(), 3);
    let root = cluster.dir.path().join("host");
    let mut writer = cluster.writer("writer", &root, "w6:15000", "");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    for cycle in 0..cycles() {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..3)
            .map(|c| {
                let (addr, acked, stop) = (writer.addr(), acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let Ok(mut client) = Client::connect(addr, &ClientConfig::default()) else {
                        return;
                    };
                    for i in 0.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        let docid = format!("cycle{cycle}-client{c}-batch{i}");
                        let record = LogRecord {
                            index_code: Some("kill".into()),
                            docid: Some(docid.clone()),
                            fields: Some([("text".to_string(), "x".repeat(100))].into_iter().collect()),
                            ..LogRecord::default()
                        };
                        match client.send_batch(&LogBatch {
                            records: vec![record],
                        }) {
                            Ok(()) => acked.lock().unwrap().push(docid),
                            Err(_) => return, // the writer is gone
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + (cycle as u64 * 37) % 300));
        writer.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        writer.start_again();
        assert!(
            writer.status()["replication_state"]
                .as_str()
                .unwrap()
                .starts_with("in step"),
            "cycle {cycle}: {}",
            writer.status()
        );
    }
    writer.stop();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no batch was ever acknowledged");
    let local = raw_records(&root.join("storage/raw/live"));
    let restored = cluster.dir.path().join("restored");
    let out = cluster.logtank(&[
        "raw",
        "restore",
        "--writer",
        "w6:15000",
        "--data-root",
        restored.to_str().unwrap(),
        "--password",
        PASSWORD,
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let replicated = raw_records(&restored.join("storage/raw/live"));
    // The log started with the first record replicated: the two agree from there on, record for record.
    let first = replicated.first().map_or(0, |r| r.0);
    let local_from: Vec<_> = local.iter().filter(|r| r.0 >= first).cloned().collect();
    assert_eq!(
        local_from.len(),
        replicated.len(),
        "the local log and the ledgers hold different records"
    );
    assert!(
        local_from == replicated,
        "a record differs between the local log and the ledgers"
    );
    let contains = |records: &[(u64, Vec<u8>)], docid: &str| {
        records
            .iter()
            .any(|(_, p)| p.windows(docid.len()).any(|w| w == docid.as_bytes()))
    };
    for docid in &acked {
        assert!(
            contains(&local, docid),
            "{docid} acknowledged but not in the local log"
        );
        assert!(
            contains(&replicated, docid),
            "{docid} acknowledged but not in the ledgers"
        );
    }
    eprintln!(
        "{} batches acknowledged over {} kill -9 cycles, {} records in both logs",
        acked.len(),
        cycles(),
        replicated.len()
    );
}
