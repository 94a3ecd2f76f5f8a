//! coordd's transaction-log records as read back at recovery: nothing may panic, and a record that decodes
//! encodes to bytes that decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logtank_coordd::txn::Txn;

fuzz_target!(|data: &[u8]| {
    if let Ok(txn) = Txn::decode(data) {
        let again = Txn::decode(&txn.encode()).expect("an encoded txn decodes");
        assert_eq!(again, txn);
    }
});
