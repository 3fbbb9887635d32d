//! `ledger::record::decode` on arbitrary bytes; whatever decodes must round-trip through
//! `record::encode`.
#![no_main]

use countersign::ledger::record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rec) = record::decode(data) else {
        return;
    };
    let bytes = record::encode(&rec);
    let again = match record::decode(&bytes) {
        Ok(r) => r,
        Err(e) => panic!(
            "re-encoded record does not decode: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(again, rec, "record changed in a round trip");
    assert_eq!(record::encode(&again), bytes, "encoding is not stable");
});
