//! coordd's snapshot decoder past its checksum (the target adds the magic and a valid CRC, so the fuzzer
//! explores the body): nothing may panic, however the nodes, paths and sessions are made up.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use logtank_coordd::snapshot;

fuzz_target!(|data: &[u8]| {
    let mut bytes = snapshot::MAGIC.to_vec();
    bytes.extend_from_slice(data);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    let _ = snapshot::decode(&bytes, true, Path::new("fuzz"));
});

