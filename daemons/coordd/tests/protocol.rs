//! coordd over real sockets with hostile and unusual input: truncated and oversized frames, garbage
//! opcodes, invalid paths, deep and wide trees, the per-IP connection limit, the watch limit, the old
//! 44-byte handshake, four-letter words, expired sessions. Each must give a clear error or a clean close,
//! and the server must keep serving everyone else.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{raw_exchange, wait_for, Client, Server};
use logtank_zk::jute::{Reader, Writer};
use logtank_zk::{err, ConnectRequest, Request};

fn server(extra: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), extra);
    (dir, server)
}

#[test]
fn bad_frames_close_only_their_connection() {
    let (_dir, mut server) = server("[limits]\nframe_bytes_max = 4096\n");
    let mut good = Client::connect(server.addr, 10_000);
    assert_eq!(good.create("/ok", b"1", 0).err, 0);

    // A length over the limit, a negative length, a truncated frame, garbage after a valid handshake.
    for bytes in [
        (1_000_000i32).to_be_bytes().to_vec(),
        (-7i32).to_be_bytes().to_vec(),
        {
            let mut v = 100i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[1, 2, 3]);
            v
        },
    ] {
        assert!(raw_exchange(server.addr, &bytes).is_empty());
    }
    let mut c = Client::connect(server.addr, 10_000);
    let mut w = Writer::frame();
    w.i32(1).i32(1).i32(i32::MAX); // create with a path length far beyond the frame
    c.stream.write_all(&w.finish_frame()).unwrap();
    assert!(c.recv().is_none(), "an undecodable request closes the connection");

    // An oversized request on an established session closes it too.
    let mut c = Client::connect(server.addr, 10_000);
    c.send(&common::create_req("/big", &vec![7u8; 8192], 0));
    assert!(c.recv().is_none());

    assert_eq!(good.get("/ok").unwrap().0, b"1");
    assert!(server.is_running());
}

#[test]
fn unknown_opcodes_get_unimplemented_and_the_connection_stays() {
    let (_dir, _server) = server("");
    let mut c = Client::connect(_server.addr, 10_000);
    for code in [99, -1, 1000, 16] {
        let r = c.call(&Request::Unknown(code));
        assert_eq!(r.err, err::UNIMPLEMENTED, "opcode {code}");
    }
    assert_eq!(c.create("/still", b"", 0).err, 0);
}

#[test]
fn invalid_paths_are_rejected_like_zookeeper() {
    let (_dir, server) = server("");
    let mut c = Client::connect(server.addr, 10_000);
    assert_eq!(c.create("/a", b"", 0).err, 0);
    for (path, code) in [
        ("/a/", err::BAD_ARGUMENTS),
        ("a", err::BAD_ARGUMENTS),
        ("/a/\0b", err::BAD_ARGUMENTS),
        ("/a/.", err::BAD_ARGUMENTS),
        // The parent lookup comes first, as in ZooKeeper.
        ("/a/./b", err::NO_NODE),
        ("/missing/child", err::NO_NODE),
        ("/a", err::NODE_EXISTS),
        ("/zookeeper", err::NODE_EXISTS),
    ] {
        assert_eq!(c.create(path, b"", 0).err, code, "create {path:?}");
    }
    assert_eq!(
        c.call(&Request::Delete {
            path: "/zookeeper".into(),
            version: -1
        })
        .err,
        err::BAD_ARGUMENTS
    );
    assert_eq!(c.get("//").unwrap_err(), err::NO_NODE);
    // Every failed write still took a zxid, as in ZooKeeper.
    let before = c.call(&Request::Sync { path: "/".into() }).zxid;
    assert_eq!(c.create("/a/", b"", 0).err, err::BAD_ARGUMENTS);
    let after = c.call(&Request::Sync { path: "/".into() }).zxid;
    assert_eq!(after, before + 1);
}

#[test]
fn deep_and_wide_trees() {
    let (_dir, mut server) = server("");
    let mut c = Client::connect(server.addr, 10_000);
    let mut path = String::new();
    for i in 0..500 {
        path.push_str(&format!("/d{i}"));
        c.send(&common::create_req(&path, b"", 0));
    }
    for i in 0..5000 {
        c.send(&common::create_req(&format!("/d0/w{i}"), &[1u8; 100], 0));
    }
    for _ in 0..5500 {
        assert_eq!(c.recv().unwrap().err, 0);
    }
    assert_eq!(c.children("/d0").unwrap().len(), 5001);
    let r = c.call(&Request::GetAllChildrenNumber { path: "/d0".into() });
    assert_eq!(Reader::new(&r.body).i32().unwrap(), 5000 + 499);
    assert_eq!(c.get(&path).unwrap().1.num_children, 0);
    // The tree survives a restart (log replay: no snapshot is due yet).
    drop(c);
    server = server.restart();
    let mut c = Client::connect(server.addr, 10_000);
    assert_eq!(c.children("/d0").unwrap().len(), 5001);
    assert!(c.get(&path).is_ok());
}

#[test]
fn connection_and_watch_limits() {
    let (_dir, server) = server("[limits]\nconnections_per_ip_max = 3\nwatches_per_session_max = 2\n");
    let clients: Vec<Client> = (0..3).map(|_| Client::connect(server.addr, 10_000)).collect();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let req = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms: 10_000,
        session_id: 0,
        password: vec![0; 16],
        read_only: Some(false),
    };
    let _ = s.write_all(&req.encode());
    let mut buf = [0u8; 64];
    assert!(
        matches!(std::io::Read::read(&mut s, &mut buf), Ok(0) | Err(_)),
        "4th connection refused"
    );
    drop(clients);
    let mut connected = None;
    wait_for("a connection slot to free up", || {
        connected = Client::resume(server.addr, 10_000, 0, vec![0; 16]).ok();
        connected.is_some()
    });
    let mut c = connected.unwrap();
    for (i, path) in ["/w1", "/w2", "/w3"].iter().enumerate() {
        let r = c.call(&Request::Exists {
            path: (*path).into(),
            watch: true,
        });
        let want = if i < 2 { err::NO_NODE } else { err::THROTTLED_OP };
        assert_eq!(r.err, want, "{path}");
    }
}

#[test]
fn old_44_byte_handshake_gets_a_36_byte_reply() {
    let (_dir, server) = server("");
    let req = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms: 1,
        session_id: 0,
        password: vec![0; 16],
        read_only: None,
    };
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&req.encode()).unwrap();
    let mut reply = [0u8; 40];
    std::io::Read::read_exact(&mut s, &mut reply).unwrap();
    assert_eq!(i32::from_be_bytes(reply[..4].try_into().unwrap()), 36);
    let mut r = Reader::new(&reply[4..]);
    assert_eq!(r.i32().unwrap(), 0);
    // A 1 ms request is raised to the minimum, 2 ticks (the tests use 200 ms ticks).
    assert_eq!(r.i32().unwrap(), 400);
}

#[test]
fn expired_or_unknown_sessions_are_refused_and_ephemerals_go() {
    let (_dir, server) = server("");
    assert!(Client::resume(server.addr, 10_000, 0x1234, vec![0; 16]).is_err());
    let mut owner = Client::connect(server.addr, 400);
    assert_eq!(owner.create("/e", b"", 1).err, 0);
    let (id, pw) = (owner.session_id, owner.password.clone());
    assert!(
        Client::resume(server.addr, 400, id, vec![9; 16]).is_err(),
        "wrong password"
    );
    let mut watcher = Client::connect(server.addr, 10_000);
    assert_eq!(
        watcher
            .call(&Request::Exists {
                path: "/e".into(),
                watch: true
            })
            .err,
        0
    );
    drop(owner);
    // The session times out (400 ms + up to a tick), then the watcher hears of the deletion.
    wait_for("the session to expire", || {
        watcher
            .call(&Request::Exists {
                path: "/e".into(),
                watch: false,
            })
            .err
            == err::NO_NODE
    });
    assert_eq!(
        watcher.events,
        vec![(logtank_zk::event::NODE_DELETED, "/e".to_string())]
    );
    assert!(
        Client::resume(server.addr, 400, id, pw).is_err(),
        "expired session refused"
    );
}

#[test]
fn four_letter_words_and_whitelist() {
    let (_dir, server) =
        server("[four_letter_words]\nwhitelist = [\"ruok\", \"srvr\", \"envi\", \"mntr\"]\n");
    assert_eq!(raw_exchange(server.addr, b"ruok"), b"imok");
    let srvr = String::from_utf8(raw_exchange(server.addr, b"srvr")).unwrap();
    assert!(
        srvr.contains("Mode: standalone") && srvr.contains("Node count: 4"),
        "{srvr}"
    );
    let envi = String::from_utf8(raw_exchange(server.addr, b"envi")).unwrap();
    assert!(envi.contains("zookeeper.version=3.8."), "{envi}");
    let mntr = String::from_utf8(raw_exchange(server.addr, b"mntr")).unwrap();
    assert!(mntr.contains("zk_znode_count\t4"), "{mntr}");
    let wchs = String::from_utf8(raw_exchange(server.addr, b"wchs")).unwrap();
    assert_eq!(wchs, "wchs is not executed because it is not in the whitelist.\n");
}

fn ttl_create(path: &str, flags: i32, ttl_ms: i64, kind: logtank_zk::CreateKind) -> Request {
    Request::Create(logtank_zk::CreateRequest {
        kind,
        path: path.into(),
        data: None,
        acl: vec![logtank_zk::Acl::world_all()],
        flags,
        ttl_ms,
    })
}

#[test]
fn persistent_and_recursive_watches_and_set_watches() {
    use logtank_zk::event::*;
    let (_dir, server) = server("");
    let mut w = Client::connect(server.addr, 10_000);
    let mut c = Client::connect(server.addr, 10_000);
    assert_eq!(
        w.call(&Request::AddWatch {
            path: "/p".into(),
            mode: 0
        })
        .err,
        0
    );
    assert_eq!(
        w.call(&Request::AddWatch {
            path: "/r".into(),
            mode: 1
        })
        .err,
        0
    );
    assert_eq!(
        w.call(&Request::CheckWatches {
            path: "/p".into(),
            watch_type: 4
        })
        .err,
        0
    );
    assert_eq!(
        w.call(&Request::CheckWatches {
            path: "/p".into(),
            watch_type: 1
        })
        .err,
        err::NO_WATCHER
    );
    for path in ["/p", "/p/c", "/r", "/r/a", "/r/a/b"] {
        assert_eq!(c.create(path, b"", 0).err, 0);
    }
    assert_eq!(
        c.call(&Request::SetData {
            path: "/p".into(),
            data: None,
            version: -1
        })
        .err,
        0
    );
    assert_eq!(
        c.call(&Request::SetData {
            path: "/p".into(),
            data: None,
            version: -1
        })
        .err,
        0
    );
    w.call(&Request::Sync { path: "/".into() });
    let s = |v: &[(i32, &str)]| v.iter().map(|(t, p)| (*t, p.to_string())).collect::<Vec<_>>();
    // Persistent on /p: its own events and its children's list; recursive on /r: never NodeChildrenChanged.
    assert_eq!(
        w.events,
        s(&[
            (NODE_CREATED, "/p"),
            (NODE_CHILDREN_CHANGED, "/p"),
            (NODE_CREATED, "/r"),
            (NODE_CREATED, "/r/a"),
            (NODE_CREATED, "/r/a/b"),
            (NODE_DATA_CHANGED, "/p"),
            (NODE_DATA_CHANGED, "/p"),
        ])
    );
    w.events.clear();
    assert_eq!(
        w.call(&Request::RemoveWatches {
            path: "/p".into(),
            watch_type: 3
        })
        .err,
        0
    );
    assert_eq!(
        w.call(&Request::RemoveWatches {
            path: "/p".into(),
            watch_type: 3
        })
        .err,
        err::NO_WATCHER
    );
    assert_eq!(
        c.call(&Request::SetData {
            path: "/p".into(),
            data: None,
            version: -1
        })
        .err,
        0
    );
    w.call(&Request::Sync { path: "/".into() });
    assert!(w.events.is_empty(), "{:?}", w.events);

    // setWatches2 after a "reconnect": what changed since relative_zxid fires at once, the rest registers.
    let mut again = Client::connect(server.addr, 10_000);
    let zxid = again.call(&Request::Sync { path: "/".into() }).zxid;
    assert_eq!(
        c.call(&Request::SetData {
            path: "/r/a".into(),
            data: None,
            version: -1
        })
        .err,
        0
    );
    let sw = logtank_zk::SetWatches {
        relative_zxid: zxid,
        data: vec!["/r/a".into(), "/r".into(), "/gone".into()],
        exist: vec!["/p/c".into(), "/later".into()],
        child: vec!["/r".into()],
        persistent: vec![],
        persistent_recursive: vec!["/r".into()],
    };
    assert_eq!(again.call(&Request::SetWatches(sw)).err, 0);
    assert_eq!(
        again.events,
        s(&[
            (NODE_DATA_CHANGED, "/r/a"),
            (NODE_DELETED, "/gone"),
            (NODE_CREATED, "/p/c")
        ])
    );
    again.events.clear();
    assert_eq!(c.create("/later", b"", 0).err, 0);
    assert_eq!(c.create("/r/z", b"", 0).err, 0);
    again.call(&Request::Sync { path: "/".into() });
    assert_eq!(
        again.events,
        s(&[
            (NODE_CREATED, "/later"),
            (NODE_CREATED, "/r/z"),
            (NODE_CHILDREN_CHANGED, "/r")
        ])
    );
}

#[test]
fn containers_ttl_multiread_and_ephemerals() {
    use logtank_zk::CreateKind::{Container, Create, Ttl};
    let (_dir, server) = server("[limits]\nttl_nodes_enabled = true\ncontainer_check_interval_ms = 100\n");
    let mut c = Client::connect(server.addr, 10_000);
    assert_eq!(c.call(&ttl_create("/cont", 4, 0, Container)).err, 0);
    assert_eq!(
        c.call(&ttl_create("/cont", 5, 100, Create)).err,
        err::BAD_ARGUMENTS,
        "TTL needs createTTL"
    );
    assert_eq!(
        c.call(&ttl_create("/t0", 5, 0, Ttl)).err,
        err::BAD_ARGUMENTS,
        "TTL of 0"
    );
    assert_eq!(c.call(&ttl_create("/ttl", 5, 300, Ttl)).err, 0);
    assert_eq!(
        c.get("/ttl").unwrap().1.ephemeral_owner,
        0,
        "TTL nodes report no owner"
    );
    assert_eq!(c.create("/cont/child", b"", 0).err, 0);
    assert_eq!(c.create("/e1", b"", 1).err, 0);
    assert_eq!(c.create("/cont/e2", b"", 1).err, 0);
    let r = c.call(&Request::GetEphemerals {
        prefix: "/cont".into(),
    });
    assert_eq!(
        Reader::new(&r.body).strings().unwrap(),
        vec!["/cont/e2".to_string()]
    );
    let r = c.call(&Request::MultiRead(vec![
        logtank_zk::ReadOp::GetChildren { path: "/cont".into() },
        logtank_zk::ReadOp::GetData { path: "/nope".into() },
    ]));
    assert_eq!(r.err, 0);
    assert_eq!(
        c.call(&Request::Delete {
            path: "/cont/child".into(),
            version: -1
        })
        .err,
        0
    );
    assert_eq!(
        c.call(&Request::Delete {
            path: "/cont/e2".into(),
            version: -1
        })
        .err,
        0
    );
    // The emptied container and the idle TTL node are removed by the server within a few checks.
    wait_for("the container and the TTL node to go", || {
        c.get("/cont") == Err(err::NO_NODE) && c.get("/ttl") == Err(err::NO_NODE)
    });
    let (_dir2, plain) = self::server("");
    let mut c = Client::connect(plain.addr, 10_000);
    assert_eq!(
        c.call(&ttl_create("/ttl", 5, 300, Ttl)).err,
        err::UNIMPLEMENTED,
        "TTL nodes off by default"
    );
}

#[test]
fn admin_port_reports_the_tree() {
    let (_dir, server) = server("");
    let mut c = Client::connect(server.addr, 10_000);
    assert_eq!(c.create("/x", b"", 0).err, 0);
    let log = server.log();
    let admin = log
        .split(", admin ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let get = |path: &str| {
        let mut s = TcpStream::connect(&admin).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    };
    assert!(get("/ping").ends_with("pong"));
    assert!(get("/metrics").contains("logtank_coordd_transactions_total"));
    // The status refreshes once a second.
    wait_for("/status to show the new node", || {
        let status = get("/status");
        status.contains("\"znodes\":5") && status.contains("\"sessions\":1")
    });
}
