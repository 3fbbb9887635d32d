//! Events: the only way a request changes. Each becomes one ledger record.

use super::ids::{BranchId, ImageHash, PrincipalId, RequestId};
use super::types::{EscalationReason, ImageRef, Requirements, Submission, Timestamp, Verdict};

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Principal(PrincipalId),
    /// The engine itself: timers, restarts, disconnects.
    System,
}

/// Why an offer or a review was taken from a supervisor without their decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithdrawReason {
    /// The supervisor's Attend stream closed.
    Disconnected,
    /// The supervisor opened a new Attend stream, which replaced the old one.
    Superseded,
    /// The server restarted while the request was offered or in review.
    Restart,
    /// The request was escalated to a level the offered supervisor does not have.
    Escalated,
    /// The supervisor accepted it but did not decide within the review timeout.
    ReviewTimeout,
    /// The supervisor's entry or certificate was removed or changed in the principal
    /// directory while they held it.
    Revoked,
}

impl WithdrawReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawReason::Disconnected => "disconnected",
            WithdrawReason::Superseded => "superseded",
            WithdrawReason::Restart => "restart",
            WithdrawReason::Escalated => "escalated",
            WithdrawReason::ReviewTimeout => "review_timeout",
            WithdrawReason::Revoked => "revoked",
        }
    }
}

// Events are built once and moved into a record; boxing the submission would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Submitted {
        teller: PrincipalId,
        branch: BranchId,
        submission: Submission,
        /// What the policy required, as evaluated at submission.
        requirements: Requirements,
    },
    Offered {
        supervisor: PrincipalId,
        epoch: u64,
        /// How many supervisors were eligible when this one was drawn.
        pool_size: u32,
        accept_by: Timestamp,
    },
    OfferDeclined {
        supervisor: PrincipalId,
        epoch: u64,
        reason: String,
    },
    OfferTimedOut {
        supervisor: PrincipalId,
        epoch: u64,
    },
    OfferWithdrawn {
        supervisor: PrincipalId,
        epoch: u64,
        reason: WithdrawReason,
    },
    Accepted {
        supervisor: PrincipalId,
        epoch: u64,
    },
    Decided {
        supervisor: PrincipalId,
        epoch: u64,
        verdict: Verdict,
    },
    Resubmitted {
        added: Vec<ImageRef>,
        removed: Vec<ImageHash>,
        note: String,
    },
    Cancelled {
        reason: String,
    },
    /// Not decided by its deadline.
    Expired,
    /// The level needed rose to `level`.
    Escalated {
        level: u8,
        reason: EscalationReason,
    },
}

impl Event {
    /// The images the event attaches (a submission's, a resubmission's new ones): what a
    /// record names by hash and a store must hold.
    pub fn images_added(&self) -> &[ImageRef] {
        match self {
            Event::Submitted { submission, .. } => &submission.images,
            Event::Resubmitted { added, .. } => added,
            _ => &[],
        }
    }

    /// The stable name auditors see for the event's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Submitted { .. } => "submitted",
            Event::Offered { .. } => "offered",
            Event::OfferDeclined { .. } => "offer_declined",
            Event::OfferTimedOut { .. } => "offer_timed_out",
            Event::OfferWithdrawn { .. } => "offer_withdrawn",
            Event::Accepted { .. } => "accepted",
            Event::Decided { .. } => "decided",
            Event::Resubmitted { .. } => "resubmitted",
            Event::Cancelled { .. } => "cancelled",
            Event::Expired => "expired",
            Event::Escalated { .. } => "escalated",
        }
    }
}

/// One ledger record: an event about a request, with when and by whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub request: RequestId,
    pub at: Timestamp,
    pub actor: Actor,
    pub event: Event,
}
