//! Unit tests of the request state machine: which events apply in which state, fencing by
//! holder and epoch, declines and returns, dual control and escalation.

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
            rekey: Vec::new(),
            rekey_attempts: 0,
            fallback: false,
            review_percent: 0,
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
fn the_review_start_is_kept_while_in_review_only() {
    let accepted = |e| Event::Accepted {
        supervisor: p("s"),
        epoch: e,
    };
    let mut r = request();
    r.apply(1, Timestamp(2), &offered(1, "s")).unwrap();
    assert_eq!(r.accepted_at, None);
    r.apply(2, Timestamp(3), &accepted(1)).unwrap();
    assert_eq!(r.accepted_at, Some(Timestamp(3)));
    assert_eq!(r.review_by(10), Some(Timestamp(13)));
    // Escalating a request in review leaves the review (and its timeout) where it was.
    let up = Event::Escalated {
        level: 2,
        reason: EscalationReason::Waited,
    };
    r.apply(3, Timestamp(4), &up).unwrap();
    assert_eq!(r.accepted_at, Some(Timestamp(3)));
    let withdrawn = Event::OfferWithdrawn {
        supervisor: p("s"),
        epoch: 1,
        reason: WithdrawReason::ReviewTimeout,
    };
    let mut w = r.clone();
    w.apply(4, Timestamp(5), &withdrawn).unwrap();
    assert_eq!(w.accepted_at, None);
    assert_eq!(w.review_by(10), None);
    // A second review starts its own clock.
    w.apply(5, Timestamp(6), &offered(2, "t")).unwrap();
    w.apply(
        6,
        Timestamp(7),
        &Event::Accepted {
            supervisor: p("t"),
            epoch: 2,
        },
    )
    .unwrap();
    assert_eq!(w.accepted_at, Some(Timestamp(7)));
    let decided = Event::Decided {
        supervisor: p("s"),
        epoch: 1,
        verdict: verdict(Decision::Approve),
    };
    r.apply(4, Timestamp(8), &decided).unwrap();
    assert_eq!(r.accepted_at, None);
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
    // What took effect is known by its arguments and epoch, so retries are recognised.
    let declined = Act::Declined {
        supervisor: p("a"),
        epoch: 1,
        reason: String::new(),
    };
    assert!(r.did(&declined));
    assert!(!r.did(&Act::Declined {
        supervisor: p("a"),
        epoch: 2,
        reason: String::new(),
    }));
    let resubmitted = Act::Resubmitted {
        added: vec![image(3)],
        removed: vec![ImageHash([1; 32])],
        note: "fixed".into(),
    };
    assert!(r.did(&resubmitted));
    assert!(r.did(&Act::Decided {
        supervisor: p("b"),
        epoch: 2,
        verdict: verdict(Decision::Return),
    }));
    assert!(!r.did(&Act::Decided {
        supervisor: p("b"),
        epoch: 2,
        verdict: verdict(Decision::Approve),
    }));
    // Returned again, the same resubmission is a new one, not a retry.
    r.apply(7, Timestamp(8), &offered(3, "c")).unwrap();
    r.apply(
        8,
        Timestamp(9),
        &Event::Accepted {
            supervisor: p("c"),
            epoch: 3,
        },
    )
    .unwrap();
    r.apply(
        9,
        Timestamp(10),
        &Event::Decided {
            supervisor: p("c"),
            epoch: 3,
            verdict: verdict(Decision::Return),
        },
    )
    .unwrap();
    assert!(!r.did(&resubmitted));
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
