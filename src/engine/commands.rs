//! Command handling: what each call of the handle does to the engine's state. Every check
//! that can refuse a command runs before its event is recorded, so a refused call stores
//! nothing; every answer goes through `Core::reply`, so none leaves before it is durable.

use rand::Rng;
use tokio::sync::mpsc;

use crate::domain::validate::FieldError;
use crate::domain::{
    Act, Actor, Decision, EscalationReason, Event, FenceError, ImageHash, ImageRef, Principal,
    PrincipalId, Record, Request, RequestId, State, Submission, Verdict, WithdrawReason,
};
use crate::metrics::SubmitResult;

use super::command::{
    Command, Leave, Lookup, Outcome, ServiceCommand, SubmitAnswer, SupervisorCommand,
    TellerCommand, refuse,
};
use super::core::Core;
use super::core::Undo;
use super::error::*;
use super::{SupervisorEvent, Withdrawal};

impl Core {
    pub(crate) fn handle(&mut self, cmd: Command) {
        if let Command::Service(ServiceCommand::Shutdown { record, reply }) = cmd {
            self.begin_shutdown(record, reply);
            return;
        }
        // A reload's record goes to the ledger only: while just the image store or the
        // projection cannot write it is still taken (a revocation must not wait for disk).
        let reload = matches!(
            cmd,
            Command::Service(ServiceCommand::Revoke { .. } | ServiceCommand::SetPolicy { .. })
        );
        let writes = if reload {
            self.availability.degraded_store() == Some(super::availability::Store::Ledger)
        } else {
            cmd.writes()
        };
        if let Some(u) = self.refusal(writes) {
            if matches!(cmd, Command::Teller(TellerCommand::Submit { .. })) {
                self.metrics.engine.submission(SubmitResult::Refused);
            }
            refuse(cmd, u);
            return;
        }
        match cmd {
            Command::Teller(c) => self.teller_command(c),
            Command::Supervisor(c) => self.supervisor_command(c),
            Command::Service(c) => self.service_command(c),
        }
    }

    /// A teller's call.
    fn teller_command(&mut self, cmd: TellerCommand) {
        match cmd {
            TellerCommand::Submit {
                teller,
                submission,
                fingerprint,
                prior,
                reply,
            } => {
                let r = self.submit(teller, submission, fingerprint, prior);
                self.metrics.engine.submission(match &r {
                    Ok((_, _, false)) => SubmitResult::Accepted,
                    Ok((_, _, true)) => SubmitResult::Replayed,
                    Err(_) => SubmitResult::Refused,
                });
                self.reply(reply, r);
            }
            TellerCommand::RegisterFallback {
                teller,
                submission,
                on_site,
                supervisor,
                fingerprint,
                prior,
                reply,
            } => {
                let r = self.register_fallback(
                    teller,
                    submission,
                    on_site,
                    supervisor,
                    fingerprint,
                    prior,
                );
                self.reply(reply, r);
            }
            TellerCommand::Get { teller, id, reply } => {
                let r = self.lookup(&teller, &id).map(|l| l.map(Request::clone));
                self.reply(reply, r);
            }
            TellerCommand::Watch { teller, id, reply } => {
                let r = self.watch(teller, id);
                self.reply(reply, r);
            }
            TellerCommand::Cancel {
                teller,
                id,
                reason,
                reply,
            } => {
                let r = self.cancel(teller, id, reason);
                self.reply(reply, r);
            }
            TellerCommand::Resubmit {
                teller,
                id,
                added,
                removed,
                note,
                reply,
            } => {
                let r = self.resubmit(teller, id, added, removed, note);
                self.reply(reply, r);
            }
        }
    }

    /// A supervisor's call.
    fn supervisor_command(&mut self, cmd: SupervisorCommand) {
        match cmd {
            SupervisorCommand::Attend { supervisor, reply } => {
                let id = supervisor.id.clone();
                let (session, rx) = self.attend(supervisor);
                if reply.send(Ok((session, rx))).is_err() {
                    // The caller went away before the stream existed: no ghost session.
                    let leave = Leave {
                        supervisor: id,
                        session,
                    };
                    self.leave(leave, WithdrawReason::Disconnected);
                }
            }
            SupervisorCommand::Accept {
                supervisor,
                id,
                epoch,
                reply,
            } => {
                let r = self.accept(supervisor, id, epoch);
                self.reply(reply, r);
            }
            SupervisorCommand::Decline {
                supervisor,
                id,
                epoch,
                reason,
                reply,
            } => {
                let r = self.decline(supervisor, id, epoch, reason);
                self.reply(reply, r);
            }
            SupervisorCommand::Decide {
                supervisor,
                id,
                epoch,
                verdict,
                rekeyed,
                reply,
            } => {
                let r = self.decide(supervisor, id, epoch, verdict, rekeyed);
                self.reply(reply, r);
            }
            SupervisorCommand::OfferImage {
                supervisor,
                id,
                hash,
                reply,
            } => {
                let _ = reply.send(self.offer_image(&supervisor, &id, hash));
            }
        }
    }

    /// The duty manager's and the engine's own calls.
    fn service_command(&mut self, cmd: ServiceCommand) {
        match cmd {
            ServiceCommand::Pause {
                supervisor,
                paused,
                by,
                reply,
            } => {
                let r = self.pause(&supervisor, paused, by);
                // A duty manager's is answered once its record is durable.
                self.reply(reply, r);
            }
            ServiceCommand::Review {
                reviewer,
                id,
                outcome,
                comment,
                reply,
            } => {
                let r = self.review(reviewer, id, outcome, comment);
                self.reply(reply, r);
            }
            ServiceCommand::Status { reply } => {
                // Held like any reply, so the snapshot never shows what is not yet on disk.
                let st = super::status::snapshot(self);
                self.reply(reply, st);
            }
            ServiceCommand::Project { reply } => {
                self.project();
                let _ = reply.send(());
            }
            // Taken in `handle`, before any refusal.
            ServiceCommand::Shutdown { record, reply } => self.begin_shutdown(record, reply),
            ServiceCommand::ImagesFailed { error } => {
                self.store_failed(super::availability::Store::Images, error);
            }
            ServiceCommand::Revoke {
                actor,
                loaded,
                principals,
                supervisors,
                reply,
            } => {
                let sha256 = match &loaded {
                    crate::domain::EngineEvent::DirectoryLoaded { sha256, .. } => sha256.clone(),
                    _ => self.config.directory_sha256.clone(),
                };
                let undo = Undo::Directory {
                    supervisors: self.config.supervisors.clone(),
                    sha256: std::mem::replace(&mut self.config.directory_sha256, sha256),
                };
                let index = self.record_engine(actor, loaded);
                self.undo_unless_durable(index, undo);
                let revoked = self.revoke(&principals, supervisors);
                self.reply(reply, Ok(revoked));
            }
            ServiceCommand::SetPolicy {
                actor,
                policy,
                reply,
            } => {
                let loaded = crate::domain::EngineEvent::PolicyLoaded {
                    sha256: policy.sha256().to_owned(),
                    rules: u32::try_from(policy.rule_names().len()).unwrap_or(u32::MAX),
                };
                let index = self.record_engine(actor, loaded);
                let previous = {
                    let mut p = self.policy.write().unwrap_or_else(|e| e.into_inner());
                    std::mem::replace(&mut *p, policy)
                };
                let previous_sha256 = previous.sha256().to_owned();
                self.undo_unless_durable(index, Undo::Policy(previous));
                self.reply(reply, Ok(previous_sha256));
            }
        }
    }

    /// Ends the streams of principals the directory no longer lists as they were; their
    /// offers and reviews go back to the queue (recorded as withdrawn, reason `revoked`).
    fn revoke(
        &mut self,
        principals: &[PrincipalId],
        supervisors: std::sync::Arc<Vec<crate::domain::Principal>>,
    ) -> super::command::Revoked {
        self.config.supervisors = supervisors;
        let mut revoked = super::command::Revoked::default();
        for p in principals {
            if let Some(s) = self.sessions.remove(p) {
                // Told why before the stream ends (try_send: a full buffer just ends it).
                let _ = s.tx.try_send(SupervisorEvent::Revoked);
                self.signed_out(p, s, WithdrawReason::Revoked);
                revoked.attend_streams += 1;
            }
        }
        let requests = &self.requests;
        revoked.watched_requests = self.watchers.end_where(|id| {
            requests
                .get(id)
                .is_some_and(|r| principals.contains(&r.teller))
        });
        tracing::info!(
            principals = principals.len(),
            attend_streams = revoked.attend_streams,
            watched_requests = revoked.watched_requests,
            "principal directory reloaded: revoked principals' streams ended"
        );
        revoked
    }

    fn begin_shutdown(&mut self, record: bool, reply: super::command::Reply<()>) {
        tracing::info!("engine stopping: ending streams, finishing what is in flight");
        if record && self.stopping.is_none() && self.refusal(true).is_none() {
            self.record_engine(
                crate::domain::Actor::System,
                crate::domain::EngineEvent::Stopped,
            );
        }
        // Dropping the senders ends every Attend and Watch stream; consoles reconnect.
        self.sessions.clear();
        self.count_sessions();
        self.watchers.clear();
        self.dispatch_all = false;
        self.dispatch_new.clear();
        if self.stopping.is_none() {
            self.stopping = Some(reply);
        }
    }

    /// A teller's request if held here, `NotActive` if not held (the caller reads it from the
    /// projection: final requests never change, so there is no race), NotFound if another
    /// teller's.
    fn lookup(&self, teller: &PrincipalId, id: &RequestId) -> Result<Lookup<&Request>, GetError> {
        match self.requests.get(id) {
            Some(r) if &r.teller == teller => Ok(Lookup::Active(r)),
            Some(_) => Err(GetError::NotFound),
            None => Ok(Lookup::NotActive),
        }
    }

    fn watch(
        &mut self,
        teller: PrincipalId,
        id: RequestId,
    ) -> Result<Lookup<super::command::WatchStart>, GetError> {
        let view = match self.lookup(&teller, &id)? {
            Lookup::Active(r) => Request::clone(r),
            Lookup::NotActive => return Ok(Lookup::NotActive),
        };
        let rx = if view.state.is_final() {
            // Nothing more will happen to it: the stream ends after the current state.
            mpsc::channel(1).1
        } else {
            self.watchers.watch(id, self.config.watch_buffer)
        };
        Ok(Lookup::Active((view, rx)))
    }

    fn submit(
        &mut self,
        teller: Principal,
        submission: Submission,
        fingerprint: [u8; 32],
        prior: super::command::PriorLookup,
    ) -> Result<SubmitAnswer, SubmitError> {
        match self.earlier(&teller.id, &submission.serial, fingerprint, prior)? {
            Earlier::Same(answer) => return Ok(answer),
            Earlier::Other => {
                return Err(SubmitError::SerialReused(submission.serial.to_string()));
            }
            Earlier::None => {}
        }
        if self.requests.undecided() >= self.config.queue_length_max {
            return Err(SubmitError::QueueFull(self.config.queue_length_max));
        }
        if self.requests.pending(&teller.id) >= self.config.pending_per_teller_max {
            return Err(SubmitError::TellerPendingFull(
                self.config.pending_per_teller_max,
            ));
        }
        let requirements = self.requirements(&submission.transaction)?;
        let event = Event::Submitted {
            teller: teller.id.clone(),
            branch: teller.branch,
            submission,
            requirements,
        };
        Ok(self.open(teller.id, event, fingerprint)?)
    }

    /// Records the event that opens a new request, by `teller`, and answers with it.
    fn open(
        &mut self,
        teller: PrincipalId,
        event: Event,
        fingerprint: [u8; 32],
    ) -> Result<SubmitAnswer, Unavailable> {
        let id = RequestId::from_random(self.rng.random());
        let rec = Record {
            request: id.clone(),
            at: self.now(),
            actor: Actor::Principal(teller),
            event,
        };
        self.append(rec, Some(fingerprint));
        let view = self.requests.get(&id).cloned();
        match view {
            Some(r) => Ok((Lookup::Active(r), id, false)),
            // Applying failed and stopped the engine; nothing was acknowledged.
            None => Err(self.refusal(true).unwrap_or(Unavailable::NotDurable)),
        }
    }

    /// What the policy in force requires of a transaction.
    fn requirements(
        &self,
        t: &crate::domain::Transaction,
    ) -> Result<crate::domain::Requirements, FieldError> {
        let policy = self
            .policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        policy
            .evaluate(&t.code, &t.amount.currency, t.amount.minor_units)
            .map_err(|e| {
                // A code no rule names is the code's fault; a known code whose amount or
                // currency no rule covers is the transaction's as a whole.
                let field = if policy.knows_code(&t.code) {
                    "transaction"
                } else {
                    "transaction.code"
                };
                FieldError::new(field, e.to_string())
            })
    }

    /// What an earlier Submit or RegisterFallback of this teller's serial made: the same call
    /// (a retry, answered as a replay), another one, or none.
    fn earlier(
        &self,
        teller: &PrincipalId,
        serial: &crate::domain::TellerSerial,
        fingerprint: [u8; 32],
        prior: super::command::PriorLookup,
    ) -> Result<Earlier, StorageFault> {
        let found = match self.requests.submitted_as(teller, serial) {
            Some(found) => Some(found.clone()),
            None => self.submitted_before(teller, serial, prior)?,
        };
        Ok(match found {
            None => Earlier::None,
            Some((_, fp)) if fp != fingerprint => Earlier::Other,
            Some((id, _)) => {
                let found = match self.requests.get(&id) {
                    Some(r) => Lookup::Active(Request::clone(r)),
                    None => Lookup::NotActive,
                };
                Earlier::Same((found, id, true))
            }
        })
    }

    /// Registers an authorization given on site during a fallback, whose signature the API
    /// has checked: the policy must allow fallback for the transaction and the supervisor's
    /// authority must have covered it. The request is final at once and never offered.
    fn register_fallback(
        &mut self,
        teller: Principal,
        submission: Submission,
        on_site: crate::domain::OnSite,
        supervisor: Principal,
        fingerprint: [u8; 32],
        prior: super::command::PriorLookup,
    ) -> Result<SubmitAnswer, FallbackError> {
        match self.earlier(&teller.id, &submission.serial, fingerprint, prior)? {
            Earlier::Same(answer) => return Ok(answer),
            Earlier::Other => {
                return Err(FallbackError::SerialReused(submission.serial.to_string()));
            }
            Earlier::None => {}
        }
        let t = &submission.transaction;
        let requirements = self.requirements(t)?;
        if !requirements.fallback {
            return Err(FallbackError::NotAllowed {
                rule: requirements.rule,
            });
        }
        if !supervisor.may_decide(requirements.level, t) {
            return Err(FallbackError::Authority {
                supervisor: supervisor.id.to_string(),
                level: requirements.level,
            });
        }
        let event = Event::FallbackRegistered {
            teller: teller.id.clone(),
            branch: teller.branch,
            submission,
            requirements,
            on_site,
        };
        let (_, id, _) = self.open(teller.id, event, fingerprint)?;
        // Every fallback is reviewed after the fact.
        let reason = crate::domain::ReviewReason::Fallback;
        self.record(&id, Actor::System, Event::ReviewDrawn { reason });
        Ok((Lookup::Active(self.current(&id)?), id, false))
    }

    /// The request as it is now, for a command that just changed it.
    fn current(&self, id: &RequestId) -> Result<Request, Unavailable> {
        self.requests
            .get(id)
            .cloned()
            .ok_or_else(|| self.refusal(true).unwrap_or(Unavailable::NotDurable))
    }

    fn cancel(
        &mut self,
        teller: PrincipalId,
        id: RequestId,
        reason: String,
    ) -> Result<Lookup<Outcome>, CancelError> {
        let Some(r) = self.requests.owned(&teller, &id) else {
            return match self.requests.contains(&id) {
                true => Err(CancelError::NotFound),
                false => Ok(Lookup::NotActive),
            };
        };
        if r.did(&Act::Cancelled {
            reason: reason.clone(),
        }) {
            return Ok(Lookup::Active(replayed(r)));
        }
        if r.state.is_final() {
            return Err(CancelError::Final(r.state));
        }
        let holder = r.assignee.clone().map(|s| (s, r.epoch));
        self.record(&id, Actor::Principal(teller), Event::Cancelled { reason });
        if let Some((supervisor, epoch)) = holder {
            self.withdraw(&id, &supervisor, epoch, None, Withdrawal::Cancelled);
        }
        Ok(Lookup::Active(self.acted(&id)?))
    }

    fn resubmit(
        &mut self,
        teller: PrincipalId,
        id: RequestId,
        added: Vec<ImageRef>,
        removed: Vec<ImageHash>,
        note: String,
    ) -> Result<Lookup<Outcome>, ResubmitError> {
        let Some(r) = self.requests.owned(&teller, &id) else {
            return match self.requests.contains(&id) {
                true => Err(ResubmitError::NotFound),
                false => Ok(Lookup::NotActive),
            };
        };
        if r.did(&Act::Resubmitted {
            added: added.clone(),
            removed: removed.clone(),
            note: note.clone(),
        }) {
            return Ok(Lookup::Active(replayed(r)));
        }
        if r.state != State::Returned {
            return Err(ResubmitError::NotReturned(r.state));
        }
        let Some(images) =
            crate::domain::request::resubmitted_images(&r.submission.images, &added, &removed)
        else {
            return Err(FieldError::new(
                "remove_image_sha256",
                "names an image that is not attached, or names one twice",
            )
            .into());
        };
        let (min, max) = (
            self.config.images_per_request_min,
            self.config.images_per_request_max,
        );
        if images.len() < min {
            let why = format!("a request needs at least {min} image(s)");
            return Err(FieldError::new("images", why).into());
        }
        if images.len() > max {
            let why = format!(
                "the request would hold {} images; at most {max} are allowed",
                images.len()
            );
            return Err(FieldError::new("images", why).into());
        }
        let event = Event::Resubmitted {
            added,
            removed,
            note,
        };
        self.record(&id, Actor::Principal(teller), event);
        Ok(Lookup::Active(self.acted(&id)?))
    }

    /// A serial not in memory: what the caller's projection read found, or what left memory
    /// since it read, or the projection now (a local one the caller did not read, or rounds
    /// since no longer kept).
    fn submitted_before(
        &self,
        teller: &PrincipalId,
        serial: &crate::domain::TellerSerial,
        prior: super::command::PriorLookup,
    ) -> Result<Option<super::evicted::Entry>, StorageFault> {
        use super::command::PriorLookup;
        use super::evicted::Since;
        let since = match prior {
            PriorLookup::Made {
                found: Some(found), ..
            } => return Ok(Some(found)),
            PriorLookup::Made { round, found: None } => {
                self.evicted.since(round, &(teller.clone(), serial.clone()))
            }
            PriorLookup::NotMade => Since::Unknown,
        };
        match since {
            Since::Evicted(entry) => Ok(Some(entry)),
            Since::NotEvicted => Ok(None),
            Since::Unknown => Ok(self
                .projection
                .idempotency(teller, serial)
                .map_err(StorageFault)?),
        }
    }

    fn attend(&mut self, supervisor: Principal) -> (u64, mpsc::Receiver<SupervisorEvent>) {
        let id = supervisor.id.clone();
        let (session, rx, replaced) = self.sessions.open(supervisor, self.config.attend_buffer);
        if let Some(old) = replaced {
            let _ = old.tx.try_send(SupervisorEvent::Superseded);
            self.signed_out(&id, old, WithdrawReason::Superseded);
        }
        self.hand_back_reviews(&id);
        tracing::info!(supervisor = %id, session, "supervisor signed in");
        self.count_sessions();
        self.dispatch_all = true;
        (session, rx)
    }

    /// Gives a new session the reviews its supervisor still holds from before a restart or a
    /// takeover: they count against the task limit again, go back to the queue if this stream
    /// closes, and are sent first so the console can show them.
    fn hand_back_reviews(&mut self, supervisor: &PrincipalId) {
        let held: Vec<Request> = self
            .requests
            .in_review_by(supervisor)
            .into_iter()
            .cloned()
            .collect();
        for request in held {
            let Some(review_by) = request.review_by(self.config.review_timeout_ms) else {
                continue;
            };
            self.sessions.hold(supervisor, &request.id);
            let epoch = request.epoch;
            let event = SupervisorEvent::Review {
                request,
                epoch,
                review_by,
            };
            self.send_supervisor(supervisor, event);
        }
    }

    /// Ends a supervisor's session, if still current, and puts what they held back in the
    /// queue.
    pub(crate) fn leave(&mut self, leave: Leave, reason: WithdrawReason) {
        if let Some(s) = self.sessions.close(&leave.supervisor, leave.session) {
            self.signed_out(&leave.supervisor, s, reason);
        }
    }

    fn signed_out(
        &mut self,
        supervisor: &PrincipalId,
        s: super::sessions::Session,
        reason: WithdrawReason,
    ) {
        self.count_sessions();
        tracing::info!(supervisor = %supervisor, session = s.id, reason = reason.as_str(), "supervisor signed out");
        for id in s.tasks {
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            if matches!(r.state, State::Offered | State::InReview)
                && r.assignee.as_ref() == Some(supervisor)
            {
                let event = Event::OfferWithdrawn {
                    supervisor: supervisor.clone(),
                    epoch: r.epoch,
                    reason,
                };
                self.record(&id, Actor::System, event);
            }
        }
    }

    fn fenced(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
        epoch: u64,
        state: State,
    ) -> Result<&Request, Option<FenceError>> {
        let r = self.requests.get(id).ok_or(None)?;
        r.check_fence(supervisor, epoch, state).map_err(Some)?;
        Ok(r)
    }

    fn accept(
        &mut self,
        supervisor: PrincipalId,
        id: RequestId,
        epoch: u64,
    ) -> Result<Outcome, AcceptError> {
        if let Some(r) = self.did(
            &id,
            &Act::Accepted {
                supervisor: supervisor.clone(),
                epoch,
            },
        ) {
            return Ok(r);
        }
        self.fenced(&supervisor, &id, epoch, State::Offered)
            .map_err(|e| e.map_or(AcceptError::NotFound, AcceptError::Fence))?;
        let event = Event::Accepted {
            supervisor: supervisor.clone(),
            epoch,
        };
        self.record(&id, Actor::Principal(supervisor), event);
        Ok(self.acted(&id)?)
    }

    /// The request as a replay, when `act` already took effect on it.
    fn did(&self, id: &RequestId, act: &Act) -> Option<Outcome> {
        self.requests.get(id).filter(|r| r.did(act)).map(replayed)
    }

    /// The request after an action that took effect now.
    fn acted(&self, id: &RequestId) -> Result<Outcome, Unavailable> {
        Ok(Outcome {
            request: self.current(id)?,
            replayed: false,
        })
    }

    fn decline(
        &mut self,
        supervisor: PrincipalId,
        id: RequestId,
        epoch: u64,
        reason: String,
    ) -> Result<bool, DeclineError> {
        let act = Act::Declined {
            supervisor: supervisor.clone(),
            epoch,
            reason: reason.clone(),
        };
        if self.did(&id, &act).is_some() {
            return Ok(true);
        }
        self.fenced(&supervisor, &id, epoch, State::Offered)
            .map_err(|e| e.map_or(DeclineError::NotFound, DeclineError::Fence))?;
        let event = Event::OfferDeclined {
            supervisor: supervisor.clone(),
            epoch,
            reason,
        };
        self.record(&id, Actor::Principal(supervisor.clone()), event);
        self.release_task(&supervisor, &id);
        if self
            .requests
            .get(&id)
            .is_some_and(Request::declines_escalate)
        {
            self.escalate(&id, EscalationReason::Declined);
        }
        Ok(false)
    }

    fn decide(
        &mut self,
        supervisor: Principal,
        id: RequestId,
        epoch: u64,
        verdict: Verdict,
        rekeyed: crate::domain::Rekeyed,
    ) -> Result<Outcome, DecideError> {
        let act = Act::Decided {
            supervisor: supervisor.id.clone(),
            epoch,
            verdict: verdict.clone(),
        };
        if let Some(r) = self.did(&id, &act) {
            return Ok(r);
        }
        // A retried approval whose re-keying was refused (its answer lost) gets the same
        // answer, even after the last attempt sent the request back to the queue.
        if verdict.decision == Decision::Approve
            && let Some(r) = self.requests.get(&id)
            && !r.requirements.rekey.is_empty()
            && r.did(&Act::RekeyMismatched {
                supervisor: supervisor.id.clone(),
                epoch,
                typed: rekeyed.clone(),
            })
        {
            let attempts = r.requirements.rekey_attempts.max(1);
            let out_of_attempts = r.assignee.as_ref() != Some(&supervisor.id) || r.epoch != epoch;
            return Err(DecideError::RekeyMismatch {
                fields: rekeyed.mismatched(&r.requirements.rekey, &r.submission.transaction),
                attempts_left: if out_of_attempts {
                    0
                } else {
                    attempts.saturating_sub(r.rekey_mismatches)
                },
            });
        }
        let r = self
            .fenced(&supervisor.id, &id, epoch, State::InReview)
            .map_err(|e| e.map_or(DecideError::NotFound, DecideError::Fence))?;
        // Dispatch already kept these apart; checking again here means a bug in dispatch
        // cannot turn into a self-authorized or same-branch decision.
        if r.teller == supervisor.id {
            return Err(DecideError::NotAllowed(Forbidden::OwnRequest));
        }
        if r.requirements.independent && r.branch == supervisor.branch {
            return Err(DecideError::NotAllowed(Forbidden::OwnBranch));
        }
        if !supervisor.may_decide(r.level, &r.submission.transaction) {
            return Err(DecideError::NotAllowed(Forbidden::Authority));
        }
        if verdict.decision == Decision::Approve
            && r.approvals.iter().any(|a| a.supervisor == supervisor.id)
        {
            return Err(DecideError::NotAllowed(Forbidden::SameApprover));
        }
        // Blind re-keying: an approval carries the fields typed from the voucher, and they
        // must match what the teller entered. Rejections and returns need none.
        if verdict.decision == Decision::Approve && !r.requirements.rekey.is_empty() {
            let wanted = r.requirements.rekey.clone();
            if let Some(f) = rekeyed.missing(&wanted).first() {
                return Err(FieldError::new(
                    format!("rekeyed.{}", rekey_field_name(*f)),
                    "this approval needs the field typed from the voucher",
                )
                .into());
            }
            let attempts = r.requirements.rekey_attempts.max(1);
            let mismatched = rekeyed.mismatched(&wanted, &r.submission.transaction);
            if !mismatched.is_empty() {
                let left = attempts.saturating_sub(r.rekey_mismatches + 1);
                let event = Event::RekeyMismatched {
                    supervisor: supervisor.id.clone(),
                    epoch,
                    typed: rekeyed,
                    mismatched: mismatched.clone(),
                };
                self.record(&id, Actor::Principal(supervisor.id.clone()), event);
                if left == 0 {
                    // Back in the queue for someone else, as after a decline: the task slot
                    // is free, and enough of them raise the level.
                    self.release_task(&supervisor.id, &id);
                    if self
                        .requests
                        .get(&id)
                        .is_some_and(Request::declines_escalate)
                    {
                        self.escalate(&id, EscalationReason::Declined);
                    }
                }
                return Err(DecideError::RekeyMismatch {
                    fields: mismatched,
                    attempts_left: left,
                });
            }
        }
        let event = Event::Decided {
            supervisor: supervisor.id.clone(),
            epoch,
            verdict,
        };
        let leaf = self.record_leaf(&id, Actor::Principal(supervisor.id.clone()), event);
        self.release_task(&supervisor.id, &id);
        self.draw_review(&id, &leaf);
        Ok(self.acted(&id)?)
    }

    /// After an approval that made a request APPROVED: draws it for after-the-fact review
    /// when the draw from the approving record's leaf hash (`record::review_draw`) falls under
    /// the rule's percent, and records the draw. Nobody picks what is reviewed, and an
    /// auditor can recompute every draw from the ledger.
    fn draw_review(&mut self, id: &RequestId, leaf: &[u8; 32]) {
        let Some(r) = self.requests.get(id) else {
            return;
        };
        let percent = r.requirements.review_percent;
        if r.state != State::Approved || percent == 0 || r.review.is_some() {
            return;
        }
        let draw = crate::ledger::record::review_draw(leaf);
        if crate::ledger::record::drawn(draw, percent) {
            let reason = crate::domain::ReviewReason::Sampled { draw, percent };
            self.record(id, Actor::System, Event::ReviewDrawn { reason });
        }
    }

    /// Brings a request that left memory back from storage (one request: the projection
    /// names its records, the ledger holds them), held until the projection has whatever is
    /// recorded next. `false` when there is no such request.
    fn hold(&mut self, id: &RequestId) -> Result<bool, StorageFault> {
        if self.requests.contains(id) {
            return Ok(true);
        }
        let Some(loaded) =
            super::load::load(&*self.ledger, &*self.projection, id).map_err(StorageFault)?
        else {
            return Ok(false);
        };
        let fingerprint = loaded
            .records
            .first()
            .and_then(|(_, rec, _)| crate::ledger::record::opens(&rec.event))
            .map(|(_, _, fp)| fp)
            .ok_or_else(|| {
                StorageFault(crate::storage::StorageError::Inconsistent(format!(
                    "request {id}'s first record opens no request"
                )))
            })?;
        self.requests.adopt(loaded.request, fingerprint);
        Ok(true)
    }

    /// At start: an approval and its review draw are written together, the draw second, so
    /// a crash can keep the approval as the ledger's last record and lose the draw (neither
    /// was answered). The draw is made again from that record, as it was made then.
    pub(crate) fn redraw_cut_review(&mut self) -> Result<(), StorageFault> {
        let Some(last) = self.ledger.len().checked_sub(1) else {
            return Ok(());
        };
        let bytes = self.ledger.read(last).map_err(StorageFault)?;
        let Ok(rec) = crate::ledger::record::decode(&bytes) else {
            // An engine record: no approval was cut short.
            return Ok(());
        };
        let approved = matches!(
            &rec.event,
            Event::Decided { verdict, .. } if verdict.decision == Decision::Approve
        );
        if approved && self.hold(&rec.request)? {
            let leaf = crate::ledger::merkle::leaf_hash(&bytes);
            self.draw_review(&rec.request, &leaf);
        }
        Ok(())
    }

    /// A reviewer's finding on a request drawn for review, which may have left memory long
    /// ago: it is read back (one request, from the projection and the ledger) and held until
    /// the projection has the finding.
    fn review(
        &mut self,
        reviewer: PrincipalId,
        id: RequestId,
        outcome: crate::domain::ReviewOutcome,
        comment: String,
    ) -> Result<Outcome, ReviewError> {
        if !self.hold(&id)? {
            return Err(ReviewError::NotFound);
        }
        let act = Act::Reviewed {
            reviewer: reviewer.clone(),
            outcome,
            comment: comment.clone(),
        };
        if let Some(r) = self.did(&id, &act) {
            return Ok(r);
        }
        let r = self.requests.get(&id).ok_or(ReviewError::NotFound)?;
        match &r.review {
            None => return Err(ReviewError::NotDrawn),
            Some(review) if review.done.is_some() => {
                return Err(ReviewError::Done(review.status()));
            }
            Some(_) => {}
        }
        let event = Event::Reviewed {
            reviewer: reviewer.clone(),
            outcome,
            comment,
        };
        self.record(&id, Actor::Principal(reviewer), event);
        Ok(self.acted(&id)?)
    }

    fn offer_image(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
        hash: ImageHash,
    ) -> Result<crate::domain::MediaType, ImageError> {
        let r = self.requests.get(id).ok_or(ImageError::NotFound)?;
        let held = matches!(r.state, State::Offered | State::InReview)
            && r.assignee.as_ref() == Some(supervisor);
        // Holding first: whether an image is attached is told only to the holder.
        if !held {
            return Err(ImageError::NotHeld);
        }
        match r.submission.images.iter().find(|i| i.hash == hash) {
            Some(i) => Ok(i.media_type),
            None => Err(ImageError::NotAttached),
        }
    }

    fn pause(
        &mut self,
        supervisor: &PrincipalId,
        paused: bool,
        by: Option<PrincipalId>,
    ) -> Result<(), PauseError> {
        let Some(before) = self.sessions.get(supervisor).map(|s| s.paused) else {
            return Err(PauseError::NotAttending);
        };
        // A duty manager's change is recorded, once: pausing the paused records nothing.
        if let Some(by) = by.as_ref().filter(|_| before != paused) {
            let event = crate::domain::EngineEvent::SupervisorPaused {
                supervisor: supervisor.clone(),
                paused,
            };
            let index = self.record_engine(crate::domain::Actor::Principal(by.clone()), event);
            // Nothing in force unrecorded: a lost record takes the pause back.
            let undo = super::core::Undo::Pause {
                supervisor: supervisor.clone(),
                paused: before,
            };
            self.undo_unless_durable(index, undo);
            // The console says who paused them, once the record is durable.
            let told = SupervisorEvent::Presence {
                paused,
                by: by.clone(),
            };
            self.send_supervisor(supervisor, told);
        }
        self.sessions.pause(supervisor, paused);
        self.dispatch_all |= !paused;
        self.count_sessions();
        tracing::info!(supervisor = %supervisor, paused, by = ?by.as_ref().map(PrincipalId::as_str), "supervisor pause changed");
        Ok(())
    }
}

/// How the API names a re-keyed field (`DecideRequest.rekeyed`).
fn rekey_field_name(f: crate::domain::RekeyField) -> &'static str {
    match f {
        crate::domain::RekeyField::Amount => "amount_minor_units",
        crate::domain::RekeyField::Account => "account",
        crate::domain::RekeyField::Counterparty => "counterparty",
    }
}

/// A request answered as a replay of an action that had already taken effect.
pub(crate) fn replayed(r: &Request) -> Outcome {
    Outcome {
        request: r.clone(),
        replayed: true,
    }
}

/// What an earlier call with a teller's serial made (see `Core::earlier`).
// Made once per call and matched at once, as `Event` is; boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Earlier {
    None,
    Same(SubmitAnswer),
    Other,
}
