//! The storage client's side: replies of every method as `logtank_thrift::Client` decodes them. Nothing may
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_thrift::*;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        message_bytes_max: 1 << 20,
        ..Limits::default()
    };
    let _ = decode_send_batch_reply(data, &limits);
    let _ = decode_enqueue_for_optimization_reply(data, &limits);
    let _ = decode_delete_index_reply(data, &limits);
    let _ = decode_read_page_reply(data, &limits);
    let _ = decode_read_page_reply_raw(data, &limits);
    let _ = decode_whole_read_page_reply_raw(data, &limits);
    let _ = decode_get_index_log_info_reply(data, &limits);
    let _ = decode_get_raw_log_info_reply(data, &limits);
    let _ = decode_get_optimization_queue_reply(data, &limits);
    let _ = decode_list_existing_indexes_reply(data, &limits);
});
