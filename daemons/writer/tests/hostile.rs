//! What one hostile (or broken) client or neighbour can try against the writer's port, over real
//! sockets: each test is the regression test of a defect found in review (issue 13). None of it may stop
//! ingest for other clients, and nothing the storage layer could not read back may be acknowledged.
#![allow(clippy::unwrap_used)]

mod common;

use logtank_testkit::assert_closed_by_server;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{batch, record, Writer};
use logtank_thrift::LogBatch;

/// A TCP connection to `to` from the loopback address `from` (any 127/8 address is this host's).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// A hundred sockets that connect and send nothing, from one address, took every one of the port's
/// `connections_max` slots: the next client (the API) waited in the kernel's backlog for ever. Now one
/// address holds at most `connections_per_address_max`; the rest are closed at once.
#[test]
fn idle_sockets_from_one_address_do_not_stop_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(
        dir.path(),
        "[writer]\nconnections_max = 64\nconnections_per_address_max = 8\n",
        &[],
    );
    let mut hostile: Vec<TcpStream> = (0..100).map(|_| connect_from("127.0.0.3", w.addr)).collect();
    let mut client = w.client();
    client.send_batch(&batch("idx", "api", 3)).unwrap();
    // Past the eighth, the hostile address's sockets were closed by the server.
    for s in hostile.iter_mut().skip(8) {
        assert_closed_by_server(s, Duration::from_secs(10), "a socket past the per-address limit");
    }
    let (_, metrics) = common::http(w.admin, "GET", "/metrics", "");
    assert!(
        metrics.contains("reason=\"connection\""),
        "the refused connections are counted: {metrics}"
    );
    drop(hostile);
    drop(client);
    w.stop();
    assert_eq!(common::read_raw_log(dir.path()).len(), 1);
}

/// A connection that sends nothing is closed after `writer.idle_timeout_ms`; one that sends part of a
/// request and stops, after `writer.request_read_timeout_ms` (it held a slot and a buffer for nothing).
#[test]
fn idle_and_stalled_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(
        dir.path(),
        "[writer]\nidle_timeout_ms = 300\nrequest_read_timeout_ms = 300\n",
        &[],
    );
    let mut idle = TcpStream::connect(w.addr).unwrap();
    assert_closed_by_server(&mut idle, Duration::from_secs(10), "an idle connection");

    let mut stalled = TcpStream::connect(w.addr).unwrap();
    // The start of a strict send_batch call header: version word and part of the name.
    stalled
        .write_all(&[0x80, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a, b's'])
        .unwrap();
    assert_closed_by_server(&mut stalled, Duration::from_secs(10), "a stalled request");
    // The log reaches the file through the harness's copier: wait for the line, do not race it.
    w.wait_log("did not complete within 300 ms");
    // Between the two, a client that keeps sending is served.
    let mut client = w.client();
    for i in 0..3 {
        client.send_batch(&batch("idx", &format!("b{i}"), 2)).unwrap();
    }
    w.stop();
}

/// A batch naming more indexes than `writer.batch_index_codes_max` is refused whole: the dealer keeps
/// one file and buffer per index of a raw segment.
#[test]
fn a_batch_naming_too_many_indexes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::start(dir.path(), "[writer]\nbatch_index_codes_max = 10\n", &[]);
    let mut client = w.client();
    let many = LogBatch {
        records: (0..11).map(|i| record(&format!("idx{i}"), "d")).collect(),
    };
    let message = common::app_error(client.send_batch(&many));
    assert!(message.contains("writer.batch_index_codes_max = 10"), "{message}");
    let ten = LogBatch {
        records: (0..10).map(|i| record(&format!("idx{i}"), "d")).collect(),
    };
    client.send_batch(&ten).unwrap();
    drop(client);
    w.stop();
    assert_eq!(common::read_raw_log(dir.path()).len(), 1, "only the batch of ten");
}

/// A writer configured to take batches or records larger than the dealer reads back acknowledged them,
/// and the dealer then reported the raw segment corrupt for ever: such a config is refused at start.
#[test]
fn limits_above_what_the_dealer_reads_back_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (section, key) in [
        (
            "segment_size_bytes = 1073741824\nbatch_bytes_max = 100000000",
            "writer.batch_bytes_max",
        ),
        ("record_bytes_max = 20000000", "writer.record_bytes_max"),
    ] {
        let config = dir.path().join("writer.toml");
        std::fs::write(
            &config,
            format!("{}\n[writer]\n{section}\n", common::base_config(dir.path())),
        )
        .unwrap();
        let (status, log) = Writer::start_failing(dir.path(), &config, &[]);
        assert!(!status.success(), "{log}");
        assert!(
            log.contains(key) && log.contains("the dealer reads back"),
            "{log}"
        );
    }
}
