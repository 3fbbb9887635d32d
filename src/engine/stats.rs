//! Statistics for auditors, computed from the requests submitted in a time range.
//!
//! This module is pure: it takes rows already loaded by the caller and returns plain
//! numbers. It does no I/O and never reads the clock, so the same rows always give the
//! same report. That matters when an auditor re-runs a report and compares it with an
//! earlier one.
//!
//! It provides:
//! - [`compute`]: counts by outcome, branch, code and supervisor, wait and decision time
//!   percentiles, per-branch rejection rates, and the "unusual pairs" collusion signal
//!   (see [`compute`] for the estimator and its limits).
//! - [`chi_square`] and [`chi_square_critical_999`]: what the engine's test needs to check
//!   that supervisors are drawn uniformly.

use std::collections::BTreeMap;

/// One request submitted in the auditor's time range, flattened for statistics.
#[derive(Debug, Clone)]
pub struct Row {
    /// Teller who submitted the request.
    pub teller: String,
    /// Branch the request was submitted from.
    pub branch: String,
    /// Transaction code (kind of operation).
    pub code: String,
    /// Final state name: "approved" | "rejected" | "cancelled" | "expired", or a non-final
    /// one ("queued", "offered", "in_review", "returned").
    pub state: String,
    /// Supervisors who made decisions on it, in order (returns and first approvals of dual
    /// control included).
    pub deciders: Vec<String>,
    /// The final decider (the one whose decision made it approved/rejected), if any.
    pub final_decider: Option<String>,
    /// When the teller submitted it, in milliseconds since the Unix epoch.
    pub submitted_at_ms: i64,
    /// First time a supervisor accepted it.
    pub first_accepted_at_ms: Option<i64>,
    /// When it reached its final state.
    pub finished_at_ms: Option<i64>,
    /// A registered fallback's on-site authorization (state "fallback").
    pub on_site: Option<OnSiteRow>,
    /// Its after-the-fact review: "pending", "confirmed" or "flagged"; `None` when not drawn.
    pub review: Option<String>,
    /// A fallback's on-site supervisor, to whom a flag on it is counted.
    pub on_site_supervisor: Option<String>,
    /// How many times it was returned to the teller.
    pub returns: u32,
}

/// After-the-fact reviews over the rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewCounts {
    pub drawn: u64,
    pub reviewed: u64,
    pub flagged: u64,
    pub flagged_by_branch: BTreeMap<String, u64>,
    pub flagged_by_teller: BTreeMap<String, u64>,
    /// By the final approver, or a fallback's on-site supervisor.
    pub flagged_by_supervisor: BTreeMap<String, u64>,
}

/// When a fallback was authorized on site, and whether the ledger shows the centre serving
/// then (see [`Serving`]).
#[derive(Debug, Clone, Copy)]
pub struct OnSiteRow {
    pub at_ms: i64,
    pub centre_serving: bool,
}

/// One branch's registered fallbacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BranchFallbacks {
    pub registered: u64,
    /// Authorized on site while the centre was serving.
    pub while_serving: u64,
}

/// What an engine record says about serving, in ledger order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// An engine started serving at `at_ms`; `previous_at_ms` is the time of the record just
    /// before it, if any: where a crashed engine (no `Stopped`) last showed it was serving.
    Started {
        at_ms: i64,
        previous_at_ms: Option<i64>,
    },
    Stopped {
        at_ms: i64,
    },
    /// Writes were refused (NOT_SERVING) from `since_ms` until `at_ms`.
    Resumed {
        since_ms: i64,
        at_ms: i64,
    },
}

/// The times the ledger shows the centre serving, as half-open `[from, until)` spans in time
/// order: from each start to the next clean stop; after a crash, to the last record the crashed
/// engine wrote (a crash leaves no record of its time, so the span may end a little early);
/// for the engine serving now, to `now_ms`; less every span a writes_resumed record says the
/// engine could not write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Serving(Vec<(i64, i64)>);

impl Serving {
    pub fn from_marks(marks: &[Mark], now_ms: i64) -> Serving {
        let mut spans = Vec::new();
        let mut outages = Vec::new();
        let mut open: Option<i64> = None;
        for mark in marks {
            match *mark {
                Mark::Started {
                    at_ms,
                    previous_at_ms,
                } => {
                    if let Some(from) = open {
                        spans.push((from, previous_at_ms.unwrap_or(at_ms).max(from)));
                    }
                    open = Some(at_ms);
                }
                Mark::Stopped { at_ms } => {
                    if let Some(from) = open.take() {
                        spans.push((from, at_ms.max(from)));
                    }
                }
                Mark::Resumed { since_ms, at_ms } => outages.push((since_ms, at_ms)),
            }
        }
        if let Some(from) = open {
            spans.push((from, now_ms.max(from)));
        }
        for (out_from, out_until) in outages {
            spans = spans
                .into_iter()
                .flat_map(|(from, until)| {
                    [(from, until.min(out_from)), (from.max(out_until), until)]
                })
                .filter(|(from, until)| from < until)
                .collect();
        }
        spans.sort();
        Serving(spans)
    }

    /// Whether the centre was serving at `t_ms`.
    pub fn at(&self, t_ms: i64) -> bool {
        self.0
            .iter()
            .any(|&(from, until)| from <= t_ms && t_ms < until)
    }

    pub fn spans(&self) -> &[(i64, i64)] {
        &self.0
    }
}

/// The auditor's report for a set of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Number of rows (requests) the report covers.
    pub requests: u64,
    /// Requests by state name, final and non-final alike, so the counts add up to `requests`.
    pub by_outcome: BTreeMap<String, u64>,
    /// Requests by submitting branch.
    pub by_branch: BTreeMap<String, u64>,
    /// Requests by transaction code.
    pub by_code: BTreeMap<String, u64>,
    /// Decisions made by each supervisor: every entry of `deciders` counts, so a return
    /// followed by an approval by the same supervisor counts twice.
    pub by_supervisor: BTreeMap<String, u64>,
    /// Submitted -> first accepted, over rows that have a first acceptance.
    pub wait_ms: Percentiles,
    /// First accepted -> finished, over approved/rejected rows that have both timestamps.
    pub decision_ms: Percentiles,
    /// Per branch: rejected / (approved + rejected). Every branch seen in the rows appears,
    /// including branches with no approved or rejected request (rate 0.0, see [`BranchRate`]).
    pub branch_rejection_rate: BTreeMap<String, BranchRate>,
    /// (teller, supervisor) pairs with more decisions than random assignment explains,
    /// sorted by `z` descending (ties by teller, then supervisor, so output is stable).
    pub unusual_pairs: Vec<Pair>,
    /// Registered fallbacks per branch, for every branch that has one.
    pub fallbacks: BTreeMap<String, BranchFallbacks>,
    pub reviews: ReviewCounts,
}

/// Nearest-rank percentiles of a list of durations in milliseconds.
///
/// Nearest-rank picks an element that actually occurred (no interpolation), so every figure
/// can be traced back to a real request. Percentile `p` of `n` sorted values is the value at
/// 1-based rank `ceil(p / 100 * n)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Number of values the percentiles are computed over.
    pub count: u64,
    /// Median (nearest-rank); `None` when `count` is 0.
    pub p50: Option<i64>,
    /// 90th percentile (nearest-rank); `None` when `count` is 0.
    pub p90: Option<i64>,
    /// 99th percentile (nearest-rank); `None` when `count` is 0.
    pub p99: Option<i64>,
    /// Largest value; `None` when `count` is 0.
    pub max: Option<i64>,
}

/// Approved and rejected counts of one branch and the resulting rejection rate, and how
/// many of its requests were returned.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchRate {
    /// Requests from the branch that ended approved.
    pub approved: u64,
    /// Requests from the branch that ended rejected.
    pub rejected: u64,
    /// `rejected / (approved + rejected)`, or 0.0 when both are 0. The rate is undefined in
    /// that case; 0.0 keeps the report free of NaN, and the zero counts next to it show that
    /// there was nothing to measure.
    pub rate: f64,
    /// Requests from the branch returned to the teller at least once.
    pub returned: u64,
    /// `returned / requests from the branch` (every request in the range counts, final or
    /// not); 0.0 when there are none.
    pub return_rate: f64,
}

/// A (teller, supervisor) pair whose decision count stands out; see [`compute`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The teller whose requests were decided.
    pub teller: String,
    /// The supervisor who decided them.
    pub supervisor: String,
    /// Decisions the supervisor made on this teller's requests.
    pub observed: u64,
    /// Decisions expected under random assignment (see [`compute`]); always > 0.
    pub expected: f64,
    /// `(observed - expected) / sqrt(expected)`.
    pub z: f64,
}

/// Computes the auditor's statistics over `rows`.
///
/// `min_observed` and `z_threshold` select which pairs go into
/// [`Stats::unusual_pairs`]; every other field ignores them.
///
/// # Unusual pairs: the estimator
///
/// The engine gives each request to a supervisor drawn uniformly from the eligible ones, of
/// any branch but the teller's own. If that holds, a supervisor's share of one teller's
/// decisions should match that supervisor's share of everyone else's. The engine does not
/// record who was in the candidate pool for each offer, so the pool is estimated from the
/// data: for a teller `t` of branch `b`, the reference is every decision (every `deciders`
/// entry) on a request of any other teller in the range, by a supervisor who may decide
/// branch `b`'s requests (not of branch `b`, when [`compute_with`] knows the supervisors'
/// branches). Leaving `t`'s own decisions out keeps a teller who does most of the work from
/// setting their own expectation, and a teller alone in a branch is compared like any other.
/// The reference is bank-wide, not the teller's branch: in a branch of two tellers each
/// would be the other's only reference, and an honest colleague of a colluding teller would
/// be flagged for not matching them. A teller who submitted from several branches (after a
/// transfer) gets the sum of the per-branch expectations. With Laplace
/// smoothing over the candidates `C` (the reference's supervisors and `t`'s own, so that a
/// supervisor who decided only `t`'s requests still has an expectation):
///
/// ```text
/// expected(t, s) = Σ_b n_tb × (r_b(s) + 1) / (r_b + |C_b|)
/// z              = (observed(t, s) − expected(t, s)) / sqrt(expected(t, s))
/// ```
///
/// where `n_tb` is the number of decisions on `t`'s requests from branch `b`, `r_b(s)` the
/// reference's decisions by `s` and `r_b` all of the reference's decisions. `z` uses the Poisson
/// approximation (variance = mean). A pair is reported when `observed >= min_observed` and
/// `z >= z_threshold`. Every candidate is a pair, so with `min_observed = 0` pairs with no
/// decision at all can be reported too (they have negative `z`). A teller with no one to
/// compare with (the only one in the range) has no pairs.
///
/// # Limits
///
/// This is a screening signal for an auditor to follow up, not proof of collusion:
/// - The pool is inferred, not recorded. A supervisor who was eligible but never decided on
///   branch `b` (declined every offer, was always busy) is invisible, and one who was never
///   eligible cannot be told apart from one who was never picked.
/// - Availability is assumed constant. A supervisor working only some hours gets a larger
///   share of tellers who submit in those hours and a smaller one of the others, which
///   shows up as a pair even when assignment is perfectly uniform.
/// - The reference is bank-wide. Without the supervisors' branches ([`compute`]) it includes
///   the supervisors of the teller's own branch, who never decide the teller's requests, so
///   every other pair of the teller scores too high: use [`compute_with`]. Branches of very
///   different volumes skew it a little (a supervisor of a busy branch cannot serve that
///   branch, so has fewer decisions in the reference than their share of the pool). Tellers
///   whose work needs a higher level than most (large amounts) draw from a smaller pool than
///   the bank's, so their pairs with high-level supervisors score higher than chance alone
///   would give; compare such pairs with the supervisor's level.
/// - Decisions on one request are not independent: dual control requires a second
///   supervisor different from the first, and a return followed by a decision by the same
///   supervisor counts twice. Supervisors who return often therefore look more attached to
///   the tellers they return to.
/// - The Poisson approximation is poor for small expected counts; `min_observed` keeps a
///   handful of decisions from producing a large `z`.
/// - Many pairs are tested at once (tellers × supervisors), so a few pairs reach `z` ≈ 3 by
///   chance in a large bank; a threshold around 4 keeps false alarms rare.
pub fn compute(rows: &[Row], min_observed: u64, z_threshold: f64) -> Stats {
    compute_with(rows, &BTreeMap::new(), min_observed, z_threshold)
}

/// [`compute`], knowing each supervisor's branch (from the principal directory): a teller's
/// reference then leaves out the supervisors of the teller's own branch, who may not decide
/// its requests. Supervisors it does not list (since removed) are kept.
pub fn compute_with(
    rows: &[Row],
    supervisor_branches: &BTreeMap<String, String>,
    min_observed: u64,
    z_threshold: f64,
) -> Stats {
    let mut by_outcome = BTreeMap::new();
    let mut by_branch = BTreeMap::new();
    let mut by_code = BTreeMap::new();
    let mut by_supervisor = BTreeMap::new();
    let mut waits = Vec::new();
    let mut decisions = Vec::new();
    // (approved, rejected, returned at least once) per branch; turned into rates (over
    // `by_branch`'s counts for returns) once all rows are counted.
    let mut branch_counts: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let mut fallbacks: BTreeMap<String, BranchFallbacks> = BTreeMap::new();
    let mut reviews = ReviewCounts::default();

    for row in rows {
        if let Some(status) = &row.review {
            reviews.drawn += 1;
            if status != "pending" {
                reviews.reviewed += 1;
            }
            if status == "flagged" {
                reviews.flagged += 1;
                *reviews
                    .flagged_by_branch
                    .entry(row.branch.clone())
                    .or_default() += 1;
                *reviews
                    .flagged_by_teller
                    .entry(row.teller.clone())
                    .or_default() += 1;
                if let Some(s) = row
                    .final_decider
                    .as_ref()
                    .or(row.on_site_supervisor.as_ref())
                {
                    *reviews.flagged_by_supervisor.entry(s.clone()).or_default() += 1;
                }
            }
        }
        if let Some(on_site) = row.on_site {
            let f = fallbacks.entry(row.branch.clone()).or_default();
            f.registered += 1;
            f.while_serving += u64::from(on_site.centre_serving);
        }
        *by_outcome.entry(row.state.clone()).or_insert(0) += 1;
        *by_branch.entry(row.branch.clone()).or_insert(0) += 1;
        *by_code.entry(row.code.clone()).or_insert(0) += 1;
        for decider in &row.deciders {
            *by_supervisor.entry(decider.clone()).or_insert(0) += 1;
        }

        // Saturating, so absurd timestamps give an absurd but finite duration instead of an
        // overflow. Negative durations (clock skew) are kept: hiding them would hide a problem
        // the auditor should see.
        if let Some(accepted) = row.first_accepted_at_ms {
            waits.push(accepted.saturating_sub(row.submitted_at_ms));
        }

        let counts = branch_counts
            .entry(row.branch.as_str())
            .or_insert((0, 0, 0));
        counts.2 += u64::from(row.returns > 0);
        let decided = match row.state.as_str() {
            "approved" => {
                counts.0 += 1;
                true
            }
            "rejected" => {
                counts.1 += 1;
                true
            }
            _ => false,
        };
        if decided
            && let (Some(accepted), Some(finished)) = (row.first_accepted_at_ms, row.finished_at_ms)
        {
            decisions.push(finished.saturating_sub(accepted));
        }
    }

    let branch_rejection_rate = branch_counts
        .into_iter()
        .map(|(branch, (approved, rejected, returned))| {
            let all = by_branch.get(branch).copied().unwrap_or(0);
            let decided = approved + rejected;
            let rate = if decided == 0 {
                0.0
            } else {
                rejected as f64 / decided as f64
            };
            let return_rate = if all == 0 {
                0.0
            } else {
                returned as f64 / all as f64
            };
            (
                branch.to_string(),
                BranchRate {
                    approved,
                    rejected,
                    rate,
                    returned,
                    return_rate,
                },
            )
        })
        .collect();

    Stats {
        requests: rows.len() as u64,
        by_outcome,
        by_branch,
        by_code,
        by_supervisor,
        wait_ms: percentiles(waits),
        decision_ms: percentiles(decisions),
        branch_rejection_rate,
        unusual_pairs: unusual_pairs(rows, supervisor_branches, min_observed, z_threshold),
        fallbacks,
        reviews,
    }
}

/// Nearest-rank percentiles of `values` (in any order).
fn percentiles(mut values: Vec<i64>) -> Percentiles {
    values.sort_unstable();
    Percentiles {
        count: values.len() as u64,
        p50: nearest_rank(&values, 50),
        p90: nearest_rank(&values, 90),
        p99: nearest_rank(&values, 99),
        max: values.last().copied(),
    }
}

/// Value at 1-based rank `ceil(percent / 100 * n)` of `sorted`, or `None` if it is empty.
fn nearest_rank(sorted: &[i64], percent: usize) -> Option<i64> {
    // Integer arithmetic: a float ceil could land one rank off (e.g. 0.9 * 10 is not exact).
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// The unusual-pairs estimator described on [`compute`].
fn unusual_pairs(
    rows: &[Row],
    supervisor_branches: &BTreeMap<String, String>,
    min_observed: u64,
    z_threshold: f64,
) -> Vec<Pair> {
    // Every decision in the range by supervisor, and each teller's by branch and supervisor.
    let mut all: Counts = BTreeMap::new();
    let mut by_teller: BTreeMap<&str, BTreeMap<&str, Counts>> = BTreeMap::new();
    for row in rows {
        for decider in &row.deciders {
            let d = decider.as_str();
            *all.entry(d).or_insert(0) += 1;
            *by_teller
                .entry(row.teller.as_str())
                .or_default()
                .entry(row.branch.as_str())
                .or_default()
                .entry(d)
                .or_insert(0) += 1;
        }
    }
    // Independence: a branch's requests never go to its own supervisors.
    let may_decide = |s: &str, branch: &str| supervisor_branches.get(s).is_none_or(|b| b != branch);
    let mut pairs = Vec::new();
    for (teller, per_branch) in &by_teller {
        let own_everywhere = |s: &str| -> u64 {
            per_branch
                .values()
                .map(|c| c.get(s).copied().unwrap_or(0))
                .sum()
        };
        // The other tellers' decisions: the teller does not set their own expectation.
        let others = without(&all, own_everywhere);
        let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
        let mut observed: Counts = BTreeMap::new();
        for (branch, own) in per_branch {
            for (s, k) in own {
                *observed.entry(s).or_insert(0) += k;
            }
            let reference: Counts = others
                .iter()
                .filter(|(s, _)| may_decide(s, branch))
                .map(|(s, n)| (*s, *n))
                .collect();
            if reference.is_empty() {
                // Nobody else was decided by a supervisor who may take this branch's
                // requests: there is nothing to compare with.
                continue;
            }
            let total: u64 = reference.values().sum();
            let n: u64 = own.values().sum();
            // Candidates: the reference's supervisors and the teller's own. Each gets one
            // decision more than seen (Laplace smoothing), so a supervisor who decided only
            // this teller's requests still has an expectation above zero.
            let mut candidates: Vec<&str> = reference.keys().copied().collect();
            candidates.extend(own.keys().filter(|s| !reference.contains_key(*s)));
            let k = candidates.len() as f64;
            for s in candidates {
                let seen = reference.get(s).copied().unwrap_or(0) as f64;
                *expected.entry(s).or_insert(0.0) += n as f64 * (seen + 1.0) / (total as f64 + k);
            }
        }
        for (supervisor, exp) in expected {
            let obs = observed.get(supervisor).copied().unwrap_or(0);
            let z = (obs as f64 - exp) / exp.sqrt();
            if obs >= min_observed && z >= z_threshold {
                pairs.push(Pair {
                    teller: teller.to_string(),
                    supervisor: supervisor.to_string(),
                    observed: obs,
                    expected: exp,
                    z,
                });
            }
        }
    }

    pairs.sort_by(|a, b| {
        b.z.total_cmp(&a.z)
            .then_with(|| a.teller.cmp(&b.teller))
            .then_with(|| a.supervisor.cmp(&b.supervisor))
    });
    pairs
}

/// Decisions by supervisor.
type Counts<'a> = BTreeMap<&'a str, u64>;

/// `all` less what `own` says the teller contributed: the reference without the teller.
fn without<'a>(all: &Counts<'a>, own: impl Fn(&str) -> u64) -> Counts<'a> {
    all.iter()
        .map(|(s, n)| (*s, n - own(s)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Pearson's chi-square statistic of `observed` counts against a uniform expectation
/// (every category expected to get `total / len`).
///
/// Compare it with [`chi_square_critical_999`] at `df = observed.len() - 1`. Returns 0.0
/// when there are no categories or no observations: there is nothing to contradict
/// uniformity, and 0.0 never exceeds a critical value.
pub fn chi_square(observed: &[u64]) -> f64 {
    let total: u64 = observed.iter().sum();
    if observed.is_empty() || total == 0 {
        return 0.0;
    }
    let expected = total as f64 / observed.len() as f64;
    observed
        .iter()
        .map(|&o| {
            let diff = o as f64 - expected;
            diff * diff / expected
        })
        .sum()
}

/// The 0.999 quantile of the chi-square distribution with `df` degrees of freedom: the
/// value a uniform assignment exceeds only once in a thousand runs.
///
/// For `df >= 3` this is the Wilson–Hilferty approximation
/// `df × (1 − 2/(9 df) + z × sqrt(2/(9 df)))³` with `z` the 0.999 normal quantile. It
/// overestimates slightly (errs toward fewer false alarms): about +1.8% at df = 3, +1.2% at
/// df = 5, +0.6% at df = 10, +0.2% at df = 30 and below +0.05% from df = 100, against
/// published tables. For df = 1 and df = 2 Wilson–Hilferty is off by 3.0% and 2.3%, so those
/// use exact closed forms instead: the square of the 0.9995 normal quantile, and
/// `−2 ln(0.001)`. For df = 0 (a single category) the statistic is always 0, so 0.0 is
/// returned.
pub fn chi_square_critical_999(df: u32) -> f64 {
    /// Standard normal quantile at 0.999.
    const Z_999: f64 = 3.090_232_306_167_813_5;
    /// Standard normal quantile at 0.9995: chi-square with 1 df is the square of a normal
    /// variable, and its upper 0.001 tail is both normal tails of 0.0005.
    const Z_9995: f64 = 3.290_526_731_491_925_5;
    match df {
        0 => 0.0,
        1 => Z_9995 * Z_9995,
        // Chi-square with 2 df is exponential with mean 2: P(X > x) = exp(−x / 2).
        2 => -2.0 * 0.001_f64.ln(),
        _ => {
            let k = f64::from(df);
            let a = 2.0 / (9.0 * k);
            let cube_root = 1.0 - a + Z_999 * a.sqrt();
            k * cube_root * cube_root * cube_root
        }
    }
}

#[cfg(test)]
mod tests;
