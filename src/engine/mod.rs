//! The engine: `EngineHandle`, the async API the gRPC layer calls, in front of the single
//! writer (`core`) that owns every undecided request. The writer wires parts that own their
//! own state: the request table (`requests`), supervisor sessions (`sessions`), timers
//! (`timers`), the outbox (`outbox`) and the dispatch choice (`dispatch`); `commands` says
//! what each call does. `recover` starts it from storage handed in by the composition root,
//! `load` reads requests back through the storage seam, `checkpoints` signs the tree,
//! `witnesses` has it cosigned, `audit`
//! serves auditors from durable state, `status` and `stats` count. Every call that changes
//! something is answered only after its ledger records are durable.

mod audit;
mod availability;
mod checkpoints;
mod clock;
mod command;
mod commands;
mod core;
mod dispatch;
pub mod error;
pub(crate) mod evicted;
mod handle;
mod load;
mod measure;
mod outbox;
mod recover;
mod requests;
mod sessions;
pub mod stats;
pub mod status;
mod timeouts;
mod timers;
mod watchers;
mod witnesses;

use std::sync::Arc;

pub use audit::{Inclusion, ProofTarget};
pub use checkpoints::{CheckpointError, Signed};
pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{Outcome, Revoked};
pub use error::*;
pub use handle::{EngineHandle, SessionGuard};
pub use load::Loaded;
pub use recover::UnsignedRecords;
pub use witnesses::WitnessState;

use crate::domain::{Request, RequestId, Timestamp, WithdrawReason};

/// Engine settings, validated by the server's config before they get here.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The policy in force at start (reloads replace it in the engine).
    pub policy: Arc<crate::policy::Policy>,
    /// How long a supervisor may hold an accepted request without deciding it.
    pub review_timeout_ms: u64,
    /// Requests one supervisor may hold (offered or in review) at once.
    pub supervisor_tasks_max: usize,
    /// Undecided requests the engine holds at most; Submit beyond it is RESOURCE_EXHAUSTED.
    pub queue_length_max: usize,
    /// Undecided requests one teller may have at once.
    pub pending_per_teller_max: u32,
    /// Images one request must carry at least (checked again at Resubmit).
    pub images_per_request_min: usize,
    /// Images one request may carry.
    pub images_per_request_max: usize,
    /// State changes buffered per Watch stream before a slow reader is dropped.
    pub watch_buffer: usize,
    /// Events buffered per Attend stream before a console that does not read is signed out.
    pub attend_buffer: usize,
    /// Commands buffered before callers wait.
    pub command_buffer: usize,
    /// How often timers are checked.
    pub tick_ms: u64,
    /// Most records or search results in one page.
    pub page_size_max: usize,
    /// Most index entries one search call examines.
    pub search_scan_max: usize,
    /// Most requests one statistics call covers.
    pub stats_rows_max: usize,
    /// The supervisors of the principal directory: escalation goes no higher than the highest
    /// level among them, and a queued request none of them may take is reported.
    pub supervisors: Arc<Vec<crate::domain::Principal>>,
    /// At start, check every image the ledger names is in the image store (`serve
    /// --check-all-images`), not only those of undecided requests and the recent records.
    pub check_all_images: bool,
    /// This node's name in the ledger's `engine_started` records: its cluster `node_id`, or
    /// the host's name.
    pub node: String,
    /// Lowercase hex SHA-256 of the principal directory in force at start.
    pub directory_sha256: String,
    /// Signing checkpoints of the ledger.
    pub checkpoints: CheckpointConfig,
}

/// How the ledger's checkpoints are signed.
#[derive(Clone)]
pub struct CheckpointConfig {
    /// The log's origin line, e.g. "bank.example/countersign".
    pub origin: String,
    /// The signer key text (C2SP note format, "PRIVATE+KEY+...").
    pub signer_key: String,
    /// How often a new checkpoint is signed while records arrive.
    pub interval_ms: u64,
    /// The most records that may be beyond the last checkpoint; one is signed once half that
    /// many are unsigned, and a server whose ledger has more refuses to start.
    pub unsigned_records_max: u64,
    /// The witnesses each new checkpoint is sent to for cosigning.
    pub witnesses: Vec<WitnessConfig>,
}

/// A witness the centre sends its checkpoints to (c2sp.org/tlog-witness).
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    /// Its public key; the key's name is the witness's name.
    pub key: crate::ledger::cosignature::WitnessKey,
    /// Where it listens.
    pub endpoint: crate::witness::client::Endpoint,
}

impl std::fmt::Debug for CheckpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("CheckpointConfig")
            .field("origin", &self.origin)
            .field("interval_ms", &self.interval_ms)
            .field("witnesses", &self.witnesses)
            .finish_non_exhaustive()
    }
}

/// The policy in force for new submissions. A reload swaps the `Arc`; evaluation takes a
/// clone of it per submission, so a reload never changes a submission half-way.
pub type SharedPolicy = Arc<std::sync::RwLock<Arc<crate::policy::Policy>>>;

/// What a supervisor's Attend stream carries.
// Sent once per offer through a bounded channel; boxing the request would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum SupervisorEvent {
    Offer {
        request: Request,
        epoch: u64,
        accept_by: Timestamp,
        pool_size: u32,
    },
    Withdrawn {
        request: RequestId,
        epoch: u64,
        reason: Withdrawal,
    },
    /// A request this supervisor accepted before a restart or takeover and still holds in
    /// review; sent when Attend opens, so the console can show it and decide it.
    Review {
        request: Request,
        epoch: u64,
        review_by: Timestamp,
    },
    /// The duty manager (`by`) paused or resumed offers to this supervisor.
    Presence {
        paused: bool,
        by: crate::domain::PrincipalId,
    },
    /// A newer Attend by the same supervisor replaced this stream.
    Superseded,
    /// The supervisor's entry or certificate left the principal directory (or changed): the
    /// stream ends, and what they held went back to the queue.
    Revoked,
}

/// What Submit answers.
pub struct Submitted {
    pub request: Request,
    /// True when this was a retry of an earlier identical Submit.
    pub replayed: bool,
}

/// Why a supervisor lost a request they held, as their Attend stream tells it: a recorded
/// withdrawal, or an event of its own (a timeout, a cancellation, an expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    /// An OfferWithdrawn record with this reason.
    Withdrawn(WithdrawReason),
    /// The offer was not accepted in time (an OfferTimedOut record).
    OfferTimeout,
    /// The teller cancelled the request.
    Cancelled,
    /// The request passed its decision deadline.
    Expired,
}

impl Withdrawal {
    /// The contract's name for it (`OfferWithdrawn.reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Withdrawal::Withdrawn(reason) => reason.as_str(),
            Withdrawal::OfferTimeout => "offer_timeout",
            Withdrawal::Cancelled => "cancelled",
            Withdrawal::Expired => "expired",
        }
    }
}

impl From<Withdrawal> for String {
    fn from(w: Withdrawal) -> String {
        w.as_str().to_owned()
    }
}
