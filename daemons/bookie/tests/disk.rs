//! The disk thresholds on real, small filesystems: the bookie's journal and ledgers directories each on a
//! tmpfs mounted for the test (needs root; tests/run runs as root, elsewhere the test says SKIPPED). At or
//! above the high mark of either the bookie is readonly (registered under `available/readonly`, adds
//! refused with EREADONLY), between the marks it stays so (no flapping), below the low mark it is writable
//! again; a journal disk filled to the last byte neither crashes it nor stops it from starting again.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{default_server, Cluster, Raw};
use logtank_bookie_proto::{encode_entry, master_key, AddRequest, EntryHeader, ReadRequest, Request, Status};
use logtank_testkit::tmpfs::{fill_to, Tmpfs};
use logtank_testkit::wait_for;

fn readonly(cluster: &Cluster, id: &str) -> Option<bool> {
    let (writable, readonly) = cluster.registered();
    match (writable.iter().any(|b| b == id), readonly.iter().any(|b| b == id)) {
        (true, false) => Some(false),
        (false, true) => Some(true),
        (false, false) => None,
        (true, true) => panic!("{id} is registered as writable and readonly at once"),
    }
}

fn add(ledger: u64, entry: i64) -> Request {
    let mut bytes = Vec::new();
    let header = EntryHeader {
        ledger_id: ledger,
        entry_id: entry,
        lac: entry - 1,
        length: 0,
    };
    encode_entry(&mut bytes, &header, b"disk test entry");
    Request::Add(AddRequest::new(0, master_key(b"pw"), bytes).unwrap())
}

// Proves the thresholds on both directories, the hysteresis, and that a full journal disk never stops the
// bookie: readonly, reads served, and it starts again on the full disk.
#[test]
fn disk_thresholds_on_the_journal_and_ledgers_directories() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED: mounting a tmpfs needs root (this test runs as uid {})",
            nix::unistd::geteuid()
        );
        return;
    }
    let mounts = tempfile::tempdir().unwrap();
    let journal_mount = mounts.path().join("journal");
    let ledgers_mount = mounts.path().join("ledgers");
    let (journal_tmpfs, ledgers_tmpfs) = match (
        Tmpfs::mount(&journal_mount, "24m"),
        Tmpfs::mount(&ledgers_mount, "4m"),
    ) {
        (Ok(j), Ok(l)) => (j, l),
        (Err(e), _) | (_, Err(e)) => {
            // tests/run runs as root with CAP_SYS_ADMIN: there this is a failure, not a skip.
            panic!("{e}: the disk test needs to mount a tmpfs");
        }
    };
    let keys = format!(
        "journal_dir = \"{}\"\nledgers_dir = \"{}\"\nsegment_size_bytes = 1048576\nframe_bytes_max = 262144\n\
         disk_usage_high_percent = 90\ndisk_usage_low_percent = 70",
        journal_mount.join("j").display(),
        ledgers_mount.join("l").display()
    );
    let mut cluster = Cluster::start_with(&default_server(), 0, "/ledgers", "", "");
    cluster.extra_bookie_keys = keys;
    cluster.add_bookie_with_dirs(&journal_mount.join("j"), &ledgers_mount.join("l"));
    let id = cluster.bookies[0].id.clone();
    let ledger = cluster.new_ledger(1);
    let mut raw = Raw::connect(cluster.bookies[0].addr());
    assert_eq!(raw.call(&add(ledger, 0)).status, Status::EOK);
    assert_eq!(readonly(&cluster, &id), Some(false));

    // The journal's disk past the high mark: readonly, adds refused, reads served.
    let ballast = journal_mount.join("ballast");
    fill_to(&journal_mount, &ballast, 93.0);
    wait_for(
        "readonly at the journal's high mark",
        Duration::from_secs(20),
        || readonly(&cluster, &id) == Some(true),
    );
    assert_eq!(raw.call(&add(ledger, 1)).status, Status::EREADONLY);
    assert_eq!(
        raw.call(&Request::Read(ReadRequest::plain(ledger, 0))).status,
        Status::EOK
    );
    // Between the marks: it stays readonly; sampled for a while, it never flaps.
    fill_to(&journal_mount, &ballast, 80.0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            readonly(&cluster, &id),
            Some(true),
            "left readonly between the marks"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Below the low mark: writable again.
    fill_to(&journal_mount, &ballast, 40.0);
    wait_for("writable below the low mark", Duration::from_secs(20), || {
        readonly(&cluster, &id) == Some(false)
    });
    assert_eq!(raw.call(&add(ledger, 1)).status, Status::EOK);

    // The ledgers directory's disk counts as well.
    let ledgers_ballast = ledgers_mount.join("ballast");
    fill_to(&ledgers_mount, &ledgers_ballast, 95.0);
    wait_for(
        "readonly at the ledgers directory's high mark",
        Duration::from_secs(20),
        || readonly(&cluster, &id) == Some(true),
    );
    let _ = std::fs::remove_file(&ledgers_ballast);
    wait_for("writable again", Duration::from_secs(20), || {
        readonly(&cluster, &id) == Some(false)
    });

    // The journal's disk full to the last byte: readonly, no crash, reads served; a restart on the full
    // disk comes up readonly instead of crash-looping.
    fill_to(&journal_mount, &ballast, 100.0);
    wait_for("readonly on a full journal disk", Duration::from_secs(20), || {
        readonly(&cluster, &id) == Some(true)
    });
    assert_eq!(raw.call(&add(ledger, 2)).status, Status::EREADONLY);
    assert!(cluster.bookies[0].process.is_running());
    cluster.bookies[0].process.restart();
    assert_eq!(readonly(&cluster, &id), Some(true));
    let mut raw = Raw::connect(cluster.bookies[0].addr());
    assert_eq!(
        raw.call(&Request::Read(ReadRequest::plain(ledger, 1))).status,
        Status::EOK
    );
    let _ = std::fs::remove_file(&ballast);
    wait_for("writable once the disk has room", Duration::from_secs(20), || {
        readonly(&cluster, &id) == Some(false)
    });
    assert_eq!(raw.call(&add(ledger, 2)).status, Status::EOK);
    cluster.bookies[0].process.stop();
    drop((journal_tmpfs, ledgers_tmpfs));
}
