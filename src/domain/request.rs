//! The request state machine. `Request::apply` is the single place where an event changes a
//! request, used alike for live commands and for replay of the ledger, so both agree. The
//! `check_*` functions decide whether a command may produce its event; they never mutate.

use std::collections::BTreeSet;

use super::event::{Event, Record};
use super::ids::{BranchId, ImageHash, PrincipalId, RequestId};
use super::types::{
    Decision, DecisionEntry, EscalationReason, ImageRef, OnSite, Requirements, ReturnEntry, Review,
    ReviewEntry, ReviewOutcome, ReviewReason, Submission, Timestamp, Verdict,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Queued,
    Offered,
    InReview,
    Approved,
    Rejected,
    Returned,
    Cancelled,
    Expired,
    /// Authorized on site during a fallback and registered afterwards; never offered.
    Fallback,
}

impl State {
    /// Final states never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Approved | State::Rejected | State::Cancelled | State::Expired | State::Fallback
        )
    }
}

/// A request as the events so far have made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    pub teller: PrincipalId,
    pub branch: BranchId,
    /// The submission as first made, with `images` and `note` updated by resubmissions.
    pub submission: Submission,
    pub state: State,
    /// Grows by one with every offer; an action presenting another epoch is stale.
    pub epoch: u64,
    /// The supervisor holding the current offer or review.
    pub assignee: Option<PrincipalId>,
    /// When the current offer lapses, while OFFERED.
    pub accept_by: Option<Timestamp>,
    /// Supervisors who declined it; they are never offered it again.
    pub declined_by: BTreeSet<PrincipalId>,
    /// Supervisors whose offer of it timed out; others are preferred for the next offer.
    pub timed_out: BTreeSet<PrincipalId>,
    pub returns: Vec<ReturnEntry>,
    /// What the policy required at submission.
    pub requirements: Requirements,
    /// The authority level needed now: the policy's, raised by escalations.
    pub level: u8,
    /// Escalations so far, with why; each trigger fires once.
    pub escalations: Vec<EscalationReason>,
    /// Approvals given so far while more are needed (dual control); cleared by a resubmission.
    pub approvals: Vec<DecisionEntry>,
    /// The final approval or rejection.
    pub decision: Option<DecisionEntry>,
    /// When a supervisor first accepted it.
    pub first_accepted_at: Option<Timestamp>,
    /// When the current review began, while IN_REVIEW: the review timeout runs from here, so
    /// it survives a restart or a takeover.
    pub accepted_at: Option<Timestamp>,
    pub submitted_at: Timestamp,
    pub updated_at: Timestamp,
    /// Ledger index of the Submitted record; orders the queue (older first).
    pub submitted_index: u64,
    /// Ledger index of the last applied record.
    pub version: u64,
    /// The callers' actions that took effect, oldest first: a retried call (its answer lost)
    /// finds itself here and is answered as a replay instead of refused.
    pub acts: Vec<Act>,
    /// Mismatched re-keyings by the assignee since they accepted it.
    pub rekey_mismatches: u8,
    /// The on-site authorization, for a registered fallback (`State::Fallback`).
    pub on_site: Option<OnSite>,
    /// The after-the-fact review, once the request was drawn for one.
    pub review: Option<Review>,
}

/// An action a principal took on a request, as the call named it. Accept, decline and decide
/// carry the offer's epoch, so the same call is recognised however the request moved since;
/// the teller's cancel and resubmit need no epoch (only the owner makes them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    Accepted {
        supervisor: PrincipalId,
        epoch: u64,
    },
    Declined {
        supervisor: PrincipalId,
        epoch: u64,
        reason: String,
    },
    Decided {
        supervisor: PrincipalId,
        epoch: u64,
        verdict: Verdict,
    },
    Cancelled {
        reason: String,
    },
    Resubmitted {
        added: Vec<ImageRef>,
        removed: Vec<ImageHash>,
        note: String,
    },
    /// An approval refused for re-keyed fields that did not match.
    RekeyMismatched {
        supervisor: PrincipalId,
        epoch: u64,
        typed: super::types::Rekeyed,
    },
    /// A reviewer's finding.
    Reviewed {
        reviewer: PrincipalId,
        outcome: ReviewOutcome,
        comment: String,
    },
}

impl Request {
    /// Whether `act` already took effect: the call that asks for it again is a retry.
    pub fn did(&self, act: &Act) -> bool {
        match act {
            // Only the teller's latest: a request returned, resubmitted, returned again may be
            // resubmitted again with the same note and images, and that is not a retry.
            Act::Resubmitted { .. } => {
                self.state != State::Returned
                    && self
                        .acts
                        .iter()
                        .rev()
                        .find(|a| matches!(a, Act::Resubmitted { .. }))
                        == Some(act)
            }
            _ => self.acts.contains(act),
        }
    }
}

/// Why an event cannot apply to a request: a replayed ledger that disagrees with the state
/// machine, which means a bug or a damaged ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    pub request: RequestId,
    pub kind: &'static str,
    pub state: State,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} cannot apply to request {} in state {:?}",
            self.kind, self.request, self.state
        )
    }
}

impl std::error::Error for ApplyError {}

/// Why an action on an offer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceError {
    /// The caller is not the supervisor the request is offered to or reviewed by.
    NotAssigned,
    /// The caller presented an older offer's epoch.
    StaleEpoch { presented: u64, current: u64 },
    /// The request is not in the state the action needs.
    WrongState(State),
}

impl std::fmt::Display for FenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FenceError::NotAssigned => {
                f.write_str("the request is not offered to or reviewed by this supervisor")
            }
            FenceError::StaleEpoch { presented, current } => {
                write!(f, "stale epoch {presented}; the current epoch is {current}")
            }
            FenceError::WrongState(s) => {
                write!(
                    f,
                    "the request is {s:?}, not in the state this action needs"
                )
            }
        }
    }
}

impl std::error::Error for FenceError {}

impl Request {
    /// The request a Submitted or FallbackRegistered record creates; `None` for any other.
    /// A registered fallback is final at once, with its on-site authorization.
    pub fn open(index: u64, rec: &Record) -> Option<Self> {
        let (teller, branch, submission, requirements, on_site) = match &rec.event {
            Event::Submitted {
                teller,
                branch,
                submission,
                requirements,
            } => (teller, branch, submission, requirements, None),
            Event::FallbackRegistered {
                teller,
                branch,
                submission,
                requirements,
                on_site,
            } => (teller, branch, submission, requirements, Some(on_site)),
            _ => return None,
        };
        let mut r = Request::submitted(
            rec.request.clone(),
            index,
            rec.at,
            teller.clone(),
            branch.clone(),
            submission.clone(),
            requirements.clone(),
        );
        if let Some(on_site) = on_site {
            r.state = State::Fallback;
            r.on_site = Some(on_site.clone());
        }
        Some(r)
    }

    /// The request a Submitted event creates.
    pub fn submitted(
        id: RequestId,
        index: u64,
        at: Timestamp,
        teller: PrincipalId,
        branch: BranchId,
        submission: Submission,
        requirements: Requirements,
    ) -> Self {
        Request {
            id,
            teller,
            branch,
            submission,
            level: requirements.level,
            requirements,
            escalations: Vec::new(),
            approvals: Vec::new(),
            first_accepted_at: None,
            accepted_at: None,
            state: State::Queued,
            epoch: 0,
            assignee: None,
            accept_by: None,
            declined_by: BTreeSet::new(),
            timed_out: BTreeSet::new(),
            returns: Vec::new(),
            decision: None,
            submitted_at: at,
            updated_at: at,
            submitted_index: index,
            version: index,
            acts: Vec::new(),
            rekey_mismatches: 0,
            on_site: None,
            review: None,
        }
    }

    /// Applies one event. Every transition of the lifecycle is here and nowhere else.
    pub fn apply(&mut self, index: u64, at: Timestamp, event: &Event) -> Result<(), ApplyError> {
        let bad = |s: &Self| ApplyError {
            request: s.id.clone(),
            kind: event.kind(),
            state: s.state,
        };
        match event {
            Event::Submitted { .. } | Event::FallbackRegistered { .. } => return Err(bad(self)),
            Event::Offered {
                supervisor,
                epoch,
                accept_by,
                ..
            } => {
                if self.state != State::Queued || *epoch != self.epoch + 1 {
                    return Err(bad(self));
                }
                self.state = State::Offered;
                self.epoch = *epoch;
                self.assignee = Some(supervisor.clone());
                self.accept_by = Some(*accept_by);
            }
            Event::OfferDeclined {
                supervisor, epoch, ..
            } => {
                self.check_fence(supervisor, *epoch, State::Offered)
                    .map_err(|_| bad(self))?;
                self.declined_by.insert(supervisor.clone());
                if let Event::OfferDeclined { reason, .. } = event {
                    self.acts.push(Act::Declined {
                        supervisor: supervisor.clone(),
                        epoch: *epoch,
                        reason: reason.clone(),
                    });
                }
                self.requeue();
            }
            Event::OfferTimedOut { supervisor, epoch } => {
                self.check_fence(supervisor, *epoch, State::Offered)
                    .map_err(|_| bad(self))?;
                self.timed_out.insert(supervisor.clone());
                self.requeue();
            }
            Event::OfferWithdrawn {
                supervisor, epoch, ..
            } => {
                let held = matches!(self.state, State::Offered | State::InReview)
                    && self.assignee.as_ref() == Some(supervisor)
                    && self.epoch == *epoch;
                if !held {
                    return Err(bad(self));
                }
                if let Event::OfferWithdrawn {
                    reason: super::event::WithdrawReason::ReviewTimeout,
                    ..
                } = event
                {
                    // Like an offer timeout: someone else is preferred next time.
                    self.timed_out.insert(supervisor.clone());
                }
                self.requeue();
            }
            Event::Accepted { supervisor, epoch } => {
                self.check_fence(supervisor, *epoch, State::Offered)
                    .map_err(|_| bad(self))?;
                self.state = State::InReview;
                self.accept_by = None;
                self.rekey_mismatches = 0;
                self.first_accepted_at.get_or_insert(at);
                self.accepted_at = Some(at);
                self.acts.push(Act::Accepted {
                    supervisor: supervisor.clone(),
                    epoch: *epoch,
                });
            }
            Event::Decided {
                supervisor,
                epoch,
                verdict,
            } => {
                self.check_fence(supervisor, *epoch, State::InReview)
                    .map_err(|_| bad(self))?;
                if verdict.decision == Decision::Approve
                    && self.approvals.iter().any(|a| &a.supervisor == supervisor)
                {
                    // Dual control: the same person never approves twice.
                    return Err(bad(self));
                }
                self.assignee = None;
                self.acts.push(Act::Decided {
                    supervisor: supervisor.clone(),
                    epoch: *epoch,
                    verdict: verdict.clone(),
                });
                let needed = usize::from(self.requirements.approvals);
                match verdict.decision {
                    Decision::Approve if self.approvals.len() + 1 < needed => {
                        // One approval of several: back to the queue for the next approver.
                        self.approvals.push(DecisionEntry {
                            supervisor: supervisor.clone(),
                            verdict: verdict.clone(),
                            at,
                        });
                        self.state = State::Queued;
                    }
                    Decision::Approve | Decision::Reject => {
                        self.state = if verdict.decision == Decision::Approve {
                            State::Approved
                        } else {
                            State::Rejected
                        };
                        self.decision = Some(DecisionEntry {
                            supervisor: supervisor.clone(),
                            verdict: verdict.clone(),
                            at,
                        });
                    }
                    Decision::Return => {
                        self.state = State::Returned;
                        self.returns.push(ReturnEntry {
                            supervisor: supervisor.clone(),
                            reason_code: verdict.reason_code.clone(),
                            comment: verdict.comment.clone(),
                            at,
                            resubmit_note: None,
                        });
                    }
                }
            }
            Event::RekeyMismatched {
                supervisor,
                epoch,
                typed,
                mismatched,
            } => {
                self.check_fence(supervisor, *epoch, State::InReview)
                    .map_err(|_| bad(self))?;
                let asked = |f: &super::types::RekeyField| self.requirements.rekey.contains(f);
                if mismatched.is_empty() || !mismatched.iter().all(asked) {
                    return Err(bad(self));
                }
                self.acts.push(Act::RekeyMismatched {
                    supervisor: supervisor.clone(),
                    epoch: *epoch,
                    typed: typed.clone(),
                });
                self.rekey_mismatches = self.rekey_mismatches.saturating_add(1);
                if self.rekey_mismatches >= self.requirements.rekey_attempts.max(1) {
                    // Out of attempts: someone else is asked, never this supervisor again.
                    self.declined_by.insert(supervisor.clone());
                    self.requeue();
                }
            }
            Event::Resubmitted {
                added,
                removed,
                note,
            } => {
                if self.state != State::Returned {
                    return Err(bad(self));
                }
                self.submission.images =
                    resubmitted_images(&self.submission.images, added, removed)
                        .ok_or_else(|| bad(self))?;
                self.submission.note = note.clone();
                if let Some(last) = self.returns.last_mut() {
                    last.resubmit_note = Some(note.clone());
                }
                // The content changed: approvals given to the old content no longer count.
                self.approvals.clear();
                self.acts.push(Act::Resubmitted {
                    added: added.clone(),
                    removed: removed.clone(),
                    note: note.clone(),
                });
                self.state = State::Queued;
            }
            Event::Cancelled { .. } | Event::Expired => {
                if self.state.is_final() {
                    return Err(bad(self));
                }
                self.state = if matches!(event, Event::Expired) {
                    State::Expired
                } else {
                    State::Cancelled
                };
                if let Event::Cancelled { reason } = event {
                    self.acts.push(Act::Cancelled {
                        reason: reason.clone(),
                    });
                }
                self.assignee = None;
                self.accept_by = None;
            }
            // Reviews follow a final outcome and never change it (nor `updated_at`, which
            // dates the outcome).
            Event::ReviewDrawn { reason } => {
                let fits = match reason {
                    ReviewReason::Sampled { percent, .. } => {
                        self.state == State::Approved
                            && *percent == self.requirements.review_percent
                    }
                    ReviewReason::Fallback => self.state == State::Fallback,
                };
                if !fits || self.review.is_some() {
                    return Err(bad(self));
                }
                self.review = Some(Review {
                    reason: *reason,
                    drawn_at: at,
                    done: None,
                });
                self.version = index;
                return Ok(());
            }
            Event::Reviewed {
                reviewer,
                outcome,
                comment,
            } => {
                let Some(review) = self.review.as_mut().filter(|r| r.done.is_none()) else {
                    return Err(bad(self));
                };
                review.done = Some(ReviewEntry {
                    reviewer: reviewer.clone(),
                    outcome: *outcome,
                    comment: comment.clone(),
                    at,
                });
                self.acts.push(Act::Reviewed {
                    reviewer: reviewer.clone(),
                    outcome: *outcome,
                    comment: comment.clone(),
                });
                self.version = index;
                return Ok(());
            }
            Event::Escalated { level, reason } => {
                let fresh = !self.escalations.contains(reason);
                if self.state.is_final() || !fresh || *level != self.level + 1 || *level > 9 {
                    return Err(bad(self));
                }
                self.level = *level;
                self.escalations.push(*reason);
                // State is unchanged: a request escalated while offered keeps its offer only if
                // the holder still qualifies; the engine withdraws it otherwise.
                self.updated_at = at;
                self.version = index;
                return Ok(());
            }
        }
        if self.state != State::InReview {
            self.accepted_at = None;
        }
        self.updated_at = at;
        self.version = index;
        Ok(())
    }

    /// Whether `supervisor` holds the current offer at `epoch` in `state`.
    pub fn check_fence(
        &self,
        supervisor: &PrincipalId,
        epoch: u64,
        state: State,
    ) -> Result<(), FenceError> {
        if self.assignee.as_ref() != Some(supervisor) {
            return Err(FenceError::NotAssigned);
        }
        if epoch != self.epoch {
            return Err(FenceError::StaleEpoch {
                presented: epoch,
                current: self.epoch,
            });
        }
        if self.state != state {
            return Err(FenceError::WrongState(self.state));
        }
        Ok(())
    }

    /// When the request expires if not decided.
    pub fn deadline(&self) -> Timestamp {
        self.submitted_at
            .plus_ms(self.requirements.decision_deadline_ms)
    }

    /// When the review in progress times out (`timeout_ms` after the Accept), while IN_REVIEW:
    /// counted from the Accepted record's time, so a restart or a takeover does not move it.
    pub fn review_by(&self, timeout_ms: u64) -> Option<Timestamp> {
        self.accepted_at.map(|at| at.plus_ms(timeout_ms))
    }

    /// When waiting unaccepted raises the level, if the policy says so and it has not yet.
    pub fn escalate_at(&self) -> Option<Timestamp> {
        let after = self.requirements.escalate_after_ms?;
        (!self.escalations.contains(&EscalationReason::Waited))
            .then(|| self.submitted_at.plus_ms(after))
    }

    /// Whether `declines` so far trigger the declines escalation.
    pub fn declines_escalate(&self) -> bool {
        self.requirements
            .escalate_after_declines
            .is_some_and(|n| self.declined_by.len() as u32 >= n)
            && !self.escalations.contains(&EscalationReason::Declined)
            && self.level < 9
    }

    fn requeue(&mut self) {
        self.state = State::Queued;
        self.assignee = None;
        self.accept_by = None;
    }
}

/// The image list after a resubmission: the kept images in order, then the added ones.
/// `None` if a removed hash is not attached.
pub fn resubmitted_images(
    current: &[ImageRef],
    added: &[ImageRef],
    removed: &[super::ids::ImageHash],
) -> Option<Vec<ImageRef>> {
    if removed
        .iter()
        .any(|h| !current.iter().any(|i| i.hash == *h))
    {
        return None;
    }
    // Each attached image can be removed once; a repeated hash is a malformed request.
    let distinct: std::collections::BTreeSet<_> = removed.iter().collect();
    if distinct.len() != removed.len() {
        return None;
    }
    let mut out: Vec<ImageRef> = current
        .iter()
        .filter(|i| !removed.contains(&i.hash))
        .cloned()
        .collect();
    out.extend(added.iter().cloned());
    Some(out)
}

#[cfg(test)]
mod tests;
