//! Unit tests of `policy`: the sample policy, matching and inheritance, and every way a
//! policy file is refused.

use sha2::{Digest, Sha256};

use super::*;
use crate::domain::RekeyField;

/// The example in the module doc, kept identical to it.
const DOC_EXAMPLE: &str = r#"
[defaults]
level = 1                      # authority level needed, 1..=9
approvals = 1                  # 1, or 2 for dual control
independent = true             # supervisor must not be of the teller's branch
priority = 0                   # 0..=9, higher is offered first
offer_timeout_ms = 30000       # 1000..=600000
decision_deadline_ms = 3600000 # 10000..=604800000 (a week); the request EXPIRES after it
escalate_after_ms = 900000     # optional; > 0 and < decision_deadline_ms: waiting this long unaccepted raises the level by one
escalate_after_declines = 3    # optional; 1..=50: this many declines raise the level by one

[unmatched]
allow = false                  # true: a request no rule matches gets the defaults; false: refused

[[rules]]
name = "cash-withdrawal-large"   # unique, 1..64 of [a-z0-9-]
codes = ["WDL-CASH"]             # one or more transaction codes this rule covers
currency = "CNY"                 # optional; required when amount_from/amount_below is set; ISO 4217 3 upper letters
amount_from = 5000000            # optional, minor units, inclusive, >= 0
amount_below = 50000000          # optional, minor units, exclusive, > amount_from
level = 2                        # any defaults field may be overridden here
"#;

fn sample() -> Policy {
    Policy::parse(SAMPLE).expect("SAMPLE parses")
}

fn rule_of(policy: &Policy, code: &str, currency: &str, amount: i64) -> String {
    policy
        .evaluate(code, currency, amount)
        .map(|r| r.rule)
        .unwrap_or_else(|e| format!("refused: {e}"))
}

#[test]
fn sample_parses_with_rules_in_file_order() {
    let policy = sample();
    assert_eq!(
        policy.rule_names(),
        [
            "cash-withdrawal-cny-very-large",
            "cash-withdrawal-cny-large",
            "cash-withdrawal-usd-large",
            "reversal",
            "account-closure",
            "password-reset",
        ]
    );
    assert_eq!(policy.text(), SAMPLE);
}

#[test]
fn doc_example_parses() {
    let policy = Policy::parse(DOC_EXAMPLE).expect("doc example parses");
    assert_eq!(
        rule_of(&policy, "WDL-CASH", "CNY", 49_999_999),
        "cash-withdrawal-large"
    );
    assert!(policy.evaluate("WDL-CASH", "CNY", 50_000_000).is_err());
}

#[test]
fn sample_cny_cash_bands_and_boundaries() {
    let policy = sample();
    let large = "cash-withdrawal-cny-large";
    let very_large = "cash-withdrawal-cny-very-large";
    // Below 50,000.00: no rule, refused.
    for amount in [0, 100, 4_999_999] {
        let err = policy.evaluate("WDL-CASH", "CNY", amount).unwrap_err();
        assert_eq!(
            err,
            NoRuleMatches {
                code: "WDL-CASH".into(),
                currency: "CNY".into(),
                minor_units: amount
            }
        );
    }
    // 50,000.00 inclusive up to 500,000.00 exclusive: level 2.
    for amount in [5_000_000, 5_000_001, 12_345_678, 49_999_999] {
        let r = policy.evaluate("WDL-CASH", "CNY", amount).unwrap();
        assert_eq!(
            (r.rule.as_str(), r.level, r.approvals),
            (large, 2, 1),
            "{amount}"
        );
        assert_eq!(r.priority, 2);
    }
    // 500,000.00 inclusive and above: level 3, dual control, higher priority.
    for amount in [50_000_000, 50_000_001, 1_000_000_000_000, i64::MAX] {
        let r = policy.evaluate("WDL-CASH", "CNY", amount).unwrap();
        assert_eq!(
            (r.rule.as_str(), r.level, r.approvals, r.priority),
            (very_large, 3, 2, 6),
            "{amount}"
        );
    }
    // Negative amounts never match a currency rule.
    assert!(policy.evaluate("WDL-CASH", "CNY", -60_000_000).is_err());
}

#[test]
fn sample_usd_cash_and_other_currencies() {
    let policy = sample();
    assert!(policy.evaluate("WDL-CASH", "USD", 499_999).is_err());
    for amount in [500_000, 500_001, 50_000_000] {
        let r = policy.evaluate("WDL-CASH", "USD", amount).unwrap();
        assert_eq!((r.rule.as_str(), r.level), ("cash-withdrawal-usd-large", 2));
    }
    // A CNY threshold does not apply to EUR, nor is the match case-blind.
    assert!(policy.evaluate("WDL-CASH", "EUR", 100_000_000).is_err());
    assert!(policy.evaluate("WDL-CASH", "cny", 100_000_000).is_err());
}

#[test]
fn sample_other_codes() {
    let policy = sample();
    for (currency, amount) in [("CNY", 0), ("CNY", 1), ("USD", 99_000_000), ("JPY", -5)] {
        let r = policy.evaluate("REV-TXN", currency, amount).unwrap();
        assert_eq!((r.rule.as_str(), r.level), ("reversal", 2));
    }
    let r = policy.evaluate("ACC-CLOSE", "CNY", 0).unwrap();
    assert_eq!(
        (r.rule.as_str(), r.level, r.priority),
        ("account-closure", 1, 2)
    );
    let r = policy.evaluate("PWD-RESET", "CNY", 0).unwrap();
    assert_eq!(
        (r.rule.as_str(), r.level, r.priority),
        ("password-reset", 1, 0)
    );
    assert!(r.priority < policy.evaluate("ACC-CLOSE", "CNY", 0).unwrap().priority);
    // Unknown code: refused, and the message says what was asked.
    let err = policy.evaluate("FX-SPOT", "USD", 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no policy rule matches transaction code FX-SPOT for USD 1"
    );
}

#[test]
fn sample_full_requirements_inherit_defaults() {
    let policy = sample();
    let r = policy.evaluate("WDL-CASH", "CNY", 60_000_000).unwrap();
    assert_eq!(
        r,
        Requirements {
            rule: "cash-withdrawal-cny-very-large".into(),
            policy_sha256: policy.sha256().into(),
            level: 3,
            approvals: 2,
            independent: true,
            priority: 6,
            offer_timeout_ms: 30_000,
            decision_deadline_ms: 3_600_000,
            escalate_after_ms: Some(900_000),
            escalate_after_declines: Some(3),
            rekey: vec![RekeyField::Amount, RekeyField::Account],
            rekey_attempts: 3,
            fallback: false,
            review_percent: 20,
        }
    );
}

#[test]
fn rekey_fields_are_sorted_checked_and_inherited() {
    let text = "[defaults]\nrekey_attempts = 2\n[[rules]]\nname = \"x\"\ncodes = [\"X\"]\n\
                rekey = [\"counterparty\", \"amount\"]\n[[rules]]\nname = \"y\"\n\
                codes = [\"Y\"]\nrekey_attempts = 5\n";
    let policy = Policy::parse(text).unwrap();
    let x = policy.evaluate("X", "CNY", 1).unwrap();
    assert_eq!(x.rekey, vec![RekeyField::Amount, RekeyField::Counterparty]);
    assert_eq!(x.rekey_attempts, 2, "inherited from [defaults]");
    // Attempts without fields ask nothing: recorded as 0, so the record is as before.
    let y = policy.evaluate("Y", "CNY", 1).unwrap();
    assert!(y.rekey.is_empty());
    assert_eq!(y.rekey_attempts, 0);
    for (bad, why) in [
        (
            "rekey = [\"amount\", \"amount\"]",
            "rekey: \"amount\" is listed twice",
        ),
        (
            "rekey = [\"name\"]",
            "rekey: \"name\" is not a field to re-key",
        ),
        ("rekey = \"amount\"", "rekey: must be an array of strings"),
        ("rekey_attempts = 0", "rekey_attempts: must be from 1 to 9"),
    ] {
        let text = format!("[[rules]]\nname = \"x\"\ncodes = [\"X\"]\n{bad}\n");
        let e = Policy::parse(&text).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn knows_code_lists_every_rule_code() {
    let policy = sample();
    for code in ["WDL-CASH", "REV-TXN", "ACC-CLOSE", "PWD-RESET"] {
        assert!(policy.knows_code(code), "{code}");
    }
    assert!(!policy.knows_code("wdl-cash"));
    assert!(!policy.knows_code("FX-SPOT"));
    assert!(!policy.knows_code(""));
}

#[test]
fn unmatched_allowed_gets_defaults() {
    let text = SAMPLE.replace("allow = false", "allow = true");
    let policy = Policy::parse(&text).unwrap();
    let r = policy.evaluate("WDL-CASH", "CNY", 100).unwrap();
    assert_eq!(
        r,
        Requirements {
            rule: UNMATCHED_RULE.into(),
            policy_sha256: policy.sha256().into(),
            level: 1,
            approvals: 1,
            independent: true,
            priority: 2,
            offer_timeout_ms: 30_000,
            decision_deadline_ms: 3_600_000,
            escalate_after_ms: Some(900_000),
            escalate_after_declines: Some(3),
            rekey: Vec::new(),
            rekey_attempts: 0,
            fallback: false,
            review_percent: 5,
        }
    );
    assert_eq!(rule_of(&policy, "FX-SPOT", "EUR", 1), "unmatched-default");
    // Rules still win over the fallback.
    assert_eq!(rule_of(&policy, "REV-TXN", "CNY", 1), "reversal");
    assert!(!policy.knows_code("FX-SPOT"));
}

#[test]
fn no_rules_is_fine_when_unmatched_allowed() {
    let policy = Policy::parse("[unmatched]\nallow = true\n").unwrap();
    assert!(policy.rule_names().is_empty());
    let r = policy.evaluate("ANY", "CNY", 1).unwrap();
    assert_eq!(r.rule, "unmatched-default");
    // No [defaults] at all: the built-in values.
    assert_eq!(
        (r.level, r.approvals, r.independent, r.priority),
        (1, 1, true, 0)
    );
    assert_eq!(
        (r.offer_timeout_ms, r.decision_deadline_ms),
        (30_000, 3_600_000)
    );
    assert_eq!(
        (r.escalate_after_ms, r.escalate_after_declines),
        (None, None)
    );
}

#[test]
fn missing_unmatched_means_refuse() {
    let policy = Policy::parse("[[rules]]\nname = \"a\"\ncodes = [\"A\"]\n").unwrap();
    assert!(policy.evaluate("B", "CNY", 1).is_err());
}

#[test]
fn rules_inherit_defaults_field_by_field() {
    let text = r#"
[defaults]
level = 4
approvals = 2
independent = false
priority = 7
offer_timeout_ms = 45000
decision_deadline_ms = 7200000
escalate_after_ms = 600000
escalate_after_declines = 5

[[rules]]
name = "inherits-all"
codes = ["A"]

[[rules]]
name = "overrides-all"
codes = ["B"]
level = 9
approvals = 1
independent = true
priority = 0
offer_timeout_ms = 1000
decision_deadline_ms = 10000
escalate_after_ms = 9999
escalate_after_declines = 1

[[rules]]
name = "overrides-some"
codes = ["C"]
level = 5
decision_deadline_ms = 604800000
"#;
    let policy = Policy::parse(text).unwrap();
    let defaults = Requirements {
        rule: "inherits-all".into(),
        policy_sha256: policy.sha256().into(),
        level: 4,
        approvals: 2,
        independent: false,
        priority: 7,
        offer_timeout_ms: 45_000,
        decision_deadline_ms: 7_200_000,
        escalate_after_ms: Some(600_000),
        escalate_after_declines: Some(5),
        rekey: Vec::new(),
        rekey_attempts: 0,
        fallback: false,
        review_percent: 0,
    };
    assert_eq!(policy.evaluate("A", "CNY", 1).unwrap(), defaults);
    assert_eq!(
        policy.evaluate("B", "CNY", 1).unwrap(),
        Requirements {
            rule: "overrides-all".into(),
            policy_sha256: policy.sha256().into(),
            level: 9,
            approvals: 1,
            independent: true,
            priority: 0,
            offer_timeout_ms: 1_000,
            decision_deadline_ms: 10_000,
            escalate_after_ms: Some(9_999),
            escalate_after_declines: Some(1),
            rekey: Vec::new(),
            rekey_attempts: 0,
            fallback: false,
            review_percent: 0,
        }
    );
    assert_eq!(
        policy.evaluate("C", "CNY", 1).unwrap(),
        Requirements {
            rule: "overrides-some".into(),
            level: 5,
            decision_deadline_ms: 604_800_000,
            ..defaults
        }
    );
}

#[test]
fn first_match_wins_exception_before_general() {
    let text = r#"
[[rules]]
name = "reversal-cny-huge"
codes = ["REV-TXN"]
currency = "CNY"
amount_from = 100000000
level = 4
approvals = 2

[[rules]]
name = "reversal-any"
codes = ["REV-TXN", "REV-FEE"]
level = 2
"#;
    let policy = Policy::parse(text).unwrap();
    assert_eq!(
        rule_of(&policy, "REV-TXN", "CNY", 100_000_000),
        "reversal-cny-huge"
    );
    assert_eq!(
        rule_of(&policy, "REV-TXN", "CNY", 99_999_999),
        "reversal-any"
    );
    assert_eq!(
        rule_of(&policy, "REV-TXN", "USD", 100_000_000),
        "reversal-any"
    );
    assert_eq!(
        rule_of(&policy, "REV-FEE", "CNY", 100_000_000),
        "reversal-any"
    );
}

#[test]
fn overlapping_but_not_shadowed_rules_load() {
    // Each later rule still has something left to match.
    let text = r#"
[[rules]]
name = "a"
codes = ["X"]
currency = "CNY"
amount_from = 100
amount_below = 200

[[rules]]
name = "b"
codes = ["X"]
currency = "CNY"
amount_from = 150
amount_below = 250

[[rules]]
name = "c"
codes = ["X"]
currency = "CNY"

[[rules]]
name = "d"
codes = ["X"]
"#;
    let policy = Policy::parse(text).unwrap();
    assert_eq!(rule_of(&policy, "X", "CNY", 199), "a");
    assert_eq!(rule_of(&policy, "X", "CNY", 200), "b");
    assert_eq!(rule_of(&policy, "X", "CNY", 250), "c");
    assert_eq!(rule_of(&policy, "X", "CNY", -1), "d");
    assert_eq!(rule_of(&policy, "X", "USD", 150), "d");
}

#[test]
fn sha256_is_of_the_exact_text() {
    let policy = sample();
    assert_eq!(
        policy.sha256(),
        hex::encode(Sha256::digest(SAMPLE.as_bytes()))
    );
    assert_eq!(policy.sha256().len(), 64);
    assert!(
        policy
            .sha256()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    // One byte more (a trailing space) changes the hash but not the meaning.
    let changed = Policy::parse(&format!("{SAMPLE} ")).unwrap();
    assert_ne!(changed.sha256(), policy.sha256());
    assert_eq!(changed.rule_names(), policy.rule_names());
    // One byte changed inside a comment, likewise.
    let changed = Policy::parse(&SAMPLE.replacen("fen", "Fen", 1)).unwrap();
    assert_ne!(changed.sha256(), policy.sha256());
}

#[test]
fn load_reads_the_file_and_names_it_on_failure() {
    let dir = std::env::temp_dir().join(format!("countersign-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(&path, SAMPLE).unwrap();
    let policy = Policy::load(&path).unwrap();
    assert_eq!(policy.text(), SAMPLE);
    assert_eq!(policy.sha256(), sample().sha256());

    let missing = dir.join("missing.toml");
    let err = Policy::load(&missing).unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }));
    assert!(err.to_string().contains("missing.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A rule with the given extra lines, named `name`.
fn rule(name: &str, extra: &str) -> String {
    format!("[[rules]]\nname = \"{name}\"\ncodes = [\"WDL-CASH\"]\n{extra}\n")
}

#[test]
fn broken_policies_are_refused_with_rule_and_field() {
    let ok = rule("ok", "");
    let cases: Vec<(String, &[&str])> = vec![
        // TOML syntax: toml's line and column survive.
        (
            "[[rules]\nname = \"x\"\n".into(),
            &["not valid TOML", "line 1, column 9"],
        ),
        (
            format!("{ok}level = 1\nlevel = 2\n"),
            &["not valid TOML", "line 6, column 1", "duplicate key"],
        ),
        (
            format!("{ok}codes = [\"A\",\n"),
            &["not valid TOML", "line"],
        ),
        // Unknown fields, at every level.
        (
            format!("{ok}{}", rule("x", "levle = 2")),
            &[r#"rules[1] "x".levle: unknown field"#],
        ),
        (
            "[defaults]\nlevle = 2\n".to_owned() + &ok,
            &["defaults.levle: unknown field"],
        ),
        (
            "[unmatched]\nallowed = true\n".to_owned() + &ok,
            &["unmatched.allowed: unknown field"],
        ),
        (
            ok.replace("[[rules]]", "[[rule]]"),
            &["rule: unknown field"],
        ),
        // Types.
        (
            rule("x", "level = \"2\""),
            &[r#"rules[0] "x".level: must be an integer, found string"#],
        ),
        (
            rule("x", "independent = 1"),
            &[r#"rules[0] "x".independent: must be true or false"#],
        ),
        (
            "[unmatched]\nallow = \"no\"\n".into(),
            &["unmatched.allow: must be true or false"],
        ),
        (
            "defaults = 3\n".to_owned() + &ok,
            &["defaults: must be a table"],
        ),
        ("rules = 3\n".into(), &["rules: must be an array of tables"]),
        ("rules = [3]\n".into(), &["rules[0]: must be a table"]),
        // Ranges of the inheritable fields, in a rule and in [defaults].
        (
            format!("{ok}{}", rule("x", "level = 0")),
            &[r#"rules[1] "x".level: must be from 1 to 9, found 0"#],
        ),
        (
            rule("x", "level = 10"),
            &[r#"rules[0] "x".level: must be from 1 to 9"#],
        ),
        (
            format!("[defaults]\nlevel = 10\n{ok}"),
            &["defaults.level: must be from 1 to 9"],
        ),
        (
            rule("x", "approvals = 3"),
            &[r#"rules[0] "x".approvals: must be from 1 to 2"#],
        ),
        (rule("x", "approvals = 0"), &[r#"rules[0] "x".approvals"#]),
        (
            rule("x", "priority = 10"),
            &[r#"rules[0] "x".priority: must be from 0 to 9"#],
        ),
        (rule("x", "priority = -1"), &[r#"rules[0] "x".priority"#]),
        (
            rule("x", "offer_timeout_ms = 999"),
            &[r#"rules[0] "x".offer_timeout_ms: must be from 1000 to 600000"#],
        ),
        (
            format!("[defaults]\noffer_timeout_ms = 600001\n{ok}"),
            &["defaults.offer_timeout_ms"],
        ),
        (
            rule("x", "decision_deadline_ms = 9999"),
            &[r#"rules[0] "x".decision_deadline_ms: must be from 10000"#],
        ),
        (
            rule("x", "decision_deadline_ms = 604800001"),
            &[r#"rules[0] "x".decision_deadline_ms"#],
        ),
        (
            rule("x", "escalate_after_ms = 0"),
            &[r#"rules[0] "x".escalate_after_ms: must be at least 1"#],
        ),
        (
            rule("x", "escalate_after_ms = 3600000"),
            &[
                r#"rules[0] "x".escalate_after_ms: must be less than decision_deadline_ms (3600000)"#,
            ],
        ),
        (
            format!("[defaults]\nescalate_after_ms = 3600000\n{ok}"),
            &["defaults.escalate_after_ms: must be less than decision_deadline_ms"],
        ),
        (
            format!(
                "[defaults]\nescalate_after_ms = 900000\n{}",
                rule("x", "decision_deadline_ms = 600000")
            ),
            &[
                r#"rules[0] "x".decision_deadline_ms: must be greater than escalate_after_ms (900000, inherited"#,
            ],
        ),
        (
            rule("x", "escalate_after_declines = 0"),
            &[r#"rules[0] "x".escalate_after_declines: must be from 1 to 50"#],
        ),
        (
            rule("x", "escalate_after_declines = 51"),
            &[r#"rules[0] "x".escalate_after_declines"#],
        ),
        // Names.
        (
            format!("{ok}{}", rule("ok", "level = 2")),
            &[r#"rules[1] "ok".name: duplicates the name of rules[0] "ok""#],
        ),
        (
            rule("Cash Large", ""),
            &[r#"rules[0] "Cash Large".name: must be 1 to 64 characters"#],
        ),
        (rule(&"a".repeat(65), ""), &[".name: must be 1 to 64"]),
        (rule("", ""), &[r#"rules[0] "".name"#]),
        (
            rule("unmatched-default", ""),
            &[r#"rules[0] "unmatched-default".name: "unmatched-default" is reserved"#],
        ),
        (
            format!("{ok}[[rules]]\ncodes = [\"A\"]\n"),
            &["rules[1].name: missing"],
        ),
        (
            format!("{ok}[[rules]]\nname = 7\ncodes = [\"A\"]\n"),
            &["rules[1].name: must be a string"],
        ),
        // Codes.
        (
            "[[rules]]\nname = \"x\"\ncodes = []\n".into(),
            &[r#"rules[0] "x".codes: must list at least one"#],
        ),
        (
            "[[rules]]\nname = \"x\"\n".into(),
            &[r#"rules[0] "x".codes: missing"#],
        ),
        (
            "[[rules]]\nname = \"x\"\ncodes = \"WDL-CASH\"\n".into(),
            &[r#"rules[0] "x".codes: must be an array of strings"#],
        ),
        (
            "[[rules]]\nname = \"x\"\ncodes = [\"A\", 3]\n".into(),
            &[r#"rules[0] "x".codes: every code must be a string, found integer"#],
        ),
        (
            "[[rules]]\nname = \"x\"\ncodes = [\"\"]\n".into(),
            &[r#"rules[0] "x".codes: "" is not a transaction code"#],
        ),
        (
            format!(
                "[[rules]]\nname = \"x\"\ncodes = [\"{}\"]\n",
                "A".repeat(33)
            ),
            &[r#"rules[0] "x".codes"#, "1 to 32"],
        ),
        (
            "[[rules]]\nname = \"x\"\ncodes = [\"WDL-CASH \"]\n".into(),
            &[r#"rules[0] "x".codes: "WDL-CASH " is not"#],
        ),
        (
            "[[rules]]\nname = \"x\"\ncodes = [\"A\", \"A\"]\n".into(),
            &[r#"rules[0] "x".codes: "A" is listed twice"#],
        ),
        // Currency and amounts.
        (
            rule("x", "currency = \"cny\""),
            &[r#"rules[0] "x".currency: must be an ISO 4217 code"#],
        ),
        (
            rule("x", "currency = \"CNYX\""),
            &[r#"rules[0] "x".currency"#],
        ),
        (
            rule("x", "amount_from = 100"),
            &[r#"rules[0] "x".amount_from: requires currency"#],
        ),
        (
            rule("x", "amount_below = 100"),
            &[r#"rules[0] "x".amount_below: requires currency"#],
        ),
        (
            rule("x", "currency = \"CNY\"\namount_from = -1"),
            &[r#"rules[0] "x".amount_from: must be at least 0"#],
        ),
        (
            rule(
                "cash-large",
                "currency = \"CNY\"\namount_from = 500\namount_below = 500",
            ),
            &[
                r#"rules[0] "cash-large".amount_below: must be greater than amount_from (500), found 500"#,
            ],
        ),
        (
            rule("x", "currency = \"CNY\"\namount_below = 0"),
            &[r#"rules[0] "x".amount_below: must be greater than 0"#],
        ),
        // Shadowing: a rule (for some code) that can never match.
        (
            format!(
                "{}{}",
                rule("a", "currency = \"CNY\"\namount_from = 5\namount_below = 9"),
                rule(
                    "b",
                    "currency = \"CNY\"\namount_from = 5\namount_below = 9\nlevel = 3"
                ),
            ),
            &[
                r#"rules[1] "b".codes: "WDL-CASH" can never reach this rule: rules[0] "a" already covers every CNY amount"#,
            ],
        ),
        (
            format!(
                "{}{}{}",
                rule("low", "currency = \"CNY\"\namount_below = 100"),
                rule("high", "currency = \"CNY\"\namount_from = 100"),
                rule(
                    "mid",
                    "currency = \"CNY\"\namount_from = 50\namount_below = 150"
                ),
            ),
            &[
                r#"rules[2] "mid".codes"#,
                r#"rules[0] "low" and rules[1] "high" already cover every CNY amount"#,
            ],
        ),
        (
            format!("{ok}{}", rule("x", "currency = \"USD\"")),
            &[r#"rules[1] "x".codes: "WDL-CASH" can never reach this rule: rules[0] "ok""#],
        ),
        (
            format!("{ok}[[rules]]\nname = \"x\"\ncodes = [\"NEW\", \"WDL-CASH\"]\n"),
            &[
                r#"rules[1] "x".codes: "WDL-CASH" can never reach"#,
                "every currency and amount",
            ],
        ),
        (
            // Swapping the sample's two CNY rules hides the stricter one.
            SAMPLE
                .replacen(
                    "name = \"cash-withdrawal-cny-very-large\"",
                    "name = \"tmp\"",
                    1,
                )
                .replacen(
                    "name = \"cash-withdrawal-cny-large\"",
                    "name = \"cash-withdrawal-cny-very-large\"",
                    1,
                )
                .replacen("name = \"tmp\"", "name = \"cash-withdrawal-cny-large\"", 1)
                .replacen("amount_from = 50_000_000", "amount_from = X", 1)
                .replacen("amount_from = 5_000_000", "amount_from = 50_000_000", 1)
                .replacen("amount_from = X", "amount_from = 5_000_000", 1),
            &[
                r#"rules[1] "cash-withdrawal-cny-very-large".codes: "WDL-CASH" can never reach this rule: rules[0] "cash-withdrawal-cny-large""#,
            ],
        ),
        // Nothing to match and nothing allowed.
        (
            "[defaults]\nlevel = 2\n".into(),
            &["rules: no rules, and unmatched.allow is false"],
        ),
        (
            "[unmatched]\nallow = false\nrules = []\n".into(),
            &["unmatched.rules: unknown field"],
        ),
    ];
    assert!(cases.len() >= 15);
    // Collect every failure so one run shows them all.
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        match Policy::parse(text) {
            Ok(_) => failures.push(format!("accepted a broken policy:\n{text}")),
            Err(err) => {
                let err = err.to_string();
                for fragment in *expected {
                    if !err.contains(fragment) {
                        failures.push(format!(
                            "error {err:?}\nlacks {fragment:?}\nfor policy:\n{text}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
