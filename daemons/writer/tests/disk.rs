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
