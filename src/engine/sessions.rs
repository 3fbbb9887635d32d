//! Supervisor sessions: who is attending (one Attend stream each), what each holds (offered or
//! in review), and who is paused. It owns the streams' senders, so dropping a session ends its
//! stream; what a supervisor held when they left is the engine's to withdraw.

use std::collections::{BTreeSet, HashMap};

use tokio::sync::mpsc;

use crate::domain::{Principal, PrincipalId, RequestId};

use super::SupervisorEvent;

/// One supervisor's open Attend stream.
pub(crate) struct Session {
    /// Tells this stream from an earlier or later one of the same supervisor.
    pub id: u64,
    pub principal: Principal,
    /// The stream's sender; the engine never waits on it (see `try_send`).
    pub tx: mpsc::Sender<SupervisorEvent>,
    /// Requests offered to or in review by this supervisor.
    pub tasks: BTreeSet<RequestId>,
    /// Paused: keeps the stream and what it holds, gets no new offers.
    pub paused: bool,
}

/// Every attending supervisor's session.
#[derive(Default)]
pub(crate) struct Sessions {
    by_supervisor: HashMap<PrincipalId, Session>,
    /// The last session id handed out.
    seq: u64,
}

/// A free supervisor as dispatch sees them.
pub(crate) struct Free<'a> {
    pub principal: &'a Principal,
    /// Tasks held now.
    pub tasks: usize,
}

impl Sessions {
    /// Opens a session for `principal`, replacing any open one (returned, so the caller can
    /// withdraw what it held). Events go to the returned receiver.
    pub fn open(
        &mut self,
        principal: Principal,
        buffer: usize,
    ) -> (u64, mpsc::Receiver<SupervisorEvent>, Option<Session>) {
        let replaced = self.by_supervisor.remove(&principal.id);
        self.seq += 1;
        let (tx, rx) = mpsc::channel(buffer);
        self.by_supervisor.insert(
            principal.id.clone(),
            Session {
                id: self.seq,
                principal,
                tx,
                tasks: BTreeSet::new(),
                paused: false,
            },
        );
        (self.seq, rx, replaced)
    }

    /// Closes session `session` of `supervisor`, if it is still the current one.
    pub fn close(&mut self, supervisor: &PrincipalId, session: u64) -> Option<Session> {
        match self.by_supervisor.get(supervisor) {
            Some(s) if s.id == session => self.by_supervisor.remove(supervisor),
            _ => None,
        }
    }

    /// Closes `supervisor`'s session, whichever it is.
    pub fn remove(&mut self, supervisor: &PrincipalId) -> Option<Session> {
        self.by_supervisor.remove(supervisor)
    }

    pub fn get(&self, supervisor: &PrincipalId) -> Option<&Session> {
        self.by_supervisor.get(supervisor)
    }

    /// Records that `supervisor` now holds `id`. `false` if they have no session.
    pub fn hold(&mut self, supervisor: &PrincipalId, id: &RequestId) -> bool {
        match self.by_supervisor.get_mut(supervisor) {
            Some(s) => {
                s.tasks.insert(id.clone());
                true
            }
            None => false,
        }
    }

    /// Records that `supervisor` no longer holds `id`. `true` if they had a session, so a
    /// task slot opened.
    pub fn release(&mut self, supervisor: &PrincipalId, id: &RequestId) -> bool {
        match self.by_supervisor.get_mut(supervisor) {
            Some(s) => {
                s.tasks.remove(id);
                true
            }
            None => false,
        }
    }

    /// Pauses or resumes a supervisor; `false` if they have no session.
    pub fn pause(&mut self, supervisor: &PrincipalId, paused: bool) -> bool {
        match self.by_supervisor.get_mut(supervisor) {
            Some(s) => {
                s.paused = paused;
                true
            }
            None => false,
        }
    }

    /// Supervisors who may take another offer: not paused, below `tasks_max`. Sorted by id,
    /// so that a seeded RNG replays the same choices whatever the map's order.
    pub fn free(&self, tasks_max: usize) -> Vec<Free<'_>> {
        let mut free: Vec<Free<'_>> = self
            .by_supervisor
            .values()
            .filter(|s| s.tasks.len() < tasks_max && !s.paused)
            .map(|s| Free {
                principal: &s.principal,
                tasks: s.tasks.len(),
            })
            .collect();
        free.sort_by(|a, b| a.principal.id.cmp(&b.principal.id));
        free
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.by_supervisor.values()
    }

    /// (attending, paused), for the gauges.
    pub fn counts(&self) -> (usize, usize) {
        let paused = self.by_supervisor.values().filter(|s| s.paused).count();
        (self.by_supervisor.len(), paused)
    }

    /// Ends every session: dropping the senders ends every stream.
    pub fn clear(&mut self) {
        self.by_supervisor.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BranchId, Role};

    fn sup(id: &str) -> Principal {
        Principal {
            id: PrincipalId::new(id),
            name: id.into(),
            role: Role::Supervisor,
            branch: BranchId::new("B1"),
            level: 3,
            ceilings: Default::default(),
            codes: Default::default(),
        }
    }

    #[test]
    fn a_new_attend_replaces_the_old_session_and_only_the_current_one_closes() {
        let mut s = Sessions::default();
        let (first, _rx1, replaced) = s.open(sup("a"), 4);
        assert!(replaced.is_none());
        assert!(s.hold(&PrincipalId::new("a"), &RequestId::from_random([1; 16])));
        let (second, _rx2, replaced) = s.open(sup("a"), 4);
        let old = replaced.expect("the first session is replaced");
        assert_eq!(old.id, first);
        assert_eq!(old.tasks.len(), 1);
        assert!(s.close(&PrincipalId::new("a"), first).is_none());
        assert!(s.close(&PrincipalId::new("a"), second).is_some());
        assert_eq!(s.counts(), (0, 0));
    }

    #[test]
    fn free_leaves_out_the_paused_and_the_full_in_id_order() {
        let mut s = Sessions::default();
        let _a = s.open(sup("c"), 4);
        let _b = s.open(sup("a"), 4);
        let _c = s.open(sup("b"), 4);
        s.pause(&PrincipalId::new("b"), true);
        s.hold(&PrincipalId::new("c"), &RequestId::from_random([1; 16]));
        let ids = |f: Vec<Free<'_>>| {
            f.iter()
                .map(|f| f.principal.id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(s.free(2)), vec!["a", "c"]);
        assert_eq!(ids(s.free(1)), vec!["a"]);
        assert_eq!(s.counts(), (3, 1));
    }
}
