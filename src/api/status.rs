//! The one place where errors become gRPC status codes: the engine's errors (the `From`
//! impls), the callers `Directory::authorize` refuses (`AuthError`), and the statuses the API
//! makes itself, to end an Attend or Watch stream or to answer an admin call (named functions).
//! No other file builds a `tonic::Status`.

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

/// The machine-readable reason a standby gives (google.rpc.ErrorInfo, domain `countersign`).
pub const NOT_LEADER: &str = "NOT_LEADER";

/// A teller, supervisor or admin call to a node that does not lead: UNAVAILABLE (retry), with
/// an ErrorInfo whose metadata `leader` is the leader's advertised address when known.
pub fn not_leader(leader: Option<&str>) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let metadata: std::collections::HashMap<String, String> = leader
        .map(|l| ("leader".to_string(), l.to_string()))
        .into_iter()
        .collect();
    let message = match leader {
        Some(l) => format!("this node does not lead; the leader is at {l}"),
        None => "this node does not lead, and no leader holds the lease now".to_string(),
    };
    Status::with_error_details(
        tonic::Code::Unavailable,
        message,
        ErrorDetails::with_error_info(NOT_LEADER, "countersign", metadata),
    )
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
        StorageError::Unavailable { .. } | StorageError::Fenced { .. } | StorageError::Join(_) => {
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

impl From<WatchError> for Status {
    fn from(e: WatchError) -> Status {
        match e {
            WatchError::NotFound => Status::not_found(e.to_string()),
            WatchError::Ahead { .. } => invalid(FieldError::new("after_version", e.to_string())),
            WatchError::Storage(e) => internal(e),
            WatchError::Unavailable(e) => unavailable(e),
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

/// Why `Directory::authorize` refused a caller, before any engine call: UNAUTHENTICATED when
/// the certificate is missing or unknown, PERMISSION_DENIED when the principal's role may not
/// call the service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The connection presented no client certificate.
    #[error("a client certificate is required")]
    NoCertificate,
    /// The certificate's SHA-256 is not in the principal directory.
    #[error("the client certificate is not in the principal directory")]
    UnknownCertificate,
    /// The principal is known, but their role is not one the service admits.
    #[error("principal {principal} has role {role:?}, which may not call this service")]
    WrongRole {
        /// Who called.
        principal: crate::domain::PrincipalId,
        /// The role the directory gives them.
        role: crate::domain::Role,
    },
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::NoCertificate | AuthError::UnknownCertificate => {
                Status::unauthenticated(e.to_string())
            }
            AuthError::WrongRole { .. } => Status::permission_denied(e.to_string()),
        }
    }
}

/// ABORTED ends an Attend stream that a newer stream of the same supervisor replaced: the
/// console should not reconnect, since the newer stream is the live one.
pub fn attend_superseded() -> Status {
    Status::aborted("a newer Attend stream of the same supervisor replaced this one")
}

/// UNAVAILABLE ends an Attend stream whose session the engine ended (it stopped, or could not
/// deliver to the stream): reconnecting is the cure.
pub fn attend_ended() -> Status {
    Status::unavailable("the session ended; reconnect to attend again")
}

/// UNAVAILABLE ends a Watch stream that ended before a final state (the server is stopping,
/// or the client read too slowly), so the client knows to watch again.
pub fn watch_ended() -> Status {
    Status::unavailable("the watch ended before a final state; watch again to continue")
}

/// RESOURCE_EXHAUSTED refuses a Watch when the teller already has `max` streams open.
pub fn watch_streams_full(max: usize) -> Status {
    Status::resource_exhausted(format!("at most {max} Watch streams may be open at once"))
}

/// UNAVAILABLE answers GetQueueStatus when the engine cannot (it is stopping).
pub fn queue_status_unavailable(e: Unavailable) -> Status {
    Status::unavailable(e.to_string())
}

/// INTERNAL answers ReloadPolicy when the task loading the policy file died (it panicked or
/// was cancelled); the policy in force stays.
pub fn policy_load_failed(e: tokio::task::JoinError) -> Status {
    Status::internal(e.to_string())
}

/// INVALID_ARGUMENT answers ReloadPolicy when the policy file does not load or does not
/// check; the policy in force stays.
pub fn policy_not_reloaded(e: crate::policy::PolicyError) -> Status {
    Status::invalid_argument(format!("policy not reloaded: {e}"))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    /// The statuses the API makes itself, code and text: clients and tests match on them.
    #[test]
    fn the_api_s_own_statuses_keep_their_code_and_text() {
        let principal = crate::domain::PrincipalId::new("sup-01");
        let cases = [
            (
                Status::from(AuthError::NoCertificate),
                Code::Unauthenticated,
                "a client certificate is required",
            ),
            (
                Status::from(AuthError::UnknownCertificate),
                Code::Unauthenticated,
                "the client certificate is not in the principal directory",
            ),
            (
                Status::from(AuthError::WrongRole {
                    principal,
                    role: crate::domain::Role::Supervisor,
                }),
                Code::PermissionDenied,
                "principal sup-01 has role Supervisor, which may not call this service",
            ),
            (
                attend_superseded(),
                Code::Aborted,
                "a newer Attend stream of the same supervisor replaced this one",
            ),
            (
                attend_ended(),
                Code::Unavailable,
                "the session ended; reconnect to attend again",
            ),
            (
                watch_ended(),
                Code::Unavailable,
                "the watch ended before a final state; watch again to continue",
            ),
            (
                watch_streams_full(3),
                Code::ResourceExhausted,
                "at most 3 Watch streams may be open at once",
            ),
        ];
        for (status, code, message) in cases {
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    /// Storage errors reach callers by what they can do about them: a missing image is
    /// NOT_FOUND, storage that cannot serve now is UNAVAILABLE (retry), damage is INTERNAL.
    #[test]
    fn storage_errors_map_by_what_the_caller_can_do() {
        let h = crate::domain::ImageHash([1; 32]);
        let io = || std::io::Error::other("disk");
        let cases = [
            (StorageError::ImageNotFound(h), Code::NotFound),
            (
                StorageError::unavailable("read image", io()),
                Code::Unavailable,
            ),
            (StorageError::ImageDamaged(h), Code::Internal),
            (StorageError::damaged("read image", io()), Code::Internal),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let got = Status::from(AuditError::Image(e));
            assert_eq!(got.code(), code, "{text}");
        }
        let fault = Status::from(GetError::Storage(StorageFault(StorageError::Inconsistent(
            "request r has no row".into(),
        ))));
        assert_eq!(fault.code(), Code::Internal);
        assert!(fault.message().contains("request r has no row"));
        let cannot = Status::from(SubmitError::Unavailable(Unavailable::CannotWrite(
            std::sync::Arc::new(StorageError::unavailable("write ledger batch", io())),
        )));
        assert_eq!(cannot.code(), Code::Unavailable);
        assert!(
            cannot
                .message()
                .contains("the ledger cannot write: write ledger batch: disk")
        );
    }
}
