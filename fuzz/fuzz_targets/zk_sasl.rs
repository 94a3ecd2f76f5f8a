//! coordd's SASL DIGEST-MD5 server fed arbitrary client tokens (the directives parser included): nothing
//! may panic, and no token logs in a user without the password's digest.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use logtank_coordd::sasl::{SaslOutcome, SaslServer};

fuzz_target!(|data: &[u8]| {
    let users: BTreeMap<String, String> = [("alice".to_string(), "secret".to_string())].into();
    let mut server = SaslServer::new();
    // Tokens separated by a NUL byte: the first is the client's initial response, the rest follow.
    for token in data.split(|&b| b == 0) {
        match server.step(token, &users) {
            SaslOutcome::Continue(_) => {}
            SaslOutcome::Done { .. } => panic!("a fuzzed token logged in"),
            SaslOutcome::Failed(_) => break,
        }
    }
});
