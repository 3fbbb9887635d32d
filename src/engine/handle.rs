//! `EngineHandle`: the cloneable async face of the engine. Calls that change something go to
//! the single writer as commands and are answered once durable; reads of what is no longer in
//! memory, images and audits go to storage through `spawn_blocking`, never blocking the
//! runtime that serves gRPC.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::{
    Act, FenceError, ImageHash, ImageRef, MediaType, Principal, PrincipalId, Record, Request,
    RequestId, Submission, Timestamp, Verdict,
};
use crate::ledger::record;
use crate::storage::{ImageStore, LedgerRead, Projection, Storage, StorageError};

use super::checkpoints::Checkpointer;
use super::command::{
    Command, Leave, Lookup, Outcome, ServiceCommand, SupervisorCommand, TellerCommand,
};
use super::error::*;
use super::{
    Clock, EngineConfig, Loaded, SharedPolicy, Submitted, SupervisorEvent, load, recover, stats,
    status,
};

/// Runs blocking storage work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StorageError::Join)?
}

/// The cloneable async face of the engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) leave_tx: mpsc::UnboundedSender<Leave>,
    pub(super) ledger: Arc<dyn LedgerRead>,
    pub(super) projection: Arc<dyn Projection>,
    pub(super) images: Arc<dyn ImageStore>,
    pub(super) checkpointer: Arc<Checkpointer>,
    /// What the leader knows of its witnesses.
    pub(super) witnesses: super::witnesses::Board,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) config: EngineConfig,
    /// The policy in force for new submissions, shared with the engine task.
    pub(super) policy: SharedPolicy,
    /// True while the engine can take writes.
    pub(super) health: tokio::sync::watch::Receiver<bool>,
    /// The engine's eviction round (`evicted`), read before a Submit's projection lookup.
    pub(super) evicted_round: Arc<std::sync::atomic::AtomicU64>,
}

/// Ends a supervisor's session when their Attend stream is dropped.
pub struct SessionGuard {
    leave_tx: mpsc::UnboundedSender<Leave>,
    supervisor: PrincipalId,
    session: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let _ = self.leave_tx.send(Leave {
            supervisor: self.supervisor.clone(),
            session: self.session,
        });
    }
}

/// When the ledger shows the centre serving, from its engine records (see `stats::Serving`).
fn serving(
    ledger: &dyn crate::storage::LedgerRead,
    now_ms: i64,
) -> Result<stats::Serving, StorageError> {
    use crate::domain::{EngineEvent, Entry};
    let (_, records) = ledger.engine_records_from(0)?;
    let mut marks = Vec::with_capacity(records.len());
    for (index, bytes) in records {
        let Entry::Engine(rec) = crate::ledger::record::decode_entry(&bytes)
            .map_err(|source| StorageError::Record { index, source })?
        else {
            continue;
        };
        let at_ms = rec.at.0;
        marks.push(match rec.event {
            EngineEvent::Started { .. } => stats::Mark::Started {
                at_ms,
                previous_at_ms: match index.checked_sub(1) {
                    Some(i) => Some(ledger.entry(i)?.at().0),
                    None => None,
                },
            },
            EngineEvent::Stopped => stats::Mark::Stopped { at_ms },
            EngineEvent::WritesResumed { since, .. } => stats::Mark::Resumed {
                since_ms: since.0,
                at_ms,
            },
            EngineEvent::DirectoryLoaded { .. }
            | EngineEvent::PolicyLoaded { .. }
            | EngineEvent::SupervisorPaused { .. } => continue,
        });
    }
    Ok(stats::Serving::from_marks(&marks, now_ms))
}

impl EngineHandle {
    /// Recovers from the opened `storage` and starts the engine, which ends after `shutdown`
    /// (or when every handle is dropped). The engine records into `metrics`.
    pub async fn start(
        storage: Storage,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        rng: Box<dyn rand::RngCore + Send>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<(EngineHandle, tokio::task::JoinHandle<()>)> {
        recover::start(storage, config, clock, rng, metrics).await
    }

    /// Ends every stream, answers what is in flight once durable, and stops the engine.
    /// Calls after this are refused with UNAVAILABLE.
    /// Stops the engine; the ledger records the stop (`engine_stopped`), unless it cannot
    /// write.
    pub async fn shutdown(&self) {
        let _ = self
            .call(|reply| ServiceCommand::Shutdown {
                record: true,
                reply,
            })
            .await;
    }

    /// Stops the engine of a node that lost its lease: nothing is recorded, since another
    /// node leads the ledger now.
    pub async fn stop_without_record(&self) {
        let _ = self
            .call(|reply| ServiceCommand::Shutdown {
                record: false,
                reply,
            })
            .await;
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    async fn call<T, C: Into<Command>>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> C,
    ) -> Result<T, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx).into())
            .await
            .map_err(|_| Unavailable::NotRunning)?;
        // A dropped reply means the ledger failed before the call's records were durable.
        rx.await.map_err(|_| Unavailable::NotDurable)
    }

    /// Stores the images durably: the image writer appends them with whatever else is queued
    /// and answers after one fdatasync for the lot.
    pub async fn store_images(
        &self,
        images: Vec<(crate::domain::ImageKind, MediaType, Vec<u8>)>,
    ) -> Result<Vec<ImageRef>, StoreImagesError> {
        // One task per image, so a request's images are queued together and share a write.
        let puts: Vec<_> = images
            .into_iter()
            .map(|(kind, media_type, bytes)| {
                let store = self.images.clone();
                tokio::spawn(async move {
                    let size = bytes.len() as u64;
                    let hash = store.put(bytes).await?;
                    Ok(ImageRef {
                        kind,
                        media_type,
                        hash,
                        size,
                    })
                })
            })
            .collect();
        let mut refs = Vec::with_capacity(puts.len());
        for p in puts {
            let stored = p
                .await
                .map_err(|e| StoreImagesError(StorageError::Join(e)))?;
            match stored {
                Ok(r) => refs.push(r),
                Err(e) => {
                    // A full disk under the image log: the engine stops taking writes and
                    // reports NOT_SERVING until its probe of the store succeeds.
                    if matches!(e, StorageError::Unavailable { .. })
                        && self.images.probed_after_failure()
                    {
                        let error = Arc::new(StorageError::unavailable(
                            "store images",
                            std::io::Error::other(e.to_string()),
                        ));
                        let _ = self
                            .tx
                            .try_send(ServiceCommand::ImagesFailed { error }.into());
                    }
                    return Err(StoreImagesError(e));
                }
            }
        }
        Ok(refs)
    }

    pub async fn submit(
        &self,
        teller: Principal,
        submission: Submission,
    ) -> Result<Submitted, SubmitError> {
        let fingerprint = record::submission_fingerprint(&submission);
        let teller_id = teller.id.clone();
        let prior = self.prior(&teller.id, &submission.serial).await?;
        let answer = self
            .call(|reply| TellerCommand::Submit {
                teller,
                submission,
                fingerprint,
                prior,
                reply,
            })
            .await??;
        Ok(self.submitted(&teller_id, answer).await?)
    }

    /// Registers an authorization given on site during a fallback. The caller has checked
    /// `on_site`'s signature and certificate against `supervisor`, the directory's entry.
    pub async fn register_fallback(
        &self,
        teller: Principal,
        submission: Submission,
        on_site: crate::domain::OnSite,
        supervisor: Principal,
    ) -> Result<Submitted, FallbackError> {
        let fingerprint = record::fallback_fingerprint(&submission, &on_site);
        let teller_id = teller.id.clone();
        let prior = self.prior(&teller.id, &submission.serial).await?;
        let answer = self
            .call(|reply| TellerCommand::RegisterFallback {
                teller,
                submission,
                on_site,
                supervisor,
                fingerprint,
                prior,
                reply,
            })
            .await??;
        Ok(self.submitted(&teller_id, answer).await?)
    }

    /// Records a reviewer's finding on a request drawn for after-the-fact review.
    pub async fn review(
        &self,
        reviewer: PrincipalId,
        id: RequestId,
        outcome: crate::domain::ReviewOutcome,
        comment: String,
    ) -> Result<Outcome, ReviewError> {
        self.call(|reply| ServiceCommand::Review {
            reviewer,
            id,
            outcome,
            comment,
            reply,
        })
        .await?
    }

    /// What the projection holds for a teller's serial, when it is remote: read here, by the
    /// caller, not by the single writer, since on a database it is a round trip (shared by
    /// the submissions arriving together).
    async fn prior(
        &self,
        teller: &PrincipalId,
        serial: &crate::domain::TellerSerial,
    ) -> Result<super::command::PriorLookup, StorageFault> {
        if !self.projection.remote() {
            return Ok(super::command::PriorLookup::NotMade);
        }
        let round = self
            .evicted_round
            .load(std::sync::atomic::Ordering::Acquire);
        let found = self
            .projection
            .idempotency_soon(teller.clone(), serial.clone())
            .await
            .map_err(StorageFault)?;
        Ok(super::command::PriorLookup::Made { round, found })
    }

    /// The request a Submit or RegisterFallback made (or made before, for a replay).
    async fn submitted(
        &self,
        teller: &PrincipalId,
        (found, id, replayed): super::command::SubmitAnswer,
    ) -> Result<Submitted, StorageFault> {
        let request = match found {
            Lookup::Active(r) => r,
            Lookup::NotActive => self.load_owned(teller, &id).await?.ok_or_else(|| {
                StorageFault(StorageError::Inconsistent(format!(
                    "request {id} is indexed but cannot be read"
                )))
            })?,
        };
        Ok(Submitted { request, replayed })
    }

    pub async fn get(&self, teller: &PrincipalId, id: &RequestId) -> Result<Request, GetError> {
        let found = self
            .call(|reply| TellerCommand::Get {
                teller: teller.clone(),
                id: id.clone(),
                reply,
            })
            .await??;
        match found {
            Lookup::Active(r) => Ok(r),
            Lookup::NotActive => self.load_owned(teller, id).await?.ok_or(GetError::NotFound),
        }
    }

    /// What a Watch sends: the request's states, oldest first, and a receiver of every later
    /// change (none once the request is final). Without `after_version` the states are just
    /// the current one; otherwise they are the state after every change recorded after that
    /// version, the current one last (none when the caller is up to date), so a client that
    /// reconnects, to this node or to a new leader, misses nothing.
    pub async fn watch(
        &self,
        teller: &PrincipalId,
        id: &RequestId,
        after_version: Option<u64>,
    ) -> Result<(Vec<Request>, Option<mpsc::Receiver<Request>>), WatchError> {
        let found = self
            .call(|reply| TellerCommand::Watch {
                teller: teller.clone(),
                id: id.clone(),
                reply,
            })
            .await??;
        let (current, rx) = match found {
            Lookup::Active((r, rx)) => (r, Some(rx)),
            Lookup::NotActive => {
                let r = self
                    .load_owned(teller, id)
                    .await?
                    .ok_or(WatchError::NotFound)?;
                (r, None)
            }
        };
        let rx = rx.filter(|_| !current.state.is_final());
        let version = current.version;
        let Some(after_version) = after_version else {
            return Ok((vec![current], rx));
        };
        if after_version > version {
            return Err(WatchError::Ahead {
                after: after_version,
                version,
            });
        }
        if after_version == version {
            return Ok((Vec::new(), rx));
        }
        // The engine answered once `current` was durable, and the projection is brought up to
        // the durable count, so it names every record of the request up to `current`.
        self.projected().await?;
        let (ledger, projection, key) = (self.ledger.clone(), self.projection.clone(), id.clone());
        let mut states = blocking(move || {
            load::states_between(
                ledger.as_ref(),
                projection.as_ref(),
                &key,
                after_version,
                version,
            )
        })
        .await
        .map_err(StorageFault)?;
        states.push(current);
        Ok((states, rx))
    }

    pub async fn cancel(
        &self,
        teller: &PrincipalId,
        id: &RequestId,
        reason: String,
    ) -> Result<Outcome, CancelError> {
        let act = Act::Cancelled {
            reason: reason.clone(),
        };
        let found = self
            .call(|reply| TellerCommand::Cancel {
                teller: teller.clone(),
                id: id.clone(),
                reason,
                reply,
            })
            .await??;
        match found {
            Lookup::Active(r) => Ok(r),
            Lookup::NotActive => match self.load_owned(teller, id).await? {
                Some(r) if r.did(&act) => Ok(super::commands::replayed(&r)),
                Some(r) => Err(CancelError::Final(r.state)),
                None => Err(CancelError::NotFound),
            },
        }
    }

    pub async fn resubmit(
        &self,
        teller: &PrincipalId,
        id: &RequestId,
        added: Vec<ImageRef>,
        removed: Vec<ImageHash>,
        note: String,
    ) -> Result<Outcome, ResubmitError> {
        let act = Act::Resubmitted {
            added: added.clone(),
            removed: removed.clone(),
            note: note.clone(),
        };
        let found = self
            .call(|reply| TellerCommand::Resubmit {
                teller: teller.clone(),
                id: id.clone(),
                added,
                removed,
                note,
                reply,
            })
            .await??;
        match found {
            Lookup::Active(r) => Ok(r),
            Lookup::NotActive => match self.load_owned(teller, id).await? {
                Some(r) if r.did(&act) => Ok(super::commands::replayed(&r)),
                Some(r) => Err(ResubmitError::NotReturned(r.state)),
                None => Err(ResubmitError::NotFound),
            },
        }
    }

    /// Signs a supervisor in. Events arrive on the receiver; dropping the guard signs out.
    pub async fn attend(
        &self,
        supervisor: Principal,
    ) -> Result<(SessionGuard, mpsc::Receiver<SupervisorEvent>), AttendError> {
        let id = supervisor.id.clone();
        let (session, rx) = self
            .call(|reply| SupervisorCommand::Attend { supervisor, reply })
            .await??;
        let guard = SessionGuard {
            leave_tx: self.leave_tx.clone(),
            supervisor: id,
            session,
        };
        Ok((guard, rx))
    }

    pub async fn accept(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
        epoch: u64,
    ) -> Result<Outcome, AcceptError> {
        let act = Act::Accepted {
            supervisor: supervisor.clone(),
            epoch,
        };
        let r = self
            .call(|reply| SupervisorCommand::Accept {
                supervisor: supervisor.clone(),
                id: id.clone(),
                epoch,
                reply,
            })
            .await?;
        self.settled(r, supervisor, id, &act, super::commands::replayed)
            .await
    }

    /// An action on an offer of a request the engine no longer holds (`NotFound`): it was
    /// decided. When the same action (`act`) is among what took effect, the call was a retry
    /// and is answered as one (`replay`); otherwise it is refused, with the request's state
    /// told only to a supervisor who decided it; to anyone else it is simply not theirs.
    /// `NotFound` stays when there is no such request.
    async fn settled<T, E: OnOffer>(
        &self,
        r: Result<T, E>,
        supervisor: &PrincipalId,
        id: &RequestId,
        act: &Act,
        replay: impl FnOnce(&Request) -> T,
    ) -> Result<T, E> {
        match r {
            Err(e) if e.is_not_found() => {
                let (ledger, projection, key) =
                    (self.ledger.clone(), self.projection.clone(), id.clone());
                let loaded =
                    blocking(move || load::load(ledger.as_ref(), projection.as_ref(), &key)).await;
                let Ok(Some(loaded)) = loaded else {
                    return Err(e);
                };
                let r = loaded.request;
                if r.did(act) {
                    return Ok(replay(&r));
                }
                let decided_it = r
                    .acts
                    .iter()
                    .any(|a| matches!(a, Act::Decided { supervisor: s, .. } if s == supervisor));
                Err(E::fenced(if decided_it {
                    FenceError::WrongState(r.state)
                } else {
                    FenceError::NotAssigned
                }))
            }
            r => r,
        }
    }

    pub async fn decline(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
        epoch: u64,
        reason: String,
    ) -> Result<bool, DeclineError> {
        let act = Act::Declined {
            supervisor: supervisor.clone(),
            epoch,
            reason: reason.clone(),
        };
        let r = self
            .call(|reply| SupervisorCommand::Decline {
                supervisor: supervisor.clone(),
                id: id.clone(),
                epoch,
                reason,
                reply,
            })
            .await?;
        self.settled(r, supervisor, id, &act, |_| true).await
    }

    pub async fn decide(
        &self,
        supervisor: &Principal,
        id: &RequestId,
        epoch: u64,
        verdict: Verdict,
        rekeyed: crate::domain::Rekeyed,
    ) -> Result<Outcome, DecideError> {
        let act = Act::Decided {
            supervisor: supervisor.id.clone(),
            epoch,
            verdict: verdict.clone(),
        };
        let r = self
            .call(|reply| SupervisorCommand::Decide {
                supervisor: supervisor.clone(),
                id: id.clone(),
                epoch,
                verdict,
                rekeyed,
                reply,
            })
            .await?;
        self.settled(r, &supervisor.id, id, &act, super::commands::replayed)
            .await
    }

    /// An image of a request the supervisor currently holds.
    pub async fn offer_image(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
        hash: ImageHash,
    ) -> Result<(MediaType, Vec<u8>), ImageError> {
        let media = self
            .call(|reply| SupervisorCommand::OfferImage {
                supervisor: supervisor.clone(),
                id: id.clone(),
                hash,
                reply,
            })
            .await??;
        let bytes = self.read_image(hash).await.map_err(ImageError::Store)?;
        Ok((media, bytes))
    }

    /// Any stored image, for auditors.
    pub async fn audit_image(&self, hash: ImageHash) -> Result<Vec<u8>, AuditError> {
        self.read_image(hash).await.map_err(AuditError::Image)
    }

    /// A request with all its records, for auditors. Reads only what is durable.
    pub async fn audit_request(&self, id: &RequestId) -> Result<Loaded, AuditError> {
        self.projected().await?;
        let (ledger, projection, id) = (self.ledger.clone(), self.projection.clone(), id.clone());
        blocking(move || load::load(ledger.as_ref(), projection.as_ref(), &id))
            .await
            .map_err(StorageFault)?
            .ok_or(AuditError::NotFound)
    }

    async fn read_image(&self, hash: ImageHash) -> Result<Vec<u8>, StorageError> {
        let store = self.images.clone();
        blocking(move || store.get(&hash)).await
    }

    /// Reads a request that is no longer in memory, if it exists and belongs to `teller`.
    async fn load_owned(
        &self,
        teller: &PrincipalId,
        id: &RequestId,
    ) -> Result<Option<Request>, StorageFault> {
        let (ledger, projection, id) = (self.ledger.clone(), self.projection.clone(), id.clone());
        let loaded =
            blocking(move || load::load(ledger.as_ref(), projection.as_ref(), &id)).await?;
        Ok(loaded.map(|l| l.request).filter(|r| &r.teller == teller))
    }

    /// A record of the ledger, decoded; for tests and tools. Blocking.
    pub fn read_record(&self, index: u64) -> Result<Record, StorageFault> {
        Ok(self.ledger.record(index)?)
    }

    /// How many ledger records are durable.
    pub fn ledger_len(&self) -> u64 {
        self.ledger.len()
    }

    /// Stops (or resumes) offers to a supervisor without closing their stream.
    /// Pauses or resumes offers to `supervisor`: their own (`by` None), or the duty manager's
    /// (`by`: recorded in the ledger as theirs, answered once durable, and told to the
    /// supervisor's console).
    pub async fn pause(
        &self,
        supervisor: &PrincipalId,
        paused: bool,
        by: Option<&PrincipalId>,
    ) -> Result<(), PauseError> {
        self.call(|reply| ServiceCommand::Pause {
            supervisor: supervisor.clone(),
            paused,
            by: by.cloned(),
            reply,
        })
        .await?
    }

    /// Puts a new principal directory in force in the engine: `loaded` (a
    /// `directory_loaded` event) is recorded as `actor`'s, `principals` (removed or changed)
    /// lose their streams and what they held, and `supervisors` are who dispatch and
    /// escalation reckon with from now on. Answered once the record is durable.
    pub async fn revoke(
        &self,
        actor: crate::domain::Actor,
        loaded: crate::domain::EngineEvent,
        principals: Vec<PrincipalId>,
        supervisors: Vec<crate::domain::Principal>,
    ) -> Result<super::command::Revoked, Unavailable> {
        self.call(|reply| ServiceCommand::Revoke {
            actor,
            loaded,
            principals,
            supervisors: Arc::new(supervisors),
            reply,
        })
        .await?
    }

    /// The queue and the supervisors, exactly, as of now.
    pub async fn queue_status(&self) -> Result<status::QueueStatus, Unavailable> {
        self.call(|reply| ServiceCommand::Status { reply }).await
    }

    /// Whether this is a standby's handle (no engine runs behind it; the leader writes).
    pub fn is_standby(&self) -> bool {
        self.checkpointer.following()
    }

    /// The policy new submissions are evaluated against.
    pub fn policy(&self) -> Arc<crate::policy::Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the policy for new submissions (those already submitted keep the
    /// requirements recorded with them), recorded in the ledger as `actor`'s before any
    /// submission is evaluated against it; returns the previous one's hash once the record is
    /// durable. With no engine running here (a standby), the copy here changes unrecorded.
    pub async fn set_policy(
        &self,
        actor: crate::domain::Actor,
        policy: crate::policy::Policy,
    ) -> Result<String, Unavailable> {
        let policy = Arc::new(policy);
        let p = policy.clone();
        match self
            .call(|reply| ServiceCommand::SetPolicy {
                actor,
                policy: p,
                reply,
            })
            .await
        {
            // A standby's copy: there is no engine to record it (the leader records its own).
            // A leader's engine that stopped (a shutdown) refuses: nothing unrecorded.
            Err(Unavailable::NotRunning) if self.is_standby() => {
                let mut p = self.policy.write().unwrap_or_else(|e| e.into_inner());
                let previous = p.sha256().to_owned();
                *p = policy;
                Ok(previous)
            }
            other => other?,
        }
    }

    /// Statistics over the requests submitted in [from, until).
    /// `supervisor_branches` is each supervisor's branch, from the principal directory in
    /// force (see `stats::compute_with`).
    pub async fn statistics(
        &self,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
        supervisor_branches: std::collections::BTreeMap<String, String>,
    ) -> Result<stats::Stats, AuditError> {
        self.projected().await?;
        let p = self.projection.clone();
        let max = self.config.stats_rows_max;
        let rows = blocking(move || p.summaries_between(from_ms, until_ms, max))
            .await
            .map_err(StorageFault)?
            .map_err(|reached| AuditError::TooMany { max, reached })?;
        let serving = if rows.iter().any(|s| s.on_site_at_ms.is_some()) {
            let ledger = self.ledger.clone();
            let now = self.clock.now().0;
            blocking(move || serving(&*ledger, now))
                .await
                .map_err(StorageFault)?
        } else {
            stats::Serving::default()
        };
        let rows: Vec<stats::Row> = rows
            .into_iter()
            .map(|s| stats::Row {
                review: s.review,
                returns: s.returns,
                on_site_supervisor: s.on_site_supervisor,
                on_site: s.on_site_at_ms.map(|at_ms| stats::OnSiteRow {
                    at_ms,
                    centre_serving: serving.at(at_ms),
                }),
                teller: s.teller,
                branch: s.branch,
                code: s.code,
                state: s.state,
                deciders: s.deciders,
                final_decider: s.final_decider,
                submitted_at_ms: s.submitted_at_ms,
                first_accepted_at_ms: s.first_accepted_at_ms,
                finished_at_ms: s.finished_at_ms,
            })
            .collect();
        Ok(stats::compute_with(&rows, &supervisor_branches, 5, 3.0))
    }

    /// Follows whether the engine can take writes (false while the ledger cannot write).
    pub fn health(&self) -> tokio::sync::watch::Receiver<bool> {
        self.health.clone()
    }

    /// Makes ledger writes fail as on a full disk (`true`) or succeed again (`false`): for
    /// tests of storage faults.
    #[doc(hidden)]
    pub fn inject_ledger_faults(&self, on: bool) {
        self.ledger.inject_write_faults(on);
    }

    /// As `inject_ledger_faults`, for the image store.
    #[doc(hidden)]
    pub fn inject_image_faults(&self, on: bool) {
        self.images.inject_write_faults(on);
    }

    /// As `inject_ledger_faults`, for the projection.
    #[doc(hidden)]
    pub fn inject_projection_faults(&self, on: bool) {
        self.projection.inject_write_faults(on);
    }

    /// The key auditors verify checkpoints with (C2SP verifier key text).
    pub fn verifier_key(&self) -> String {
        self.checkpointer.verifier().to_text()
    }

    /// Waits until sled reflects every record durable now: the projection is applied in
    /// batches, and an audit read must see every acknowledged change.
    pub(super) async fn projected(&self) -> Result<(), Unavailable> {
        if self.checkpointer.following() {
            // A standby's handle (its checkpoints are the leader's): no engine runs behind it;
            // the leader's projects, and a standby reads what it has committed.
            return Ok(());
        }
        self.call(|reply| ServiceCommand::Project { reply }).await
    }

    /// Makes the projection's own state durable; called at shutdown.
    pub async fn flush(&self) -> Result<(), StorageFault> {
        let p = self.projection.clone();
        Ok(blocking(move || p.flush()).await?)
    }
}
