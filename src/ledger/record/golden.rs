//! Golden samples of the record format: the committed bytes of one record of every kind, and
//! of every variant inside a kind that changes the bytes, with their RFC 6962 leaf hashes.
//!
//! The record bytes are what the ledger hashes, so any change to them (a renamed serde field,
//! a new attribute, another order of fields, another string escaping) would silently change
//! every leaf hash and leave old ledgers unreadable or unverifiable. Each sample is checked
//! three ways: the committed bytes decode to the record built here in code, that record
//! encodes to exactly the committed bytes, and the decoded record re-encodes to them too.
//! Because the records are built here from domain values, a changed encoder cannot be hidden
//! by regenerating `tests/golden/records.json`: the file and this code must both change, in
//! review. Only version 1 exists (`decode` refuses any other), so there are no older-version
//! samples; when a version 2 is added, its version 1 samples stay here and must still decode.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::{
    RecordError, decision_name, decode, decode_entry, doc_name, encode, encode_engine,
    escalation_name, kind_name, submission_fingerprint, verif_name, withdraw_name,
};
use crate::domain::{
    Actor, BranchId, CustomerIdentity, Decision, DocumentType, EngineEvent, EngineRecord, Entry,
    EscalationReason, Event, FallbackReason, IdVerification, ImageHash, ImageKind, ImageRef,
    MediaType, Money, OnSite, PrincipalId, Record, RekeyField, Rekeyed, RequestId, Requirements,
    ReviewOutcome, ReviewReason, Submission, TellerSerial, Timestamp, Transaction, Verdict,
    WithdrawReason,
};
use crate::ledger::merkle::leaf_hash;

/// The committed samples. Compiled in, so the test needs no path at run time.
const GOLDEN: &str = include_str!("../../../tests/golden/records.json");

/// The shape of `tests/golden/records.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Golden {
    /// What the file is, for a reader who finds it without this module.
    #[allow(dead_code)]
    about: String,
    /// One stored record per sample, in the order [`records`] builds them.
    records: Vec<GoldenRecord>,
    /// One stored engine record per sample, in the order [`engine_records`] builds them.
    engine_records: Vec<GoldenRecord>,
    /// Submission fingerprints, in the order [`submissions`] builds them.
    submission_fingerprints: Vec<GoldenFingerprint>,
}

/// One stored record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoldenRecord {
    /// Names the sample, and the record [`records`] builds for it.
    name: String,
    /// The format version the bytes claim (`"v"`).
    version: u8,
    /// The exact stored bytes; base64 so no JSON re-escaping can change them.
    bytes_base64: String,
    /// The same bytes as text, so a diff of the file can be read; must equal `bytes_base64`.
    text: String,
    /// Lowercase hex of SHA-256(0x00 || bytes).
    leaf_hash: String,
}

/// One submission fingerprint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoldenFingerprint {
    /// Names the submission [`submissions`] builds.
    name: String,
    /// Lowercase hex of [`submission_fingerprint`].
    sha256: String,
}

fn golden() -> Golden {
    serde_json::from_str(GOLDEN).expect("tests/golden/records.json parses")
}

/// The request every sample is about; the format does not care which.
const REQUEST: &str = "0123456789abcdef0123456789abcdef";
/// 2026-01-01T00:00:00Z.
const AT_MS: i64 = 1_767_225_600_000;
/// Not the hash of any real policy, so editing `policy::SAMPLE` cannot change a sample.
const POLICY_SHA256: &str = "3b8f2a06c7d1e95f40a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607";

fn teller() -> PrincipalId {
    PrincipalId::new("teller-0001")
}

fn supervisor() -> PrincipalId {
    PrincipalId::new("sup-0042")
}

fn image(n: u8, kind: ImageKind, media_type: MediaType) -> ImageRef {
    ImageRef {
        kind,
        media_type,
        hash: ImageHash([n; 32]),
        size: 1000 + u64::from(n),
    }
}

/// Every optional field present, every image kind and media type, and text that needs
/// escaping (quotes, newline, tab, a control character) or is not ASCII.
fn submission_full() -> Submission {
    Submission {
        serial: TellerSerial::new("T-2026.01_01-0001"),
        transaction: Transaction {
            code: "WDL-CASH".into(),
            amount: Money {
                minor_units: 60_000_000,
                currency: "CNY".into(),
            },
            account: "6222020200112233445".into(),
            counterparty: Some("6222020200998877665".into()),
            attributes: vec![
                ("channel".into(), "counter".into()),
                ("purpose".into(), "购房 \"deposit\"".into()),
            ],
        },
        customer: CustomerIdentity {
            document_type: DocumentType::PrcResidentId,
            document_number: "11010519491231002X".into(),
            name: "张三".into(),
            expiry_date: Some("2036-05-01".into()),
            verification: IdVerification::Matched,
        },
        images: vec![
            image(1, ImageKind::Voucher, MediaType::Jpeg),
            image(2, ImageKind::IdFront, MediaType::Png),
            image(3, ImageKind::IdBack, MediaType::Tiff),
            image(4, ImageKind::Photo, MediaType::Jpeg),
            image(5, ImageKind::Other, MediaType::Pdf),
        ],
        note: "customer at counter 3\n\"urgent\"\tsee voucher\u{1}".into(),
    }
}

/// Every optional field absent and every list empty.
fn submission_minimal(document_type: DocumentType, verification: IdVerification) -> Submission {
    Submission {
        serial: TellerSerial::new("T-2"),
        transaction: Transaction {
            code: "REV-TXN".into(),
            amount: Money {
                minor_units: 1,
                currency: "USD".into(),
            },
            account: "A1".into(),
            counterparty: None,
            attributes: Vec::new(),
        },
        customer: CustomerIdentity {
            document_type,
            document_number: "E12345678".into(),
            name: "Jane Doe".into(),
            expiry_date: None,
            verification,
        },
        images: Vec::new(),
        note: String::new(),
    }
}

fn requirements(
    escalate_after_ms: Option<u64>,
    escalate_after_declines: Option<u32>,
) -> Requirements {
    Requirements {
        rule: "cash-withdrawal-cny-very-large".into(),
        policy_sha256: POLICY_SHA256.into(),
        level: 3,
        approvals: 2,
        independent: true,
        priority: 6,
        offer_timeout_ms: 30_000,
        decision_deadline_ms: 3_600_000,
        escalate_after_ms,
        escalate_after_declines,
        rekey: Vec::new(),
        rekey_attempts: 0,
        fallback: false,
        review_percent: 0,
    }
}

fn submitted(submission: Submission, requirements: Requirements) -> Event {
    Event::Submitted {
        teller: teller(),
        branch: BranchId::new("branch-310101"),
        submission,
        requirements,
    }
}

/// The submissions whose fingerprints are frozen.
fn submissions() -> Vec<(&'static str, Submission)> {
    vec![
        ("submission_full", submission_full()),
        (
            "submission_minimal",
            submission_minimal(DocumentType::Passport, IdVerification::NotChecked),
        ),
    ]
}

/// One record of every kind, and of every variant inside a kind that changes the bytes.
fn records() -> Vec<(&'static str, Record)> {
    let by = |actor: Actor, event: Event| Record {
        request: RequestId::parse(REQUEST).expect("a valid id"),
        at: Timestamp(AT_MS),
        actor,
        event,
    };
    let teller = || Actor::Principal(teller());
    let sup = || Actor::Principal(supervisor());
    let withdrawn = |reason| Event::OfferWithdrawn {
        supervisor: supervisor(),
        epoch: 4,
        reason,
    };
    let decided = |decision, reason_code: &str, comment: &str| Event::Decided {
        supervisor: supervisor(),
        epoch: 5,
        verdict: Verdict {
            decision,
            reason_code: reason_code.into(),
            comment: comment.into(),
        },
    };
    vec![
        (
            "submitted_full",
            by(
                teller(),
                submitted(submission_full(), requirements(Some(900_000), Some(3))),
            ),
        ),
        (
            "submitted_minimal",
            by(
                teller(),
                submitted(
                    submission_minimal(DocumentType::Passport, IdVerification::NotChecked),
                    requirements(None, None),
                ),
            ),
        ),
        (
            "submitted_hk_macao_permit",
            by(
                teller(),
                submitted(
                    submission_minimal(DocumentType::HkMacaoPermit, IdVerification::Mismatched),
                    requirements(Some(600_000), None),
                ),
            ),
        ),
        (
            "submitted_taiwan_permit",
            by(
                teller(),
                submitted(
                    submission_minimal(DocumentType::TaiwanPermit, IdVerification::Matched),
                    requirements(None, Some(50)),
                ),
            ),
        ),
        (
            "submitted_foreign_permanent_resident",
            by(
                teller(),
                submitted(
                    submission_minimal(
                        DocumentType::ForeignPermanentResident,
                        IdVerification::Matched,
                    ),
                    requirements(None, None),
                ),
            ),
        ),
        (
            "submitted_other_document",
            by(
                teller(),
                submitted(
                    submission_minimal(DocumentType::Other, IdVerification::NotChecked),
                    requirements(None, None),
                ),
            ),
        ),
        (
            "offered",
            by(
                Actor::System,
                Event::Offered {
                    supervisor: supervisor(),
                    epoch: 1,
                    pool_size: 7,
                    accept_by: Timestamp(AT_MS + 30_000),
                },
            ),
        ),
        (
            "offer_declined",
            by(
                sup(),
                Event::OfferDeclined {
                    supervisor: supervisor(),
                    epoch: 2,
                    reason: "busy with a customer".into(),
                },
            ),
        ),
        (
            "offer_timed_out",
            by(
                Actor::System,
                Event::OfferTimedOut {
                    supervisor: supervisor(),
                    epoch: 3,
                },
            ),
        ),
        (
            "offer_withdrawn_disconnected",
            by(Actor::System, withdrawn(WithdrawReason::Disconnected)),
        ),
        (
            "offer_withdrawn_superseded",
            by(Actor::System, withdrawn(WithdrawReason::Superseded)),
        ),
        (
            "offer_withdrawn_restart",
            by(Actor::System, withdrawn(WithdrawReason::Restart)),
        ),
        (
            "offer_withdrawn_escalated",
            by(Actor::System, withdrawn(WithdrawReason::Escalated)),
        ),
        (
            "offer_withdrawn_review_timeout",
            by(Actor::System, withdrawn(WithdrawReason::ReviewTimeout)),
        ),
        (
            "offer_withdrawn_revoked",
            by(Actor::System, withdrawn(WithdrawReason::Revoked)),
        ),
        (
            "accepted",
            by(
                sup(),
                Event::Accepted {
                    supervisor: supervisor(),
                    epoch: 5,
                },
            ),
        ),
        (
            "decided_approve",
            by(sup(), decided(Decision::Approve, "OK", "")),
        ),
        (
            "decided_reject",
            by(
                sup(),
                decided(Decision::Reject, "SIGNATURE-MISMATCH", "签名不符"),
            ),
        ),
        (
            "decided_return",
            by(
                sup(),
                decided(Decision::Return, "IMAGE-UNREADABLE", "rescan the ID back"),
            ),
        ),
        (
            "resubmitted",
            by(
                teller(),
                Event::Resubmitted {
                    added: vec![
                        image(6, ImageKind::IdBack, MediaType::Png),
                        image(7, ImageKind::Voucher, MediaType::Pdf),
                    ],
                    removed: vec![ImageHash([3; 32])],
                    note: "rescanned".into(),
                },
            ),
        ),
        (
            "resubmitted_empty",
            by(
                teller(),
                Event::Resubmitted {
                    added: Vec::new(),
                    removed: Vec::new(),
                    note: String::new(),
                },
            ),
        ),
        (
            "cancelled_by_teller",
            by(
                teller(),
                Event::Cancelled {
                    reason: "customer left".into(),
                },
            ),
        ),
        (
            "cancelled_by_system",
            by(
                Actor::System,
                Event::Cancelled {
                    reason: String::new(),
                },
            ),
        ),
        ("expired", by(Actor::System, Event::Expired)),
        (
            "escalated_waited",
            by(
                Actor::System,
                Event::Escalated {
                    level: 4,
                    reason: EscalationReason::Waited,
                },
            ),
        ),
        (
            "escalated_declined",
            by(
                Actor::System,
                Event::Escalated {
                    level: 9,
                    reason: EscalationReason::Declined,
                },
            ),
        ),
        (
            "submitted_rekey",
            by(
                teller(),
                submitted(
                    submission_minimal(DocumentType::Passport, IdVerification::Matched),
                    Requirements {
                        rekey: vec![
                            RekeyField::Amount,
                            RekeyField::Account,
                            RekeyField::Counterparty,
                        ],
                        rekey_attempts: 3,
                        fallback: false,
                        review_percent: 0,
                        ..requirements(None, None)
                    },
                ),
            ),
        ),
        (
            "rekey_mismatched",
            by(
                sup(),
                Event::RekeyMismatched {
                    supervisor: supervisor(),
                    epoch: 6,
                    typed: Rekeyed {
                        amount_minor_units: Some(6_000_000),
                        account: Some("6222 0202 0011 2233 445".into()),
                        counterparty: None,
                    },
                    mismatched: vec![RekeyField::Amount, RekeyField::Counterparty],
                },
            ),
        ),
        (
            "rekey_mismatched_account_only",
            by(
                sup(),
                Event::RekeyMismatched {
                    supervisor: supervisor(),
                    epoch: 7,
                    typed: Rekeyed {
                        amount_minor_units: None,
                        account: Some("6222020200112233444".into()),
                        counterparty: None,
                    },
                    mismatched: vec![RekeyField::Account],
                },
            ),
        ),
        fallback("fallback_registered", FallbackReason::CentreUnreachable),
        fallback(
            "fallback_registered_unavailable",
            FallbackReason::CentreUnavailable,
        ),
        fallback(
            "fallback_registered_emergency",
            FallbackReason::DeclaredEmergency,
        ),
        (
            "review_drawn_sampled",
            by(
                Actor::System,
                Event::ReviewDrawn {
                    reason: ReviewReason::Sampled {
                        draw: 0x0123_4567_89ab_cdef,
                        percent: 5,
                    },
                },
            ),
        ),
        (
            "review_drawn_fallback",
            by(
                Actor::System,
                Event::ReviewDrawn {
                    reason: ReviewReason::Fallback,
                },
            ),
        ),
        (
            "reviewed_confirmed",
            by(
                Actor::Principal(PrincipalId::new("review-01")),
                Event::Reviewed {
                    reviewer: PrincipalId::new("review-01"),
                    outcome: ReviewOutcome::Confirmed,
                    comment: String::new(),
                },
            ),
        ),
        (
            "reviewed_flagged",
            by(
                Actor::Principal(PrincipalId::new("review-01")),
                Event::Reviewed {
                    reviewer: PrincipalId::new("review-01"),
                    outcome: ReviewOutcome::Flagged,
                    comment: "voucher signature differs from the specimen".into(),
                },
            ),
        ),
        (
            "submitted_review_percent",
            by(
                teller(),
                submitted(
                    submission_minimal(DocumentType::Passport, IdVerification::Matched),
                    Requirements {
                        review_percent: 5,
                        ..requirements(None, None)
                    },
                ),
            ),
        ),
    ]
}

/// A registered fallback for `reason`: the certificate and signature are stand-in bytes (the
/// format stores any bytes; their check is `ledger::onsite`'s).
fn fallback(name: &'static str, reason: FallbackReason) -> (&'static str, Record) {
    let submission = Submission {
        images: vec![image(1, ImageKind::Voucher, MediaType::Jpeg)],
        ..submission_minimal(DocumentType::PrcResidentId, IdVerification::Matched)
    };
    let record = Record {
        request: RequestId::parse(REQUEST).expect("a request id"),
        at: Timestamp(AT_MS),
        actor: Actor::Principal(teller()),
        event: Event::FallbackRegistered {
            teller: teller(),
            branch: BranchId::new("branch-310101"),
            submission,
            requirements: Requirements {
                fallback: true,
                review_percent: 0,
                approvals: 1,
                ..requirements(None, None)
            },
            on_site: OnSite {
                supervisor: PrincipalId::new("sup-0007"),
                decided_at: Timestamp(AT_MS - 3_600_000),
                reason,
                certificate: vec![0x30, 0x82, 0x01, 0x0a],
                signature: vec![0x30, 0x45, 0x02, 0x21],
            },
        },
    };
    (name, record)
}

/// One record of every engine event, and of every variant that changes the bytes.
fn engine_records() -> Vec<(&'static str, EngineRecord)> {
    let by = |actor: Actor, event: EngineEvent| EngineRecord {
        at: Timestamp(AT_MS),
        actor,
        event,
    };
    let admin = || Actor::Principal(PrincipalId::new("admin-0001"));
    vec![
        (
            "engine_started",
            by(
                Actor::System,
                EngineEvent::Started {
                    node: "node-1".into(),
                    version: "0.1.0".into(),
                    policy_sha256: POLICY_SHA256.into(),
                    directory_sha256: DIRECTORY_SHA256.into(),
                },
            ),
        ),
        ("engine_stopped", by(Actor::System, EngineEvent::Stopped)),
        (
            "writes_resumed",
            by(
                Actor::System,
                EngineEvent::WritesResumed {
                    since: Timestamp(AT_MS - 61_500),
                    store: "ledger".into(),
                },
            ),
        ),
        (
            "directory_loaded_by_admin",
            by(
                admin(),
                EngineEvent::DirectoryLoaded {
                    sha256: DIRECTORY_SHA256.into(),
                    certificates: 81,
                    added: vec![PrincipalId::new("teller-0099")],
                    removed: vec![PrincipalId::new("sup-0042"), PrincipalId::new("sup-0043")],
                    changed: vec![teller()],
                },
            ),
        ),
        (
            "directory_loaded_by_signal_unchanged",
            by(
                Actor::System,
                EngineEvent::DirectoryLoaded {
                    sha256: DIRECTORY_SHA256.into(),
                    certificates: 81,
                    added: Vec::new(),
                    removed: Vec::new(),
                    changed: Vec::new(),
                },
            ),
        ),
        (
            "policy_loaded",
            by(
                admin(),
                EngineEvent::PolicyLoaded {
                    sha256: POLICY_SHA256.into(),
                    rules: 12,
                },
            ),
        ),
        (
            "supervisor_paused",
            by(
                admin(),
                EngineEvent::SupervisorPaused {
                    supervisor: PrincipalId::new("sup-0003"),
                    paused: true,
                },
            ),
        ),
        (
            "supervisor_resumed",
            by(
                admin(),
                EngineEvent::SupervisorPaused {
                    supervisor: PrincipalId::new("sup-0003"),
                    paused: false,
                },
            ),
        ),
    ]
}

/// Not the hash of any real directory.
const DIRECTORY_SHA256: &str = "9c1e0a7b5d3f2e4c6a8b0d1f3e5c7a9b1d3f5e7c9a0b2d4f6e8c0a1b3d5f7e9c";

/// Checks committed samples against records built here: the names and their order, the text
/// and base64 forms, the version, the leaf hash, that `encode` gives the committed bytes and
/// that they decode to the built record and re-encode to themselves. Every mismatch is
/// collected, so one run shows all that changed.
fn check_samples(
    committed: &[GoldenRecord],
    built: &[(&'static str, Entry)],
    encode: impl Fn(&Entry) -> Vec<u8>,
) -> Vec<String> {
    let names = |v: Vec<&str>| v.join(", ");
    assert_eq!(
        names(committed.iter().map(|g| g.name.as_str()).collect()),
        names(built.iter().map(|(name, _)| *name).collect()),
        "the committed samples and the records built here must be the same, in the same order"
    );
    let mut failures = Vec::new();
    for (g, (name, record)) in committed.iter().zip(built) {
        let Ok(bytes) = BASE64.decode(&g.bytes_base64) else {
            failures.push(format!("{name}: bytes_base64 is not base64"));
            continue;
        };
        if g.text.as_bytes() != bytes.as_slice() {
            failures.push(format!(
                "{name}: text is not the same bytes as bytes_base64"
            ));
        }
        let stored: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(value) => value,
            Err(e) => {
                failures.push(format!("{name}: not JSON: {e}"));
                continue;
            }
        };
        if g.version != 1 || stored["v"] != serde_json::json!(g.version) {
            failures.push(format!(
                "{name}: version {} in the file, {} in the bytes; only 1 exists",
                g.version, stored["v"]
            ));
        }
        if hex::encode(leaf_hash(&bytes)) != g.leaf_hash {
            failures.push(format!("{name}: leaf hash differs from the committed one"));
        }
        let encoded = encode(record);
        if encoded != bytes {
            failures.push(format!(
                "{name}: encode gives other bytes than committed:\n  now:       {}\n  committed: {}",
                String::from_utf8_lossy(&encoded),
                g.text
            ));
        }
        match decode_entry(&bytes) {
            Err(e) => failures.push(format!("{name}: committed bytes no longer decode: {e}")),
            Ok(decoded) => {
                if &decoded != record {
                    failures.push(format!(
                        "{name}: decodes to another record:\n  decoded: {decoded:?}\n  built:   {record:?}"
                    ));
                }
                if encode(&decoded) != bytes {
                    failures.push(format!("{name}: decoded record re-encodes to other bytes"));
                }
            }
        }
    }
    failures
}

#[test]
fn every_sample_decodes_reencodes_and_hashes_as_committed() {
    let golden = golden();
    let built: Vec<(&str, Entry)> = records()
        .into_iter()
        .map(|(n, r)| (n, Entry::Request(r)))
        .collect();
    let failures = check_samples(&golden.records, &built, |e| match e {
        Entry::Request(r) => encode(r),
        Entry::Engine(_) => b"an engine record among the requests' samples".to_vec(),
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A request's record read where any record may be is still the same record.
    for (g, (name, _)) in golden.records.iter().zip(&built) {
        let bytes = BASE64.decode(&g.bytes_base64).expect("checked above");
        assert!(decode(&bytes).is_ok(), "{name}");
    }
}

#[test]
fn every_engine_sample_decodes_reencodes_and_hashes_as_committed() {
    let golden = golden();
    let built: Vec<(&str, Entry)> = engine_records()
        .into_iter()
        .map(|(n, r)| (n, Entry::Engine(r)))
        .collect();
    let failures = check_samples(&golden.engine_records, &built, |e| match e {
        Entry::Engine(r) => encode_engine(r),
        Entry::Request(_) => b"a request's record among the engine samples".to_vec(),
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut kinds: Vec<&str> = built.iter().map(|(_, e)| e.kind()).collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "engine_started",
            "engine_stopped",
            "writes_resumed",
            "directory_loaded",
            "policy_loaded",
            "supervisor_paused"
        ],
        "a sample of every engine event"
    );
    for g in &golden.engine_records {
        // Never mistaken for a request's record by a reader that wants one.
        let bytes = BASE64.decode(&g.bytes_base64).expect("checked above");
        assert!(
            matches!(decode(&bytes), Err(RecordError::NotRequest(_))),
            "{}",
            g.name
        );
    }
}

/// Prints the committed form of the engine samples, for a reviewer adding one:
/// `cargo test --lib print_engine_samples -- --ignored --nocapture`.
#[test]
#[ignore = "prints samples; not a check"]
fn print_engine_samples() {
    let out: Vec<serde_json::Value> = engine_records()
        .iter()
        .map(|(name, r)| (*name, encode_engine(r)))
        .chain(records().iter().map(|(name, r)| (*name, encode(r))))
        .map(|(name, bytes)| {
            serde_json::json!({
                "name": name,
                "version": 1,
                "bytes_base64": BASE64.encode(&bytes),
                "text": String::from_utf8_lossy(&bytes),
                "leaf_hash": hex::encode(leaf_hash(&bytes)),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("plain data")
    );
}

#[test]
fn a_record_with_both_shapes_or_neither_is_refused() {
    let golden = golden();
    let started = &golden.engine_records[0].text;
    let expired = &golden
        .records
        .iter()
        .find(|g| g.name == "expired")
        .expect("a sample")
        .text;
    let both = expired.replacen(
        "\"event\"",
        "\"engine\":{\"type\":\"engine_stopped\"},\"event\"",
        1,
    );
    assert!(matches!(
        decode_entry(both.as_bytes()),
        Err(RecordError::Field("engine"))
    ));
    let engine_with_request = started.replacen(
        "\"at_ms\"",
        &format!("\"request\":\"{REQUEST}\",\"at_ms\""),
        1,
    );
    assert!(matches!(
        decode_entry(engine_with_request.as_bytes()),
        Err(RecordError::Field("engine"))
    ));
    let neither = r#"{"v":1,"at_ms":1,"actor":null}"#;
    assert!(matches!(
        decode_entry(neither.as_bytes()),
        Err(RecordError::Field("request"))
    ));
}

#[test]
fn submission_fingerprints_are_as_committed() {
    let golden = golden();
    let built = submissions();
    assert_eq!(golden.submission_fingerprints.len(), built.len());
    for (g, (name, submission)) in golden.submission_fingerprints.iter().zip(&built) {
        assert_eq!(g.name, *name);
        // A changed fingerprint makes every retried Submit of a stored request look like a
        // different submission reusing the serial.
        assert_eq!(
            hex::encode(submission_fingerprint(submission)),
            g.sha256,
            "{name}"
        );
    }
}

#[test]
fn every_kind_and_variant_has_a_sample() {
    let mut expected: BTreeSet<String> = [
        "submitted",
        "fallback_registered",
        "offered",
        "offer_declined",
        "offer_timed_out",
        "offer_withdrawn",
        "accepted",
        "decided",
        "resubmitted",
        "rekey_mismatched",
        "cancelled",
        "expired",
        "escalated",
        "review_drawn",
        "reviewed",
    ]
    .iter()
    .map(|kind| format!("event:{kind}"))
    .collect();
    for key in [
        "actor:system",
        "actor:principal",
        "counterparty:some",
        "counterparty:none",
        "attributes:some",
        "attributes:none",
        "expiry_date:some",
        "expiry_date:none",
        "images:some",
        "images:none",
        "escalate_after_ms:some",
        "escalate_after_ms:none",
        "escalate_after_declines:some",
        "escalate_after_declines:none",
        "rekey:some",
        "rekey:none",
        "rekey_mismatched:amount",
        "rekey_mismatched:account",
        "rekey_mismatched:counterparty",
        "rekey_mismatched.typed.amount:some",
        "rekey_mismatched.typed.amount:none",
        "resubmitted.added:some",
        "resubmitted.added:none",
        "resubmitted.removed:some",
        "resubmitted.removed:none",
        "fallback_reason:centre_unreachable",
        "fallback_reason:centre_unavailable",
        "fallback_reason:declared_emergency",
        "requirements.fallback:true",
        "review_reason:sampled",
        "review_reason:fallback",
        "review_outcome:confirmed",
        "review_outcome:flagged",
        "review_percent:some",
        "review_percent:none",
    ] {
        expected.insert(key.to_owned());
    }
    use DocumentType as D;
    for v in [
        D::PrcResidentId,
        D::Passport,
        D::HkMacaoPermit,
        D::TaiwanPermit,
        D::ForeignPermanentResident,
        D::Other,
    ] {
        expected.insert(format!("document_type:{}", doc_name(v)));
    }
    use IdVerification as V;
    for v in [V::Matched, V::Mismatched, V::NotChecked] {
        expected.insert(format!("verification:{}", verif_name(v)));
    }
    use ImageKind as K;
    for v in [K::Voucher, K::IdFront, K::IdBack, K::Photo, K::Other] {
        expected.insert(format!("image_kind:{}", kind_name(v)));
    }
    use MediaType as M;
    for v in [M::Jpeg, M::Png, M::Tiff, M::Pdf] {
        expected.insert(format!("media_type:{}", v.as_mime()));
    }
    use WithdrawReason as W;
    for v in [
        W::Disconnected,
        W::Superseded,
        W::Restart,
        W::Escalated,
        W::ReviewTimeout,
        W::Revoked,
    ] {
        expected.insert(format!("withdraw:{}", withdraw_name(v)));
    }
    for v in [Decision::Approve, Decision::Reject, Decision::Return] {
        expected.insert(format!("decision:{}", decision_name(v)));
    }
    for v in [EscalationReason::Waited, EscalationReason::Declined] {
        expected.insert(format!("escalation:{}", escalation_name(v)));
    }

    let covered: BTreeSet<String> = records()
        .iter()
        .flat_map(|(_, record)| coverage(record))
        .collect();
    let missing: Vec<&String> = expected.difference(&covered).collect();
    let unlisted: Vec<&String> = covered.difference(&expected).collect();
    assert!(missing.is_empty(), "no golden sample for {missing:?}");
    assert!(
        unlisted.is_empty(),
        "sampled but not listed as expected (list it): {unlisted:?}"
    );
}

#[test]
fn only_version_1_is_read() {
    let golden = golden();
    let expired = golden
        .records
        .iter()
        .find(|g| g.name == "expired")
        .expect("an expired sample");
    assert!(expired.text.starts_with("{\"v\":1,"), "{}", expired.text);
    for v in [0, 2, 255] {
        let other = expired.text.replacen("\"v\":1", &format!("\"v\":{v}"), 1);
        assert!(
            matches!(decode(other.as_bytes()), Err(RecordError::Version(got)) if got == v),
            "version {v} must be refused"
        );
    }
    let started = &golden.engine_records[0].text;
    assert!(started.starts_with("{\"v\":1,"), "{started}");
    let other = started.replacen("\"v\":1", "\"v\":2", 1);
    assert!(matches!(
        decode_entry(other.as_bytes()),
        Err(RecordError::Version(2))
    ));
}

/// The kinds and byte-changing variants one record exercises, named as they are stored.
/// The matches have no wildcard arm, so a new event or actor does not compile until someone
/// says here what it adds (and [`records`] gets a sample for it).
fn coverage(record: &Record) -> Vec<String> {
    let some = |present: bool| if present { "some" } else { "none" };
    let mut keys = vec![
        format!("event:{}", record.event.kind()),
        match record.actor {
            Actor::System => "actor:system".to_owned(),
            Actor::Principal(_) => "actor:principal".to_owned(),
        },
    ];
    let images = |keys: &mut Vec<String>, images: &[ImageRef]| {
        for i in images {
            keys.push(format!("image_kind:{}", kind_name(i.kind)));
            keys.push(format!("media_type:{}", i.media_type.as_mime()));
        }
    };
    match &record.event {
        Event::Submitted {
            teller: _,
            branch: _,
            submission,
            requirements,
        } => {
            let t = &submission.transaction;
            let c = &submission.customer;
            keys.push(format!("counterparty:{}", some(t.counterparty.is_some())));
            keys.push(format!("attributes:{}", some(!t.attributes.is_empty())));
            keys.push(format!("expiry_date:{}", some(c.expiry_date.is_some())));
            keys.push(format!("images:{}", some(!submission.images.is_empty())));
            keys.push(format!("document_type:{}", doc_name(c.document_type)));
            keys.push(format!("verification:{}", verif_name(c.verification)));
            keys.push(format!(
                "escalate_after_ms:{}",
                some(requirements.escalate_after_ms.is_some())
            ));
            keys.push(format!(
                "escalate_after_declines:{}",
                some(requirements.escalate_after_declines.is_some())
            ));
            keys.push(format!("rekey:{}", some(!requirements.rekey.is_empty())));
            keys.push(format!(
                "review_percent:{}",
                some(requirements.review_percent > 0)
            ));
            images(&mut keys, &submission.images);
        }
        Event::OfferWithdrawn { reason, .. } => {
            keys.push(format!("withdraw:{}", withdraw_name(*reason)));
        }
        Event::Decided { verdict, .. } => {
            keys.push(format!("decision:{}", decision_name(verdict.decision)));
        }
        Event::RekeyMismatched {
            typed, mismatched, ..
        } => {
            for f in mismatched {
                keys.push(format!("rekey_mismatched:{}", f.as_str()));
            }
            keys.push(format!(
                "rekey_mismatched.typed.amount:{}",
                some(typed.amount_minor_units.is_some())
            ));
        }
        Event::Resubmitted { added, removed, .. } => {
            keys.push(format!("resubmitted.added:{}", some(!added.is_empty())));
            keys.push(format!("resubmitted.removed:{}", some(!removed.is_empty())));
            images(&mut keys, added);
        }
        Event::Escalated { reason, .. } => {
            keys.push(format!("escalation:{}", escalation_name(*reason)));
        }
        Event::Offered { .. }
        | Event::OfferDeclined { .. }
        | Event::OfferTimedOut { .. }
        | Event::Accepted { .. }
        | Event::Cancelled { .. }
        | Event::Expired => {}
        Event::ReviewDrawn { reason } => keys.push(match reason {
            ReviewReason::Sampled { .. } => "review_reason:sampled".to_owned(),
            ReviewReason::Fallback => "review_reason:fallback".to_owned(),
        }),
        Event::Reviewed { outcome, .. } => {
            keys.push(format!("review_outcome:{}", outcome.as_str()));
        }
        Event::FallbackRegistered {
            on_site,
            requirements,
            ..
        } => {
            keys.push(format!("fallback_reason:{}", on_site.reason.as_str()));
            keys.push(format!("requirements.fallback:{}", requirements.fallback));
        }
    }
    keys
}
