//! `ledger::record::decode_entry` on arbitrary bytes; whatever decodes (a request's record or
//! the engine's) must round-trip through `record::encode_entry`.
#![no_main]

use countersign::ledger::record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rec) = record::decode_entry(data) else {
        return;
    };
    let bytes = record::encode_entry(&rec);
    let again = match record::decode_entry(&bytes) {
        Ok(r) => r,
        Err(e) => panic!(
            "re-encoded record does not decode: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(again, rec, "record changed in a round trip");
    assert_eq!(record::encode_entry(&again), bytes, "encoding is not stable");
});
