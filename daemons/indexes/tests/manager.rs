//! Proves the six LogManager methods over the wire against a dealing master: listing, index and raw log
//! info, the optimization queue (enqueue, then see it), and delete_index removing an index after a cycle;
//! and that a host that is not the active master refuses the calls that queue pipeline work.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use logtank_storage::Layout;
use logtank_thrift::{ClientError, ExceptionKind, LogRecord};

fn batches(n: usize) -> Vec<Vec<LogRecord>> {
    (0..n)
        .map(|b| {
            vec![
                add("alpha", &format!("d{b}"), &"a".repeat(400)),
                add("beta", &format!("d{b}"), &"b".repeat(400)),
                add("gamma", &format!("d{}", b % 3), "g"),
            ]
        })
        .collect()
}

#[test]
fn all_six_methods_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_raw(root, &batches(30));
    make_master(root);
    // A long idle sleep: once caught up, the pipeline waits, so a queued optimization stays visible.
    let daemon = Daemon::start(root, "[pipeline]\nidle_ms = 600000\n");
    daemon.wait_idle_after(0);
    let mut manager = daemon.manager_client();

    assert_eq!(
        manager.list_existing_indexes().unwrap(),
        ["alpha", "beta", "gamma"]
    );

    let info = manager.get_index_log_info("alpha").unwrap();
    assert!(!info.unsorted_segments.is_empty(), "{info:?}");
    assert!(info.optimized_segments.is_empty(), "{info:?}");
    let dealt: i64 = info
        .unsorted_segments
        .iter()
        .map(|s| i64::from(s.record_count))
        .sum();
    assert!(
        dealt > 0 && dealt < 30,
        "the newest raw segment is not dealt yet: {info:?}"
    );
    assert_eq!(info.unoptimized_record_count, dealt);
    let e = match manager.get_index_log_info("nope") {
        Err(ClientError::Application { message, .. }) => message,
        other => panic!("{other:?}"),
    };
    assert!(e.contains("index \"nope\" does not exist"), "{e}");

    let raw = manager.get_raw_log_info().unwrap();
    assert_eq!(
        raw.undealt_segments.len(),
        1,
        "only the newest is undealt: {raw:?}"
    );
    assert!(raw.dealer_next_timestamp > 1, "{raw:?}");
    assert_eq!(raw.undealt_segments[0].timestamp, raw.dealer_next_timestamp);

    assert!(manager.get_optimization_queue().unwrap().is_empty());
    manager.enqueue_for_optimization("alpha", 1, 2.5).unwrap();
    let queue = manager.get_optimization_queue().unwrap();
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!((queue["alpha"].priority, queue["alpha"].score), (1, 2.5));
    let e = match manager.enqueue_for_optimization("nope", 1, 1.0) {
        Err(ClientError::Application { message, .. }) => message,
        other => panic!("{other:?}"),
    };
    assert!(e.contains("does not exist"), "{e}");

    // delete_index wakes the pipeline; its cycle optimizes the queued index and removes the deleted one.
    let cycles = daemon.cycles();
    manager.delete_index("beta").unwrap();
    daemon.wait_idle_after(cycles);
    assert_eq!(manager.list_existing_indexes().unwrap(), ["alpha", "gamma"]);
    assert!(!daemon.layout().index("beta").exists());
    // Kept aside, not removed: an operator can move it back within pipeline.deleted_index_retention_hours.
    let aside: Vec<String> = std::fs::read_dir(daemon.layout().deleted_indexes())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(aside.len() == 1 && aside[0].starts_with("beta."), "{aside:?}");
    assert!(daemon
        .layout()
        .deleted_indexes()
        .join(&aside[0])
        .join("segments")
        .is_dir());
    assert!(manager.get_optimization_queue().unwrap().is_empty());
    let info = manager.get_index_log_info("alpha").unwrap();
    assert_eq!(info.optimized_segments.len(), 1, "{info:?}");
    assert_eq!(info.optimized_record_count, dealt);
    // The snapshot, then the raw log not dealt yet: every record.
    let (records, _) = read_all(&mut daemon.reader_client(), "alpha").unwrap();
    assert_eq!(records.len(), 30);
    let (records, _) = read_all(&mut daemon.reader_client(), "gamma").unwrap();
    assert!(records.len() >= 3, "gamma's three documents: {}", records.len());
}

#[test]
fn a_standby_refuses_pipeline_work_but_answers_questions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_raw(root, &batches(3));
    let daemon = Daemon::start(root, "");
    let mut manager = daemon.manager_client();
    assert!(manager.list_existing_indexes().unwrap().is_empty());
    assert!(manager.get_optimization_queue().unwrap().is_empty());
    let raw = manager.get_raw_log_info().unwrap();
    assert_eq!(
        raw.undealt_segments.len(),
        Layout::new(root)
            .raw_live()
            .read_dir()
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".journal"))
            .count()
    );
    for result in [
        manager.delete_index("alpha").map(|_| ()),
        manager.enqueue_for_optimization("alpha", 1, 1.0),
    ] {
        match result {
            Err(ClientError::Application { kind, message }) => {
                assert_eq!(kind, ExceptionKind::InternalError);
                assert!(message.contains("is not the master"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The LogManager can delete every index and the Thrift protocol carries no credentials: state-changing
/// calls are served only to `indexes.manager_state_changes_from` (loopback by default); reads to anyone.
/// The port binds to loopback by default; this test lets only 127.0.0.1 change state and calls from
/// 127.0.0.3.
#[test]
fn state_changes_from_unlisted_addresses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_raw(root, &batches(30));
    make_master(root);
    let daemon = Daemon::start_args(
        root,
        "indexes",
        "[pipeline]\nidle_ms = 600000\n",
        &["--set", "indexes.manager_state_changes_from=[\"127.0.0.1\"]"],
    );
    daemon.wait_idle_after(0);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = "127.0.0.3:0".parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&daemon.manager.into()).unwrap();
    let mut outsider = logtank_thrift::Client::from_stream(socket.into(), &Default::default()).unwrap();
    for result in [
        outsider.delete_index("alpha"),
        outsider.enqueue_for_optimization("alpha", 1, 1.0),
    ] {
        match result {
            Err(ClientError::Application { message, .. }) => {
                assert!(message.contains("from 127.0.0.3 refused"), "{message}");
                assert!(
                    message.contains("indexes.manager_state_changes_from"),
                    "{message}"
                );
            }
            other => panic!("served: {other:?}"),
        }
    }
    // Reads are served, and nothing was deleted or queued.
    assert_eq!(
        outsider.list_existing_indexes().unwrap(),
        ["alpha", "beta", "gamma"]
    );
    assert!(outsider.get_optimization_queue().unwrap().is_empty());
    // From a listed address the same call is served.
    let cycles = daemon.cycles();
    daemon.manager_client().delete_index("alpha").unwrap();
    daemon.wait_idle_after(cycles);
    assert_eq!(outsider.list_existing_indexes().unwrap(), ["beta", "gamma"]);
    assert!(daemon.log().contains("refused: state-changing LogManager calls"));
}
