//! The master's coordination against a real server (Debian's ZooKeeper; logtank-coordd too when
//! `LOGTANK_COORDD` names it): the reader deals while coordination is unreachable, bumps the epoch and
//! registers `/logtank/services/recovery` once it answers; a second reader promoted later bumps the epoch
//! again, and the first one is fenced (stops dealing, refuses reads, deregisters, says why), stays fenced
//! across a restart, and is released by demotion.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use logtank_coord::test_support::{daemon_coord_section, for_each_server, TcpProxy};
use logtank_thrift::LogRecord;

fn batches(first: usize, n: usize) -> Vec<Vec<LogRecord>> {
    (first..first + n)
        .map(|b| vec![add("idx", &format!("d{b}"), &"z".repeat(600))])
        .collect()
}

const RECOVERY: &str = "/logtank/services/recovery";
const EPOCH: &str = "/logtank/epoch";

// Proves promotion bumps the epoch and registers the reader, a later promotion elsewhere fences the first
// master (and only demotion releases it), and none of it waits for coordination.
#[test]
fn promotion_registers_and_a_newer_master_fences_the_old_one() {
    for_each_server(|server| {
        let dir = tempfile::tempdir().unwrap();
        let (root_a, root_b) = (dir.path().join("a"), dir.path().join("b"));
        let proxy = TcpProxy::start(server.port());
        proxy.cut();

        // A is master while coordination is unreachable: it deals anyway.
        write_raw(&root_a, &batches(0, 20));
        make_master(&root_a);
        let mut a = Daemon::start(&root_a, &daemon_coord_section(&proxy.connect_string()));
        let layout_a = a.layout();
        eventually("A deals without coordination", || {
            journal_files(&layout_a.raw_live()).len() == 1
        });
        assert_eq!(read_all(&mut a.reader_client(), "idx").unwrap().0.len(), 20);
        assert_eq!(server.node_data(RECOVERY), None);

        // Coordination answers: A bumps the epoch and registers its reader.
        proxy.heal();
        let a_addr = format!("127.0.0.1:{}", a.reader.port());
        eventually("A registered", || {
            server.node_data(RECOVERY).as_deref() == Some(a_addr.as_str())
        });
        assert_eq!(server.node_data(EPOCH).as_deref(), Some("1"));
        a.wait_log("promoted with epoch 1");

        // B is promoted later on another data root: epoch 2, and A is fenced.
        write_raw(&root_b, &batches(100, 5));
        make_master(&root_b);
        let b = Daemon::start_named(&root_b, "b", &daemon_coord_section(&server.connect_string()));
        let b_addr = format!("127.0.0.1:{}", b.reader.port());
        eventually("B registered", || {
            server.node_data(RECOVERY).as_deref() == Some(b_addr.as_str())
        });
        assert_eq!(server.node_data(EPOCH).as_deref(), Some("2"));
        a.wait_log("another master took over (epoch 2 > ours 1): dealing stopped");
        let e = app_error(a.reader_client().read_page("idx", &Default::default()));
        assert!(
            e.contains("was fenced: another master took over (epoch 2 > ours 1)"),
            "{e}"
        );
        let status = a.status();
        assert_eq!(status["role"], "fenced");
        assert_eq!(status["fenced"], "another master took over (epoch 2 > ours 1)");

        // A fenced master deals no more.
        write_raw(&root_a, &batches(20, 20));
        let live = journal_files(&layout_a.raw_live());
        assert!(live.len() >= 3, "{live:?}");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            journal_files(&layout_a.raw_live()),
            live,
            "nothing dealt while fenced"
        );

        // A restart does not take over again: the fence is remembered while A keeps its master marker.
        a = a.restart();
        a.wait_log("fenced since an earlier run");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(server.node_data(EPOCH).as_deref(), Some("2"));
        assert_eq!(server.node_data(RECOVERY).as_deref(), Some(b_addr.as_str()));
        assert_eq!(journal_files(&layout_a.raw_live()), live);

        // Demotion releases the fence; B is the master.
        std::fs::remove_file(layout_a.master_marker()).unwrap();
        a.wait_log("demoted: the fence is cleared");
        assert!(!layout_a.storage().join("fenced").exists());
        let e = app_error(a.reader_client().read_page("idx", &Default::default()));
        assert!(e.contains("is not the master"), "{e}");
        assert_eq!(read_all(&mut b.reader_client(), "idx").unwrap().0.len(), 5);
        a.stop();
        drop(b);
    });
}

// Proves the registration follows the role: the advertised address while master, gone on demotion, back
// (with a new epoch) on promotion, gone at a clean stop; `--manager-listen` is honoured.
#[test]
fn the_registration_follows_the_role() {
    for_each_server(|server| {
        let dir = tempfile::tempdir().unwrap();
        make_master(dir.path());
        let mut d = Daemon::start_args(
            dir.path(),
            "indexes",
            &daemon_coord_section(&server.connect_string()),
            &[
                "--set",
                "indexes.advertise=reader.example:15100",
                "--manager-listen",
                "127.0.0.1:0",
            ],
        );
        eventually("registered", || {
            server.node_data(RECOVERY).as_deref() == Some("reader.example:15100")
        });
        assert_eq!(server.node_data(EPOCH).as_deref(), Some("1"));
        let layout = d.layout();
        std::fs::remove_file(layout.master_marker()).unwrap();
        eventually("deregistered on demotion", || {
            server.node_data(RECOVERY).is_none()
        });
        touch(&layout.master_marker());
        eventually("registered again", || server.node_data(RECOVERY).is_some());
        assert_eq!(server.node_data(EPOCH).as_deref(), Some("2"));
        d.stop();
        assert_eq!(server.node_data(RECOVERY), None, "a clean stop deregisters");
    });
}
