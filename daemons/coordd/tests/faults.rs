//! A disk fault under a real coordd process, injected by the power-loss file system (logtank-powerfs): a
//! transaction log that cannot create its next segment (ENOSPC on every creation in the log directory)
//! makes coordd read-only, as a ZooKeeper server without a quorum is: writes are answered NOTREADONLY,
//! reads are served, and nothing exits; once the disk takes the segment, writes go on by themselves.
//! Root only (the test says so and passes otherwise).
#![allow(clippy::unwrap_used)]

mod common;

use common::{wait_for, Client, Server};
use logtank_powerfs::{Fault, FaultOp, PowerFs};

/// `KeeperException.Code.NOTREADONLY`.
const NOT_READONLY: i32 = -119;

#[test]
fn a_log_that_cannot_grow_makes_coordd_read_only_until_it_can() {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount_under(dir.path()).unwrap();
    let extra = "[limits]\nframe_bytes_max = 65536\n[persistence]\nlog_segment_size_bytes = 262144\n";
    let server = Server::start_on(dir.path(), fs.path(), extra);
    let mut c = Client::connect(server.addr, 30_000);
    assert_eq!(c.create("/before", b"x", 0).err, 0);

    fs.inject(Fault::new(FaultOp::Create, nix::libc::ENOSPC).on_paths_containing("log/"));
    // 8 KiB nodes until a write is refused: the log's next segment cannot be made.
    let value = vec![b'v'; 8000];
    let mut acked = Vec::new();
    let refused = (0..500).find_map(|n| {
        let path = format!("/n{n}");
        match c.create(&path, &value, 0).err {
            0 => {
                acked.push(path);
                None
            }
            err => Some(err),
        }
    });
    assert_eq!(refused, Some(NOT_READONLY), "writes are refused with NOTREADONLY");
    assert!(!acked.is_empty());
    wait_for("coordd to say it is read-only", || {
        server
            .log()
            .contains("read-only: the transaction log cannot create its next segment")
    });
    assert!(server.log().contains("No space left on device"));
    // Reads go on, of everything acknowledged.
    assert_eq!(c.get("/before").unwrap().0, b"x");
    assert_eq!(c.get(acked.last().unwrap()).unwrap().0, value);
    assert_eq!(
        c.children("/").unwrap().len(),
        acked.len() + 2,
        "the nodes and /zookeeper"
    );
    assert_eq!(c.create("/refused", b"", 0).err, NOT_READONLY);

    // Room again: writes go on without a restart.
    fs.clear_faults();
    wait_for("coordd to take writes again", || {
        c.create("/after", b"y", 0).err == 0
    });
    assert!(server.log().contains("leaving read-only"));
    c.close();

    // The log is whole: a restart has every acknowledged node and nothing refused.
    let server = server.restart();
    let mut c = Client::connect(server.addr, 30_000);
    assert_eq!(c.get("/before").unwrap().0, b"x");
    assert_eq!(c.get("/after").unwrap().0, b"y");
    for path in &acked {
        assert_eq!(c.get(path).unwrap().0, value, "{path}");
    }
    assert!(c.get("/refused").is_err());
    eprintln!(
        "{} writes acknowledged before the log could not grow",
        acked.len()
    );
}

// Proves a failed fsync of the transaction log (EIO injected once by logtank-powerfs, which loses what it
// should have covered) is never answered and never counted durable later: coordd stops (exit 1, for
// systemd to restart it) without replying to the write, and the restart holds exactly what was acknowledged
// before.
#[test]
fn a_failed_log_fsync_is_never_acknowledged_nor_trusted_after_the_restart() {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount_under(dir.path()).unwrap();
    let mut server = Server::start_on(dir.path(), fs.path(), "");
    let mut c = Client::connect(server.addr, 30_000);
    for n in 0..5 {
        assert_eq!(c.create(&format!("/before{n}"), b"x", 0).err, 0);
    }
    // Log segments are named by their first sequence number (digits).
    fs.inject(
        Fault::new(FaultOp::Fsync, nix::libc::EIO)
            .on_paths_containing("log/0")
            .times(1),
    );
    c.send(&common::create_req("/lost", b"y", 0));
    assert!(
        c.recv().is_none(),
        "the write was answered though its fsync failed"
    );
    assert_eq!(server.wait_exit().code(), Some(1));
    assert!(
        server.log().contains("the transaction log failed"),
        "{}",
        server.log()
    );
    let server = server.start_again();
    let mut c = Client::connect(server.addr, 30_000);
    for n in 0..5 {
        assert_eq!(c.get(&format!("/before{n}")).unwrap().0, b"x");
    }
    assert!(c.get("/lost").is_err(), "a write whose fsync failed came back");
    assert_eq!(c.create("/after", b"z", 0).err, 0);
}
