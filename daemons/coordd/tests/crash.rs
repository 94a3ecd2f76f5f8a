//! Proves coordd's durability promise with kill -9 under write load: every acknowledged write is there
//! after a restart, an unacknowledged multi is all or nothing, and a session that reconnects within its
//! timeout keeps its ephemerals and its password.
#![allow(clippy::unwrap_used)]

mod common;

use common::{create_req, Client, Server};
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
    let dir = tempfile::tempdir().unwrap();
    // Small log segments and frequent snapshots, so the cycles also cross snapshots and pruning.
    let extra = "[limits]\nframe_bytes_max = 65536\n[persistence]\nsnapshot_every_txns = 2000\nsnapshots_retained = 2\nlog_segment_size_bytes = 262144\n";
    let mut server = Server::start(dir.path(), extra);
    let mut rng = rand::rng();
    let cycles: u32 = std::env::var("LOGTANK_COORDD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
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
        let kill_after_ms = rng.random_range(5..80u64);
        let pid = server.pid();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(kill_after_ms));
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
        server = server.restart();
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
    eprintln!(
        "{} acknowledged writes checked over {cycles} kill -9 cycles",
        acked.len()
    );
}
