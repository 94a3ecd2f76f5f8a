//! The writer's registration against a real coordination server (Debian's ZooKeeper; logtank-coordd too
//! when `LOGTANK_COORDD` names it), reached through a proxy the test cuts and heals: the writer starts and
//! serves while coordination is unreachable, registers once it answers, keeps serving through a partition
//! long enough to expire its session, registers again after it, and deregisters at shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use logtank_coord::test_support::{daemon_coord_section, for_each_server, TcpProxy};

// Proves the writer never needs coordination to accept writes and that its registration follows
// coordination: absent while unreachable, present once it answers, gone with an expired session, back
// after it, removed at a clean stop.
#[test]
fn registration_follows_coordination_and_writes_never_wait_for_it() {
    for_each_server(|server| {
        let proxy = TcpProxy::start(server.port());
        proxy.cut();
        let dir = tempfile::tempdir().unwrap();
        let extra = daemon_coord_section(&proxy.connect_string());
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
        assert_eq!(server.node_data(&path), None);

        proxy.heal();
        wait_for("the registration", || server.node_data(&path).is_some());
        assert_eq!(server.node_data(&path).as_deref(), Some(name.as_str()));
        assert_eq!(status(w.admin)["coordination"], format!("registered {path}"));
        send(&mut c);

        // A partition longer than the session: the server expires the session and its node; writes go on.
        proxy.cut();
        wait_for("the session to expire", || {
            send(&mut c);
            server.node_data(&path).is_none()
        });
        send(&mut c);
        proxy.heal();
        wait_for("the registration to come back", || {
            server.node_data(&path).is_some()
        });
        w.wait_log(&format!("registered {path} again"));
        send(&mut c);

        w.stop();
        assert!(
            w.log_text().contains(&format!("deregistered {path}")),
            "{}",
            w.log_text()
        );
        assert_eq!(server.node_data(&path), None);
        let batches = read_raw_log(dir.path()).len();
        assert_eq!(batches, sent);
    });
}
