//! The engine: the single writer (`core`), recovery at start (`recover`), request loading
//! (`load`), the clock, and `EngineHandle`, the async API the gRPC layer calls. Every call that
//! changes something is answered only after its ledger records are durable.

mod audit;
mod clock;
mod core;
pub mod error;
mod load;
mod recover;
pub mod stats;
pub mod status;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use audit::{Inclusion, ProofTarget};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::*;
pub use load::Loaded;

use crate::domain::{
    ImageHash, ImageRef, MediaType, Principal, PrincipalId, Record, Request, RequestId, Submission,
    Timestamp, Verdict,
};
use crate::ledger::record;
use crate::storage::embedded::Ledger;
use crate::storage::embedded::checkpoints::Checkpointer;
use crate::storage::embedded::{ImageStore, Projection};
use core::{Command, Leave, Lookup};

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
    /// Images queued for the image writer at once; more uploads wait their turn.
    pub image_writes_max: usize,
    /// Most bytes the projection (sled) keeps in its page cache.
    pub projection_cache_bytes: u64,
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
    /// Size at which the ledger starts a new segment file.
    pub segment_bytes_max: u64,
    /// Most records or search results in one page.
    pub page_size_max: usize,
    /// Most index entries one search call examines.
    pub search_scan_max: usize,
    /// Most requests one statistics call covers.
    pub stats_rows_max: usize,
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
}

impl std::fmt::Debug for CheckpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("CheckpointConfig")
            .field("origin", &self.origin)
            .field("interval_ms", &self.interval_ms)
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
        reason: &'static str,
    },
    /// A newer Attend by the same supervisor replaced this stream.
    Superseded,
}

/// What Submit answers.
pub struct Submitted {
    pub request: Request,
    /// True when this was a retry of an earlier identical Submit.
    pub replayed: bool,
}

/// The cloneable async face of the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    leave_tx: mpsc::UnboundedSender<Leave>,
    ledger: Arc<Ledger>,
    projection: Arc<Projection>,
    images: Arc<ImageStore>,
    checkpointer: Arc<Checkpointer>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// The policy in force for new submissions, shared with the engine task.
    policy: SharedPolicy,
    /// True while the engine can take writes.
    health: tokio::sync::watch::Receiver<bool>,
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

fn gone() -> Unavailable {
    Unavailable("the engine is not running".into())
}

impl EngineHandle {
    /// Opens the data directory, recovers, and starts the engine task, which ends after
    /// `shutdown` (or when every handle is dropped). The engine and the ledger writer record
    /// into `metrics`.
    pub async fn start(
        data_dir: &Path,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        rng: Box<dyn rand::RngCore + Send>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<(EngineHandle, tokio::task::JoinHandle<()>)> {
        recover::start(data_dir, config, clock, rng, metrics).await
    }

    /// Ends every stream, answers what is in flight once durable, and stops the engine.
    /// Calls after this are refused with UNAVAILABLE.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        // A dropped reply means the ledger failed before the call's records were durable.
        rx.await
            .map_err(|_| Unavailable("the ledger could not make the call durable".into()))
    }

    /// Stores the images durably: the image writer appends them with whatever else is queued
    /// and answers after one fdatasync for the lot.
    pub async fn store_images(
        &self,
        images: Vec<(crate::domain::ImageKind, MediaType, Vec<u8>)>,
    ) -> Result<Vec<ImageRef>, crate::storage::embedded::ImageStoreError> {
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
            refs.push(
                p.await
                    .map_err(|e| crate::storage::embedded::ImageStoreError::Io {
                        action: "join image upload",
                        source: std::io::Error::other(e),
                    })??,
            );
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
        let (found, id, replayed) = self
            .call(|reply| Command::Submit {
                teller,
                submission,
                fingerprint,
                reply,
            })
            .await??;
        let request = match found {
            Lookup::Active(r) => r,
            Lookup::NotActive => self.load_owned(&teller_id, &id).await?.ok_or_else(|| {
                StorageFault(format!("request {id} is indexed but cannot be read"))
            })?,
        };
        Ok(Submitted { request, replayed })
    }

    pub async fn get(&self, teller: &PrincipalId, id: &RequestId) -> Result<Request, GetError> {
        let found = self
            .call(|reply| Command::Get {
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

    /// The request's current state and a receiver of every later change.
    pub async fn watch(
        &self,
        teller: &PrincipalId,
        id: &RequestId,
    ) -> Result<(Request, Option<mpsc::Receiver<Request>>), GetError> {
        let found = self
            .call(|reply| Command::Watch {
                teller: teller.clone(),
                id: id.clone(),
                reply,
            })
            .await??;
        match found {
            Lookup::Active((r, rx)) => Ok((r, Some(rx))),
            Lookup::NotActive => {
                let r = self
                    .load_owned(teller, id)
                    .await?
                    .ok_or(GetError::NotFound)?;
                Ok((r, None))
            }
        }
    }

    pub async fn cancel(
        &self,
        teller: &PrincipalId,
        id: &RequestId,
        reason: String,
    ) -> Result<Request, CancelError> {
        let found = self
            .call(|reply| Command::Cancel {
                teller: teller.clone(),
                id: id.clone(),
                reason,
                reply,
            })
            .await??;
        match found {
            Lookup::Active(r) => Ok(r),
            Lookup::NotActive => match self.load_owned(teller, id).await? {
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
    ) -> Result<Request, ResubmitError> {
        let found = self
            .call(|reply| Command::Resubmit {
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
            .call(|reply| Command::Attend { supervisor, reply })
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
    ) -> Result<Request, AcceptError> {
        let r = self
            .call(|reply| Command::Accept {
                supervisor: supervisor.clone(),
                id: id.clone(),
                epoch,
                reply,
            })
            .await?;
        match r {
            Err(AcceptError::NotFound) => Err(self
                .settled(supervisor, id)
                .map_or(AcceptError::NotFound, AcceptError::Fence)),
            r => r,
        }
    }

    /// For a request the engine no longer holds: it was decided, so any action on an offer
    /// of it is refused. Its state is told only to a supervisor who decided it; to anyone else
    /// it is simply not theirs. `None` if there is no such request.
    fn settled(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
    ) -> Option<crate::domain::FenceError> {
        match self.projection.summary(id) {
            Ok(Some(s)) if s.deciders.iter().any(|d| d == supervisor.as_str()) => {
                s.state().map(crate::domain::FenceError::WrongState)
            }
            Ok(Some(_)) => Some(crate::domain::FenceError::NotAssigned),
            _ => None,
        }
    }

    pub async fn decline(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
        epoch: u64,
        reason: String,
    ) -> Result<(), DeclineError> {
        let r = self
            .call(|reply| Command::Decline {
                supervisor: supervisor.clone(),
                id: id.clone(),
                epoch,
                reason,
                reply,
            })
            .await?;
        match r {
            Err(DeclineError::NotFound) => Err(self
                .settled(supervisor, id)
                .map_or(DeclineError::NotFound, DeclineError::Fence)),
            r => r,
        }
    }

    pub async fn decide(
        &self,
        supervisor: &Principal,
        id: &RequestId,
        epoch: u64,
        verdict: Verdict,
    ) -> Result<Request, DecideError> {
        let r = self
            .call(|reply| Command::Decide {
                supervisor: supervisor.clone(),
                id: id.clone(),
                epoch,
                verdict,
                reply,
            })
            .await?;
        match r {
            Err(DecideError::NotFound) => Err(self
                .settled(&supervisor.id, id)
                .map_or(DecideError::NotFound, DecideError::Fence)),
            r => r,
        }
    }

    /// An image of a request the supervisor currently holds.
    pub async fn offer_image(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
        hash: ImageHash,
    ) -> Result<(MediaType, Vec<u8>), ImageError> {
        let media = self
            .call(|reply| Command::OfferImage {
                supervisor: supervisor.clone(),
                id: id.clone(),
                hash,
                reply,
            })
            .await??;
        let bytes = self.read_image(hash).await?;
        Ok((media, bytes))
    }

    /// Any stored image, for auditors.
    pub async fn audit_image(&self, hash: ImageHash) -> Result<Vec<u8>, AuditError> {
        Ok(self.read_image(hash).await?)
    }

    /// A request with all its records, for auditors. Reads only what is durable.
    pub async fn audit_request(&self, id: &RequestId) -> Result<Loaded, AuditError> {
        self.projected().await?;
        let (ledger, projection, id) = (self.ledger.clone(), self.projection.clone(), id.clone());
        tokio::task::spawn_blocking(move || load::load(&ledger, &projection, &id))
            .await
            .map_err(|e| StorageFault(e.to_string()))??
            .ok_or(AuditError::NotFound)
    }

    async fn read_image(
        &self,
        hash: ImageHash,
    ) -> Result<Vec<u8>, crate::storage::embedded::ImageStoreError> {
        let store = self.images.clone();
        tokio::task::spawn_blocking(move || store.get(&hash))
            .await
            .map_err(|e| crate::storage::embedded::ImageStoreError::Io {
                action: "join image reader",
                source: std::io::Error::other(e),
            })?
    }

    /// Reads a request that is no longer in memory, if it exists and belongs to `teller`.
    async fn load_owned(
        &self,
        teller: &PrincipalId,
        id: &RequestId,
    ) -> Result<Option<Request>, StorageFault> {
        let (ledger, projection, id) = (self.ledger.clone(), self.projection.clone(), id.clone());
        let loaded = tokio::task::spawn_blocking(move || load::load(&ledger, &projection, &id))
            .await
            .map_err(|e| StorageFault(e.to_string()))??;
        Ok(loaded.map(|l| l.request).filter(|r| &r.teller == teller))
    }

    /// Every record of the ledger in order, decoded; for tests and tools.
    pub fn read_record(&self, index: u64) -> Result<Record, StorageFault> {
        let bytes = self
            .ledger
            .read(index)
            .map_err(|e| StorageFault(e.to_string()))?;
        record::decode(&bytes).map_err(|e| StorageFault(e.to_string()))
    }

    /// How many ledger records are durable.
    pub fn ledger_len(&self) -> u64 {
        self.ledger.len()
    }

    /// Stops (or resumes) offers to a supervisor without closing their stream.
    pub async fn pause(&self, supervisor: &PrincipalId, paused: bool) -> Result<(), PauseError> {
        self.call(|reply| Command::Pause {
            supervisor: supervisor.clone(),
            paused,
            reply,
        })
        .await?
    }

    /// The queue and the supervisors, exactly, as of now.
    pub async fn queue_status(&self) -> Result<status::QueueStatus, Unavailable> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// The policy new submissions are evaluated against.
    pub fn policy(&self) -> Arc<crate::policy::Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the policy for new submissions (those already submitted keep the
    /// requirements recorded with them); returns the previous one's hash.
    pub fn set_policy(&self, policy: crate::policy::Policy) -> String {
        tracing::info!(
            sha256 = policy.sha256(),
            "policy reloaded; it applies to new submissions"
        );
        let mut p = self.policy.write().unwrap_or_else(|e| e.into_inner());
        let previous = p.sha256().to_owned();
        *p = Arc::new(policy);
        previous
    }

    /// Statistics over the requests submitted in [from, until).
    pub async fn statistics(
        &self,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
    ) -> Result<stats::Stats, AuditError> {
        self.projected().await?;
        let p = self.projection.clone();
        let max = self.config.stats_rows_max;
        let rows = tokio::task::spawn_blocking(move || p.summaries_between(from_ms, until_ms, max))
            .await
            .map_err(|e| StorageFault(e.to_string()))?
            .map_err(|e| StorageFault(e.to_string()))?
            .map_err(|n| {
                AuditError::TooMany(format!(
                    "more than {max} requests ({n} so far) in the range; narrow it"
                ))
            })?;
        let rows: Vec<stats::Row> = rows
            .into_iter()
            .map(|s| stats::Row {
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
        Ok(stats::compute(&rows, 5, 3.0))
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

    /// The key auditors verify checkpoints with (C2SP verifier key text).
    pub fn verifier_key(&self) -> String {
        self.checkpointer.verifier().to_text()
    }

    /// Waits until sled reflects every record durable now: the projection is applied in
    /// batches, and an audit read must see every acknowledged change.
    async fn projected(&self) -> Result<(), Unavailable> {
        self.call(|reply| Command::Project { reply }).await
    }

    /// Flushes sled; called at shutdown.
    pub fn flush(&self) -> Result<(), StorageFault> {
        self.projection
            .flush()
            .map_err(|e| StorageFault(e.to_string()))
    }
}
