//! Authorization policy: which teller transactions need whose authority.
//!
//! This module owns the bank's policy file: reading it, refusing it whole if
//! any part of it is wrong, and evaluating a transaction (code, currency,
//! amount) against it to produce the domain's [`Requirements`]. It does not know who the
//! supervisors are, does not run timers and does not escalate anything; it only
//! says what a request needs, and the engine enforces that. Apart from
//! [`Policy::load`], which reads one file, it does no I/O.
//!
//! # File format
//!
//! The policy is TOML. Every amount is an integer in the currency's minor
//! units (fen for CNY, cents for USD), so that no float ever touches money.
//!
//! ```toml
//! # Values every rule inherits unless it sets its own.
//! [defaults]
//! level = 1                      # authority level needed, 1..=9
//! approvals = 1                  # 1, or 2 for dual control
//! independent = true             # supervisor must not be of the teller's branch
//! priority = 0                   # 0..=9, higher is offered first
//! offer_timeout_ms = 30000       # 1000..=600000
//! decision_deadline_ms = 3600000 # 10000..=604800000 (a week); the request EXPIRES after it
//! escalate_after_ms = 900000     # optional; > 0 and < decision_deadline_ms: waiting this long unaccepted raises the level by one
//! escalate_after_declines = 3    # optional; 1..=50: this many declines raise the level by one
//!
//! [unmatched]
//! allow = false                  # true: a request no rule matches gets the defaults; false: refused
//!
//! [[rules]]
//! name = "cash-withdrawal-large"   # unique, 1..64 of [a-z0-9-]
//! codes = ["WDL-CASH"]             # one or more transaction codes this rule covers
//! currency = "CNY"                 # optional; required when amount_from/amount_below is set; ISO 4217 3 upper letters
//! amount_from = 5000000            # optional, minor units, inclusive, >= 0
//! amount_below = 50000000          # optional, minor units, exclusive, > amount_from
//! level = 2                        # any defaults field may be overridden here
//! ```
//!
//! Missing `[defaults]` fields take the values shown above, without the two
//! optional escalation fields. A missing `[unmatched]` means `allow = false`:
//! refusing is the safe reading of silence.
//!
//! # Matching
//!
//! Rules are tried in file order and the first match wins. Banks write policy
//! as exceptions followed by the general rule ("reversals need level 2, except
//! very large ones, which need level 3"), so the exception must come first and
//! must not be overridden by the broader rule below it. First match also makes
//! the outcome easy to explain to an auditor: one rule decided, and it is
//! named in [`Requirements::rule`].
//!
//! A rule matches when the transaction code is in its `codes` and, if the rule
//! sets `currency`, the currency is exactly that one and the amount lies in
//! `[amount_from, amount_below)`. An absent `amount_from` is 0, so a negative
//! amount never matches a currency rule; an absent `amount_below` is unbounded.
//! A rule without `currency` matches every currency and amount. Codes and
//! currencies are compared exactly: the caller validates and canonicalises
//! them (upper-case ISO 4217) before calling [`Policy::evaluate`].
//!
//! # Validation
//!
//! [`Policy::parse`] stops at the first error, in file order, and returns no
//! policy at all: a half-valid policy must never load, because the rule that
//! failed might be exactly the one that demands dual control. Every message
//! names where it is, as `defaults.level`, `unmatched.allow` or
//! `rules[3] "cash-large".amount_below` (the index counts `[[rules]]` tables
//! from 0). Besides the ranges above it refuses unknown fields (a misspelt
//! `levle = 3` would otherwise silently leave the level at the default),
//! duplicate or reserved rule names, malformed codes and currencies, and a code
//! that can never reach a rule because earlier rules already cover every
//! amount it would match for that code.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::{Table, Value};

use crate::domain::Requirements;

/// The rule name reported when no rule matched and `unmatched.allow = true`
/// handed out the defaults. Reserved: no rule may be called this, or an audit
/// record could not tell the two cases apart.
pub const UNMATCHED_RULE: &str = "unmatched-default";

/// A realistic policy for a branch network of a Chinese bank, used in tests
/// and as the starting point for a new deployment.
pub const SAMPLE: &str = r#"# Countersign authorization policy: branch network, mainland China.
# Amounts are in minor units: fen for CNY (100 fen = 1 yuan), cents for USD.
# Rules are tried top to bottom and the first match wins, so every
# exception sits above the general rule it narrows.

[defaults]
level = 1                      # a branch supervisor (主管)
approvals = 1
independent = true             # the approver must sit outside the teller's branch
priority = 2                   # room both above and below for urgent and routine work
offer_timeout_ms = 30000       # re-offer to another supervisor after 30 s
decision_deadline_ms = 3600000 # the customer will not wait at the counter for more than an hour
escalate_after_ms = 900000     # 15 min with nobody accepting: ask the next level up
escalate_after_declines = 3    # three supervisors said no: ask the next level up

[unmatched]
# The teller system sends only transactions that may need authority; one
# that arrives with no rule for it is a configuration gap, and is refused
# rather than guessed at.
allow = false

# 大额现金支取: CNY cash of 500,000.00 and above. Must come before the
# 50,000.00 rule, which also covers these amounts. Sums this large need two
# approvers at level 3 (sub-branch president, 支行行长) and go to the front
# of the queue.
[[rules]]
name = "cash-withdrawal-cny-very-large"
codes = ["WDL-CASH"]
currency = "CNY"
amount_from = 50_000_000       # 500,000.00 CNY
level = 3
approvals = 2
priority = 6

# CNY cash of 50,000.00 and above (the band up to 500,000.00 is left to this
# rule by the one above).
[[rules]]
name = "cash-withdrawal-cny-large"
codes = ["WDL-CASH"]
currency = "CNY"
amount_from = 5_000_000        # 50,000.00 CNY
level = 2

# Foreign currency cash: USD 5,000.00 and above.
[[rules]]
name = "cash-withdrawal-usd-large"
codes = ["WDL-CASH"]
currency = "USD"
amount_from = 500_000          # 5,000.00 USD
level = 2

# 冲正: a reversal undoes a posted transaction, whatever its amount or currency.
[[rules]]
name = "reversal"
codes = ["REV-TXN"]
level = 2

# 销户: closing an account ends the relationship; a supervisor confirms it.
[[rules]]
name = "account-closure"
codes = ["ACC-CLOSE"]
level = 1

# 密码重置: routine, and the customer is identified at the counter, so it
# waits behind money movements.
[[rules]]
name = "password-reset"
codes = ["PWD-RESET"]
level = 1
priority = 0
"#;

/// A validated policy, together with the exact text it was read from.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file text byte for byte, so what is hashed and what the admin RPC
    /// hands back are exactly what was loaded.
    text: String,
    /// Lowercase hex SHA-256 of `text`.
    sha256: String,
    /// What every rule inherits, and what unmatched requests get if allowed.
    defaults: Settings,
    /// `unmatched.allow`: whether a request no rule matches gets `defaults`.
    allow_unmatched: bool,
    /// The rules in file order, which is also the order they are tried in.
    rules: Vec<Rule>,
    /// Every code any rule names, for [`Policy::knows_code`].
    codes: BTreeSet<String>,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read. The I/O error is part of the message
    /// rather than a `source`, so error-chain printers do not repeat it.
    #[error("cannot read policy file {}: {error}", .path.display())]
    Io {
        /// The path that was given to [`Policy::load`].
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The text is not TOML; the message keeps toml's line and column.
    #[error("policy is not valid TOML: {0}")]
    Syntax(toml::de::Error),
    /// The TOML is well formed but breaks a policy rule.
    #[error("{at}: {reason}")]
    Invalid {
        /// Where: `defaults.level`, `unmatched.allow`, `rules[3] "cash-large".amount_below`.
        at: String,
        /// What is wrong there.
        reason: String,
    },
}

/// A request that no rule covers, in a policy with `unmatched.allow = false`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("no policy rule matches transaction code {code} for {currency} {minor_units}")]
pub struct NoRuleMatches {
    /// The transaction code as submitted.
    pub code: String,
    /// The currency as submitted.
    pub currency: String,
    /// The amount as submitted, in minor units.
    pub minor_units: i64,
}

/// The inheritable part of a rule: everything in `[defaults]`, after a table's own fields
/// are laid over what it inherits. A shape of its own rather than [`Requirements`] because
/// `[defaults]` and a rule's settings have no rule name and no policy hash until
/// [`Settings::requirements`], the one place they become requirements, adds them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    /// See [`Requirements::level`].
    level: u8,
    /// See [`Requirements::approvals`].
    approvals: u8,
    /// See [`Requirements::independent`].
    independent: bool,
    /// See [`Requirements::priority`].
    priority: u8,
    /// See [`Requirements::offer_timeout_ms`].
    offer_timeout_ms: u64,
    /// See [`Requirements::decision_deadline_ms`].
    decision_deadline_ms: u64,
    /// See [`Requirements::escalate_after_ms`].
    escalate_after_ms: Option<u64>,
    /// See [`Requirements::escalate_after_declines`].
    escalate_after_declines: Option<u32>,
}

/// What an absent `[defaults]` field means.
const BUILTIN: Settings = Settings {
    level: 1,
    approvals: 1,
    independent: true,
    priority: 0,
    offer_timeout_ms: 30_000,
    decision_deadline_ms: 3_600_000,
    escalate_after_ms: None,
    escalate_after_declines: None,
};

/// The fields `[defaults]` accepts, and every rule may override.
const SETTING_FIELDS: [&str; 8] = [
    "level",
    "approvals",
    "independent",
    "priority",
    "offer_timeout_ms",
    "decision_deadline_ms",
    "escalate_after_ms",
    "escalate_after_declines",
];

/// The fields only a rule has.
const MATCH_FIELDS: [&str; 5] = ["name", "codes", "currency", "amount_from", "amount_below"];

/// Longest rule name; long enough to be descriptive, short enough for a log column.
const MAX_NAME_LEN: usize = 64;

/// Longest transaction code; core-system codes are short mnemonics like `WDL-CASH`.
const MAX_CODE_LEN: usize = 32;

/// One `[[rules]]` entry, with its defaults already applied.
#[derive(Debug, Clone)]
struct Rule {
    /// Unique name, recorded as [`Requirements::rule`].
    name: String,
    /// Transaction codes this rule covers; never empty.
    codes: Vec<String>,
    /// If set, the rule covers only this currency and the amount range below.
    currency: Option<String>,
    /// Inclusive lower bound in minor units; 0 when the file leaves it out.
    amount_from: i64,
    /// Exclusive upper bound in minor units; `None`: unbounded.
    amount_below: Option<i64>,
    /// What the rule demands, its own fields laid over `[defaults]`.
    settings: Settings,
}

impl Policy {
    /// Parses and validates a policy, refusing it whole at the first error.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let doc: Table = text.parse().map_err(PolicyError::Syntax)?;
        for key in doc.keys() {
            if !["defaults", "unmatched", "rules"].contains(&key.as_str()) {
                return Err(invalid(
                    key,
                    "unknown field (a policy has only [defaults], [unmatched] and [[rules]])",
                ));
            }
        }

        let defaults = match doc.get("defaults") {
            None => BUILTIN,
            Some(value) => {
                let section = Section::new("defaults".to_owned(), value, "a table ([defaults])")?;
                section.deny_unknown(&SETTING_FIELDS)?;
                section.settings(&BUILTIN)?
            }
        };

        let allow_unmatched = match doc.get("unmatched") {
            None => false,
            Some(value) => {
                let section = Section::new("unmatched".to_owned(), value, "a table ([unmatched])")?;
                section.deny_unknown(&["allow"])?;
                section.boolean("allow")?.unwrap_or(false)
            }
        };

        let entries: &[Value] = match doc.get("rules") {
            None => &[],
            Some(Value::Array(entries)) => entries,
            Some(other) => {
                return Err(invalid(
                    "rules",
                    format!(
                        "must be an array of tables ([[rules]]), found {}",
                        other.type_str()
                    ),
                ));
            }
        };
        let mut rules: Vec<Rule> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let rule = parse_rule(index, entry, &defaults)?;
            check_against_earlier(index, &rule, &rules)?;
            rules.push(rule);
        }
        if rules.is_empty() && !allow_unmatched {
            return Err(invalid(
                "rules",
                "no rules, and unmatched.allow is false: every request would be refused",
            ));
        }

        let codes = rules
            .iter()
            .flat_map(|rule| rule.codes.iter().cloned())
            .collect();
        Ok(Policy {
            text: text.to_owned(),
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            defaults,
            allow_unmatched,
            rules,
            codes,
        })
    }

    /// Reads the file at `path` and parses it with [`Policy::parse`].
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Io {
            path: path.to_owned(),
            error,
        })?;
        Policy::parse(&text)
    }

    /// Lowercase hex SHA-256 of the exact file text, recorded with every
    /// submission so any decision can be traced to the policy that made it.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The exact text, for the admin RPC that reads the policy back.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Rule names in file order, which is the order they are tried in.
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|rule| rule.name.as_str()).collect()
    }

    /// What a transaction needs: the first matching rule's requirements, the
    /// defaults if nothing matches and `unmatched.allow = true`, else an error.
    /// The requirements carry this policy's [`Policy::sha256`], so the record
    /// made of them names the policy that decided.
    pub fn evaluate(
        &self,
        code: &str,
        currency: &str,
        minor_units: i64,
    ) -> Result<Requirements, NoRuleMatches> {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.matches(code, currency, minor_units))
        {
            return Ok(rule.settings.requirements(&rule.name, &self.sha256));
        }
        if self.allow_unmatched {
            return Ok(self.defaults.requirements(UNMATCHED_RULE, &self.sha256));
        }
        Err(NoRuleMatches {
            code: code.to_owned(),
            currency: currency.to_owned(),
            minor_units,
        })
    }

    /// Whether any rule names `code` (for validating that a submitted code is
    /// known). Independent of `unmatched.allow`.
    pub fn knows_code(&self, code: &str) -> bool {
        self.codes.contains(code)
    }
}

impl Rule {
    /// Whether this rule covers the transaction (see the module doc).
    fn matches(&self, code: &str, currency: &str, minor_units: i64) -> bool {
        if !self.codes.iter().any(|c| c == code) {
            return false;
        }
        match &self.currency {
            None => true,
            Some(own) => {
                own == currency
                    && minor_units >= self.amount_from
                    && self.amount_below.is_none_or(|below| minor_units < below)
            }
        }
    }

    /// Whether this rule covers `code` at every currency and amount.
    fn covers_all_of(&self, code: &str) -> bool {
        self.currency.is_none() && self.codes.iter().any(|c| c == code)
    }
}

impl Settings {
    /// What these settings demand, named by the rule that decided and the hash of the policy
    /// it is in. Destructures every field, so a new setting does not compile until it is
    /// carried into [`Requirements`] (or deliberately left out) here.
    fn requirements(&self, rule: &str, policy_sha256: &str) -> Requirements {
        let Settings {
            level,
            approvals,
            independent,
            priority,
            offer_timeout_ms,
            decision_deadline_ms,
            escalate_after_ms,
            escalate_after_declines,
        } = *self;
        Requirements {
            rule: rule.to_owned(),
            policy_sha256: policy_sha256.to_owned(),
            level,
            approvals,
            independent,
            priority,
            offer_timeout_ms,
            decision_deadline_ms,
            escalate_after_ms,
            escalate_after_declines,
        }
    }
}

/// `rules[3] "cash-large"`: how messages name a rule, by position and name,
/// since either alone can be ambiguous in a file being edited.
fn rule_label(index: usize, name: &str) -> String {
    format!("rules[{index}] {name:?}")
}

fn invalid(at: impl Into<String>, reason: impl fmt::Display) -> PolicyError {
    PolicyError::Invalid {
        at: at.into(),
        reason: reason.to_string(),
    }
}

fn parse_rule(index: usize, entry: &Value, defaults: &Settings) -> Result<Rule, PolicyError> {
    // The label uses whatever name is there, even an invalid one, so the
    // author can find the rule; the name itself is checked next.
    let raw_name = entry
        .as_table()
        .and_then(|table| table.get("name"))
        .and_then(Value::as_str);
    let label = match raw_name {
        Some(name) => rule_label(index, name),
        None => format!("rules[{index}]"),
    };
    let section = Section::new(label, entry, "a table ([[rules]])")?;

    let name = section
        .string("name")?
        .ok_or_else(|| section.err("name", "missing; every rule needs a unique name"))?;
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(section.err(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9 and -"),
        ));
    }
    if name == UNMATCHED_RULE {
        return Err(section.err(
            "name",
            format!("{UNMATCHED_RULE:?} is reserved for requests no rule matches"),
        ));
    }

    let known: Vec<&str> = MATCH_FIELDS
        .iter()
        .chain(&SETTING_FIELDS)
        .copied()
        .collect();
    section.deny_unknown(&known)?;

    let codes = section.codes()?;

    let currency = section.string("currency")?;
    if let Some(currency) = currency
        && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(section.err(
            "currency",
            format!("must be an ISO 4217 code of 3 upper-case letters, found {currency:?}"),
        ));
    }

    let amount_from: Option<i64> = section.int("amount_from", 0, i64::MAX)?;
    let amount_below: Option<i64> = section.int("amount_below", 0, i64::MAX)?;
    if currency.is_none() {
        // An amount is meaningless without its currency: 50000 fen and 50000
        // cents are very different sums.
        for (field, value) in [("amount_from", amount_from), ("amount_below", amount_below)] {
            if value.is_some() {
                return Err(section.err(field, "requires currency to be set"));
            }
        }
    }
    if let Some(below) = amount_below {
        let from = amount_from.unwrap_or(0);
        if below <= from {
            let what = if amount_from.is_some() {
                format!("amount_from ({from})")
            } else {
                "0".to_owned()
            };
            return Err(section.err(
                "amount_below",
                format!("must be greater than {what}, found {below}"),
            ));
        }
    }

    let settings = section.settings(defaults)?;
    Ok(Rule {
        name: name.to_owned(),
        codes,
        currency: currency.map(str::to_owned),
        amount_from: amount_from.unwrap_or(0),
        amount_below,
        settings,
    })
}

/// Checks that need the rules before `rule`: duplicate names and shadowing.
fn check_against_earlier(index: usize, rule: &Rule, earlier: &[Rule]) -> Result<(), PolicyError> {
    let label = rule_label(index, &rule.name);
    if let Some(first) = earlier.iter().position(|e| e.name == rule.name) {
        return Err(invalid(
            format!("{label}.name"),
            format!(
                "duplicates the name of {}; names must be unique so every decision names one rule",
                rule_label(first, &rule.name)
            ),
        ));
    }
    for code in &rule.codes {
        if let Some(shadowing) = shadowed_by(earlier, rule, code) {
            let names: Vec<String> = shadowing
                .iter()
                .map(|&i| rule_label(i, &earlier[i].name))
                .collect();
            let what = match &rule.currency {
                Some(currency) => format!("every {currency} amount"),
                None => "every currency and amount".to_owned(),
            };
            return Err(invalid(
                format!("{label}.codes"),
                format!(
                    "{code:?} can never reach this rule: {} already cover{} {what} it would match, and the first match wins",
                    names.join(" and "),
                    if names.len() == 1 { "s" } else { "" },
                ),
            ));
        }
    }
    Ok(())
}

/// The earlier rules that together leave `rule` nothing to match for `code`,
/// or `None` if some transaction with that code would still reach it.
fn shadowed_by(earlier: &[Rule], rule: &Rule, code: &str) -> Option<Vec<usize>> {
    if let Some(first) = earlier.iter().position(|e| e.covers_all_of(code)) {
        return Some(vec![first]);
    }
    // A rule without currency matches currencies no earlier currency rule
    // names, and negative amounts, so only a currency-less rule can shadow it.
    let currency = rule.currency.as_deref()?;
    let mut spans: Vec<(i64, Option<i64>, usize)> = earlier
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.currency.as_deref() == Some(currency) && e.codes.iter().any(|c| c == code)
        })
        .map(|(i, e)| (e.amount_from, e.amount_below, i))
        .collect();
    spans.sort_by_key(|&(from, _, _)| from);

    // Sweep upwards from the rule's lower bound over the earlier ranges,
    // sorted by start; `reached` is how far they cover without a gap, `None`
    // meaning without end.
    let mut reached = Some(rule.amount_from);
    let mut used = Vec::new();
    for (from, below, i) in spans {
        let Some(cursor) = reached else { break };
        if rule.amount_below.is_some_and(|end| cursor >= end) || from > cursor {
            break;
        }
        if below.is_none_or(|b| b > cursor) {
            reached = below;
            used.push(i);
        }
    }
    let covered = match (reached, rule.amount_below) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(reached), Some(end)) => reached >= end,
    };
    covered.then(|| {
        used.sort_unstable();
        used
    })
}

/// One TOML table of the policy, with the location used in its messages.
struct Section<'a> {
    /// `defaults`, `unmatched` or `rules[3] "cash-large"`.
    at: String,
    /// The table's fields as TOML parsed them, before any checking.
    table: &'a Table,
}

impl<'a> Section<'a> {
    fn new(at: String, value: &'a Value, expected: &str) -> Result<Self, PolicyError> {
        match value {
            Value::Table(table) => Ok(Section { at, table }),
            other => Err(invalid(
                at,
                format!("must be {expected}, found {}", other.type_str()),
            )),
        }
    }

    fn err(&self, field: &str, reason: impl fmt::Display) -> PolicyError {
        invalid(format!("{}.{field}", self.at), reason)
    }

    /// Refuses fields outside `known`. Done by hand rather than with serde's
    /// `deny_unknown_fields` so the message can name the rule as well as the
    /// field.
    fn deny_unknown(&self, known: &[&str]) -> Result<(), PolicyError> {
        match self.table.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(self.err(
                key,
                format!("unknown field (known fields: {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn string(&self, field: &str) -> Result<Option<&'a str>, PolicyError> {
        match self.table.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(
                field,
                format!("must be a string, found {}", other.type_str()),
            )),
        }
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>, PolicyError> {
        match self.table.get(field) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(
                field,
                format!("must be true or false, found {}", other.type_str()),
            )),
        }
    }

    /// An optional integer in `min..=max`, converted to the field's type.
    fn int<T: TryFrom<i64>>(
        &self,
        field: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<T>, PolicyError> {
        let value = match self.table.get(field) {
            None => return Ok(None),
            Some(Value::Integer(i)) => *i,
            Some(other) => {
                return Err(self.err(
                    field,
                    format!("must be an integer, found {}", other.type_str()),
                ));
            }
        };
        let range = if max == i64::MAX {
            format!("must be at least {min}")
        } else {
            format!("must be from {min} to {max}")
        };
        if !(min..=max).contains(&value) {
            return Err(self.err(field, format!("{range}, found {value}")));
        }
        // Cannot fail for the ranges used here, but an error beats a panic.
        T::try_from(value)
            .map(Some)
            .map_err(|_| self.err(field, format!("{range}, found {value}")))
    }

    /// The transaction codes of a rule: a non-empty array of distinct codes.
    fn codes(&self) -> Result<Vec<String>, PolicyError> {
        let entries = match self.table.get("codes") {
            None => {
                return Err(self.err(
                    "codes",
                    "missing; list the transaction codes this rule covers",
                ));
            }
            Some(Value::Array(entries)) => entries,
            Some(other) => {
                return Err(self.err(
                    "codes",
                    format!("must be an array of strings, found {}", other.type_str()),
                ));
            }
        };
        if entries.is_empty() {
            return Err(self.err("codes", "must list at least one transaction code"));
        }
        let mut codes: Vec<String> = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::String(code) = entry else {
                return Err(self.err(
                    "codes",
                    format!("every code must be a string, found {}", entry.type_str()),
                ));
            };
            // Spaces and control characters are refused because a code with a
            // stray space looks right in the file and silently never matches.
            if code.is_empty()
                || code.len() > MAX_CODE_LEN
                || !code.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(self.err(
                    "codes",
                    format!(
                        "{code:?} is not a transaction code: 1 to {MAX_CODE_LEN} printable ASCII characters without spaces"
                    ),
                ));
            }
            if codes.contains(code) {
                return Err(self.err("codes", format!("{code:?} is listed twice")));
            }
            codes.push(code.clone());
        }
        Ok(codes)
    }

    /// This table's settings fields laid over `base`, range-checked.
    fn settings(&self, base: &Settings) -> Result<Settings, PolicyError> {
        let mut s = base.clone();
        if let Some(v) = self.int("level", 1, 9)? {
            s.level = v;
        }
        if let Some(v) = self.int("approvals", 1, 2)? {
            s.approvals = v;
        }
        if let Some(v) = self.boolean("independent")? {
            s.independent = v;
        }
        if let Some(v) = self.int("priority", 0, 9)? {
            s.priority = v;
        }
        if let Some(v) = self.int("offer_timeout_ms", 1_000, 600_000)? {
            s.offer_timeout_ms = v;
        }
        if let Some(v) = self.int("decision_deadline_ms", 10_000, 604_800_000)? {
            s.decision_deadline_ms = v;
        }
        if let Some(v) = self.int("escalate_after_ms", 1, i64::MAX)? {
            s.escalate_after_ms = Some(v);
        }
        if let Some(v) = self.int("escalate_after_declines", 1, 50)? {
            s.escalate_after_declines = Some(v);
        }
        // Escalating at or after the deadline could never happen: the request
        // has expired by then. Blame whichever of the two this table set.
        if let Some(escalate) = s.escalate_after_ms
            && escalate >= s.decision_deadline_ms
        {
            let deadline = s.decision_deadline_ms;
            return Err(if self.table.contains_key("escalate_after_ms") {
                self.err(
                    "escalate_after_ms",
                    format!(
                        "must be less than decision_deadline_ms ({deadline}), found {escalate}"
                    ),
                )
            } else {
                self.err(
                    "decision_deadline_ms",
                    format!(
                        "must be greater than escalate_after_ms ({escalate}, inherited from [defaults]), found {deadline}"
                    ),
                )
            });
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            }
        );
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
        let dir =
            std::env::temp_dir().join(format!("countersign-policy-test-{}", std::process::id()));
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
}
