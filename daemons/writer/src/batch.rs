//! `send_batch`'s rules, as a pure function: a batch's records as they came off the wire in, the raw log
//! record to append out (or why the batch is refused). No IO, so every rule is unit-tested here.
//!
//! One batch becomes ONE journal record whose payload is the concatenation of the Thrift binary encoding
//! of every record of the batch, in batch order, each with `timestamp_ms` set to the writer's clock and
//! `index_code` kept: IndexTank's raw segment format (structs back to back), framed by the journal. The
//! indexes daemon reads exactly this; nothing else goes in the payload. One record per batch is what makes
//! a batch all or nothing: the journal returns a record whole or not at all.
//!
//! Records are not decoded into structs: each is checked and copied as sent in one walk
//! ([`copy_record_for_write`], which accepts exactly what a full decode accepts), its `timestamp_ms`
//! replaced by a field at its end (field order does not matter to any Thrift reader). This was a third of
//! the writer's CPU when every record was built and encoded again (docs/benchmarks.md). The whole payload
//! is built before anything is appended, so a refused batch leaves nothing behind.

use logtank_thrift::{
    copy_record_for_write, validate_index_code, ExceptionKind, Limits, RawBatch, RecordForWrite,
};

use crate::metrics::Reason;

/// The limits `send_batch` enforces (from `[writer]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub record_bytes_max: u32,
    pub batch_bytes_max: u32,
    pub batch_records_max: u32,
    pub batch_index_codes_max: u32,
}

/// A batch ready to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The journal record's payload; empty for an empty batch (which is acknowledged, not appended).
    pub payload: Vec<u8>,
    pub records: usize,
}

/// Why a batch is refused; the message goes back to the client as is, as an exception of `kind`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub reason: Reason,
    /// `Unknown` (a plain refusal) for a record against the rules; `ProtocolError` for one that is not a
    /// well-formed `LogRecord` (what the generated code of a Thrift server would answer).
    pub kind: ExceptionKind,
    pub message: String,
}

impl Refused {
    fn new(reason: Reason, message: String) -> Refused {
        Refused {
            reason,
            kind: ExceptionKind::Unknown,
            message: format!("{message}: batch refused, nothing was written"),
        }
    }
}

/// Checks every record, stamps `now_ms`, and builds the batch's raw log record. `decode_limits` are the
/// connection's (strings, containers).
pub fn prepare(
    batch: &RawBatch,
    now_ms: i64,
    limits: &BatchLimits,
    decode_limits: &Limits,
) -> Result<Prepared, Refused> {
    if batch.count > limits.batch_records_max as usize {
        return Err(Refused::new(
            Reason::TooLarge,
            format!(
                "the batch has {} records, more than writer.batch_records_max = {}",
                batch.count, limits.batch_records_max
            ),
        ));
    }
    // The copy is a few bytes longer than what was sent (a timestamp where there was none).
    let mut payload =
        Vec::with_capacity(batch.records.len().min(limits.batch_bytes_max as usize) + 16 * batch.count);
    let mut rest = &batch.records[..];
    let mut codes: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for i in 0..batch.count {
        let start = payload.len();
        let record = copy_record_for_write(rest, decode_limits, now_ms, &mut payload).map_err(|e| Refused {
            reason: Reason::Invalid,
            kind: ExceptionKind::ProtocolError,
            message: format!(
                "invalid arguments to send_batch: {e} in record {} of the batch: batch refused, nothing was written",
                i + 1
            ),
        })?;
        rest = &rest[record.len..];
        check_record(i + 1, &record).map_err(|m| Refused::new(Reason::Invalid, m))?;
        if let Some(code) = record.index_code {
            if codes.insert(code) && codes.len() > limits.batch_index_codes_max as usize {
                return Err(Refused::new(
                    Reason::TooLarge,
                    format!(
                        "the batch names more than writer.batch_index_codes_max = {} indexes (reached at record {})",
                        limits.batch_index_codes_max,
                        i + 1
                    ),
                ));
            }
        }
        let len = payload.len() - start;
        if len > limits.record_bytes_max as usize {
            return Err(Refused::new(
                Reason::TooLarge,
                format!(
                    "record {} of the batch is {len} bytes encoded, more than writer.record_bytes_max = {}",
                    i + 1,
                    limits.record_bytes_max
                ),
            ));
        }
        if payload.len() > limits.batch_bytes_max as usize {
            return Err(Refused::new(
                Reason::TooLarge,
                format!(
                    "the batch is more than writer.batch_bytes_max = {} bytes encoded (reached at record {} of {})",
                    limits.batch_bytes_max,
                    i + 1,
                    batch.count
                ),
            ));
        }
    }
    Ok(Prepared {
        payload,
        records: batch.count,
    })
}

/// The rules one record must follow; `n` counts from 1, as an operator reads "record 3 of the batch".
fn check_record(n: usize, r: &RecordForWrite<'_>) -> Result<(), String> {
    if r.has_id {
        return Err(format!(
            "record {n} of the batch has id set: id is legacy and not accepted"
        ));
    }
    match r.index_code {
        None => return Err(format!("record {n} of the batch has no index_code")),
        Some(code) => validate_index_code(code).map_err(|e| format!("record {n} of the batch has an {e}"))?,
    }
    match r.docid {
        None => Err(format!("record {n} of the batch has no docid")),
        Some("") => Err(format!("record {n} of the batch has an empty docid")),
        Some(_) => Ok(()),
    }
}

/// Milliseconds since the Unix epoch by the wall clock (what IndexTank stamped: `currentTimeMillis`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use logtank_thrift::{decode_record, encode_record, LogBatch, LogRecord};

    use super::*;

    fn prepare(batch: LogBatch, now_ms: i64, limits: &BatchLimits) -> Result<Prepared, Refused> {
        super::prepare(&RawBatch::from_batch(&batch), now_ms, limits, &Limits::default())
    }

    const LIMITS: BatchLimits = BatchLimits {
        record_bytes_max: 10_000,
        batch_bytes_max: 50_000,
        batch_records_max: 100,
        batch_index_codes_max: 3,
    };

    fn record(code: &str, docid: &str) -> LogRecord {
        LogRecord {
            index_code: Some(code.into()),
            docid: Some(docid.into()),
            fields: Some(BTreeMap::from([("text".to_string(), format!("doc {docid}"))])),
            ..LogRecord::default()
        }
    }

    fn decode_all(mut bytes: &[u8]) -> Vec<LogRecord> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (r, used) = decode_record(bytes, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
            out.push(r);
            bytes = &bytes[used..];
        }
        out
    }

    // Proves the payload is exactly the records back to back, in order, timestamped, index_code kept.
    #[test]
    fn payload_is_the_records_in_order() {
        let batch = LogBatch {
            records: vec![record("idx", "a"), record("other", "b"), record("idx", "c")],
        };
        let prepared = prepare(batch.clone(), 1234, &LIMITS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prepared.records, 3);
        let expected: Vec<LogRecord> = batch
            .records
            .iter()
            .map(|r| LogRecord {
                timestamp_ms: Some(1234),
                ..r.clone()
            })
            .collect();
        assert_eq!(decode_all(&prepared.payload), expected);
    }

    // Proves a client's own timestamp is replaced (not kept beside ours), and a record that is not a
    // well-formed LogRecord is a protocol error naming it.
    #[test]
    fn timestamps_are_replaced_and_broken_records_named() {
        let mut stamped = record("idx", "a");
        stamped.timestamp_ms = Some(5);
        let prepared = prepare(
            LogBatch {
                records: vec![stamped],
            },
            99,
            &LIMITS,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decode_all(&prepared.payload)[0].timestamp_ms, Some(99));
        let mut bytes = Vec::new();
        encode_record(&mut bytes, &record("idx", "a"));
        let mut broken = bytes.clone();
        // The docid's length says 1 byte, its byte is not UTF-8.
        let docid = broken
            .windows(5)
            .position(|w| w == [0, 0, 0, 1, b'a'])
            .expect("docid");
        broken[docid + 4] = 0xff;
        bytes.extend_from_slice(&broken);
        let raw = RawBatch {
            records: bytes,
            count: 2,
        };
        let e = super::prepare(&raw, 1, &LIMITS, &Limits::default()).expect_err("accepted");
        assert_eq!(
            (e.reason, e.kind),
            (Reason::Invalid, ExceptionKind::ProtocolError)
        );
        assert!(e.message.contains("in record 2 of the batch"), "{e}");
        assert!(e.message.contains("in field 4 of LogRecord"), "{e}");
    }

    #[test]
    fn empty_batch_is_empty_payload() {
        let prepared = prepare(LogBatch::default(), 1, &LIMITS).unwrap_or_else(|e| panic!("{e}"));
        assert!(prepared.payload.is_empty());
        assert_eq!(prepared.records, 0);
    }

    // Proves each rule is enforced with a message naming the record (from 1) and saying nothing was
    // written; a bad record anywhere refuses the whole batch.
    #[test]
    fn rules() {
        let refuse = |bad: LogRecord| {
            let batch = LogBatch {
                records: vec![record("idx", "1"), record("idx", "2"), bad],
            };
            prepare(batch, 1, &LIMITS).expect_err("accepted")
        };
        let mut with_id = record("idx", "3");
        with_id.id = Some(7);
        let e = refuse(with_id);
        assert_eq!(e.reason, Reason::Invalid);
        assert_eq!(
            e.message,
            "record 3 of the batch has id set: id is legacy and not accepted: batch refused, nothing was written"
        );
        let mut no_code = record("idx", "3");
        no_code.index_code = None;
        assert!(refuse(no_code)
            .message
            .contains("record 3 of the batch has no index_code"));
        for code in ["../x", "", "a/b", &"x".repeat(129)] {
            let e = refuse(record(code, "3"));
            assert!(
                e.message
                    .contains("record 3 of the batch has an invalid index_code"),
                "{e}"
            );
        }
        let mut no_docid = record("idx", "3");
        no_docid.docid = None;
        assert!(refuse(no_docid).message.contains("has no docid"));
        assert!(refuse(record("idx", "")).message.contains("has an empty docid"));
    }

    // Proves one batch cannot name more indexes than batch_index_codes_max (the dealer keeps a file per
    // index of a raw segment open); repeated codes count once.
    #[test]
    fn distinct_index_codes_are_bounded() {
        let ok = LogBatch {
            records: ["a", "b", "a", "c", "c"]
                .iter()
                .enumerate()
                .map(|(i, code)| record(code, &i.to_string()))
                .collect(),
        };
        prepare(ok, 1, &LIMITS).unwrap_or_else(|e| panic!("{e}"));
        let four = LogBatch {
            records: ["a", "b", "a", "c", "d"]
                .iter()
                .enumerate()
                .map(|(i, code)| record(code, &i.to_string()))
                .collect(),
        };
        let e = prepare(four, 1, &LIMITS).expect_err("accepted");
        assert_eq!(e.reason, Reason::TooLarge);
        assert!(
            e.message
                .contains("more than writer.batch_index_codes_max = 3 indexes (reached at record 5)"),
            "{e}"
        );
    }

    #[test]
    fn limits() {
        let mut big = record("idx", "big");
        big.fields = Some(BTreeMap::from([("text".to_string(), "x".repeat(20_000))]));
        let e = prepare(LogBatch { records: vec![big] }, 1, &LIMITS).expect_err("accepted");
        assert_eq!(e.reason, Reason::TooLarge);
        assert!(e.message.contains("writer.record_bytes_max = 10000"), "{e}");

        let mut medium = record("idx", "m");
        medium.fields = Some(BTreeMap::from([("text".to_string(), "x".repeat(9_000))]));
        let batch = LogBatch {
            records: vec![medium; 6],
        };
        let e = prepare(batch, 1, &LIMITS).expect_err("accepted");
        assert!(e.message.contains("writer.batch_bytes_max = 50000"), "{e}");

        let batch = LogBatch {
            records: vec![record("idx", "d"); 101],
        };
        let e = prepare(batch, 1, &LIMITS).expect_err("accepted");
        assert!(e.message.contains("101 records"), "{e}");
    }
}
