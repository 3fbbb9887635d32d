//! The byte layout of segments and frames.
//!
//! A segment file starts with a 16-byte header: the magic `CSLEDGR1` and the index of its first
//! record (u64 little-endian). Frames follow back to back:
//!
//! ```text
//! len: u32 LE | crc: u32 LE | index: u64 LE | payload: len bytes
//! ```
//! `crc` is CRC-32C over `index` and `payload`, so a frame moved to another position fails its
//! check. `payload` is the record exactly as hashed into the Merkle tree.

/// Segment magic; the trailing digit is the format version.
pub const MAGIC: &[u8; 8] = b"CSLEDGR1";
pub const SEGMENT_HEADER_LEN: usize = 16;
pub const FRAME_HEADER_LEN: usize = 16;
/// Largest payload a frame may carry; a larger length field means damage, not a record.
pub const PAYLOAD_BYTES_MAX: u32 = 16 * 1024 * 1024;

pub fn segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&first_index.to_le_bytes());
    h
}

pub fn parse_segment_header(b: &[u8]) -> Option<u64> {
    if b.len() < SEGMENT_HEADER_LEN || &b[..8] != MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(b[8..16].try_into().ok()?))
}

fn crc(index: u64, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&index.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// Appends one frame to `out`.
pub fn encode(index: u64, payload: &[u8], out: &mut Vec<u8>) {
    // The appender refuses payloads over PAYLOAD_BYTES_MAX (a u32) before they get here.
    #[allow(clippy::expect_used)]
    let len = u32::try_from(payload.len()).expect("payload length checked by the appender");
    assert!(len <= PAYLOAD_BYTES_MAX, "record too large for a frame");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc(index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What reading one frame at the start of `b` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, intact frame and how many bytes it took.
    Frame {
        index: u64,
        payload: &'a [u8],
        len: usize,
    },
    /// The bytes end inside the frame (a torn write if this is the log's end).
    Incomplete,
    /// The frame is whole but its length, checksum or index is wrong.
    Corrupt(&'static str),
}

/// Reads the frame at the start of `b`, expecting it to hold record `expected_index`.
pub fn decode(b: &[u8], expected_index: u64) -> Decoded<'_> {
    if b.len() < FRAME_HEADER_LEN {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let sum = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut ix = [0u8; 8];
    ix.copy_from_slice(&b[8..16]);
    let index = u64::from_le_bytes(ix);
    if len > PAYLOAD_BYTES_MAX {
        return Decoded::Corrupt("length out of range");
    }
    let total = FRAME_HEADER_LEN + len as usize;
    if b.len() < total {
        return Decoded::Incomplete;
    }
    let payload = &b[FRAME_HEADER_LEN..total];
    if crc(index, payload) != sum {
        return Decoded::Corrupt("checksum mismatch");
    }
    if index != expected_index {
        return Decoded::Corrupt("record index out of sequence");
    }
    Decoded::Frame {
        index,
        payload,
        len: total,
    }
}

/// Whether damage found at the start of `rest` (the end of the last segment) is what a crash
/// in the middle of a write leaves rather than tampering: a frame that claims to run to the end
/// of the file, or a tail of zeros (the file grew but its data never reached the disk). Damage
/// followed by more data is never torn.
pub fn is_torn_tail(rest: &[u8]) -> bool {
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    if rest.len() < FRAME_HEADER_LEN {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    FRAME_HEADER_LEN + len >= rest.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        encode(7, b"hello", &mut buf);
        assert_eq!(
            decode(&buf, 7),
            Decoded::Frame {
                index: 7,
                payload: b"hello",
                len: buf.len()
            }
        );
        assert_eq!(
            decode(&buf, 8),
            Decoded::Corrupt("record index out of sequence")
        );
        assert_eq!(decode(&buf[..buf.len() - 1], 7), Decoded::Incomplete);
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(
                !matches!(decode(&b, 7), Decoded::Frame { .. }),
                "flip at byte {i} went unnoticed"
            );
        }
    }
}
