//! coordd's side of a client connection: a four-letter word or a handshake, then request frames, as
//! `daemons/coordd/src/conn.rs` reads them. Nothing may panic, and a decoded request encodes to a frame that
//! decodes to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_zk::frame::{four_letter_word, next_frame, Frame};
use logtank_zk::jute::Writer;
use logtank_zk::{ConnectRequest, Request};

const FRAME_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if four_letter_word(data).is_some() {
        return;
    }
    let Ok(Frame::Complete { payload, used }) = next_frame(data, FRAME_MAX) else {
        return;
    };
    if let Ok(connect) = ConnectRequest::decode(payload) {
        let again = connect.encode();
        if let Ok(Frame::Complete { payload, .. }) = next_frame(&again, FRAME_MAX) {
            assert_eq!(ConnectRequest::decode(payload).ok(), Some(connect));
        }
    }
    let mut rest = &data[used..];
    while let Ok(Frame::Complete { payload, used }) = next_frame(rest, FRAME_MAX) {
        if let Ok((header, request)) = Request::decode(payload) {
            let mut w = Writer::frame();
            w.i32(header.xid).i32(request.opcode());
            request.encode_body(&mut w);
            let again = w.finish_frame();
            let Ok(Frame::Complete { payload, .. }) = next_frame(&again, usize::MAX) else {
                panic!("an encoded request is not a whole frame");
            };
            let (_, decoded) = Request::decode(payload).expect("an encoded request decodes");
            assert_eq!(decoded, request);
        }
        rest = &rest[used..];
    }
});
