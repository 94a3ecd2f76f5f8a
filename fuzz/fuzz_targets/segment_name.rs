//! Per-index segment file names as the storage layer lists them: nothing may panic, and a name that parses
//! is exactly the name its parts format to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_storage::SegmentName;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some(parsed) = SegmentName::parse(name) {
            assert_eq!(parsed.to_string(), name);
            assert!(parsed.from <= parsed.to);
        }
    }
});
