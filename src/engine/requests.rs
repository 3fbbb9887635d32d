//! The engine's request table: every request not yet final (plus final ones until the
//! projection holds their last record), the queue in offer order, the idempotency keys and the
//! undecided count per teller. It keeps these consistent with each other as requests move;
//! the events that move them are applied by the engine through `domain::fold`.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::evicted::{Entry, Key};
use crate::domain::{PrincipalId, Request, RequestId, State, TellerSerial};

/// Queue order: higher priority first, then older (by the index of the Submitted record).
pub(crate) type QueueKey = (std::cmp::Reverse<u8>, u64, RequestId);

pub(crate) fn queue_key(r: &Request) -> QueueKey {
    (
        std::cmp::Reverse(r.requirements.priority),
        r.submitted_index,
        r.id.clone(),
    )
}

#[derive(Default)]
pub(crate) struct Requests {
    /// Boxed: the table then holds 32 bytes a slot rather than a whole request, and growing
    /// it moves pointers, not requests.
    by_id: HashMap<RequestId, Box<Request>>,
    /// QUEUED requests in offer order.
    queue: BTreeSet<QueueKey>,
    /// (teller, serial) -> (request, fingerprint) for requests held here.
    idem: HashMap<Key, Entry>,
    /// Undecided requests per teller.
    pending_by_teller: HashMap<PrincipalId, u32>,
    /// Final requests to drop once the projection holds `records needed` records.
    evict: VecDeque<(u64, RequestId)>,
}

impl Requests {
    pub fn get(&self, id: &RequestId) -> Option<&Request> {
        self.by_id.get(id).map(|r| &**r)
    }

    pub fn get_mut(&mut self, id: &RequestId) -> Option<&mut Request> {
        self.by_id.get_mut(id).map(|r| &mut **r)
    }

    pub fn contains(&self, id: &RequestId) -> bool {
        self.by_id.contains_key(id)
    }

    /// The request if it is `teller`'s.
    pub fn owned(&self, teller: &PrincipalId, id: &RequestId) -> Option<&Request> {
        self.get(id).filter(|r| &r.teller == teller)
    }

    /// The request an earlier Submit of (teller, serial) created, with its fingerprint.
    pub fn submitted_as(
        &self,
        teller: &PrincipalId,
        serial: &TellerSerial,
    ) -> Option<&(RequestId, [u8; 32])> {
        self.idem.get(&(teller.clone(), serial.clone()))
    }

    /// Requests held that are not final: what the queue length limit counts.
    pub fn undecided(&self) -> usize {
        self.by_id.len() - self.evict.len().min(self.by_id.len())
    }

    /// Undecided requests of one teller.
    pub fn pending(&self, teller: &PrincipalId) -> u32 {
        self.pending_by_teller.get(teller).copied().unwrap_or(0)
    }

    /// Queued requests in offer order.
    pub fn queued(&self) -> impl Iterator<Item = &Request> {
        self.queue.iter().filter_map(|(_, _, id)| self.get(id))
    }

    /// Those of `keys` still queued, in offer order.
    pub fn queued_among<'a>(
        &'a self,
        keys: &'a BTreeSet<QueueKey>,
    ) -> impl Iterator<Item = &'a Request> {
        keys.iter()
            .filter(|k| self.queue.contains(k))
            .filter_map(|(_, _, id)| self.get(id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Request> {
        self.by_id.values().map(|r| &**r)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// (request, supervisor, epoch) of every open offer.
    pub fn offered(&self) -> Vec<(RequestId, PrincipalId, u64)> {
        self.by_id
            .values()
            .filter(|r| r.state == State::Offered)
            .filter_map(|r| Some((r.id.clone(), r.assignee.clone()?, r.epoch)))
            .collect()
    }

    /// Requests in review by `supervisor`, oldest review first.
    pub fn in_review_by(&self, supervisor: &PrincipalId) -> Vec<&Request> {
        let mut held: Vec<&Request> = self
            .iter()
            .filter(|r| r.state == State::InReview && r.assignee.as_ref() == Some(supervisor))
            .collect();
        held.sort_by_key(|r| (r.accepted_at, r.submitted_index));
        held
    }

    /// Takes in a request just opened, or an undecided one loaded at start. One final at
    /// once (a registered fallback) is held only until the projection has it, as any other
    /// final request: a retry meanwhile finds its serial here.
    pub fn adopt(&mut self, r: Request, fingerprint: [u8; 32]) {
        self.idem.insert(
            (r.teller.clone(), r.submission.serial.clone()),
            (r.id.clone(), fingerprint),
        );
        if r.state.is_final() {
            self.evict.push_back((r.version + 1, r.id.clone()));
        } else {
            *self.pending_by_teller.entry(r.teller.clone()).or_default() += 1;
        }
        if r.state == State::Queued {
            self.queue.insert(queue_key(&r));
        }
        self.by_id.insert(r.id.clone(), Box::new(r));
    }

    /// Keeps the queue and the counts in step after the record at `index` moved request `id`
    /// from state `was` (`None`: it was just opened, and `open` queued it).
    pub fn moved(&mut self, id: &RequestId, was: Option<State>, index: u64) {
        let Some(r) = self.by_id.get(id) else {
            return;
        };
        let (state, key) = (r.state, queue_key(r));
        let Some(was) = was else {
            return;
        };
        if was == State::Queued && state != State::Queued {
            self.queue.remove(&key);
        }
        if state == State::Queued && was != State::Queued {
            self.queue.insert(key);
        }
        if state.is_final() && !was.is_final() {
            if let Some(n) = self.pending_by_teller.get_mut(&r.teller) {
                *n = n.saturating_sub(1);
            }
            self.evict.push_back((index + 1, id.clone()));
        } else if state.is_final() {
            // A review record on a final request: held until the projection has it too.
            self.evict.push_back((index + 1, id.clone()));
        }
    }

    /// Drops the final requests whose last record the projection now holds (`applied`
    /// records): from then on they are read from there. Returns their idempotency keys.
    pub fn evict(&mut self, applied: u64) -> Vec<(Key, Entry)> {
        let mut gone = Vec::new();
        while let Some((need, _)) = self.evict.front()
            && *need <= applied
        {
            let Some((_, id)) = self.evict.pop_front() else {
                break;
            };
            if let Some(r) = self.by_id.get(&id)
                && r.state.is_final()
                && r.version < applied
                && let Some(r) = self.by_id.remove(&id)
            {
                let key = (r.teller, r.submission.serial);
                if let Some(entry) = self.idem.remove(&key) {
                    gone.push((key, entry));
                }
            }
        }
        gone
    }

    pub fn clear(&mut self) {
        self.by_id.clear();
        self.queue.clear();
        self.idem.clear();
        self.pending_by_teller.clear();
        self.evict.clear();
    }
}
