//! The disk threshold on a real, small filesystem: an 8 MiB tmpfs mounted for the test (needs root; the
//! test says why and skips otherwise). Filling it past `disk_usage_high_percent` makes the writer readonly,
//! it stays readonly between the two marks, and leaves only below `disk_usage_low_percent`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use logtank_testkit::tmpfs::{fill_to, Tmpfs};

/// Used percentage as the writer computes it (df's rule).
fn used_percent(path: &Path) -> f64 {
    logtank_runtime::readonly::disk_usage(path).unwrap().used_percent
}

fn reasons(w: &Writer) -> String {
    let (_, body) = http(w.admin, "GET", "/readonly", "");
    body
}

// Proves the disk threshold: above 95% writes are refused with the disk usage in the error; between 90%
// and 95% they stay refused (hysteresis); below 90% they are accepted again; nothing refused was written.
#[test]
fn disk_threshold_on_a_small_tmpfs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipped: mounting a tmpfs needs root (this test runs as uid {})",
            nix::unistd::geteuid()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("mnt");
    let _tmpfs = match Tmpfs::mount(&mount_point, "8m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipped: {e} (no CAP_SYS_ADMIN in this container?)");
            return;
        }
    };
    let root = mount_point.join("data");
    std::fs::create_dir_all(&root).unwrap();
    let extra = "[writer]\nsegment_size_bytes = 262144\nbatch_bytes_max = 65536\n";
    let mut w = Writer::start(&root, extra, &[]);
    let mut c = w.client();
    c.send_batch(&batch("idx", "before", 3)).unwrap();
    let fill = mount_point.join("fill");

    fill_to(&mount_point, &fill, 97.0);
    assert!(used_percent(&mount_point) > 95.0);
    // Probed with empty batches (readonly is checked before anything else, and they write nothing).
    wait_for("the full disk to make the writer readonly", || {
        c.send_batch(&logtank_thrift::LogBatch::default()).is_err()
    });
    let refusal = app_error(c.send_batch(&batch("idx", "refused", 2)));
    assert!(
        refusal.starts_with("logtank-writer is readonly (disk "),
        "{refusal}"
    );
    assert!(
        refusal.contains("% used > 95%): write refused, nothing was written"),
        "{refusal}"
    );
    w.wait_log("entering readonly: disk");
    assert!(
        http(w.admin, "GET", "/metrics", "")
            .1
            .contains("logtank_writer_readonly 1"),
        "the readonly gauge"
    );

    // Between the marks: still readonly.
    fill_to(&mount_point, &fill, 92.5);
    let between = used_percent(&mount_point);
    assert!((90.0..95.0).contains(&between), "{between}");
    wait_for("the writer to see the lower usage", || {
        reasons(&w).contains("not yet below 90%")
    });
    let message = app_error(c.send_batch(&batch("idx", "refused-too", 1)));
    assert!(message.contains("not yet below 90%"), "{message}");

    // Below the low mark: writable again.
    std::fs::remove_file(&fill).unwrap();
    wait_for("the writer to leave readonly", || {
        c.send_batch(&batch("idx", "after", 1)).is_ok()
    });
    w.wait_log("leaving readonly");
    w.stop();
    let docids: Vec<String> = read_raw_log(&root)
        .into_iter()
        .flatten()
        .map(|r| r.docid.unwrap())
        .collect();
    assert_eq!(docids, ["before-0", "before-1", "before-2", "after-0"]);
}

// Proves a raw log that cannot create its next segment (ENOSPC injected by logtank-powerfs on every
// creation under raw/live) makes the writer readonly with the reason, instead of failing and restarting
// in a loop: it keeps running, a restart on the full disk starts too, and once the disk takes the segment
// it goes on by itself; every acknowledged batch is in the raw log, nothing refused is.
#[test]
fn a_raw_log_that_cannot_create_a_segment_makes_the_writer_readonly_until_it_can() {
    use logtank_powerfs::{Fault, FaultOp, PowerFs};
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount_under(dir.path()).unwrap();
    let extra = "[writer]\nsegment_size_bytes = 262144\nbatch_bytes_max = 65536\n";
    let w = Writer::start_on(dir.path(), fs.path(), extra, &[]);
    let mut c = w.client();
    c.send_batch(&batch("idx", "before", 3)).unwrap();
    fs.inject(Fault::new(FaultOp::Create, nix::libc::ENOSPC).on_paths_containing("raw/live/"));
    // A sender of ~10 KiB batches: the one that needs the next segment waits (it is staged for it) until
    // the disk takes the segment; the others are acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (addr, stop) = (w.addr, stop.clone());
        std::thread::spawn(move || {
            let mut c = client(addr);
            let mut acked = vec!["before".to_string()];
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let prefix = format!("b{n}");
                let mut b = batch("idx", &prefix, 1);
                b.records[0].fields = Some([("text".to_string(), "x".repeat(10_000))].into());
                // Refused once readonly (until the writer sees the disk take the segment): not logged.
                if c.send_batch(&b).is_ok() {
                    acked.push(prefix);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            acked
        })
    };
    w.wait_log("entering readonly: storage: the raw log cannot create its next segment");
    assert!(reasons(&w).contains("No space left on device"), "{}", reasons(&w));
    let refusal = app_error(w.client().send_batch(&batch("idx", "refused", 1)));
    assert!(refusal.starts_with("logtank-writer is readonly ("), "{refusal}");
    assert!(
        refusal.contains("the raw log cannot create its next segment")
            && refusal.contains("No space left on device"),
        "{refusal}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = sender.join().unwrap();

    // A restart on the full disk: the writer starts (no exit, no restart loop), goes on in its last
    // segment, and turns readonly again as soon as it sees that it cannot grow.
    let mut w = w.restart();
    w.wait_log("cannot start a new segment at open");
    let mut c = w.client();
    let refused_again = (0..200)
        .find_map(|n| {
            let prefix = format!("r{n}");
            let mut b = batch("idx", &prefix, 1);
            b.records[0].fields = Some([("text".to_string(), "x".repeat(10_000))].into());
            match c.send_batch(&b) {
                Ok(()) => {
                    acked.push(prefix);
                    None
                }
                Err(e) => Some(app_error(Err(e))),
            }
        })
        .expect("readonly again after the restart");
    assert!(
        refused_again.contains("cannot create its next segment"),
        "{refused_again}"
    );

    // Room again: the writer goes on by itself.
    fs.clear_faults();
    w.wait_log("leaving readonly");
    w.client().send_batch(&batch("idx", "after", 1)).unwrap();
    acked.push("after".to_string());
    w.stop();
    let prefixes: Vec<String> = read_journal_dir(&fs.path().join("storage/raw/live"))
        .into_iter()
        .flatten()
        .map(|r| r.docid.unwrap().rsplit_once('-').unwrap().0.to_string())
        .collect();
    assert!(
        !prefixes.iter().any(|p| p == "refused"),
        "a refused batch was written"
    );
    let mut expected = acked.clone();
    expected.sort();
    let mut written: Vec<String> = prefixes.clone();
    written.dedup();
    written.sort();
    assert_eq!(written, expected, "exactly the acknowledged batches, each once");
}

// Proves a journal thread stuck in its IO (an fsync that hangs: logtank-powerfs holds it, as a disk that
// stopped answering would) is noticed although the event loop still runs: after STALL_LIMIT the writer
// logs that it is stuck, says so in STATUS= and stops feeding the watchdog (so systemd would restart it);
// once the disk answers the batch is acknowledged and the writer is not stuck any more.
#[test]
fn a_journal_stuck_in_its_io_is_reported_and_starves_the_watchdog() {
    use logtank_powerfs::{Fault, FaultOp, PowerFs};
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount_under(dir.path()).unwrap();
    let w = Writer::start_on(dir.path(), fs.path(), "", &[]);
    w.client().send_batch(&batch("idx", "before", 1)).unwrap();
    fs.inject(Fault::hang(FaultOp::Fsync).on_paths_containing("raw/live/"));
    let addr = w.addr;
    let sender = std::thread::spawn(move || client(addr).send_batch(&batch("idx", "stuck", 1)));
    let line = w.wait_log("stuck: the raw log's journal thread has not come back from its IO for");
    assert!(line.contains("the watchdog is no longer fed"), "{line}");
    assert!(
        w.notify_messages()
            .iter()
            .any(|m| m.contains("STATUS=") && m.contains("stuck: the raw log's journal thread")),
        "{:?}",
        w.notify_messages()
    );
    assert!(!sender.is_finished(), "the batch waits for its fsync");
    fs.clear_faults();
    sender.join().unwrap().unwrap();
    w.wait_log("no longer stuck: the watchdog is fed again");
}

// Proves a failed fsync of the raw log (EIO injected once by logtank-powerfs, which loses what it should
// have covered, as Linux does) is never acknowledged and never counted durable later: the batch gets an
// error, the writer exits for systemd to restart it (exit 1), and the restart holds exactly the batches
// acknowledged before; new batches are taken again, and a power cut then forgets none of them.
#[test]
fn a_failed_fsync_is_not_acknowledged_and_the_restart_trusts_only_the_disk() {
    use logtank_powerfs::{CutMode, Fault, FaultOp, PowerFs};
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount_under(dir.path()).unwrap();
    let mut w = Writer::start_on(dir.path(), fs.path(), "", &[]);
    let mut c = w.client();
    for n in 0..5 {
        c.send_batch(&batch("idx", &format!("before{n}"), 2)).unwrap();
    }
    // The segments' names are their first sequence numbers (digits); the spare is not data.
    fs.inject(
        Fault::new(FaultOp::Fsync, nix::libc::EIO)
            .on_paths_containing("raw/live/0")
            .times(1),
    );
    let refusal = app_error(c.send_batch(&batch("idx", "failed", 2)));
    assert!(
        refusal.contains("it was not acknowledged: send it again"),
        "{refusal}"
    );
    assert!(refusal.contains("Input/output error"), "{refusal}");
    assert_eq!(w.wait_exit().code(), Some(1), "the writer exits for its restart");
    let mut w = w.start_again();
    let docids = |fs: &PowerFs| -> Vec<String> {
        read_journal_dir(&fs.path().join("storage/raw/live"))
            .into_iter()
            .flatten()
            .map(|r| r.docid.unwrap())
            .collect()
    };
    let mut c = w.client();
    c.send_batch(&batch("idx", "after", 2)).unwrap();
    w.stop();
    let expected: Vec<String> = (0..5)
        .flat_map(|n| [format!("before{n}-0"), format!("before{n}-1")])
        .chain(["after-0".to_string(), "after-1".to_string()])
        .collect();
    assert_eq!(docids(&fs), expected, "the failed batch was lost, nothing else");
    let fs = {
        fs.cut_as(CutMode::Tear);
        fs.remount().unwrap()
    };
    assert_eq!(
        docids(&fs),
        expected,
        "a power cut after the restart forgets nothing acknowledged"
    );
}
