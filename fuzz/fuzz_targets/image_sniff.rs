//! `domain::MediaType::sniff` must agree with the magic-byte rules.
#![no_main]

use countersign::domain::MediaType;
use libfuzzer_sys::fuzz_target;

fn expected(b: &[u8]) -> Option<MediaType> {
    if b.len() >= 3 && b[..3] == [0xFF, 0xD8, 0xFF] {
        Some(MediaType::Jpeg)
    } else if b.len() >= 8 && b[..8] == [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A] {
        Some(MediaType::Png)
    } else if b.len() >= 4 && (b[..4] == [b'I', b'I', 0x2A, 0x00] || b[..4] == [b'M', b'M', 0x00, 0x2A]) {
        Some(MediaType::Tiff)
    } else if b.len() >= 5 && b[..5] == *b"%PDF-" {
        Some(MediaType::Pdf)
    } else {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let got = MediaType::sniff(data);
    assert_eq!(got, expected(data), "sniff disagrees with the magic-byte rules");
    if let Some(t) = got {
        assert_eq!(MediaType::from_mime(t.as_mime()), Some(t));
    }
    // Sniffing only looks at the prefix: trailing bytes never change the answer.
    if data.len() >= 8 {
        assert_eq!(MediaType::sniff(&data[..8]), got);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(t) = MediaType::from_mime(s) {
            assert_eq!(t.as_mime(), s);
        }
    }
});
