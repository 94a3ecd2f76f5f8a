//! The bookie's side: a byte stream from a client, split into frames and decoded as requests, each add's
//! entry checked as the bookie checks it. Nothing may panic; a decoded request must encode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_bookie_proto::{decode_request, encode_request, next_frame, parse_entry, Frame, Request};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Frame::Complete { body, used }) = next_frame(rest, 1 << 20) {
        if let Ok(request) = decode_request(body) {
            if let Request::Add(add) = &request {
                let _ = parse_entry(&add.entry);
            }
            let mut again = Vec::new();
            encode_request(&mut again, &request);
            // Flags of a read are normalised (DO_FENCING follows the key), so compare what decoding sees.
            let Ok(Frame::Complete { body: again_body, .. }) = next_frame(&again, 1 << 20) else {
                panic!("an encoded request is not a whole frame");
            };
            assert_eq!(decode_request(again_body).ok(), Some(request));
        }
        rest = &rest[used..];
    }
});
