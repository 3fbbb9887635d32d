//! Unit tests of the auditors' statistics.
use super::*;

#[allow(clippy::too_many_arguments)]
fn row(
    teller: &str,
    branch: &str,
    code: &str,
    state: &str,
    deciders: &[&str],
    submitted: i64,
    accepted: Option<i64>,
    finished: Option<i64>,
) -> Row {
    let final_decider = match state {
        "approved" | "rejected" => deciders.last().map(|d| d.to_string()),
        _ => None,
    };
    Row {
        teller: teller.to_string(),
        branch: branch.to_string(),
        code: code.to_string(),
        state: state.to_string(),
        deciders: deciders.iter().map(|d| d.to_string()).collect(),
        final_decider,
        submitted_at_ms: submitted,
        first_accepted_at_ms: accepted,
        finished_at_ms: finished,
        on_site: None,
        review: None,
        on_site_supervisor: None,
        returns: 0,
    }
}

fn map(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Six rows small enough to compute every field by hand.
fn small() -> Vec<Row> {
    vec![
        row(
            "t1",
            "B1",
            "WIRE",
            "approved",
            &["s1"],
            0,
            Some(100),
            Some(400),
        ),
        row(
            "t1",
            "B1",
            "CASH",
            "rejected",
            &["s2"],
            1000,
            Some(1300),
            Some(1500),
        ),
        // Dual control: s1 gave the first approval, s3 the final one.
        row(
            "t2",
            "B2",
            "WIRE",
            "approved",
            &["s1", "s3"],
            2000,
            Some(2050),
            Some(2950),
        ),
        row("t2", "B2", "WIRE", "queued", &[], 3000, None, None),
        row(
            "t3",
            "B1",
            "CASH",
            "returned",
            &["s2"],
            4000,
            Some(4600),
            None,
        ),
        row("t3", "B1", "WIRE", "expired", &[], 5000, None, Some(9000)),
    ]
}

#[test]
fn small_counts() {
    let s = compute(&small(), 1, 0.0);
    assert_eq!(s.requests, 6);
    assert_eq!(
        s.by_outcome,
        map(&[
            ("approved", 2),
            ("rejected", 1),
            ("queued", 1),
            ("returned", 1),
            ("expired", 1)
        ])
    );
    assert_eq!(s.by_branch, map(&[("B1", 4), ("B2", 2)]));
    assert_eq!(s.by_code, map(&[("WIRE", 4), ("CASH", 2)]));
    assert_eq!(s.by_supervisor, map(&[("s1", 2), ("s2", 2), ("s3", 1)]));
}

#[test]
fn small_durations() {
    let s = compute(&small(), 1, 0.0);
    // Waits 100, 300, 50, 600 -> sorted [50, 100, 300, 600]; ranks 2, 4, 4.
    assert_eq!(
        s.wait_ms,
        Percentiles {
            count: 4,
            p50: Some(100),
            p90: Some(600),
            p99: Some(600),
            max: Some(600)
        }
    );
    // Only approved/rejected: 300, 200, 900 -> sorted [200, 300, 900]; ranks 2, 3, 3.
    // The returned row (no finish) and the expired row (no acceptance) are left out.
    assert_eq!(
        s.decision_ms,
        Percentiles {
            count: 3,
            p50: Some(300),
            p90: Some(900),
            p99: Some(900),
            max: Some(900)
        }
    );
}

/// A branch's return rate counts requests returned at least once, over all its requests,
/// whatever became of them.
#[test]
fn return_rates_count_requests_returned_at_least_once() {
    let returned = |n: u32, state: &str| Row {
        returns: n,
        ..row("t1", "B1", "WDL", state, &["s1"], 0, Some(1), Some(2))
    };
    let rows = vec![
        returned(2, "approved"),
        returned(1, "returned"),
        returned(0, "approved"),
        returned(0, "queued"),
        row("t2", "B2", "WDL", "approved", &["s1"], 0, Some(1), Some(2)),
    ];
    let s = compute(&rows, 1, 0.0);
    let b1 = &s.branch_rejection_rate["B1"];
    assert_eq!(b1.returned, 2, "twice returned counts once");
    assert!(close(b1.return_rate, 0.5), "2 of 4: {}", b1.return_rate);
    let b2 = &s.branch_rejection_rate["B2"];
    assert_eq!((b2.returned, b2.return_rate), (0, 0.0));
}

#[test]
fn small_rates() {
    let s = compute(&small(), 1, 0.0);
    assert_eq!(s.branch_rejection_rate.len(), 2);
    let b1 = &s.branch_rejection_rate["B1"];
    assert_eq!((b1.approved, b1.rejected), (1, 1));
    assert!(close(b1.rate, 0.5));
    let b2 = &s.branch_rejection_rate["B2"];
    assert_eq!((b2.approved, b2.rejected), (1, 0));
    assert!(close(b2.rate, 0.0));
}

#[test]
fn small_pairs() {
    // Decisions: t1 s1, s2; t2 s1, s3; t3 s2. Each teller's reference is the others':
    // t1: {s1 1, s2 1, s3 1}, candidates s1-s3, shares 2/6: expected 2/3 each (n = 2).
    // t2: {s1 1, s2 2}, candidates s1-s3, shares 2/6, 3/6, 1/6: 2/3, 1, 1/3 (n = 2).
    // t3: {s1 2, s2 1, s3 1}, shares 3/7, 2/7, 2/7: 3/7, 2/7, 2/7 (n = 1).
    let z = |obs: f64, exp: f64| (obs - exp) / exp.sqrt();
    let s = compute(&small(), 1, 0.0);
    let got: Vec<(&str, &str, u64)> = s
        .unusual_pairs
        .iter()
        .map(|p| (p.teller.as_str(), p.supervisor.as_str(), p.observed))
        .collect();
    // Most unusual first; equal z ordered by teller, then supervisor.
    assert_eq!(
        got,
        vec![
            ("t3", "s2", 1),
            ("t2", "s3", 1),
            ("t1", "s1", 1),
            ("t1", "s2", 1),
            ("t2", "s1", 1)
        ]
    );
    let p = &s.unusual_pairs;
    assert!(close(p[0].expected, 2.0 / 7.0) && close(p[0].z, z(1.0, 2.0 / 7.0)));
    assert!(close(p[1].expected, 1.0 / 3.0) && close(p[1].z, z(1.0, 1.0 / 3.0)));
    for q in &p[2..] {
        assert!(close(q.expected, 2.0 / 3.0) && close(q.z, z(1.0, 2.0 / 3.0)));
    }

    // The z threshold cuts the pairs below it.
    assert_eq!(compute(&small(), 1, 0.5).unusual_pairs.len(), 2);
    // No pair has 2 decisions.
    assert!(compute(&small(), 2, 0.0).unusual_pairs.is_empty());
    // With min_observed 0 the never-chosen candidates show up; (t2, s2) is the least usual.
    let all = compute(&small(), 0, f64::NEG_INFINITY).unusual_pairs;
    let last = all.last().expect("pairs");
    assert_eq!(
        (
            last.teller.as_str(),
            last.supervisor.as_str(),
            last.observed
        ),
        ("t2", "s2", 0)
    );
    assert!(close(last.z, -1.0));
    // Every teller with every candidate: 3 × 3.
    assert_eq!(all.len(), 9);
}

#[test]
fn teller_in_two_branches_sums_expectations() {
    let rows = vec![
        // Branch A: t 1 decision (s1); u: s1 2, s2 1.
        row("t", "A", "X", "approved", &["s1"], 0, None, None),
        row("u", "A", "X", "approved", &["s1"], 0, None, None),
        row("u", "A", "X", "approved", &["s1"], 0, None, None),
        row("u", "A", "X", "approved", &["s2"], 0, None, None),
        // Branch B: only t (2 decisions: s1, s2), so compared with every other teller.
        row("t", "B", "X", "approved", &["s1", "s2"], 0, None, None),
    ];
    let pairs = compute(&rows, 0, f64::NEG_INFINITY).unusual_pairs;
    let t_s1 = pairs
        .iter()
        .find(|p| p.teller == "t" && p.supervisor == "s1")
        .expect("pair");
    // The reference is u's decisions {s1: 2, s2: 1}, smoothed: s1 (2+1)/(3+2) = 3/5; t
    // has 3 decisions in all: 3 × 3/5 = 1.8; observed 2.
    assert!(close(t_s1.expected, 1.8));
    assert_eq!(t_s1.observed, 2);
}

/// Decisions on `n` requests of `teller` (branch `branch`), by `deciders` in turn.
fn decided(teller: &str, branch: &str, n: usize, deciders: &[&str]) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let d = deciders[i % deciders.len()];
            row(teller, branch, "X", "approved", &[d], 0, None, None)
        })
        .collect()
}

/// Issue 16's case: one teller does most of a branch's work, every request decided by the
/// same supervisor; an honest colleague's requests are spread evenly over three. With the
/// teller's own decisions in the reference the dominant pair scored z = 2.72 and the
/// colleague's pairs 3.30-3.74; a reference without the teller flags the dominant pair only.
#[test]
fn a_teller_who_dominates_the_branch_is_flagged_and_the_colleague_is_not() {
    let mut rows = decided("dominant", "B1", 54, &["s1"]);
    rows.extend(decided("colleague", "B1", 24, &["s2", "s3", "s4"]));
    for (teller, branch) in [("x", "B2"), ("y", "B3"), ("z", "B4")] {
        rows.extend(decided(teller, branch, 40, &["s1", "s2", "s3", "s4"]));
    }
    let pairs = compute(&rows, 5, 3.0).unusual_pairs;
    let flagged: Vec<(&str, &str)> = pairs
        .iter()
        .map(|p| (p.teller.as_str(), p.supervisor.as_str()))
        .collect();
    assert_eq!(flagged, vec![("dominant", "s1")], "{pairs:?}");
    // Reference: the colleague's 24 and the others' 120 decisions, s1 30 of 144;
    // smoothed share (30 + 1) / (144 + 4).
    assert!(close(pairs[0].expected, 54.0 * 31.0 / 148.0));
    assert!(pairs[0].z > 10.0, "{pairs:?}");
    // The colleague's pairs stay below the threshold: z = (8 − 24 × 31/178) / sqrt(…).
    let colleague = compute(&rows, 0, f64::NEG_INFINITY)
        .unusual_pairs
        .into_iter()
        .filter(|p| p.teller == "colleague")
        .map(|p| p.z)
        .fold(f64::NEG_INFINITY, f64::max);
    let exp: f64 = 24.0 * 31.0 / 178.0;
    assert!(close(colleague, (8.0 - exp) / exp.sqrt()));
    assert!(colleague < 2.0);
}

/// A teller alone in their branch is compared with the other tellers in the range: one who
/// sends everything to one supervisor while everyone else's requests are spread is flagged.
#[test]
fn a_teller_alone_in_a_branch_is_compared_with_everyone_else() {
    let mut rows = decided("lonely", "B9", 20, &["s1"]);
    for (teller, branch) in [("a", "B1"), ("b", "B2"), ("c", "B3")] {
        rows.extend(decided(teller, branch, 20, &["s1", "s2", "s3", "s4", "s5"]));
    }
    let pairs = compute(&rows, 5, 3.0).unusual_pairs;
    let flagged: Vec<(&str, &str)> = pairs
        .iter()
        .map(|p| (p.teller.as_str(), p.supervisor.as_str()))
        .collect();
    assert_eq!(flagged, vec![("lonely", "s1")], "{pairs:?}");
    // Reference: 60 decisions, 12 each; s1's share (12+1)/(60+5) = 0.2.
    assert!(close(pairs[0].expected, 4.0));
    assert!(close(pairs[0].z, 8.0));
    // Alone in the whole range: nobody to compare with, no pairs.
    assert!(
        compute(&decided("only", "B1", 20, &["s1"]), 0, f64::NEG_INFINITY)
            .unusual_pairs
            .is_empty()
    );
}

#[test]
fn percentiles_known_lists() {
    let hundred: Vec<i64> = (1..=100).rev().collect();
    assert_eq!(
        percentiles(hundred),
        Percentiles {
            count: 100,
            p50: Some(50),
            p90: Some(90),
            p99: Some(99),
            max: Some(100)
        }
    );
    let ten: Vec<i64> = vec![10, 3, 7, 1, 9, 2, 8, 4, 6, 5];
    // Ranks ceil(5) = 5, ceil(9) = 9, ceil(9.9) = 10.
    assert_eq!(
        percentiles(ten),
        Percentiles {
            count: 10,
            p50: Some(5),
            p90: Some(9),
            p99: Some(10),
            max: Some(10)
        }
    );
    assert_eq!(
        percentiles(vec![7]),
        Percentiles {
            count: 1,
            p50: Some(7),
            p90: Some(7),
            p99: Some(7),
            max: Some(7)
        }
    );
    // Two values: median is the lower one (rank ceil(1) = 1).
    assert_eq!(percentiles(vec![20, -5]).p50, Some(-5));
    assert_eq!(
        percentiles(Vec::new()),
        Percentiles {
            count: 0,
            p50: None,
            p90: None,
            p99: None,
            max: None
        }
    );
}

#[test]
fn empty_input() {
    let s = compute(&[], 0, f64::NEG_INFINITY);
    assert_eq!(s.requests, 0);
    assert!(s.by_outcome.is_empty() && s.by_branch.is_empty() && s.by_code.is_empty());
    assert!(s.by_supervisor.is_empty() && s.branch_rejection_rate.is_empty());
    assert_eq!(s.wait_ms, Percentiles::default());
    assert_eq!(s.decision_ms, Percentiles::default());
    assert!(s.unusual_pairs.is_empty());
}

#[test]
fn zero_denominators_do_not_divide_by_zero() {
    // A branch with nothing approved or rejected, and no decisions at all.
    let rows = vec![
        row("t", "B", "X", "cancelled", &[], 0, None, Some(10)),
        row("t", "B", "X", "queued", &[], 0, None, None),
    ];
    let s = compute(&rows, 0, f64::NEG_INFINITY);
    let b = &s.branch_rejection_rate["B"];
    assert_eq!((b.approved, b.rejected), (0, 0));
    assert_eq!(b.rate, 0.0);
    assert!(s.unusual_pairs.is_empty());
    assert_eq!(s.decision_ms.count, 0);
    // All rejected: rate 1, not NaN or infinity.
    let rejected = vec![row("t", "B", "X", "rejected", &["s"], 0, Some(1), Some(2))];
    assert_eq!(
        compute(&rejected, 1, 0.0).branch_rejection_rate["B"].rate,
        1.0
    );
    assert_eq!(chi_square(&[]), 0.0);
    assert_eq!(chi_square(&[0, 0, 0]), 0.0);
}

#[test]
fn saturating_durations() {
    let rows = vec![row(
        "t",
        "B",
        "X",
        "approved",
        &["s"],
        i64::MIN,
        Some(i64::MAX),
        Some(i64::MIN),
    )];
    let s = compute(&rows, 1, 0.0);
    assert_eq!(s.wait_ms.max, Some(i64::MAX));
    assert_eq!(s.decision_ms.max, Some(i64::MIN));
}

/// One teller gets supervisor S1 for 40 of 50 decisions among 5 supervisors; five other
/// tellers of the same branch are spread evenly (8 each over 40 requests).
#[test]
fn planted_collusion_is_reported() {
    let sups = ["S1", "S2", "S3", "S4", "S5"];
    let mut rows = Vec::new();
    let planted = [("S1", 40), ("S2", 3), ("S3", 3), ("S4", 2), ("S5", 2)];
    for (sup, n) in planted {
        for _ in 0..n {
            rows.push(row("T", "B", "X", "approved", &[sup], 0, Some(1), Some(2)));
        }
    }
    for other in ["U1", "U2", "U3", "U4", "U5"] {
        for sup in sups {
            for _ in 0..8 {
                rows.push(row(
                    other,
                    "B",
                    "X",
                    "approved",
                    &[sup],
                    0,
                    Some(1),
                    Some(2),
                ));
            }
        }
    }
    // The other tellers: 200 decisions, 40 by S1; smoothed share (40 + 1) / (200 + 5) = 0.2.
    // expected(T, S1) = 50 × 0.2 = 10, z = (40 − 10) / sqrt(10).
    let s = compute(&rows, 10, 3.0);
    assert_eq!(s.unusual_pairs.len(), 1, "{:?}", s.unusual_pairs);
    let p = &s.unusual_pairs[0];
    assert_eq!((p.teller.as_str(), p.supervisor.as_str()), ("T", "S1"));
    assert_eq!(p.observed, 40);
    assert!(close(p.expected, 10.0));
    assert!(close(p.z, 30.0 / 10f64.sqrt()));
}

/// SplitMix64: tiny, seeded, good enough to simulate uniform assignment.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (multiply-shift; the bias is below 2^-50 for small n).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// The branches of `uniform_rows`' supervisors: "s{b}-{k}" is of branch "B{b}".
fn uniform_branches() -> BTreeMap<String, String> {
    (0..3)
        .flat_map(|b| (0..4).map(move |k| (format!("s{b}-{k}"), format!("B{b}"))))
        .collect()
}

/// 5,000 requests from 3 branches × 5 tellers, each assigned uniformly to one of the 8
/// supervisors outside the teller's branch; 30% are dual control with a second, distinct
/// supervisor.
fn uniform_rows(seed: u64) -> Vec<Row> {
    let branches = ["B0", "B1", "B2"];
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    for i in 0..5000 {
        let b = rng.below(branches.len());
        let teller = format!("t{b}-{}", rng.below(5));
        // Supervisors "s{branch}-{k}"; eligible are those of the other two branches.
        let eligible: Vec<String> = (0..branches.len())
            .filter(|&ob| ob != b)
            .flat_map(|ob| (0..4).map(move |k| format!("s{ob}-{k}")))
            .collect();
        let first = rng.below(eligible.len());
        let mut deciders = vec![eligible[first].as_str()];
        if rng.below(10) < 3 {
            let mut second = rng.below(eligible.len() - 1);
            if second >= first {
                second += 1;
            }
            deciders.push(eligible[second].as_str());
        }
        let state = if rng.below(10) == 0 {
            "rejected"
        } else {
            "approved"
        };
        let t = i64::from(i) * 1000;
        rows.push(row(
            &teller,
            branches[b],
            "X",
            state,
            &deciders,
            t,
            Some(t + 10),
            Some(t + 20),
        ));
    }
    rows
}

#[test]
fn uniform_assignment_reports_nothing_at_z4() {
    let rows = uniform_rows(0x5EED_C0DE);
    assert_eq!(rows.len(), 5000);
    let branches = uniform_branches();
    let s = compute_with(&rows, &branches, 1, 4.0);
    assert!(s.unusual_pairs.is_empty(), "{:?}", s.unusual_pairs);
    // Not knowing that a branch's own supervisors never decide its requests, every other
    // supervisor looks over-used: why the engine passes the directory's branches.
    assert!(!compute(&rows, 1, 4.0).unusual_pairs.is_empty());

    // Not vacuous: every (teller, eligible supervisor) pair is a candidate, and each
    // teller's expectations add up to the decisions on their requests.
    let all = compute_with(&rows, &branches, 0, f64::NEG_INFINITY).unusual_pairs;
    assert_eq!(all.len(), 15 * 8);
    let mut per_teller: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for p in &all {
        let e = per_teller.entry(p.teller.as_str()).or_default();
        e.0 += p.observed;
        e.1 += p.expected;
    }
    for (teller, (obs, exp)) in per_teller {
        assert!((obs as f64 - exp).abs() < 1e-6, "{teller}: {obs} vs {exp}");
    }
}

#[test]
fn chi_square_hand_computed() {
    assert_eq!(chi_square(&[10, 10, 10]), 0.0);
    // Expected 10 each: (100 + 0 + 100) / 10.
    assert!(close(chi_square(&[20, 10, 0]), 20.0));
    // Single category: always 0.
    assert_eq!(chi_square(&[42]), 0.0);
}

#[test]
fn chi_square_critical_matches_tables() {
    // 0.999 quantiles from standard chi-square tables.
    let table = [
        (1, 10.828),
        (2, 13.816),
        (3, 16.266),
        (5, 20.515),
        (10, 29.588),
        (30, 59.703),
    ];
    for (df, want) in table {
        let got = chi_square_critical_999(df);
        let err = (got - want).abs() / want;
        assert!(err < 0.02, "df {df}: {got} vs {want} ({:.2}%)", err * 100.0);
    }
    // The closed forms are exact to table precision.
    assert!((chi_square_critical_999(1) - 10.828).abs() < 0.001);
    assert!((chi_square_critical_999(2) - 13.816).abs() < 0.001);
    assert_eq!(chi_square_critical_999(0), 0.0);
}

#[test]
fn uniform_supervisor_picks_pass_chi_square() {
    // What the engine's uniformity test does: 12,000 picks among 12 supervisors.
    let mut rng = Rng(7);
    let mut counts = [0u64; 12];
    for _ in 0..12_000 {
        counts[rng.below(12)] += 1;
    }
    assert!(chi_square(&counts) < chi_square_critical_999(11));
    // A supervisor picked twice as often as the others is caught.
    let mut skewed = [1000u64; 12];
    skewed[0] = 2000;
    assert!(chi_square(&skewed) > chi_square_critical_999(11));
}

/// Starts, a clean stop, a crash (no stop: the span ends at the last record before the next
/// start), an outage a writes_resumed record reports, and the engine serving now.
#[test]
fn serving_spans_follow_the_engine_records() {
    let marks = [
        Mark::Started {
            at_ms: 100,
            previous_at_ms: None,
        },
        Mark::Stopped { at_ms: 200 },
        Mark::Started {
            at_ms: 300,
            previous_at_ms: Some(250),
        },
        // Crashed after its last record at 390.
        Mark::Started {
            at_ms: 500,
            previous_at_ms: Some(390),
        },
        Mark::Resumed {
            since_ms: 600,
            at_ms: 650,
        },
    ];
    let serving = Serving::from_marks(&marks, 1000);
    assert_eq!(
        serving.spans(),
        [(100, 200), (300, 390), (500, 600), (650, 1000)]
    );
    for (t, up) in [
        (99, false),
        (100, true),
        (199, true),
        (200, false),
        (250, false),
        (350, true),
        (450, false),
        (599, true),
        (620, false),
        (650, true),
        (999, true),
    ] {
        assert_eq!(serving.at(t), up, "at {t}");
    }
    assert_eq!(Serving::from_marks(&[], 1000).spans(), []);
}

/// Fallbacks are counted per branch, with those authorized while the centre served, and are
/// never anyone's decision.
#[test]
fn fallbacks_are_counted_per_branch_and_never_as_decisions() {
    let fallback = |branch: &str, centre_serving: bool| Row {
        on_site: Some(OnSiteRow {
            at_ms: 5,
            centre_serving,
        }),
        ..row("t1", branch, "WDL", "fallback", &[], 10, None, Some(10))
    };
    let rows = vec![
        fallback("b1", false),
        fallback("b1", true),
        fallback("b2", false),
        row("t2", "b1", "WDL", "approved", &["s1"], 0, Some(1), Some(2)),
    ];
    let s = compute(&rows, 1, 0.0);
    assert_eq!(s.by_outcome, map(&[("approved", 1), ("fallback", 3)]));
    assert_eq!(s.by_supervisor, map(&[("s1", 1)]));
    assert_eq!(
        s.fallbacks,
        [
            (
                "b1".to_string(),
                BranchFallbacks {
                    registered: 2,
                    while_serving: 1
                }
            ),
            (
                "b2".to_string(),
                BranchFallbacks {
                    registered: 1,
                    while_serving: 0
                }
            ),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(s.branch_rejection_rate["b1"].approved, 1);
}
