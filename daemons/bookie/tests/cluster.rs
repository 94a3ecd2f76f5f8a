//! Three real bookie processes and real coordination, through logtank-ledger's client: quorum writes read
//! back byte for byte, an ensemble change after `kill -9`, fencing and recovery, readonly, cookies, garbage
//! collection, tailing an open ledger.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{default_server, payload, Cluster, Raw};
use logtank_bookie_proto::{
    encode_entry, master_key, AddRequest, EntryHeader, ReadRequest, Request, Status, LAST_ENTRY,
};
use logtank_coord::test_support::ServerKind;
use logtank_ledger::{LedgerError, LedgerState};
use logtank_testkit::{http, wait_for, wait_for_or, DaemonProcess};

// Proves ledgers with E=3 Qw=2 Qa=2 (striped) and E=Qw=3 Qa=2 are written and read back byte for byte,
// against coordd and against Debian's ZooKeeper, under a root of DistributedLog's guide.
#[test]
fn quorum_writes_read_back_byte_for_byte() {
    for kind in ServerKind::under_test() {
        eprintln!("--- against {}", kind.name());
        let cluster = Cluster::start_with(&kind, 3, "/messaging/bookkeeper/ledgers", "", "");
        let (writable, readonly) = cluster.registered();
        assert_eq!(writable.len(), 3, "{writable:?}");
        assert!(readonly.is_empty());
        for (e, qw, qa) in [(3, 2, 2), (3, 3, 2)] {
            let (id, written) = cluster.write_ledger(e, qw, qa, 700);
            let metadata = cluster.block_on(cluster.client.metadata(id)).unwrap();
            assert_eq!(metadata.state, LedgerState::Closed);
            assert_eq!(
                (metadata.ensemble_size, metadata.write_quorum, metadata.ack_quorum),
                (e, qw, qa)
            );
            assert_eq!(
                metadata.length,
                written.iter().map(|p| p.len() as u64).sum::<u64>()
            );
            assert_eq!(
                cluster.read_ledger(id, false),
                written,
                "ledger {id} E={e} Qw={qw} Qa={qa}"
            );
        }
        // Each bookie holds only its write sets' share of the striped ledger (2/3 of 700 entries). With
        // Qw=3 Qa=2 the close may be acknowledged before the slowest bookie has taken its last adds, so the
        // count is waited for (the adds are on their way, not lost).
        let entries = || -> Vec<u64> {
            cluster
                .bookies
                .iter()
                .map(|b| b.process.status()["entries"].as_u64().unwrap())
                .collect()
        };
        wait_for_or(
            "every bookie to hold its write sets' entries",
            Duration::from_secs(10),
            || entries().iter().sum::<u64>() == 700 * 2 + 700 * 3,
            || format!("{:?}", entries()),
        );
    }
}

// Proves a kill -9 of an ensemble member under pipelined adds leads to an ensemble change: adds go on,
// every acknowledged entry reads back in order, and the metadata shows the new fragment.
#[test]
fn kill9_of_a_bookie_under_load_changes_the_ensemble() {
    let mut cluster = Cluster::start(&default_server(), 3);
    let (writer, mut pending) = cluster.block_on(async {
        let writer = cluster
            .client
            .create(2, 2, 2, b"pw", Default::default())
            .await
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..300 {
            pending.push(writer.append(payload(writer.id(), i)).await.unwrap());
        }
        // The first 100 acknowledged before the kill, so the new fragment starts past them.
        let mut acked_before = Vec::new();
        for p in pending.drain(..100) {
            acked_before.push(p.wait().await.unwrap());
        }
        assert_eq!(acked_before, (0..100).collect::<Vec<i64>>());
        (writer, pending)
    });
    let id = writer.id();
    let metadata = cluster.block_on(cluster.client.metadata(id)).unwrap();
    let victim = metadata.current_ensemble()[0].clone();
    let index = cluster.bookies.iter().position(|b| b.id == victim).unwrap();
    cluster.bookies[index].process.kill9();
    let acked = cluster.block_on(async {
        for i in 300..600 {
            pending.push(writer.append(payload(id, i)).await.unwrap());
        }
        let mut acked = Vec::new();
        for p in pending {
            acked.push(p.wait().await.unwrap());
        }
        writer.close().await.unwrap();
        acked
    });
    assert_eq!(
        acked,
        (100..600).collect::<Vec<i64>>(),
        "every add acknowledged, in order"
    );
    let metadata = cluster.block_on(cluster.client.metadata(id)).unwrap();
    assert!(metadata.ensembles.len() >= 2, "a new fragment: {metadata:?}");
    assert!(metadata.ensembles[1].first_entry >= 100, "{metadata:?}");
    let last = metadata.ensembles.last().unwrap();
    assert!(!last.bookies.contains(&victim), "{victim} replaced: {metadata:?}");
    let expected: Vec<Vec<u8>> = (0..600).map(|i| payload(id, i)).collect();
    assert_eq!(cluster.read_ledger(id, false), expected);
}

// Proves fencing: client A writes; B opens with recovery; A's next add fails as fenced; B's recovered last
// entry is at least every entry A saw acknowledged, and nothing past it is readable.
#[test]
fn recovery_fences_the_writer_and_keeps_every_acknowledged_entry() {
    let cluster = Cluster::start(&default_server(), 3);
    cluster.block_on(async {
        let a = cluster
            .client
            .create(3, 3, 2, b"secret", Default::default())
            .await
            .unwrap();
        let id = a.id();
        let mut last_acked = -1;
        for i in 0..200 {
            last_acked = a.add(payload(id, i)).await.unwrap();
        }
        // Some adds still in flight when B takes over.
        let mut in_flight = Vec::new();
        for i in 200..260 {
            in_flight.push(a.append(payload(id, i)).await.unwrap());
        }
        let wrong = cluster.client.open(id, b"wrong", true).await;
        assert!(wrong.is_err(), "a wrong password cannot recover");
        let b = cluster.client.open(id, b"secret", true).await.unwrap();
        let recovered = b.last_entry().unwrap();
        for p in in_flight {
            if let Ok(e) = p.wait().await {
                last_acked = last_acked.max(e);
            }
        }
        let after = a.add(b"after the fence".to_vec()).await;
        assert!(matches!(after, Err(LedgerError::Fenced { .. })), "{after:?}");
        assert!(
            recovered >= last_acked,
            "recovered {recovered} < acknowledged {last_acked}"
        );
        let metadata = cluster.client.metadata(id).await.unwrap();
        assert_eq!(metadata.state, LedgerState::Closed);
        assert_eq!(metadata.last_entry_id, recovered);
        for e in 0..=recovered {
            assert_eq!(b.read(e).await.unwrap(), payload(id, e as usize));
        }
        assert!(matches!(
            b.read(recovered + 1).await,
            Err(LedgerError::NoSuchEntry { .. })
        ));
        // A second recovery of the closed ledger changes nothing.
        let again = cluster.client.open(id, b"secret", true).await.unwrap();
        assert_eq!(again.last_entry(), Some(recovered));
    });
}

// Proves a reader follows an open ledger up to its LAC as it grows, and stops once it is closed.
#[test]
fn tail_follows_an_open_ledger_until_it_is_closed() {
    let cluster = Cluster::start(&default_server(), 3);
    cluster.block_on(async {
        let writer = cluster
            .client
            .create(3, 2, 2, b"pw", Default::default())
            .await
            .unwrap();
        let id = writer.id();
        let client = cluster.client.clone();
        let tail = tokio::spawn(async move {
            let mut reader = client.open(id, b"", false).await.unwrap();
            let mut seen = Vec::new();
            reader
                .tail(0, |e, p| {
                    seen.push((e, p));
                    true
                })
                .await
                .unwrap();
            seen
        });
        for i in 0..50 {
            writer.add(payload(id, i)).await.unwrap();
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        writer.close().await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(30), tail)
            .await
            .unwrap()
            .unwrap();
        let expected: Vec<(i64, Vec<u8>)> = (0..50).map(|i| (i as i64, payload(id, i))).collect();
        assert_eq!(seen, expected);
    });
}

// Proves a --readonly bookie is only under available/readonly, refuses adds with EREADONLY, serves reads,
// and is never picked for a new ledger; PUT /readonly moves a bookie there and back.
#[test]
fn readonly_bookies_refuse_adds_serve_reads_and_move_their_registration() {
    let mut cluster = Cluster::start(&default_server(), 2);
    let (id, written) = cluster.write_ledger(2, 2, 2, 20);
    let ro = cluster.add_bookie(&["--readonly"]);
    let ro_id = cluster.bookies[ro].id.clone();
    let (writable, readonly) = cluster.registered();
    assert_eq!(readonly, vec![ro_id.clone()]);
    assert!(!writable.contains(&ro_id));
    // Never picked: three writable bookies are needed and only two are.
    let e3 = cluster.block_on(cluster.client.create(3, 2, 2, b"pw", Default::default()));
    assert!(
        matches!(
            e3,
            Err(LedgerError::NotEnoughBookies {
                writable: 2,
                readonly: 1,
                ..
            })
        ),
        "{e3:?}"
    );
    for _ in 0..5 {
        let w = cluster
            .block_on(cluster.client.create(2, 2, 2, b"pw", Default::default()))
            .unwrap();
        let m = cluster.block_on(cluster.client.metadata(w.id())).unwrap();
        assert!(!m.current_ensemble().contains(&ro_id));
    }
    // Adds refused, byte for byte on the wire.
    let mut raw = Raw::connect(cluster.bookies[ro].addr());
    let add = add_request(cluster.new_ledger(2), 0, b"refused");
    assert_eq!(raw.call(&add).status, Status::EREADONLY);

    // A writable bookie made readonly by PUT /readonly moves; its reads go on.
    let b0 = &cluster.bookies[0];
    let (code, body) = http(b0.admin(), "PUT", "/readonly", "true");
    assert_eq!(code, 200, "{body}");
    wait_for(
        "the registration to move to readonly",
        Duration::from_secs(20),
        || {
            let (w, r) = cluster.registered();
            r.contains(&b0.id) && !w.contains(&b0.id)
        },
    );
    assert_eq!(cluster.read_ledger(id, false), written, "reads go on");
    let mut raw0 = Raw::connect(b0.addr());
    let ledger = cluster.new_ledger(1);
    assert_eq!(raw0.call(&add_request(ledger, 0, b"x")).status, Status::EREADONLY);
    let (code, _) = http(b0.admin(), "PUT", "/readonly", "false");
    assert_eq!(code, 200);
    wait_for("the registration to move back", Duration::from_secs(20), || {
        let (w, r) = cluster.registered();
        w.contains(&b0.id) && !r.contains(&b0.id)
    });
    assert_eq!(raw0.call(&add_request(ledger, 0, b"x")).status, Status::EOK);
}

fn add_request(ledger: u64, entry: i64, payload: &[u8]) -> Request {
    let mut bytes = Vec::new();
    let header = EntryHeader {
        ledger_id: ledger,
        entry_id: entry,
        lac: entry - 1,
        length: payload.len() as u64,
    };
    encode_entry(&mut bytes, &header, payload);
    Request::Add(AddRequest::new(0, master_key(b"pw"), bytes).unwrap())
}

// Proves cookies: a bookie started on another bookie's data directory, or after a metaformat gave the
// cluster a new instance id, refuses to start (exit 78) naming what differs; metaformat of a root holding
// ledgers is refused.
#[test]
fn cookies_refuse_foreign_directories_and_a_new_cluster() {
    let mut cluster = Cluster::start(&default_server(), 2);
    let (first, second) = (&cluster.bookies[0], &cluster.bookies[1]);
    let (first_root, second_root, second_config) = (
        first.data_root.clone(),
        second.data_root.clone(),
        second.config.clone(),
    );
    // Bookie 2's port with bookie 1's directories: the cookie says another bookie id.
    let swapped = cluster.dir.path().join("swapped.toml");
    std::fs::write(
        &swapped,
        std::fs::read_to_string(&second_config).unwrap().replace(
            &second_root.display().to_string(),
            &first_root.display().to_string(),
        ),
    )
    .unwrap();
    cluster.bookies[1].process.stop();
    let spec = cluster.spec(9, &swapped, &[]);
    let (status, log) = DaemonProcess::start_failing(spec);
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(log.contains("the bookie id is \"127.0.0.1:"), "{log}");
    assert!(log.contains("logtank bookie format"), "{log}");
    cluster.bookies[1].process.start_again();

    cluster.write_ledger(2, 2, 2, 5);
    let refused = cluster.block_on(logtank_ledger::admin::metaformat(
        &cluster.coord.client(),
        &cluster.layout,
        false,
    ));
    assert!(refused.unwrap_err().to_string().contains("holds 1 ledgers"));
    cluster
        .block_on(logtank_ledger::admin::metaformat(
            &cluster.coord.client(),
            &cluster.layout,
            true,
        ))
        .unwrap();
    let b = &mut cluster.bookies[0];
    b.process.kill9();
    let (status, log) = DaemonProcess::start_failing(b.process.spec().clone());
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(log.contains("cluster instance id"), "{log}");
}

// Proves deleting ledgers gives their disk space back: the GC forgets them, compaction copies what is
// still live and removes the segments.
#[test]
fn deleted_ledgers_space_comes_back() {
    let keys = "segment_size_bytes = 1048576\nframe_bytes_max = 262144";
    let cluster = Cluster::start_with(&default_server(), 3, "/ledgers", keys, "");
    let (keep, kept) = cluster.write_ledger(3, 3, 3, 200);
    let doomed: Vec<u64> = (0..6).map(|_| cluster.write_ledger(3, 3, 3, 3000).0).collect();
    let usage = |b: &common::TestBookie| -> u64 {
        std::fs::read_dir(&b.journal_dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let before: Vec<u64> = cluster.bookies.iter().map(usage).collect();
    for id in &doomed {
        cluster.block_on(cluster.client.delete(*id)).unwrap();
    }
    for b in &cluster.bookies {
        let (code, body) = http(b.admin(), "POST", "/gc", "");
        assert_eq!(code, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            report["ledgers_deleted"].as_array().unwrap().len(),
            doomed.len(),
            "{body}"
        );
        assert!(report["segments_compacted"].as_u64().unwrap() > 0, "{body}");
    }
    let after: Vec<u64> = cluster.bookies.iter().map(usage).collect();
    for (b, a) in before.iter().zip(&after) {
        assert!(a * 2 < *b, "journal bytes {b} -> {a}: less than half must remain");
    }
    assert_eq!(
        cluster.read_ledger(keep, false),
        kept,
        "the live ledger survives compaction"
    );
    // And after a restart, from the compacted journal.
    let mut cluster = cluster;
    for b in cluster.bookies.iter_mut() {
        b.process.restart();
    }
    assert_eq!(cluster.read_ledger(keep, false), kept);
}

// Proves bad input gets clear statuses and costs nothing: garbage, truncated and oversized frames close
// only their own connection; a wrong digest, a wrong master key and unknown opcodes get EBADREQ/EUA on a
// connection that stays usable; the bookie keeps serving others.
#[test]
fn bad_input_gets_statuses_and_never_stops_the_bookie() {
    let cluster = Cluster::start_with(&default_server(), 1, "/ledgers", "frame_bytes_max = 65536", "");
    let addr = cluster.bookies[0].addr();
    // A ledger with metadata (the bookie's GC forgets ledgers that have none).
    let ledger = cluster.new_ledger(1);
    let mut good = Raw::connect(addr);
    assert_eq!(good.call(&add_request(ledger, 0, b"first")).status, Status::EOK);

    // A wrong digest: EBADREQ, nothing stored, the connection goes on.
    let Request::Add(mut bad) = add_request(ledger, 1, b"second") else {
        unreachable!()
    };
    let last = bad.entry.len() - 1;
    bad.entry[last] ^= 0xff;
    let mut conn = Raw::connect(addr);
    assert_eq!(conn.call(&Request::Add(bad)).status, Status::EBADREQ);
    assert_eq!(
        conn.call(&Request::Read(ReadRequest::plain(ledger, 1))).status,
        Status::ENOENTRY
    );
    // A wrong master key.
    let Request::Add(mut wrong_key) = add_request(ledger, 1, b"second") else {
        unreachable!()
    };
    wrong_key.master_key = master_key(b"not the password");
    assert_eq!(conn.call(&Request::Add(wrong_key)).status, Status::EUA);
    // An unknown opcode in a whole frame.
    let mut unknown = vec![0, 0, 0, 20, 2, 9, 0, 0];
    unknown.extend_from_slice(&ledger.to_be_bytes());
    unknown.extend_from_slice(&0i64.to_be_bytes());
    conn.send_bytes(&unknown);
    assert_eq!(conn.recv().unwrap().status, Status::EBADREQ);
    let r = conn.call(&Request::Read(ReadRequest::plain(ledger, 0)));
    assert_eq!(r.status, Status::EOK, "still usable");

    // Garbage: a length no frame may have closes the connection.
    let mut garbage = Raw::connect(addr);
    garbage.send_bytes(b"GET / HTTP/1.1\r\n\r\n");
    assert!(garbage.recv().is_none(), "closed");
    // Oversized: a length beyond bookie.frame_bytes_max.
    let mut big = Raw::connect(addr);
    big.send_bytes(&(1i32 << 20).to_be_bytes());
    assert!(big.recv().is_none(), "closed");
    // Truncated: half a frame, then the client leaves; the bookie just closes it.
    let mut half = Raw::connect(addr);
    half.send_bytes(&[0, 0, 0, 100, 2, 1, 0, 0, 1, 2, 3]);
    drop(half);
    // Another protocol version: EBADREQ, then closed.
    let mut v3 = Raw::connect(addr);
    v3.send_bytes(&[0, 0, 0, 4, 3, 1, 0, 0]);
    assert_eq!(v3.recv().unwrap().status, Status::EBADREQ);
    assert!(v3.recv().is_none());

    // The first connection and new ones are served as before.
    let last = good.call(&Request::Read(ReadRequest::plain(ledger, LAST_ENTRY)));
    assert_eq!(last.status, Status::EOK);
    let mut fresh = Raw::connect(addr);
    assert_eq!(fresh.call(&add_request(ledger, 1, b"second")).status, Status::EOK);
}

// Proves a connection with more requests in flight than bookie.requests_in_flight_max gets
// ETOOMANYREQUESTS for the extra ones, and the rest are served.
#[test]
fn too_many_requests_in_flight_are_refused() {
    let cluster = Cluster::start_with(&default_server(), 1, "/ledgers", "requests_in_flight_max = 4", "");
    let ledger = cluster.new_ledger(1);
    let mut conn = Raw::connect(cluster.bookies[0].addr());
    let mut frames = Vec::new();
    for e in 0..64 {
        logtank_bookie_proto::encode_request(&mut frames, &add_request(ledger, e, b"burst"));
    }
    conn.send_bytes(&frames);
    let statuses: Vec<Status> = (0..64).map(|_| conn.recv().unwrap().status).collect();
    assert!(statuses.contains(&Status::ETOOMANYREQUESTS), "{statuses:?}");
    assert!(statuses.iter().filter(|s| s.is_ok()).count() >= 4, "{statuses:?}");
    assert!(statuses
        .iter()
        .all(|s| s.is_ok() || *s == Status::ETOOMANYREQUESTS));
}

// Proves a ledger's state is durable across restarts: a fence (plain adds refused, recovery adds accepted)
// and an explicit LAC both survive kill -9; and a connection idle longer than bookie.idle_timeout_ms is
// closed while a busy one is not.
#[test]
fn fences_and_explicit_lacs_survive_kill9_and_idle_connections_close() {
    let mut cluster = Cluster::start_with(&default_server(), 1, "/ledgers", "idle_timeout_ms = 1500", "");
    let ledger = cluster.new_ledger(1);
    let key = master_key(b"pw");
    let mut raw = Raw::connect(cluster.bookies[0].addr());
    assert_eq!(
        raw.call(&add_request(ledger, 0, b"before the fence")).status,
        Status::EOK
    );
    let write_lac = Request::WriteLac(logtank_bookie_proto::WriteLacRequest {
        master_key: key,
        ledger_id: ledger,
        lac: 0,
    });
    assert_eq!(raw.call(&write_lac).status, Status::EOK);
    let fence = raw.call(&Request::Read(ReadRequest::fencing(ledger, LAST_ENTRY, key)));
    assert_eq!(
        fence.status,
        Status::EOK,
        "the fencing read returns the last entry"
    );
    assert_eq!(
        logtank_bookie_proto::parse_entry(&fence.body)
            .unwrap()
            .header
            .entry_id,
        0
    );

    cluster.bookies[0].process.restart_after_kill9();
    let mut raw = Raw::connect(cluster.bookies[0].addr());
    assert_eq!(
        raw.call(&add_request(ledger, 1, b"after")).status,
        Status::EFENCED,
        "the fence survived"
    );
    let Request::Add(mut recovery) = add_request(ledger, 1, b"recovered") else {
        unreachable!()
    };
    recovery.flags = logtank_bookie_proto::FLAG_RECOVERY_ADD;
    assert_eq!(
        raw.call(&Request::Add(recovery)).status,
        Status::EOK,
        "recovery adds pass the fence"
    );
    let lac = raw.call(&Request::ReadLac(logtank_bookie_proto::ReadLacRequest {
        ledger_id: ledger,
    }));
    assert_eq!(lac.status, Status::EOK);
    let body = logtank_bookie_proto::ReadLacBody::decode(&lac.body).unwrap();
    assert_eq!(body.explicit_lac, 0, "the explicit LAC survived");
    let last = logtank_bookie_proto::parse_entry(body.last_entry.unwrap()).unwrap();
    assert_eq!((last.header.entry_id, last.payload), (1, &b"recovered"[..]));

    // Idle: closed after the timeout; a connection that keeps talking stays open.
    let mut idle = Raw::connect(cluster.bookies[0].addr());
    let started = std::time::Instant::now();
    assert!(idle.recv().is_none(), "the idle connection is closed");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "closed too early: {:?}",
        started.elapsed()
    );
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            raw.call(&Request::Read(ReadRequest::plain(ledger, 0))).status,
            Status::EOK
        );
    }
}

// Proves SIGHUP reloads the config: `bookie.readonly = true` added to the file moves the bookie to
// available/readonly without a restart, and taking it out moves it back.
#[test]
fn sighup_reloads_readonly_from_the_config() {
    let cluster = Cluster::start(&default_server(), 1);
    let b = &cluster.bookies[0];
    let original = std::fs::read_to_string(&b.config).unwrap();
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(b.process.pid()),
            nix::sys::signal::SIGHUP,
        )
        .unwrap()
    };
    std::fs::write(&b.config, format!("{original}readonly = true\n")).unwrap();
    hup();
    wait_for("readonly after the reload", Duration::from_secs(20), || {
        cluster.registered().1.contains(&b.id)
    });
    std::fs::write(&b.config, &original).unwrap();
    hup();
    wait_for(
        "writable after the second reload",
        Duration::from_secs(20),
        || cluster.registered().0.contains(&b.id),
    );
    assert!(
        b.process.log_text().contains("configuration reloaded"),
        "{}",
        b.process.log_text()
    );
}

// Proves the bookies' registrations and the ledger metadata survive the death of the leader of a
// three-server ZooKeeper ensemble (Debian's, on this machine): a ledger written before is read back after,
// new ledgers are created and written under the new leader, every bookie is registered, and the killed
// server rejoins.
#[test]
fn an_ensemble_that_loses_its_leader_keeps_bookies_and_ledgers() {
    if !logtank_coord::test_support::ensemble_tests_enabled() {
        return;
    }
    let mut cluster = Cluster::start(&ServerKind::ZooKeeperEnsemble, 3);
    let (before, written) = cluster.write_ledger(3, 2, 2, 200);
    let killed = cluster.server.kill_leader();
    eprintln!("--- killed ensemble server {killed}");
    let bookies = |cluster: &Cluster| {
        cluster
            .block_on(logtank_ledger::admin::list_bookies(
                &cluster.coord.client(),
                &cluster.layout,
            ))
            .map(|(writable, _)| writable.len())
            .unwrap_or(0)
    };
    wait_for(
        "three bookies registered under the new leader",
        Duration::from_secs(60),
        || bookies(&cluster) == 3,
    );
    let metadata = cluster.block_on(cluster.client.metadata(before)).unwrap();
    assert_eq!(metadata.state, LedgerState::Closed);
    assert_eq!(cluster.read_ledger(before, false), written);
    let (after, written) = cluster.write_ledger(3, 3, 2, 200);
    assert_eq!(cluster.read_ledger(after, false), written);
    cluster.server.restart_member(killed);
    assert_eq!(bookies(&cluster), 3);
    let (_, _) = cluster.write_ledger(3, 2, 2, 50);
}
