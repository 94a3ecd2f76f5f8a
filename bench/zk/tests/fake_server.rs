//! zk-bench against an in-process ZooKeeper-protocol server built from the `logtank-zk` codecs: a tree in a
//! map, replies in request order. Proves the load tool's pipelining, reply matching, phase accounting and
//! key-space bookkeeping, without timing anything.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use logtank_bench_zk::{run_async, Args, Phase};
use logtank_zk::frame::{next_frame, Frame, FRAME_BYTES_MAX_DEFAULT};
use logtank_zk::{encode_reply, err, ConnectRequest, ConnectResponse, Request, Response, Stat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Tree = Arc<Mutex<HashMap<String, Vec<u8>>>>;

fn answer(tree: &Tree, req: Request) -> (i32, Response) {
    let mut t = tree.lock().unwrap();
    let stat = |data: &[u8]| Stat {
        data_length: data.len() as i32,
        ..Stat::default()
    };
    match req {
        Request::Create(c) => {
            if t.contains_key(&c.path) {
                return (err::NODE_EXISTS, Response::Empty);
            }
            t.insert(c.path.clone(), c.data.unwrap_or_default());
            (0, Response::Create { path: c.path })
        }
        Request::SetData { path, data, .. } => match t.get_mut(&path) {
            Some(d) => {
                *d = data.unwrap_or_default();
                (0, Response::Stat(stat(d)))
            }
            None => (err::NO_NODE, Response::Empty),
        },
        Request::GetData { path, .. } => match t.get(&path) {
            Some(d) => (
                0,
                Response::GetData {
                    data: Some(d.clone()),
                    stat: stat(d),
                },
            ),
            None => (err::NO_NODE, Response::Empty),
        },
        Request::Delete { path, .. } => {
            let prefix = format!("{path}/");
            if t.keys().any(|k| k.starts_with(&prefix)) {
                return (err::NOT_EMPTY, Response::Empty);
            }
            match t.remove(&path) {
                Some(_) => (0, Response::Empty),
                None => (err::NO_NODE, Response::Empty),
            }
        }
        Request::CloseSession | Request::Ping => (0, Response::Empty),
        _ => (err::UNIMPLEMENTED, Response::Empty),
    }
}

async fn serve(mut s: TcpStream, tree: Tree) {
    let mut buf = Vec::new();
    let mut handshaken = false;
    loop {
        let mut consumed = 0;
        let mut out = Vec::new();
        while let Ok(Frame::Complete { payload, used }) =
            next_frame(&buf[consumed..], FRAME_BYTES_MAX_DEFAULT)
        {
            consumed += used;
            if !handshaken {
                let req = ConnectRequest::decode(payload).unwrap();
                let resp = ConnectResponse {
                    timeout_ms: req.timeout_ms,
                    session_id: 0x42,
                    password: [1; 16],
                    with_read_only: req.read_only.is_some(),
                };
                out.extend_from_slice(&resp.encode());
                handshaken = true;
                continue;
            }
            let (h, req) = Request::decode(payload).unwrap();
            let close = matches!(req, Request::CloseSession);
            let (code, body) = answer(&tree, req);
            out.extend_from_slice(&encode_reply(h.xid, 1, code, &body));
            if close {
                s.write_all(&out).await.unwrap();
                return;
            }
        }
        buf.drain(..consumed);
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn fake_server() -> (String, Tree) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tree: Tree = Arc::default();
    tree.lock().unwrap().insert("/".into(), Vec::new());
    let t = tree.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(s, t.clone()));
        }
    });
    (addr, tree)
}

fn args(server: String, phases: Vec<Phase>, ops: u64) -> Args {
    Args {
        server,
        sessions: 3,
        outstanding: 7,
        value_bytes: 100,
        phases,
        ops,
        seconds: None,
        read_percent: 80,
        root: "/bench/run".into(),
        existing_keys: 0,
        server_pid: Some(std::process::id()),
        session_timeout_ms: 10_000,
        reply_timeout_secs: 10,
        threads: 1,
        quiet_wait_secs: 0.0,
        quiet_cpu_percent: 30.0,
        quiet: true,
    }
}

#[tokio::test]
async fn every_phase_runs_its_ops_and_leaves_the_tree_as_it_found_it() {
    // 3 sessions × 7 in flight through all five phases: every op answered without error, the key space
    // grows by the creates and shrinks by the deletes, and the root goes once it is empty again.
    let (server, tree) = fake_server().await;
    let all = vec![Phase::Create, Phase::Set, Phase::Get, Phase::Mixed, Phase::Delete];
    let report = run_async(&args(server, all, 1000)).await.unwrap();
    let keys: Vec<u64> = report.phases.iter().map(|p| p.keys_after).collect();
    assert_eq!(keys, [1000, 1000, 1000, 1000, 0]);
    for p in &report.phases {
        assert_eq!((p.ops, p.errors), (1000, 0), "{:?}", p.phase);
        assert!(p.p50_us <= p.p99_us && p.p99_us <= p.max_us);
        assert!(p.server_rss_after_bytes.unwrap() > 0);
    }
    let t = tree.lock().unwrap();
    assert!(t.contains_key("/bench"));
    assert!(
        !t.contains_key("/bench/run"),
        "root left behind: {:?}",
        t.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn values_have_the_requested_size_and_deletes_stop_at_the_last_key() {
    // A create phase of 50 keys with 10-byte values, then a delete phase asked for more ops than keys exist.
    let (server, tree) = fake_server().await;
    let mut a = args(server.clone(), vec![Phase::Create], 50);
    a.value_bytes = 10;
    let report = run_async(&a).await.unwrap();
    assert_eq!(report.phases[0].ops, 50);
    assert!(tree
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("/bench/run/"))
        .all(|(_, v)| v.len() == 10));
    let mut d = args(server, vec![Phase::Delete], 1000);
    d.existing_keys = 50;
    let report = run_async(&d).await.unwrap();
    assert_eq!(
        (
            report.phases[0].ops,
            report.phases[0].errors,
            report.phases[0].keys_after
        ),
        (50, 0, 0)
    );
    assert!(!tree.lock().unwrap().keys().any(|k| k.starts_with("/bench/run")));
}

#[tokio::test]
async fn a_read_phase_without_keys_is_refused() {
    // get on an empty key space would only measure NONODE errors: the run says what is missing instead.
    let (server, _tree) = fake_server().await;
    let e = run_async(&args(server, vec![Phase::Get], 10)).await.unwrap_err();
    assert!(e.to_string().contains("needs keys"), "{e}");
}

#[tokio::test]
async fn waiting_for_a_quiet_machine_pings_the_sessions_and_then_measures() {
    // A machine that is never quiet enough (0% CPU): the tool waits its bound, pinging every session, and
    // then runs the phase anyway, saying how long it waited.
    let (server, _tree) = fake_server().await;
    let mut a = args(server, vec![Phase::Create], 20);
    a.quiet_wait_secs = 1.0;
    a.quiet_cpu_percent = 0.0;
    let report = run_async(&a).await.unwrap();
    assert_eq!((report.phases[0].ops, report.phases[0].errors), (20, 0));
    assert!(report.phases[0].quiet_wait_secs >= 1.0);
}
