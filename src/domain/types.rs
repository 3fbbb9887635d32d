//! The content of a submission and the principals who act on it.

use std::collections::{BTreeMap, BTreeSet};

use super::ids::{BranchId, ImageHash, PrincipalId, TellerSerial};

/// Milliseconds since the Unix epoch, UTC, as read by the engine's one clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Teller,
    Supervisor,
    Auditor,
    Admin,
    /// Reviews drawn approvals and fallbacks after the fact (事后监督).
    Reviewer,
}

/// Someone the principal directory knows, resolved from a client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub id: PrincipalId,
    /// Display name, for consoles and logs.
    pub name: String,
    pub role: Role,
    /// The branch the principal works at; independence is judged on it.
    pub branch: BranchId,
    /// Authority level; 0 for everyone but supervisors.
    pub level: u8,
    /// Supervisors: the largest amount (minor units) they may decide, per currency. A currency
    /// not listed is one they may not decide at all.
    pub ceilings: BTreeMap<String, i64>,
    /// Supervisors: the transaction codes they may decide; empty means every code.
    pub codes: BTreeSet<String>,
}

impl Principal {
    /// Whether this supervisor's own authority covers a request needing `level` for this
    /// transaction (branch independence is the dispatcher's separate rule).
    pub fn may_decide(&self, level: u8, t: &Transaction) -> bool {
        self.role == Role::Supervisor
            && self.level >= level
            && self
                .ceilings
                .get(&t.amount.currency)
                .is_some_and(|c| *c >= t.amount.minor_units)
            && (self.codes.is_empty() || self.codes.contains(&t.code))
    }
}

/// What the policy required of a request when it was submitted. Recorded in the Submitted
/// record, so that replay, timers and audits never depend on the policy file in force later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirements {
    /// The rule that matched (or "unmatched-default").
    pub rule: String,
    /// SHA-256 (hex) of the policy file that was in force.
    pub policy_sha256: String,
    /// Authority level needed at submission (escalation may raise it).
    pub level: u8,
    /// Approvals needed: 1, or 2 for dual control.
    pub approvals: u8,
    /// Whether the supervisor must be of another branch than the teller.
    pub independent: bool,
    /// Higher is offered first.
    pub priority: u8,
    pub offer_timeout_ms: u64,
    /// Not decided this long after submission, the request expires.
    pub decision_deadline_ms: u64,
    /// Unaccepted this long after submission, the level needed rises by one.
    pub escalate_after_ms: Option<u64>,
    /// After this many declines, the level needed rises by one.
    pub escalate_after_declines: Option<u32>,
    /// Fields an approving supervisor must type from the voucher (blind re-keying); they are
    /// withheld from the supervisor until the decision. Empty: none.
    pub rekey: Vec<RekeyField>,
    /// Mismatched re-keyings one supervisor may make before the request goes back to the
    /// queue for someone else (at least 1 when `rekey` is not empty).
    pub rekey_attempts: u8,
    /// Whether a branch may fall back to a supervisor on site when the centre cannot be
    /// used, and register the authorization afterwards.
    pub fallback: bool,
    /// The share of approvals (0 to 100 percent) drawn at random for after-the-fact review.
    pub review_percent: u8,
}

/// A transaction field a supervisor re-keys from the voucher image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RekeyField {
    Amount,
    Account,
    Counterparty,
}

impl RekeyField {
    pub fn as_str(self) -> &'static str {
        match self {
            RekeyField::Amount => "amount",
            RekeyField::Account => "account",
            RekeyField::Counterparty => "counterparty",
        }
    }

    pub fn parse(s: &str) -> Option<RekeyField> {
        [
            RekeyField::Amount,
            RekeyField::Account,
            RekeyField::Counterparty,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }
}

/// What a supervisor typed from the voucher when approving; `None` where nothing was typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rekeyed {
    pub amount_minor_units: Option<i64>,
    pub account: Option<String>,
    pub counterparty: Option<String>,
}

impl Rekeyed {
    /// The fields of `wanted` that were not typed.
    pub fn missing(&self, wanted: &[RekeyField]) -> Vec<RekeyField> {
        wanted
            .iter()
            .copied()
            .filter(|f| match f {
                RekeyField::Amount => self.amount_minor_units.is_none(),
                RekeyField::Account => self.account.is_none(),
                RekeyField::Counterparty => self.counterparty.is_none(),
            })
            .collect()
    }

    /// The fields of `wanted` typed otherwise than the transaction says. Accounts are
    /// compared without spaces, as they are read off a voucher in groups.
    pub fn mismatched(&self, wanted: &[RekeyField], t: &Transaction) -> Vec<RekeyField> {
        let plain = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        wanted
            .iter()
            .copied()
            .filter(|f| match f {
                RekeyField::Amount => self.amount_minor_units != Some(t.amount.minor_units),
                RekeyField::Account => {
                    self.account.as_deref().map(plain) != Some(plain(&t.account))
                }
                RekeyField::Counterparty => {
                    self.counterparty.as_deref().map(plain)
                        != Some(plain(t.counterparty.as_deref().unwrap_or("")))
                }
            })
            .collect()
    }
}

/// Why the level a request needs was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscalationReason {
    /// Nobody accepted it within `escalate_after_ms`.
    Waited,
    /// It was declined `escalate_after_declines` times.
    Declined,
}

impl EscalationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationReason::Waited => "waited",
            EscalationReason::Declined => "declined",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    /// Positive amount in the currency's minor unit.
    pub minor_units: i64,
    /// ISO 4217 alphabetic code.
    pub currency: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub code: String,
    pub amount: Money,
    pub account: String,
    pub counterparty: Option<String>,
    /// Sorted by key, keys unique. A sorted list rather than a map: a one-entry BTreeMap
    /// allocates a node of about 550 bytes, and every queued request holds its transaction.
    pub attributes: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentType {
    PrcResidentId,
    Passport,
    HkMacaoPermit,
    TaiwanPermit,
    ForeignPermanentResident,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdVerification {
    Matched,
    Mismatched,
    NotChecked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerIdentity {
    pub document_type: DocumentType,
    pub document_number: String,
    pub name: String,
    /// "YYYY-MM-DD"; `None` for documents valid for life.
    pub expiry_date: Option<String>,
    pub verification: IdVerification,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Voucher,
    IdFront,
    IdBack,
    Photo,
    Other,
}

/// The formats the image store accepts, judged from the content's magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    Jpeg,
    Png,
    Tiff,
    Pdf,
}

impl MediaType {
    pub fn as_mime(self) -> &'static str {
        match self {
            MediaType::Jpeg => "image/jpeg",
            MediaType::Png => "image/png",
            MediaType::Tiff => "image/tiff",
            MediaType::Pdf => "application/pdf",
        }
    }

    pub fn from_mime(s: &str) -> Option<Self> {
        match s {
            "image/jpeg" => Some(MediaType::Jpeg),
            "image/png" => Some(MediaType::Png),
            "image/tiff" => Some(MediaType::Tiff),
            "application/pdf" => Some(MediaType::Pdf),
            _ => None,
        }
    }

    /// The format the bytes are, by their magic number; never trusts a declared type.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(MediaType::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(MediaType::Png)
        } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
            Some(MediaType::Tiff)
        } else if bytes.starts_with(b"%PDF-") {
            Some(MediaType::Pdf)
        } else {
            None
        }
    }
}

/// An image in the store, as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub kind: ImageKind,
    pub media_type: MediaType,
    pub hash: ImageHash,
    pub size: u64,
}

/// What a teller submits, with the images already stored and named by hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub serial: TellerSerial,
    pub transaction: Transaction,
    pub customer: CustomerIdentity,
    pub images: Vec<ImageRef>,
    pub note: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    Return,
}

/// A supervisor's decision with its reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason_code: String,
    pub comment: String,
}

/// One return to the teller, kept for the next supervisor to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnEntry {
    pub supervisor: PrincipalId,
    pub reason_code: String,
    pub comment: String,
    pub at: Timestamp,
    /// The teller's note on the resubmission that followed, once there is one.
    pub resubmit_note: Option<String>,
}

/// The final approval or rejection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionEntry {
    pub supervisor: PrincipalId,
    pub verdict: Verdict,
    pub at: Timestamp,
}

/// Why a branch fell back to a supervisor on site instead of the centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallbackReason {
    /// The branch could not reach the centre (network cut).
    CentreUnreachable,
    /// The centre answered but could not serve (down, NOT_SERVING).
    CentreUnavailable,
    /// An emergency the bank declared.
    DeclaredEmergency,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::CentreUnreachable => "centre_unreachable",
            FallbackReason::CentreUnavailable => "centre_unavailable",
            FallbackReason::DeclaredEmergency => "declared_emergency",
        }
    }

    pub fn parse(s: &str) -> Option<FallbackReason> {
        [
            FallbackReason::CentreUnreachable,
            FallbackReason::CentreUnavailable,
            FallbackReason::DeclaredEmergency,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// An authorization a supervisor gave on site while the centre could not be used, as the
/// branch registers it afterwards. The centre checked `signature` (over
/// `ledger::onsite::signed_bytes`) with the key of `certificate`, a certificate the principal
/// directory lists for `supervisor`, valid at `decided_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnSite {
    pub supervisor: PrincipalId,
    /// When the supervisor authorized it, as the branch terminal recorded it.
    pub decided_at: Timestamp,
    pub reason: FallbackReason,
    /// The supervisor's certificate (DER), kept so that anyone can check the signature later.
    pub certificate: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Why a request was drawn for after-the-fact review (事后监督).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewReason {
    /// An approval drawn at random: `draw` (from the hash of the approving record, see
    /// `ledger::record::review_draw`) fell under the rule's `percent`.
    Sampled { draw: u64, percent: u8 },
    /// Every registered fallback is reviewed.
    Fallback,
}

/// A reviewer's finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewOutcome {
    Confirmed,
    Flagged,
}

impl ReviewOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewOutcome::Confirmed => "confirmed",
            ReviewOutcome::Flagged => "flagged",
        }
    }

    pub fn parse(s: &str) -> Option<ReviewOutcome> {
        [ReviewOutcome::Confirmed, ReviewOutcome::Flagged]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// A final request's after-the-fact review: drawn, then done by a reviewer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub reason: ReviewReason,
    pub drawn_at: Timestamp,
    pub done: Option<ReviewEntry>,
}

/// What a reviewer recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewEntry {
    pub reviewer: PrincipalId,
    pub outcome: ReviewOutcome,
    pub comment: String,
    pub at: Timestamp,
}

impl Review {
    /// "pending", "confirmed" or "flagged": how the projection and the statistics name it.
    pub fn status(&self) -> &'static str {
        match &self.done {
            None => "pending",
            Some(e) => e.outcome.as_str(),
        }
    }
}
