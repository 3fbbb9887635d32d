//! What the authorization centre's duty manager watches: queue depth by level and priority,
//! the oldest wait, who is online, paused or busy, and each supervisor's counts for the day.
//! Counts are kept by the engine as records are applied, and rebuilt at start from the
//! day's records, so they are exact.

use std::collections::{BTreeMap, HashMap};

use crate::domain::{Event, PrincipalId, Record, Timestamp};

/// One supervisor's counts for a day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SupervisorDay {
    pub offers: u32,
    pub accepts: u32,
    pub declines: u32,
    pub timeouts: u32,
    pub approvals: u32,
    pub rejections: u32,
    pub returns: u32,
}

/// Counts per supervisor for the current (UTC) day.
#[derive(Debug, Default)]
pub struct DayCounts {
    /// Days since 1970-01-01 (UTC) of the counts held.
    pub day: i64,
    pub per: HashMap<PrincipalId, SupervisorDay>,
}

pub const DAY_MS: i64 = 86_400_000;

impl DayCounts {
    /// Counts one record; a record of a new day starts the counts afresh.
    pub fn count(&mut self, rec: &Record, at: Timestamp) {
        let day = at.0.div_euclid(DAY_MS);
        if day > self.day {
            self.day = day;
            self.per.clear();
        } else if day < self.day {
            return;
        }
        let (who, f): (&PrincipalId, fn(&mut SupervisorDay)) = match &rec.event {
            Event::Offered { supervisor, .. } => (supervisor, |d| d.offers += 1),
            Event::Accepted { supervisor, .. } => (supervisor, |d| d.accepts += 1),
            Event::OfferDeclined { supervisor, .. } => (supervisor, |d| d.declines += 1),
            Event::OfferTimedOut { supervisor, .. } => (supervisor, |d| d.timeouts += 1),
            Event::Decided {
                supervisor,
                verdict,
                ..
            } => (
                supervisor,
                match verdict.decision {
                    crate::domain::Decision::Approve => |d: &mut SupervisorDay| d.approvals += 1,
                    crate::domain::Decision::Reject => |d: &mut SupervisorDay| d.rejections += 1,
                    crate::domain::Decision::Return => |d: &mut SupervisorDay| d.returns += 1,
                },
            ),
            _ => return,
        };
        f(self.per.entry(who.clone()).or_default());
    }
}

/// A supervisor as the duty manager sees them.
#[derive(Clone, Debug)]
pub struct SupervisorStatus {
    pub id: PrincipalId,
    pub name: String,
    pub branch: String,
    pub level: u8,
    pub online: bool,
    pub paused: bool,
    /// Requests offered to or in review by them now.
    pub tasks: u32,
    pub today: SupervisorDay,
}

/// A snapshot of the queue, taken by the engine between two commands, so it is exact.
#[derive(Clone, Debug)]
pub struct QueueStatus {
    pub at: Timestamp,
    /// QUEUED requests by (level needed, priority).
    pub depth: BTreeMap<(u8, u8), u64>,
    pub queued: u64,
    pub offered: u64,
    pub in_review: u64,
    pub returned: u64,
    /// How long the oldest QUEUED request has waited since submission.
    pub oldest_waiting_ms: Option<i64>,
    pub supervisors: Vec<SupervisorStatus>,
    /// QUEUED requests no supervisor in the directory may take, oldest first, at most
    /// `UNSERVABLE_LISTED`; `unservable` counts them all.
    pub unservable_ids: Vec<crate::domain::RequestId>,
    pub unservable: u64,
}

/// Most unservable request ids one snapshot lists.
pub const UNSERVABLE_LISTED: usize = 100;

/// The duty manager's snapshot of the engine's state, taken between two commands.
pub(crate) fn snapshot(core: &super::core::Core) -> QueueStatus {
    use crate::domain::State;
    let now = core.now();
    let mut st = QueueStatus {
        at: now,
        depth: Default::default(),
        queued: 0,
        offered: 0,
        in_review: 0,
        returned: 0,
        oldest_waiting_ms: None,
        supervisors: Vec::new(),
        unservable_ids: Vec::new(),
        unservable: 0,
    };
    let mut unservable: Vec<(u64, crate::domain::RequestId)> = Vec::new();
    for r in core.requests.iter() {
        match r.state {
            State::Queued => {
                st.queued += 1;
                *st.depth
                    .entry((r.level, r.requirements.priority))
                    .or_default() += 1;
                let waited = now.0 - r.submitted_at.0;
                st.oldest_waiting_ms = Some(st.oldest_waiting_ms.map_or(waited, |w| w.max(waited)));
                if !core.servable(r) {
                    unservable.push((r.submitted_index, r.id.clone()));
                }
            }
            State::Offered => st.offered += 1,
            State::InReview => st.in_review += 1,
            State::Returned => st.returned += 1,
            _ => {}
        }
    }
    unservable.sort();
    st.unservable = unservable.len() as u64;
    st.unservable_ids = unservable
        .into_iter()
        .take(UNSERVABLE_LISTED)
        .map(|(_, id)| id)
        .collect();
    // Counts roll over when a record of a new day arrives; before that, after midnight,
    // today's counts are zero.
    let current = now.0.div_euclid(DAY_MS) == core.day.day;
    let today = |id: &PrincipalId| {
        current
            .then(|| core.day.per.get(id).cloned())
            .flatten()
            .unwrap_or_default()
    };
    for s in core.sessions.iter() {
        st.supervisors.push(SupervisorStatus {
            id: s.principal.id.clone(),
            name: s.principal.name.clone(),
            branch: s.principal.branch.to_string(),
            level: s.principal.level,
            online: true,
            paused: s.paused,
            tasks: s.tasks.len() as u32,
            today: today(&s.principal.id),
        });
    }
    for (id, d) in core.day.per.iter().filter(|_| current) {
        if core.sessions.get(id).is_none() {
            st.supervisors.push(SupervisorStatus {
                id: id.clone(),
                name: String::new(),
                branch: String::new(),
                level: 0,
                online: false,
                paused: false,
                tasks: 0,
                today: d.clone(),
            });
        }
    }
    st.supervisors.sort_by(|a, b| a.id.cmp(&b.id));
    st
}
