//! Proves the markers gate the master's work: without `master` and `safe_to_read` nothing is dealt and
//! `read_page` says why; with both the raw log is dealt and every record of an index comes back across
//! pages; removing `master` stops dealing and reads again; the legacy `/data/safe_to_read` counts.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use logtank_storage::Layout;
use logtank_thrift::LogRecord;

/// `batches` batches of 4 records alternating between indexes `a` and `b`, docids unique per record.
fn batches(first: usize, n: usize) -> Vec<Vec<LogRecord>> {
    (first..first + n)
        .map(|b| {
            (0..4)
                .map(|r| {
                    let code = if r % 2 == 0 { "a" } else { "b" };
                    add(code, &format!("doc-{b}-{r}"), &"x".repeat(300))
                })
                .collect()
        })
        .collect()
}

fn docids(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.docid.clone().unwrap()).collect()
}

fn expected_docids(code: &str, first: usize, n: usize) -> Vec<String> {
    batches(first, n)
        .into_iter()
        .flatten()
        .filter(|r| r.index_code.as_deref() == Some(code))
        .map(|r| r.docid.unwrap())
        .collect()
}

fn index_dirs(daemon: &Daemon) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(daemon.layout().indexes())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[test]
fn markers_gate_dealing_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_raw(root, &batches(0, 40));
    let live_before = journal_files(&Layout::new(root).raw_live());
    assert!(live_before.len() >= 4, "several raw segments: {live_before:?}");
    let daemon = Daemon::start(root, "[pipeline]\nidle_ms = 50\npage_bytes = 4096\n");
    let layout = daemon.layout();

    // No markers: the pipeline stays idle (give it many poll periods) and reads are refused with the reason.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(journal_files(&layout.raw_live()), live_before, "nothing dealt");
    assert!(journal_files(&layout.raw_history()).is_empty());
    assert!(
        index_dirs(&daemon).is_empty(),
        "no index directories: {:?}",
        index_dirs(&daemon)
    );
    let mut reader = daemon.reader_client();
    let e = app_error(reader.read_page("a", &Default::default()));
    assert!(e.contains("is not the master"), "{e}");
    assert!(
        e.contains(&format!("{} does not exist", layout.master_marker().display())),
        "{e}"
    );
    assert!(e.contains("/logtank/services/recovery"), "{e}");
    assert!(daemon.status()["status"]
        .as_str()
        .unwrap()
        .contains("not master: pipeline idle"));

    // The master marker alone: still idle, and the refusal names safe_to_read.
    touch(&layout.master_marker());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        journal_files(&layout.raw_live()),
        live_before,
        "nothing dealt without safe_to_read"
    );
    let e = app_error(reader.read_page("a", &Default::default()));
    assert!(e.contains("its data is not known complete"), "{e}");
    assert!(
        e.contains(&format!(
            "{} does not exist",
            layout.safe_to_read_marker().display()
        )),
        "{e}"
    );

    // Both markers: every closed segment (all but the newest) is dealt, indexes appear.
    touch(&layout.safe_to_read_marker());
    daemon.wait_log("active master");
    eventually("the closed raw segments dealt", || {
        journal_files(&layout.raw_live()).len() == 1
            && journal_files(&layout.raw_history()).len() == live_before.len() - 1
    });
    assert_eq!(index_dirs(&daemon), ["a", "b"]);
    for code in ["a", "b"] {
        let (records, pages) = read_all(&mut reader, code).unwrap();
        assert_eq!(docids(&records), expected_docids(code, 0, 40), "index {code}");
        assert!(pages > 2, "several pages: {pages}");
        assert!(records
            .iter()
            .all(|r| !r.deleted && r.fields.as_ref().unwrap()["text"].len() == 300));
    }

    // Demoted: new closed segments are no longer dealt, and reads are refused again.
    std::fs::remove_file(layout.master_marker()).unwrap();
    daemon.wait_log("is gone: this host is no longer the master");
    let history = journal_files(&layout.raw_history());
    write_raw(root, &batches(40, 20));
    let live = journal_files(&layout.raw_live());
    assert!(live.len() >= 3, "new closed segments: {live:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        journal_files(&layout.raw_live()),
        live,
        "nothing dealt after demotion"
    );
    assert_eq!(journal_files(&layout.raw_history()), history);
    let e = app_error(reader.read_page("a", &Default::default()));
    assert!(e.contains("is not the master"), "{e}");

    // Promoted again: the new segments are dealt and the index holds all 60 batches.
    touch(&layout.master_marker());
    eventually("the new segments dealt", || {
        journal_files(&layout.raw_live()).len() == 1
    });
    let (records, _) = read_all(&mut reader, "a").unwrap();
    assert_eq!(docids(&records), expected_docids("a", 0, 60));
}

#[test]
fn the_legacy_safe_to_read_path_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_raw(root, &batches(0, 30));
    let layout = Layout::new(root);
    touch(&layout.master_marker());
    touch(&layout.legacy_safe_to_read_marker());
    let daemon = Daemon::start(root, "");
    eventually("the closed raw segments dealt", || {
        journal_files(&layout.raw_live()).len() == 1
    });
    let (records, _) = read_all(&mut daemon.reader_client(), "b").unwrap();
    assert_eq!(docids(&records), expected_docids("b", 0, 30));
    let status = daemon.status()["status"].as_str().unwrap().to_string();
    assert!(status.starts_with("master, dealing"), "{status}");
    // No coordination configured: the master says it is alone, in its status and its log.
    assert!(status.ends_with(logtank_indexes::SINGLE_HOST_MODE), "{status}");
    assert!(daemon.log().contains("master in single-host mode"));
}

#[test]
fn a_second_daemon_on_the_same_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Daemon::start(dir.path(), "");
    let config = dir.path().join("second.toml");
    std::fs::write(&config, base_config(dir.path())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logtank-indexes"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("storage/dealer.lock is locked by another logtank-indexes (pid"),
        "{stderr}"
    );
}

// Proves a full disk pauses the steps that grow it (an 8 MiB tmpfs filled past pipeline.disk_usage_high_percent,
// root only): nothing is dealt and the status says why; once there is room below the low mark the raw log
// is dealt by itself.
#[test]
fn a_full_disk_pauses_dealing_until_there_is_room() {
    use logtank_testkit::tmpfs::{fill_to, Tmpfs};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("mnt");
    let _tmpfs = match Tmpfs::mount(&mount_point, "8m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let root = mount_point.join("data");
    std::fs::create_dir_all(&root).unwrap();
    write_raw(&root, &batches(0, 40));
    make_master(&root);
    let fill = mount_point.join("fill");
    fill_to(&mount_point, &fill, 96.0);
    let daemon = Daemon::start_on(
        dir.path(),
        &root,
        "indexes",
        "[pipeline]\nidle_ms = 50\npage_bytes = 4096\n",
        &[],
    );
    daemon.wait_log("pipeline paused: the disk of");
    let error = daemon.status()["pipeline_error"].to_string();
    assert!(
        error.contains("% used > 93%; dealing, sorting and optimizing would grow it"),
        "{error}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(index_dirs(&daemon).is_empty(), "nothing dealt while paused");

    std::fs::remove_file(&fill).unwrap();
    daemon.wait_log("the disk has room again");
    daemon.wait_pipeline_idle();
    assert_eq!(index_dirs(&daemon), ["a", "b"]);
    let (records, _) = read_all(&mut daemon.reader_client(), "a").unwrap();
    assert_eq!(docids(&records), expected_docids("a", 0, 40));
}
