//! The engine's timers: offer deadlines, review deadlines, and the decision deadlines and wait
//! escalations of requests. All are times of the injected clock derived from record times, so
//! they are rebuilt at start. `due` hands back what has come due; whether it still applies
//! (the request may have moved on) is the engine's to check, so stale entries cost nothing.

use std::collections::BTreeSet;

use crate::domain::{RequestId, Timestamp};

/// A timer that came due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// A review held since `epoch`'s accept has run past the review timeout.
    Review { id: RequestId, epoch: u64 },
    /// The offer of `epoch` was not accepted in time.
    Offer { id: RequestId, epoch: u64 },
    /// A decision deadline or a wait escalation of `id`.
    Request { id: RequestId },
}

#[derive(Default)]
pub(crate) struct Timers {
    /// (accept_by, request, epoch).
    offers: BTreeSet<(Timestamp, RequestId, u64)>,
    /// (accepted + review timeout, request, epoch). A supervisor who accepts and never decides
    /// loses the request then.
    reviews: BTreeSet<(Timestamp, RequestId, u64)>,
    /// (when, request): decision deadlines and wait escalations.
    requests: BTreeSet<(Timestamp, RequestId)>,
}

impl Timers {
    pub fn offer(&mut self, at: Timestamp, id: &RequestId, epoch: u64) {
        self.offers.insert((at, id.clone(), epoch));
    }

    pub fn review(&mut self, at: Timestamp, id: &RequestId, epoch: u64) {
        self.reviews.insert((at, id.clone(), epoch));
    }

    pub fn request(&mut self, at: Timestamp, id: &RequestId) {
        self.requests.insert((at, id.clone()));
    }

    /// Everything due at `now`: reviews first, then offers, then request timers, each in time
    /// order (the order in which the engine has always handled them).
    pub fn due(&mut self, now: Timestamp) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some((at, _, _)) = self.reviews.first()
            && *at <= now
        {
            if let Some((_, id, epoch)) = self.reviews.pop_first() {
                due.push(Due::Review { id, epoch });
            }
        }
        while let Some((at, _, _)) = self.offers.first()
            && *at <= now
        {
            if let Some((_, id, epoch)) = self.offers.pop_first() {
                due.push(Due::Offer { id, epoch });
            }
        }
        while let Some((at, _)) = self.requests.first()
            && *at <= now
        {
            if let Some((_, id)) = self.requests.pop_first() {
                due.push(Due::Request { id });
            }
        }
        due
    }

    pub fn clear(&mut self) {
        self.offers.clear();
        self.reviews.clear();
        self.requests.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_due_comes_back_in_kind_then_time_order() {
        let a = RequestId::from_random([1; 16]);
        let b = RequestId::from_random([2; 16]);
        let mut t = Timers::default();
        t.request(Timestamp(10), &a);
        t.offer(Timestamp(20), &b, 3);
        t.offer(Timestamp(5), &a, 1);
        t.review(Timestamp(30), &a, 2);
        assert!(t.due(Timestamp(4)).is_empty());
        assert_eq!(
            t.due(Timestamp(20)),
            vec![
                Due::Offer {
                    id: a.clone(),
                    epoch: 1
                },
                Due::Offer { id: b, epoch: 3 },
                Due::Request { id: a.clone() },
            ]
        );
        assert!(t.due(Timestamp(29)).is_empty());
        assert_eq!(t.due(Timestamp(30)), vec![Due::Review { id: a, epoch: 2 }]);
        assert!(t.due(Timestamp(i64::MAX)).is_empty());
    }
}
