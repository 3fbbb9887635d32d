//! What the tests send: a JPEG-looking image and a well-formed submission. The tests own these
//! rather than borrowing the demo's, so a change to what the tools send never changes what a
//! test asserts against.

use countersign::api::pb;
use rand::RngCore;

/// A minimal JPEG header followed by `len` random bytes: enough for the image sniffer, which
/// judges the format by its magic bytes. Random, so two calls never make the same image (the
/// image store is content-addressed).
pub fn fake_jpeg(len: usize) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
    ];
    let mut body = vec![0u8; len];
    rand::rng().fill_bytes(&mut body);
    v.extend_from_slice(&body);
    v
}

/// A submission with a 32 KiB voucher and a 16 KiB front of a PRC resident ID card.
pub fn submit_request(
    serial: &str,
    code: &str,
    minor_units: i64,
    account: &str,
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
        images: vec![
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
        ],
        note: "customer is a long-standing client; withdrawal for a house deposit".into(),
    }
}
