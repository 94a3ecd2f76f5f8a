//! Property tests of the codec through the public API: every struct, call and reply round-trips; every
//! strict prefix of a valid encoding is `Incomplete`; arbitrary and mutated bytes never panic; declared
//! lengths beyond a limit are `Invalid` at once; field order and unknown fields do not matter.

use std::collections::BTreeMap;

use logtank_thrift::binary::{
    message_type, ttype, MessageScanner, Reader, Writer, CONTAINER_LEN_MAX, STRING_BYTES_MAX,
};
use logtank_thrift::*;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn lim() -> Limits {
    Limits::default()
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 _-]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(20).collect()),
        Just(String::new()),
    ]
}

fn code() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}"
}

/// Doubles without NaN, so values compare equal after a round trip (NaN's bytes round-trip too, checked
/// separately).
fn double() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("not NaN", |d| !d.is_nan())
}

fn record() -> impl Strategy<Value = LogRecord> {
    (
        (
            option::of(any::<i64>()),
            option::of(any::<i64>()),
            option::of(text()),
            option::of(text()),
        ),
        any::<bool>(),
        option::of(btree_map(text(), text(), 0..4)),
        option::of(btree_map(any::<i32>(), double(), 0..4)),
        option::of(btree_map(text(), text(), 0..4)),
    )
        .prop_map(
            |((id, timestamp_ms, index_code, docid), deleted, fields, variables, categories)| LogRecord {
                id,
                timestamp_ms,
                index_code,
                docid,
                deleted,
                fields,
                variables,
                categories,
            },
        )
}

fn batch() -> impl Strategy<Value = LogBatch> {
    vec(record(), 0..4).prop_map(|records| LogBatch { records })
}

fn page_type() -> impl Strategy<Value = PageType> {
    (0..4i32).prop_map(|v| PageType::from_i32(v).expect("0..4 are page types"))
}

fn token() -> impl Strategy<Value = LogPageToken> {
    (
        option::of(page_type()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(page_type()),
        option::of(any::<i64>()),
    )
        .prop_map(
            |(page_type, timestamp, file_position, next_type, next_timestamp)| LogPageToken {
                page_type,
                timestamp,
                file_position,
                next_type,
                next_timestamp,
            },
        )
}

fn page() -> impl Strategy<Value = LogPage> {
    (batch(), option::of(token())).prop_map(|(batch, next_page_token)| LogPage {
        batch,
        next_page_token,
    })
}

fn segment() -> impl Strategy<Value = SegmentInfo> {
    (
        any::<i64>(),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        any::<i32>(),
        any::<bool>(),
    )
        .prop_map(
            |(timestamp, end_timestamp, valid_length, actual_length, record_count, sorted)| SegmentInfo {
                timestamp,
                end_timestamp,
                valid_length,
                actual_length,
                record_count,
                sorted,
            },
        )
}

fn raw_info() -> impl Strategy<Value = RawLogInfo> {
    (vec(segment(), 0..3), any::<i64>()).prop_map(|(undealt_segments, dealer_next_timestamp)| RawLogInfo {
        undealt_segments,
        dealer_next_timestamp,
    })
}

fn index_info() -> impl Strategy<Value = IndexLogInfo> {
    (
        vec(segment(), 0..3),
        vec(segment(), 0..3),
        vec(segment(), 0..3),
        any::<i64>(),
        any::<i64>(),
        any::<i32>(),
        any::<i64>(),
    )
        .prop_map(|(o, s, u, orc, urc, us, lot)| IndexLogInfo {
            optimized_segments: o,
            sorted_segments: s,
            unsorted_segments: u,
            optimized_record_count: orc,
            unoptimized_record_count: urc,
            unoptimized_segments: us,
            last_optimization_timestamp: lot,
        })
}

fn queue_score() -> impl Strategy<Value = QueueScore> {
    (any::<i32>(), double()).prop_map(|(priority, score)| QueueScore { priority, score })
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        batch().prop_map(Call::SendBatch),
        (code(), token()).prop_map(|(index_code, token)| Call::ReadPage { index_code, token }),
        code().prop_map(|index_code| Call::GetIndexLogInfo { index_code }),
        Just(Call::GetRawLogInfo),
        (code(), any::<i32>(), double()).prop_map(|(index_code, priority, score)| {
            Call::EnqueueForOptimization {
                index_code,
                priority,
                score,
            }
        }),
        code().prop_map(|index_code| Call::DeleteIndex { index_code }),
        Just(Call::GetOptimizationQueue),
        Just(Call::ListExistingIndexes),
    ]
}

/// A method and a reply value of the kind it returns.
fn reply() -> impl Strategy<Value = (Method, Reply)> {
    prop_oneof![
        prop_oneof![
            Just(Method::SendBatch),
            Just(Method::EnqueueForOptimization),
            Just(Method::DeleteIndex)
        ]
        .prop_map(|m| (m, Reply::Void)),
        page().prop_map(|p| (Method::ReadPage, Reply::Page(p))),
        index_info().prop_map(|i| (Method::GetIndexLogInfo, Reply::IndexLogInfo(i))),
        raw_info().prop_map(|i| (Method::GetRawLogInfo, Reply::RawLogInfo(i))),
        btree_map(code(), queue_score(), 0..4)
            .prop_map(|q| (Method::GetOptimizationQueue, Reply::OptimizationQueue(q))),
        vec(code(), 0..4).prop_map(|l| (Method::ListExistingIndexes, Reply::Indexes(l))),
    ]
}

/// Message bodies to scan: arbitrary bytes, and valid page replies with a few bytes changed (which reach
/// far deeper into the walk than random bytes do).
fn scan_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        (page(), vec((any::<prop::sample::Index>(), any::<u8>()), 0..3)).prop_map(|(p, flips)| {
            let mut out = Vec::new();
            let mut w = Writer::new(&mut out);
            w.field(ttype::STRUCT, 0);
            logtank_thrift::codec::write_page(&mut w, &p);
            w.stop();
            for (i, b) in flips {
                let i = i.index(out.len());
                out[i] = b;
            }
            out
        }),
    ]
}

fn encoded<T>(value: &T, encode: fn(&mut Vec<u8>, &T)) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, value);
    out
}

type StructDecoder<T> = fn(&[u8], &Limits) -> Result<(T, usize), DecodeError>;

/// Checks decode(encode(x)) == x, and that every strict prefix is incomplete.
fn round_trip<T: PartialEq + std::fmt::Debug>(
    value: &T,
    encode: fn(&mut Vec<u8>, &T),
    decode: StructDecoder<T>,
) -> Result<(), TestCaseError> {
    let bytes = encoded(value, encode);
    let (back, n) = decode(&bytes, &lim()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    prop_assert_eq!(n, bytes.len());
    for i in 0..bytes.len() {
        prop_assert_eq!(
            decode(&bytes[..i], &lim()).err(),
            Some(DecodeError::Incomplete),
            "prefix {}",
            i
        );
    }
    Ok(())
}

proptest! {
    // 256 cases by default; PROPTEST_CASES raises it for a longer run.
    #![proptest_config(ProptestConfig::default())]

    /// Every struct survives encode → decode, and its strict prefixes are incomplete.
    #[test]
    fn structs_round_trip(
        r in record(), b in batch(), t in token(), p in page(), s in segment(),
        ri in raw_info(), ii in index_info(), q in queue_score(),
    ) {
        round_trip(&r, encode_record, decode_record)?;
        round_trip(&b, encode_batch, decode_batch)?;
        round_trip(&t, encode_page_token, decode_page_token)?;
        round_trip(&p, encode_page, decode_page)?;
        round_trip(&s, encode_segment_info, decode_segment_info)?;
        round_trip(&ri, encode_raw_log_info, decode_raw_log_info)?;
        round_trip(&ii, encode_index_log_info, decode_index_log_info)?;
        round_trip(&q, encode_queue_score, decode_queue_score)?;
    }

    /// The byte-level record walks agree with a full decode, on concatenated records too.
    #[test]
    fn record_walks_agree(records in vec(record(), 1..5)) {
        let mut all = Vec::new();
        let mut ends = Vec::new();
        for r in &records {
            encode_record(&mut all, r);
            ends.push(all.len());
        }
        let mut pos = 0;
        for (r, end) in records.iter().zip(ends) {
            let rest = &all[pos..];
            prop_assert_eq!(record_len(rest, &lim()), Ok(end - pos));
            prop_assert_eq!(record_index_code(rest, &lim()), Ok(r.index_code.as_deref()));
            let mut stripped = Vec::new();
            prop_assert_eq!(copy_record_without_index_code(rest, &lim(), &mut stripped), Ok(end - pos));
            let mut expected = r.clone();
            expected.index_code = None;
            prop_assert_eq!(decode_record(&stripped, &lim()).map(|x| x.0), Ok(expected));
            for i in 0..(end - pos) {
                prop_assert_eq!(record_len(&rest[..i], &lim()), Err(DecodeError::Incomplete));
                prop_assert_eq!(record_index_code(&rest[..i], &lim()), Err(DecodeError::Incomplete));
            }
            pos = end;
        }
    }

    /// The writer's copy of a record reads back as the record sent, stamped, and reports the fields its
    /// rules look at.
    #[test]
    fn copy_for_write_reads_back_stamped(records in vec(record(), 1..4), ts in any::<i64>()) {
        let raw = RawBatch::from_batch(&LogBatch { records: records.clone() });
        let mut rest = &raw.records[..];
        for r in &records {
            let mut out = vec![0xAA];
            let found = copy_record_for_write(rest, &lim(), ts, &mut out)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(found.has_id, r.id.is_some());
            prop_assert_eq!(found.index_code, r.index_code.as_deref());
            prop_assert_eq!(found.docid, r.docid.as_deref());
            let mut expected = r.clone();
            expected.timestamp_ms = Some(ts);
            prop_assert_eq!(decode_record(&out[1..], &lim()), Ok((expected, out.len() - 1)));
            rest = &rest[found.len..];
        }
        prop_assert!(rest.is_empty());
    }

    /// Whatever a full decode refuses, the writer's copy refuses (and leaves its output alone); whatever
    /// it accepts, the copy accepts, and the copy decodes to the same record, stamped.
    #[test]
    fn copy_for_write_accepts_what_decode_accepts(r in record(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), ts in any::<i64>()) {
        let mut bytes = encoded(&r, encode_record);
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let decoded = decode_record(&bytes, &lim());
        let mut out = vec![1, 2, 3];
        let copied = copy_record_for_write(&bytes, &lim(), ts, &mut out);
        match (decoded, copied) {
            (Ok((mut record, len)), Ok(found)) => {
                prop_assert_eq!(found.len, len);
                record.timestamp_ms = Some(ts);
                let back = decode_record(&out[3..], &lim()).map_err(|e| TestCaseError::fail(e.to_string()))?.0;
                // Compared encoded: a flipped byte can make a NaN, which equals nothing.
                prop_assert_eq!(encoded(&back, encode_record), encoded(&record, encode_record));
            }
            (Err(_), Err(_)) => prop_assert_eq!(out, vec![1, 2, 3]),
            (d, c) => prop_assert!(false, "decode {:?} but copy {:?}", d, c),
        }
    }

    /// A raw-batch decoder hands over the records as the client encoded them.
    #[test]
    fn raw_batches_are_the_records_as_sent(b in batch(), seqid in any::<i32>()) {
        let mut stream = Vec::new();
        encode_call(&mut stream, seqid, &Call::SendBatch(b.clone()));
        let (incoming, n) = CallDecoder::with_raw_batches(lim()).decode(&stream).unwrap().unwrap();
        prop_assert_eq!(n, stream.len());
        let raw = RawBatch::from_batch(&b);
        prop_assert_eq!(incoming.call, Ok(Call::SendBatchRaw(raw.clone())));
        let mut again = Vec::new();
        encode_call(&mut again, seqid, &Call::SendBatchRaw(raw));
        prop_assert_eq!(again, stream);
    }

    /// NaN scores and variables keep their exact bits.
    #[test]
    fn doubles_keep_their_bits(bits in any::<u64>()) {
        let q = QueueScore { priority: 0, score: f64::from_bits(bits) };
        let (back, _) = decode_queue_score(&encoded(&q, encode_queue_score), &lim()).unwrap();
        prop_assert_eq!(back.score.to_bits(), bits);
    }

    /// Every call survives encode → decode_call; back-to-back calls split where they should; every
    /// strict prefix is incomplete.
    #[test]
    fn calls_round_trip(calls in vec((call(), any::<i32>()), 1..4)) {
        let mut stream = Vec::new();
        for (c, seqid) in &calls {
            encode_call(&mut stream, *seqid, c);
        }
        let mut pos = 0;
        for (c, seqid) in &calls {
            let (incoming, n) = decode_call(&stream[pos..], &lim()).unwrap().unwrap();
            prop_assert_eq!(&incoming.name, c.method().name());
            prop_assert_eq!(incoming.seqid, *seqid);
            prop_assert_eq!(incoming.call.as_ref(), Ok(c));
            for i in 0..n {
                prop_assert_eq!(decode_call(&stream[pos..pos + i], &lim()), Ok(None));
            }
            pos += n;
        }
        prop_assert_eq!(pos, stream.len());
    }

    /// Every reply survives encode → decode, as does an exception, and prefixes are incomplete.
    #[test]
    fn replies_round_trip((method, value) in reply(), seqid in any::<i32>(), message in text(), kind in 0..12i32) {
        let mut bytes = Vec::new();
        encode_reply(&mut bytes, method, seqid, &value);
        let (back, n) = decode_reply(&bytes, &lim(), method).unwrap();
        prop_assert_eq!(n, bytes.len());
        prop_assert_eq!(back.name.as_str(), method.name());
        prop_assert_eq!(back.seqid, seqid);
        prop_assert_eq!(back.result, Ok(value));
        for i in 0..bytes.len() {
            prop_assert_eq!(decode_reply(&bytes[..i], &lim(), method).err(), Some(DecodeError::Incomplete));
        }
        let mut exc = Vec::new();
        encode_exception(&mut exc, method.name(), seqid, ExceptionKind::from_code(kind), &message);
        let (back, _) = decode_reply(&exc, &lim(), method).unwrap();
        prop_assert_eq!(back.result, Err(ApplicationException { kind: ExceptionKind::from_code(kind), message }));
    }

    /// A read_page reply built from raw record bytes equals one built from the records, and the raw
    /// decoder hands the same bytes back.
    #[test]
    fn raw_page_replies(p in page(), seqid in any::<i32>()) {
        let mut records = Vec::new();
        for r in &p.batch.records {
            encode_record(&mut records, r);
        }
        let mut raw = Vec::new();
        encode_read_page_reply(&mut raw, seqid, p.batch.records.len(), &records, p.next_page_token.as_ref());
        let mut full = Vec::new();
        encode_page_reply(&mut full, seqid, &p);
        // The raw reply writes the token first (for pipelined reads); it decodes to the same page.
        let decoded = |bytes: &[u8]| decode_read_page_reply(bytes, &lim()).map(|(r, n)| (r.result, n));
        prop_assert_eq!(decoded(&raw), decoded(&full));
        prop_assert_eq!(raw.len(), full.len());
        let expected_peek = match p.next_page_token {
            Some(t) => PagePeek::Next(t),
            None => PagePeek::NoEarlyToken,
        };
        prop_assert_eq!(peek_read_page_reply(&raw, &lim()), expected_peek);
        prop_assert_eq!(peek_read_page_reply(&full, &lim()), PagePeek::NoEarlyToken);
        for cut in [0, 5, raw.len() / 3] {
            let peek = peek_read_page_reply(&raw[..cut], &lim());
            prop_assert!(peek == PagePeek::Incomplete || peek == expected_peek, "{:?}", peek);
        }
        let (whole, n) = decode_whole_read_page_reply_raw(&raw, &lim()).unwrap();
        prop_assert_eq!(n, raw.len());
        let (back, _) = decode_read_page_reply_raw(&raw, &lim()).unwrap();
        prop_assert_eq!(&whole.result, &back.result);
        prop_assert_eq!(back.result, Ok(RawPage {
            record_count: p.batch.records.len(),
            records,
            next: p.next_page_token,
        }));
    }

    /// The resumable scanner finds the same end as skipping, or the same verdict (incomplete, invalid),
    /// on arbitrary bodies behind a valid header, whether it sees the bytes at once or piece by piece.
    #[test]
    fn scanner_agrees_with_skip(body in scan_body(), cuts in vec(0..400usize, 0..6)) {
        let mut buf = Vec::new();
        Writer::new(&mut buf).message_header("x", message_type::REPLY, 1);
        let header_len = buf.len();
        buf.extend_from_slice(&body);
        let mut r = Reader::new(&buf, &lim());
        r.read_message_header().unwrap();
        let expected = match r.skip(ttype::STRUCT) {
            Ok(()) => Ok(Some(r.position())),
            Err(DecodeError::Incomplete) => Ok(None),
            Err(e) => Err(e),
        };
        let whole = MessageScanner::new().scan(&buf, &lim());
        prop_assert_eq!(&whole, &expected);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| (header_len + c).min(buf.len())).collect();
        cuts.sort_unstable();
        let mut scanner = MessageScanner::new();
        let mut last = Ok(None);
        for cut in cuts.into_iter().chain([buf.len()]) {
            last = scanner.scan(&buf[..cut], &lim());
            match &last {
                Ok(Some(end)) => { prop_assert!(*end <= cut); break; }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        // Piecewise, an invalid message may be seen as invalid or finish early only where the whole
        // buffer says the same.
        prop_assert_eq!(last, expected);
    }

    /// A connection's CallDecoder fed in arbitrary pieces returns each call once, complete, as a
    /// whole-buffer decode does.
    #[test]
    fn call_decoder_in_pieces(calls in vec((call(), any::<i32>()), 1..4), chunk in 1..64usize) {
        let mut stream = Vec::new();
        for (c, seqid) in &calls {
            encode_call(&mut stream, *seqid, c);
        }
        let mut decoder = CallDecoder::new(lim());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some((incoming, n)) = decoder.decode(&buf).unwrap() {
                got.push((incoming.call.unwrap(), incoming.seqid));
                buf.drain(..n);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, calls);
    }

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = decode_call(&bytes, &lim());
        let _ = decode_record(&bytes, &lim());
        let _ = record_len(&bytes, &lim());
        let _ = record_index_code(&bytes, &lim());
        let _ = decode_page(&bytes, &lim());
        let _ = decode_index_log_info(&bytes, &lim());
        for m in Method::ALL {
            let _ = decode_reply(&bytes, &lim(), m);
        }
        let _ = decode_read_page_reply_raw(&bytes, &lim());
    }

    /// Arbitrary bodies behind a valid call header never panic and never claim more than they hold.
    #[test]
    fn arbitrary_bodies_never_panic(method in 0..8usize, body in vec(any::<u8>(), 0..256)) {
        let mut bytes = Vec::new();
        Writer::new(&mut bytes).message_header(Method::ALL[method].name(), message_type::CALL, 1);
        bytes.extend_from_slice(&body);
        if let Ok(Some((_, n))) = decode_call(&bytes, &lim()) {
            prop_assert!(n <= bytes.len());
        }
    }

    /// Valid encodings with bytes changed never panic, whatever the decoder makes of them.
    #[test]
    fn mutated_encodings_never_panic(c in call(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = Vec::new();
        encode_call(&mut bytes, 7, &c);
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = decode_call(&bytes, &lim());
        let _ = decode_record(&bytes[bytes.len().min(40)..], &lim());
    }

    /// A record's fields may come in any order, with unknown fields between them.
    #[test]
    fn field_order_and_unknown_fields(r in record(), order in Just((0..8usize).collect::<Vec<_>>()).prop_shuffle(), junk in vec(any::<i64>(), 0..3)) {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        for (k, j) in junk.iter().enumerate() {
            w.field(ttype::I64, 100 + k as i16).i64(*j);
            w.field(ttype::LIST, 200 + k as i16).list_header(ttype::STRING, 1).string("x");
        }
        for f in order {
            match f {
                0 => if let Some(v) = r.id { w.field(ttype::I64, 1).i64(v); },
                1 => if let Some(v) = r.timestamp_ms { w.field(ttype::I64, 2).i64(v); },
                2 => if let Some(v) = &r.index_code { w.field(ttype::STRING, 3).string(v); },
                3 => if let Some(v) = &r.docid { w.field(ttype::STRING, 4).string(v); },
                4 => { w.field(ttype::BOOL, 5).bool(r.deleted); },
                5 => if let Some(m) = &r.fields { string_map(&mut w, 6, m) },
                6 => if let Some(m) = &r.variables {
                    w.field(ttype::MAP, 7).map_header(ttype::I32, ttype::DOUBLE, m.len());
                    for (k, v) in m { w.i32(*k).double(*v); }
                },
                _ => if let Some(m) = &r.categories { string_map(&mut w, 8, m) },
            }
        }
        w.stop();
        prop_assert_eq!(decode_record(&out, &lim()), Ok((r, out.len())));
    }

    /// A string length over the limit is invalid at once, wherever it is declared.
    #[test]
    fn huge_string_lengths_are_invalid(len in (STRING_BYTES_MAX as i64 + 1)..=(i32::MAX as i64), field in 3..5i16) {
        let mut out = Vec::new();
        Writer::new(&mut out).field(ttype::STRING, field).i32(len as i32);
        let err = decode_record(&out, &lim()).unwrap_err();
        prop_assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
        prop_assert!(matches!(record_len(&out, &lim()), Err(DecodeError::Invalid(_))));
        let mut msg = Vec::new();
        let mut w = Writer::new(&mut msg);
        w.message_header("read_page", message_type::CALL, 1);
        w.field(ttype::STRING, 1).i32(len as i32);
        prop_assert!(decode_call(&msg, &lim()).is_err());
    }

    /// A container count over the limit, or one whose elements could not fit in a message, is invalid
    /// at once.
    #[test]
    fn huge_counts_are_invalid(count in (CONTAINER_LEN_MAX as i64 + 1)..=(i32::MAX as i64), elem in prop::sample::select(vec![ttype::STRUCT, ttype::I64, ttype::STRING])) {
        let mut out = Vec::new();
        Writer::new(&mut out).field(ttype::LIST, 1).list_header(elem, 0);
        let n = out.len();
        out[n - 4..].copy_from_slice(&(count as i32).to_be_bytes());
        prop_assert!(matches!(decode_batch(&out, &lim()), Err(DecodeError::Invalid(_))));
        let small = Limits { message_bytes_max: 1000, ..lim() };
        let mut out = Vec::new();
        Writer::new(&mut out).field(ttype::LIST, 1).list_header(ttype::I64, 200);
        prop_assert!(matches!(decode_batch(&out, &small), Err(DecodeError::Invalid(_))));
    }
}

fn string_map(w: &mut Writer<'_>, id: i16, m: &BTreeMap<String, String>) {
    w.field(ttype::MAP, id)
        .map_header(ttype::STRING, ttype::STRING, m.len());
    for (k, v) in m {
        w.string(k).string(v);
    }
}

/// A message that would pass `message_bytes_max` is a stream error, not a wait for more bytes.
#[test]
fn message_over_the_limit_is_a_stream_error() {
    let small = Limits {
        message_bytes_max: 100,
        ..Limits::default()
    };
    let mut msg = Vec::new();
    let mut w = Writer::new(&mut msg);
    w.message_header("delete_index", message_type::CALL, 3);
    w.field(ttype::STRING, 1).i32(90);
    let err = decode_call(&msg, &small).unwrap_err();
    assert_eq!(err.seqid, Some(3));
    assert_eq!(err.name.as_deref(), Some("delete_index"));
    assert!(err.message.contains("message limit of 100 bytes"), "{err}");
}

/// A record sent without `deleted` (Python's generated code omits an unset field) is stored with
/// `deleted = false`, so every reader gets the field, as from records the writer encoded itself.
#[test]
fn copy_for_write_adds_deleted_when_absent() {
    let mut sent = Vec::new();
    Writer::new(&mut sent)
        .field(ttype::STRING, 3)
        .string("idx")
        .field(ttype::STRING, 4)
        .string("doc")
        .stop();
    let mut out = Vec::new();
    copy_record_for_write(&sent, &lim(), 42, &mut out).unwrap();
    let mut fields = Vec::new();
    let mut r = Reader::new(&out, &lim());
    while let Some((t, id)) = r.read_field_header().unwrap() {
        fields.push(id);
        r.skip(t).unwrap();
    }
    assert_eq!(fields, [3, 4, 2, 5]);
}
