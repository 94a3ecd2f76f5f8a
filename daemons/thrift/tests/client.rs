//! The blocking client against an in-process server on 127.0.0.1:0 built from the crate's own server-side
//! codec: every method, application errors (connection kept), replies trickling in byte by byte, a server
//! that closes, a wrong sequence id, and a read timeout.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use logtank_thrift::*;

/// How the test server writes its replies.
#[derive(Clone, Copy)]
enum Delivery {
    Whole,
    /// One byte per write, with a pause: the client must assemble the reply across many reads.
    Trickle,
}

/// Serves one connection: every call is answered by `handle` (which appends the reply bytes; nothing
/// appended = no reply, connection closed).
fn serve(
    delivery: Delivery,
    mut handle: impl FnMut(&IncomingCall, &mut Vec<u8>) + Send + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut decoder = CallDecoder::new(Limits::default());
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match sock.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some((incoming, used)) = decoder.decode(&buf).unwrap() {
                buf.drain(..used);
                let mut out = Vec::new();
                handle(&incoming, &mut out);
                if out.is_empty() {
                    return;
                }
                match delivery {
                    Delivery::Whole => sock.write_all(&out).unwrap(),
                    Delivery::Trickle => {
                        for b in out {
                            sock.write_all(&[b]).unwrap();
                            thread::sleep(Duration::from_micros(50));
                        }
                    }
                }
            }
        }
    });
    addr
}

fn record(docid: &str) -> LogRecord {
    LogRecord {
        index_code: Some("idx".into()),
        docid: Some(docid.into()),
        fields: Some(BTreeMap::from([("text".into(), "hello".into())])),
        ..LogRecord::default()
    }
}

fn segment(ts: i64) -> SegmentInfo {
    SegmentInfo {
        timestamp: ts,
        record_count: 3,
        sorted: true,
        ..SegmentInfo::default()
    }
}

/// A server that answers every method with fixed values (and refuses `delete_index` of "locked").
fn full_server(delivery: Delivery) -> SocketAddr {
    serve(delivery, |incoming, out| {
        let seqid = incoming.seqid;
        match incoming.call.as_ref().unwrap() {
            Call::SendBatch(b) => {
                assert_eq!(b.records.len(), 2);
                encode_void_reply(out, &incoming.name, seqid);
            }
            Call::SendBatchRaw(_) => unreachable!("this server's decoder does not hand over raw batches"),
            Call::ReadPage { index_code, token } => {
                assert_eq!(index_code, "idx");
                let mut records = Vec::new();
                encode_record(&mut records, &record("a"));
                encode_record(&mut records, &record("b"));
                let next = LogPageToken {
                    file_position: Some(token.file_position.unwrap_or(0) + 2),
                    ..*token
                };
                encode_read_page_reply(out, seqid, 2, &records, Some(&next));
            }
            Call::GetIndexLogInfo { .. } => {
                let info = IndexLogInfo {
                    sorted_segments: vec![segment(1), segment(2)],
                    unoptimized_segments: 2,
                    ..IndexLogInfo::default()
                };
                encode_index_log_info_reply(out, seqid, &info);
            }
            Call::GetRawLogInfo => {
                let info = RawLogInfo {
                    undealt_segments: vec![segment(9)],
                    dealer_next_timestamp: 10,
                };
                encode_raw_log_info_reply(out, seqid, &info);
            }
            Call::EnqueueForOptimization { priority, .. } => {
                assert_eq!(*priority, 5);
                encode_void_reply(out, &incoming.name, seqid);
            }
            Call::DeleteIndex { index_code } if index_code == "locked" => encode_exception(
                out,
                &incoming.name,
                seqid,
                ExceptionKind::InternalError,
                "index \"locked\" is being optimized; try again later",
            ),
            Call::DeleteIndex { .. } => encode_void_reply(out, &incoming.name, seqid),
            Call::GetOptimizationQueue => {
                let q = [(
                    "idx".to_string(),
                    QueueScore {
                        priority: 1,
                        score: 0.5,
                    },
                )];
                encode_optimization_queue_reply(out, seqid, &q);
            }
            Call::ListExistingIndexes => {
                encode_list_existing_indexes_reply(out, seqid, &["a".into(), "idx".into()]);
            }
        }
    })
}

fn check_every_method(delivery: Delivery) {
    let mut c = Client::connect(full_server(delivery), &ClientConfig::default()).unwrap();
    c.send_batch(&LogBatch {
        records: vec![record("a"), record("b")],
    })
    .unwrap();
    let start = LogPageToken::default();
    let page = c.read_page("idx", &start).unwrap();
    assert_eq!(page.batch.records, vec![record("a"), record("b")]);
    assert_eq!(page.next_page_token.unwrap().file_position, Some(2));
    let raw = c.read_page_raw("idx", &page.next_page_token.unwrap()).unwrap();
    assert_eq!(raw.record_count, 2);
    assert_eq!(
        decode_record(&raw.records, &Limits::default()).unwrap().0,
        record("a")
    );
    assert_eq!(raw.next.unwrap().file_position, Some(4));
    assert_eq!(c.get_index_log_info("idx").unwrap().sorted_segments.len(), 2);
    assert_eq!(c.get_raw_log_info().unwrap().dealer_next_timestamp, 10);
    c.enqueue_for_optimization("idx", 5, 1.0).unwrap();
    c.delete_index("idx").unwrap();
    assert_eq!(c.get_optimization_queue().unwrap()["idx"].score, 0.5);
    assert_eq!(
        c.list_existing_indexes().unwrap(),
        vec!["a".to_string(), "idx".to_string()]
    );
}

/// Every method reaches the server and brings its value back.
#[test]
fn every_method() {
    check_every_method(Delivery::Whole);
}

/// Replies that arrive one byte per read are assembled correctly.
#[test]
fn trickled_replies() {
    check_every_method(Delivery::Trickle);
}

/// An application exception carries the server's message and leaves the connection usable.
#[test]
fn application_error_keeps_the_connection() {
    let mut c = Client::connect(full_server(Delivery::Whole), &ClientConfig::default()).unwrap();
    let err = c.delete_index("locked").unwrap_err();
    assert_eq!(
        err.to_string(),
        "index \"locked\" is being optimized; try again later"
    );
    assert!(matches!(
        err,
        ClientError::Application {
            kind: ExceptionKind::InternalError,
            ..
        }
    ));
    c.delete_index("idx").unwrap();
}

/// A server that closes without replying gives `Closed`, and so does every later call.
#[test]
fn server_closes() {
    let addr = serve(Delivery::Whole, |_, _| {});
    let mut c = Client::connect(addr, &ClientConfig::default()).unwrap();
    assert!(matches!(c.list_existing_indexes(), Err(ClientError::Closed)));
    assert!(matches!(c.list_existing_indexes(), Err(ClientError::Closed)));
}

/// A reply with the wrong sequence id is a protocol error, after which the client refuses to go on.
#[test]
fn wrong_sequence_id() {
    let addr = serve(Delivery::Whole, |incoming, out| {
        encode_list_existing_indexes_reply(out, incoming.seqid + 100, &[]);
    });
    let mut c = Client::connect(addr, &ClientConfig::default()).unwrap();
    let err = c.list_existing_indexes().unwrap_err();
    assert!(
        matches!(&err, ClientError::Protocol(m) if m.contains("sequence id")),
        "{err}"
    );
    assert!(matches!(c.list_existing_indexes(), Err(ClientError::Closed)));
}

/// A server that never answers runs into the read timeout.
#[test]
fn read_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ClientConfig {
        read_timeout_ms: 200,
        ..ClientConfig::default()
    };
    let mut c = Client::connect(addr, &config).unwrap();
    let err = c.get_raw_log_info().unwrap_err();
    assert!(matches!(err, ClientError::Io(_)), "{err}");
    drop(listener);
}
