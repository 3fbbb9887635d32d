//! Writes the committed seed inputs to `fuzz/seeds/<target>/`.
//!
//!     cd fuzz && cargo run --example gen_seeds
//!
//! Deterministic: the same files every run. Keep KEY_NAME/ORIGIN/SEED in step with
//! `fuzz_targets/signed_note.rs`.

use std::path::Path;

use countersign::domain::*;
use countersign::ledger::checkpoint::{self, Checkpoint};
use countersign::ledger::record;
use countersign::storage::embedded::frame;
use rand::SeedableRng;

const KEY_NAME: &str = "countersign-fuzz";
const ORIGIN: &str = "countersign.example/ledger";
const SEED: u64 = 0x00C0_FFEE;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn records() -> Vec<Record> {
    let request = RequestId::from_random([0x5a; 16]);
    let sup = PrincipalId::new("sup-1");
    let img = ImageRef {
        kind: ImageKind::Voucher,
        media_type: MediaType::Jpeg,
        hash: ImageHash([0x11; 32]),
        size: 1234,
    };
    let submitted = Record {
        request: request.clone(),
        at: Timestamp(1_700_000_000_000),
        actor: Actor::Principal(PrincipalId::new("teller-1")),
        event: Event::Submitted {
            teller: PrincipalId::new("teller-1"),
            branch: BranchId::new("branch-1"),
            submission: Submission {
                serial: TellerSerial::new("T-0001"),
                transaction: Transaction {
                    code: "WDL".into(),
                    amount: Money {
                        minor_units: 500_000_00,
                        currency: "CNY".into(),
                    },
                    account: "6222000011112222".into(),
                    counterparty: Some("acct-2".into()),
                    attributes: vec![("channel".into(), "counter".into())],
                },
                customer: CustomerIdentity {
                    document_type: DocumentType::PrcResidentId,
                    document_number: "110101199001011234".into(),
                    name: "张三".into(),
                    expiry_date: Some("2030-01-01".into()),
                    verification: IdVerification::Matched,
                },
                images: vec![img.clone()],
                note: "large withdrawal".into(),
            },
            requirements: Requirements {
                rule: "large-cash".into(),
                policy_sha256: "00".repeat(32),
                level: 2,
                approvals: 1,
                independent: true,
                priority: 5,
                offer_timeout_ms: 30_000,
                decision_deadline_ms: 600_000,
                escalate_after_ms: Some(120_000),
                escalate_after_declines: Some(2),
                rekey: Vec::new(),
                rekey_attempts: 0,
            },
        },
    };
    let at = |ms: i64, actor: Actor, event: Event| Record {
        request: request.clone(),
        at: Timestamp(1_700_000_000_000 + ms),
        actor,
        event,
    };
    let p = || Actor::Principal(sup.clone());
    vec![
        submitted,
        at(1, Actor::System, Event::Offered { supervisor: sup.clone(), epoch: 1, pool_size: 3, accept_by: Timestamp(1_700_000_030_001) }),
        at(2, p(), Event::OfferDeclined { supervisor: sup.clone(), epoch: 1, reason: "busy".into() }),
        at(3, Actor::System, Event::Offered { supervisor: sup.clone(), epoch: 2, pool_size: 3, accept_by: Timestamp(1_700_000_030_003) }),
        at(4, Actor::System, Event::OfferTimedOut { supervisor: sup.clone(), epoch: 2 }),
        at(5, Actor::System, Event::Escalated { level: 3, reason: EscalationReason::Waited }),
        at(6, Actor::System, Event::Offered { supervisor: sup.clone(), epoch: 3, pool_size: 1, accept_by: Timestamp(1_700_000_030_006) }),
        at(7, Actor::System, Event::OfferWithdrawn { supervisor: sup.clone(), epoch: 3, reason: WithdrawReason::Disconnected }),
        at(8, Actor::System, Event::Offered { supervisor: sup.clone(), epoch: 4, pool_size: 1, accept_by: Timestamp(1_700_000_030_008) }),
        at(9, p(), Event::Accepted { supervisor: sup.clone(), epoch: 4 }),
        at(10, p(), Event::Decided { supervisor: sup.clone(), epoch: 4, verdict: Verdict { decision: Decision::Return, reason_code: "ID_BLURRY".into(), comment: "rescan".into() } }),
        at(11, Actor::Principal(PrincipalId::new("teller-1")), Event::Resubmitted { added: vec![ImageRef { media_type: MediaType::Png, hash: ImageHash([0x22; 32]), ..img }], removed: vec![ImageHash([0x11; 32])], note: "rescanned".into() }),
        at(12, Actor::Principal(PrincipalId::new("teller-1")), Event::Cancelled { reason: "customer left".into() }),
        at(13, Actor::System, Event::Expired),
    ]
}

fn main() {
    let recs = records();

    // record_decode: one record per event kind.
    for r in &recs {
        let bytes = record::encode(r);
        assert_eq!(&record::decode(&bytes).unwrap(), r);
        write("record_decode", &format!("{}.json", r.event.kind()), &bytes);
    }

    // frame_decode: valid frames, a torn one, zeros.
    let payload = record::encode(&recs[0]);
    let mut f0 = Vec::new();
    frame::encode(0, &payload, &mut f0);
    write("frame_decode", "frame-0", &f0);
    let mut f7 = Vec::new();
    frame::encode(7, b"hello", &mut f7);
    write("frame_decode", "frame-7", &f7);
    write("frame_decode", "torn", &f0[..f0.len() / 2]);
    write("frame_decode", "zeros", &[0u8; 32]);

    // segment_reader: byte 0 odd = header prepended by the target.
    let mut frames = Vec::new();
    for (i, r) in recs.iter().take(4).enumerate() {
        frame::encode(i as u64, &record::encode(r), &mut frames);
    }
    let mut s = vec![1u8];
    s.extend_from_slice(&frames);
    write("segment_reader", "headed-4-records", &s);
    let mut s = vec![0u8];
    s.extend_from_slice(&frame::segment_header(0));
    s.extend_from_slice(&frames);
    s.extend_from_slice(&[0u8; 20]);
    write("segment_reader", "raw-4-records-zero-tail", &s);
    let mut s = vec![1u8];
    s.extend_from_slice(&frames[..frames.len() - 10]);
    write("segment_reader", "headed-torn", &s);
    write("segment_reader", "raw-empty-header", &[0u8; 17]);
    // Framed mode (bit 1): NUL-separated payloads, framed by the target. A whole history,
    // then a second request that is only submitted.
    let mut s = vec![2u8];
    for (i, r) in recs.iter().filter(|r| r.event.kind() != "expired").enumerate() {
        if i > 0 {
            s.push(0);
        }
        s.extend_from_slice(&record::encode(r));
    }
    write("segment_reader", "framed-history", &s);
    let mut second = recs[0].clone();
    second.request = RequestId::from_random([0xa5; 16]);
    let mut s = vec![2u8];
    s.extend_from_slice(&record::encode(&recs[0]));
    s.push(0);
    s.extend_from_slice(&record::encode(&second));
    s.push(0);
    s.extend_from_slice(&record::encode(&recs[1]));
    write("segment_reader", "framed-two-requests", &s);

    // signed_note: a real signed checkpoint, the key texts.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(SEED);
    let (signer_text, verifier_text) = checkpoint::generate(KEY_NAME, &mut rng).unwrap();
    let signer = checkpoint::parse_signer(&signer_text).unwrap();
    let verifier = checkpoint::parse_verifier(&verifier_text).unwrap();
    let cp = Checkpoint::new(ORIGIN, 14, [0xa5; 32]).unwrap();
    let note = signer.sign(&cp);
    assert_eq!(checkpoint::open(&note, &verifier, ORIGIN).unwrap(), cp);
    write("signed_note", "checkpoint.note", note.as_bytes());
    let other = checkpoint::generate("witness", &mut rng).unwrap();
    let other = checkpoint::parse_signer(&other.0).unwrap();
    let cosigned = format!("{note}{}", other.sign(&cp).rsplit("\n\n").next().unwrap());
    write("signed_note", "cosigned.note", cosigned.as_bytes());
    write("signed_note", "verifier.key", verifier_text.as_bytes());
    write("signed_note", "signer.key", signer_text.as_bytes());
    // Go's known-answer key (golang.org/x/mod/sumdb/note).
    write("signed_note", "go-verifier.key", b"PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW");

    // image_sniff: each magic number and a near miss.
    write("image_sniff", "jpeg", &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F']);
    write("image_sniff", "png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    write("image_sniff", "tiff-le", b"II*\0\x08\0\0\0");
    write("image_sniff", "tiff-be", b"MM\0*\0\0\0\x08");
    write("image_sniff", "pdf", b"%PDF-1.7\n");
    write("image_sniff", "near-miss", b"\x89PNG\r\n\x1a");
    println!("seeds written");
}
