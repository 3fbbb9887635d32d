//! The single writer. One task, on a thread of its own, owns every undecided request and turns
//! commands into events (`commands`): each event is appended to the ledger and applied here,
//! and whatever it means for anyone waits in the outbox until the ledger says it is durable.
//! Because it is the only writer, no two commands race on a request. The parts it wires own
//! their own state: the request table (`requests`), supervisor sessions (`sessions`), timers
//! (`timers`), the outbox (`outbox`) and the dispatch choice (`dispatch`).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::domain::{
    Actor, EngineEvent, EngineRecord, Event, Record, Request, RequestId, State, WithdrawReason,
    fold,
};
use crate::ledger::record;
use crate::metrics::Metrics;
use crate::storage::{
    Durable, DurableState, LedgerAppend, LedgerRead, Projection, RowUpdate, StorageError, Summary,
};

use super::availability::Availability;
use super::availability::Store;
use super::clock::Clock;
use super::command::{Command, Leave, refuse};
use super::error::*;
use super::measure::{Before, measure};
use super::outbox::{Outbox, Outgoing};
use super::requests::{QueueKey, Requests};
use super::sessions::Sessions;
use super::timers::Timers;
use super::watchers::Watchers;
use super::{EngineConfig, SupervisorEvent, Withdrawal};

/// What the engine is handed by the composition root.
pub(crate) struct Parts {
    pub config: EngineConfig,
    pub clock: Arc<dyn Clock>,
    pub rng: Box<dyn rand::RngCore + Send>,
    pub appender: Box<dyn LedgerAppend>,
    pub ledger: Arc<dyn LedgerRead>,
    pub projection: Arc<dyn Projection>,
    /// Probed after an image write failed.
    pub images: Arc<dyn crate::storage::ImageStore>,
    pub policy: super::SharedPolicy,
    pub metrics: Arc<Metrics>,
}

pub(crate) struct Core {
    pub config: EngineConfig,
    pub clock: Arc<dyn Clock>,
    pub rng: Box<dyn rand::RngCore + Send>,
    pub appender: Box<dyn LedgerAppend>,
    /// The durable records, for rebuilding state after a write failure.
    pub ledger: Arc<dyn LedgerRead>,
    pub projection: Arc<dyn Projection>,
    /// The image store, probed after an image write failed.
    pub images: Arc<dyn crate::storage::ImageStore>,
    /// Every request not yet final, plus final ones until their last record is projected.
    pub requests: Requests,
    /// Idempotency keys of requests that recently left memory, for Submits looked up early.
    pub evicted: super::evicted::Evicted,
    pub timers: Timers,
    pub sessions: Sessions,
    /// The policy new submissions are evaluated against (shared with the handle for reloads).
    pub policy: super::SharedPolicy,
    /// Per-supervisor counts for the current day.
    pub day: super::status::DayCounts,
    /// Tellers' Watch streams.
    pub watchers: Watchers,
    /// Sends waiting for durability.
    pub outbox: Outbox,
    /// Projection updates, applied in batches once durable.
    updates: Vec<RowUpdate>,
    /// How many records are durable.
    pub durable: u64,
    /// Stopped, degraded or serving, and the health signal.
    pub availability: Availability,
    /// Capacity appeared (a supervisor attended, resumed or finished a task): every queued
    /// request must be considered again.
    pub dispatch_all: bool,
    /// Requests that (re-)entered the queue since the last dispatch. After a dispatch no free
    /// supervisor is eligible for any queued request, so a new request needs checking only
    /// against the free supervisors, not the whole queue against them.
    pub dispatch_new: BTreeSet<QueueKey>,
    /// Set by Shutdown: answered, and the loop left, once everything appended is released.
    pub stopping: Option<super::command::Reply<()>>,
    /// The series the engine records (see `measure` and `count_sessions`).
    pub metrics: Arc<Metrics>,
    /// What to take back if the engine record at each index is lost before it is durable (a
    /// reload whose record a ledger failure took back), oldest first.
    undos: Vec<(u64, Undo)>,
    /// Since when, and which store, writes have been refused; recorded (`writes_resumed`)
    /// once they work again.
    refusing_since: Option<(crate::domain::Timestamp, Store)>,
}

/// What a reload changed in the engine, to put back if its record is not made durable.
pub(crate) enum Undo {
    Policy(Arc<crate::policy::Policy>),
    Directory {
        supervisors: Arc<Vec<crate::domain::Principal>>,
        sha256: String,
    },
    /// A duty manager's pause or resume: the supervisor's pause as it was before.
    Pause {
        supervisor: crate::domain::PrincipalId,
        paused: bool,
    },
}

impl Core {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            config,
            clock,
            rng,
            appender,
            ledger,
            projection,
            images,
            policy,
            metrics,
        } = parts;
        let durable = appender.next_index();
        Core {
            config,
            clock,
            rng,
            appender,
            ledger,
            projection,
            images,
            requests: Requests::default(),
            evicted: super::evicted::Evicted::new(),
            timers: Timers::default(),
            sessions: Sessions::default(),
            policy,
            day: super::status::DayCounts::default(),
            watchers: Watchers::default(),
            outbox: Outbox::default(),
            updates: Vec::new(),
            durable,
            availability: Availability::new(),
            dispatch_all: true,
            dispatch_new: BTreeSet::new(),
            stopping: None,
            metrics,
            undos: Vec::new(),
            refusing_since: None,
        }
    }

    /// Runs until every command sender is gone or a shutdown is answered.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut leaves: mpsc::UnboundedReceiver<Leave>,
        mut durable: Durable,
    ) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(self.config.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = durable.changed() => {
                    if changed.is_err() {
                        self.fail(Unavailable::WriterStopped);
                    } else {
                        let state = durable.borrow_and_update().clone();
                        match state {
                            DurableState::Count(n) => self.release(n),
                            DurableState::Failed { count, error } => {
                                // What was durable before the failure is answered as usual.
                                self.release(count);
                                self.degrade(count, error);
                            }
                        }
                    }
                }
                Some(leave) = leaves.recv() => {
                    self.leave(leave, WithdrawReason::Disconnected);
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd);
                    // Take everything already waiting, so one fsync answers all of it.
                    for _ in 0..1024 {
                        match commands.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    self.project();
                    self.probe_if_degraded();
                }
            }
            // Checked on every pass, not only on ticks: a busy engine must not starve timers.
            // Nothing is recorded while the ledger cannot write.
            if !self.availability.degraded() {
                self.run_timers();
                self.dispatch();
            }
            if !self.availability.failed()
                && let Err(e) = self.appender.flush()
            {
                self.fail(Unavailable::Stopped {
                    action: "hand records to the ledger",
                    source: Arc::new(e),
                });
            }
            let drained = self.durable == self.appender.next_index() || self.availability.failed();
            if drained && let Some(reply) = self.stopping.take() {
                let _ = reply.send(());
                break;
            }
        }
        self.project();
        // Calls that reached the channel after the last pass are refused with the reason:
        // dropped, their callers would read a ledger failure. Once closed, the channel takes
        // no more (callers then hear that the engine is not running).
        commands.close();
        while let Ok(cmd) = commands.try_recv() {
            refuse(cmd, Unavailable::ShuttingDown);
        }
        tracing::info!("engine stopped");
    }

    pub fn now(&self) -> crate::domain::Timestamp {
        self.clock.now()
    }

    /// Storage failed beyond what the engine recovers from: every pending send is dropped
    /// (its caller hears UNAVAILABLE; none of it was acknowledged) and every stream ends.
    pub fn fail(&mut self, why: Unavailable) {
        if self.availability.fail(why.clone()) {
            tracing::error!(error = %why, "engine stops acknowledging");
        }
        self.outbox.clear();
        self.watchers.clear();
        self.sessions.clear();
        self.count_sessions();
    }

    /// The reason to refuse a command now, if any: stopped, stopping, or (for a command that
    /// writes) degraded.
    pub fn refusal(&self, writes: bool) -> Option<Unavailable> {
        self.availability.refusal(self.stopping.is_some(), writes)
    }

    /// A ledger write failed (disk full, I/O error): nothing past `durable` was acknowledged,
    /// so every effect of it is dropped and the in-memory state is rebuilt from what is
    /// durable. Writes are refused with UNAVAILABLE, and health says NOT_SERVING, until a probe
    /// shows the disk can write again.
    fn degrade(&mut self, durable: u64, error: Arc<StorageError>) {
        if self.availability.failed() {
            return;
        }
        tracing::error!(%error, durable, "ledger cannot write: refusing writes, NOT_SERVING");
        self.availability.degrade(Store::Ledger, error);
        self.refusing_since = Some((self.now(), Store::Ledger));
        self.durable = durable;
        self.appender.rewind(durable);
        self.undo_lost(durable);
        // Pending sends are for records that are not on disk: dropping them answers UNAVAILABLE.
        self.outbox.clear();
        self.updates.retain(|u| u.index < durable);
        // The rebuild below reads the projection, which must first hold everything durable.
        self.project();
        // Streams end with UNAVAILABLE; clients reconnect when the server serves again.
        self.watchers.clear();
        self.sessions.clear();
        self.count_sessions();
        if let Err(e) = self.reload_from_durable() {
            self.fail(Unavailable::Stopped {
                action: "rebuild state after a ledger failure",
                source: Arc::new(e),
            });
        }
    }

    /// A store other than the ledger cannot write (the image log, the projection): writes are
    /// refused and health says NOT_SERVING until a probe of that store succeeds. Nothing
    /// durable is lost, so streams and memory stay as they are.
    pub fn store_failed(&mut self, store: Store, error: Arc<StorageError>) {
        if self.availability.failed() || self.availability.degraded() {
            return;
        }
        tracing::error!(%error, store = store.name(), "cannot write: refusing writes, NOT_SERVING");
        self.availability.degrade(store, error);
        self.refusing_since = Some((self.now(), store));
    }

    /// Writes work again: the ledger records since when they did not.
    fn record_resumed(&mut self) {
        if let Some((since, store)) = self.refusing_since.take() {
            let event = EngineEvent::WritesResumed {
                since,
                store: store.stored_name().into(),
            };
            self.record_engine(Actor::System, event);
        }
    }

    /// While degraded, asks the writer (at most once a second) whether it can write again;
    /// when it can, withdraws the offers and reviews whose consoles were cut off, and serves.
    fn probe_if_degraded(&mut self) {
        if !self.availability.probe_due() {
            return;
        }
        match self.availability.degraded_store() {
            Some(Store::Ledger) => {}
            Some(store @ (Store::Images | Store::Projection)) => {
                let probed = match store {
                    Store::Images => self.images.probe(),
                    _ => self.projection.reopen(),
                };
                if let Err(e) = probed {
                    tracing::warn!(error = %e, store = store.name(), "still cannot write");
                    return;
                }
                tracing::info!(store = store.name(), "writes again: serving");
                let since = self.refusing_since.take();
                self.availability.recovered();
                // What the projection could not take is applied now (a failure degrades again,
                // and the outage goes on from when it began).
                self.project();
                if self.availability.degraded() {
                    if let Some(since) = since {
                        self.refusing_since = Some(since);
                    }
                } else {
                    self.refusing_since = since;
                    self.record_resumed();
                }
                return;
            }
            None => return,
        }
        if let Err(e) = self.appender.probe(self.durable) {
            tracing::warn!(error = %e, "ledger still cannot write");
            return;
        }
        tracing::info!("ledger writes again: serving");
        self.availability.recovered();
        self.record_resumed();
        self.withdraw_offers(WithdrawReason::Disconnected);
        self.dispatch_all = true;
    }

    /// Records the withdrawal of every open offer, putting it back in the queue: used when the
    /// consoles that held them are gone (a restart, a takeover, a ledger that could not write).
    /// Reviews stay with their supervisor, who has looked at the images and may be mid-way
    /// through a decision: the next Attend hands them back (`attend`), and the review timeout,
    /// which runs from the Accepted record's time, bounds how long they wait for them.
    pub fn withdraw_offers(&mut self, reason: WithdrawReason) {
        for (id, supervisor, epoch) in self.requests.offered() {
            self.record(
                &id,
                Actor::System,
                Event::OfferWithdrawn {
                    supervisor,
                    epoch,
                    reason,
                },
            );
        }
    }

    /// Drops every in-memory request and loads the undecided ones again from the projection
    /// and the durable ledger, as at start.
    pub fn reload_from_durable(&mut self) -> Result<(), StorageError> {
        self.requests.clear();
        self.evicted.forget();
        self.timers.clear();
        self.dispatch_new.clear();
        self.metrics.engine.clear_requests();
        for id in self.projection.active()? {
            let (_, indexes) = self.projection.request(&id)?.ok_or_else(|| {
                StorageError::Inconsistent(format!("active request {id} has no row"))
            })?;
            let r = super::load::fold_indexes(self.ledger.as_ref(), &id, &indexes)?.request;
            let (_, fp) = self
                .projection
                .idempotency(&r.teller, &r.submission.serial)?
                .ok_or_else(|| {
                    StorageError::Inconsistent(format!("request {id} has no idempotency row"))
                })?;
            self.adopt(r, fp);
        }
        Ok(())
    }

    /// Takes in an undecided request loaded at start or at a rebuild.
    pub fn adopt(&mut self, r: Request, fingerprint: [u8; 32]) {
        self.metrics.engine.undecided(1);
        if r.state == State::Queued {
            self.metrics.engine.queued(r.level, 1);
        }
        // Timers are derived from ledger times, so they survive a restart.
        self.timers.request(r.deadline(), &r.id);
        if let Some(at) = r.escalate_at() {
            self.timers.request(at, &r.id);
        }
        if let Some(at) = r.review_by(self.config.review_timeout_ms) {
            self.timers.review(at, &r.id, r.epoch);
        }
        self.requests.adopt(r, fingerprint);
    }

    /// Appends one event and applies it to the in-memory request; returns its index.
    pub fn record(&mut self, id: &RequestId, actor: Actor, event: Event) -> u64 {
        let rec = Record {
            request: id.clone(),
            at: self.now(),
            actor,
            event,
        };
        self.append(rec, None)
    }

    /// Appends a record about the engine itself (it belongs to no request, so nothing is
    /// applied or projected); returns its index.
    pub fn record_engine(&mut self, actor: Actor, event: EngineEvent) -> u64 {
        let rec = EngineRecord {
            at: self.now(),
            actor,
            event,
        };
        self.appender.append(record::encode_engine(&rec))
    }

    /// Keeps `undo` until record `index` is durable; if a ledger failure takes the record
    /// back, what it put in force is taken back too, so nothing is in force unrecorded.
    pub fn undo_unless_durable(&mut self, index: u64, undo: Undo) {
        self.undos.push((index, undo));
    }

    /// Takes back, newest first, what records from `durable` on had put in force.
    fn undo_lost(&mut self, durable: u64) {
        while self.undos.last().is_some_and(|(i, _)| *i >= durable) {
            let Some((index, undo)) = self.undos.pop() else {
                break;
            };
            tracing::warn!(
                index,
                "a reload's record was lost with the ledger's failure: taken back"
            );
            match undo {
                Undo::Policy(previous) => {
                    *self.policy.write().unwrap_or_else(|e| e.into_inner()) = previous;
                }
                Undo::Directory {
                    supervisors,
                    sha256,
                } => {
                    self.config.supervisors = supervisors;
                    self.config.directory_sha256 = sha256;
                }
                Undo::Pause { supervisor, paused } => {
                    self.sessions.pause(&supervisor, paused);
                }
            }
        }
    }

    /// Appends a record and applies it. `fingerprint` is the submission's, when the caller
    /// already computed it.
    pub fn append(&mut self, rec: Record, fingerprint: Option<[u8; 32]>) -> u64 {
        let index = self.appender.append(record::encode(&rec));
        self.apply(index, rec, fingerprint);
        index
    }

    /// As `record`, returning the record's Merkle leaf hash (what a review draw is made from).
    pub fn record_leaf(&mut self, id: &RequestId, actor: Actor, event: Event) -> [u8; 32] {
        let rec = Record {
            request: id.clone(),
            at: self.now(),
            actor,
            event,
        };
        let bytes = record::encode(&rec);
        let leaf = crate::ledger::merkle::leaf_hash(&bytes);
        let index = self.appender.append(bytes);
        self.apply(index, rec, None);
        leaf
    }

    /// Applies a record to the in-memory state: the request (through the one fold), the
    /// queue, the timers, the counts, Watch notifications and the projection's next rows.
    fn apply(&mut self, index: u64, rec: Record, fingerprint: Option<[u8; 32]>) {
        let id = rec.request.clone();
        let before = self.requests.get(&id).map(|r| Before {
            state: r.state,
            level: r.level,
            updated_at: r.updated_at,
            accepted: r.first_accepted_at.is_some(),
        });
        // The caller's fingerprint when it computed one: hashing the submission again would
        // cost the single writer on every Submit.
        let created = match fingerprint {
            Some(fp) => rec
                .event
                .opens()
                .map(|(teller, s)| (teller.clone(), s.serial.clone(), fp)),
            None => record::opens(&rec.event),
        };
        // Commands check that an event applies before recording it, so a refusal here is a
        // bug in a command, and the ledger now holds a record the state machine refuses: stop
        // rather than answer from a state that disagrees with the ledger.
        match fold::step(self.requests.get_mut(&id), index, &rec) {
            Ok(Some(opened)) => {
                if let Some((_, _, fp)) = &created {
                    self.requests.adopt(opened, *fp);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "a command recorded an event that does not apply");
                self.fail(Unavailable::Stopped {
                    action: "apply a recorded event",
                    source: Arc::new(StorageError::Fold {
                        request: id,
                        source: e,
                    }),
                });
                return;
            }
        }
        self.follow(index, &rec, before, created);
    }

    /// What an applied record moves besides the request: the queue and dispatch, the timers,
    /// the day's counts and metrics, Watch notifications and the projection's next row.
    fn follow(
        &mut self,
        index: u64,
        rec: &Record,
        before: Option<Before>,
        created: Option<(
            crate::domain::PrincipalId,
            crate::domain::TellerSerial,
            [u8; 32],
        )>,
    ) {
        let (id, at) = (rec.request.clone(), rec.at);
        let was = before.map(|b| b.state);
        let Some(r) = self.requests.get(&id) else {
            return;
        };
        let state = r.state;
        if state == State::Queued && was != Some(State::Queued) {
            if !self.servable(r) {
                tracing::warn!(request = %id, level = r.level, code = %r.submission.transaction.code, "no supervisor in the directory may take this request; it waits until the directory or the policy changes");
                self.metrics.engine.unservable();
            }
            self.dispatch_new.insert(super::requests::queue_key(r));
            // Back in the queue (a first approval, a resubmission, a withdrawal): a wait
            // escalation that has not fired yet is armed again.
            if let Some(at) = r.escalate_at() {
                self.timers.request(at, &id);
            }
        }
        if let (State::Offered, Some(deadline)) = (state, r.accept_by) {
            self.timers.offer(deadline, &id, r.epoch);
        }
        if matches!(rec.event, Event::Accepted { .. })
            && let Some(at) = r.review_by(self.config.review_timeout_ms)
        {
            self.timers.review(at, &id, r.epoch);
        }
        if matches!(rec.event, Event::Submitted { .. }) {
            self.timers.request(r.deadline(), &id);
            if let Some(at) = r.escalate_at() {
                self.timers.request(at, &id);
            }
        }
        self.day.count(rec, at);
        measure(&self.metrics.engine, &rec.event, before, r, at);
        if self.watchers.watched(&id) {
            let view = Request::clone(r);
            self.outbox.push(index + 1, Outgoing::Notify { view });
        }
        let decided_by = match &rec.event {
            Event::Decided { supervisor, .. } => Some(supervisor.clone()),
            _ => None,
        };
        let summary = Summary::of(r);
        self.requests.moved(&id, was, index);
        self.updates.push(RowUpdate {
            index,
            request: id,
            state,
            created,
            decided_by,
            summary,
        });
    }

    /// Whether any supervisor in the directory may take `r` (online or not).
    pub fn servable(&self, r: &Request) -> bool {
        self.config
            .supervisors
            .iter()
            .any(|s| super::dispatch::eligible(r, s))
    }

    /// Queues a reply to go out once everything appended so far is durable.
    pub fn reply<T: Send + 'static>(&mut self, tx: super::command::Reply<T>, value: T) {
        let need = self.appender.next_index();
        if need <= self.durable {
            let _ = tx.send(value);
        } else {
            self.outbox.push(
                need,
                Outgoing::Reply(Box::new(move || {
                    let _ = tx.send(value);
                })),
            );
        }
    }

    /// Sends an event to a supervisor's current session once what it depends on is durable.
    pub fn send_supervisor(
        &mut self,
        supervisor: &crate::domain::PrincipalId,
        event: SupervisorEvent,
    ) {
        let Some(s) = self.sessions.get(supervisor) else {
            return;
        };
        let (session, need) = (s.id, self.appender.next_index());
        if need <= self.durable {
            // Nothing it could depend on is still in flight (a review handed back at Attend).
            self.deliver(supervisor, session, event);
            return;
        }
        let out = Outgoing::ToSupervisor {
            supervisor: supervisor.clone(),
            session,
            event,
        };
        self.outbox.push(need, out);
    }

    /// The one way a supervisor loses a request they held: `event` (a withdrawal, a timeout,
    /// a cancellation, an expiry) is recorded when given, the task slot is freed, and the
    /// supervisor is told why.
    pub fn withdraw(
        &mut self,
        id: &RequestId,
        holder: &crate::domain::PrincipalId,
        epoch: u64,
        event: Option<Event>,
        why: Withdrawal,
    ) {
        if let Some(event) = event {
            self.record(id, Actor::System, event);
        }
        self.release_task(holder, id);
        self.send_supervisor(
            holder,
            SupervisorEvent::Withdrawn {
                request: id.clone(),
                epoch,
                reason: why,
            },
        );
    }

    /// A supervisor's task slot opened: dispatch looks at the whole queue again.
    pub fn release_task(&mut self, supervisor: &crate::domain::PrincipalId, id: &RequestId) {
        if self.sessions.release(supervisor, id) {
            self.dispatch_all = true;
        }
    }

    /// The ledger holds `count` records: project them, then send what waited for them.
    fn release(&mut self, count: u64) {
        if self.availability.failed() || count <= self.durable {
            return;
        }
        self.durable = count;
        self.undos.retain(|(index, _)| *index >= count);
        // Durable rows go to the projection once the backend's batch is full, and on every
        // tick: one call per ledger batch can cost more than the rows themselves.
        if self.updates.len() >= self.projection.batch_size() {
            self.project();
        }
        for out in self.outbox.release(count) {
            match out {
                Outgoing::Reply(send) => send(),
                Outgoing::Notify { view } => self.watchers.notify(view),
                Outgoing::ToSupervisor {
                    supervisor,
                    session,
                    event,
                } => self.deliver(&supervisor, session, event),
            }
        }
    }

    /// Applies the durable row updates to the projection in one call, then drops from memory
    /// the final requests it now reflects: from then on reads of them go to the projection, so
    /// a request is never in neither place.
    pub fn project(&mut self) {
        if self.availability.failed() {
            return;
        }
        let count = self.durable;
        let split = self.updates.partition_point(|u| u.index < count);
        if split > 0 {
            if self.availability.degraded_store() == Some(Store::Projection) {
                // Kept for the reopen; nothing leaves memory until the projection holds it.
                return;
            }
            let done: Vec<RowUpdate> = self.updates.drain(..split).collect();
            if let Err(e) = self.projection.apply(&done, count) {
                if !self.projection.reopens_after_failure() {
                    // A database: the node steps down and leads again from the ledger.
                    self.fail(Unavailable::Stopped {
                        action: "apply projection",
                        source: Arc::new(e),
                    });
                    return;
                }
                // The projection is rebuilt from the ledger, so nothing is lost: the updates go
                // back in front, writes are refused (NOT_SERVING) until a reopen lets them in.
                let mut kept = done;
                kept.append(&mut self.updates);
                self.updates = kept;
                self.store_failed(Store::Projection, Arc::new(e));
                return;
            }
        }
        let gone = self.requests.evict(count);
        self.evicted.record(gone);
    }

    fn deliver(
        &mut self,
        supervisor: &crate::domain::PrincipalId,
        session: u64,
        event: SupervisorEvent,
    ) {
        let Some(s) = self.sessions.get(supervisor) else {
            return;
        };
        if s.id != session {
            return;
        }
        if s.tx.try_send(event).is_err() {
            // A console that does not read its stream is treated as gone.
            tracing::warn!(supervisor = %supervisor, "supervisor stream full or closed; signing out");
            self.leave(
                Leave {
                    supervisor: supervisor.clone(),
                    session,
                },
                WithdrawReason::Disconnected,
            );
        }
    }

    /// Sets the supervisor gauges from the sessions; called wherever sessions are added,
    /// removed, cleared or paused.
    pub fn count_sessions(&self) {
        let (attending, paused) = self.sessions.counts();
        self.metrics.engine.supervisors(attending, paused);
    }
}
