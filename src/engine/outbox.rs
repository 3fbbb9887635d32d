//! The outbox: everything the engine tells anyone (a reply, an offer, a Watch update) waits
//! here until the ledger's durable count passes the records it depends on. It owns that rule
//! and nothing else: what to do with a released item is the engine's.

use std::collections::VecDeque;

use crate::domain::{PrincipalId, Request};

use super::SupervisorEvent;

/// Something to send once the ledger holds every record up to a count.
pub(crate) enum Outgoing {
    /// Answers a call.
    Reply(Box<dyn FnOnce() + Send>),
    /// An event on one Attend session of a supervisor.
    ToSupervisor {
        supervisor: PrincipalId,
        session: u64,
        event: SupervisorEvent,
    },
    /// A request's new state, for its Watch streams.
    Notify { view: Request },
}

/// Sends waiting for durability, in the order they were queued (records are appended in order,
/// so the records each needs only grow).
#[derive(Default)]
pub(crate) struct Outbox {
    /// (records needed, what to send).
    waiting: VecDeque<(u64, Outgoing)>,
}

impl Outbox {
    /// Queues `out` to go once `need` records are durable.
    pub fn push(&mut self, need: u64, out: Outgoing) {
        debug_assert!(
            self.waiting.back().is_none_or(|(n, _)| *n <= need),
            "the outbox is ordered by the records it waits for"
        );
        self.waiting.push_back((need, out));
    }

    /// Takes out everything that `durable` records make safe to send, oldest first.
    pub fn release(&mut self, durable: u64) -> Vec<Outgoing> {
        let ready = self.waiting.partition_point(|(need, _)| *need <= durable);
        self.waiting.drain(..ready).map(|(_, out)| out).collect()
    }

    /// Drops everything waiting: none of it was acknowledged, and dropping a reply tells its
    /// caller UNAVAILABLE.
    pub fn clear(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn reply(log: &Arc<Mutex<Vec<u32>>>, n: u32) -> Outgoing {
        let log = log.clone();
        Outgoing::Reply(Box::new(move || log.lock().unwrap().push(n)))
    }

    #[test]
    fn nothing_leaves_before_its_records_are_durable() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut o = Outbox::default();
        o.push(1, reply(&log, 1));
        o.push(3, reply(&log, 2));
        o.push(3, reply(&log, 3));
        o.push(5, reply(&log, 4));
        assert!(o.release(0).is_empty());
        for out in o.release(3) {
            let Outgoing::Reply(send) = out else { panic!() };
            send();
        }
        assert_eq!(*log.lock().unwrap(), vec![1, 2, 3]);
        assert!(o.release(4).is_empty());
        assert_eq!(o.release(5).len(), 1);
    }

    #[test]
    fn cleared_replies_are_never_sent() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut o = Outbox::default();
        o.push(1, reply(&log, 1));
        o.clear();
        assert!(o.release(10).is_empty());
        assert!(log.lock().unwrap().is_empty());
    }
}
