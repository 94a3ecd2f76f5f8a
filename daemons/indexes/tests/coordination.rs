//! The master's coordination against a real server (Debian's ZooKeeper; logtank-coordd too when
//! `LOGTANK_COORDD` names it): with coordination configured a master deals and serves reads only while it
//! holds its lease (its epoch confirmed within `indexes.master_lease_ms`): not while coordination is
//! unreachable; it bumps the epoch and registers `/logtank/services/recovery` once it answers; a second
//! reader promoted later bumps the epoch again, waits out the first one's lease, and the first one is
//! fenced (stops dealing, refuses reads, deregisters, says why), stays fenced across a restart, and is
//! released by demotion. A master cut off from coordination stops before another one starts.
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

/// A short master lease, so the tests wait seconds, not tens of them.
const LEASE_MS: u64 = 2000;
const LEASE_ARGS: [&str; 2] = ["--set", "indexes.master_lease_ms=2000"];

// Proves promotion bumps the epoch and registers the reader, a later promotion elsewhere fences the first
// master (and only demotion releases it), and a master whose coordination is unreachable holds no lease:
// it neither deals nor serves reads until it confirms its epoch.
#[test]
fn promotion_registers_and_a_newer_master_fences_the_old_one() {
    for_each_server(|server| {
        let dir = tempfile::tempdir().unwrap();
        let (root_a, root_b) = (dir.path().join("a"), dir.path().join("b"));
        let proxy = TcpProxy::start(server.port());
        proxy.cut();

        // A is master while coordination is unreachable: no lease, so nothing is dealt or served.
        write_raw(&root_a, &batches(0, 20));
        make_master(&root_a);
        let mut a = Daemon::start_args(
            &root_a,
            "indexes",
            &daemon_coord_section(&proxy.connect_string()),
            &LEASE_ARGS,
        );
        let layout_a = a.layout();
        let live = journal_files(&layout_a.raw_live());
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(
            journal_files(&layout_a.raw_live()),
            live,
            "nothing dealt without a lease"
        );
        let e = app_error(a.reader_client().read_page("idx", &Default::default()));
        assert!(
            e.contains("has not confirmed its epoch in coordination within its lease (2000 ms)"),
            "{e}"
        );
        assert_eq!(a.status()["role"], "master (lease not held)");
        assert_eq!(server.node_data(RECOVERY), None);

        // Coordination answers: A bumps the epoch (the first: no previous master to wait for), registers
        // its reader, deals and serves.
        proxy.heal();
        eventually("A deals once its epoch is confirmed", || {
            journal_files(&layout_a.raw_live()).len() == 1
        });
        assert_eq!(read_all(&mut a.reader_client(), "idx").unwrap().0.len(), 20);
        let a_addr = format!("127.0.0.1:{}", a.reader.port());
        eventually("A registered", || {
            server.node_data(RECOVERY).as_deref() == Some(a_addr.as_str())
        });
        assert_eq!(server.node_data(EPOCH).as_deref(), Some("1"));
        a.wait_log("promoted with epoch 1");

        // B is promoted later on another data root: epoch 2, and A is fenced.
        write_raw(&root_b, &batches(100, 5));
        make_master(&root_b);
        let b = Daemon::start_args(
            &root_b,
            "b",
            &daemon_coord_section(&server.connect_string()),
            &LEASE_ARGS,
        );
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
        eventually("B serves once A's lease has run out", || {
            read_all(&mut b.reader_client(), "idx").is_ok_and(|(records, _)| records.len() == 5)
        });
        a.stop();
        drop(b);
    });
}

// Proves two masters never serve at once (issue 13 part 6): A is the master with coordination through a
// proxy; the proxy is cut (A can no longer confirm its epoch) and B is promoted. Both readers are asked for
// pages every 20 ms: A stops within its lease of its last confirmation, B starts only once a previous
// master's lease has surely run out after its bump, and no moment has both answering. Healed, A is fenced.
#[test]
fn a_master_cut_off_from_coordination_stops_before_another_one_starts() {
    for_each_server(|server| {
        let dir = tempfile::tempdir().unwrap();
        let (root_a, root_b) = (dir.path().join("a"), dir.path().join("b"));
        let proxy = TcpProxy::start(server.port());
        write_raw(&root_a, &batches(0, 10));
        make_master(&root_a);
        let a = Daemon::start_args(
            &root_a,
            "indexes",
            &daemon_coord_section(&proxy.connect_string()),
            &LEASE_ARGS,
        );
        eventually("A serves", || {
            a.reader_client().read_page("idx", &Default::default()).is_ok()
        });
        write_raw(&root_b, &batches(0, 10));

        proxy.cut();
        let cut_at = std::time::Instant::now();
        make_master(&root_b);
        let b = Daemon::start_args(
            &root_b,
            "b",
            &daemon_coord_section(&server.connect_string()),
            &LEASE_ARGS,
        );
        let (mut a_client, mut b_client) = (a.reader_client(), b.reader_client());
        let (mut a_last, mut b_first, mut a_refusal) = (None, None, String::new());
        let mut both = Vec::new();
        while b_first.is_none_or(|first: std::time::Instant| first.elapsed() < Duration::from_millis(1000)) {
            assert!(cut_at.elapsed() < Duration::from_secs(60), "B never served");
            let now = std::time::Instant::now();
            let a_ok = match a_client.read_page("idx", &Default::default()) {
                Ok(_) => true,
                Err(e) => {
                    a_refusal = format!("{e:?}");
                    false
                }
            };
            let b_ok = b_client.read_page("idx", &Default::default()).is_ok();
            if a_ok {
                a_last = Some(now);
            }
            if b_ok && b_first.is_none() {
                b_first = Some(now);
            }
            if a_ok && b_ok {
                both.push(now.duration_since(cut_at));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(both.is_empty(), "both masters served at {both:?} after the cut");
        let (a_last, b_first) = (a_last.expect("A served after the cut"), b_first.unwrap());
        assert!(a_last < b_first);
        assert!(
            a_last.duration_since(cut_at) <= Duration::from_millis(LEASE_MS + 500),
            "A served {:?} after the cut, past its lease",
            a_last.duration_since(cut_at)
        );
        assert!(a_refusal.contains("has not confirmed its epoch"), "{a_refusal}");
        eprintln!(
            "A's last read {:?} after the cut, B's first {:?} after it (lease {LEASE_MS} ms)",
            a_last.duration_since(cut_at),
            b_first.duration_since(cut_at)
        );
        assert_eq!(server.node_data(EPOCH).as_deref(), Some("2"));
        proxy.heal();
        a.wait_log("another master took over (epoch 2 > ours 1)");
        drop((a, b));
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
