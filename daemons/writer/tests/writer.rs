//! logtank-writer end to end: the real binary in a temp dir, real sockets, the raw log read back with the
//! journal's reader. What a client sends, what it gets back, what ends up in the log; bad input; readonly
//! by marker, admin and config; restarts, the lock, shutdown; admin endpoints and sd_notify.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use logtank_thrift::{
    decode_send_batch_reply, encode_call, encode_send_batch_call, Call, ClientError, ExceptionKind, Limits,
    LogBatch,
};

// Proves batches from several connections land in the raw log as one journal record each, holding exactly
// the batch's records in order, timestamped by the writer, index_code kept; an empty batch is acknowledged
// and writes nothing.
#[test]
fn batches_land_in_the_raw_log_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "", &[]);
    let before = logtank_writer::batch::now_ms();
    let mut a = w.client();
    let mut b = w.client();
    a.send_batch(&batch("idx", "a0", 3)).unwrap();
    b.send_batch(&batch("other", "b0", 1)).unwrap();
    a.send_batch(&LogBatch::default()).unwrap();
    a.send_batch(&batch("idx", "a1", 50)).unwrap();
    let after = logtank_writer::batch::now_ms();
    let status = status(w.admin);
    assert_eq!(status["batches"], 4);
    assert_eq!(status["records"], 54);
    w.stop();

    let log = read_raw_log(dir.path());
    assert_eq!(log.len(), 3, "the empty batch wrote nothing");
    let sent = [
        batch("idx", "a0", 3),
        batch("other", "b0", 1),
        batch("idx", "a1", 50),
    ];
    for (got, sent) in log.iter().zip(&sent) {
        assert_eq!(got.len(), sent.records.len());
        let stamp = got[0].timestamp_ms.unwrap();
        assert!(
            (before..=after).contains(&stamp),
            "{stamp} not in {before}..={after}"
        );
        for (g, s) in got.iter().zip(&sent.records) {
            let mut expected = s.clone();
            expected.timestamp_ms = Some(stamp);
            assert_eq!(g, &expected);
        }
    }
}

// Proves ack = "write" (IndexTank's behaviour) acknowledges and logs the same way.
#[test]
fn ack_write_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "[writer]\nack = \"write\"\n", &[]);
    let mut c = w.client();
    for i in 0..20 {
        c.send_batch(&batch("idx", &format!("w{i}"), 5)).unwrap();
    }
    assert!(w.notify_messages().iter().any(|m| m.contains("ack=write")));
    w.stop();
    let log = read_raw_log(dir.path());
    assert_eq!(log.len(), 20);
    assert_eq!(log[19][4].docid.as_deref(), Some("w19-4"));
}

// Proves every rule refuses the whole batch with a clear message, nothing of it is written, and the
// connection stays usable for the next batch.
#[test]
fn bad_batches_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[writer]\nrecord_bytes_max = 2000\nbatch_bytes_max = 65536\nbatch_records_max = 100\n";
    let mut w = Writer::start(dir.path(), extra, &[]);
    let mut c = w.client();
    let with = |change: &dyn Fn(&mut logtank_thrift::LogRecord)| {
        let mut b = batch("idx", "bad", 5);
        change(&mut b.records[2]);
        b
    };
    let cases: Vec<(LogBatch, String)> = vec![
        (
            with(&|r| r.id = Some(42)),
            "record 3 of the batch has id set: id is legacy and not accepted".into(),
        ),
        (
            with(&|r| r.docid = None),
            "record 3 of the batch has no docid".into(),
        ),
        (
            with(&|r| r.docid = Some(String::new())),
            "record 3 of the batch has an empty docid".into(),
        ),
        (
            with(&|r| r.index_code = None),
            "record 3 of the batch has no index_code".into(),
        ),
        (
            with(&|r| r.index_code = Some("../x".into())),
            "record 3 of the batch has an invalid index_code \"../x\"".into(),
        ),
        (
            with(&|r| r.index_code = Some(String::new())),
            "record 3 of the batch has an invalid index_code \"\"".into(),
        ),
        (
            with(&|r| r.index_code = Some("a/b".into())),
            "record 3 of the batch has an invalid index_code \"a/b\"".into(),
        ),
        (
            with(&|r| r.index_code = Some("x".repeat(200))),
            "at most 128 are allowed".into(),
        ),
        (
            with(&|r| {
                r.fields = Some([("text".to_string(), "y".repeat(3000))].into());
            }),
            "record 3 of the batch is".into(),
        ),
        (
            batch("idx", "many", 101),
            "101 records, more than writer.batch_records_max = 100".into(),
        ),
        (
            LogBatch {
                records: (0..60)
                    .map(|i| {
                        let mut r = record("idx", &format!("big{i}"));
                        r.fields = Some([("text".to_string(), "z".repeat(1500))].into());
                        r
                    })
                    .collect(),
            },
            "more than writer.batch_bytes_max = 65536".into(),
        ),
    ];
    for (i, (bad, expected)) in cases.into_iter().enumerate() {
        let message = app_error(c.send_batch(&bad));
        assert!(message.contains(&expected), "case {i}: {message}");
        assert!(message.ends_with("nothing was written"), "case {i}: {message}");
        // The connection is still in step.
        c.send_batch(&batch("idx", &format!("good{i}"), 1)).unwrap();
    }
    let metrics = http(w.admin, "GET", "/metrics", "").1;
    assert!(
        metrics.contains("logtank_writer_rejected_total{reason=\"invalid\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("logtank_writer_rejected_total{reason=\"too_large\"} 3"),
        "{metrics}"
    );
    w.stop();
    let log = read_raw_log(dir.path());
    assert_eq!(log.len(), 11, "only the good batches");
    assert!(log
        .iter()
        .all(|b| b.len() == 1 && b[0].docid.as_deref().unwrap().starts_with("good")));
}

fn send_raw(stream: &mut TcpStream, bytes: &[u8]) -> logtank_thrift::IncomingReply<()> {
    stream.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    loop {
        match decode_send_batch_reply(&buf, &Limits::default()) {
            Ok((reply, _)) => return reply,
            Err(logtank_thrift::DecodeError::Incomplete) => {}
            Err(e) => panic!("{e}"),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

// Proves bad bytes close only their own connection with one log line (and a PROTOCOL_ERROR when the
// call's seqid is known), an unknown or foreign method gets UNKNOWN_METHOD on a connection that stays
// usable, and the daemon keeps serving throughout.
#[test]
fn protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "[writer]\nbatch_bytes_max = 65536\n", &[]);

    // Garbage: not a strict Thrift header. Closed without a reply (no seqid to answer).
    let out = raw_exchange(w.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.is_empty(), "{out:?}");
    w.wait_log("protocol error");

    // A call cut short, then the client closes: logged, nothing written.
    let mut call = Vec::new();
    encode_send_batch_call(&mut call, 1, &batch("idx", "cut", 10));
    let out = raw_exchange(w.addr, &call[..call.len() / 2]);
    assert!(out.is_empty());
    w.wait_log("inside a request");

    // A declared string length far past every limit: PROTOCOL_ERROR naming the seqid, then closed.
    let mut huge = Vec::new();
    encode_send_batch_call(&mut huge, 77, &batch("idx", "huge", 1));
    let docid = huge.windows(6).position(|w| w == b"huge-0").unwrap();
    huge[docid - 4..docid].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    let out = raw_exchange(w.addr, &huge);
    let (reply, used) = decode_send_batch_reply(&out, &Limits::default()).unwrap();
    assert_eq!(
        used,
        out.len(),
        "nothing after the exception: the connection closed"
    );
    assert_eq!(reply.seqid, 77);
    let e = reply.result.unwrap_err();
    assert_eq!(e.kind, ExceptionKind::ProtocolError);

    // A message larger than the buffer (batch_bytes_max + 64 KiB) is not read to its end.
    let mut big = Vec::new();
    encode_send_batch_call(&mut big, 5, &batch("idx", &"d".repeat(1000), 300));
    assert!(big.len() > 200_000);
    let mut s = TcpStream::connect(w.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(&big);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    w.wait_log("closing the connection");

    // A method no service has, and one of another service: UNKNOWN_METHOD; the connection goes on.
    let mut s = TcpStream::connect(w.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut unknown = Vec::new();
    encode_call(&mut unknown, 9, &Call::GetRawLogInfo);
    let name = unknown
        .windows(16)
        .position(|w| w == b"get_raw_log_info")
        .unwrap();
    unknown[name..name + 16].copy_from_slice(b"get_raw_log_infx");
    let reply = send_raw(&mut s, &unknown);
    assert_eq!(reply.name, "get_raw_log_infx");
    let e = reply.result.unwrap_err();
    assert_eq!(e.kind, ExceptionKind::UnknownMethod);
    assert!(e.message.contains("unknown method"), "{}", e.message);
    let mut ok = Vec::new();
    encode_send_batch_call(&mut ok, 10, &batch("idx", "after-unknown", 2));
    let reply = send_raw(&mut s, &ok);
    assert_eq!(reply.seqid, 10);
    reply.result.unwrap();

    let mut c = w.client();
    match c.get_raw_log_info() {
        Err(ClientError::Application { kind, message }) => {
            assert_eq!(kind, ExceptionKind::UnknownMethod);
            assert!(message.contains("send_batch only"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    c.send_batch(&batch("idx", "still-serving", 1)).unwrap();
    let metrics = http(w.admin, "GET", "/metrics", "").1;
    assert!(
        metrics.contains("logtank_writer_rejected_total{reason=\"protocol\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("logtank_writer_rejected_total{reason=\"unknown_method\"} 2"),
        "{metrics}"
    );
    w.stop();
    let docids: Vec<String> = read_raw_log(dir.path())
        .into_iter()
        .flatten()
        .map(|r| r.docid.unwrap())
        .collect();
    assert_eq!(docids, ["after-unknown-0", "after-unknown-1", "still-serving-0"]);
}

/// Sends until the writer refuses (readonly takes effect at its next poll); returns the refusal.
fn wait_refused(c: &mut logtank_thrift::Client, what: &str) -> String {
    let mut refusal = None;
    wait_for(what, || match c.send_batch(&LogBatch::default()) {
        Ok(()) => false,
        Err(ClientError::Application { message, .. }) => {
            refusal = Some(message);
            true
        }
        Err(e) => panic!("{e}"),
    });
    // An empty batch is refused too: readonly is checked first. A real one must be refused as well.
    let message = app_error(c.send_batch(&batch("idx", "refused", 3)));
    assert_eq!(Some(&message), refusal.as_ref());
    message
}

fn wait_accepted(c: &mut logtank_thrift::Client, what: &str) {
    wait_for(what, || c.send_batch(&LogBatch::default()).is_ok());
}

// Proves the marker file <data_root>/readonly refuses writes with the clear error while it exists, that
// leaving readonly takes writes again, and that nothing of a refused batch is in the log.
#[test]
fn readonly_by_marker() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "", &[]);
    let mut c = w.client();
    c.send_batch(&batch("idx", "before", 2)).unwrap();
    let marker = dir.path().join("readonly");
    std::fs::write(&marker, "").unwrap();
    let message = wait_refused(&mut c, "the marker to make the writer readonly");
    assert_eq!(
        message,
        format!(
            "logtank-writer is readonly (marker {} exists): write refused, nothing was written",
            marker.display()
        )
    );
    w.wait_log("entering readonly: marker");
    wait_for("STATUS= to say readonly", || {
        w.notify_messages()
            .iter()
            .any(|m| m.contains("readonly: yes (marker"))
    });
    assert_eq!(status(w.admin)["readonly"], true);
    std::fs::remove_file(&marker).unwrap();
    wait_accepted(&mut c, "the writer to leave readonly");
    w.wait_log("leaving readonly");
    c.send_batch(&batch("idx", "after", 2)).unwrap();
    w.stop();
    let docids: Vec<String> = read_raw_log(dir.path())
        .into_iter()
        .flatten()
        .map(|r| r.docid.unwrap())
        .collect();
    assert_eq!(docids, ["before-0", "before-1", "after-0", "after-1"]);
}

// Proves PUT /readonly switches readonly on and off (true/false, on/off), GET /readonly shows the state and
// the reasons, and a bad body is a 400 that changes nothing.
#[test]
fn readonly_by_admin() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "", &[]);
    let mut c = w.client();
    let (code, body) = http(w.admin, "GET", "/readonly", "");
    assert_eq!(code, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["readonly"], false);

    let (code, body) = http(w.admin, "PUT", "/readonly", "on");
    assert_eq!(code, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["readonly"], true);
    assert_eq!(state["reasons"][0], "set by PUT /readonly on the admin port");
    let message = app_error(c.send_batch(&batch("idx", "x", 1)));
    assert!(
        message.starts_with("logtank-writer is readonly (set by PUT /readonly"),
        "{message}"
    );

    let (code, body) = http(w.admin, "PUT", "/readonly", "perhaps");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("expected true/false or on/off"), "{body}");
    assert_eq!(status(w.admin)["readonly"], true);

    let (code, _) = http(w.admin, "PUT", "/readonly", "false");
    assert_eq!(code, 200);
    c.send_batch(&batch("idx", "ok", 1)).unwrap();
    let metrics = http(w.admin, "GET", "/metrics", "").1;
    assert!(metrics.contains("logtank_writer_readonly 0"), "{metrics}");
    assert!(
        metrics.contains("logtank_writer_rejected_total{reason=\"readonly\"} 1"),
        "{metrics}"
    );
    w.stop();
    assert_eq!(read_raw_log(dir.path()).len(), 1);
}

// Proves readonly.enabled in the config and the --readonly flag both start the writer readonly, and an
// admin "off" does not override them (every reason must go).
#[test]
fn readonly_by_config_and_flag() {
    for (extra, args) in [
        ("[readonly]\nenabled = true\ncheck_interval_ms = 50\n", vec![]),
        ("", vec!["--readonly"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // base_config has [readonly]; a second [readonly] table would be a TOML error, so write it whole.
        let config = dir.path().join("writer.toml");
        let base = base_config(dir.path());
        let text = if extra.is_empty() {
            base
        } else {
            base.replace("[readonly]\ncheck_interval_ms = 50\n", extra)
        };
        std::fs::write(&config, text).unwrap();
        let mut w = Writer::start_existing(dir.path(), &config, &args);
        let mut c = w.client();
        let message = app_error(c.send_batch(&batch("idx", "x", 1)));
        assert!(
            message.contains("readonly.enabled is set (config or --readonly)"),
            "{message}"
        );
        http(w.admin, "PUT", "/readonly", "off");
        assert!(c.send_batch(&batch("idx", "x", 1)).is_err());
        w.wait_log("entering readonly: readonly.enabled is set");
        w.stop();
        assert!(read_raw_log(dir.path()).is_empty());
    }
}

// Proves a restart starts a new head segment (IndexTank's behaviour) and keeps every batch, and that a
// SIGTERM stop exits 0 after READY=1 and STOPPING=1 with the documented STATUS= line.
#[test]
fn restart_starts_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::start(dir.path(), "", &[]);
    let port = w.addr.port();
    w.client().send_batch(&batch("idx", "first", 2)).unwrap();
    let ready = w
        .notify_messages()
        .into_iter()
        .find(|m| m.contains("READY=1"))
        .unwrap();
    assert!(
        ready.contains(&format!(
            "STATUS=serving {port}, ack=fsync, 0 batches, readonly: no"
        )),
        "{ready}"
    );
    let before = segments(dir.path()).len();
    let mut w = w.restart();
    assert_eq!(segments(dir.path()).len(), before + 1);
    w.client().send_batch(&batch("idx", "second", 2)).unwrap();
    w.stop();
    let log = read_raw_log(dir.path());
    assert_eq!(log.len(), 2);
    assert_eq!(log[1][1].docid.as_deref(), Some("second-1"));
}

// Proves a second writer on the same data root is refused at start with a message naming the lock file and
// the first writer's pid, while the first keeps serving.
#[test]
fn second_instance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "", &[]);
    let config = dir.path().join("writer.toml");
    let (status, log) = Writer::start_failing(dir.path(), &config, &[]);
    assert_eq!(status.code(), Some(1), "{log}");
    let lock = dir.path().join("storage/writer.lock");
    assert!(log.contains(&lock.display().to_string()), "{log}");
    assert!(log.contains(&format!("pid {}", w.pid())), "{log}");
    w.client().send_batch(&batch("idx", "x", 1)).unwrap();
    w.stop();
}

// Proves shutdown lets a batch in flight finish and be acknowledged: half a batch is sent, SIGTERM
// arrives, the rest follows; the client gets its acknowledgement, the batch is in the log, exit 0.
#[test]
fn shutdown_finishes_the_batch_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "", &[]);
    let mut first = Vec::new();
    encode_send_batch_call(&mut first, 1, &batch("idx", "one", 3));
    let mut second = Vec::new();
    encode_send_batch_call(&mut second, 2, &batch("idx", "two", 3));
    let half = second.len() / 2;
    let mut s = TcpStream::connect(w.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The first batch and half of the second in one write: once the first is acknowledged, the server has
    // read on into the second.
    let mut both = first.clone();
    both.extend_from_slice(&second[..half]);
    let reply = send_raw(&mut s, &both);
    assert_eq!(reply.seqid, 1);
    w.terminate();
    w.wait_log("shutting down");
    let reply = send_raw(&mut s, &second[half..]);
    assert_eq!(reply.seqid, 2);
    reply.result.unwrap();
    let status = w.wait_exit();
    assert!(status.success(), "{status}:\n{}", w.log_text());
    assert!(w.notify_messages().iter().any(|m| m.contains("STOPPING=1")));
    let log = read_raw_log(dir.path());
    assert_eq!(log.len(), 2);
    assert_eq!(log[1][2].docid.as_deref(), Some("two-2"));
}

// Proves the admin port: /status carries the writer's counters and state, /metrics the writer's and the
// journal's metrics, and a reload applies a new ack mode.
#[test]
fn admin_status_metrics_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "", &[]);
    w.client().send_batch(&batch("idx", "s", 4)).unwrap();
    let s = status(w.admin);
    assert_eq!(s["daemon"], "writer");
    assert_eq!(s["ack"], "fsync");
    assert_eq!(s["batches"], 1);
    assert_eq!(s["records"], 4);
    assert_eq!(s["coordination"], "disabled");
    assert_eq!(s["readonly"], false);
    assert!(s["journal_durable"].as_u64().unwrap() >= 1);
    let metrics = http(w.admin, "GET", "/metrics", "").1;
    for name in [
        "logtank_writer_batches_total 1",
        "logtank_writer_records_total 4",
        "logtank_writer_ack_seconds_count 1",
        "logtank_journal_fsyncs_total",
        "logtank_writer_connections",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let config = dir.path().join("writer.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[writer]\nack = \"write\"\n")).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.pid()), nix::sys::signal::SIGHUP).unwrap();
    wait_for("the reload", || status(w.admin)["ack"] == "write");
    w.client().send_batch(&batch("idx", "t", 1)).unwrap();
    w.stop();
}

// Proves --check-config accepts the shipped etc/writer.toml and shows the writer's defaults.
#[test]
fn check_config_of_the_shipped_file() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/writer.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logtank-writer"))
        .args(["--config", shipped, "--check-config"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("listen = \"0.0.0.0:15000\""), "{stdout}");
    assert!(stdout.contains("ack = \"fsync\""), "{stdout}");
}

// Proves the writer tolerates the indexes daemon moving closed segments (all but the newest) from raw/live
// to raw/history while it runs and between runs: it keeps appending, restarts on what is left, and live
// plus history hold every batch once, in order.
#[test]
fn closed_segments_moved_to_history() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[writer]\nsegment_size_bytes = 65536\nbatch_bytes_max = 16384\n";
    let mut w = Writer::start(dir.path(), extra, &[]);
    let history = logtank_writer::config::raw_history_dir(dir.path());
    std::fs::create_dir_all(&history).unwrap();
    let move_closed = || {
        let mut segs = segments(dir.path());
        segs.pop();
        for s in segs {
            std::fs::rename(&s, history.join(s.file_name().unwrap())).unwrap();
        }
    };
    let mut sent = Vec::new();
    for round in 0..3 {
        let mut c = w.client();
        for i in 0..60 {
            let key = format!("r{round}-{i}");
            c.send_batch(&batch("idx", &key, 20)).unwrap();
            sent.push(key);
            if i % 20 == 10 {
                move_closed();
            }
        }
        w = w.restart();
        move_closed();
    }
    w.stop();
    assert!(
        std::fs::read_dir(&history).unwrap().count() > 3,
        "the test must have moved segments"
    );
    let found: Vec<String> = read_raw_log(dir.path())
        .into_iter()
        .map(|b| {
            assert_eq!(b.len(), 20);
            b[0].docid
                .clone()
                .unwrap()
                .strip_suffix("-0")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(found, sent);
}
