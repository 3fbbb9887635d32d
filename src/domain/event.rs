//! Events: the only way a request changes. Each becomes one ledger record.

use super::ids::{BranchId, ImageHash, PrincipalId, RequestId};
use super::types::{
    EscalationReason, ImageRef, OnSite, RekeyField, Rekeyed, Requirements, ReviewOutcome,
    ReviewReason, Submission, Timestamp, Verdict,
};

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
    /// An authorization given on site while the centre could not be used, registered
    /// afterwards: it opens a request that is final at once (`State::Fallback`) and was never
    /// offered, so it is never taken for a remote decision.
    FallbackRegistered {
        teller: PrincipalId,
        branch: BranchId,
        submission: Submission,
        /// What the policy in force at registration requires of the code and amount (its
        /// rule allows fallback).
        requirements: Requirements,
        on_site: OnSite,
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
    /// An approval whose re-keyed fields did not match the transaction: refused, and the
    /// request stays in review, unless this was the supervisor's last attempt (then it goes
    /// back to the queue for someone else).
    RekeyMismatched {
        supervisor: PrincipalId,
        epoch: u64,
        /// What the supervisor typed.
        typed: Rekeyed,
        /// The fields that did not match.
        mismatched: Vec<RekeyField>,
    },
    Cancelled {
        reason: String,
    },
    /// Not decided by its deadline.
    Expired,
    /// An approved request or a registered fallback was drawn for after-the-fact review.
    ReviewDrawn {
        reason: ReviewReason,
    },
    /// A reviewer recorded their finding on a drawn request.
    Reviewed {
        reviewer: PrincipalId,
        outcome: ReviewOutcome,
        comment: String,
    },
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
            Event::Submitted { submission, .. } | Event::FallbackRegistered { submission, .. } => {
                &submission.images
            }
            Event::Resubmitted { added, .. } => added,
            _ => &[],
        }
    }

    /// The teller and submission of an event that opens a request (Submitted,
    /// FallbackRegistered); `None` for any other.
    pub fn opens(&self) -> Option<(&PrincipalId, &Submission)> {
        match self {
            Event::Submitted {
                teller, submission, ..
            }
            | Event::FallbackRegistered {
                teller, submission, ..
            } => Some((teller, submission)),
            _ => None,
        }
    }

    /// The stable name auditors see for the event's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Submitted { .. } => "submitted",
            Event::FallbackRegistered { .. } => "fallback_registered",
            Event::Offered { .. } => "offered",
            Event::OfferDeclined { .. } => "offer_declined",
            Event::OfferTimedOut { .. } => "offer_timed_out",
            Event::OfferWithdrawn { .. } => "offer_withdrawn",
            Event::Accepted { .. } => "accepted",
            Event::Decided { .. } => "decided",
            Event::Resubmitted { .. } => "resubmitted",
            Event::RekeyMismatched { .. } => "rekey_mismatched",
            Event::Cancelled { .. } => "cancelled",
            Event::Expired => "expired",
            Event::ReviewDrawn { .. } => "review_drawn",
            Event::Reviewed { .. } => "reviewed",
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

/// Something that happened to the engine itself rather than to a request. Kept in the ledger
/// beside the requests' records so that an auditor sees, under the same signatures, when the
/// centre served, with which policy and principal directory, and who changed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEvent {
    /// The engine started serving on this ledger: at start, or as a cluster's new leader.
    Started {
        /// The node: its cluster `node_id`, or the host's name for a single node.
        node: String,
        /// The build (`CARGO_PKG_VERSION`).
        version: String,
        /// Lowercase hex SHA-256 of the policy file in force.
        policy_sha256: String,
        /// Lowercase hex SHA-256 of the principal directory file in force.
        directory_sha256: String,
    },
    /// The engine stopped serving cleanly (a shutdown asked for). A crash leaves no such
    /// record: the next `Started` follows the last record the crashed engine wrote.
    Stopped,
    /// Writes work again after a store could not write from `since` to this record's time;
    /// the engine refused writes and reported NOT_SERVING meanwhile.
    WritesResumed {
        since: Timestamp,
        /// "ledger", "images" or "projection".
        store: String,
    },
    /// A principal directory was put in force without a restart (AdminService.ReloadDirectory
    /// by the record's actor, or SIGHUP when the actor is the system).
    DirectoryLoaded {
        sha256: String,
        /// Certificates the directory accepts.
        certificates: u32,
        added: Vec<PrincipalId>,
        removed: Vec<PrincipalId>,
        /// Listed before and after, with other details or certificates: their streams ended.
        changed: Vec<PrincipalId>,
    },
    /// A policy was put in force without a restart (AdminService.ReloadPolicy by the record's
    /// actor, or SIGHUP when the actor is the system). It applies to later submissions.
    PolicyLoaded { sha256: String, rules: u32 },
    /// The duty manager (the record's actor) paused or resumed offers to a supervisor
    /// (AdminService.PauseSupervisor and ResumeSupervisor). Recorded because who may be
    /// offered a request is what keeps the draw independent: pausing all but one supervisor
    /// would pick the one. A supervisor's own pause is not recorded (it only takes them out).
    SupervisorPaused {
        supervisor: PrincipalId,
        paused: bool,
    },
}

impl EngineEvent {
    /// The stable name auditors see for the event's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineEvent::Started { .. } => "engine_started",
            EngineEvent::Stopped => "engine_stopped",
            EngineEvent::WritesResumed { .. } => "writes_resumed",
            EngineEvent::DirectoryLoaded { .. } => "directory_loaded",
            EngineEvent::PolicyLoaded { .. } => "policy_loaded",
            EngineEvent::SupervisorPaused { .. } => "supervisor_paused",
        }
    }
}

/// One ledger record about the engine, with when and by whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineRecord {
    pub at: Timestamp,
    pub actor: Actor,
    pub event: EngineEvent,
}

/// Any ledger record: about a request, or about the engine.
// Built once per record read and consumed at once, as `Event` is; boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Request(Record),
    Engine(EngineRecord),
}

impl Entry {
    pub fn at(&self) -> Timestamp {
        match self {
            Entry::Request(r) => r.at,
            Entry::Engine(r) => r.at,
        }
    }

    pub fn actor(&self) -> &Actor {
        match self {
            Entry::Request(r) => &r.actor,
            Entry::Engine(r) => &r.actor,
        }
    }

    /// The stable name of the record's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::Request(r) => r.event.kind(),
            Entry::Engine(r) => r.event.kind(),
        }
    }

    /// The images the record attaches (none for an engine record).
    pub fn images_added(&self) -> &[ImageRef] {
        match self {
            Entry::Request(r) => r.event.images_added(),
            Entry::Engine(_) => &[],
        }
    }
}
