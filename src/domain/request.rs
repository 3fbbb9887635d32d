//! The request state machine. `Request::apply` is the single place where an event changes a
//! request, used alike for live commands and for replay of the ledger, so both agree. The
//! `check_*` functions decide whether a command may produce its event; they never mutate.

use std::collections::BTreeSet;

use super::event::Event;
use super::ids::{BranchId, PrincipalId, RequestId};
use super::types::{Decision, DecisionEntry, ImageRef, ReturnEntry, Submission, Timestamp};

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
}

impl State {
    /// Final states never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Approved | State::Rejected | State::Cancelled | State::Expired
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
    pub returns: Vec<ReturnEntry>,
    pub decision: Option<DecisionEntry>,
    pub submitted_at: Timestamp,
    pub updated_at: Timestamp,
    /// Ledger index of the Submitted record; orders the queue (older first).
    pub submitted_index: u64,
    /// Ledger index of the last applied record.
    pub version: u64,
}

/// Why an event cannot apply to a request: a replayed ledger that disagrees with the state
/// machine, which means a bug or a damaged ledger.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("event {kind} cannot apply to request {request} in state {state:?}")]
pub struct ApplyError {
    pub request: RequestId,
    pub kind: &'static str,
    pub state: State,
}

/// Why an action on an offer is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FenceError {
    #[error("the request is not offered to or reviewed by this supervisor")]
    NotAssigned,
    #[error("stale epoch {presented}; the current epoch is {current}")]
    StaleEpoch { presented: u64, current: u64 },
    #[error("the request is {0:?}, not in the state this action needs")]
    WrongState(State),
}

impl Request {
    /// The request a Submitted event creates.
    pub fn submitted(
        id: RequestId,
        index: u64,
        at: Timestamp,
        teller: PrincipalId,
        branch: BranchId,
        submission: Submission,
    ) -> Self {
        Request {
            id,
            teller,
            branch,
            submission,
            state: State::Queued,
            epoch: 0,
            assignee: None,
            accept_by: None,
            declined_by: BTreeSet::new(),
            returns: Vec::new(),
            decision: None,
            submitted_at: at,
            updated_at: at,
            submitted_index: index,
            version: index,
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
            Event::Submitted { .. } => return Err(bad(self)),
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
                self.requeue();
            }
            Event::OfferTimedOut { supervisor, epoch } => {
                self.check_fence(supervisor, *epoch, State::Offered)
                    .map_err(|_| bad(self))?;
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
                self.requeue();
            }
            Event::Accepted { supervisor, epoch } => {
                self.check_fence(supervisor, *epoch, State::Offered)
                    .map_err(|_| bad(self))?;
                self.state = State::InReview;
                self.accept_by = None;
            }
            Event::Decided {
                supervisor,
                epoch,
                verdict,
            } => {
                self.check_fence(supervisor, *epoch, State::InReview)
                    .map_err(|_| bad(self))?;
                self.assignee = None;
                match verdict.decision {
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
                self.state = State::Queued;
            }
            Event::Cancelled { .. } => {
                if self.state.is_final() {
                    return Err(bad(self));
                }
                self.state = State::Cancelled;
                self.assignee = None;
                self.accept_by = None;
            }
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
    let mut out: Vec<ImageRef> = current
        .iter()
        .filter(|i| !removed.contains(&i.hash))
        .cloned()
        .collect();
    out.extend(added.iter().cloned());
    Some(out)
}
