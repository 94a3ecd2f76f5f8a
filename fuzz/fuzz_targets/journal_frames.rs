//! The journal's on-disk formats as recovery and the storage reader meet them: a segment header, then frames
//! back to back. Nothing may panic; a frame that decodes re-encodes to the same header and payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_journal::frame::{
    decode_frame, encode_frame, Decoded, SegmentHeader, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let _ = SegmentHeader::decode(data);
    let mut rest = data.get(SEGMENT_HEADER_BYTES.min(data.len())..).unwrap_or_default();
    while let Decoded::Frame(frame) = decode_frame(rest, 1 << 20) {
        let mut again = Vec::new();
        encode_frame(&mut again, frame.seq, frame.durable_hint, frame.payload);
        // The padding is not checked (nor written by anything but zeros): compare header and payload.
        let used = FRAME_HEADER_BYTES + frame.payload.len();
        assert_eq!(&again[..used], &rest[..used]);
        rest = &rest[frame.frame_len..];
    }
});
