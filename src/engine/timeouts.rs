//! What time does on its own: when a timer comes due the engine takes a review or an offer
//! back, expires a request past its deadline, or escalates one that waited too long (or was
//! declined too often). Each checks that the request is still where the timer left it, and
//! records its event before anyone is told.

use crate::domain::{Actor, EscalationReason, Event, RequestId, State, WithdrawReason};

use super::Withdrawal;
use super::core::Core;
use super::timers::Due;

impl Core {
    /// Handles every timer that has come due: reviews held too long and offers not accepted
    /// go back to the queue, requests past their deadline expire, and requests that waited
    /// too long are escalated. Handling one may arm another that is already due (an
    /// escalation after a withdrawal), so this runs until nothing is due.
    pub(crate) fn run_timers(&mut self) {
        let now = self.now();
        loop {
            let due = self.timers.due(now);
            if due.is_empty() {
                return;
            }
            for d in due {
                self.timer(d, now);
            }
        }
    }

    fn timer(&mut self, due: Due, now: crate::domain::Timestamp) {
        match due {
            Due::Review { id, epoch } => {
                let Some(r) = self.requests.get(&id) else {
                    return;
                };
                let Some(holder) = r.assignee.clone() else {
                    return;
                };
                if r.state != State::InReview || r.epoch != epoch {
                    return;
                }
                let event = Event::OfferWithdrawn {
                    supervisor: holder.clone(),
                    epoch,
                    reason: WithdrawReason::ReviewTimeout,
                };
                let why = Withdrawal::Withdrawn(WithdrawReason::ReviewTimeout);
                self.withdraw(&id, &holder, epoch, Some(event), why);
            }
            Due::Offer { id, epoch } => {
                let Some(r) = self.requests.get(&id) else {
                    return;
                };
                let Some(holder) = r.assignee.clone() else {
                    return;
                };
                if r.state != State::Offered || r.epoch != epoch {
                    return;
                }
                let event = Event::OfferTimedOut {
                    supervisor: holder.clone(),
                    epoch,
                };
                self.withdraw(&id, &holder, epoch, Some(event), Withdrawal::OfferTimeout);
            }
            Due::Request { id } => {
                let Some(r) = self.requests.get(&id) else {
                    return;
                };
                if r.state.is_final() {
                    return;
                }
                if now >= r.deadline() {
                    let holder = r.assignee.clone().map(|s| (s, r.epoch));
                    self.record(&id, Actor::System, Event::Expired);
                    if let Some((supervisor, epoch)) = holder {
                        self.withdraw(&id, &supervisor, epoch, None, Withdrawal::Expired);
                    }
                } else if r.escalate_at().is_some_and(|at| at <= now)
                    && matches!(r.state, State::Queued | State::Offered)
                    && r.level < 9
                {
                    self.escalate(&id, EscalationReason::Waited);
                }
            }
        }
    }

    /// Raises the level a request needs by one, recording why, and withdraws a current offer
    /// from a supervisor who no longer qualifies.
    pub(crate) fn escalate(&mut self, id: &RequestId, reason: EscalationReason) {
        let Some(r) = self.requests.get(id) else {
            return;
        };
        let level = r.level + 1;
        let level_max = self.config.supervisors.iter().map(|s| s.level).max();
        if level > level_max.unwrap_or(0) {
            // Nobody in the directory could take it higher: it stays where someone can.
            tracing::warn!(request = %id, level = r.level, ?reason, "escalation stops at the highest level a supervisor holds");
            return;
        }
        self.record(id, Actor::System, Event::Escalated { level, reason });
        let Some(r) = self.requests.get(id) else {
            return;
        };
        if let (State::Offered, Some(holder)) = (r.state, r.assignee.clone()) {
            let qualifies = self
                .sessions
                .get(&holder)
                .is_some_and(|s| s.principal.may_decide(level, &r.submission.transaction));
            if !qualifies {
                let epoch = r.epoch;
                let event = Event::OfferWithdrawn {
                    supervisor: holder.clone(),
                    epoch,
                    reason: WithdrawReason::Escalated,
                };
                let why = Withdrawal::Withdrawn(WithdrawReason::Escalated);
                self.withdraw(id, &holder, epoch, Some(event), why);
            }
        }
    }
}
