//! The pipeline thread stuck in its IO (logtank-powerfs holds every write under `storage/indexes/`, as a
//! disk that stopped answering would): the daemon says it is stuck (log, `STATUS=`) and stops feeding the
//! watchdog, though its event loop runs; once the disk answers the cycle finishes and it is fed again.
//! Root only (the test says so and passes otherwise).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use logtank_powerfs::{Fault, FaultOp, PowerFs};

#[test]
fn a_pipeline_stuck_in_its_io_is_reported_and_starves_the_watchdog() {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount_under(dir.path()).unwrap();
    let data = fs.path().to_path_buf();
    let batches: Vec<_> = (0..20)
        .map(|b| vec![add("idx", &format!("d{b}"), &"s".repeat(500))])
        .collect();
    write_raw(&data, &batches);
    make_master(&data);
    fs.inject(Fault::hang(FaultOp::Write).on_paths_containing("storage/indexes/"));
    let daemon = Daemon::start_on(
        dir.path(),
        &data,
        "indexes",
        "",
        &["--set", "pipeline.stall_timeout_ms=1000"],
    );
    let line = daemon.wait_log("stuck: the pipeline thread has done no IO for");
    assert!(line.contains("the watchdog is no longer fed"), "{line}");
    assert!(
        daemon
            .notify_messages()
            .iter()
            .any(|m| m.contains("STATUS=") && m.contains("stuck: the pipeline thread")),
        "{:?}",
        daemon.notify_messages()
    );
    fs.clear_faults();
    daemon.wait_log("no longer stuck: the watchdog is fed again");
    daemon.wait_pipeline_idle();
    let (records, _) = read_all(&mut daemon.reader_client(), "idx").unwrap();
    assert_eq!(records.len(), 20);
}
