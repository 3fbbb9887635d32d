//! The commands the engine's handle sends to the single writer, each with the channel its
//! answer goes back on, and `refuse`, which answers one the engine will not carry out.

use tokio::sync::{mpsc, oneshot};

use crate::domain::{
    ImageHash, ImageRef, MediaType, Principal, PrincipalId, Request, RequestId, Submission, Verdict,
};

use super::SupervisorEvent;
use super::error::*;

pub(crate) type Reply<T> = oneshot::Sender<T>;
/// The request (or where to read it), its id, and whether the Submit was a retry.
pub(crate) type SubmitAnswer = (Lookup<Request>, RequestId, bool);
/// The current state and a receiver of later changes.
/// A Submit's idempotency lookup in the projection, made by its caller before the command
/// reached the engine (see `evicted`) where the projection is remote.
pub(crate) enum PriorLookup {
    /// Not made (the projection is local and cheap to read): the engine reads it.
    NotMade,
    /// Made after eviction round `round`, finding `found`.
    Made {
        round: u64,
        found: Option<super::evicted::Entry>,
    },
}

pub(crate) type WatchStart = (Request, mpsc::Receiver<Request>);

/// What the engine answers when a request is not held in memory: the caller reads it from the
/// store (final requests never change, so there is no race).
/// A request after a caller's action, and whether the call was a retry of one that had
/// already taken effect (then nothing new was recorded).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub request: Request,
    pub replayed: bool,
}

pub(crate) enum Lookup<T> {
    Active(T),
    NotActive,
}

impl<T> Lookup<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Active(t) => Lookup::Active(f(t)),
            Lookup::NotActive => Lookup::NotActive,
        }
    }
}

/// What the handle asks of the single writer, by who asks it.
// Moved once, through a channel; boxing the teller's commands would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Teller(TellerCommand),
    Supervisor(SupervisorCommand),
    Service(ServiceCommand),
}

/// A teller's call.
// Commands are moved once, through a channel; boxing the large ones would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum TellerCommand {
    Submit {
        teller: Principal,
        submission: Submission,
        fingerprint: [u8; 32],
        /// What the projection held for this serial, read by the caller.
        prior: PriorLookup,
        reply: Reply<Result<SubmitAnswer, SubmitError>>,
    },
    /// An on-site authorization to register; the API has checked its signature.
    RegisterFallback {
        teller: Principal,
        submission: Submission,
        on_site: crate::domain::OnSite,
        /// The on-site supervisor, as the principal directory lists them.
        supervisor: Principal,
        fingerprint: [u8; 32],
        /// What the projection held for this serial, read by the caller.
        prior: PriorLookup,
        reply: Reply<Result<SubmitAnswer, FallbackError>>,
    },
    Get {
        teller: PrincipalId,
        id: RequestId,
        reply: Reply<Result<Lookup<Request>, GetError>>,
    },
    Watch {
        teller: PrincipalId,
        id: RequestId,
        reply: Reply<Result<Lookup<WatchStart>, GetError>>,
    },
    Cancel {
        teller: PrincipalId,
        id: RequestId,
        reason: String,
        reply: Reply<Result<Lookup<Outcome>, CancelError>>,
    },
    Resubmit {
        teller: PrincipalId,
        id: RequestId,
        added: Vec<ImageRef>,
        removed: Vec<ImageHash>,
        note: String,
        reply: Reply<Result<Lookup<Outcome>, ResubmitError>>,
    },
}

/// A supervisor's call.
pub(crate) enum SupervisorCommand {
    Attend {
        supervisor: Principal,
        reply: Reply<Result<(u64, mpsc::Receiver<SupervisorEvent>), AttendError>>,
    },
    Accept {
        supervisor: PrincipalId,
        id: RequestId,
        epoch: u64,
        reply: Reply<Result<Outcome, AcceptError>>,
    },
    Decline {
        supervisor: PrincipalId,
        id: RequestId,
        epoch: u64,
        reason: String,
        reply: Reply<Result<bool, DeclineError>>,
    },
    Decide {
        supervisor: Principal,
        id: RequestId,
        epoch: u64,
        verdict: Verdict,
        /// What the supervisor typed from the voucher (for an approval that needs it).
        rekeyed: crate::domain::Rekeyed,
        reply: Reply<Result<Outcome, DecideError>>,
    },
    OfferImage {
        supervisor: PrincipalId,
        id: RequestId,
        hash: ImageHash,
        reply: Reply<Result<MediaType, ImageError>>,
    },
}

/// The duty manager's calls and the engine's own.
/// What a revocation ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Attend streams ended (their offers and reviews went back to the queue).
    pub attend_streams: usize,
    /// Requests whose Watch streams ended because their teller was revoked.
    pub watched_requests: usize,
}

pub(crate) enum ServiceCommand {
    /// Stop taking calls, end every stream, and stop once all appended records are durable
    /// and answered; `record`: the ledger records the stop first.
    Shutdown { record: bool, reply: Reply<()> },
    /// Pause (or resume) offers to a supervisor without closing their stream: their own
    /// (`by` None), or the duty manager's (`by`, recorded and told to the supervisor).
    Pause {
        supervisor: PrincipalId,
        paused: bool,
        by: Option<PrincipalId>,
        reply: Reply<Result<(), PauseError>>,
    },
    /// A snapshot of the queue and the supervisors.
    Status {
        reply: Reply<super::status::QueueStatus>,
    },
    /// Bring the projection up to every durable record, for a read that must see them all.
    Project { reply: Reply<()> },
    /// The image store could not write (found by a caller storing a request's images).
    ImagesFailed {
        error: std::sync::Arc<crate::storage::StorageError>,
    },
    /// A new principal directory is in force: record it (`loaded`, a `directory_loaded`
    /// event, by `actor`), end the streams of `principals` (removed or changed), withdraw what
    /// they held, and dispatch with `supervisors` from now on. Answered once the record is
    /// durable.
    Revoke {
        actor: crate::domain::Actor,
        loaded: crate::domain::EngineEvent,
        principals: Vec<PrincipalId>,
        supervisors: std::sync::Arc<Vec<Principal>>,
        reply: Reply<Result<Revoked, Unavailable>>,
    },
    /// Put a new policy in force for later submissions, recorded (`policy_loaded`, by
    /// `actor`) before the first submission evaluated against it; answered with the previous
    /// policy's hash once the record is durable.
    SetPolicy {
        actor: crate::domain::Actor,
        policy: std::sync::Arc<crate::policy::Policy>,
        reply: Reply<Result<String, Unavailable>>,
    },
    /// A reviewer's finding on a request drawn for after-the-fact review.
    Review {
        reviewer: PrincipalId,
        id: RequestId,
        outcome: crate::domain::ReviewOutcome,
        comment: String,
        reply: Reply<Result<Outcome, ReviewError>>,
    },
}

impl From<TellerCommand> for Command {
    fn from(c: TellerCommand) -> Self {
        Command::Teller(c)
    }
}

impl From<SupervisorCommand> for Command {
    fn from(c: SupervisorCommand) -> Self {
        Command::Supervisor(c)
    }
}

impl From<ServiceCommand> for Command {
    fn from(c: ServiceCommand) -> Self {
        Command::Service(c)
    }
}

impl Command {
    /// Whether carrying it out may append to the ledger (refused while the ledger cannot
    /// write).
    pub fn writes(&self) -> bool {
        match self {
            Command::Teller(c) => {
                !matches!(c, TellerCommand::Get { .. } | TellerCommand::Watch { .. })
            }
            Command::Supervisor(c) => !matches!(c, SupervisorCommand::OfferImage { .. }),
            Command::Service(c) => {
                matches!(
                    c,
                    ServiceCommand::Revoke { .. }
                        | ServiceCommand::SetPolicy { .. }
                        | ServiceCommand::Review { .. }
                        // A duty manager's pause is recorded; a supervisor's own is not.
                        | ServiceCommand::Pause { by: Some(_), .. }
                )
            }
        }
    }
}

/// A supervisor's Attend stream has closed.
pub(crate) struct Leave {
    pub supervisor: PrincipalId,
    pub session: u64,
}

/// Answers a call the engine will not carry out with why. (Dropping the reply sender would
/// also say UNAVAILABLE, but as if the ledger had failed.) Status has no error to send:
/// dropping its reply ends it.
pub(crate) fn refuse(cmd: Command, u: Unavailable) {
    use {ServiceCommand as V, SupervisorCommand as S, TellerCommand as T};
    match cmd {
        Command::Teller(c) => match c {
            T::Submit { reply, .. } => drop(reply.send(Err(u.into()))),
            T::RegisterFallback { reply, .. } => drop(reply.send(Err(u.into()))),
            T::Get { reply, .. } => drop(reply.send(Err(u.into()))),
            T::Watch { reply, .. } => drop(reply.send(Err(u.into()))),
            T::Cancel { reply, .. } => drop(reply.send(Err(u.into()))),
            T::Resubmit { reply, .. } => drop(reply.send(Err(u.into()))),
        },
        Command::Supervisor(c) => match c {
            S::Attend { reply, .. } => drop(reply.send(Err(u.into()))),
            S::Accept { reply, .. } => drop(reply.send(Err(u.into()))),
            S::Decline { reply, .. } => drop(reply.send(Err(u.into()))),
            S::Decide { reply, .. } => drop(reply.send(Err(u.into()))),
            S::OfferImage { reply, .. } => drop(reply.send(Err(u.into()))),
        },
        Command::Service(c) => match c {
            V::Pause { reply, .. } => drop(reply.send(Err(u.into()))),
            V::Revoke { reply, .. } => drop(reply.send(Err(u))),
            V::SetPolicy { reply, .. } => drop(reply.send(Err(u))),
            V::Review { reply, .. } => drop(reply.send(Err(u.into()))),
            V::Status { .. } | V::Shutdown { .. } | V::Project { .. } | V::ImagesFailed { .. } => {}
        },
    }
}
