//! Reading a policy file: parsing the TOML and validating it, table by table and rule by
//! rule, into the [`Rule`]s and [`Settings`] that [`Policy::evaluate`] matches against.
//! The first error refuses the whole file (see the module doc of `policy`).

use std::fmt;

use sha2::{Digest, Sha256};
use toml::{Table, Value};

use super::{Policy, PolicyError, Rule, Settings, UNMATCHED_RULE};

/// Parses and validates a policy, refusing it whole at the first error; see [`Policy::parse`].
pub(super) fn policy(text: &str) -> Result<Policy, PolicyError> {
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
    rekey: Vec::new(),
    rekey_attempts: 3,
    fallback: false,
    review_percent: 0,
};

/// The fields `[defaults]` accepts, and every rule may override.
const SETTING_FIELDS: [&str; 12] = [
    "level",
    "approvals",
    "independent",
    "priority",
    "offer_timeout_ms",
    "decision_deadline_ms",
    "escalate_after_ms",
    "escalate_after_declines",
    "rekey",
    "rekey_attempts",
    "fallback",
    "review_percent",
];

/// The fields only a rule has.
const MATCH_FIELDS: [&str; 5] = ["name", "codes", "currency", "amount_from", "amount_below"];

/// Longest rule name; long enough to be descriptive, short enough for a log column.
const MAX_NAME_LEN: usize = 64;

/// Longest transaction code; core-system codes are short mnemonics like `WDL-CASH`.
const MAX_CODE_LEN: usize = 32;

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
        if let Some(v) = self.int("rekey_attempts", 1, 9)? {
            s.rekey_attempts = v;
        }
        if let Some(value) = self.table.get("rekey") {
            let entries = match value {
                Value::Array(a) => a,
                other => {
                    return Err(self.err(
                        "rekey",
                        format!("must be an array of strings, found {}", other.type_str()),
                    ));
                }
            };
            let mut fields = Vec::new();
            for entry in entries {
                let field = match entry {
                    Value::String(name) => crate::domain::RekeyField::parse(name),
                    _ => None,
                };
                let Some(field) = field else {
                    return Err(self.err(
                        "rekey",
                        format!(
                            "{entry} is not a field to re-key: \"amount\", \"account\" or \
                             \"counterparty\""
                        ),
                    ));
                };
                if fields.contains(&field) {
                    return Err(self.err("rekey", format!("{entry} is listed twice")));
                }
                fields.push(field);
            }
            fields.sort();
            s.rekey = fields;
        }
        if let Some(v) = self.boolean("fallback")? {
            s.fallback = v;
        }
        if let Some(v) = self.int("review_percent", 0, 100)? {
            s.review_percent = v;
        }
        // One on-site supervisor signs a fallback: dual control cannot be kept on site.
        if s.fallback && s.approvals > 1 {
            let field = if self.table.contains_key("fallback") {
                "fallback"
            } else {
                "approvals"
            };
            return Err(self.err(
                field,
                "fallback = true needs approvals = 1: one supervisor on site signs a fallback, \
                 so dual control cannot be kept",
            ));
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
