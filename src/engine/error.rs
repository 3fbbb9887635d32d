//! One error type per engine operation. The API maps each to a gRPC status in one place.

use std::sync::Arc;

use crate::domain::validate::FieldError;
use crate::domain::{FenceError, State};
use crate::storage::StorageError;

/// The engine cannot take the call: it is shutting down, stopped, or its ledger cannot write.
/// Nothing of the call was acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("engine unavailable: the engine is not running")]
    NotRunning,
    /// The call's records were appended but the ledger failed before they were durable.
    #[error("engine unavailable: the ledger could not make the call durable")]
    NotDurable,
    #[error("engine unavailable: the server is shutting down")]
    ShuttingDown,
    /// A store cannot write now (the ledger, the image store or the projection: a full disk,
    /// an I/O error); the engine serves again by itself once a probe of it succeeds.
    #[error("engine unavailable: storage cannot write: {0}")]
    CannotWrite(#[source] Arc<StorageError>),
    /// Storage failed in a way the engine does not recover from until a restart.
    #[error("engine unavailable: {action}: {source}")]
    Stopped {
        action: &'static str,
        #[source]
        source: Arc<StorageError>,
    },
    #[error("engine unavailable: the ledger writer stopped")]
    WriterStopped,
}

/// Reading stored state failed (ledger, projection): a server-side fault, not the caller's.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageFault(#[from] pub StorageError);

/// Storing a request's images failed; nothing that names them was recorded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreImagesError(#[source] pub StorageError);

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("teller serial {0} was already used for a different submission")]
    SerialReused(String),
    #[error("the queue holds {0} undecided requests, the most allowed")]
    QueueFull(usize),
    #[error("the teller has {0} undecided requests, the most allowed")]
    TellerPendingFull(u32),
    #[error("store image: {0}")]
    Image(#[from] StoreImagesError),
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a fallback registration (an on-site authorization) was refused.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("teller serial {0} was already used for a different submission or registration")]
    SerialReused(String),
    /// The policy rule for the code and amount keeps the transaction central.
    #[error(
        "policy rule {rule:?} keeps this transaction central: it does not allow fallback to a \
         supervisor on site"
    )]
    NotAllowed { rule: String },
    /// The certificate is not one the directory lists for that id, or the id is no
    /// supervisor's.
    #[error("{0}")]
    SupervisorUnknown(String),
    /// The signature or the certificate's validity does not check; `field` names which.
    #[error("{reason}")]
    SignatureInvalid { field: &'static str, reason: String },
    /// The on-site supervisor's level, ceiling or codes do not cover the transaction.
    #[error(
        "supervisor {supervisor} may not authorize this transaction (level {level} needed, \
         or the amount is over their ceiling, or the code is not theirs)"
    )]
    Authority { supervisor: String, level: u8 },
    #[error("store image: {0}")]
    Image(#[from] StoreImagesError),
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a reviewer's finding was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("request not found")]
    NotFound,
    /// The request was not drawn for review (not approved, or not sampled).
    #[error("the request is not drawn for review")]
    NotDrawn,
    /// Another finding is already recorded.
    #[error("the request was already reviewed ({0})")]
    Done(&'static str),
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("request not found")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("request not found")]
    NotFound,
    /// The client says it saw a version the request never reached (it watched a database
    /// that lost acknowledged writes, or it sends a version of another request).
    #[error("is {after}, past the request's current version {version}")]
    Ahead { after: u64, version: u64 },
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<GetError> for WatchError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::NotFound => WatchError::NotFound,
            GetError::Storage(e) => WatchError::Storage(e),
            GetError::Unavailable(e) => WatchError::Unavailable(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("request not found")]
    NotFound,
    #[error("the request is already {0:?} and can no longer be cancelled")]
    Final(State),
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum ResubmitError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("request not found")]
    NotFound,
    #[error("the request is {0:?}; only a RETURNED request can be resubmitted")]
    NotReturned(State),
    #[error("store image: {0}")]
    Image(#[from] StoreImagesError),
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum AttendError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("request not found")]
    NotFound,
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum DeclineError {
    #[error("request not found")]
    NotFound,
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("request not found")]
    NotFound,
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error("not allowed: {0}")]
    NotAllowed(Forbidden),
    /// The re-keyed fields do not match the transaction; recorded. With attempts left the
    /// request stays in review; without, it went back to the queue for someone else.
    #[error(
        "the re-keyed {} did not match the voucher's transaction; {attempts_left} attempts left",
        fields.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
    )]
    RekeyMismatch {
        fields: Vec<crate::domain::RekeyField>,
        attempts_left: u8,
    },
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a supervisor who holds the review may still not decide it: the checks dispatch made,
/// made again at Decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("a principal cannot decide their own request")]
    OwnRequest,
    #[error("a supervisor cannot decide a request from their own branch")]
    OwnBranch,
    #[error(
        "the request needs more authority (level, amount ceiling or transaction code) than this supervisor has"
    )]
    Authority,
    #[error("dual control: the second approval must come from another supervisor")]
    SameApprover,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("request not found")]
    NotFound,
    /// The request is not offered to or reviewed by the caller now.
    #[error("the request is not offered to or reviewed by this supervisor")]
    NotHeld,
    /// The request does not name this image.
    #[error("the request has no image with this SHA-256")]
    NotAttached,
    #[error("read image: {0}")]
    Store(#[source] StorageError),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    OutOfRange(String),
    #[error("the request has no approval or rejection yet")]
    NoDecision,
    /// More requests in a statistics range than `limits.stats_rows_max`.
    #[error("more than {max} requests ({reached} so far) in the range; narrow it")]
    TooMany { max: usize, reached: usize },
    #[error("read image: {0}")]
    Image(#[source] StorageError),
    /// Signing a checkpoint failed.
    #[error("sign checkpoint: {0}")]
    Checkpoint(#[from] super::checkpoints::CheckpointError),
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("the supervisor has no open Attend stream to pause")]
    NotAttending,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The errors of an action on an offer (Accept, Decline, Decide): the request may be gone
/// from the engine, and then the handle tells why from the projection.
pub(crate) trait OnOffer {
    fn is_not_found(&self) -> bool;
    fn fenced(e: FenceError) -> Self;
}

macro_rules! on_offer {
    ($($e:ident),*) => {$(
        impl OnOffer for $e {
            fn is_not_found(&self) -> bool {
                matches!(self, $e::NotFound)
            }
            fn fenced(e: FenceError) -> Self {
                $e::Fence(e)
            }
        }
    )*};
}

on_offer!(AcceptError, DeclineError, DecideError);
