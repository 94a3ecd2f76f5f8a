//! `logtank sync` with real processes on one machine: a master (`logtank-writer` + `logtank-indexes`, its
//! storage exported by a real `rsync --daemon` with the shipped module definition) and a slave (its own
//! `logtank-writer`) that receive the same batches, as the API sends them; the slave copies and adopts the
//! master's snapshot, then is promoted and serves every acknowledged record.
//!
//! Needs Debian's rsync (`apt-get install rsync`; tests/run installs it).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin_dir, start_daemon, stderr, Daemon, WAIT_MAX};
use logtank_coord::test_support::{ServerKind, TestServer};
use logtank_storage::merge::{apply, Docs};
use logtank_storage::SegmentName;
use logtank_thrift::{Client, ClientConfig, LogBatch, LogPageToken, LogRecord};

const INDEXES: [&str; 3] = ["alpha", "beta", "gamma"];

fn check_rsync() {
    let ok = Command::new("rsync")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "rsync is not installed: apt-get install rsync (tests/run does)"
    );
}

/// An empty config file, so no /etc/logtank file leaks in.
fn empty_config(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, "").unwrap();
    path.display().to_string()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A writer on `root` with small raw segments, so there is plenty to deal and to cut.
fn start_writer(root: &Path, dir: &Path, name: &str) -> (Daemon, SocketAddr) {
    let mut args = strings(&["--config", &empty_config(dir, name), "--data-root"]);
    args.push(root.display().to_string());
    args.extend(strings(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--set",
        "io.class=none",
        "--set",
        "writer.segment_size_bytes=8192",
        "--set",
        "writer.batch_bytes_max=4096",
    ]));
    let daemon = start_daemon(
        "logtank-writer",
        args,
        dir.join(format!("{name}.log")),
        logtank_writer::SERVING_PREFIX,
    );
    let addr = daemon.addr();
    (daemon, addr)
}

/// An indexes reader on `root` with a pipeline that sorts and optimizes early; registered in `coord`.
fn start_indexes(root: &Path, dir: &Path, name: &str, coord: Option<&str>) -> (Daemon, SocketAddr) {
    let mut args = strings(&["--config", &empty_config(dir, name), "--data-root"]);
    args.push(root.display().to_string());
    args.extend(strings(&[
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
        "--set",
        "pipeline.sort_unsorted_segments_max=3",
        "--set",
        "pipeline.optimize_unoptimized_segments_min=1",
    ]));
    if let Some(servers) = coord {
        args.extend(["--set".to_string(), format!("coord.servers={servers}")]);
    }
    let daemon = start_daemon(
        "logtank-indexes",
        args,
        dir.join(format!("{name}.log")),
        logtank_indexes::READER_SERVING_PREFIX,
    );
    let addr = daemon.addr();
    (daemon, addr)
}

/// The master's storage served by `rsync --daemon` with the module of etc/rsyncd.conf, moved to a
/// temp dir and a free port (and no chroot: the test need not be root).
struct RsyncDaemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RsyncDaemon {
    fn start(storage: &Path, dir: &Path) -> RsyncDaemon {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/rsyncd.conf");
        let shipped = std::fs::read_to_string(shipped).unwrap();
        let mut conf = String::new();
        for line in shipped.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("port =") {
                continue; // --port below
            } else if trimmed.starts_with("lock file =") {
                conf.push_str(&format!("lock file = {}\n", dir.join("rsyncd.lock").display()));
            } else if trimmed.starts_with("path =") {
                conf.push_str(&format!("    path = {}\n", storage.display()));
            } else {
                conf.push_str(line);
                conf.push('\n');
            }
        }
        assert!(conf.contains("read only = yes") && conf.contains("use chroot = no"));
        let config = dir.join("rsyncd.conf");
        std::fs::write(&config, conf).unwrap();
        let log = dir.join("rsyncd.log");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", config.display()))
            .arg(format!("--port={port}"))
            .arg("--address=127.0.0.1")
            .arg(format!("--log-file={}", log.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + WAIT_MAX;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "rsync --daemon exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "rsync --daemon did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        RsyncDaemon { child, port, log }
    }
}

/// Batch `i`: adds, updates and deletes over the three indexes, about 1 KB.
fn batch(i: u64) -> Vec<LogRecord> {
    (0..4u64)
        .map(|r| {
            let n = i * 4 + r;
            let deleted = n % 11 == 5;
            LogRecord {
                index_code: Some(INDEXES[(n % 3) as usize].into()),
                docid: Some(format!("doc-{}", (i * 7 + r) % 23)),
                deleted,
                fields: (!deleted && n % 5 != 3)
                    .then(|| [("text".to_string(), format!("v{i}-{r} {}", "x".repeat(150)))].into()),
                variables: (n % 3 == 1).then(|| [((n % 4) as i32, i as f64)].into()),
                categories: (n % 7 == 2).then(|| [("colour".to_string(), format!("c{}", n % 5))].into()),
                ..LogRecord::default()
            }
        })
        .collect()
}

/// Sends the same batches to every writer, as the API does, and applies them to the model.
struct Sender {
    clients: Vec<Client>,
    next: u64,
    model: BTreeMap<String, Docs>,
}

impl Sender {
    fn new(writers: &[SocketAddr]) -> Sender {
        Sender {
            clients: writers
                .iter()
                .map(|w| Client::connect(w, &ClientConfig::default()).unwrap())
                .collect(),
            next: 0,
            model: BTreeMap::new(),
        }
    }

    /// `n` batches, `gap` apart (the writers stamp them: the slave's raw log must span time).
    fn send(&mut self, n: u64, gap: Duration) {
        for _ in 0..n {
            let records = batch(self.next);
            self.next += 1;
            for client in &mut self.clients {
                client
                    .send_batch(&LogBatch {
                        records: records.clone(),
                    })
                    .unwrap();
            }
            for record in &records {
                let code = record.index_code.clone().unwrap();
                apply(self.model.entry(code).or_default(), record);
            }
            std::thread::sleep(gap);
        }
    }

    /// Stops sending to the master (its writer is going away).
    fn only_first(&mut self) {
        self.clients.truncate(1);
    }
}

/// Per-index segment files under a storage: (index, dir, name).
fn segment_files(storage: &Path) -> BTreeSet<(String, String, String)> {
    let mut files = BTreeSet::new();
    let Ok(indexes) = std::fs::read_dir(storage.join("indexes")) else {
        return files;
    };
    for index in indexes {
        let index = index.unwrap();
        for dir in ["segments", "optimized"] {
            let Ok(entries) = std::fs::read_dir(index.path().join(dir)) else {
                continue;
            };
            for entry in entries {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                if SegmentName::parse(&name).is_some() {
                    files.insert((
                        index.file_name().to_string_lossy().into_owned(),
                        dir.to_string(),
                        name,
                    ));
                }
            }
        }
    }
    files
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until the master has dealt every closed raw segment and its pipeline stopped changing files.
fn settle(root: &Path) {
    let storage = root.join("storage");
    let deadline = Instant::now() + WAIT_MAX;
    let mut last = BTreeSet::new();
    let mut stable = 0;
    loop {
        let newest_live = std::fs::read_dir(storage.join("raw/live"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".journal")?.parse::<u64>().ok()
            })
            .max();
        let dealt = read_number(&storage.join("dealer.next_seq.info"));
        let files = segment_files(&storage);
        if dealt.is_some() && dealt == newest_live && files == last {
            stable += 1;
            if stable >= 4 {
                return;
            }
        } else {
            stable = 0;
        }
        last = files;
        assert!(Instant::now() < deadline, "the master's pipeline did not settle");
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Runs `logtank sync` with `config`; its output.
fn sync(config: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args(["sync", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprint!("logtank sync ({}):\n{}", out.status, stderr(&out));
    out
}

fn write_config(path: &Path, data_root: &Path, sync_keys: &str, coord: &str) {
    std::fs::write(
        path,
        format!(
            "[sync]\ndata_root = \"{}\"\noverlap_ms = 300\ntimeout_s = 30\n{sync_keys}\n[coord]\n{coord}\n",
            data_root.display()
        ),
    )
    .unwrap();
}

/// Every index's replayed state as a recovering engine reads it from `reader`.
fn recover(reader: SocketAddr, codes: &[String]) -> BTreeMap<String, Docs> {
    let mut client = Client::connect(reader, &ClientConfig::default()).unwrap();
    let mut all = BTreeMap::new();
    for code in codes {
        let mut attempts = 0;
        let docs = 'read: loop {
            let mut docs = Docs::new();
            let mut token = LogPageToken::default();
            loop {
                match client.read_page(code, &token) {
                    Ok(page) => {
                        for record in &page.batch.records {
                            apply(&mut docs, record);
                        }
                        match page.next_page_token {
                            Some(next) => token = next,
                            None => break 'read docs,
                        }
                    }
                    // Compaction moved the position away: start again, as a recovering engine does.
                    Err(e) if logtank_cli::endpoint::is_token_expired(&e) && attempts < 5 => {
                        attempts += 1;
                        continue 'read;
                    }
                    Err(e) => panic!("read_page {code}: {e}"),
                }
            }
        };
        all.insert(code.clone(), docs);
    }
    all
}

fn inodes(storage: &Path) -> BTreeMap<(String, String, String), u64> {
    segment_files(storage)
        .into_iter()
        .map(|f| {
            let path = storage.join("indexes").join(&f.0).join(&f.1).join(&f.2);
            let ino = std::fs::metadata(path).unwrap().ino();
            (f, ino)
        })
        .collect()
}

// Proves the whole replication: the slave copies the master's dealt segments over the rsync daemon module
// and adopts them (safe_to_read once its own raw log covers the rest), a second copy shares unchanged files
// by hard links and finds the master through coordination, an unchanged master costs nothing, and after
// the master is gone the promoted slave's recovery reads return every acknowledged record.
#[test]
fn a_slave_replicates_then_is_promoted_and_serves_every_record() {
    check_rsync();
    let dir = tempfile::tempdir().unwrap();
    let (m_root, s_root) = (dir.path().join("master"), dir.path().join("slave"));
    for root in [&m_root, &s_root] {
        std::fs::create_dir_all(root.join("storage")).unwrap();
    }
    std::fs::write(m_root.join("master"), "").unwrap();
    std::fs::write(m_root.join("storage/safe_to_read"), "").unwrap();
    let coordd = TestServer::start(&ServerKind::Coordd(bin_dir().join("logtank-coordd")));

    let (m_writer, m_writer_addr) = start_writer(&m_root, dir.path(), "master-writer");
    let (s_writer, s_writer_addr) = start_writer(&s_root, dir.path(), "slave-writer");
    let (m_indexes, m_reader) = start_indexes(
        &m_root,
        dir.path(),
        "master-indexes",
        Some(&coordd.connect_string()),
    );
    let mut sender = Sender::new(&[s_writer_addr, m_writer_addr]);
    sender.send(80, Duration::from_millis(15));
    settle(&m_root);
    let rsyncd = RsyncDaemon::start(&m_root.join("storage"), dir.path());
    let (m_storage, s_storage) = (m_root.join("storage"), s_root.join("storage"));

    // First copy, the master named in the config.
    let config = dir.path().join("sync.toml");
    write_config(
        &config,
        &s_root,
        &format!("master = \"127.0.0.1:{}\"", rsyncd.port),
        "",
    );
    let out = sync(&config);
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "{err}\nrsyncd: {}",
        std::fs::read_to_string(&rsyncd.log).unwrap_or_default()
    );
    assert!(
        err.contains("sync: adopted the snapshot of rsync://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("safe_to_read: yes"), "{err}");
    assert!(s_storage.join("safe_to_read").is_file());
    assert!(!s_storage.join("migrating").exists() && !s_storage.join("migrated").exists());
    let first = segment_files(&s_storage);
    assert_eq!(first, segment_files(&m_storage));
    assert!(first.iter().any(|f| f.2.contains(".optimized_")), "{first:?}");
    // Nothing but the dealer infos and segments travelled.
    assert!(std::fs::read_dir(s_storage.join("indexes/alpha"))
        .unwrap()
        .all(|e| {
            let name = e.unwrap().file_name();
            name == "segments" || name == "optimized"
        }));
    let before = inodes(&s_storage);

    // An engine recovering from the master keeps the segments it reads for `pipeline.read_guard_ms` (30
    // min) after the master compacts them: the second copy finds them unchanged.
    let codes: Vec<String> = INDEXES.iter().map(|c| c.to_string()).collect();
    assert_eq!(recover(m_reader, &codes), sender.model);

    // More batches; the second copy finds the master in coordination (its reader registered there).
    sender.send(40, Duration::from_millis(15));
    settle(&m_root);
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_logtank"))
            .args([
                "zk",
                "--server",
                &coordd.connect_string(),
                "get",
                "/logtank/services/recovery",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the master did not register: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    write_config(
        &config,
        &s_root,
        &format!("master = \"\"\nrsync_port = {}", rsyncd.port),
        &format!("servers = \"{}\"", coordd.connect_string()),
    );
    let out = sync(&config);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("sync: the master is 127.0.0.1 (its reader 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("safe_to_read: yes"), "{err}");
    assert_eq!(segment_files(&s_storage), segment_files(&m_storage));
    // Files the master still has unchanged were not copied again: the same inode, linked from previous/.
    let after = inodes(&s_storage);
    let kept: Vec<_> = before.iter().filter(|(f, _)| after.contains_key(*f)).collect();
    assert!(
        !kept.is_empty(),
        "no segment survived on the master: {before:?} {after:?}"
    );
    for (f, ino) in kept {
        assert_eq!(after[f], *ino, "{f:?} was copied again");
        let path = s_storage.join("indexes").join(&f.0).join(&f.1).join(&f.2);
        assert!(std::fs::metadata(&path).unwrap().nlink() >= 2, "{f:?}");
    }
    assert!(!err.contains("(0 unchanged files hard-linked"), "{err}");

    // Nothing new on the master: nothing copied.
    let out = sync(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("has dealt nothing new"), "{}", stderr(&out));

    // Batches after the last copy exist only in the writers' raw logs; then the master dies.
    sender.send(30, Duration::from_millis(5));
    drop((m_indexes, m_writer, rsyncd));
    sender.only_first();
    // The promoted slave keeps taking writes.
    std::fs::write(s_root.join("master"), "").unwrap();
    let (s_indexes, s_reader) = start_indexes(&s_root, dir.path(), "slave-indexes", None);
    sender.send(10, Duration::ZERO);
    // Once it has dealt its own closed segments (after the master's), read every index.
    settle(&s_root);
    let recovered = recover(s_reader, &codes);
    for code in &codes {
        assert!(
            recovered[code] == sender.model[code],
            "index {code}: the promoted slave's history differs from what was acknowledged \
             ({} documents recovered, {} expected)\nslave-indexes log:\n{}",
            recovered[code].len(),
            sender.model[code].len(),
            s_indexes.log_file_text()
        );
    }
    drop((s_indexes, s_writer));
}

// Proves `logtank sync` does nothing on a master; that a complete copy left by an interrupted run is adopted
// first; that a master that cannot be reached (or is not registered) fails the run with a reason and
// adopts nothing.
#[test]
fn refusals_and_failures_adopt_nothing() {
    check_rsync();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.toml");

    let master = dir.path().join("master");
    std::fs::create_dir_all(master.join("storage")).unwrap();
    std::fs::write(master.join("master"), "").unwrap();
    write_config(&config, &master, "master = \"127.0.0.1:1\"", "");
    let out = sync(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("this host is the master"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_dir(master.join("storage")).unwrap().count(),
        0,
        "a master's storage was touched"
    );

    // A slave with a complete copy not adopted yet, and a master that is down.
    let slave = dir.path().join("slave");
    let migrated = slave.join("storage/migrated");
    std::fs::create_dir_all(migrated.join("indexes/x/segments")).unwrap();
    std::fs::write(migrated.join("dealer.next_seq.info"), "5\n").unwrap();
    std::fs::write(migrated.join("dealer.dealt_until_ms.info"), "1000\n").unwrap();
    // While logtank-indexes holds the dealer lock (this host being promoted), the sync adopts nothing.
    {
        let layout = logtank_storage::Layout::new(&slave);
        let _dealer = layout.lock(logtank_storage::LockRole::Dealer).unwrap();
        write_config(&config, &slave, "master = \"127.0.0.1:1\"", "");
        let out = sync(&config);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("dealer.lock") && err.contains("is not adopted by the sync"),
            "{err}"
        );
        assert!(migrated.is_dir(), "the copy waits for the dealer");
        assert!(!slave.join("storage/indexes/x").exists(), "nothing adopted");
    }
    // Raw history a week and a day old goes (raw_history_retention_hours = 168), younger history stays.
    let history = slave.join("storage/raw/history");
    std::fs::create_dir_all(&history).unwrap();
    let (old, young) = (
        history.join(format!("{:020}.journal", 1)),
        history.join(format!("{:020}.journal", 9)),
    );
    for path in [&old, &young] {
        std::fs::write(path, "x").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(192 * 3600))
        .unwrap();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_config(&config, &slave, &format!("master = \"127.0.0.1:{dead}\""), "");
    let out = sync(&config);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("adopting it first"), "{err}");
    assert!(
        err.contains(&format!(
            "copying the dealer info from rsync://127.0.0.1:{dead}/logtank/ failed"
        )),
        "{err}"
    );
    assert!(err.contains("nothing was adopted"), "{err}");
    assert!(
        err.contains("removed 1 raw history segments older than 168 hours"),
        "{err}"
    );
    assert!(!old.exists() && young.exists());
    assert!(!migrated.exists());
    assert!(slave.join("storage/indexes/x/segments").is_dir());
    assert_eq!(
        read_number(&slave.join("storage/dealer.dealt_until_ms.info")),
        Some(1000)
    );
    assert!(!slave.join("storage/safe_to_read").exists());

    // No master named, none registered.
    let coordd = TestServer::start(&ServerKind::Coordd(bin_dir().join("logtank-coordd")));
    write_config(
        &config,
        &slave,
        "master = \"\"",
        &format!("servers = \"{}\"", coordd.connect_string()),
    );
    let out = sync(&config);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no master is registered at /logtank/services/recovery"),
        "{}",
        stderr(&out)
    );
    assert!(!slave.join("storage/migrated").exists());
    assert!(!slave.join("storage/safe_to_read").exists());

    // A broken config says where.
    std::fs::write(&config, "[sync]\nmaster = \"m\"\ntransport = \"scp\"\n").unwrap();
    let out = sync(&config);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("sync.toml:3"), "{}", stderr(&out));
}

/// A master (or whoever answers as one) whose storage holds a symlink where a segment belongs: the link
/// must not be copied (it would be served as index history, pointing anywhere on the slave), and nothing
/// it points to may end up in the slave's storage.
#[test]
fn symlinks_from_the_master_are_never_copied() {
    check_rsync();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "SECRET").unwrap();
    let master = dir.path().join("master-storage");
    let segments = master.join("indexes/x/segments");
    std::fs::create_dir_all(&segments).unwrap();
    std::fs::write(master.join("dealer.next_seq.info"), "5\n").unwrap();
    std::fs::write(master.join("dealer.dealt_until_ms.info"), "1000\n").unwrap();
    std::os::unix::fs::symlink(
        &secret,
        segments.join("00000000000000000001-00000000000000000005.sorted_4"),
    )
    .unwrap();
    let rsyncd = RsyncDaemon::start(&master, dir.path());
    let slave = dir.path().join("slave");
    std::fs::create_dir_all(slave.join("storage")).unwrap();
    let config = dir.path().join("sync.toml");
    write_config(
        &config,
        &slave,
        &format!("master = \"127.0.0.1:{}\"", rsyncd.port),
        "",
    );
    let _ = sync(&config);
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(&path, found);
            } else {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&slave.join("storage"), &mut files);
    for file in &files {
        let meta = std::fs::symlink_metadata(file).unwrap();
        assert!(!meta.file_type().is_symlink(), "{} is a symlink", file.display());
        assert_ne!(
            std::fs::read(file).unwrap_or_default(),
            b"SECRET",
            "{} holds the link's target",
            file.display()
        );
    }
}
