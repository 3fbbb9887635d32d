//! One error type per engine operation. The API maps each to a gRPC status in one place.

use crate::domain::validate::FieldError;
use crate::domain::{FenceError, State};
use crate::storage::embedded::ImageStoreError;

/// The engine cannot take the call: its ledger failed or it is shutting down. Nothing of the
/// call was acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("engine unavailable: {0}")]
pub struct Unavailable(pub String);

/// Reading stored state failed (ledger or sled): a server-side fault, not the caller's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageFault(pub String);

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
    Image(#[from] ImageStoreError),
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
    Image(#[from] ImageStoreError),
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
    NotAllowed(&'static str),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("request not found")]
    NotFound,
    #[error("the image is not attached to a request this caller may see")]
    NotVisible,
    #[error("read image: {0}")]
    Store(#[from] ImageStoreError),
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
    #[error("{0}")]
    TooMany(String),
    #[error("read image: {0}")]
    Image(#[from] ImageStoreError),
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
