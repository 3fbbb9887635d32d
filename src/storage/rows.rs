//! The rows of the audit projection, whatever backend keeps them: what one ledger record
//! changes (`RowUpdate`), what audit search lists (`Summary`), and search queries and pages.
//! `Summary` is serde because the embedded backend stores it as JSON; its field names are that
//! backend's stored format.

use serde::{Deserialize, Serialize};

use crate::domain::{PrincipalId, RequestId, State, TellerSerial};

/// What one ledger record changes in the projections.
#[derive(Debug, Clone)]
pub struct RowUpdate {
    pub index: u64,
    pub request: RequestId,
    /// The request's state after the record.
    pub state: State,
    /// For a Submitted record: the teller, serial and content fingerprint to index.
    pub created: Option<(PrincipalId, TellerSerial, [u8; 32])>,
    /// For a Decided record (approve, reject or return): who decided.
    pub decided_by: Option<PrincipalId>,
    /// What audit search shows and filters on, as of this record.
    pub summary: Summary,
}

/// A request as audit search lists it, kept in its projection row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub teller: String,
    pub branch: String,
    pub code: String,
    pub minor_units: i64,
    pub currency: String,
    pub submitted_at_ms: i64,
    pub updated_at_ms: i64,
    /// Stored name of the state (see `state_name`).
    pub state: String,
    /// Everyone who decided it (returns and first approvals included), in order.
    pub deciders: Vec<String>,
    /// Whose decision made it APPROVED or REJECTED.
    #[serde(default)]
    pub final_decider: Option<String>,
    #[serde(default)]
    pub first_accepted_at_ms: Option<i64>,
    /// When it reached a final state.
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    /// A registered fallback's on-site supervisor.
    #[serde(default)]
    pub on_site_supervisor: Option<String>,
    /// When the on-site supervisor authorized it.
    #[serde(default)]
    pub on_site_at_ms: Option<i64>,
    /// Its after-the-fact review: "pending", "confirmed" or "flagged"; `None` when not drawn.
    #[serde(default)]
    pub review: Option<String>,
    /// How many times it was returned to the teller. A row written before this was kept
    /// reads 0 until the projection is rebuilt from the ledger.
    #[serde(default)]
    pub returns: u32,
}

impl Summary {
    pub fn of(r: &crate::domain::Request) -> Summary {
        let t = &r.submission.transaction;
        // Returns and approvals in time order, then the final decision.
        let mut earlier: Vec<(crate::domain::Timestamp, String)> = r
            .returns
            .iter()
            .map(|x| (x.at, x.supervisor.to_string()))
            .chain(r.approvals.iter().map(|a| (a.at, a.supervisor.to_string())))
            .collect();
        earlier.sort();
        let mut deciders: Vec<String> = earlier.into_iter().map(|(_, s)| s).collect();
        if let Some(d) = &r.decision {
            deciders.push(d.supervisor.to_string());
        }
        Summary {
            teller: r.teller.to_string(),
            branch: r.branch.to_string(),
            code: t.code.clone(),
            minor_units: t.amount.minor_units,
            currency: t.amount.currency.clone(),
            submitted_at_ms: r.submitted_at.0,
            updated_at_ms: r.updated_at.0,
            state: state_name(r.state).into(),
            deciders,
            final_decider: r.decision.as_ref().map(|d| d.supervisor.to_string()),
            first_accepted_at_ms: r.first_accepted_at.map(|t| t.0),
            finished_at_ms: r.state.is_final().then_some(r.updated_at.0),
            on_site_supervisor: r.on_site.as_ref().map(|o| o.supervisor.to_string()),
            on_site_at_ms: r.on_site.as_ref().map(|o| o.decided_at.0),
            review: r.review.as_ref().map(|v| v.status().to_owned()),
            returns: u32::try_from(r.returns.len()).unwrap_or(u32::MAX),
        }
    }

    pub fn state(&self) -> Option<State> {
        state_from(&self.state)
    }
}

/// Which index a search walks; the others are filters on the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    Teller(String),
    Supervisor(String),
    Branch(String),
    Code(String),
    Outcome(State),
    All,
}

/// A search over the indexes, newest submission first.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub teller: Option<String>,
    pub supervisor: Option<String>,
    pub branch: Option<String>,
    pub code: Option<String>,
    /// A final state (or RETURNED).
    pub outcome: Option<State>,
    /// Submitted at or after (ms).
    pub from_ms: Option<i64>,
    /// Submitted before (ms).
    pub until_ms: Option<i64>,
    pub page_size: usize,
    /// Index entries examined at most in this call; a page may come back short with a cursor.
    pub scan_max: usize,
    /// Continue after this index key (from the previous page).
    pub cursor: Option<Vec<u8>>,
    /// Only requests whose review is in this status ("pending", "confirmed", "flagged").
    pub review: Option<String>,
}

/// One page of search results.
#[derive(Debug)]
pub struct SearchPage {
    pub hits: Vec<(RequestId, Summary)>,
    /// Where the next page starts; `None` at the end.
    pub cursor: Option<Vec<u8>>,
}

pub fn state_name(s: State) -> &'static str {
    match s {
        State::Queued => "queued",
        State::Offered => "offered",
        State::InReview => "in_review",
        State::Approved => "approved",
        State::Rejected => "rejected",
        State::Returned => "returned",
        State::Cancelled => "cancelled",
        State::Expired => "expired",
        State::Fallback => "fallback",
    }
}

pub(crate) fn state_from(s: &str) -> Option<State> {
    Some(match s {
        "queued" => State::Queued,
        "offered" => State::Offered,
        "in_review" => State::InReview,
        "approved" => State::Approved,
        "rejected" => State::Rejected,
        "returned" => State::Returned,
        "cancelled" => State::Cancelled,
        "expired" => State::Expired,
        "fallback" => State::Fallback,
        _ => return None,
    })
}
