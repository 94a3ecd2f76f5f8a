//! Proves bad input gets a clear error and never takes the daemon down: invalid index codes, a missing
//! index (an error, not an empty stream), methods of the other port, unknown methods, garbage, truncated
//! messages and huge lengths, and tokens with a garbage file_position.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use logtank_thrift::binary::{message_type, ttype, Limits, Writer};
use logtank_thrift::{
    decode_list_existing_indexes_reply, decode_read_page_reply, encode_call, Call, ClientError,
    ExceptionKind, LogBatch, LogPageToken, LogRecord,
};

fn master_with_data() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<Vec<LogRecord>> = (0..30)
        .map(|b| vec![add("idx", &format!("d{b}"), &"t".repeat(500))])
        .collect();
    write_raw(dir.path(), &batches);
    make_master(dir.path());
    let daemon = Daemon::start(dir.path(), "[pipeline]\nidle_ms = 50\npage_bytes = 4096\n");
    eventually("dealt", || {
        journal_files(&daemon.layout().raw_live()).len() == 1 && daemon.layout().index("idx").exists()
    });
    (dir, daemon)
}

fn exception(r: Result<impl std::fmt::Debug, ClientError>) -> (ExceptionKind, String) {
    match r {
        Err(ClientError::Application { kind, message }) => (kind, message),
        other => panic!("expected an exception, got {other:?}"),
    }
}

/// Reads until the server closes the connection; returns what it sent. Panics if it stays open.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    stream
        .read_to_end(&mut got)
        .expect("the server closes the connection");
    got
}

fn still_serves(daemon: &Daemon) {
    let (records, _) = read_all(&mut daemon.reader_client(), "idx").unwrap();
    assert_eq!(records.len(), 30);
}

#[test]
fn invalid_index_codes_are_refused_and_the_connection_stays_usable() {
    let (_dir, daemon) = master_with_data();
    let mut reader = daemon.reader_client();
    let mut manager = daemon.manager_client();
    let long = "a".repeat(200);
    for code in ["../x", "", long.as_str(), "a/b", ".hidden", "a\0b"] {
        let (kind, message) = exception(reader.read_page(code, &LogPageToken::default()));
        assert_eq!(kind, ExceptionKind::ProtocolError, "{message}");
        assert!(
            message.starts_with("read_page: invalid index_code"),
            "{code:?}: {message}"
        );
        let (_, message) = exception(manager.get_index_log_info(code));
        assert!(message.contains("invalid index_code"), "{code:?}: {message}");
        let (_, message) = exception(manager.delete_index(code));
        assert!(message.contains("invalid index_code"), "{code:?}: {message}");
    }
    // The same connections go on working.
    assert_eq!(manager.list_existing_indexes().unwrap(), ["idx"]);
    assert_eq!(
        reader
            .read_page("idx", &LogPageToken::default())
            .unwrap()
            .batch
            .records
            .len(),
        7
    );
    assert!(!daemon.layout().root().join("x").exists());
}

#[test]
fn a_missing_index_is_an_error_not_an_empty_stream() {
    let (_dir, daemon) = master_with_data();
    let (kind, message) = exception(
        daemon
            .reader_client()
            .read_page("missing", &LogPageToken::default()),
    );
    assert_eq!(kind, ExceptionKind::InternalError);
    assert!(message.contains("index \"missing\" does not exist"), "{message}");
}

#[test]
fn methods_of_the_other_port_and_unknown_methods_keep_the_connection() {
    let (_dir, daemon) = master_with_data();
    let mut reader = daemon.reader_client();
    let (kind, message) = exception(reader.get_raw_log_info());
    assert_eq!(kind, ExceptionKind::UnknownMethod);
    assert!(
        message.contains("get_raw_log_info is not served on this LogReader port"),
        "{message}"
    );
    assert!(message.contains("LogManager port"), "{message}");
    let (kind, message) = exception(reader.send_batch(&LogBatch::default()));
    assert_eq!(kind, ExceptionKind::UnknownMethod);
    assert!(message.contains("logtank-writer"), "{message}");
    assert!(reader.read_page("idx", &LogPageToken::default()).is_ok());

    let mut manager = daemon.manager_client();
    let (kind, message) = exception(manager.read_page("idx", &LogPageToken::default()));
    assert_eq!(kind, ExceptionKind::UnknownMethod);
    assert!(message.contains("LogReader port"), "{message}");
    assert_eq!(manager.list_existing_indexes().unwrap(), ["idx"]);

    // A method no service has, then a good call on the same connection, sent together.
    let mut raw = TcpStream::connect(daemon.manager).unwrap();
    let mut out = Vec::new();
    Writer::new(&mut out)
        .message_header("frobnicate", message_type::CALL, 5)
        .field(ttype::STRING, 1)
        .string("x")
        .stop();
    encode_call(&mut out, 6, &Call::ListExistingIndexes);
    raw.write_all(&out).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let got = read_to_close(&mut raw);
    let (first, n) = decode_list_existing_indexes_reply(&got, &Limits::default()).unwrap();
    assert_eq!(first.seqid, 5);
    let e = first.result.unwrap_err();
    assert_eq!(e.kind, ExceptionKind::UnknownMethod);
    assert!(
        e.message.contains("unknown method \"frobnicate\""),
        "{}",
        e.message
    );
    let (second, _) = decode_list_existing_indexes_reply(&got[n..], &Limits::default()).unwrap();
    assert_eq!((second.seqid, second.result), (6, Ok(vec!["idx".to_string()])));
}

#[test]
fn garbage_truncated_and_huge_messages_close_only_their_connection() {
    let (_dir, daemon) = master_with_data();
    let mut idle = daemon.reader_client();

    // Garbage: no name or seqid to answer to, so the connection is just closed.
    let mut raw = TcpStream::connect(daemon.reader).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_to_close(&mut raw).is_empty());
    still_serves(&daemon);

    // A huge method-name length: refused before anything is allocated.
    let mut raw = TcpStream::connect(daemon.reader).unwrap();
    raw.write_all(&[0x80, 0x01, 0x00, 0x01, 0x7f, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(read_to_close(&mut raw).is_empty());

    // A huge string length once the name and seqid are known: PROTOCOL_ERROR to seqid 77, then closed.
    let mut raw = TcpStream::connect(daemon.reader).unwrap();
    let mut out = Vec::new();
    Writer::new(&mut out)
        .message_header("read_page", message_type::CALL, 77)
        .field(ttype::STRING, 1)
        .i32(0x7fff_fff0);
    raw.write_all(&out).unwrap();
    let got = read_to_close(&mut raw);
    let (reply, n) = decode_read_page_reply(&got, &Limits::default()).unwrap();
    assert_eq!(n, got.len());
    assert_eq!(reply.seqid, 77);
    let e = reply.result.unwrap_err();
    assert_eq!(e.kind, ExceptionKind::ProtocolError);
    assert!(e.message.contains("limit"), "{}", e.message);

    // Half a call, then the client goes away.
    let mut raw = TcpStream::connect(daemon.reader).unwrap();
    let mut out = Vec::new();
    encode_call(
        &mut out,
        1,
        &Call::ReadPage {
            index_code: "idx".into(),
            token: LogPageToken::default(),
        },
    );
    raw.write_all(&out[..out.len() / 2]).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_close(&mut raw).is_empty());

    // Everyone else was served throughout, including a connection opened before all this.
    still_serves(&daemon);
    assert!(idle.read_page("idx", &LogPageToken::default()).is_ok());
    assert!(daemon.log().contains("closing the connection of"));
}

#[test]
fn a_token_with_a_garbage_file_position_is_a_clear_error() {
    let (_dir, daemon) = master_with_data();
    let mut reader = daemon.reader_client();
    let first = reader.read_page("idx", &LogPageToken::default()).unwrap();
    let token = first.next_page_token.unwrap();
    assert!(
        token.timestamp.is_some() && token.file_position.is_some(),
        "inside a segment: {token:?}"
    );
    let inside = token.file_position.unwrap();
    for (position, expect) in [
        (inside + 3, "is not a record boundary"),
        (1 << 40, "is not a record boundary"),
        (-8, "negative file_position"),
    ] {
        let bad = LogPageToken {
            file_position: Some(position),
            ..token
        };
        let (_, message) = exception(reader.read_page("idx", &bad));
        assert!(
            message.contains("invalid page token for index \"idx\""),
            "{message}"
        );
        assert!(message.contains(expect), "{position}: {message}");
    }
    let nonsense = LogPageToken {
        timestamp: Some(5),
        page_type: None,
        ..LogPageToken::default()
    };
    let (_, message) = exception(reader.read_page("idx", &nonsense));
    assert!(message.contains("invalid page token"), "{message}");
    // The real token still works.
    assert!(reader.read_page("idx", &token).is_ok());
}

// Proves the pipelined read (next request sent as soon as a reply's token is in) returns exactly what page
// by page reads return, stops early with the connection still in step, and reports an error as an
// exception with the connection usable.
#[test]
fn pipelined_page_reads_match_page_by_page_reads() {
    let (_dir, daemon) = master_with_data();
    let mut reader = daemon.reader_client();
    let mut one_by_one = Vec::new();
    let mut token = LogPageToken::default();
    loop {
        let page = reader.read_page_raw("idx", &token).unwrap();
        one_by_one.push((page.record_count, page.records.clone()));
        match page.next {
            Some(next) => token = next,
            None => break,
        }
    }
    assert!(one_by_one.len() > 3, "page_bytes = 4096 makes several pages");
    let mut pipelined = Vec::new();
    reader
        .read_pages_raw("idx", &LogPageToken::default(), |page| {
            pipelined.push((page.record_count, page.records));
            true
        })
        .unwrap();
    assert_eq!(pipelined, one_by_one);

    let mut first_two = 0;
    reader
        .read_pages_raw("idx", &LogPageToken::default(), |_| {
            first_two += 1;
            first_two < 2
        })
        .unwrap();
    assert_eq!(first_two, 2);
    // The page asked for early was read and dropped: the next call gets its own reply.
    assert_eq!(read_all(&mut reader, "idx").unwrap().0.len(), 30);

    let (kind, message) = exception(reader.read_pages_raw("missing", &LogPageToken::default(), |_| true));
    assert_eq!(kind, ExceptionKind::InternalError, "{message}");
    assert!(message.contains("\"missing\" does not exist"), "{message}");
    assert_eq!(read_all(&mut reader, "idx").unwrap().0.len(), 30);
}
