//! Protobuf <-> domain. Incoming messages are destructured field by field, so a new proto field
//! does not compile until someone decides what it means; every rule failure names its field.

use crate::domain::validate::{self, FieldError};
use crate::domain::{
    CustomerIdentity, Decision, DocumentType, IdVerification, ImageHash, ImageKind, ImageRef,
    MediaType, Money, Request, RequestId, State, TellerSerial, Timestamp, Transaction, Verdict,
};

use sha2::Digest as _;

use super::ApiLimits;
use super::pb;

/// An image as uploaded and checked, not yet stored.
pub type Upload = (ImageKind, MediaType, Vec<u8>);

/// A checked Submit, with images not yet stored.
pub struct SubmitInput {
    pub serial: TellerSerial,
    pub transaction: Transaction,
    pub customer: CustomerIdentity,
    pub images: Vec<Upload>,
    pub note: String,
}

pub fn submit(
    req: pb::SubmitRequest,
    now: Timestamp,
    limits: &ApiLimits,
) -> Result<SubmitInput, FieldError> {
    let pb::SubmitRequest {
        teller_serial,
        transaction,
        customer,
        images,
        note,
    } = req;
    submission(
        teller_serial,
        transaction,
        customer,
        images,
        note,
        now,
        limits,
    )
}

/// A checked RegisterFallback: the submission's parts, and the on-site authorization with the
/// certificate and signature still to be checked.
pub struct FallbackInput {
    pub submission: SubmitInput,
    pub supervisor: crate::domain::PrincipalId,
    pub decided_at: Timestamp,
    pub reason: crate::domain::FallbackReason,
    pub certificate: Vec<u8>,
    pub signature: Vec<u8>,
}

impl FallbackInput {
    /// The canonical bytes the on-site supervisor signed (`ledger::onsite`), computed from
    /// what the teller sent, the images hashed as uploaded.
    pub fn signed_bytes(&self, teller: &crate::domain::PrincipalId) -> Vec<u8> {
        use sha2::Digest as _;
        let s = &self.submission;
        let images: Vec<(ImageKind, ImageHash)> = s
            .images
            .iter()
            .map(|(kind, _, bytes)| (*kind, ImageHash(sha2::Sha256::digest(bytes).into())))
            .collect();
        crate::ledger::onsite::Signed {
            teller,
            serial: &s.serial,
            transaction: &s.transaction,
            customer: &s.customer,
            images: &images,
            supervisor: &self.supervisor,
            decided_at: self.decided_at,
            reason: self.reason,
        }
        .bytes()
    }
}

/// Largest certificate or signature accepted in an on-site authorization: a certificate with a
/// 4096-bit RSA key and a long chain of names is well under it.
const ON_SITE_BYTES_MAX: usize = 16 * 1024;

pub fn register_fallback(
    req: pb::RegisterFallbackRequest,
    now: Timestamp,
    limits: &ApiLimits,
) -> Result<FallbackInput, FieldError> {
    let pb::RegisterFallbackRequest {
        teller_serial,
        transaction,
        customer,
        images,
        note,
        on_site,
    } = req;
    let submission = submission(
        teller_serial,
        transaction,
        customer,
        images,
        note,
        now,
        limits,
    )?;
    let pb::OnSiteSignature {
        supervisor_id,
        decided_at,
        reason,
        certificate,
        signature,
    } = on_site.ok_or_else(|| FieldError::new("on_site", "is required"))?;
    validate::text("on_site.supervisor_id", &supervisor_id, 64, true, false)?;
    let decided_at = millis(decided_at)
        .map(Timestamp)
        .ok_or_else(|| FieldError::new("on_site.decided_at", "is required"))?;
    // A terminal's clock may run a little ahead of the centre's.
    const SKEW_MS: i64 = 5 * 60 * 1000;
    if decided_at.0 > now.0 + SKEW_MS {
        return Err(FieldError::new(
            "on_site.decided_at",
            "is in the future (more than 5 minutes past the centre's clock)",
        ));
    }
    let oldest = now.0 - limits.fallback_age_max_days * 86_400_000;
    if decided_at.0 < oldest {
        return Err(FieldError::new(
            "on_site.decided_at",
            format!(
                "is more than limits.fallback_age_max_days ({}) ago: register fallbacks \
                 sooner, or have an operator register this one by hand",
                limits.fallback_age_max_days
            ),
        ));
    }
    let reason = match pb::FallbackReason::try_from(reason) {
        Ok(pb::FallbackReason::CentreUnreachable) => {
            crate::domain::FallbackReason::CentreUnreachable
        }
        Ok(pb::FallbackReason::CentreUnavailable) => {
            crate::domain::FallbackReason::CentreUnavailable
        }
        Ok(pb::FallbackReason::DeclaredEmergency) => {
            crate::domain::FallbackReason::DeclaredEmergency
        }
        Ok(pb::FallbackReason::Unspecified) | Err(_) => {
            return Err(FieldError::new(
                "on_site.reason",
                "must be set to a known reason",
            ));
        }
    };
    for (field, bytes) in [
        ("on_site.certificate", &certificate),
        ("on_site.signature", &signature),
    ] {
        if bytes.is_empty() {
            return Err(FieldError::new(field, "is required"));
        }
        if bytes.len() > ON_SITE_BYTES_MAX {
            return Err(FieldError::new(
                field,
                format!("is longer than {ON_SITE_BYTES_MAX} bytes"),
            ));
        }
    }
    Ok(FallbackInput {
        submission,
        supervisor: crate::domain::PrincipalId::new(supervisor_id),
        decided_at,
        reason,
        certificate,
        signature,
    })
}

/// The parts Submit and RegisterFallback share, checked.
fn submission(
    teller_serial: String,
    transaction: Option<pb::Transaction>,
    customer: Option<pb::CustomerIdentity>,
    images: Vec<pb::ImageUpload>,
    note: String,
    now: Timestamp,
    limits: &ApiLimits,
) -> Result<SubmitInput, FieldError> {
    validate::teller_serial("teller_serial", &teller_serial)?;
    let transaction = self::transaction(
        transaction.ok_or_else(|| FieldError::new("transaction", "is required"))?,
    )?;
    let customer = self::customer(
        customer.ok_or_else(|| FieldError::new("customer", "is required"))?,
        now,
    )?;
    if images.len() < limits.images_per_request_min {
        return Err(FieldError::new(
            "images",
            format!(
                "at least {} image(s) are required",
                limits.images_per_request_min
            ),
        ));
    }
    let images = uploads("images", images, limits)?;
    validate::text("note", &note, validate::TEXT_CHARS_MAX, false, true)?;
    Ok(SubmitInput {
        serial: TellerSerial::new(teller_serial),
        transaction,
        customer,
        images,
        note,
    })
}

fn transaction(t: pb::Transaction) -> Result<Transaction, FieldError> {
    let pb::Transaction {
        code,
        amount,
        account,
        counterparty,
        attributes,
    } = t;
    let pb::Money {
        minor_units,
        currency,
    } = amount.ok_or_else(|| FieldError::new("transaction.amount", "is required"))?;
    let t = Transaction {
        code,
        amount: Money {
            minor_units,
            currency,
        },
        account,
        counterparty: (!counterparty.is_empty()).then_some(counterparty),
        attributes: attributes
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect(),
    };
    validate::transaction(&t)?;
    Ok(t)
}

fn customer(c: pb::CustomerIdentity, now: Timestamp) -> Result<CustomerIdentity, FieldError> {
    let pb::CustomerIdentity {
        document_type,
        document_number,
        name,
        expiry_date,
        verification,
    } = c;
    let document_type = match pb::DocumentType::try_from(document_type) {
        Ok(pb::DocumentType::PrcResidentId) => DocumentType::PrcResidentId,
        Ok(pb::DocumentType::Passport) => DocumentType::Passport,
        Ok(pb::DocumentType::HkMacaoPermit) => DocumentType::HkMacaoPermit,
        Ok(pb::DocumentType::TaiwanPermit) => DocumentType::TaiwanPermit,
        Ok(pb::DocumentType::ForeignPermanentResident) => DocumentType::ForeignPermanentResident,
        Ok(pb::DocumentType::Other) => DocumentType::Other,
        Ok(pb::DocumentType::Unspecified) | Err(_) => {
            return Err(FieldError::new(
                "customer.document_type",
                "must be set to a known document type",
            ));
        }
    };
    let verification = match pb::IdVerification::try_from(verification) {
        Ok(pb::IdVerification::Matched) => IdVerification::Matched,
        Ok(pb::IdVerification::Mismatched) => IdVerification::Mismatched,
        Ok(pb::IdVerification::NotChecked) => IdVerification::NotChecked,
        Ok(pb::IdVerification::Unspecified) | Err(_) => {
            return Err(FieldError::new("customer.verification", "must be set"));
        }
    };
    let c = CustomerIdentity {
        document_type,
        document_number,
        name,
        expiry_date: (!expiry_date.is_empty()).then_some(expiry_date),
        verification,
    };
    validate::customer(&c, now)?;
    Ok(c)
}

/// Checks uploaded images: count, size, and that the content's magic bytes agree with the
/// declared media type (the declaration alone is never trusted).
/// A Cancel's arguments, checked: the request and the teller's reason.
pub fn cancel(req: pb::CancelRequest) -> Result<(RequestId, String), FieldError> {
    let pb::CancelRequest { request_id, reason } = req;
    let id = self::request_id("request_id", &request_id)?;
    validate::text("reason", &reason, validate::TEXT_CHARS_MAX, false, true)?;
    Ok((id, reason))
}

/// A Resubmit's arguments, checked; the uploads are not stored yet.
pub struct ResubmitInput {
    pub id: RequestId,
    pub uploads: Vec<Upload>,
    pub removed: Vec<ImageHash>,
    pub note: String,
}

pub fn resubmit(req: pb::ResubmitRequest, limits: &ApiLimits) -> Result<ResubmitInput, FieldError> {
    let pb::ResubmitRequest {
        request_id,
        images,
        remove_image_sha256,
        note,
    } = req;
    let id = self::request_id("request_id", &request_id)?;
    if remove_image_sha256.len() > limits.images_per_request_max {
        return Err(FieldError::new(
            "remove_image_sha256",
            format!(
                "at most {} hashes are allowed",
                limits.images_per_request_max
            ),
        ));
    }
    let removed = remove_image_sha256
        .iter()
        .enumerate()
        .map(|(i, h)| image_hash(&format!("remove_image_sha256[{i}]"), h))
        .collect::<Result<Vec<_>, _>>()?;
    let uploads = uploads("images", images, limits)?;
    validate::text("note", &note, validate::TEXT_CHARS_MAX, false, true)?;
    Ok(ResubmitInput {
        id,
        uploads,
        removed,
        note,
    })
}

/// An Accept's arguments: the request and the offer's epoch.
pub fn accept(req: pb::AcceptRequest) -> Result<(RequestId, u64), FieldError> {
    let pb::AcceptRequest { request_id, epoch } = req;
    Ok((self::request_id("request_id", &request_id)?, epoch))
}

/// A Decline's arguments, checked: the request, the offer's epoch and the reason.
pub fn decline(req: pb::DeclineRequest) -> Result<(RequestId, u64, String), FieldError> {
    let pb::DeclineRequest {
        request_id,
        epoch,
        reason,
    } = req;
    let id = self::request_id("request_id", &request_id)?;
    validate::text("reason", &reason, validate::TEXT_CHARS_MAX, false, true)?;
    Ok((id, epoch, reason))
}

/// A Decide's arguments, checked: the request, the offer's epoch and the verdict.
pub fn decide(
    req: pb::DecideRequest,
) -> Result<(RequestId, u64, Verdict, crate::domain::Rekeyed), FieldError> {
    let pb::DecideRequest {
        request_id,
        epoch,
        decision,
        reason_code,
        comment,
        rekeyed,
    } = req;
    let id = self::request_id("request_id", &request_id)?;
    let pb::Rekeyed {
        amount_minor_units,
        account,
        counterparty,
    } = rekeyed.unwrap_or_default();
    for (field, text) in [
        ("rekeyed.account", &account),
        ("rekeyed.counterparty", &counterparty),
    ] {
        if let Some(t) = text {
            // What was typed is recorded when it does not match: plain text, bounded.
            validate::text(field, t, validate::SHORT_CHARS_MAX, true, false)?;
        }
    }
    let rekeyed = crate::domain::Rekeyed {
        amount_minor_units,
        account,
        counterparty,
    };
    Ok((id, epoch, verdict(decision, reason_code, comment)?, rekeyed))
}

pub fn uploads(
    field: &str,
    images: Vec<pb::ImageUpload>,
    limits: &ApiLimits,
) -> Result<Vec<Upload>, FieldError> {
    if images.len() > limits.images_per_request_max {
        return Err(FieldError::new(
            field,
            format!(
                "at most {} images are allowed",
                limits.images_per_request_max
            ),
        ));
    }
    images
        .into_iter()
        .enumerate()
        .map(|(i, img)| {
            let pb::ImageUpload {
                kind,
                media_type,
                content,
            } = img;
            let f = |name: &str| format!("{field}[{i}].{name}");
            let kind = match pb::ImageKind::try_from(kind) {
                Ok(pb::ImageKind::Voucher) => ImageKind::Voucher,
                Ok(pb::ImageKind::IdFront) => ImageKind::IdFront,
                Ok(pb::ImageKind::IdBack) => ImageKind::IdBack,
                Ok(pb::ImageKind::Photo) => ImageKind::Photo,
                Ok(pb::ImageKind::Other) => ImageKind::Other,
                Ok(pb::ImageKind::Unspecified) | Err(_) => {
                    return Err(FieldError::new(
                        f("kind"),
                        "must be set to a known image kind",
                    ));
                }
            };
            if content.is_empty() {
                return Err(FieldError::new(f("content"), "is empty"));
            }
            if content.len() > limits.image_bytes_max {
                return Err(FieldError::new(
                    f("content"),
                    format!(
                        "is {} bytes; at most {} are allowed",
                        content.len(),
                        limits.image_bytes_max
                    ),
                ));
            }
            let declared = MediaType::from_mime(&media_type).ok_or_else(|| {
                FieldError::new(
                    f("media_type"),
                    "must be image/jpeg, image/png, image/tiff or application/pdf",
                )
            })?;
            match MediaType::sniff(&content) {
                Some(actual) if actual == declared => Ok((kind, declared, content)),
                Some(actual) => Err(FieldError::new(
                    f("media_type"),
                    format!(
                        "declares {media_type} but the content is {}",
                        actual.as_mime()
                    ),
                )),
                None => Err(FieldError::new(
                    f("content"),
                    "is not a JPEG, PNG, TIFF or PDF",
                )),
            }
        })
        .collect()
}

pub fn request_id(field: &str, s: &str) -> Result<RequestId, FieldError> {
    RequestId::parse(s).ok_or_else(|| FieldError::new(field, "is not a request id"))
}

pub fn image_hash(field: &str, s: &str) -> Result<ImageHash, FieldError> {
    ImageHash::parse_hex(s)
        .ok_or_else(|| FieldError::new(field, "must be 64 lowercase hex characters"))
}

/// A supervisor's decision, with the reasons each decision needs.
pub fn verdict(decision: i32, reason_code: String, comment: String) -> Result<Verdict, FieldError> {
    let decision = match pb::Decision::try_from(decision) {
        Ok(pb::Decision::Approve) => Decision::Approve,
        Ok(pb::Decision::Reject) => Decision::Reject,
        Ok(pb::Decision::Return) => Decision::Return,
        Ok(pb::Decision::Unspecified) | Err(_) => {
            return Err(FieldError::new(
                "decision",
                "must be APPROVE, REJECT or RETURN",
            ));
        }
    };
    if decision != Decision::Approve || !reason_code.is_empty() {
        validate::reason_code("reason_code", &reason_code)?;
    }
    validate::text(
        "comment",
        &comment,
        validate::TEXT_CHARS_MAX,
        decision == Decision::Return,
        true,
    )?;
    Ok(Verdict {
        decision,
        reason_code,
        comment,
    })
}

/// Milliseconds since the epoch of an optional protobuf time.
pub fn millis(t: Option<prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
    })
}

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(1000),
        nanos: (t.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn state(s: State) -> pb::RequestState {
    match s {
        State::Queued => pb::RequestState::Queued,
        State::Offered => pb::RequestState::Offered,
        State::InReview => pb::RequestState::InReview,
        State::Approved => pb::RequestState::Approved,
        State::Rejected => pb::RequestState::Rejected,
        State::Returned => pb::RequestState::Returned,
        State::Cancelled => pb::RequestState::Cancelled,
        State::Expired => pb::RequestState::Expired,
        State::Fallback => pb::RequestState::Fallback,
    }
}

fn fallback_reason(r: crate::domain::FallbackReason) -> pb::FallbackReason {
    use crate::domain::FallbackReason as R;
    match r {
        R::CentreUnreachable => pb::FallbackReason::CentreUnreachable,
        R::CentreUnavailable => pb::FallbackReason::CentreUnavailable,
        R::DeclaredEmergency => pb::FallbackReason::DeclaredEmergency,
    }
}

fn decision(d: Decision) -> pb::Decision {
    match d {
        Decision::Approve => pb::Decision::Approve,
        Decision::Reject => pb::Decision::Reject,
        Decision::Return => pb::Decision::Return,
    }
}

fn image_kind(k: ImageKind) -> pb::ImageKind {
    match k {
        ImageKind::Voucher => pb::ImageKind::Voucher,
        ImageKind::IdFront => pb::ImageKind::IdFront,
        ImageKind::IdBack => pb::ImageKind::IdBack,
        ImageKind::Photo => pb::ImageKind::Photo,
        ImageKind::Other => pb::ImageKind::Other,
    }
}

fn document_type(d: DocumentType) -> pb::DocumentType {
    match d {
        DocumentType::PrcResidentId => pb::DocumentType::PrcResidentId,
        DocumentType::Passport => pb::DocumentType::Passport,
        DocumentType::HkMacaoPermit => pb::DocumentType::HkMacaoPermit,
        DocumentType::TaiwanPermit => pb::DocumentType::TaiwanPermit,
        DocumentType::ForeignPermanentResident => pb::DocumentType::ForeignPermanentResident,
        DocumentType::Other => pb::DocumentType::Other,
    }
}

fn verification(v: IdVerification) -> pb::IdVerification {
    match v {
        IdVerification::Matched => pb::IdVerification::Matched,
        IdVerification::Mismatched => pb::IdVerification::Mismatched,
        IdVerification::NotChecked => pb::IdVerification::NotChecked,
    }
}

pub fn image_ref(i: &ImageRef) -> pb::ImageRef {
    pb::ImageRef {
        kind: image_kind(i.kind) as i32,
        media_type: i.media_type.as_mime().into(),
        sha256: i.hash.to_hex(),
        size_bytes: i.size,
    }
}

fn decision_record(d: &crate::domain::DecisionEntry) -> pb::DecisionRecord {
    pb::DecisionRecord {
        decision: decision(d.verdict.decision) as i32,
        supervisor_id: d.supervisor.to_string(),
        reason_code: d.verdict.reason_code.clone(),
        comment: d.verdict.comment.clone(),
        decided_at: Some(timestamp(d.at)),
    }
}

/// A supervisor's copy of a request they hold: the fields to re-key from the voucher are
/// withheld until the decision (blind re-keying).
pub fn request_for_supervisor(r: &Request) -> pb::AuthorizationRequest {
    let mut out = request(r);
    if let Some(t) = out.transaction.as_mut() {
        for f in &r.requirements.rekey {
            match f {
                crate::domain::RekeyField::Amount => {
                    if let Some(m) = t.amount.as_mut() {
                        m.minor_units = 0;
                    }
                }
                crate::domain::RekeyField::Account => t.account.clear(),
                crate::domain::RekeyField::Counterparty => t.counterparty.clear(),
            }
        }
    }
    out
}

/// One search hit as `RequestSummary`.
pub fn summary((id, s): &(RequestId, crate::storage::Summary)) -> pb::RequestSummary {
    pb::RequestSummary {
        request_id: id.to_string(),
        teller_id: s.teller.clone(),
        branch_id: s.branch.clone(),
        transaction_code: s.code.clone(),
        amount: Some(pb::Money {
            minor_units: s.minor_units,
            currency: s.currency.clone(),
        }),
        state: s.state().map_or(pb::RequestState::Unspecified, state) as i32,
        supervisor_ids: s.deciders.clone(),
        submitted_at: Some(timestamp(Timestamp(s.submitted_at_ms))),
        updated_at: Some(timestamp(Timestamp(s.updated_at_ms))),
        review: review_status(s.review.as_deref()) as i32,
    }
}

/// A page token a search returned, read back (`None` for the first page).
pub fn page_token(t: &str) -> Result<Option<Vec<u8>>, FieldError> {
    match t {
        "" => Ok(None),
        t => hex::decode(t)
            .map(Some)
            .map_err(|_| FieldError::new("page_token", "is not a token this server issued")),
    }
}

/// A review status as the projection names it ("pending", ...), or none.
pub fn review_status(s: Option<&str>) -> pb::ReviewStatus {
    match s {
        Some("pending") => pb::ReviewStatus::Pending,
        Some("confirmed") => pb::ReviewStatus::Confirmed,
        Some("flagged") => pb::ReviewStatus::Flagged,
        _ => pb::ReviewStatus::Unspecified,
    }
}

/// The request as tellers, supervisors and auditors see it.
pub fn request(r: &Request) -> pb::AuthorizationRequest {
    let s = &r.submission;
    let t = &s.transaction;
    let c = &s.customer;
    pb::AuthorizationRequest {
        request_id: r.id.to_string(),
        teller_id: r.teller.to_string(),
        branch_id: r.branch.to_string(),
        teller_serial: s.serial.to_string(),
        transaction: Some(pb::Transaction {
            code: t.code.clone(),
            amount: Some(pb::Money {
                minor_units: t.amount.minor_units,
                currency: t.amount.currency.clone(),
            }),
            account: t.account.clone(),
            counterparty: t.counterparty.clone().unwrap_or_default(),
            attributes: t.attributes.clone().into_iter().collect(),
        }),
        customer: Some(pb::CustomerIdentity {
            document_type: document_type(c.document_type) as i32,
            document_number: c.document_number.clone(),
            name: c.name.clone(),
            expiry_date: c.expiry_date.clone().unwrap_or_default(),
            verification: verification(c.verification) as i32,
        }),
        images: s.images.iter().map(image_ref).collect(),
        note: s.note.clone(),
        state: state(r.state) as i32,
        assigned_supervisor_id: r
            .assignee
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        returns: r
            .returns
            .iter()
            .map(|e| pb::ReturnRecord {
                supervisor_id: e.supervisor.to_string(),
                reason_code: e.reason_code.clone(),
                comment: e.comment.clone(),
                returned_at: Some(timestamp(e.at)),
                resubmit_note: e.resubmit_note.clone().unwrap_or_default(),
            })
            .collect(),
        decision: r.decision.as_ref().map(decision_record),
        submitted_at: Some(timestamp(r.submitted_at)),
        updated_at: Some(timestamp(r.updated_at)),
        version: r.version,
        approvals_needed: u32::from(r.requirements.approvals),
        approvals: r.approvals.iter().map(decision_record).collect(),
        level_needed: u32::from(r.level),
        // A registered fallback was decided on site: it had no deadline here.
        decide_by: (r.state != State::Fallback).then(|| timestamp(r.deadline())),
        policy_rule: r.requirements.rule.clone(),
        policy_sha256: r.requirements.policy_sha256.clone(),
        rekey_fields: r
            .requirements
            .rekey
            .iter()
            .map(|f| match f {
                crate::domain::RekeyField::Amount => pb::RekeyField::Amount,
                crate::domain::RekeyField::Account => pb::RekeyField::Account,
                crate::domain::RekeyField::Counterparty => pb::RekeyField::Counterparty,
            } as i32)
            .collect(),
        priority: u32::from(r.requirements.priority),
        on_site: r.on_site.as_ref().map(|o| pb::OnSiteAuthorization {
            supervisor_id: o.supervisor.to_string(),
            decided_at: Some(timestamp(o.decided_at)),
            reason: fallback_reason(o.reason) as i32,
            certificate_sha256: hex::encode(sha2::Sha256::digest(&o.certificate)),
        }),
        review: r.review.as_ref().map(|v| pb::ReviewInfo {
            status: review_status(Some(v.status())) as i32,
            reason: match v.reason {
                crate::domain::ReviewReason::Sampled { .. } => "sampled".into(),
                crate::domain::ReviewReason::Fallback => "fallback".into(),
            },
            drawn_at: Some(timestamp(v.drawn_at)),
            reviewer_id: v
                .done
                .as_ref()
                .map(|d| d.reviewer.to_string())
                .unwrap_or_default(),
            comment: v
                .done
                .as_ref()
                .map(|d| d.comment.clone())
                .unwrap_or_default(),
            reviewed_at: v.done.as_ref().map(|d| timestamp(d.at)),
        }),
    }
}

/// The requests that carry what a person typed or scanned, by the number `decode_and_check`
/// takes, with the names of their fields.
pub const CHECKED_REQUESTS: [(&str, &[&str]); 7] = [
    (
        "SubmitRequest",
        &["teller_serial", "transaction", "customer", "images", "note"],
    ),
    (
        "ResubmitRequest",
        &["request_id", "images", "remove_image_sha256", "note"],
    ),
    ("CancelRequest", &["request_id", "reason"]),
    ("AcceptRequest", &["request_id", "epoch"]),
    ("DeclineRequest", &["request_id", "epoch", "reason"]),
    (
        "DecideRequest",
        &["request_id", "epoch", "decision", "reason_code", "comment"],
    ),
    (
        "RegisterFallbackRequest",
        &[
            "teller_serial",
            "transaction",
            "customer",
            "images",
            "note",
            "on_site",
        ],
    ),
];

/// Decodes `bytes` as request `kind` of `CHECKED_REQUESTS` (modulo its length) and takes it
/// through the conversion and field rules its RPC applies: `None` when the bytes are not that
/// message. For the fuzz target `rpc_input` and its stable counterpart in the tests.
pub fn decode_and_check(
    kind: u8,
    bytes: &[u8],
    now: Timestamp,
    limits: &ApiLimits,
) -> Option<Result<(), FieldError>> {
    use prost::Message;
    Some(match usize::from(kind) % CHECKED_REQUESTS.len() {
        0 => submit(pb::SubmitRequest::decode(bytes).ok()?, now, limits).map(drop),
        1 => resubmit(pb::ResubmitRequest::decode(bytes).ok()?, limits).map(drop),
        2 => cancel(pb::CancelRequest::decode(bytes).ok()?).map(drop),
        3 => accept(pb::AcceptRequest::decode(bytes).ok()?).map(drop),
        4 => decline(pb::DeclineRequest::decode(bytes).ok()?).map(drop),
        5 => decide(pb::DecideRequest::decode(bytes).ok()?).map(drop),
        _ => register_fallback(
            pb::RegisterFallbackRequest::decode(bytes).ok()?,
            now,
            limits,
        )
        .map(drop),
    })
}

#[cfg(test)]
mod fuzz_smoke {
    use prost::Message;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn limits() -> ApiLimits {
        ApiLimits {
            fallback_age_max_days: 30,
            message_bytes_max: 1 << 20,
            image_bytes_max: 1 << 16,
            images_per_request_min: 1,
            images_per_request_max: 4,
            watch_streams_per_principal_max: 4,
        }
    }

    /// Valid messages of each kind, encoded: the starting points of the mutations.
    fn seeds() -> Vec<(u8, Vec<u8>)> {
        let submit =
            crate::tools::workload::submit_request("S-1", "WDL-CASH", 100, "6222020200112233");
        let id = "0".repeat(32);
        vec![
            (0, submit.encode_to_vec()),
            (
                1,
                pb::ResubmitRequest {
                    request_id: id.clone(),
                    images: submit.images.clone(),
                    remove_image_sha256: vec!["a".repeat(64)],
                    note: "rescanned".into(),
                }
                .encode_to_vec(),
            ),
            (
                2,
                pb::CancelRequest {
                    request_id: id.clone(),
                    reason: "customer left".into(),
                }
                .encode_to_vec(),
            ),
            (
                3,
                pb::AcceptRequest {
                    request_id: id.clone(),
                    epoch: 1,
                }
                .encode_to_vec(),
            ),
            (
                4,
                pb::DeclineRequest {
                    request_id: id.clone(),
                    epoch: 1,
                    reason: "conflict".into(),
                }
                .encode_to_vec(),
            ),
            (
                5,
                pb::DecideRequest {
                    request_id: id,
                    epoch: 1,
                    decision: pb::Decision::Return as i32,
                    reason_code: "IMG".into(),
                    comment: "rescan".into(),
                    rekeyed: None,
                }
                .encode_to_vec(),
            ),
            (
                6,
                pb::RegisterFallbackRequest {
                    teller_serial: submit.teller_serial.clone(),
                    transaction: submit.transaction.clone(),
                    customer: submit.customer.clone(),
                    images: submit.images.clone(),
                    note: String::new(),
                    on_site: Some(pb::OnSiteSignature {
                        supervisor_id: "s-1".into(),
                        // An hour before the test's `now`.
                        decided_at: Some(timestamp(Timestamp(1_779_996_400_000))),
                        reason: pb::FallbackReason::CentreUnreachable as i32,
                        certificate: vec![0x30; 300],
                        signature: vec![0x30; 72],
                    }),
                }
                .encode_to_vec(),
            ),
        ]
    }

    /// Mutated encodings of valid messages (bytes flipped, inserted, cut, with bidi and
    /// zero-width characters spliced in): no panic, and every refusal names a field of the
    /// message with a reason. The fuzz target `rpc_input` does the same from any bytes.
    #[test]
    fn mutated_requests_are_refused_with_a_field_named_or_taken() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let now = Timestamp(1_780_000_000_000);
        let limits = limits();
        let (mut taken, mut refused) = (0, 0);
        for (kind, seed) in seeds() {
            assert_eq!(
                decode_and_check(kind, &seed, now, &limits),
                Some(Ok(())),
                "the seed of {} is valid",
                CHECKED_REQUESTS[usize::from(kind)].0
            );
            for _ in 0..3000 {
                let mut b = seed.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..b.len().max(1));
                    match rng.random_range(0..4) {
                        0 if !b.is_empty() => b[at] ^= 1 << rng.random_range(0..8),
                        1 => b.insert(at.min(b.len()), rng.random()),
                        2 if !b.is_empty() => {
                            b.truncate(at);
                        }
                        _ => {
                            let odd = ["\u{202e}", "\u{200b}", "\u{feff}", "\u{2067}", "\u{a0}"];
                            let s = odd[rng.random_range(0..odd.len())].as_bytes();
                            let at = at.min(b.len());
                            b.splice(at..at, s.iter().copied());
                        }
                    }
                }
                match decode_and_check(kind, &b, now, &limits) {
                    None => {}
                    Some(Ok(())) => taken += 1,
                    Some(Err(e)) => {
                        refused += 1;
                        let fields = CHECKED_REQUESTS[usize::from(kind)].1;
                        assert!(
                            fields.iter().any(|f| e.field.starts_with(f)),
                            "{}: refusal names {:?}, not a field of the message",
                            CHECKED_REQUESTS[usize::from(kind)].0,
                            e.field
                        );
                        assert!(!e.reason.is_empty());
                    }
                }
            }
        }
        // Both outcomes happened: the mutations reached the rules, not only the decoder.
        assert!(
            taken > 100 && refused > 100,
            "taken {taken}, refused {refused}"
        );
    }
}
