//! What every RPC that carries typed or scanned input receives: arbitrary bytes decoded as each
//! such request message and taken through `api::convert` (the conversion and the domain's field
//! rules). No panic, no hang; every refusal names a field of that message, with a reason.
#![no_main]

use countersign::api::ApiLimits;
use countersign::api::convert::{CHECKED_REQUESTS, decode_and_check};
use countersign::domain::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let limits = ApiLimits {
        message_bytes_max: 1 << 20,
        image_bytes_max: 1 << 16,
        images_per_request_min: 1,
        images_per_request_max: 4,
        watch_streams_per_principal_max: 4,
    };
    let now = Timestamp(1_780_000_000_000);
    if let Some(Err(e)) = decode_and_check(kind, bytes, now, &limits) {
        let (name, fields) = CHECKED_REQUESTS[usize::from(kind) % CHECKED_REQUESTS.len()];
        assert!(
            fields.iter().any(|f| e.field.starts_with(f)),
            "{name}: the refusal names {:?}, not a field of the message",
            e.field
        );
        assert!(!e.reason.is_empty(), "{name}: a refusal without a reason");
    }
});
