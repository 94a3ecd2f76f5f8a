//! The client's side: a byte stream from a bookie, split into frames and decoded as responses, read-LAC
//! bodies and entries as the ledger client reads them. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_bookie_proto::{decode_response, next_frame, parse_entry, Frame, OpCode, ReadLacBody};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Frame::Complete { body, used }) = next_frame(rest, 1 << 20) {
        if let Ok(response) = decode_response(body) {
            match response.op {
                OpCode::ReadLac => {
                    if let Ok(lac) = ReadLacBody::decode(&response.body) {
                        if let Some(entry) = lac.last_entry {
                            let _ = parse_entry(entry);
                        }
                    }
                }
                _ => {
                    let _ = parse_entry(&response.body);
                }
            }
        }
        rest = &rest[used..];
    }
});
