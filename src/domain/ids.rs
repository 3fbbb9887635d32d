//! Newtype identifiers, so a teller id can never be passed where a request id is expected.

use std::fmt;

/// Lowercase hex, the only form ids and hashes take (written here so the domain needs no
/// crate outside `std`).
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// A server-issued request id: 32 lowercase hex characters drawn from the engine's RNG, kept
/// inline (the engine holds each id in several maps; as a `String` every copy was another heap
/// allocation). Ordered and hashed as the text is.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId([u8; 32]);

impl RequestId {
    /// Makes an id from 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut out = [0u8; 32];
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX_DIGITS[usize::from(b >> 4)];
            pair[1] = HEX_DIGITS[usize::from(b & 0x0f)];
        }
        RequestId(out)
    }

    /// Parses an id a client sent; `None` when it cannot be one of ours.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return None;
        }
        s.as_bytes().try_into().ok().map(RequestId)
    }

    pub fn as_str(&self) -> &str {
        // Both constructors store only ASCII hex digits, so this is always UTF-8.
        #[allow(clippy::expect_used)]
        std::str::from_utf8(&self.0).expect("only hex digits are ever stored")
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({:?})", self.as_str())
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        /// Shared text: the engine copies ids into several maps, and a copy is then a count,
        /// not another allocation.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(std::sync::Arc::from(s.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A principal (teller, supervisor, auditor, admin) as named in the principal directory.
    PrincipalId
);
string_id!(
    /// A branch (网点) or the authorization centre.
    BranchId
);
string_id!(
    /// The teller's own serial number for a submission; with the teller, the idempotency key.
    TellerSerial
);

/// The SHA-256 of an image's bytes: its name in the content-addressed image store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageHash(pub [u8; 32]);

impl ImageHash {
    /// Parses 64 lowercase hex characters.
    pub fn parse_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (b, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *b = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
        }
        Some(ImageHash(out))
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
            s.push(char::from(HEX_DIGITS[usize::from(b & 0x0f)]));
        }
        s
    }
}

impl fmt::Display for ImageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms_round_trip_and_refuse_what_is_not_ours() {
        let id = RequestId::from_random([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0xff, 0x10, 0x0f, 0xa0, 0x0a, 0x55,
            0xaa,
        ]);
        assert_eq!(id.as_str(), "0123456789abcdef00ff100fa00a55aa");
        assert_eq!(RequestId::parse(id.as_str()), Some(id));
        assert_eq!(RequestId::parse("0123456789ABCDEF00ff100fa00a55aa"), None);
        assert_eq!(RequestId::parse("0123456789abcdef00ff100fa00a55a"), None);
        let mut bytes = [0u8; 32];
        bytes[0] = 0xde;
        bytes[31] = 0x09;
        let h = ImageHash(bytes);
        let text = h.to_hex();
        assert_eq!(&text[..2], "de");
        assert_eq!(&text[62..], "09");
        assert_eq!(ImageHash::parse_hex(&text), Some(h));
        assert_eq!(ImageHash::parse_hex(&text.to_uppercase()), None);
        assert_eq!(ImageHash::parse_hex(&text.replace("de", "dg")), None);
        assert_eq!(ImageHash::parse_hex(&text[..62]), None);
    }
}
