//! The idempotency keys of requests that recently left memory, by eviction round. They let a
//! Submit look its serial up in the projection before it reaches the engine, so that the single
//! writer never waits on that read (on PostgreSQL a round trip per submission, which had the
//! engine's thread waiting most of the time under load).
//!
//! Only a remote projection (`Projection::remote`) is read that way: a local one is read by the
//! engine, cheaper than the hand-off.
//!
//! A request is always in memory or in the projection: it leaves memory (`Requests::evict`)
//! only once the projection holds it, and the round moves on only after that. The handle reads
//! the round, then the projection; the engine then finds the key in memory, or in what its
//! caller read, or among the keys evicted after that round, here. Only when the rounds since are
//! no longer all kept does the engine read the projection itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::{PrincipalId, RequestId, TellerSerial};

/// A submission's key: the teller and their serial.
pub(crate) type Key = (PrincipalId, TellerSerial);
/// What a key names: the request and its submission's fingerprint.
pub(crate) type Entry = (RequestId, [u8; 32]);

/// Eviction rounds kept: a Submit whose projection read is older than this many rounds makes
/// the engine read the projection itself. Rounds come at most once per projection batch (every
/// engine tick under load), so this covers seconds, where a Submit takes milliseconds.
const ROUNDS_KEPT: usize = 64;

pub(crate) struct Evicted {
    /// The current round, shared with the handles, which read it before the projection.
    shared: Arc<AtomicU64>,
    /// The same, as the engine knows it.
    round: u64,
    /// The keys evicted in each of the last rounds, oldest first.
    rounds: VecDeque<(u64, HashMap<Key, Entry>)>,
}

/// Whether a key left memory after a given round.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Since {
    Evicted(Entry),
    NotEvicted,
    /// The rounds since are not all kept: read the projection.
    Unknown,
}

impl Evicted {
    pub fn new() -> Evicted {
        Evicted {
            shared: Arc::new(AtomicU64::new(0)),
            round: 0,
            rounds: VecDeque::new(),
        }
    }

    /// The round counter for handles.
    pub fn shared(&self) -> Arc<AtomicU64> {
        self.shared.clone()
    }

    /// Records the keys of requests that just left memory, the projection holding them: a new
    /// round.
    pub fn record(&mut self, keys: Vec<(Key, Entry)>) {
        if keys.is_empty() {
            return;
        }
        self.round += 1;
        self.rounds
            .push_back((self.round, keys.into_iter().collect()));
        while self.rounds.len() > ROUNDS_KEPT {
            self.rounds.pop_front();
        }
        // Release: a handle that reads this round also sees the projection that holds them.
        self.shared.store(self.round, Ordering::Release);
    }

    /// The request table was rebuilt (after a ledger failure): a lookup from before reads the
    /// projection again.
    pub fn forget(&mut self) {
        self.rounds.clear();
        self.round += 1;
        self.shared.store(self.round, Ordering::Release);
    }

    /// Whether `key` left memory after round `after`.
    pub fn since(&self, after: u64, key: &Key) -> Since {
        if after >= self.round {
            return Since::NotEvicted;
        }
        match self.rounds.front() {
            Some((oldest, _)) if *oldest <= after + 1 => {}
            _ => return Since::Unknown,
        }
        self.rounds
            .iter()
            .filter(|(r, _)| *r > after)
            .find_map(|(_, keys)| keys.get(key).cloned())
            .map_or(Since::NotEvicted, Since::Evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(serial: &str) -> Key {
        (PrincipalId::new("teller-01"), TellerSerial::new(serial))
    }

    fn entry(n: u8) -> Entry {
        (RequestId::from_random([n; 16]), [n; 32])
    }

    #[test]
    fn a_key_evicted_after_the_callers_round_is_found_and_older_ones_are_not_looked_for() {
        let mut e = Evicted::new();
        let shared = e.shared();
        assert_eq!(e.since(0, &key("A")), Since::NotEvicted);
        e.record(vec![(key("A"), entry(1))]);
        assert_eq!(shared.load(Ordering::Acquire), 1);
        // A caller that read round 0 (before A left) finds A here.
        assert_eq!(e.since(0, &key("A")), Since::Evicted(entry(1)));
        // One that read round 1 found A in the projection already.
        assert_eq!(e.since(1, &key("A")), Since::NotEvicted);
        e.record(Vec::new());
        assert_eq!(shared.load(Ordering::Acquire), 1, "no keys, no round");
        e.record(vec![(key("B"), entry(2))]);
        assert_eq!(e.since(0, &key("B")), Since::Evicted(entry(2)));
        assert_eq!(e.since(1, &key("B")), Since::Evicted(entry(2)));
        assert_eq!(e.since(1, &key("C")), Since::NotEvicted);
    }

    #[test]
    fn rounds_no_longer_kept_or_forgotten_send_the_engine_to_the_projection() {
        let mut e = Evicted::new();
        for n in 0..(ROUNDS_KEPT as u8 + 2) {
            e.record(vec![(key(&format!("S{n}")), entry(n))]);
        }
        assert_eq!(e.since(0, &key("S0")), Since::Unknown);
        assert_eq!(e.since(1, &key("S1")), Since::Unknown);
        let last = ROUNDS_KEPT as u8 + 1;
        assert_eq!(
            e.since(u64::from(last) - 1, &key(&format!("S{last}"))),
            Since::Evicted(entry(last))
        );
        // Rounds 1 to last + 1 were recorded; forgetting is round last + 2.
        e.forget();
        assert_eq!(e.since(u64::from(last) + 2, &key("S0")), Since::NotEvicted);
        assert_eq!(e.since(u64::from(last) + 1, &key("S0")), Since::Unknown);
    }
}
