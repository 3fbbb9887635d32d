//! Measuring: the one place where applied records move the engine's series. Durations come
//! from record times (the injected clock), never from `Instant`, so a replay measures the same.

use crate::domain::{Event, Request, State, Timestamp, WithdrawReason};
use crate::metrics::{EngineMetrics, Escalation, Outcome};

/// What `apply` needs to know of a request before an event changes it, for the metrics.
#[derive(Clone, Copy)]
pub(crate) struct Before {
    pub state: State,
    pub level: u8,
    /// The time of its last record: while it is in review, that is the accept.
    pub updated_at: Timestamp,
    pub accepted: bool,
}

/// Counts one applied event: the one place where records move the engine's series. `before`
/// is the request as it was (`None` for a submission), `r` as the event left it, `at` the
/// record's time; durations come from record times (the injected clock), never from `Instant`.
pub(crate) fn measure(
    m: &EngineMetrics,
    event: &Event,
    before: Option<Before>,
    r: &Request,
    at: Timestamp,
) {
    // Leaving the queue, entering it, or an escalation while queued moves the depth gauges.
    let queued_before = before.filter(|b| b.state == State::Queued).map(|b| b.level);
    let queued_now = (r.state == State::Queued).then_some(r.level);
    if queued_before != queued_now {
        if let Some(level) = queued_before {
            m.queued(level, -1);
        }
        if let Some(level) = queued_now {
            m.queued(level, 1);
        }
    }
    match event {
        Event::Submitted { .. } => m.undecided(1),
        Event::Offered { .. } => m.offered(),
        Event::OfferDeclined { .. } => m.declined(),
        Event::OfferTimedOut { .. } => m.offer_timed_out(),
        Event::OfferWithdrawn {
            reason: WithdrawReason::ReviewTimeout,
            ..
        } => m.review_timed_out(),
        Event::Accepted { .. } if before.is_some_and(|b| !b.accepted) => {
            m.waited_ms(at.0 - r.submitted_at.0);
        }
        Event::Decided { .. } => {
            // Only leaving review changes a request in review (escalation is for queued and
            // offered ones), so its last record before the decision is the accept.
            if let Some(b) = before.filter(|b| b.state == State::InReview) {
                m.decided_after_ms(at.0 - b.updated_at.0);
            }
        }
        Event::Escalated { reason, .. } => m.escalated(match reason {
            crate::domain::EscalationReason::Waited => Escalation::Waited,
            crate::domain::EscalationReason::Declined => Escalation::Declined,
        }),
        _ => {}
    }
    // Only review records follow a final state, and they do not move these counts.
    if before.is_some_and(|b| b.state.is_final()) {
        return;
    }
    let outcome = match r.state {
        State::Approved => Some(Outcome::Approved),
        State::Rejected => Some(Outcome::Rejected),
        State::Cancelled => Some(Outcome::Cancelled),
        State::Expired => Some(Outcome::Expired),
        // Registered final, never undecided: counted here and nowhere else.
        State::Fallback => {
            m.finished(Outcome::Fallback);
            None
        }
        State::Queued | State::Offered | State::InReview | State::Returned => None,
    };
    if let Some(outcome) = outcome {
        m.undecided(-1);
        m.finished(outcome);
    }
}
