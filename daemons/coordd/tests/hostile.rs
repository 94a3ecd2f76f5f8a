//! What one hostile (or broken) client can try against coordd, over a real socket: each test is the
//! regression test of a defect found in review (issue 13, "hostile clients"). None of it may stop the
//! server, slow it down for others, or get a refused write applied later.
#![allow(clippy::unwrap_used)]

mod common;

use logtank_testkit::assert_closed_by_server;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Server};
use logtank_zk::{err, perms, Acl, CreateKind, CreateRequest, Id, MultiOp, Request, SetWatches};

fn server(extra: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), extra);
    (dir, server)
}

fn create_with_acl(path: &str, data: &[u8], acl: Vec<Acl>) -> Request {
    Request::Create(CreateRequest {
        kind: CreateKind::Create,
        path: path.into(),
        data: Some(data.to_vec()),
        acl,
        flags: 0,
        ttl_ms: 0,
    })
}

fn add_digest(c: &mut Client, user_password: &str) -> i32 {
    c.send(&Request::Auth {
        scheme: "digest".into(),
        auth: user_password.as_bytes().to_vec(),
    });
    c.recv().map_or(i32::MIN, |r| r.err)
}

/// A multi whose setData is refused with NOAUTH replies with per-op errors and changes nothing; it was
/// logged as the request it was, and replay (which checks no ACLs) applied it at the next restart.
#[test]
fn a_multi_refused_by_an_acl_stays_refused_after_a_restart() {
    let (_dir, server) = server("");
    let mut owner = Client::connect(server.addr, 10_000);
    let read_only = vec![Acl {
        perms: perms::READ,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }];
    assert_eq!(
        owner
            .call(&create_with_acl("/locked", b"original", read_only))
            .err,
        0
    );
    let mut intruder = Client::connect(server.addr, 10_000);
    let multi = Request::Multi(vec![
        MultiOp::Create(CreateRequest {
            kind: CreateKind::Create,
            path: "/side-effect".into(),
            data: Some(b"x".to_vec()),
            acl: vec![Acl::world_all()],
            flags: 0,
            ttl_ms: 0,
        }),
        MultiOp::SetData {
            path: "/locked".into(),
            data: Some(b"overwritten".to_vec()),
            version: -1,
        },
    ]);
    let reply = intruder.call(&multi);
    // A failed multi replies OK in the header; its results carry the op's NOAUTH.
    assert_eq!(reply.err, 0);
    let noauth = err::NO_AUTH.to_be_bytes();
    assert!(
        reply.body.windows(4).any(|w| w == noauth),
        "the multi's results name NOAUTH: {:?}",
        reply.body
    );
    assert_eq!(intruder.get("/locked").unwrap().0, b"original");
    assert_eq!(intruder.get("/side-effect").unwrap_err(), err::NO_NODE);
    drop((owner, intruder));

    let server = server.restart();
    let mut c = Client::connect(server.addr, 10_000);
    assert_eq!(
        c.get("/locked").unwrap().0,
        b"original",
        "replay applied a refused multi"
    );
    assert_eq!(c.get("/side-effect").unwrap_err(), err::NO_NODE);
    // And the zxid the failed multi took is still accounted for: new writes go on after it.
    assert_eq!(c.create("/after", b"", 0).err, 0);
}

/// `addauth` adds identities a connection holds for its life; every ACL check walks them. Past
/// `IDS_PER_CONNECTION_MAX` (32, its ip id included) it fails and the connection is closed, as for any
/// failed addauth.
#[test]
fn addauth_identities_are_bounded_per_connection() {
    let (_dir, server) = server("");
    let mut c = Client::connect(server.addr, 10_000);
    for i in 0..31 {
        assert_eq!(add_digest(&mut c, &format!("user{i}:pw")), 0, "identity {i}");
    }
    // The same identity again is not a new one.
    assert_eq!(add_digest(&mut c, "user0:pw"), 0);
    assert_eq!(add_digest(&mut c, "one-too-many:pw"), err::AUTH_FAILED);
    assert_closed_by_server(&mut c.stream, Duration::from_secs(10), "after a refused addauth");
    // The server goes on for everyone else.
    let mut other = Client::connect(server.addr, 10_000);
    assert_eq!(other.create("/alive", b"", 0).err, 0);
    server.wait_log("identities; addauth refused");
}

/// A create whose `auth` ACL entries resolve to every identity the session holds fits in a frame but
/// not in a log record: that must be the client's error, not an append failure that stops the server.
#[test]
fn a_write_too_large_for_the_log_is_refused_and_the_server_lives() {
    let (_dir, mut server) = server("[limits]\nframe_bytes_max = 65536\n");
    let mut c = Client::connect(server.addr, 10_000);
    let long_user = "u".repeat(2000);
    for i in 0..30 {
        assert_eq!(add_digest(&mut c, &format!("{long_user}{i}:pw")), 0);
    }
    // 31 distinct `auth` entries × 30 identities × ~2 KB each: about 1.9 MB once resolved.
    let acl: Vec<Acl> = (1..=31)
        .map(|p| Acl {
            perms: p,
            id: Id {
                scheme: "auth".into(),
                id: String::new(),
            },
        })
        .collect();
    let started = Instant::now();
    let reply = c.call(&create_with_acl("/huge-acl", b"", acl.clone()));
    assert_eq!(reply.err, err::BAD_ARGUMENTS);
    // Resolving the ACL stays linear in its size: no quadratic dedup of ~900 entries.
    assert!(started.elapsed() < Duration::from_secs(10));
    let multi = Request::Multi(vec![MultiOp::Create(CreateRequest {
        kind: CreateKind::Create,
        path: "/huge-acl-in-multi".into(),
        data: None,
        acl,
        flags: 0,
        ttl_ms: 0,
    })]);
    assert_eq!(c.call(&multi).err, err::BAD_ARGUMENTS);
    assert_eq!(
        c.create("/after", b"v", 0).err,
        0,
        "the same session still writes"
    );
    assert!(server.is_running());
    let server = server.restart();
    let mut c = Client::connect(server.addr, 10_000);
    assert_eq!(c.get("/huge-acl").unwrap_err(), err::NO_NODE);
    assert_eq!(c.get("/after").unwrap().0, b"v");
}

/// setWatches after a reconnect could add any number of watches past `limits.watches_per_session_max`.
#[test]
fn set_watches_respects_the_per_session_watch_limit() {
    let (_dir, server) = server("[limits]\nwatches_per_session_max = 3\n");
    let mut c = Client::connect(server.addr, 10_000);
    for i in 0..10 {
        assert_eq!(c.create(&format!("/w{i}"), b"", 0).err, 0);
    }
    let sw = SetWatches {
        relative_zxid: i64::MAX >> 1,
        data: (0..10).map(|i| format!("/w{i}")).collect(),
        exist: (0..10).map(|i| format!("/absent{i}")).collect(),
        child: Vec::new(),
        persistent: Vec::new(),
        persistent_recursive: Vec::new(),
    };
    c.send_raw_request(logtank_zk::xid::SET_WATCHES, &Request::SetWatches(sw));
    let reply = c.recv().unwrap();
    assert_eq!(reply.err, err::THROTTLED_OP);
    // The session holds exactly the limit: wchc lists its watches.
    let text = String::from_utf8(common::raw_exchange(server.addr, b"wchs")).unwrap();
    assert!(
        text.contains("3 watches") || text.contains("Total watches:3"),
        "{text}"
    );
}

/// A socket that connects and sends nothing held a per-IP slot for ever.
#[test]
fn a_connection_without_a_handshake_is_closed() {
    let (_dir, server) = server("[limits]\nhandshake_timeout_ms = 300\n");
    let mut idle = TcpStream::connect(server.addr).unwrap();
    assert_closed_by_server(&mut idle, Duration::from_secs(10), "an idle socket");
    // Half a handshake is no better.
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(&[0, 0, 0, 44, 0, 0]).unwrap();
    assert_closed_by_server(&mut half, Duration::from_secs(10), "a half-sent handshake");
    server.wait_log("no handshake within 300 ms");
    let mut c = Client::connect(server.addr, 10_000);
    assert_eq!(c.create("/alive", b"", 0).err, 0);
}

/// A client that sends requests and reads none of the replies: once its queued replies pass
/// `limits.outbound_bytes_max` the server closes it, even though its writer is blocked on a full socket
/// (a `Close` queued behind the unwritten replies was never reached, so the socket stayed open).
#[test]
fn a_client_that_never_reads_is_disconnected() {
    let (_dir, server) = server("[limits]\noutbound_bytes_max = 1048576\nwrite_stall_timeout_ms = 60000\n");
    let mut c = Client::connect(server.addr, 30_000);
    let big = vec![7u8; 500_000];
    assert_eq!(c.create("/big", &big, 0).err, 0);
    // Pipeline reads of the big node without reading a byte back: far more than the kernel's socket
    // buffers and the outbound bound together.
    let get = Request::GetData {
        path: "/big".into(),
        watch: false,
    };
    c.stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..200 {
        let mut w = logtank_zk::jute::Writer::frame();
        w.i32(1).i32(get.opcode());
        get.encode_body(&mut w);
        if c.stream.write_all(&w.finish_frame()).is_err() {
            break;
        }
    }
    common::wait_for("the slow reader to be cut off", || {
        server.log().contains("bytes of replies unread")
    });
    assert_closed_by_server(
        &mut c.stream,
        Duration::from_secs(20),
        "a client that never reads",
    );
    let mut other = Client::connect(server.addr, 10_000);
    assert_eq!(other.create("/alive", b"", 0).err, 0);
}
