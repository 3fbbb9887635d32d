//! A PNG encoder for the pictures the tools and tests send as voucher images (a form with
//! ruled lines and a seal), so that a browser shows a real image where the load generator's
//! random bytes would show nothing. Deflate's stored blocks only: the images are small and
//! this needs no compression crate; CRC-32 and Adler-32 are computed here.

/// An RGB picture `width` x `height`, `pixel(x, y)` giving each pixel's colour.
pub fn rgb(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    // Each row: filter type 0 (none), then the pixels.
    let mut raw = Vec::with_capacity(((width * 3 + 1) * height) as usize);
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            raw.extend_from_slice(&pixel(x, y));
        }
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A voucher-like picture: paper, a frame, ruled lines, a red seal placed by `seed` (so two
/// seeds make two different images, which the content-addressed store keeps apart).
pub fn voucher(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let (cx, cy) = (
        width * 3 / 4 + (seed % 17) as u32,
        height / 2 + (seed / 17 % 13) as u32,
    );
    let r2 = (height / 6).pow(2);
    rgb(width, height, |x, y| {
        let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
        let d2 = dx * dx + dy * dy;
        if d2 <= r2 && d2 + 6 * (height / 6) >= r2 {
            [200, 30, 30] // the seal's ring
        } else if x < 6 || y < 6 || x >= width - 6 || y >= height - 6 {
            [40, 70, 120] // the frame
        } else if y % 28 == 0 && x > 20 && x < width - 20 {
            [150, 160, 175] // ruled lines
        } else if (y / 28) % 2 == 1 && x % 60 < 40 && y % 28 > 10 && y % 28 < 18 && x < width / 2 {
            [60, 60, 60] // "handwriting"
        } else {
            [250, 247, 236] // paper
        }
    })
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    if blocks.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// Adler-32, zlib's checksum of the uncompressed data.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// CRC-32 (IEEE, as PNG uses it), bit by bit: the images are small.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn adler32_matches_the_standard_check_value() {
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    /// The stored blocks carry the data as it is, split at 65,535 bytes, last block marked.
    #[test]
    fn stored_blocks_round_trip() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let z = zlib_stored(&data);
        assert_eq!(&z[..2], &[0x78, 0x01]);
        let (mut at, mut out) = (2, Vec::new());
        loop {
            let last = z[at] == 1;
            let len = usize::from(u16::from_le_bytes([z[at + 1], z[at + 2]]));
            let nlen = u16::from_le_bytes([z[at + 3], z[at + 4]]);
            assert_eq!(nlen, !(len as u16));
            out.extend_from_slice(&z[at + 5..at + 5 + len]);
            at += 5 + len;
            if last {
                break;
            }
        }
        assert_eq!(out, data);
        assert_eq!(&z[at..], &adler32(&data).to_be_bytes());
    }

    #[test]
    fn a_picture_is_a_png_with_the_sizes_asked_for() {
        let png = voucher(300, 200, 7);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 300);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 200);
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
        assert_ne!(png, voucher(300, 200, 8), "another seed, another image");
    }
}
