//! The stored form of a record: UTF-8 JSON with a fixed field order, written once and hashed
//! as written. JSON keeps the ledger readable by an auditor with ordinary tools; the serde
//! shapes here are the ledger's schema, kept apart from the domain types on purpose, so that a
//! change to the domain cannot silently change what was recorded. Version 1 is `"v": 1`.
//! Fields added later must carry `#[serde(default)]` so old records still decode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{
    Actor, BranchId, CustomerIdentity, Decision, DocumentType, EngineEvent, EngineRecord, Entry,
    EscalationReason, Event, FallbackReason, IdVerification, ImageHash, ImageKind, ImageRef,
    MediaType, Money, OnSite, PrincipalId, Record, RekeyField, Rekeyed, RequestId, Requirements,
    ReviewOutcome, ReviewReason, Submission, TellerSerial, Timestamp, Transaction, Verdict,
    WithdrawReason,
};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("decode ledger record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("decode ledger record: unsupported version {0}")]
    Version(u8),
    #[error("decode ledger record: bad field {0}")]
    Field(&'static str),
    /// An engine record (`"engine"`) where a request's record was expected.
    #[error("decode ledger record: an engine record ({0}), not a request's")]
    NotRequest(&'static str),
}

/// How every engine record's bytes begin (`{"v":1,"at_ms"`) and no request's does (those
/// begin `{"v":1,"request"`): a store finds the engine's records by it without decoding any.
pub const ENGINE_PREFIX: &[u8] = br#"{"v":1,"at_ms""#;

/// Whether stored bytes are an engine record's (see [`ENGINE_PREFIX`]).
pub fn is_engine(bytes: &[u8]) -> bool {
    bytes.starts_with(ENGINE_PREFIX)
}

/// The record's bytes as stored and hashed.
pub fn encode(r: &Record) -> Vec<u8> {
    let Record {
        request,
        at: Timestamp(at_ms),
        actor,
        event,
    } = r;
    let wire = RecordV1 {
        v: 1,
        request: request.as_str().to_owned(),
        at_ms: *at_ms,
        actor: actor_name(actor),
        event: EventV1::from(event),
    };
    // serde_json fails only on maps with non-string keys and on types whose Serialize fails;
    // the wire shapes have neither.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(&wire).expect("serializing plain data cannot fail")
}

/// The bytes of an engine record as stored and hashed: `request` and `event` give way to
/// `engine`, so a reader that knows only requests' records refuses it instead of misreading it.
pub fn encode_engine(r: &EngineRecord) -> Vec<u8> {
    let EngineRecord {
        at: Timestamp(at_ms),
        actor,
        event,
    } = r;
    let wire = EngineRecordV1 {
        v: 1,
        at_ms: *at_ms,
        actor: actor_name(actor),
        engine: EngineEventV1::from(event),
    };
    // As in `encode`: the wire shapes are plain data.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(&wire).expect("serializing plain data cannot fail")
}

/// The bytes of any record.
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    match e {
        Entry::Request(r) => encode(r),
        Entry::Engine(r) => encode_engine(r),
    }
}

/// Decodes a request's record; an engine record is refused (`NotRequest`).
pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
    match decode_entry(bytes)? {
        Entry::Request(r) => Ok(r),
        Entry::Engine(r) => Err(RecordError::NotRequest(r.event.kind())),
    }
}

/// Decodes any record: a request's (`request` and `event`) or the engine's (`engine`).
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, RecordError> {
    let AnyRecordV1 {
        v,
        request,
        at_ms,
        actor,
        event,
        engine,
    } = serde_json::from_slice(bytes)?;
    if v != 1 {
        return Err(RecordError::Version(v));
    }
    let at = Timestamp(at_ms);
    let actor = match actor {
        Some(p) => Actor::Principal(PrincipalId::new(p)),
        None => Actor::System,
    };
    match (request, event, engine) {
        (Some(request), Some(event), None) => Ok(Entry::Request(Record {
            request: RequestId::parse(&request).ok_or(RecordError::Field("request"))?,
            at,
            actor,
            event: event.try_into()?,
        })),
        (None, None, Some(engine)) => Ok(Entry::Engine(EngineRecord {
            at,
            actor,
            event: engine.try_into()?,
        })),
        (_, _, Some(_)) => Err(RecordError::Field("engine")),
        (None, _, None) => Err(RecordError::Field("request")),
        (Some(_), None, None) => Err(RecordError::Field("event")),
    }
}

fn actor_name(actor: &Actor) -> Option<String> {
    match actor {
        Actor::Principal(p) => Some(p.as_str().to_owned()),
        Actor::System => None,
    }
}

/// A digest of a submission's content, to tell a retried Submit from a different one that
/// reuses the serial.
pub fn submission_fingerprint(s: &Submission) -> [u8; 32] {
    // As in `encode`: the wire shape is plain data.
    #[allow(clippy::expect_used)]
    let bytes = serde_json::to_vec(&SubmissionV1::from(s)).expect("plain data");
    Sha256::digest(&bytes).into()
}

/// The draw that decides whether an approval is reviewed: the first 8 bytes, big-endian, of
/// SHA-256(`countersign-review-draw-v1` || the approving record's leaf hash). Neither the
/// engine nor anyone else chooses it once the record is written, and an auditor recomputes
/// it from the ledger.
pub fn review_draw(leaf: &[u8; 32]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"countersign-review-draw-v1");
    h.update(leaf);
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Whether `draw` falls under `percent`: draw < percent/100 of 2^64.
pub fn drawn(draw: u64, percent: u8) -> bool {
    u128::from(draw) * 100 < u128::from(percent.min(100)) << 64
}

/// The idempotency entry a record that opens a request makes: (teller, serial, fingerprint)
/// for a Submitted or FallbackRegistered record; `None` for any other.
pub fn opens(event: &Event) -> Option<(PrincipalId, TellerSerial, [u8; 32])> {
    let (teller, submission) = event.opens()?;
    let fingerprint = match event {
        Event::FallbackRegistered { on_site, .. } => fallback_fingerprint(submission, on_site),
        _ => submission_fingerprint(submission),
    };
    Some((teller.clone(), submission.serial.clone(), fingerprint))
}

/// A digest of a fallback registration's content: the submission's and the on-site
/// authorization's. Never equal to a submission's, so neither call can replay the other.
pub fn fallback_fingerprint(s: &Submission, on_site: &OnSite) -> [u8; 32] {
    // As in `encode`: the wire shapes are plain data.
    #[allow(clippy::expect_used)]
    let bytes =
        serde_json::to_vec(&(SubmissionV1::from(s), OnSiteV1::from(on_site))).expect("plain data");
    Sha256::digest(&bytes).into()
}

#[derive(Serialize)]
struct RecordV1 {
    v: u8,
    request: String,
    at_ms: i64,
    /// The acting principal; null for the engine itself.
    actor: Option<String>,
    event: EventV1,
}

/// What `decode_entry` reads: either shape. Only written as `RecordV1` or `EngineRecordV1`.
#[derive(Deserialize)]
struct AnyRecordV1 {
    v: u8,
    request: Option<String>,
    at_ms: i64,
    actor: Option<String>,
    event: Option<EventV1>,
    engine: Option<EngineEventV1>,
}

#[derive(Serialize)]
struct EngineRecordV1 {
    v: u8,
    at_ms: i64,
    /// The acting principal; null for the engine itself.
    actor: Option<String>,
    engine: EngineEventV1,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EngineEventV1 {
    EngineStarted {
        node: String,
        version: String,
        policy_sha256: String,
        directory_sha256: String,
    },
    EngineStopped,
    WritesResumed {
        since_ms: i64,
        store: String,
    },
    DirectoryLoaded {
        sha256: String,
        certificates: u32,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    PolicyLoaded {
        sha256: String,
        rules: u32,
    },
    SupervisorPaused {
        supervisor: String,
        paused: bool,
    },
}

impl From<&EngineEvent> for EngineEventV1 {
    fn from(e: &EngineEvent) -> Self {
        let ids = |v: &[PrincipalId]| v.iter().map(|p| p.as_str().to_owned()).collect();
        match e {
            EngineEvent::Started {
                node,
                version,
                policy_sha256,
                directory_sha256,
            } => EngineEventV1::EngineStarted {
                node: node.clone(),
                version: version.clone(),
                policy_sha256: policy_sha256.clone(),
                directory_sha256: directory_sha256.clone(),
            },
            EngineEvent::Stopped => EngineEventV1::EngineStopped,
            EngineEvent::WritesResumed {
                since: Timestamp(since_ms),
                store,
            } => EngineEventV1::WritesResumed {
                since_ms: *since_ms,
                store: store.clone(),
            },
            EngineEvent::DirectoryLoaded {
                sha256,
                certificates,
                added,
                removed,
                changed,
            } => EngineEventV1::DirectoryLoaded {
                sha256: sha256.clone(),
                certificates: *certificates,
                added: ids(added),
                removed: ids(removed),
                changed: ids(changed),
            },
            EngineEvent::PolicyLoaded { sha256, rules } => EngineEventV1::PolicyLoaded {
                sha256: sha256.clone(),
                rules: *rules,
            },
            EngineEvent::SupervisorPaused { supervisor, paused } => {
                EngineEventV1::SupervisorPaused {
                    supervisor: supervisor.as_str().to_owned(),
                    paused: *paused,
                }
            }
        }
    }
}

impl TryFrom<EngineEventV1> for EngineEvent {
    type Error = RecordError;
    fn try_from(e: EngineEventV1) -> Result<Self, RecordError> {
        let ids = |v: Vec<String>| v.into_iter().map(PrincipalId::new).collect();
        Ok(match e {
            EngineEventV1::EngineStarted {
                node,
                version,
                policy_sha256,
                directory_sha256,
            } => EngineEvent::Started {
                node,
                version,
                policy_sha256,
                directory_sha256,
            },
            EngineEventV1::EngineStopped => EngineEvent::Stopped,
            EngineEventV1::WritesResumed { since_ms, store } => EngineEvent::WritesResumed {
                since: Timestamp(since_ms),
                store,
            },
            EngineEventV1::DirectoryLoaded {
                sha256,
                certificates,
                added,
                removed,
                changed,
            } => EngineEvent::DirectoryLoaded {
                sha256,
                certificates,
                added: ids(added),
                removed: ids(removed),
                changed: ids(changed),
            },
            EngineEventV1::PolicyLoaded { sha256, rules } => {
                EngineEvent::PolicyLoaded { sha256, rules }
            }
            EngineEventV1::SupervisorPaused { supervisor, paused } => {
                EngineEvent::SupervisorPaused {
                    supervisor: PrincipalId::new(supervisor),
                    paused,
                }
            }
        })
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventV1 {
    Submitted {
        teller: String,
        branch: String,
        submission: SubmissionV1,
        requirements: RequirementsV1,
    },
    FallbackRegistered {
        teller: String,
        branch: String,
        submission: SubmissionV1,
        requirements: RequirementsV1,
        on_site: OnSiteV1,
    },
    Offered {
        supervisor: String,
        epoch: u64,
        pool_size: u32,
        accept_by_ms: i64,
    },
    OfferDeclined {
        supervisor: String,
        epoch: u64,
        reason: String,
    },
    OfferTimedOut {
        supervisor: String,
        epoch: u64,
    },
    OfferWithdrawn {
        supervisor: String,
        epoch: u64,
        reason: String,
    },
    Accepted {
        supervisor: String,
        epoch: u64,
    },
    Decided {
        supervisor: String,
        epoch: u64,
        decision: String,
        reason_code: String,
        comment: String,
    },
    Resubmitted {
        added: Vec<ImageV1>,
        removed: Vec<String>,
        note: String,
    },
    RekeyMismatched {
        supervisor: String,
        epoch: u64,
        typed: RekeyedV1,
        mismatched: Vec<String>,
    },
    Cancelled {
        reason: String,
    },
    Expired,
    Escalated {
        level: u8,
        reason: String,
    },
    ReviewDrawn {
        /// "sampled" or "fallback".
        reason: String,
        /// Sampled: 16 lowercase hex digits (see `review_draw`), and the rule's percent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        draw: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<u8>,
    },
    Reviewed {
        reviewer: String,
        outcome: String,
        comment: String,
    },
}

/// An on-site authorization: the certificate (DER) and the signature in standard base64.
#[derive(Serialize, Deserialize)]
struct OnSiteV1 {
    supervisor: String,
    decided_at_ms: i64,
    reason: String,
    certificate: String,
    signature: String,
}

impl From<&OnSite> for OnSiteV1 {
    fn from(o: &OnSite) -> Self {
        use base64::Engine as _;
        let OnSite {
            supervisor,
            decided_at: Timestamp(decided_at_ms),
            reason,
            certificate,
            signature,
        } = o;
        let b64 = base64::engine::general_purpose::STANDARD;
        OnSiteV1 {
            supervisor: supervisor.as_str().to_owned(),
            decided_at_ms: *decided_at_ms,
            reason: reason.as_str().to_owned(),
            certificate: b64.encode(certificate),
            signature: b64.encode(signature),
        }
    }
}

impl TryFrom<OnSiteV1> for OnSite {
    type Error = RecordError;
    fn try_from(o: OnSiteV1) -> Result<Self, RecordError> {
        use base64::Engine as _;
        let OnSiteV1 {
            supervisor,
            decided_at_ms,
            reason,
            certificate,
            signature,
        } = o;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(OnSite {
            supervisor: PrincipalId::new(supervisor),
            decided_at: Timestamp(decided_at_ms),
            reason: FallbackReason::parse(&reason).ok_or(RecordError::Field("on_site.reason"))?,
            certificate: b64
                .decode(certificate)
                .map_err(|_| RecordError::Field("on_site.certificate"))?,
            signature: b64
                .decode(signature)
                .map_err(|_| RecordError::Field("on_site.signature"))?,
        })
    }
}

/// What a supervisor typed when re-keying; absent fields were not typed.
#[derive(Serialize, Deserialize)]
struct RekeyedV1 {
    amount_minor: Option<i64>,
    account: Option<String>,
    counterparty: Option<String>,
}

/// The stored form of [`Requirements`], frozen with the record format. The two conversions
/// below are the only place the two shapes meet; both destructure every field, so a field
/// added to either side does not compile until someone decides how it is stored.
#[derive(Serialize, Deserialize)]
struct RequirementsV1 {
    rule: String,
    policy_sha256: String,
    level: u8,
    approvals: u8,
    independent: bool,
    priority: u8,
    offer_timeout_ms: u64,
    decision_deadline_ms: u64,
    escalate_after_ms: Option<u64>,
    escalate_after_declines: Option<u32>,
    /// Added after version 1 was frozen: absent (and so the bytes of every earlier record
    /// unchanged) when no field is re-keyed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rekey: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    rekey_attempts: u8,
    /// Added after version 1 was frozen, as `rekey`: absent when the rule keeps the
    /// transaction central.
    #[serde(default, skip_serializing_if = "is_false")]
    fallback: bool,
    /// Likewise: absent when no approval is drawn for review.
    #[serde(default, skip_serializing_if = "is_zero")]
    review_percent: u8,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl From<&Requirements> for RequirementsV1 {
    fn from(r: &Requirements) -> Self {
        let Requirements {
            rule,
            policy_sha256,
            level,
            approvals,
            independent,
            priority,
            offer_timeout_ms,
            decision_deadline_ms,
            escalate_after_ms,
            escalate_after_declines,
            rekey,
            rekey_attempts,
            fallback,
            review_percent,
        } = r;
        RequirementsV1 {
            fallback: *fallback,
            review_percent: *review_percent,
            rekey: rekey.iter().map(|f| f.as_str().to_owned()).collect(),
            rekey_attempts: *rekey_attempts,
            rule: rule.clone(),
            policy_sha256: policy_sha256.clone(),
            level: *level,
            approvals: *approvals,
            independent: *independent,
            priority: *priority,
            offer_timeout_ms: *offer_timeout_ms,
            decision_deadline_ms: *decision_deadline_ms,
            escalate_after_ms: *escalate_after_ms,
            escalate_after_declines: *escalate_after_declines,
        }
    }
}

impl TryFrom<RequirementsV1> for Requirements {
    type Error = RecordError;
    fn try_from(r: RequirementsV1) -> Result<Self, RecordError> {
        let RequirementsV1 {
            rule,
            policy_sha256,
            level,
            approvals,
            independent,
            priority,
            offer_timeout_ms,
            decision_deadline_ms,
            escalate_after_ms,
            escalate_after_declines,
            rekey,
            rekey_attempts,
            fallback,
            review_percent,
        } = r;
        Ok(Requirements {
            fallback,
            review_percent,
            rekey: rekey
                .iter()
                .map(|f| RekeyField::parse(f).ok_or(RecordError::Field("rekey")))
                .collect::<Result<_, _>>()?,
            rekey_attempts,
            rule,
            policy_sha256,
            level,
            approvals,
            independent,
            priority,
            offer_timeout_ms,
            decision_deadline_ms,
            escalate_after_ms,
            escalate_after_declines,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct SubmissionV1 {
    serial: String,
    transaction: TransactionV1,
    customer: CustomerV1,
    images: Vec<ImageV1>,
    note: String,
}

#[derive(Serialize, Deserialize)]
struct TransactionV1 {
    code: String,
    amount_minor: i64,
    currency: String,
    account: String,
    counterparty: Option<String>,
    attributes: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct CustomerV1 {
    document_type: String,
    document_number: String,
    name: String,
    expiry_date: Option<String>,
    verification: String,
}

#[derive(Serialize, Deserialize)]
struct ImageV1 {
    kind: String,
    media_type: String,
    sha256: String,
    size: u64,
}

/// A two-way table between an enum and its stored names.
macro_rules! names {
    ($to:ident, $from:ident, $ty:ty, $field:literal, { $($v:path => $s:literal),* $(,)? }) => {
        pub(crate) fn $to(v: $ty) -> &'static str {
            match v { $($v => $s),* }
        }
        pub(crate) fn $from(s: &str) -> Result<$ty, RecordError> {
            match s { $($s => Ok($v),)* _ => Err(RecordError::Field($field)) }
        }
    };
}

names!(doc_name, doc_from, DocumentType, "document_type", {
    DocumentType::PrcResidentId => "prc_resident_id",
    DocumentType::Passport => "passport",
    DocumentType::HkMacaoPermit => "hk_macao_permit",
    DocumentType::TaiwanPermit => "taiwan_permit",
    DocumentType::ForeignPermanentResident => "foreign_permanent_resident",
    DocumentType::Other => "other",
});
names!(verif_name, verif_from, IdVerification, "verification", {
    IdVerification::Matched => "matched",
    IdVerification::Mismatched => "mismatched",
    IdVerification::NotChecked => "not_checked",
});
names!(kind_name, kind_from, ImageKind, "kind", {
    ImageKind::Voucher => "voucher",
    ImageKind::IdFront => "id_front",
    ImageKind::IdBack => "id_back",
    ImageKind::Photo => "photo",
    ImageKind::Other => "other",
});
names!(decision_name, decision_from, Decision, "decision", {
    Decision::Approve => "approve",
    Decision::Reject => "reject",
    Decision::Return => "return",
});
names!(escalation_name, escalation_from, EscalationReason, "reason", {
    EscalationReason::Waited => "waited",
    EscalationReason::Declined => "declined",
});
names!(withdraw_name, withdraw_from, WithdrawReason, "reason", {
    WithdrawReason::Disconnected => "disconnected",
    WithdrawReason::Superseded => "superseded",
    WithdrawReason::Restart => "restart",
    WithdrawReason::Escalated => "escalated",
    WithdrawReason::ReviewTimeout => "review_timeout",
    WithdrawReason::Revoked => "revoked",
});

// Every conversion below destructures its source completely, without `..`, so that a field
// added to a domain type or to a stored shape does not compile until someone decides how it
// is stored or read (STYLE.md, "Boundaries").

impl From<&ImageRef> for ImageV1 {
    fn from(i: &ImageRef) -> Self {
        let ImageRef {
            kind,
            media_type,
            hash,
            size,
        } = i;
        ImageV1 {
            kind: kind_name(*kind).into(),
            media_type: media_type.as_mime().into(),
            sha256: hash.to_hex(),
            size: *size,
        }
    }
}

impl TryFrom<ImageV1> for ImageRef {
    type Error = RecordError;
    fn try_from(i: ImageV1) -> Result<Self, RecordError> {
        let ImageV1 {
            kind,
            media_type,
            sha256,
            size,
        } = i;
        Ok(ImageRef {
            kind: kind_from(&kind)?,
            media_type: MediaType::from_mime(&media_type)
                .ok_or(RecordError::Field("media_type"))?,
            hash: ImageHash::parse_hex(&sha256).ok_or(RecordError::Field("sha256"))?,
            size,
        })
    }
}

impl From<&Transaction> for TransactionV1 {
    fn from(t: &Transaction) -> Self {
        let Transaction {
            code,
            amount,
            account,
            counterparty,
            attributes,
        } = t;
        let Money {
            minor_units,
            currency,
        } = amount;
        TransactionV1 {
            code: code.clone(),
            amount_minor: *minor_units,
            currency: currency.clone(),
            account: account.clone(),
            counterparty: counterparty.clone(),
            attributes: attributes.iter().cloned().collect(),
        }
    }
}

impl From<TransactionV1> for Transaction {
    fn from(t: TransactionV1) -> Self {
        let TransactionV1 {
            code,
            amount_minor,
            currency,
            account,
            counterparty,
            attributes,
        } = t;
        Transaction {
            code,
            amount: Money {
                minor_units: amount_minor,
                currency,
            },
            account,
            counterparty,
            attributes: attributes.into_iter().collect(),
        }
    }
}

impl From<&CustomerIdentity> for CustomerV1 {
    fn from(c: &CustomerIdentity) -> Self {
        let CustomerIdentity {
            document_type,
            document_number,
            name,
            expiry_date,
            verification,
        } = c;
        CustomerV1 {
            document_type: doc_name(*document_type).into(),
            document_number: document_number.clone(),
            name: name.clone(),
            expiry_date: expiry_date.clone(),
            verification: verif_name(*verification).into(),
        }
    }
}

impl TryFrom<CustomerV1> for CustomerIdentity {
    type Error = RecordError;
    fn try_from(c: CustomerV1) -> Result<Self, RecordError> {
        let CustomerV1 {
            document_type,
            document_number,
            name,
            expiry_date,
            verification,
        } = c;
        Ok(CustomerIdentity {
            document_type: doc_from(&document_type)?,
            document_number,
            name,
            expiry_date,
            verification: verif_from(&verification)?,
        })
    }
}

impl From<&Submission> for SubmissionV1 {
    fn from(s: &Submission) -> Self {
        let Submission {
            serial,
            transaction,
            customer,
            images,
            note,
        } = s;
        SubmissionV1 {
            serial: serial.as_str().into(),
            transaction: transaction.into(),
            customer: customer.into(),
            images: images.iter().map(ImageV1::from).collect(),
            note: note.clone(),
        }
    }
}

impl TryFrom<SubmissionV1> for Submission {
    type Error = RecordError;
    fn try_from(s: SubmissionV1) -> Result<Self, RecordError> {
        let SubmissionV1 {
            serial,
            transaction,
            customer,
            images,
            note,
        } = s;
        Ok(Submission {
            serial: TellerSerial::new(serial),
            transaction: transaction.into(),
            customer: customer.try_into()?,
            images: images
                .into_iter()
                .map(ImageRef::try_from)
                .collect::<Result<_, _>>()?,
            note,
        })
    }
}

impl From<&Event> for EventV1 {
    fn from(e: &Event) -> Self {
        let p = |p: &PrincipalId| p.as_str().to_owned();
        match e {
            Event::Submitted {
                teller,
                branch,
                submission,
                requirements,
            } => EventV1::Submitted {
                teller: p(teller),
                branch: branch.as_str().into(),
                submission: submission.into(),
                requirements: requirements.into(),
            },
            Event::FallbackRegistered {
                teller,
                branch,
                submission,
                requirements,
                on_site,
            } => EventV1::FallbackRegistered {
                teller: p(teller),
                branch: branch.as_str().into(),
                submission: submission.into(),
                requirements: requirements.into(),
                on_site: on_site.into(),
            },
            Event::Offered {
                supervisor,
                epoch,
                pool_size,
                accept_by: Timestamp(accept_by_ms),
            } => EventV1::Offered {
                supervisor: p(supervisor),
                epoch: *epoch,
                pool_size: *pool_size,
                accept_by_ms: *accept_by_ms,
            },
            Event::OfferDeclined {
                supervisor,
                epoch,
                reason,
            } => EventV1::OfferDeclined {
                supervisor: p(supervisor),
                epoch: *epoch,
                reason: reason.clone(),
            },
            Event::OfferTimedOut { supervisor, epoch } => EventV1::OfferTimedOut {
                supervisor: p(supervisor),
                epoch: *epoch,
            },
            Event::OfferWithdrawn {
                supervisor,
                epoch,
                reason,
            } => EventV1::OfferWithdrawn {
                supervisor: p(supervisor),
                epoch: *epoch,
                reason: withdraw_name(*reason).into(),
            },
            Event::Accepted { supervisor, epoch } => EventV1::Accepted {
                supervisor: p(supervisor),
                epoch: *epoch,
            },
            Event::Decided {
                supervisor,
                epoch,
                verdict:
                    Verdict {
                        decision,
                        reason_code,
                        comment,
                    },
            } => EventV1::Decided {
                supervisor: p(supervisor),
                epoch: *epoch,
                decision: decision_name(*decision).into(),
                reason_code: reason_code.clone(),
                comment: comment.clone(),
            },
            Event::Resubmitted {
                added,
                removed,
                note,
            } => EventV1::Resubmitted {
                added: added.iter().map(ImageV1::from).collect(),
                removed: removed.iter().map(ImageHash::to_hex).collect(),
                note: note.clone(),
            },
            Event::RekeyMismatched {
                supervisor,
                epoch,
                typed:
                    Rekeyed {
                        amount_minor_units,
                        account,
                        counterparty,
                    },
                mismatched,
            } => EventV1::RekeyMismatched {
                supervisor: p(supervisor),
                epoch: *epoch,
                typed: RekeyedV1 {
                    amount_minor: *amount_minor_units,
                    account: account.clone(),
                    counterparty: counterparty.clone(),
                },
                mismatched: mismatched.iter().map(|f| f.as_str().to_owned()).collect(),
            },
            Event::Cancelled { reason } => EventV1::Cancelled {
                reason: reason.clone(),
            },
            Event::Expired => EventV1::Expired,
            Event::ReviewDrawn { reason } => match reason {
                ReviewReason::Sampled { draw, percent } => EventV1::ReviewDrawn {
                    reason: "sampled".into(),
                    draw: Some(format!("{draw:016x}")),
                    percent: Some(*percent),
                },
                ReviewReason::Fallback => EventV1::ReviewDrawn {
                    reason: "fallback".into(),
                    draw: None,
                    percent: None,
                },
            },
            Event::Reviewed {
                reviewer,
                outcome,
                comment,
            } => EventV1::Reviewed {
                reviewer: p(reviewer),
                outcome: outcome.as_str().into(),
                comment: comment.clone(),
            },
            Event::Escalated { level, reason } => EventV1::Escalated {
                level: *level,
                reason: escalation_name(*reason).into(),
            },
        }
    }
}

impl TryFrom<EventV1> for Event {
    type Error = RecordError;
    fn try_from(e: EventV1) -> Result<Self, RecordError> {
        let p = PrincipalId::new;
        Ok(match e {
            EventV1::Submitted {
                teller,
                branch,
                submission,
                requirements,
            } => Event::Submitted {
                teller: p(teller),
                branch: BranchId::new(branch),
                submission: submission.try_into()?,
                requirements: requirements.try_into()?,
            },
            EventV1::FallbackRegistered {
                teller,
                branch,
                submission,
                requirements,
                on_site,
            } => Event::FallbackRegistered {
                teller: p(teller),
                branch: BranchId::new(branch),
                submission: submission.try_into()?,
                requirements: requirements.try_into()?,
                on_site: on_site.try_into()?,
            },
            EventV1::Offered {
                supervisor,
                epoch,
                pool_size,
                accept_by_ms,
            } => Event::Offered {
                supervisor: p(supervisor),
                epoch,
                pool_size,
                accept_by: Timestamp(accept_by_ms),
            },
            EventV1::OfferDeclined {
                supervisor,
                epoch,
                reason,
            } => Event::OfferDeclined {
                supervisor: p(supervisor),
                epoch,
                reason,
            },
            EventV1::OfferTimedOut { supervisor, epoch } => Event::OfferTimedOut {
                supervisor: p(supervisor),
                epoch,
            },
            EventV1::OfferWithdrawn {
                supervisor,
                epoch,
                reason,
            } => Event::OfferWithdrawn {
                supervisor: p(supervisor),
                epoch,
                reason: withdraw_from(&reason)?,
            },
            EventV1::Accepted { supervisor, epoch } => Event::Accepted {
                supervisor: p(supervisor),
                epoch,
            },
            EventV1::Decided {
                supervisor,
                epoch,
                decision,
                reason_code,
                comment,
            } => Event::Decided {
                supervisor: p(supervisor),
                epoch,
                verdict: Verdict {
                    decision: decision_from(&decision)?,
                    reason_code,
                    comment,
                },
            },
            EventV1::Resubmitted {
                added,
                removed,
                note,
            } => Event::Resubmitted {
                added: added
                    .into_iter()
                    .map(ImageRef::try_from)
                    .collect::<Result<_, _>>()?,
                removed: removed
                    .iter()
                    .map(|h| ImageHash::parse_hex(h).ok_or(RecordError::Field("removed")))
                    .collect::<Result<_, _>>()?,
                note,
            },
            EventV1::RekeyMismatched {
                supervisor,
                epoch,
                typed:
                    RekeyedV1 {
                        amount_minor,
                        account,
                        counterparty,
                    },
                mismatched,
            } => Event::RekeyMismatched {
                supervisor: p(supervisor),
                epoch,
                typed: Rekeyed {
                    amount_minor_units: amount_minor,
                    account,
                    counterparty,
                },
                mismatched: mismatched
                    .iter()
                    .map(|f| RekeyField::parse(f).ok_or(RecordError::Field("mismatched")))
                    .collect::<Result<_, _>>()?,
            },
            EventV1::Cancelled { reason } => Event::Cancelled { reason },
            EventV1::Expired => Event::Expired,
            EventV1::ReviewDrawn {
                reason,
                draw,
                percent,
            } => Event::ReviewDrawn {
                reason: match (reason.as_str(), draw, percent) {
                    ("sampled", Some(draw), Some(percent)) => ReviewReason::Sampled {
                        draw: u64::from_str_radix(&draw, 16)
                            .ok()
                            .filter(|_| draw.len() == 16)
                            .ok_or(RecordError::Field("draw"))?,
                        percent,
                    },
                    ("fallback", None, None) => ReviewReason::Fallback,
                    _ => return Err(RecordError::Field("reason")),
                },
            },
            EventV1::Reviewed {
                reviewer,
                outcome,
                comment,
            } => Event::Reviewed {
                reviewer: p(reviewer),
                outcome: ReviewOutcome::parse(&outcome).ok_or(RecordError::Field("outcome"))?,
                comment,
            },
            EventV1::Escalated { level, reason } => Event::Escalated {
                level,
                reason: escalation_from(&reason)?,
            },
        })
    }
}

/// The golden samples that freeze these bytes, in a file of their own beside this one.
#[cfg(test)]
mod golden;

#[cfg(test)]
mod draw_tests {
    use super::{drawn, review_draw};

    #[test]
    fn the_draw_is_the_hash_of_the_leaf_and_the_percent_its_share() {
        // Fixed by the documented definition (docs/ledger.md): recomputable by an auditor.
        assert_eq!(review_draw(&[0; 32]), review_draw(&[0; 32]));
        assert_ne!(review_draw(&[0; 32]), review_draw(&[1; 32]));
        assert!(!drawn(0, 0));
        assert!(drawn(0, 1));
        assert!(drawn(u64::MAX, 100));
        // 5 percent of 2^64, exactly at the edge.
        let edge = ((5u128 << 64) / 100) as u64;
        assert!(drawn(edge, 5));
        assert!(!drawn(edge + 1, 5));
        // About the share asked for, over many leaves.
        let hits = (0u32..10_000)
            .filter(|i| {
                let mut leaf = [0u8; 32];
                leaf[..4].copy_from_slice(&i.to_be_bytes());
                drawn(review_draw(&leaf), 10)
            })
            .count();
        assert!((800..1200).contains(&hits), "{hits} of 10,000 at 10%");
    }
}
