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
    // Branch B1 decisions: s1 1, s2 2 (total 3). Branch B2: s1 1, s3 1 (total 2).
    // t1 (2 decisions): s1 expected 2/3, observed 1, z = (1/3)/sqrt(2/3).
    // t3 (1 decision): s2 expected 2/3, observed 1, same z; s1 expected 1/3, observed 0.
    // t2 (2 decisions): s1 and s3 expected 1, observed 1, z = 0.
    let z = (1.0 / 3.0) / (2.0_f64 / 3.0).sqrt();
    let s = compute(&small(), 1, 0.0);
    let got: Vec<(&str, &str, u64)> = s
        .unusual_pairs
        .iter()
        .map(|p| (p.teller.as_str(), p.supervisor.as_str(), p.observed))
        .collect();
    // Equal z: ordered by teller, then supervisor.
    assert_eq!(
        got,
        vec![
            ("t1", "s1", 1),
            ("t3", "s2", 1),
            ("t2", "s1", 1),
            ("t2", "s3", 1)
        ]
    );
    assert!(close(s.unusual_pairs[0].expected, 2.0 / 3.0));
    assert!(close(s.unusual_pairs[0].z, z));
    assert!(close(s.unusual_pairs[1].expected, 2.0 / 3.0));
    assert!(close(s.unusual_pairs[1].z, z));
    assert!(close(s.unusual_pairs[2].expected, 1.0));
    assert!(close(s.unusual_pairs[2].z, 0.0));

    // The z threshold cuts the z = 0 pairs.
    assert_eq!(compute(&small(), 1, 0.4).unusual_pairs.len(), 2);
    // No pair has 2 decisions.
    assert!(compute(&small(), 2, 0.0).unusual_pairs.is_empty());
    // With min_observed 0 the never-chosen candidate (t3, s1) shows up, z = -(1/3)/sqrt(1/3).
    let all = compute(&small(), 0, f64::NEG_INFINITY).unusual_pairs;
    let last = all.last().expect("pairs");
    assert_eq!(
        (
            last.teller.as_str(),
            last.supervisor.as_str(),
            last.observed
        ),
        ("t3", "s1", 0)
    );
    assert!(close(last.z, -(1.0_f64 / 3.0).sqrt()));
    // Candidates: t1 and t3 with s1 and s2 (branch B1), t2 with s1 and s3 (branch B2).
    assert_eq!(all.len(), 6);
}

#[test]
fn teller_in_two_branches_sums_expectations() {
    let rows = vec![
        // Branch A: s1 3, s2 1 (total 4); t has 1 decision there.
        row("t", "A", "X", "approved", &["s1"], 0, None, None),
        row("u", "A", "X", "approved", &["s1"], 0, None, None),
        row("u", "A", "X", "approved", &["s1"], 0, None, None),
        row("u", "A", "X", "approved", &["s2"], 0, None, None),
        // Branch B: s1 1, s2 1 (total 2); t has 2 decisions there.
        row("t", "B", "X", "approved", &["s1", "s2"], 0, None, None),
    ];
    let pairs = compute(&rows, 0, f64::NEG_INFINITY).unusual_pairs;
    let t_s1 = pairs
        .iter()
        .find(|p| p.teller == "t" && p.supervisor == "s1")
        .expect("pair");
    // 1 × 3/4 + 2 × 1/2 = 1.75; observed 2.
    assert!(close(t_s1.expected, 1.75));
    assert_eq!(t_s1.observed, 2);
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
    // Branch B: 250 decisions, 80 by S1. expected(T, S1) = 50 × 80 / 250 = 16,
    // z = (40 − 16) / 4 = 6.
    let s = compute(&rows, 10, 3.0);
    assert_eq!(s.unusual_pairs.len(), 1, "{:?}", s.unusual_pairs);
    let p = &s.unusual_pairs[0];
    assert_eq!((p.teller.as_str(), p.supervisor.as_str()), ("T", "S1"));
    assert_eq!(p.observed, 40);
    assert!(close(p.expected, 16.0));
    assert!(close(p.z, 6.0));
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
    let s = compute(&rows, 1, 4.0);
    assert!(s.unusual_pairs.is_empty(), "{:?}", s.unusual_pairs);

    // Not vacuous: every (teller, eligible supervisor) pair is a candidate, and each
    // teller's expectations add up to the decisions on their requests.
    let all = compute(&rows, 0, f64::NEG_INFINITY).unusual_pairs;
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
