//! Newtype identifiers, so a teller id can never be passed where a request id is expected.

use std::fmt;

/// A server-issued request id: 32 lowercase hex characters drawn from the engine's RNG, kept
/// inline (the engine holds each id in several maps; as a `String` every copy was another heap
/// allocation). Ordered and hashed as the text is.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId([u8; 32]);

impl RequestId {
    /// Makes an id from 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut out = [0u8; 32];
        hex::encode_to_slice(bytes, &mut out).expect("32 bytes hold 16 in hex");
        RequestId(out)
    }

    /// Parses an id a client sent; `None` when it cannot be one of ours.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| RequestId(s.as_bytes().try_into().expect("32 bytes checked")))
    }

    pub fn as_str(&self) -> &str {
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
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ImageHash(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ImageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
