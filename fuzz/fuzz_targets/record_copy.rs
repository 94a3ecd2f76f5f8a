//! Differential: the writer's check-and-copy of a record (`copy_record_for_write`, under the writer's
//! limits) against the dealer's full decode (`decode_record`, under the storage limits) of the same bytes
//! and of the copy. Whatever the writer accepts, the dealer must read back as the record sent, stamped
//! with the writer's timestamp (`deleted` absent reads as false either way); whatever the writer refuses, the full decode refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_thrift::{copy_record_for_write, decode_record, Limits};

const STAMP: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let writer_limits = Limits {
        message_bytes_max: 1 << 20,
        string_bytes_max: 1 << 20,
        ..Limits::default()
    };
    let storage_limits = Limits::default();
    let mut out = Vec::new();
    match copy_record_for_write(data, &writer_limits, STAMP, &mut out) {
        Ok(copied) => {
            let (sent, len) = decode_record(data, &writer_limits).expect("the full decode refuses what the copy accepted");
            assert_eq!(len, copied.len, "the copy and the decode disagree on the record's length");
            assert_eq!(copied.index_code, sent.index_code.as_deref());
            assert_eq!(copied.docid, sent.docid.as_deref());
            let (stored, stored_len) = decode_record(&out, &storage_limits).expect("the dealer cannot read the copy");
            assert_eq!(stored_len, out.len());
            let mut expected = sent;
            expected.timestamp_ms = Some(STAMP);
            // Compared by their Debug text: a variable may be NaN, which is not equal to itself.
            assert_eq!(format!("{stored:?}"), format!("{expected:?}"));
        }
        Err(_) => {
            assert!(out.is_empty(), "a refused copy left bytes behind");
            assert!(decode_record(data, &writer_limits).is_err(), "the copy refused what the decode accepts");
        }
    }
});
