//! A storage port's side of a connection: calls decoded as the writer (raw batches, each record checked and
//! copied as the writer stores it) and the indexes daemon (full decode) decode them. Nothing may panic,
//! and every record the writer's copy accepts, the full decode accepts too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_thrift::{copy_record_for_write, decode_record, Call, CallDecoder, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        message_bytes_max: 1 << 20,
        ..Limits::default()
    };
    for raw in [false, true] {
        let mut decoder = if raw {
            CallDecoder::with_raw_batches(limits)
        } else {
            CallDecoder::new(limits)
        };
        let mut rest = data;
        while let Ok(Some((incoming, used))) = decoder.decode(rest) {
            if let Ok(Call::SendBatchRaw(batch)) = &incoming.call {
                let mut records = &batch.records[..];
                let mut out = Vec::new();
                for _ in 0..batch.count {
                    let Ok(record) = copy_record_for_write(records, &limits, 7, &mut out) else {
                        break;
                    };
                    decode_record(records, &limits).expect("the copy accepted what the decode refuses");
                    records = &records[record.len..];
                }
            }
            let mut reply = Vec::new();
            if incoming.call.is_err() {
                incoming.encode_error_reply(&mut reply);
            }
            rest = &rest[used.max(1).min(rest.len())..];
        }
    }
});
