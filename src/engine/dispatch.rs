//! Dispatch (DESIGN.md "Dispatch", 背对背): which free supervisor each queued request is
//! offered to, and making those offers. The choice, `pick`, is a pure function of the queue,
//! the free supervisors and the RNG, so a test can seed it and a simulation can replay it;
//! `Core::dispatch` records each offer and sends it once durable.

use rand::Rng;

use crate::domain::{Actor, Event, Principal, PrincipalId, Request, RequestId};

use super::SupervisorEvent;

use super::sessions::Free;

/// One offer to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pick {
    pub request: RequestId,
    pub supervisor: PrincipalId,
    /// How many supervisors were eligible: recorded, so an auditor can tell a real draw from
    /// a pool of one.
    pub pool_size: u32,
}

/// Whether supervisor `s` may be offered `r` now: their own authority covers it (level,
/// ceiling, codes), they are not the teller, not of the teller's branch when the policy asks
/// independence, have not declined it, and have not already approved it.
pub(crate) fn eligible(r: &Request, s: &Principal) -> bool {
    s.id != r.teller
        && (!r.requirements.independent || s.branch != r.branch)
        && !r.declined_by.contains(&s.id)
        && !r.approvals.iter().any(|a| a.supervisor == s.id)
        && s.may_decide(r.level, &r.submission.transaction)
}

/// Offers `queue` (in queue order) to `free` supervisors, each request to one drawn uniformly
/// at random among those eligible for it, counting the offers made here against
/// `tasks_max`. An offer that timed out goes to someone else when anyone else can take it; a
/// lone eligible supervisor who was away still gets it back.
pub(crate) fn pick<'a>(
    queue: impl IntoIterator<Item = &'a Request>,
    mut free: Vec<Free<'_>>,
    tasks_max: usize,
    rng: &mut dyn rand::RngCore,
) -> Vec<Pick> {
    let mut picks = Vec::new();
    for r in queue {
        if free.is_empty() {
            break;
        }
        let eligible: Vec<usize> = (0..free.len())
            .filter(|&i| eligible(r, free[i].principal))
            .collect();
        if eligible.is_empty() {
            continue;
        }
        let fresh: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|&i| !r.timed_out.contains(&free[i].principal.id))
            .collect();
        let pool = if fresh.is_empty() { eligible } else { fresh };
        let chosen = pool[rng.random_range(0..pool.len())];
        picks.push(Pick {
            request: r.id.clone(),
            supervisor: free[chosen].principal.id.clone(),
            pool_size: pool.len() as u32,
        });
        free[chosen].tasks += 1;
        if free[chosen].tasks >= tasks_max {
            free.remove(chosen);
        }
    }
    picks
}

impl super::core::Core {
    /// Offers queued requests, oldest first, each to a supervisor drawn uniformly at random
    /// from those eligible for it (`dispatch::pick`), and records the offers.
    pub(crate) fn dispatch(&mut self) {
        let all = std::mem::take(&mut self.dispatch_all);
        let new = std::mem::take(&mut self.dispatch_new);
        if (!all && new.is_empty()) || self.availability.failed() || self.stopping.is_some() {
            return;
        }
        let free = self.sessions.free(self.config.supervisor_tasks_max);
        if free.is_empty() {
            return;
        }
        let picks = if all {
            super::dispatch::pick(
                self.requests.queued(),
                free,
                self.config.supervisor_tasks_max,
                &mut *self.rng,
            )
        } else {
            super::dispatch::pick(
                self.requests.queued_among(&new),
                free,
                self.config.supervisor_tasks_max,
                &mut *self.rng,
            )
        };
        let now = self.now();
        for pick in picks {
            let Some(r) = self.requests.get(&pick.request) else {
                continue;
            };
            let epoch = r.epoch + 1;
            let accept_by = now.plus_ms(r.requirements.offer_timeout_ms);
            self.record(
                &pick.request,
                Actor::System,
                Event::Offered {
                    supervisor: pick.supervisor.clone(),
                    epoch,
                    pool_size: pick.pool_size,
                    accept_by,
                },
            );
            self.sessions.hold(&pick.supervisor, &pick.request);
            let Some(view) = self.requests.get(&pick.request).cloned() else {
                continue;
            };
            self.send_supervisor(
                &pick.supervisor,
                SupervisorEvent::Offer {
                    request: view,
                    epoch,
                    accept_by,
                    pool_size: pick.pool_size,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::SeedableRng;

    use super::*;
    use crate::domain::*;

    fn sup(id: &str, branch: &str, level: u8) -> Principal {
        Principal {
            id: PrincipalId::new(id),
            name: id.into(),
            role: Role::Supervisor,
            branch: BranchId::new(branch),
            level,
            ceilings: BTreeMap::from([("CNY".to_string(), 1_000_000)]),
            codes: Default::default(),
        }
    }

    fn request(n: u8, level: u8) -> Request {
        crate::domain::testing::request(&RequestId::from_random([n; 16]), level)
    }

    fn free(ps: &[Principal]) -> Vec<Free<'_>> {
        ps.iter()
            .map(|p| Free {
                principal: p,
                tasks: 0,
            })
            .collect()
    }

    #[test]
    fn only_eligible_supervisors_are_picked() {
        let sups = [
            sup("own-branch", "B1", 9),
            sup("low", "B2", 1),
            sup("ok", "B2", 5),
        ];
        let queue = [request(1, 3)];
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        for _ in 0..20 {
            let picks = pick(&queue, free(&sups), 4, &mut rng);
            assert_eq!(picks.len(), 1);
            assert_eq!(picks[0].supervisor.as_str(), "ok");
            assert_eq!(picks[0].pool_size, 1);
        }
    }

    #[test]
    fn the_draw_is_uniform_and_replays_from_its_seed() {
        let sups = [sup("a", "B2", 5), sup("b", "B3", 5), sup("c", "B4", 5)];
        let queue = [request(1, 1)];
        let draw = |seed| {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let mut counts = BTreeMap::new();
            for _ in 0..3000 {
                let p = pick(&queue, free(&sups), 4, &mut rng);
                *counts.entry(p[0].supervisor.to_string()).or_insert(0) += 1;
            }
            counts
        };
        let counts = draw(7);
        assert_eq!(counts, draw(7), "a seed replays the same choices");
        for (who, n) in &counts {
            // 1000 expected each; 850..1150 is more than 5 standard deviations wide.
            assert!((850..1150).contains(n), "{who} drawn {n} times of 3000");
        }
    }

    #[test]
    fn a_full_supervisor_gets_no_more_and_timed_out_ones_are_avoided() {
        let sups = [sup("a", "B2", 5), sup("b", "B3", 5)];
        let mut r1 = request(1, 1);
        r1.timed_out.insert(PrincipalId::new("a"));
        let queue = [r1, request(2, 1), request(3, 1)];
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let picks = pick(&queue, free(&sups), 1, &mut rng);
        assert_eq!(picks.len(), 2, "two supervisors with one slot each");
        assert_eq!(picks[0].supervisor.as_str(), "b", "a timed out on r1");
        assert_eq!(picks[1].supervisor.as_str(), "a");
        // A lone eligible supervisor who timed out still gets it back.
        let mut lone = request(4, 1);
        lone.timed_out.insert(PrincipalId::new("a"));
        let picks = pick([&lone], free(&sups[..1]), 1, &mut rng);
        assert_eq!(picks[0].supervisor.as_str(), "a");
    }
}
