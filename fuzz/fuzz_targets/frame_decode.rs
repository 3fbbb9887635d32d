//! `ledger::frame::decode` / `is_torn_tail` on arbitrary bytes. A decoded frame must re-encode
//! to exactly the bytes it consumed.
#![no_main]

use countersign::storage::embedded::frame::{self, Decoded, FRAME_HEADER_LEN, PAYLOAD_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::is_torn_tail(data);
    let _ = frame::parse_segment_header(data);

    // The index stored in the input itself (so the in-sequence path is reachable), plus fixed ones.
    let own = data
        .get(8..16)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .unwrap_or(0);
    for expected in [0u64, 1, 7, u64::MAX, own] {
        match frame::decode(data, expected) {
            Decoded::Frame {
                index,
                payload,
                len,
            } => {
                assert_eq!(index, expected, "frame accepted with the wrong index");
                assert!(len <= data.len(), "frame longer than the input");
                assert_eq!(len, FRAME_HEADER_LEN + payload.len());
                assert!(payload.len() <= PAYLOAD_BYTES_MAX as usize);
                let mut out = Vec::with_capacity(len);
                frame::encode(index, payload, &mut out);
                assert_eq!(
                    out.as_slice(),
                    &data[..len],
                    "re-encoded frame differs from the consumed bytes"
                );
            }
            Decoded::Incomplete => {
                // Incomplete means the bytes end inside the frame.
                if data.len() >= FRAME_HEADER_LEN {
                    let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
                    assert!(data.len() < FRAME_HEADER_LEN + n);
                }
            }
            Decoded::Corrupt(_) => {}
        }
    }
});
