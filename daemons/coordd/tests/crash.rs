//! Proves coordd's durability promise with kill -9 under write load: every acknowledged write is there
//! after a restart, an unacknowledged multi is all or nothing, and a session that reconnects within its
//! timeout keeps its ephemerals and its password. The same under power cuts: the data on logtank-powerfs,
//! which forgets at the cut every write and directory entry no fsync covered, just before the kill
//! (`LOGTANK_POWER_CUTS`, default 5; tests/run runs 30).
#![allow(clippy::unwrap_used)]

mod common;

use common::{create_req, Client, Server};
use logtank_powerfs::{CutMode, PowerFs};
use logtank_zk::{Acl, CreateKind, CreateRequest, MultiOp, Request};
use rand::Rng;

fn multi_of(n: u32, prefix: &str) -> Request {
    Request::Multi(
        (0..3)
            .map(|k| {
                MultiOp::Create(CreateRequest {
                    kind: CreateKind::Create,
                    path: format!("{prefix}-{n}-{k}"),
                    data: Some(format!("m{n}").into_bytes()),
                    acl: vec![Acl::world_all()],
                    flags: 0,
                    ttl_ms: 0,
                })
            })
            .collect(),
    )
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    run(false);
}

#[test]
fn acknowledged_writes_survive_power_cuts() {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    run(true);
}

fn run(power_cuts: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Small log segments and frequent snapshots, so the cycles also cross snapshots and pruning.
    let extra = "[limits]\nframe_bytes_max = 65536\n[persistence]\nsnapshot_every_txns = 2000\nsnapshots_retained = 2\nlog_segment_size_bytes = 262144\n";
    let mut powerfs = power_cuts.then(|| PowerFs::mount_under(dir.path()).unwrap());
    let mut server = match &powerfs {
        Some(fs) => Server::start_on(dir.path(), fs.path(), extra),
        None => Server::start(dir.path(), extra),
    };
    let mut rng = rand::rng();
    let env = if power_cuts {
        "LOGTANK_POWER_CUTS"
    } else {
        "LOGTANK_COORDD_CRASH_CYCLES"
    };
    let cycles: u32 = std::env::var(env).ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let forgotten = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut multis_sent: Vec<u32> = Vec::new();
    let mut owner = Client::connect(server.addr, 30_000);
    assert_eq!(owner.create("/eph", b"mine", 1).err, 0);
    let (session, password) = (owner.session_id, owner.password.clone());
    let mut next = 0u32;
    for cycle in 0..cycles {
        let mut writer = Client::connect(server.addr, 30_000);
        // Pipeline writes; a thread kills the server at a random moment while they are in flight.
        let burst = rng.random_range(200..2000u32);
        // Sooner under power cuts: a cut should find writes between their append and their fsync.
        let kill_after_ms = if power_cuts {
            rng.random_range(1..25u64)
        } else {
            rng.random_range(5..80u64)
        };
        let pid = server.pid();
        let cutter = powerfs.as_ref().map(PowerFs::cutter);
        let mode = CutMode::alternating(cycle.into());
        let forgotten_here = std::sync::Arc::clone(&forgotten);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(kill_after_ms));
            // The power goes first: nothing the server does after it reaches a disk.
            if let Some(cutter) = cutter {
                let report = cutter.cut_as(mode);
                forgotten_here.fetch_add(report.bytes_forgotten, std::sync::atomic::Ordering::SeqCst);
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        });
        let mut in_flight = std::collections::VecDeque::new();
        for _ in 0..burst {
            let n = next;
            next += 1;
            let (path, data) = (format!("/k{n}"), format!("value-{n}"));
            let req = if n.is_multiple_of(10) {
                multi_of(n, "/m")
            } else {
                create_req(&path, data.as_bytes(), 0)
            };
            if n.is_multiple_of(10) {
                multis_sent.push(n);
            }
            writer.send(&req);
            in_flight.push_back((n, path, data));
        }
        while let Some(reply) = writer.recv() {
            let (n, path, data) = in_flight.pop_front().unwrap();
            if reply.err != 0 && powerfs.is_some() {
                // The cut came first: the server saw its log fail and refused the write.
                break;
            }
            assert_eq!(reply.err, 0, "write {n} failed");
            if !n.is_multiple_of(10) {
                acked.push((path, data));
            } else {
                for k in 0..3 {
                    acked.push((format!("/m-{n}-{k}"), format!("m{n}")));
                }
            }
        }
        killer.join().unwrap();
        server.kill9();
        if let Some(fs) = powerfs.take() {
            powerfs = Some(fs.remount().unwrap());
        }
        server = server.start_again();
        // The ephemeral's owner reconnects within its timeout (counted again from the restart; 4 s with
        // the tests' 200 ms tick): same session, ephemeral still there. It reconnects first and is kept
        // busy during the checks below, which take longer than its timeout as the writes add up.
        owner = Client::resume(server.addr, 30_000, session, password.clone())
            .unwrap_or_else(|_| panic!("cycle {cycle}: session expired across a restart"));
        assert_eq!(owner.get("/eph").unwrap().0, b"mine");
        assert_eq!(owner.get("/eph").unwrap().1.ephemeral_owner, session);
        let mut check = Client::connect(server.addr, 30_000);
        for (i, (path, data)) in acked.iter().enumerate() {
            let got = check
                .get(path)
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged {path} lost ({e})"));
            assert_eq!(got.0, data.as_bytes(), "{path}");
            if i % 500 == 0 {
                assert!(
                    owner.get("/eph").is_ok(),
                    "cycle {cycle}: the owner's ephemeral went"
                );
            }
        }
        for n in &multis_sent {
            let present: Vec<bool> = (0..3)
                .map(|k| check.get(&format!("/m-{n}-{k}")).is_ok())
                .collect();
            assert!(
                present.iter().all(|p| *p) || present.iter().all(|p| !*p),
                "multi {n} half applied: {present:?}"
            );
        }
        check.close();
    }
    assert!(
        acked.len() > 100,
        "too few writes acknowledged to prove anything: {}",
        acked.len()
    );
    // Closing the session removes its ephemeral, durably.
    owner.close();
    server = server.restart();
    let mut check = Client::connect(server.addr, 30_000);
    assert_eq!(check.get("/eph").unwrap_err(), logtank_zk::err::NO_NODE);
    server.stop();
    let what = if power_cuts {
        "power cuts"
    } else {
        "kill -9 cycles"
    };
    eprintln!(
        "{} acknowledged writes checked over {cycles} {what} ({} unsynced bytes forgotten)",
        acked.len(),
        forgotten.load(std::sync::atomic::Ordering::SeqCst)
    );
}
