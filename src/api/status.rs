//! The one place where errors become gRPC status codes.

use tonic::Status;

use crate::domain::FenceError;
use crate::domain::validate::FieldError;
use crate::engine::*;
use crate::storage::StorageError;

/// INVALID_ARGUMENT naming the field twice: in the message, for people, and in a
/// `google.rpc.BadRequest` detail, for programs.
pub fn invalid(e: FieldError) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        e.to_string(),
        ErrorDetails::with_bad_request_violation(e.field, e.reason),
    )
}

fn unavailable(e: Unavailable) -> Status {
    Status::unavailable(e.to_string())
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal(format!("internal error: {e}"))
}

fn fence(e: FenceError) -> Status {
    Status::failed_precondition(e.to_string())
}

/// A storage error where a caller reads an image: a missing image is NOT_FOUND, a backend
/// that cannot serve now is UNAVAILABLE (worth retrying), anything else is INTERNAL.
fn image_store(e: StorageError) -> Status {
    match e {
        StorageError::ImageNotFound(_) => Status::not_found(e.to_string()),
        StorageError::Unavailable { .. } | StorageError::Join(_) => {
            Status::unavailable(e.to_string())
        }
        e => internal(e),
    }
}

impl From<SubmitError> for Status {
    fn from(e: SubmitError) -> Status {
        match e {
            SubmitError::Invalid(f) => invalid(f),
            SubmitError::SerialReused(_) => Status::already_exists(e.to_string()),
            SubmitError::QueueFull(_) | SubmitError::TellerPendingFull(_) => {
                Status::resource_exhausted(e.to_string())
            }
            SubmitError::Image(e) => Status::unavailable(format!("store image: {e}")),
            SubmitError::Storage(e) => internal(e),
            SubmitError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<GetError> for Status {
    fn from(e: GetError) -> Status {
        match e {
            GetError::NotFound => Status::not_found(e.to_string()),
            GetError::Storage(e) => internal(e),
            GetError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<CancelError> for Status {
    fn from(e: CancelError) -> Status {
        match e {
            CancelError::NotFound => Status::not_found(e.to_string()),
            CancelError::Final(_) => Status::failed_precondition(e.to_string()),
            CancelError::Storage(e) => internal(e),
            CancelError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<ResubmitError> for Status {
    fn from(e: ResubmitError) -> Status {
        match e {
            ResubmitError::Invalid(f) => invalid(f),
            ResubmitError::NotFound => Status::not_found(e.to_string()),
            ResubmitError::NotReturned(_) => Status::failed_precondition(e.to_string()),
            ResubmitError::Image(e) => Status::unavailable(format!("store image: {e}")),
            ResubmitError::Storage(e) => internal(e),
            ResubmitError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<AttendError> for Status {
    fn from(e: AttendError) -> Status {
        match e {
            AttendError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<AcceptError> for Status {
    fn from(e: AcceptError) -> Status {
        match e {
            AcceptError::NotFound => Status::not_found(e.to_string()),
            AcceptError::Fence(f) => fence(f),
            AcceptError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<DeclineError> for Status {
    fn from(e: DeclineError) -> Status {
        match e {
            DeclineError::NotFound => Status::not_found(e.to_string()),
            DeclineError::Fence(f) => fence(f),
            DeclineError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<DecideError> for Status {
    fn from(e: DecideError) -> Status {
        match e {
            DecideError::Invalid(f) => invalid(f),
            DecideError::NotFound => Status::not_found(e.to_string()),
            DecideError::Fence(f) => fence(f),
            DecideError::NotAllowed(_) => Status::permission_denied(e.to_string()),
            DecideError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<ImageError> for Status {
    fn from(e: ImageError) -> Status {
        match e {
            ImageError::NotFound => Status::not_found(e.to_string()),
            ImageError::NotVisible => Status::permission_denied(e.to_string()),
            ImageError::Store(e) => image_store(e),
            ImageError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<AuditError> for Status {
    fn from(e: AuditError) -> Status {
        match e {
            AuditError::Invalid(f) => invalid(f),
            AuditError::NotFound => Status::not_found(e.to_string()),
            AuditError::OutOfRange(_) => Status::out_of_range(e.to_string()),
            AuditError::NoDecision => Status::failed_precondition(e.to_string()),
            AuditError::TooMany(_) => Status::resource_exhausted(e.to_string()),
            AuditError::Image(e) => image_store(e),
            AuditError::Checkpoint(e) => internal(e),
            AuditError::Storage(e) => internal(e),
            AuditError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<PauseError> for Status {
    fn from(e: PauseError) -> Status {
        match e {
            PauseError::NotAttending => Status::failed_precondition(e.to_string()),
            PauseError::Unavailable(e) => unavailable(e),
        }
    }
}
