//! Snapshots and log pruning: snapshots are taken every N transactions, only the configured number is
//! kept, log segments older than the oldest kept snapshot go, and a corrupt newest snapshot is skipped in
//! favour of the previous one plus log replay, without losing anything.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, Server};

fn files(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix) || suffix.is_empty())
        .collect();
    v.sort();
    v
}

#[test]
fn snapshots_prune_and_a_corrupt_one_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[limits]\nframe_bytes_max = 65536\n\
                 [persistence]\nsnapshot_every_txns = 1000\nsnapshots_retained = 2\nlog_segment_size_bytes = 131072\n";
    let mut server = Server::start(dir.path(), extra);
    let mut c = Client::connect(server.addr, 10_000);
    for i in 0..6000 {
        c.send(&common::create_req(
            &format!("/n{i}"),
            format!("v{i}").as_bytes(),
            0,
        ));
        if i % 500 == 499 {
            for _ in 0..500 {
                assert_eq!(c.recv().unwrap().err, 0);
            }
        }
    }
    // Snapshots are written in the background: give the last one a moment.
    let snaps = dir.path().join("coordd/snapshots");
    let log = dir.path().join("coordd/log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files(&snaps, "")
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "no snapshots appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Pruning follows the snapshot it is due to.
    let first_segment = |log: &std::path::Path| -> u64 {
        files(log, "")[0].file_name().unwrap().to_string_lossy()[..20]
            .parse()
            .unwrap()
    };
    // 6000 small records fill several 128 KiB segments; the ones before the oldest snapshot go.
    common::wait_for("old snapshots and log segments to be pruned", || {
        files(&snaps, "").len() <= 2 && first_segment(&log) > 1
    });
    let snapshots = files(&snaps, "");
    assert!(
        snapshots.len() <= 2,
        "kept {} snapshots: {snapshots:?}",
        snapshots.len()
    );

    // More writes after the newest snapshot, then a kill -9 and a corrupted newest snapshot.
    for i in 6000..6100 {
        assert_eq!(c.create(&format!("/n{i}"), format!("v{i}").as_bytes(), 0).err, 0);
    }
    server.kill9();
    let newest = files(&snaps, "").pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    // What a crash in the middle of a snapshot leaves: removed at start (it was never committed).
    let leftover = snaps.join("snapshot.00000000000fffff.tmp");
    std::fs::write(&leftover, vec![0u8; 4096]).unwrap();
    server = server.restart();
    assert!(
        !leftover.exists(),
        "a snapshot .tmp left by a crash is removed at start"
    );
    assert!(
        server.log().contains("checksum mismatch"),
        "the corrupt snapshot is reported"
    );
    let mut c = Client::connect(server.addr, 10_000);
    for i in (0..6100).step_by(97) {
        assert_eq!(c.get(&format!("/n{i}")).unwrap().0, format!("v{i}").as_bytes());
    }
    assert_eq!(c.get("/n6099").unwrap().0, b"v6099");
    server.stop();
}
