//! What the demo and the load generator send: the JPEG-looking images and the submission they
//! both build requests from. Only the tools use it; the tests keep their own fixtures, so a
//! change to what the tools send never changes what a test asserts against.

use rand::RngCore;

use crate::api::pb;

/// Length of the header `fake_jpeg` writes before its random body.
pub const JPEG_HEADER: usize = 11;

/// A minimal JPEG header followed by `len` random bytes: enough for the image sniffer, which
/// judges the format by its magic bytes.
pub fn fake_jpeg(len: usize) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
    ];
    debug_assert_eq!(v.len(), JPEG_HEADER);
    let mut body = vec![0u8; len];
    rand::rng().fill_bytes(&mut body);
    v.extend_from_slice(&body);
    v
}

/// A submission with a voucher and the front of a PRC resident ID card.
pub fn submit_request(
    serial: &str,
    code: &str,
    minor_units: i64,
    account: &str,
) -> pb::SubmitRequest {
    let images = vec![
        pb::ImageUpload {
            kind: pb::ImageKind::Voucher as i32,
            media_type: "image/jpeg".into(),
            content: fake_jpeg(32 * 1024),
        },
        pb::ImageUpload {
            kind: pb::ImageKind::IdFront as i32,
            media_type: "image/jpeg".into(),
            content: fake_jpeg(16 * 1024),
        },
    ];
    submit_request_with(serial, code, minor_units, account, images)
}

/// The same submission with the caller's images (a load generator's, made without drawing
/// random bytes for each request).
pub fn submit_request_with(
    serial: &str,
    code: &str,
    minor_units: i64,
    account: &str,
    images: Vec<pb::ImageUpload>,
) -> pb::SubmitRequest {
    pb::SubmitRequest {
        teller_serial: serial.into(),
        transaction: Some(pb::Transaction {
            code: code.into(),
            amount: Some(pb::Money {
                minor_units,
                currency: "CNY".into(),
            }),
            account: account.into(),
            counterparty: String::new(),
            attributes: [("channel".to_string(), "counter".to_string())]
                .into_iter()
                .collect(),
        }),
        customer: Some(pb::CustomerIdentity {
            document_type: pb::DocumentType::PrcResidentId as i32,
            document_number: "11010519491231002X".into(),
            name: "Zhao Min".into(),
            expiry_date: "2036-05-01".into(),
            verification: pb::IdVerification::Matched as i32,
        }),
        images,
        note: "customer is a long-standing client; withdrawal for a house deposit".into(),
    }
}
