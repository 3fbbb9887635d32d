//! The request state machine. `Request::apply` is the single place where an event changes a
//! request, used alike for live commands and for replay of the ledger, so both agree. The
//! `check_*` functions decide whether a command may produce its event; they never mutate.

use std::collections::BTreeSet;

use super::event::{Event, Record};
use super::ids::{BranchId, PrincipalId, RequestId};
use super::types::{
    Decision, DecisionEntry, EscalationReason, ImageRef, Requirements, ReturnEntry, Submission,
    Timestamp,
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
    pub submitted_at: Timestamp,
    pub updated_at: Timestamp,
    /// Ledger index of the Submitted record; orders the queue (older first).
    pub submitted_index: u64,
    /// Ledger index of the last applied record.
    pub version: u64,
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
    /// The request a Submitted record creates; `None` for any other record.
    pub fn open(index: u64, rec: &Record) -> Option<Self> {
        let Event::Submitted {
            teller,
            branch,
            submission,
            requirements,
        } = &rec.event
        else {
            return None;
        };
        Some(Request::submitted(
            rec.request.clone(),
            index,
            rec.at,
            teller.clone(),
            branch.clone(),
            submission.clone(),
            requirements.clone(),
        ))
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
                self.first_accepted_at.get_or_insert(at);
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
                self.assignee = None;
                self.accept_by = None;
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
mod tests {
    use super::*;
    use crate::domain::types::*;
    use crate::domain::{ImageHash, TellerSerial, WithdrawReason};

    fn p(s: &str) -> PrincipalId {
        PrincipalId::new(s)
    }

    fn image(n: u8) -> ImageRef {
        ImageRef {
            kind: ImageKind::Voucher,
            media_type: MediaType::Jpeg,
            hash: ImageHash([n; 32]),
            size: 10,
        }
    }

    fn request() -> Request {
        request_with(1)
    }

    fn request_with(approvals: u8) -> Request {
        Request::submitted(
            RequestId::from_random([1; 16]),
            0,
            Timestamp(1000),
            p("teller"),
            BranchId::new("B1"),
            Submission {
                serial: TellerSerial::new("S1"),
                transaction: Transaction {
                    code: "WDL".into(),
                    amount: Money {
                        minor_units: 100,
                        currency: "CNY".into(),
                    },
                    account: "A".into(),
                    counterparty: None,
                    attributes: Default::default(),
                },
                customer: CustomerIdentity {
                    document_type: DocumentType::Passport,
                    document_number: "E1234567".into(),
                    name: "N".into(),
                    expiry_date: None,
                    verification: IdVerification::Matched,
                },
                images: vec![image(1), image(2)],
                note: String::new(),
            },
            Requirements {
                rule: "r".into(),
                policy_sha256: "00".into(),
                level: 1,
                approvals,
                independent: true,
                priority: 0,
                offer_timeout_ms: 1000,
                decision_deadline_ms: 100_000,
                escalate_after_ms: Some(50_000),
                escalate_after_declines: Some(2),
            },
        )
    }

    fn offered(epoch: u64, to: &str) -> Event {
        Event::Offered {
            supervisor: p(to),
            epoch,
            pool_size: 1,
            accept_by: Timestamp(5000),
        }
    }

    fn verdict(decision: Decision) -> Verdict {
        Verdict {
            decision,
            reason_code: "R".into(),
            comment: "c".into(),
        }
    }

    /// Every event kind, aimed at supervisor `s` and epoch `e`.
    fn all_events(s: &str, e: u64) -> Vec<Event> {
        vec![
            offered(e, s),
            Event::OfferDeclined {
                supervisor: p(s),
                epoch: e,
                reason: String::new(),
            },
            Event::OfferTimedOut {
                supervisor: p(s),
                epoch: e,
            },
            Event::OfferWithdrawn {
                supervisor: p(s),
                epoch: e,
                reason: WithdrawReason::Disconnected,
            },
            Event::Accepted {
                supervisor: p(s),
                epoch: e,
            },
            Event::Decided {
                supervisor: p(s),
                epoch: e,
                verdict: verdict(Decision::Approve),
            },
            Event::Decided {
                supervisor: p(s),
                epoch: e,
                verdict: verdict(Decision::Return),
            },
            Event::Resubmitted {
                added: vec![image(3)],
                removed: vec![ImageHash([1; 32])],
                note: "n".into(),
            },
            Event::Cancelled {
                reason: String::new(),
            },
            Event::Expired,
            Event::Escalated {
                level: 2,
                reason: EscalationReason::Waited,
            },
        ]
    }

    /// Requests in each reachable state, with the supervisor and epoch holding them.
    fn in_every_state() -> Vec<Request> {
        let mut out = vec![request()];
        let mut r = request();
        r.apply(1, Timestamp(2), &offered(1, "s")).unwrap();
        out.push(r.clone());
        r.apply(
            2,
            Timestamp(3),
            &Event::Accepted {
                supervisor: p("s"),
                epoch: 1,
            },
        )
        .unwrap();
        out.push(r.clone());
        for d in [Decision::Approve, Decision::Reject, Decision::Return] {
            let mut x = r.clone();
            x.apply(
                3,
                Timestamp(4),
                &Event::Decided {
                    supervisor: p("s"),
                    epoch: 1,
                    verdict: verdict(d),
                },
            )
            .unwrap();
            out.push(x);
        }
        let mut c = request();
        c.apply(
            1,
            Timestamp(2),
            &Event::Cancelled {
                reason: String::new(),
            },
        )
        .unwrap();
        out.push(c);
        out
    }

    #[test]
    fn only_the_lifecycle_transitions_apply() {
        use State::*;
        let mut applied = 0;
        for start in in_every_state() {
            for e in all_events("s", start.epoch.max(1)) {
                let mut r = start.clone();
                let ok = r.apply(10, Timestamp(9), &e).is_ok();
                let expected = match (start.state, &e) {
                    (Queued, Event::Offered { epoch, .. }) => *epoch == start.epoch + 1,
                    (Offered, Event::OfferDeclined { .. })
                    | (Offered, Event::OfferTimedOut { .. })
                    | (Offered, Event::OfferWithdrawn { .. })
                    | (Offered, Event::Accepted { .. })
                    | (InReview, Event::OfferWithdrawn { .. })
                    | (InReview, Event::Decided { .. })
                    | (Returned, Event::Resubmitted { .. }) => true,
                    (s, Event::Cancelled { .. } | Event::Expired | Event::Escalated { .. }) => {
                        !s.is_final()
                    }
                    _ => false,
                };
                assert_eq!(ok, expected, "{:?} + {}", start.state, e.kind());
                if !ok {
                    assert_eq!(r, start, "a refused event changes nothing");
                } else {
                    applied += 1;
                    assert_eq!(r.version, 10);
                }
            }
        }
        assert!(applied >= 10);
    }

    #[test]
    fn fencing_checks_holder_epoch_and_state() {
        let mut r = request();
        r.apply(1, Timestamp(2), &offered(1, "s")).unwrap();
        assert_eq!(r.check_fence(&p("s"), 1, State::Offered), Ok(()));
        assert_eq!(
            r.check_fence(&p("x"), 1, State::Offered),
            Err(FenceError::NotAssigned)
        );
        assert_eq!(
            r.check_fence(&p("s"), 2, State::Offered),
            Err(FenceError::StaleEpoch {
                presented: 2,
                current: 1
            })
        );
        assert_eq!(
            r.check_fence(&p("s"), 1, State::InReview),
            Err(FenceError::WrongState(State::Offered))
        );
        // Another supervisor's events do not apply either.
        let mut x = r.clone();
        assert!(
            x.apply(
                2,
                Timestamp(3),
                &Event::Accepted {
                    supervisor: p("x"),
                    epoch: 1
                }
            )
            .is_err()
        );
    }

    #[test]
    fn decline_excludes_and_return_keeps_history() {
        let mut r = request();
        r.apply(1, Timestamp(2), &offered(1, "a")).unwrap();
        r.apply(
            2,
            Timestamp(3),
            &Event::OfferDeclined {
                supervisor: p("a"),
                epoch: 1,
                reason: String::new(),
            },
        )
        .unwrap();
        assert!(r.declined_by.contains(&p("a")));
        assert_eq!((r.state, r.assignee.clone()), (State::Queued, None));
        r.apply(3, Timestamp(4), &offered(2, "b")).unwrap();
        r.apply(
            4,
            Timestamp(5),
            &Event::Accepted {
                supervisor: p("b"),
                epoch: 2,
            },
        )
        .unwrap();
        r.apply(
            5,
            Timestamp(6),
            &Event::Decided {
                supervisor: p("b"),
                epoch: 2,
                verdict: verdict(Decision::Return),
            },
        )
        .unwrap();
        assert_eq!(r.state, State::Returned);
        r.apply(
            6,
            Timestamp(7),
            &Event::Resubmitted {
                added: vec![image(3)],
                removed: vec![ImageHash([1; 32])],
                note: "fixed".into(),
            },
        )
        .unwrap();
        assert_eq!(r.state, State::Queued);
        assert_eq!(r.returns.len(), 1);
        assert_eq!(r.returns[0].resubmit_note.as_deref(), Some("fixed"));
        let hashes: Vec<_> = r.submission.images.iter().map(|i| i.hash.0[0]).collect();
        assert_eq!(hashes, [2, 3]);
        // Removing an image that is not attached is refused.
        assert_eq!(
            resubmitted_images(&r.submission.images, &[], &[ImageHash([9; 32])]),
            None
        );
    }

    fn approve(r: &mut Request, index: u64, who: &str, epoch: u64) -> Result<(), ApplyError> {
        r.apply(index, Timestamp(index as i64), &offered(epoch, who))?;
        r.apply(
            index + 1,
            Timestamp(index as i64),
            &Event::Accepted {
                supervisor: p(who),
                epoch,
            },
        )?;
        r.apply(
            index + 2,
            Timestamp(index as i64),
            &Event::Decided {
                supervisor: p(who),
                epoch,
                verdict: verdict(Decision::Approve),
            },
        )
    }

    #[test]
    fn dual_control_needs_two_different_approvers() {
        let mut r = request_with(2);
        approve(&mut r, 1, "a", 1).unwrap();
        assert_eq!(
            r.state,
            State::Queued,
            "one approval of two goes back to the queue"
        );
        assert_eq!(r.approvals.len(), 1);
        assert_eq!(r.decision, None);
        // The same person again is refused by the state machine itself.
        let before = r.clone();
        let mut again = r.clone();
        assert!(approve(&mut again, 10, "a", 2).is_err());
        assert_eq!(r, before);
        approve(&mut r, 20, "b", 2).unwrap();
        assert_eq!(r.state, State::Approved);
        assert_eq!(r.decision.as_ref().unwrap().supervisor, p("b"));
        // A rejection by the second ends it.
        let mut x = request_with(2);
        approve(&mut x, 1, "a", 1).unwrap();
        x.apply(10, Timestamp(10), &offered(2, "b")).unwrap();
        x.apply(
            11,
            Timestamp(11),
            &Event::Accepted {
                supervisor: p("b"),
                epoch: 2,
            },
        )
        .unwrap();
        x.apply(
            12,
            Timestamp(12),
            &Event::Decided {
                supervisor: p("b"),
                epoch: 2,
                verdict: verdict(Decision::Reject),
            },
        )
        .unwrap();
        assert_eq!(x.state, State::Rejected);
    }

    #[test]
    fn escalation_fires_once_per_trigger_and_deadlines_derive_from_submission() {
        let mut r = request();
        assert_eq!(r.deadline(), Timestamp(101_000));
        assert_eq!(r.escalate_at(), Some(Timestamp(51_000)));
        r.apply(
            1,
            Timestamp(51_000),
            &Event::Escalated {
                level: 2,
                reason: EscalationReason::Waited,
            },
        )
        .unwrap();
        assert_eq!((r.level, r.escalate_at()), (2, None));
        assert!(
            r.apply(
                2,
                Timestamp(52_000),
                &Event::Escalated {
                    level: 3,
                    reason: EscalationReason::Waited
                }
            )
            .is_err()
        );
        assert!(!r.declines_escalate());
        for (i, who) in ["a", "b"].into_iter().enumerate() {
            let e = i as u64 + 1;
            r.apply(10 + e * 2, Timestamp(1), &offered(e, who)).unwrap();
            r.apply(
                11 + e * 2,
                Timestamp(1),
                &Event::OfferDeclined {
                    supervisor: p(who),
                    epoch: e,
                    reason: String::new(),
                },
            )
            .unwrap();
        }
        assert!(r.declines_escalate());
        r.apply(
            30,
            Timestamp(1),
            &Event::Escalated {
                level: 3,
                reason: EscalationReason::Declined,
            },
        )
        .unwrap();
        assert!(!r.declines_escalate());
        r.apply(31, Timestamp(101_000), &Event::Expired).unwrap();
        assert_eq!(r.state, State::Expired);
    }
}
