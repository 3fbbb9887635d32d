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
//! rekey = ["amount", "account"]  # optional; fields an approver types from the voucher ("amount", "account", "counterparty"), withheld from them until the decision
//! rekey_attempts = 3             # 1..=9: mismatches one supervisor may make before the request goes to another
//! fallback = false               # true: a branch that cannot use the centre may authorize on site and register it afterwards (needs approvals = 1)
//! review_percent = 0             # 0..=100: share of approvals drawn at random for after-the-fact review (every fallback is reviewed)
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
use std::path::{Path, PathBuf};

use crate::domain::Requirements;

mod parse;

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
review_percent = 5             # 事后监督: one approval in twenty is reviewed again afterwards

[unmatched]
# The teller system sends only transactions that may need authority; one
# that arrives with no rule for it is a configuration gap, and is refused
# rather than guessed at.
allow = false

# 大额现金支取: CNY cash of 500,000.00 and above. Must come before the
# 50,000.00 rule, which also covers these amounts. Sums this large need two
# approvers at level 3 (sub-branch president, 支行行长) and go to the front
# of the queue. Each approver types the amount and the account from the
# voucher without seeing what the teller entered (要素复核); three wrong
# tries and the request goes to someone else.
[[rules]]
name = "cash-withdrawal-cny-very-large"
codes = ["WDL-CASH"]
currency = "CNY"
amount_from = 50_000_000       # 500,000.00 CNY
level = 3
approvals = 2
priority = 6
rekey = ["amount", "account"]
review_percent = 20

# CNY cash of 50,000.00 and above (the band up to 500,000.00 is left to this
# rule by the one above). When the branch cannot use the centre, a level-2
# supervisor on site may authorize it (应急授权); the teller registers it
# afterwards with that supervisor's signature (docs/fallback.md).
[[rules]]
name = "cash-withdrawal-cny-large"
codes = ["WDL-CASH"]
currency = "CNY"
amount_from = 5_000_000        # 50,000.00 CNY
level = 2
fallback = true

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
    /// See [`Requirements::rekey`]: sorted, each once.
    rekey: Vec<crate::domain::RekeyField>,
    /// See [`Requirements::rekey_attempts`].
    rekey_attempts: u8,
    /// See [`Requirements::fallback`].
    fallback: bool,
    /// See [`Requirements::review_percent`].
    review_percent: u8,
}

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
        parse::policy(text)
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
            rekey,
            rekey_attempts,
            fallback,
            review_percent,
        } = self;
        Requirements {
            rule: rule.to_owned(),
            policy_sha256: policy_sha256.to_owned(),
            level: *level,
            approvals: *approvals,
            independent: *independent,
            priority: *priority,
            offer_timeout_ms: *offer_timeout_ms,
            decision_deadline_ms: *decision_deadline_ms,
            escalate_after_ms: *escalate_after_ms,
            escalate_after_declines: *escalate_after_declines,
            // Attempts mean nothing without fields to re-key: 0 keeps the record unchanged.
            rekey_attempts: if rekey.is_empty() { 0 } else { *rekey_attempts },
            rekey: rekey.clone(),
            fallback: *fallback,
            review_percent: *review_percent,
        }
    }
}

#[cfg(test)]
mod tests;
