//! The writer's registration against a real coordination server (Debian's ZooKeeper; logtank-coordd too
//! when `LOGTANK_COORDD` names it), reached through a proxy the test cuts and heals: the writer starts and
//! serves while coordination is unreachable, registers once it answers, keeps serving through a partition
//! long enough to expire its session, registers again after it, and deregisters at shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;

use common::*;
use logtank_coord::test_support::{for_each_server, TcpProxy, TestServer};
use logtank_coord::zookeeper_client::Client as ZkClient;

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The node's data, or `None` when it does not exist; a fresh session each time, standing in for an index
/// engine or an operator looking.
fn node(server: &TestServer, path: &str) -> Option<String> {
    block_on(async {
        let client = ZkClient::connect(&server.connect_string()).await.unwrap();
        match client.get_data(path).await {
            Ok((data, _)) => Some(String::from_utf8(data).unwrap()),
            Err(logtank_coord::ZkError::NoNode) => None,
            Err(e) => panic!("get {path}: {e}"),
        }
    })
}

// Proves the writer never needs coordination to accept writes and that its registration follows
// coordination: absent while unreachable, present once it answers, gone with an expired session, back
// after it, removed at a clean stop.
#[test]
fn registration_follows_coordination_and_writes_never_wait_for_it() {
    for_each_server(|server| {
        let proxy = TcpProxy::start(server.port());
        proxy.cut();
        let dir = tempfile::tempdir().unwrap();
        let extra = format!(
            "[coord]\nservers = \"{}\"\nsession_timeout_ms = 4000\nconnect_timeout_ms = 2000\n",
            proxy.connect_string()
        );
        let mut w = Writer::start(dir.path(), &extra, &[]);
        let name = format!("127.0.0.1:{}", w.addr.port());
        let path = format!("/logtank/services/storage/{name}");
        let mut c = w.client();
        let mut sent = 0;
        let mut send = |c: &mut logtank_thrift::Client| {
            c.send_batch(&batch("idx", &format!("b{sent}"), 2)).unwrap();
            sent += 1;
        };

        // Unreachable at start: serving anyway, not registered.
        send(&mut c);
        assert_eq!(status(w.admin)["coordination"], "connecting");
        assert_eq!(node(server, &path), None);

        proxy.heal();
        wait_for("the registration", || node(server, &path).is_some());
        assert_eq!(node(server, &path).as_deref(), Some(name.as_str()));
        assert_eq!(status(w.admin)["coordination"], format!("registered {path}"));
        send(&mut c);

        // A partition longer than the session: the server expires the session and its node; writes go on.
        proxy.cut();
        wait_for("the session to expire", || {
            send(&mut c);
            node(server, &path).is_none()
        });
        send(&mut c);
        proxy.heal();
        wait_for("the registration to come back", || node(server, &path).is_some());
        w.wait_log(&format!("registered {path} again"));
        send(&mut c);

        w.stop();
        assert!(
            w.log_text().contains(&format!("deregistered {path}")),
            "{}",
            w.log_text()
        );
        assert_eq!(node(server, &path), None);
        let batches = read_raw_log(dir.path()).len();
        assert_eq!(batches, sent);
    });
}
