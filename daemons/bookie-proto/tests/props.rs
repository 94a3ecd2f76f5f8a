//! Property tests of the bookie protocol codecs: every request and response round-trips; every strict
//! prefix of a valid stream is incomplete (never an error, never a panic); arbitrary and mutated bytes never
//! panic, and a mutated entry never passes its digest.
#![allow(clippy::unwrap_used)]

use logtank_bookie_proto::*;
use proptest::prelude::*;

fn entry_bytes(ledger_id: u64, entry_id: i64, lac: i64, length: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let header = EntryHeader {
        ledger_id,
        entry_id,
        lac,
        length,
    };
    encode_entry(&mut out, &header, payload);
    out
}

fn key() -> impl Strategy<Value = MasterKey> {
    any::<[u8; MASTER_KEY_BYTES]>()
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            any::<u16>(),
            key(),
            any::<u64>(),
            any::<i64>(),
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(flags, k, l, e, lac, len, payload)| {
                Request::Add(AddRequest::new(flags, k, entry_bytes(l, e, lac, len, &payload)).unwrap())
            }),
        (any::<u64>(), any::<i64>()).prop_map(|(l, e)| Request::Read(ReadRequest::plain(l, e))),
        (any::<u64>(), any::<i64>(), key())
            .prop_map(|(l, e, k)| Request::Read(ReadRequest::fencing(l, e, k))),
        any::<u64>().prop_map(|l| Request::ReadLac(ReadLacRequest { ledger_id: l })),
        (key(), any::<u64>(), any::<i64>()).prop_map(|(k, l, lac)| Request::WriteLac(WriteLacRequest {
            master_key: k,
            ledger_id: l,
            lac
        })),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let status = prop_oneof![
        Just(Status::EOK),
        Just(Status::ENOENTRY),
        Just(Status::EFENCED),
        any::<i32>().prop_map(Status)
    ];
    (
        prop_oneof![
            Just(OpCode::AddEntry),
            Just(OpCode::ReadEntry),
            Just(OpCode::ReadLac),
            Just(OpCode::WriteLac)
        ],
        status,
        any::<u64>(),
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(op, status, ledger_id, entry_id, payload)| {
            let body = match op {
                OpCode::AddEntry | OpCode::WriteLac => Vec::new(),
                OpCode::ReadLac => {
                    ReadLacBody::encode(entry_id, (!payload.is_empty()).then_some(&payload[..]))
                }
                _ => entry_bytes(ledger_id, entry_id, entry_id - 1, 9, &payload),
            };
            Response {
                op,
                status,
                ledger_id,
                entry_id,
                body,
            }
        })
}

/// Decodes every whole request at the head of `buf`, as the bookie's connection loop does.
fn drain_requests(mut buf: &[u8]) -> Result<(Vec<Result<Request, BadRequest>>, usize), FrameError> {
    let mut out = Vec::new();
    let mut used_total = 0;
    while let Frame::Complete { body, used } = next_frame(buf, FRAME_BYTES_MAX_DEFAULT)? {
        out.push(decode_request(body));
        buf = &buf[used..];
        used_total += used;
    }
    Ok((out, used_total))
}

proptest! {
    #[test]
    fn requests_round_trip(reqs in proptest::collection::vec(request(), 1..6)) {
        let mut stream = Vec::new();
        for r in &reqs {
            encode_request(&mut stream, r);
        }
        let (decoded, used) = drain_requests(&stream).unwrap();
        prop_assert_eq!(used, stream.len());
        let decoded: Vec<Request> = decoded.into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(decoded, reqs);
    }

    #[test]
    fn every_strict_prefix_of_a_request_is_incomplete(req in request()) {
        let mut stream = Vec::new();
        encode_request(&mut stream, &req);
        for cut in 0..stream.len() {
            prop_assert_eq!(next_frame(&stream[..cut], FRAME_BYTES_MAX_DEFAULT).unwrap(), Frame::Incomplete);
        }
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let mut stream = Vec::new();
        encode_response(&mut stream, &resp);
        for cut in 0..stream.len() {
            prop_assert_eq!(next_frame(&stream[..cut], FRAME_BYTES_MAX_DEFAULT).unwrap(), Frame::Incomplete);
        }
        let Frame::Complete { body, used } = next_frame(&stream, FRAME_BYTES_MAX_DEFAULT).unwrap() else {
            panic!("whole frame incomplete")
        };
        prop_assert_eq!(used, stream.len());
        prop_assert_eq!(decode_response(body).unwrap(), resp);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = drain_requests(&bytes);
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
        let _ = parse_entry(&bytes);
        let _ = ReadLacBody::decode(&bytes);
    }

    #[test]
    fn mutated_requests_never_panic_and_mutated_entries_fail_their_digest(
        req in request(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut stream = Vec::new();
        encode_request(&mut stream, &req);
        let at = at.index(stream.len());
        stream[at] ^= xor;
        // A mutated length (an error) means the stream cannot be followed, which the caller closes on.
        if let Ok((decoded, _)) = drain_requests(&stream) {
            if let (Request::Add(original), Some(Ok(Request::Add(mutated)))) = (&req, decoded.first()) {
                // A change inside the entry bytes must be caught by the digest.
                if mutated.entry != original.entry {
                    prop_assert!(parse_entry(&mutated.entry).is_err());
                }
            }
        }
    }
}

#[test]
fn bad_requests_name_what_is_wrong_and_say_whether_to_close() {
    // An unknown opcode in a whole frame: EBADREQ, the connection goes on.
    let mut body = PacketHeader::new(OpCode::Other(7), 0).encode().to_vec();
    body.extend_from_slice(&5u64.to_be_bytes());
    body.extend_from_slice(&9i64.to_be_bytes());
    let bad = decode_request(&body).unwrap_err();
    assert!(!bad.close);
    assert_eq!((bad.ledger_id, bad.entry_id), (5, 9));
    assert_eq!(bad.response().status, Status::EBADREQ);
    // Another protocol version: the peer speaks something else; close.
    let mut v3 = body.clone();
    v3[0] = 3;
    assert!(decode_request(&v3).unwrap_err().close);
    // A read with trailing bytes, a fencing read without its key, a short add.
    let mut read = PacketHeader::new(OpCode::ReadEntry, 0).encode().to_vec();
    read.extend_from_slice(&[0; 17]);
    assert!(!decode_request(&read).unwrap_err().close);
    let mut fence = PacketHeader::new(OpCode::ReadEntry, FLAG_DO_FENCING)
        .encode()
        .to_vec();
    fence.extend_from_slice(&[0; 16]);
    assert!(decode_request(&fence).is_err());
    let mut add = PacketHeader::new(OpCode::AddEntry, 0).encode().to_vec();
    add.extend_from_slice(&[0; MASTER_KEY_BYTES + ENTRY_OVERHEAD_BYTES - 1]);
    assert!(decode_request(&add).unwrap_err().reason.contains("add body"));
}
