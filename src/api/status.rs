//! The one place where errors become gRPC status codes: the engine's errors (the `From`
//! impls), the callers `Directory::authorize` refuses (`AuthError`), and the statuses the API
//! makes itself, to end an Attend or Watch stream or to answer an admin call (named functions).
//! No other file builds a `tonic::Status`.
//!
//! Every status carries a `google.rpc.ErrorInfo` (domain `countersign.v1`) whose reason is one
//! of `Reason`, the same for the same condition on every RPC, with metadata where there is
//! something to tell (a state, an epoch, a limit); and the detail gRPC's guidance pairs with
//! the code: BadRequest on INVALID_ARGUMENT, PreconditionFailure on FAILED_PRECONDITION,
//! QuotaFailure on RESOURCE_EXHAUSTED, RetryInfo on UNAVAILABLE. Messages name states and
//! roles as the contract does (`REQUEST_STATE_IN_REVIEW`, `teller`).

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::validate::FieldError;
use crate::domain::{FenceError, State};
use crate::engine::*;
use crate::storage::StorageError;

/// The ErrorInfo domain of every status.
pub const DOMAIN: &str = "countersign.v1";

/// The stable reasons, one per condition. The contract lists them as
/// `countersign.v1.ErrorReason` (the value's name is `ERROR_REASON_` and the reason) and
/// docs/errors.md explains each; a test keeps the three in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    InvalidField,
    NoCertificate,
    UnknownCertificate,
    WrongRole,
    OwnRequest,
    OwnBranch,
    InsufficientAuthority,
    SameApprover,
    RequestNotFound,
    ImageNotFound,
    RecordNotFound,
    SerialReused,
    QueueFull,
    PendingLimit,
    WatchStreamsLimit,
    TooManyResults,
    MessageTooLarge,
    StaleEpoch,
    NotOfferedToYou,
    RequestState,
    NotAttending,
    NoDecision,
    IndexOutOfRange,
    NotLeader,
    ShuttingDown,
    StorageUnavailable,
    SessionEnded,
    WatchEnded,
    AttendSuperseded,
    PolicyInvalid,
    DirectoryInvalid,
    PrincipalRevoked,
    RekeyMismatch,
    FallbackNotAllowed,
    FallbackSupervisorUnknown,
    FallbackSignatureInvalid,
    ReviewNotDrawn,
    ReviewDone,
    UnknownMethod,
    MalformedMessage,
    Library,
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 42] = [
        Reason::InvalidField,
        Reason::NoCertificate,
        Reason::UnknownCertificate,
        Reason::WrongRole,
        Reason::OwnRequest,
        Reason::OwnBranch,
        Reason::InsufficientAuthority,
        Reason::SameApprover,
        Reason::RequestNotFound,
        Reason::ImageNotFound,
        Reason::RecordNotFound,
        Reason::SerialReused,
        Reason::QueueFull,
        Reason::PendingLimit,
        Reason::WatchStreamsLimit,
        Reason::TooManyResults,
        Reason::MessageTooLarge,
        Reason::StaleEpoch,
        Reason::NotOfferedToYou,
        Reason::RequestState,
        Reason::NotAttending,
        Reason::NoDecision,
        Reason::IndexOutOfRange,
        Reason::NotLeader,
        Reason::ShuttingDown,
        Reason::StorageUnavailable,
        Reason::SessionEnded,
        Reason::WatchEnded,
        Reason::AttendSuperseded,
        Reason::PolicyInvalid,
        Reason::DirectoryInvalid,
        Reason::PrincipalRevoked,
        Reason::RekeyMismatch,
        Reason::FallbackNotAllowed,
        Reason::FallbackSupervisorUnknown,
        Reason::FallbackSignatureInvalid,
        Reason::ReviewNotDrawn,
        Reason::ReviewDone,
        Reason::UnknownMethod,
        Reason::MalformedMessage,
        Reason::Library,
        Reason::Internal,
    ];

    /// The reason as ErrorInfo carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidField => "INVALID_FIELD",
            Reason::NoCertificate => "NO_CERTIFICATE",
            Reason::UnknownCertificate => "UNKNOWN_CERTIFICATE",
            Reason::WrongRole => "WRONG_ROLE",
            Reason::OwnRequest => "OWN_REQUEST",
            Reason::OwnBranch => "OWN_BRANCH",
            Reason::InsufficientAuthority => "INSUFFICIENT_AUTHORITY",
            Reason::SameApprover => "SAME_APPROVER",
            Reason::RequestNotFound => "REQUEST_NOT_FOUND",
            Reason::ImageNotFound => "IMAGE_NOT_FOUND",
            Reason::RecordNotFound => "RECORD_NOT_FOUND",
            Reason::SerialReused => "SERIAL_REUSED",
            Reason::QueueFull => "QUEUE_FULL",
            Reason::PendingLimit => "PENDING_LIMIT",
            Reason::WatchStreamsLimit => "WATCH_STREAMS_LIMIT",
            Reason::TooManyResults => "TOO_MANY_RESULTS",
            Reason::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Reason::StaleEpoch => "STALE_EPOCH",
            Reason::NotOfferedToYou => "NOT_OFFERED_TO_YOU",
            Reason::RequestState => "REQUEST_STATE",
            Reason::NotAttending => "NOT_ATTENDING",
            Reason::NoDecision => "NO_DECISION",
            Reason::IndexOutOfRange => "INDEX_OUT_OF_RANGE",
            Reason::NotLeader => "NOT_LEADER",
            Reason::ShuttingDown => "SHUTTING_DOWN",
            Reason::StorageUnavailable => "STORAGE_UNAVAILABLE",
            Reason::SessionEnded => "SESSION_ENDED",
            Reason::WatchEnded => "WATCH_ENDED",
            Reason::AttendSuperseded => "ATTEND_SUPERSEDED",
            Reason::PolicyInvalid => "POLICY_INVALID",
            Reason::DirectoryInvalid => "DIRECTORY_INVALID",
            Reason::PrincipalRevoked => "PRINCIPAL_REVOKED",
            Reason::RekeyMismatch => "REKEY_MISMATCH",
            Reason::FallbackNotAllowed => "FALLBACK_NOT_ALLOWED",
            Reason::FallbackSupervisorUnknown => "FALLBACK_SUPERVISOR_UNKNOWN",
            Reason::FallbackSignatureInvalid => "FALLBACK_SIGNATURE_INVALID",
            Reason::ReviewNotDrawn => "REVIEW_NOT_DRAWN",
            Reason::ReviewDone => "REVIEW_DONE",
            Reason::UnknownMethod => "UNKNOWN_METHOD",
            Reason::MalformedMessage => "MALFORMED_MESSAGE",
            Reason::Library => "LIBRARY",
            Reason::Internal => "INTERNAL",
        }
    }
}

/// How long a client should wait before retrying an UNAVAILABLE call.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Builds every status: the code, the message for people, an ErrorInfo with `reason` and
/// `metadata`, and the detail the code calls for (the caller's `details`, or one made here).
fn status(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    metadata: &[(&str, String)],
    mut details: ErrorDetails,
) -> Status {
    let message = message.into();
    details.set_error_info(
        reason.as_str(),
        DOMAIN,
        metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<std::collections::HashMap<_, _>>(),
    );
    match code {
        Code::Unavailable if details.retry_info().is_none() => {
            details.set_retry_info(Some(RETRY_AFTER));
        }
        Code::FailedPrecondition if details.precondition_failure().is_none() => {
            details.add_precondition_failure_violation(reason.as_str(), "request", &message);
        }
        _ => {}
    }
    Status::with_error_details(code, message, details)
}

/// A status with metadata and the detail its code calls for.
fn status_with(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    metadata: &[(&str, String)],
) -> Status {
    status(code, reason, message, metadata, ErrorDetails::new())
}

/// A status with nothing to add beyond its reason (and the detail its code calls for).
fn plain(code: Code, reason: Reason, message: impl Into<String>) -> Status {
    status(code, reason, message, &[], ErrorDetails::new())
}

/// RESOURCE_EXHAUSTED for a configured limit: the limit in ErrorInfo's metadata and a
/// QuotaFailure naming the setting.
fn exhausted(reason: Reason, message: String, setting: &str, limit: impl ToString) -> Status {
    status(
        Code::ResourceExhausted,
        reason,
        message.clone(),
        &[("limit", limit.to_string())],
        ErrorDetails::with_quota_failure_violation(setting, message),
    )
}

/// A request state as the contract names it (`REQUEST_STATE_IN_REVIEW`).
pub fn state_name(s: State) -> &'static str {
    super::convert::state(s).as_str_name()
}

/// INVALID_ARGUMENT naming the field three times: in the message, for people, in a
/// `google.rpc.BadRequest` detail and in ErrorInfo's metadata, for programs.
pub fn invalid(e: FieldError) -> Status {
    status(
        Code::InvalidArgument,
        Reason::InvalidField,
        e.to_string(),
        &[("field", e.field.clone())],
        ErrorDetails::with_bad_request_violation(e.field, e.reason),
    )
}

fn unavailable(e: Unavailable) -> Status {
    let reason = match e {
        Unavailable::ShuttingDown => Reason::ShuttingDown,
        _ => Reason::StorageUnavailable,
    };
    plain(Code::Unavailable, reason, e.to_string())
}

/// A teller, supervisor or admin call to a node that does not lead: UNAVAILABLE (retry), with
/// an ErrorInfo whose metadata `leader` is the leader's advertised address when known.
pub fn not_leader(leader: Option<&str>) -> Status {
    let metadata: Vec<(&str, String)> = leader
        .map(|l| ("leader", l.to_string()))
        .into_iter()
        .collect();
    let message = match leader {
        Some(l) => format!("this node does not lead; the leader is at {l}"),
        None => "this node does not lead, and no leader holds the lease now".to_string(),
    };
    status(
        Code::Unavailable,
        Reason::NotLeader,
        message,
        &metadata,
        ErrorDetails::with_retry_info(Some(Duration::from_millis(100))),
    )
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    plain(
        Code::Internal,
        Reason::Internal,
        format!("internal error: {e}"),
    )
}

fn not_found(reason: Reason, e: impl std::fmt::Display) -> Status {
    plain(Code::NotFound, reason, e.to_string())
}

/// A request in a state the action does not apply to: its state, by the contract's name.
fn wrong_state(state: State, message: String) -> Status {
    status(
        Code::FailedPrecondition,
        Reason::RequestState,
        message,
        &[("state", state_name(state).to_string())],
        ErrorDetails::new(),
    )
}

fn fence(e: FenceError) -> Status {
    match e {
        FenceError::NotAssigned => plain(
            Code::FailedPrecondition,
            Reason::NotOfferedToYou,
            e.to_string(),
        ),
        FenceError::StaleEpoch { presented, current } => status(
            Code::FailedPrecondition,
            Reason::StaleEpoch,
            e.to_string(),
            &[
                ("presented_epoch", presented.to_string()),
                ("current_epoch", current.to_string()),
            ],
            ErrorDetails::new(),
        ),
        FenceError::WrongState(s) => wrong_state(
            s,
            format!(
                "the request is {}, not in the state this action needs",
                state_name(s)
            ),
        ),
    }
}

/// A storage error where a caller reads an image: a missing image is NOT_FOUND, a backend
/// that cannot serve now is UNAVAILABLE (worth retrying), anything else is INTERNAL.
fn image_store(e: StorageError) -> Status {
    match e {
        StorageError::ImageNotFound(_) => not_found(Reason::ImageNotFound, e),
        StorageError::Unavailable { .. } | StorageError::Fenced { .. } | StorageError::Join(_) => {
            plain(Code::Unavailable, Reason::StorageUnavailable, e.to_string())
        }
        e => internal(e),
    }
}

fn store_images(e: StoreImagesError) -> Status {
    plain(
        Code::Unavailable,
        Reason::StorageUnavailable,
        format!("store image: {e}"),
    )
}

impl From<SubmitError> for Status {
    fn from(e: SubmitError) -> Status {
        match e {
            SubmitError::Invalid(f) => invalid(f),
            SubmitError::SerialReused(_) => {
                plain(Code::AlreadyExists, Reason::SerialReused, e.to_string())
            }
            SubmitError::QueueFull(n) => exhausted(
                Reason::QueueFull,
                e.to_string(),
                "limits.queue_length_max",
                n,
            ),
            SubmitError::TellerPendingFull(n) => exhausted(
                Reason::PendingLimit,
                e.to_string(),
                "limits.pending_per_teller_max",
                n,
            ),
            SubmitError::Image(e) => store_images(e),
            SubmitError::Storage(e) => internal(e),
            SubmitError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<FallbackError> for Status {
    fn from(e: FallbackError) -> Status {
        match e {
            FallbackError::Invalid(f) => invalid(f),
            FallbackError::SerialReused(_) => {
                plain(Code::AlreadyExists, Reason::SerialReused, e.to_string())
            }
            FallbackError::NotAllowed { ref rule } => status(
                Code::FailedPrecondition,
                Reason::FallbackNotAllowed,
                e.to_string(),
                &[("rule", rule.clone())],
                ErrorDetails::new(),
            ),
            FallbackError::SupervisorUnknown(_) => plain(
                Code::PermissionDenied,
                Reason::FallbackSupervisorUnknown,
                e.to_string(),
            ),
            FallbackError::SignatureInvalid { field, reason } => status(
                Code::InvalidArgument,
                Reason::FallbackSignatureInvalid,
                format!("{field}: {reason}"),
                &[("field", field.to_owned())],
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            FallbackError::Authority { .. } => plain(
                Code::PermissionDenied,
                Reason::InsufficientAuthority,
                e.to_string(),
            ),
            FallbackError::Image(e) => store_images(e),
            FallbackError::Storage(e) => internal(e),
            FallbackError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<ReviewError> for Status {
    fn from(e: ReviewError) -> Status {
        match e {
            ReviewError::Invalid(f) => invalid(f),
            ReviewError::NotFound => not_found(Reason::RequestNotFound, e),
            ReviewError::NotDrawn => plain(
                Code::FailedPrecondition,
                Reason::ReviewNotDrawn,
                e.to_string(),
            ),
            ReviewError::Done(status) => status_with(
                Code::FailedPrecondition,
                Reason::ReviewDone,
                e.to_string(),
                &[("status", status.to_owned())],
            ),
            ReviewError::Storage(e) => internal(e),
            ReviewError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<GetError> for Status {
    fn from(e: GetError) -> Status {
        match e {
            GetError::NotFound => not_found(Reason::RequestNotFound, e),
            GetError::Storage(e) => internal(e),
            GetError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<WatchError> for Status {
    fn from(e: WatchError) -> Status {
        match e {
            WatchError::NotFound => not_found(Reason::RequestNotFound, e),
            WatchError::Ahead { .. } => invalid(FieldError::new("after_version", e.to_string())),
            WatchError::Storage(e) => internal(e),
            WatchError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<CancelError> for Status {
    fn from(e: CancelError) -> Status {
        match e {
            CancelError::NotFound => not_found(Reason::RequestNotFound, e),
            CancelError::Final(s) => wrong_state(
                s,
                format!(
                    "the request is already {} and can no longer be cancelled",
                    state_name(s)
                ),
            ),
            CancelError::Storage(e) => internal(e),
            CancelError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<ResubmitError> for Status {
    fn from(e: ResubmitError) -> Status {
        match e {
            ResubmitError::Invalid(f) => invalid(f),
            ResubmitError::NotFound => not_found(Reason::RequestNotFound, e),
            ResubmitError::NotReturned(s) => wrong_state(
                s,
                format!(
                    "the request is {}; only a REQUEST_STATE_RETURNED request can be resubmitted",
                    state_name(s)
                ),
            ),
            ResubmitError::Image(e) => store_images(e),
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
            AcceptError::NotFound => not_found(Reason::RequestNotFound, e),
            AcceptError::Fence(f) => fence(f),
            AcceptError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<DeclineError> for Status {
    fn from(e: DeclineError) -> Status {
        match e {
            DeclineError::NotFound => not_found(Reason::RequestNotFound, e),
            DeclineError::Fence(f) => fence(f),
            DeclineError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<DecideError> for Status {
    fn from(e: DecideError) -> Status {
        match e {
            DecideError::Invalid(f) => invalid(f),
            DecideError::NotFound => not_found(Reason::RequestNotFound, e),
            DecideError::Fence(f) => fence(f),
            DecideError::NotAllowed(why) => {
                let reason = match why {
                    Forbidden::OwnRequest => Reason::OwnRequest,
                    Forbidden::OwnBranch => Reason::OwnBranch,
                    Forbidden::Authority => Reason::InsufficientAuthority,
                    Forbidden::SameApprover => Reason::SameApprover,
                };
                plain(Code::PermissionDenied, reason, e.to_string())
            }
            DecideError::RekeyMismatch {
                ref fields,
                attempts_left,
            } => {
                let fields = fields
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                let message = if attempts_left == 0 {
                    format!("{e}: the request went back to the queue for another supervisor")
                } else {
                    format!("{e}: look at the voucher again")
                };
                status(
                    Code::FailedPrecondition,
                    Reason::RekeyMismatch,
                    message,
                    &[
                        ("fields", fields),
                        ("attempts_left", attempts_left.to_string()),
                    ],
                    ErrorDetails::new(),
                )
            }
            DecideError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<ImageError> for Status {
    fn from(e: ImageError) -> Status {
        match e {
            ImageError::NotFound => not_found(Reason::RequestNotFound, e),
            // The same condition as an Accept or Decide of an offer that is not the caller's.
            ImageError::NotHeld => fence(FenceError::NotAssigned),
            ImageError::NotAttached => not_found(Reason::ImageNotFound, e),
            ImageError::Store(e) => image_store(e),
            ImageError::Unavailable(e) => unavailable(e),
        }
    }
}

impl From<AuditError> for Status {
    fn from(e: AuditError) -> Status {
        match e {
            AuditError::Invalid(f) => invalid(f),
            AuditError::NotFound => not_found(Reason::RecordNotFound, e),
            AuditError::OutOfRange(_) => {
                plain(Code::OutOfRange, Reason::IndexOutOfRange, e.to_string())
            }
            AuditError::NoDecision => {
                plain(Code::FailedPrecondition, Reason::NoDecision, e.to_string())
            }
            AuditError::TooMany { max, .. } => exhausted(
                Reason::TooManyResults,
                e.to_string(),
                "limits.stats_rows_max",
                max,
            ),
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
            PauseError::NotAttending => plain(
                Code::FailedPrecondition,
                Reason::NotAttending,
                e.to_string(),
            ),
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
    #[error("principal {principal} has role {}, which may not call this service", role_name(*role))]
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
            AuthError::NoCertificate => {
                plain(Code::Unauthenticated, Reason::NoCertificate, e.to_string())
            }
            AuthError::UnknownCertificate => plain(
                Code::Unauthenticated,
                Reason::UnknownCertificate,
                e.to_string(),
            ),
            AuthError::WrongRole { role, .. } => status(
                Code::PermissionDenied,
                Reason::WrongRole,
                e.to_string(),
                &[("role", role_name(role).to_string())],
                ErrorDetails::new(),
            ),
        }
    }
}

/// A role as the principal directory writes it.
pub fn role_name(role: crate::domain::Role) -> &'static str {
    match role {
        crate::domain::Role::Teller => "teller",
        crate::domain::Role::Supervisor => "supervisor",
        crate::domain::Role::Auditor => "auditor",
        crate::domain::Role::Admin => "admin",
        crate::domain::Role::Reviewer => "reviewer",
    }
}

/// ABORTED ends an Attend stream that a newer stream of the same supervisor replaced: the
/// console should not reconnect, since the newer stream is the live one.
pub fn attend_superseded() -> Status {
    plain(
        Code::Aborted,
        Reason::AttendSuperseded,
        "a newer Attend stream of the same supervisor replaced this one",
    )
}

/// UNAVAILABLE ends an Attend stream whose session the engine ended (it stopped, or could not
/// deliver to the stream): reconnecting is the cure.
pub fn attend_ended() -> Status {
    plain(
        Code::Unavailable,
        Reason::SessionEnded,
        "the session ended; reconnect to attend again",
    )
}

/// UNAVAILABLE ends a Watch stream that ended before a final state (the server is stopping,
/// or the client read too slowly), so the client knows to watch again.
pub fn watch_ended() -> Status {
    plain(
        Code::Unavailable,
        Reason::WatchEnded,
        "the watch ended before a final state; watch again to continue",
    )
}

/// RESOURCE_EXHAUSTED refuses a Watch when the teller already has `max` streams open.
pub fn watch_streams_full(max: usize) -> Status {
    exhausted(
        Reason::WatchStreamsLimit,
        format!("at most {max} Watch streams may be open at once"),
        "limits.watch_streams_per_principal_max",
        max,
    )
}

/// RESOURCE_EXHAUSTED for a request message over `limits.message_bytes_max` (`found` bytes,
/// as the decoder counted them).
pub fn message_too_large(found: &str, max: usize) -> Status {
    exhausted(
        Reason::MessageTooLarge,
        format!("the message is {found} bytes, over the {max} bytes a message may have"),
        "limits.message_bytes_max",
        max,
    )
}

/// A status the gRPC library made before any of our code ran (an unknown method, a message
/// that does not decode, ...): its code and message kept, an ErrorInfo added.
pub fn from_library(code: Code, message: String) -> Status {
    let reason = match code {
        Code::Unimplemented => Reason::UnknownMethod,
        Code::Internal if message.starts_with("failed to decode") => Reason::MalformedMessage,
        _ => Reason::Library,
    };
    plain(code, reason, message)
}

/// UNAVAILABLE answers GetQueueStatus when the engine cannot (it is stopping).
pub fn queue_status_unavailable(e: Unavailable) -> Status {
    unavailable(e)
}

/// UNAVAILABLE answers ReloadPolicy and ReloadDirectory when the reload cannot be recorded in
/// the ledger (it cannot write, the server is stopping); what was in force stays.
pub fn reload_not_recorded(e: Unavailable) -> Status {
    unavailable(e)
}

/// INTERNAL answers ReloadPolicy when the task loading the policy file died (it panicked or
/// was cancelled); the policy in force stays.
pub fn policy_load_failed(e: tokio::task::JoinError) -> Status {
    internal(e)
}

/// INVALID_ARGUMENT answers ReloadPolicy when the policy file does not load or does not
/// check; the policy in force stays.
pub fn policy_not_reloaded(e: crate::policy::PolicyError) -> Status {
    plain(
        Code::InvalidArgument,
        Reason::PolicyInvalid,
        format!("policy not reloaded: {e}"),
    )
}

/// INVALID_ARGUMENT answers ReloadDirectory when the directory file does not load or check;
/// the directory in force stays.
pub fn directory_not_reloaded(e: anyhow::Error) -> Status {
    plain(
        Code::InvalidArgument,
        Reason::DirectoryInvalid,
        format!("principal directory not reloaded: {e:#}"),
    )
}

/// UNAUTHENTICATED ends an Attend stream whose supervisor the directory no longer lists as
/// they were.
pub fn principal_revoked() -> Status {
    plain(
        Code::Unauthenticated,
        Reason::PrincipalRevoked,
        "your entry or certificate in the principal directory was removed or changed",
    )
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    /// Every reason the code sends is in the contract's `ErrorReason` and in docs/errors.md,
    /// and the contract has no reason the code does not send.
    #[test]
    fn reasons_match_the_contract_and_the_docs() {
        let docs = include_str!("../../docs/errors.md");
        for r in Reason::ALL {
            let name = format!("ERROR_REASON_{}", r.as_str());
            assert!(
                super::super::pb::ErrorReason::from_str_name(&name).is_some(),
                "{name} is not in types.proto"
            );
            assert!(
                docs.contains(&format!("| `{}` |", r.as_str())),
                "{} is not in docs/errors.md",
                r.as_str()
            );
        }
        let in_proto = (1..100)
            .filter(|n| super::super::pb::ErrorReason::try_from(*n).is_ok())
            .count();
        assert_eq!(in_proto, Reason::ALL.len());
    }

    /// Each code brings ErrorInfo with its reason and the detail the code calls for.
    #[test]
    fn every_status_carries_its_reason_and_detail() {
        let info = |s: &Status| {
            let d = s.get_error_details();
            let i = d.error_info().expect("ErrorInfo").clone();
            assert_eq!(i.domain, DOMAIN);
            (i, d)
        };
        let stale = Status::from(AcceptError::Fence(FenceError::StaleEpoch {
            presented: 1,
            current: 2,
        }));
        let (i, d) = info(&stale);
        assert_eq!(stale.code(), Code::FailedPrecondition);
        assert_eq!(i.reason, "STALE_EPOCH");
        assert_eq!(i.metadata["current_epoch"], "2");
        assert!(d.precondition_failure().is_some());

        let state = Status::from(DecideError::Fence(FenceError::WrongState(State::Approved)));
        let (i, _) = info(&state);
        assert_eq!(i.reason, "REQUEST_STATE");
        assert_eq!(i.metadata["state"], "REQUEST_STATE_APPROVED");
        assert!(
            state.message().contains("REQUEST_STATE_APPROVED"),
            "{state:?}"
        );

        // "Not your offer" is the same on Accept and on GetOfferImage.
        let theirs = Status::from(AcceptError::Fence(FenceError::NotAssigned));
        let image = Status::from(ImageError::NotHeld);
        assert_eq!(
            (theirs.code(), image.code()),
            (Code::FailedPrecondition, Code::FailedPrecondition)
        );
        assert_eq!(info(&theirs).0.reason, info(&image).0.reason);

        let full = Status::from(SubmitError::TellerPendingFull(20));
        let (i, d) = info(&full);
        assert_eq!(
            (full.code(), i.reason.as_str()),
            (Code::ResourceExhausted, "PENDING_LIMIT")
        );
        assert_eq!(i.metadata["limit"], "20");
        assert!(d.quota_failure().is_some());

        let down = Status::from(GetError::Unavailable(Unavailable::ShuttingDown));
        let (i, d) = info(&down);
        assert_eq!(
            (down.code(), i.reason.as_str()),
            (Code::Unavailable, "SHUTTING_DOWN")
        );
        assert!(d.retry_info().is_some());

        let bad = invalid(FieldError::new(
            "transaction.account",
            "must be 8 to 32 digits 0-9",
        ));
        let (i, d) = info(&bad);
        assert_eq!(i.metadata["field"], "transaction.account");
        assert_eq!(
            d.bad_request().unwrap().field_violations[0].field,
            "transaction.account"
        );

        let reused = Status::from(SubmitError::SerialReused("S-1".into()));
        assert_eq!(info(&reused).0.reason, "SERIAL_REUSED");
        let own = Status::from(DecideError::NotAllowed(Forbidden::OwnBranch));
        assert_eq!(
            (own.code(), info(&own).0.reason.as_str()),
            (Code::PermissionDenied, "OWN_BRANCH")
        );
        let role = Status::from(AuthError::WrongRole {
            principal: crate::domain::PrincipalId::new("t"),
            role: crate::domain::Role::Teller,
        });
        assert_eq!(info(&role).0.metadata["role"], "teller");
        let big = message_too_large("70000", 65536);
        assert_eq!(
            (big.code(), info(&big).0.reason.as_str()),
            (Code::ResourceExhausted, "MESSAGE_TOO_LARGE")
        );
    }

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
                "principal sup-01 has role supervisor, which may not call this service",
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
                .contains("storage cannot write: write ledger batch: disk")
        );
    }
}
