//! The single writer. One task owns every undecided request, the queue, the supervisors'
//! sessions and the timers; it turns commands into events, appends them to the ledger, applies
//! them, and releases replies, offers and notifications only once the ledger says their records
//! are durable. Because it is the only writer, no two commands race on a request.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use rand::Rng;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{
    Actor, Event, FenceError, ImageHash, ImageRef, MediaType, Principal, PrincipalId, Record,
    Request, RequestId, State, Submission, TellerSerial, Timestamp, Verdict, WithdrawReason,
};
use crate::ledger::record;
use crate::metrics::{EngineMetrics, Escalation, Metrics, Outcome, SubmitResult};
use crate::storage::embedded::{Appender, Durable, DurableState};
use crate::storage::embedded::{Projection, RowUpdate, Summary};

use super::clock::Clock;
use super::error::*;
use super::{EngineConfig, SupervisorEvent};

pub(crate) type Reply<T> = oneshot::Sender<T>;
/// The request (or where to read it), its id, and whether the Submit was a retry.
pub(crate) type SubmitAnswer = (Lookup<Request>, RequestId, bool);
/// The current state and a receiver of later changes.
pub(crate) type WatchStart = (Request, mpsc::Receiver<Request>);

/// What the engine answers when a request is not held in memory: the caller reads it from the
/// store (final requests never change, so there is no race).
pub(crate) enum Lookup<T> {
    Active(T),
    NotActive,
}

// Commands are moved once, through a channel; boxing the large ones would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Submit {
        teller: Principal,
        submission: Submission,
        fingerprint: [u8; 32],
        reply: Reply<Result<SubmitAnswer, SubmitError>>,
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
        reply: Reply<Result<Lookup<Request>, CancelError>>,
    },
    Resubmit {
        teller: PrincipalId,
        id: RequestId,
        added: Vec<ImageRef>,
        removed: Vec<ImageHash>,
        note: String,
        reply: Reply<Result<Lookup<Request>, ResubmitError>>,
    },
    Attend {
        supervisor: Principal,
        reply: Reply<Result<(u64, mpsc::Receiver<SupervisorEvent>), AttendError>>,
    },
    Accept {
        supervisor: PrincipalId,
        id: RequestId,
        epoch: u64,
        reply: Reply<Result<Request, AcceptError>>,
    },
    Decline {
        supervisor: PrincipalId,
        id: RequestId,
        epoch: u64,
        reason: String,
        reply: Reply<Result<(), DeclineError>>,
    },
    Decide {
        supervisor: Principal,
        id: RequestId,
        epoch: u64,
        verdict: Verdict,
        reply: Reply<Result<Request, DecideError>>,
    },
    OfferImage {
        supervisor: PrincipalId,
        id: RequestId,
        hash: ImageHash,
        reply: Reply<Result<MediaType, ImageError>>,
    },
    /// Stop taking calls, end every stream, and stop once all appended records are durable
    /// and answered.
    Shutdown { reply: Reply<()> },
    /// Pause (or resume) offers to a supervisor without closing their stream.
    Pause {
        supervisor: PrincipalId,
        paused: bool,
        reply: Reply<Result<(), PauseError>>,
    },
    /// A snapshot of the queue and the supervisors.
    Status {
        reply: Reply<super::status::QueueStatus>,
    },
    /// Bring the projection up to every durable record, for a read that must see them all.
    Project { reply: Reply<()> },
}

/// Durable row updates applied to sled in one transaction once this many are waiting (and on
/// every tick). Every sled transaction seals and writes sled's log buffer from a thread of its
/// own, so one per ledger batch cost more CPU under load than the rest of the projection.
const PROJECT_BATCH: usize = 2048;

/// A supervisor's Attend stream has closed.
pub(crate) struct Leave {
    pub supervisor: PrincipalId,
    pub session: u64,
}

/// Something to send once the ledger holds every record up to a count.
enum Outgoing {
    Reply(Box<dyn FnOnce() + Send>),
    ToSupervisor {
        supervisor: PrincipalId,
        session: u64,
        event: SupervisorEvent,
    },
    Notify {
        request: RequestId,
        view: Request,
    },
}

struct Session {
    id: u64,
    principal: Principal,
    tx: mpsc::Sender<SupervisorEvent>,
    /// Requests offered to or in review by this supervisor.
    tasks: BTreeSet<RequestId>,
    /// Paused: keeps the stream and what it holds, gets no new offers.
    paused: bool,
}

pub(crate) struct Core {
    pub config: EngineConfig,
    pub clock: Arc<dyn Clock>,
    pub rng: Box<dyn rand::RngCore + Send>,
    pub appender: Appender,
    pub projection: Arc<Projection>,
    /// Every request not yet final, plus final ones until their last record is projected.
    /// Boxed: the table then holds 32 bytes a slot rather than a whole request, and growing
    /// it moves pointers, not requests.
    pub requests: HashMap<RequestId, Box<Request>>,
    /// QUEUED requests by the ledger index of their submission: older first.
    pub queue: BTreeSet<QueueKey>,
    /// (teller, serial) -> (request, fingerprint) for requests held in memory.
    pub idem: HashMap<(PrincipalId, TellerSerial), (RequestId, [u8; 32])>,
    /// Undecided requests per teller.
    pub pending_by_teller: HashMap<PrincipalId, u32>,
    /// Offer deadlines: (accept_by, request, epoch).
    pub offer_deadlines: BTreeSet<(Timestamp, RequestId, u64)>,
    /// Review deadlines: (accepted + review timeout, request, epoch). A supervisor who accepts
    /// and never decides loses the request then.
    pub review_deadlines: BTreeSet<(Timestamp, RequestId, u64)>,
    /// Decision deadlines and wait escalations: (when, request). Entries are checked against
    /// the request when due, so stale ones cost nothing.
    pub timers: BTreeSet<(Timestamp, RequestId)>,
    /// The policy new submissions are evaluated against (shared with the handle for reloads).
    pub policy: super::SharedPolicy,
    /// Per-supervisor counts for the current day.
    pub day: super::status::DayCounts,
    sessions: HashMap<PrincipalId, Session>,
    session_seq: u64,
    watchers: HashMap<RequestId, Vec<mpsc::Sender<Request>>>,
    /// Sends waiting for durability: (records needed, what to send).
    outbox: VecDeque<(u64, Outgoing)>,
    /// Projection updates, applied to sled in batches once durable.
    updates: Vec<RowUpdate>,
    /// Final requests to drop from memory once projected: (records needed, id).
    evict: VecDeque<(u64, RequestId)>,
    /// How many records are durable.
    durable: u64,
    /// Set once the ledger or sled failed; every later command is refused with it.
    failed: Option<String>,
    /// Capacity appeared (a supervisor attended, resumed or finished a task): every queued
    /// request must be considered again.
    dispatch_all: bool,
    /// Requests that (re-)entered the queue since the last dispatch. After a dispatch no free
    /// supervisor is eligible for any queued request, so a new request needs checking only
    /// against the free supervisors, not the whole queue against them.
    dispatch_new: BTreeSet<QueueKey>,
    /// Set by Shutdown: answered, and the loop left, once everything appended is released.
    stopping: Option<Reply<()>>,
    /// Set while the ledger cannot write (full disk, I/O error); writes are refused meanwhile.
    degraded: Option<String>,
    /// When the writer was last probed while degraded (real time: a retry interval, not a
    /// domain time).
    last_probe: Option<std::time::Instant>,
    /// True while the engine can take writes; the server's health service follows it.
    pub health: tokio::sync::watch::Sender<bool>,
    /// The durable records, for rebuilding state after a write failure.
    pub ledger: Arc<crate::storage::embedded::Ledger>,
    /// The series the engine records (see `measure` and `count_sessions`).
    metrics: Arc<Metrics>,
}

/// What `apply` needs to know of a request before an event changes it, for the metrics.
#[derive(Clone, Copy)]
struct Before {
    state: State,
    level: u8,
    /// The time of its last record: while it is in review, that is the accept.
    updated_at: Timestamp,
    accepted: bool,
}

impl Core {
    // Each argument is a separate dependency the single writer owns; a struct holding them
    // would only rename this list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        rng: Box<dyn rand::RngCore + Send>,
        appender: Appender,
        projection: Arc<Projection>,
        policy: super::SharedPolicy,
        ledger: Arc<crate::storage::embedded::Ledger>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let durable = appender.next_index();
        Core {
            config,
            clock,
            rng,
            appender,
            projection,
            requests: HashMap::new(),
            queue: BTreeSet::new(),
            idem: HashMap::new(),
            pending_by_teller: HashMap::new(),
            offer_deadlines: BTreeSet::new(),
            review_deadlines: BTreeSet::new(),
            timers: BTreeSet::new(),
            policy,
            day: super::status::DayCounts::default(),
            sessions: HashMap::new(),
            session_seq: 0,
            watchers: HashMap::new(),
            outbox: VecDeque::new(),
            updates: Vec::new(),
            evict: VecDeque::new(),
            durable,
            failed: None,
            dispatch_all: true,
            dispatch_new: BTreeSet::new(),
            stopping: None,
            degraded: None,
            last_probe: None,
            health: tokio::sync::watch::Sender::new(true),
            ledger,
            metrics,
        }
    }

    /// Runs until every command sender is gone.
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
                        self.fail("ledger writer stopped".into());
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
                    let mut n = 0;
                    while n < 1024 {
                        match commands.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                _ = tick.tick() => {
                    self.project();
                    self.probe_if_degraded();
                }
            }
            // Checked on every pass, not only on ticks: a busy engine must not starve timers.
            // Nothing is recorded while the ledger cannot write.
            if self.degraded.is_none() {
                self.expire_offers();
                self.run_timers();
                self.dispatch();
            }
            if self.failed.is_none()
                && let Err(e) = self.appender.flush()
            {
                self.fail(e.to_string());
            }
            let drained = self.durable == self.appender.next_index() || self.failed.is_some();
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
            refuse(cmd, Unavailable("the server is shutting down".into()));
        }
        tracing::info!("engine stopped");
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            tracing::error!(error = %why, "engine stops acknowledging: the ledger cannot write");
        }
        self.failed = Some(why);
        // Dropping the pending sends tells every waiting caller UNAVAILABLE and ends streams:
        // none of it was acknowledged.
        self.outbox.clear();
        self.watchers.clear();
        self.sessions.clear();
        self.count_sessions();
    }

    fn unavailable(&self) -> Option<Unavailable> {
        self.failed.clone().map(Unavailable)
    }

    /// A ledger write failed (disk full, I/O error): nothing past `durable` was acknowledged,
    /// so every effect of it is dropped and the in-memory state is rebuilt from what is
    /// durable. Writes are refused with UNAVAILABLE, and health says NOT_SERVING, until a probe
    /// shows the disk can write again.
    fn degrade(&mut self, durable: u64, error: String) {
        if self.failed.is_some() {
            return;
        }
        tracing::error!(%error, durable, "ledger cannot write: refusing writes, NOT_SERVING");
        self.degraded = Some(format!("the ledger cannot write: {error}"));
        self.health.send_replace(false);
        self.durable = durable;
        self.appender.rewind(durable);
        // Pending sends are for records that are not on disk: dropping them answers UNAVAILABLE.
        self.outbox.clear();
        self.updates.retain(|u| u.index < durable);
        // The rebuild below reads sled, which must first hold everything durable.
        self.project();
        // Streams end with UNAVAILABLE; clients reconnect when the server serves again.
        self.watchers.clear();
        self.sessions.clear();
        self.count_sessions();
        if let Err(e) = self.reload_from_durable() {
            self.fail(format!("rebuild state after a ledger failure: {e}"));
        }
        self.last_probe = Some(std::time::Instant::now());
    }

    /// Records the withdrawal of every request held by a supervisor (offered or in review),
    /// putting it back in the queue: used when the consoles holding them are gone.
    pub(crate) fn withdraw_held(&mut self, reason: WithdrawReason) {
        let held: Vec<_> = self
            .requests
            .values()
            .filter(|r| matches!(r.state, State::Offered | State::InReview))
            .filter_map(|r| Some((r.id.clone(), r.assignee.clone()?, r.epoch)))
            .collect();
        for (id, supervisor, epoch) in held {
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

    /// Drops every in-memory request and loads the undecided ones again from sled and the
    /// durable ledger, as at start.
    pub(crate) fn reload_from_durable(&mut self) -> Result<(), StorageFault> {
        self.requests.clear();
        self.queue.clear();
        self.idem.clear();
        self.pending_by_teller.clear();
        self.timers.clear();
        self.offer_deadlines.clear();
        self.review_deadlines.clear();
        self.evict.clear();
        self.dispatch_new.clear();
        self.metrics.engine.clear_requests();
        let fault = |e: crate::storage::embedded::StoreError| StorageFault(e.to_string());
        for id in self.projection.active().map_err(fault)? {
            let indexes = self
                .projection
                .request(&id)
                .map_err(fault)?
                .ok_or_else(|| StorageFault(format!("active request {id} has no row")))?
                .1;
            let r = super::load::fold(&self.ledger, &id, &indexes)?.request;
            let (_, fp) = self
                .projection
                .idempotency(&r.teller, &r.submission.serial)
                .map_err(fault)?
                .ok_or_else(|| StorageFault(format!("request {id} has no idempotency row")))?;
            self.adopt(r, fp);
        }
        Ok(())
    }

    /// While degraded, asks the writer (at most once a second) whether it can write again;
    /// when it can, withdraws the offers and reviews whose consoles were cut off, and serves.
    fn probe_if_degraded(&mut self) {
        if self.degraded.is_none() || self.failed.is_some() {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .last_probe
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.last_probe = Some(now);
        if let Err(e) = self.appender.probe(self.durable) {
            tracing::warn!(error = %e, "ledger still cannot write");
            return;
        }
        tracing::info!("ledger writes again: serving");
        self.degraded = None;
        self.withdraw_held(WithdrawReason::Disconnected);
        self.dispatch_all = true;
        self.health.send_replace(true);
    }

    /// Appends one event and applies it to the in-memory request; returns its index.
    pub(crate) fn record(&mut self, id: &RequestId, actor: Actor, event: Event) -> u64 {
        let at = self.now();
        let rec = Record {
            request: id.clone(),
            at,
            actor,
            event,
        };
        let index = self.appender.append(record::encode(&rec));
        self.apply(index, rec, None);
        index
    }

    /// Applies a record (live or replayed) to the in-memory state.
    pub(crate) fn apply(&mut self, index: u64, rec: Record, fingerprint: Option<[u8; 32]>) {
        let id = rec.request.clone();
        let at = rec.at;
        let mut created = None;
        let before = self.requests.get(&id).map(|r| Before {
            state: r.state,
            level: r.level,
            updated_at: r.updated_at,
            accepted: r.first_accepted_at.is_some(),
        });
        let was = before.map(|b| b.state);
        match &rec.event {
            Event::Submitted {
                teller, submission, ..
            } => {
                let fp = fingerprint.unwrap_or_else(|| record::submission_fingerprint(submission));
                created = Some((teller.clone(), submission.serial.clone(), fp));
                self.idem.insert(
                    (teller.clone(), submission.serial.clone()),
                    (id.clone(), fp),
                );
                *self.pending_by_teller.entry(teller.clone()).or_default() += 1;
                let r = Request::open(index, &rec).expect("a submitted record");
                self.requests.insert(id.clone(), Box::new(r));
            }
            e => {
                let r = self
                    .requests
                    .get_mut(&id)
                    .expect("commands only record events for held requests");
                r.apply(index, at, e)
                    .expect("commands check an event applies before recording it");
            }
        }
        let r = &self.requests[&id];
        let state = r.state;
        if was == Some(State::Queued) && state != State::Queued {
            self.queue.remove(&queue_key(r));
        }
        if state == State::Queued && was != Some(State::Queued) {
            self.queue.insert(queue_key(r));
            self.dispatch_new.insert(queue_key(r));
            // Back in the queue (a first approval, a resubmission, a withdrawal): a wait
            // escalation that has not fired yet is armed again.
            if let Some(at) = r.escalate_at() {
                self.timers.insert((at, id.clone()));
            }
        }
        if let (State::Offered, Some(deadline)) = (state, r.accept_by) {
            self.offer_deadlines.insert((deadline, id.clone(), r.epoch));
        }
        if matches!(rec.event, Event::Accepted { .. }) {
            let deadline = at.plus_ms(self.config.review_timeout_ms);
            self.review_deadlines
                .insert((deadline, id.clone(), r.epoch));
        }
        if matches!(rec.event, Event::Submitted { .. }) {
            self.timers.insert((r.deadline(), id.clone()));
            if let Some(at) = r.escalate_at() {
                self.timers.insert((at, id.clone()));
            }
        }
        self.day.count(&rec, at);
        measure(&self.metrics.engine, &rec.event, before, r, at);
        if state.is_final() {
            if let Some(n) = self.pending_by_teller.get_mut(&r.teller) {
                *n = n.saturating_sub(1);
            }
            self.evict.push_back((index + 1, id.clone()));
        }
        if self.watchers.contains_key(&id) {
            let view = Request::clone(r);
            self.outbox.push_back((
                index + 1,
                Outgoing::Notify {
                    request: id.clone(),
                    view,
                },
            ));
        }
        let decided_by = match &rec.event {
            Event::Decided { supervisor, .. } => Some(supervisor.clone()),
            _ => None,
        };
        self.updates.push(RowUpdate {
            index,
            request: id,
            state,
            created,
            decided_by,
            summary: Summary::of(r),
        });
    }

    /// Queues a reply to go out once everything appended so far is durable.
    fn reply<T: Send + 'static>(&mut self, tx: Reply<T>, value: T) {
        let need = self.appender.next_index();
        if need <= self.durable {
            let _ = tx.send(value);
        } else {
            self.outbox.push_back((
                need,
                Outgoing::Reply(Box::new(move || {
                    let _ = tx.send(value);
                })),
            ));
        }
    }

    fn send_supervisor(&mut self, supervisor: &PrincipalId, event: SupervisorEvent) {
        let Some(s) = self.sessions.get(supervisor) else {
            return;
        };
        let need = self.appender.next_index();
        self.outbox.push_back((
            need,
            Outgoing::ToSupervisor {
                supervisor: supervisor.clone(),
                session: s.id,
                event,
            },
        ));
    }

    /// The ledger holds `count` records: project them, then send what waited for them.
    fn release(&mut self, count: u64) {
        if self.failed.is_some() || count <= self.durable {
            return;
        }
        self.durable = count;
        if self.updates.len() >= PROJECT_BATCH {
            self.project();
        }
        while self.outbox.front().is_some_and(|(need, _)| *need <= count) {
            let (_, out) = self.outbox.pop_front().expect("front checked");
            match out {
                Outgoing::Reply(send) => send(),
                Outgoing::Notify { request, view } => self.notify(&request, view),
                Outgoing::ToSupervisor {
                    supervisor,
                    session,
                    event,
                } => self.deliver(&supervisor, session, event),
            }
        }
    }

    /// Applies the durable row updates to sled in one transaction, then drops from memory the
    /// final requests sled now reflects: from then on reads of them go to sled, so a request
    /// is never in neither place.
    fn project(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let count = self.durable;
        let split = self.updates.partition_point(|u| u.index < count);
        if split > 0 {
            let done: Vec<RowUpdate> = self.updates.drain(..split).collect();
            if let Err(e) = self.projection.apply(&done, count) {
                self.fail(format!("apply projection: {e}"));
                return;
            }
        }
        while self.evict.front().is_some_and(|(need, _)| *need <= count) {
            let (_, id) = self.evict.pop_front().expect("front checked");
            if let Some(r) = self.requests.get(&id)
                && r.state.is_final()
                && r.version < count
            {
                let r = self.requests.remove(&id).expect("present");
                self.idem.remove(&(r.teller, r.submission.serial));
            }
        }
    }

    fn notify(&mut self, id: &RequestId, view: Request) {
        let done = view.state.is_final();
        if let Some(ws) = self.watchers.get_mut(id) {
            // A watcher that cannot keep up is dropped; its stream ends and the teller's
            // client reconnects and starts again from the current state.
            ws.retain(|w| w.try_send(view.clone()).is_ok());
            if ws.is_empty() || done {
                self.watchers.remove(id);
            }
        }
    }

    fn deliver(&mut self, supervisor: &PrincipalId, session: u64, event: SupervisorEvent) {
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

    fn handle(&mut self, cmd: Command) {
        if let Command::Shutdown { reply } = cmd {
            tracing::info!("engine stopping: ending streams, finishing what is in flight");
            // Dropping the senders ends every Attend and Watch stream; consoles reconnect.
            self.sessions.clear();
            self.count_sessions();
            self.watchers.clear();
            self.dispatch_all = false;
            self.dispatch_new.clear();
            if self.stopping.is_none() {
                self.stopping = Some(reply);
            }
            return;
        }
        let writes = !matches!(
            cmd,
            Command::Get { .. }
                | Command::Watch { .. }
                | Command::Status { .. }
                | Command::Project { .. }
                | Command::OfferImage { .. }
                | Command::Pause { .. }
        );
        let unavailable = self
            .unavailable()
            .or_else(|| {
                self.stopping
                    .as_ref()
                    .map(|_| Unavailable("the server is shutting down".into()))
            })
            .or_else(|| self.degraded.clone().filter(|_| writes).map(Unavailable));
        if let Some(u) = unavailable {
            if matches!(cmd, Command::Submit { .. }) {
                self.metrics.engine.submission(SubmitResult::Refused);
            }
            refuse(cmd, u);
            return;
        }
        match cmd {
            Command::Submit {
                teller,
                submission,
                fingerprint,
                reply,
            } => {
                let r = self.submit(teller, submission, fingerprint);
                self.metrics.engine.submission(match &r {
                    Ok((_, _, false)) => SubmitResult::Accepted,
                    Ok((_, _, true)) => SubmitResult::Replayed,
                    Err(_) => SubmitResult::Refused,
                });
                self.reply(reply, r);
            }
            Command::Get { teller, id, reply } => {
                let r = match self.requests.get(&id) {
                    Some(r) if r.teller == teller => Ok(Lookup::Active(Request::clone(r))),
                    Some(_) => Err(GetError::NotFound),
                    None => Ok(Lookup::NotActive),
                };
                self.reply(reply, r);
            }
            Command::Watch { teller, id, reply } => {
                let r = match self.requests.get(&id) {
                    Some(r) if r.teller == teller => {
                        let (tx, rx) = mpsc::channel(self.config.watch_buffer);
                        let view = Request::clone(r);
                        if !view.state.is_final() {
                            self.watchers.entry(id).or_default().push(tx);
                        }
                        Ok(Lookup::Active((view, rx)))
                    }
                    Some(_) => Err(GetError::NotFound),
                    None => Ok(Lookup::NotActive),
                };
                self.reply(reply, r);
            }
            Command::Cancel {
                teller,
                id,
                reason,
                reply,
            } => {
                let r = self.cancel(teller, id, reason);
                self.reply(reply, r);
            }
            Command::Resubmit {
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
            Command::Attend { supervisor, reply } => {
                let id = supervisor.id.clone();
                let (session, rx) = self.attend(supervisor);
                if reply.send(Ok((session, rx))).is_err() {
                    // The caller went away before the stream existed: no ghost session.
                    self.leave(
                        Leave {
                            supervisor: id,
                            session,
                        },
                        WithdrawReason::Disconnected,
                    );
                }
            }
            Command::Accept {
                supervisor,
                id,
                epoch,
                reply,
            } => {
                let r = self.accept(supervisor, id, epoch);
                self.reply(reply, r);
            }
            Command::Decline {
                supervisor,
                id,
                epoch,
                reason,
                reply,
            } => {
                let r = self.decline(supervisor, id, epoch, reason);
                self.reply(reply, r);
            }
            Command::Decide {
                supervisor,
                id,
                epoch,
                verdict,
                reply,
            } => {
                let r = self.decide(supervisor, id, epoch, verdict);
                self.reply(reply, r);
            }
            Command::OfferImage {
                supervisor,
                id,
                hash,
                reply,
            } => {
                let r = match self.requests.get(&id) {
                    None => Err(ImageError::NotFound),
                    Some(r) => {
                        let held = matches!(r.state, State::Offered | State::InReview)
                            && r.assignee.as_ref() == Some(&supervisor);
                        match r.submission.images.iter().find(|i| i.hash == hash) {
                            Some(i) if held => Ok(i.media_type),
                            _ => Err(ImageError::NotVisible),
                        }
                    }
                };
                let _ = reply.send(r);
            }
            Command::Shutdown { .. } => unreachable!("handled above"),
            Command::Pause {
                supervisor,
                paused,
                reply,
            } => {
                let r = match self.sessions.get_mut(&supervisor) {
                    Some(s) => {
                        s.paused = paused;
                        self.dispatch_all |= !paused;
                        self.count_sessions();
                        tracing::info!(supervisor = %supervisor, paused, "supervisor pause changed");
                        Ok(())
                    }
                    None => Err(PauseError::NotAttending),
                };
                let _ = reply.send(r);
            }
            Command::Status { reply } => {
                // Held like any reply, so the snapshot never shows what is not yet on disk.
                let st = self.status();
                self.reply(reply, st);
            }
            Command::Project { reply } => {
                self.project();
                let _ = reply.send(());
            }
        }
    }

    fn submit(
        &mut self,
        teller: Principal,
        submission: Submission,
        fingerprint: [u8; 32],
    ) -> Result<SubmitAnswer, SubmitError> {
        let key = (teller.id.clone(), submission.serial.clone());
        let earlier = match self.idem.get(&key) {
            Some(found) => Some(found.clone()),
            None => self
                .projection
                .idempotency(&key.0, &key.1)
                .map_err(|e| StorageFault(e.to_string()))?,
        };
        if let Some((id, fp)) = earlier {
            if fp != fingerprint {
                return Err(SubmitError::SerialReused(key.1.to_string()));
            }
            let found = match self.requests.get(&id) {
                Some(r) => Lookup::Active(Request::clone(r)),
                None => Lookup::NotActive,
            };
            return Ok((found, id, true));
        }
        let active = self.requests.len() - self.evict.len().min(self.requests.len());
        if active >= self.config.queue_length_max {
            return Err(SubmitError::QueueFull(self.config.queue_length_max));
        }
        let pending = self.pending_by_teller.get(&teller.id).copied().unwrap_or(0);
        if pending >= self.config.pending_per_teller_max {
            return Err(SubmitError::TellerPendingFull(
                self.config.pending_per_teller_max,
            ));
        }
        let t = &submission.transaction;
        let policy = self
            .policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let requirements = policy
            .evaluate(&t.code, &t.amount.currency, t.amount.minor_units)
            .map_err(|e| {
                SubmitError::Invalid(crate::domain::validate::FieldError::new(
                    "transaction",
                    e.to_string(),
                ))
            })?;
        let id = RequestId::from_random(self.rng.random());
        let event = Event::Submitted {
            teller: teller.id.clone(),
            branch: teller.branch.clone(),
            submission,
            requirements,
        };
        let at = self.now();
        let rec = Record {
            request: id.clone(),
            at,
            actor: Actor::Principal(teller.id),
            event,
        };
        let index = self.appender.append(record::encode(&rec));
        self.apply(index, rec, Some(fingerprint));
        Ok((
            Lookup::Active(Request::clone(&self.requests[&id])),
            id,
            false,
        ))
    }

    fn owned(&self, teller: &PrincipalId, id: &RequestId) -> Option<&Request> {
        self.requests
            .get(id)
            .filter(|r| &r.teller == teller)
            .map(|r| &**r)
    }

    fn cancel(
        &mut self,
        teller: PrincipalId,
        id: RequestId,
        reason: String,
    ) -> Result<Lookup<Request>, CancelError> {
        let Some(r) = self.owned(&teller, &id) else {
            return match self.requests.contains_key(&id) {
                true => Err(CancelError::NotFound),
                false => Ok(Lookup::NotActive),
            };
        };
        if r.state.is_final() {
            return Err(CancelError::Final(r.state));
        }
        let holder = r.assignee.clone().map(|s| (s, r.epoch));
        self.record(&id, Actor::Principal(teller), Event::Cancelled { reason });
        if let Some((supervisor, epoch)) = holder {
            self.release_task(&supervisor, &id);
            self.send_supervisor(
                &supervisor,
                SupervisorEvent::Withdrawn {
                    request: id.clone(),
                    epoch,
                    reason: "cancelled",
                },
            );
        }
        Ok(Lookup::Active(Request::clone(&self.requests[&id])))
    }

    fn resubmit(
        &mut self,
        teller: PrincipalId,
        id: RequestId,
        added: Vec<ImageRef>,
        removed: Vec<ImageHash>,
        note: String,
    ) -> Result<Lookup<Request>, ResubmitError> {
        let Some(r) = self.owned(&teller, &id) else {
            return match self.requests.contains_key(&id) {
                true => Err(ResubmitError::NotFound),
                false => Ok(Lookup::NotActive),
            };
        };
        if r.state != State::Returned {
            return Err(ResubmitError::NotReturned(r.state));
        }
        let Some(images) =
            crate::domain::request::resubmitted_images(&r.submission.images, &added, &removed)
        else {
            return Err(crate::domain::validate::FieldError::new(
                "remove_image_sha256",
                "names an image that is not attached, or names one twice",
            )
            .into());
        };
        if images.len() < self.config.images_per_request_min {
            return Err(crate::domain::validate::FieldError::new(
                "images",
                format!(
                    "a request needs at least {} image(s)",
                    self.config.images_per_request_min
                ),
            )
            .into());
        }
        if images.len() > self.config.images_per_request_max {
            return Err(crate::domain::validate::FieldError::new(
                "images",
                format!(
                    "the request would hold {} images; at most {} are allowed",
                    images.len(),
                    self.config.images_per_request_max
                ),
            )
            .into());
        }
        self.record(
            &id,
            Actor::Principal(teller),
            Event::Resubmitted {
                added,
                removed,
                note,
            },
        );
        Ok(Lookup::Active(Request::clone(&self.requests[&id])))
    }

    fn attend(&mut self, supervisor: Principal) -> (u64, mpsc::Receiver<SupervisorEvent>) {
        let id = supervisor.id.clone();
        if let Some(old) = self.sessions.get(&id) {
            let session = old.id;
            let _ = old.tx.try_send(SupervisorEvent::Superseded);
            self.leave(
                Leave {
                    supervisor: id.clone(),
                    session,
                },
                WithdrawReason::Superseded,
            );
        }
        self.session_seq += 1;
        let (tx, rx) = mpsc::channel(self.config.attend_buffer);
        tracing::info!(supervisor = %id, session = self.session_seq, "supervisor signed in");
        self.sessions.insert(
            id,
            Session {
                id: self.session_seq,
                principal: supervisor,
                tx,
                tasks: BTreeSet::new(),
                paused: false,
            },
        );
        self.count_sessions();
        self.dispatch_all = true;
        (self.session_seq, rx)
    }

    /// Ends a supervisor's session and puts everything they held back in the queue.
    fn leave(&mut self, leave: Leave, reason: WithdrawReason) {
        let current = self
            .sessions
            .get(&leave.supervisor)
            .is_some_and(|s| s.id == leave.session);
        if !current {
            return;
        }
        let s = self.sessions.remove(&leave.supervisor).expect("checked");
        self.count_sessions();
        tracing::info!(supervisor = %leave.supervisor, session = s.id, reason = reason.as_str(), "supervisor signed out");
        for id in s.tasks {
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            if matches!(r.state, State::Offered | State::InReview)
                && r.assignee.as_ref() == Some(&leave.supervisor)
            {
                let epoch = r.epoch;
                self.record(
                    &id,
                    Actor::System,
                    Event::OfferWithdrawn {
                        supervisor: leave.supervisor.clone(),
                        epoch,
                        reason,
                    },
                );
            }
        }
    }

    fn release_task(&mut self, supervisor: &PrincipalId, id: &RequestId) {
        if let Some(s) = self.sessions.get_mut(supervisor) {
            s.tasks.remove(id);
            self.dispatch_all = true;
        }
    }

    fn fenced(
        &self,
        supervisor: &PrincipalId,
        id: &RequestId,
        epoch: u64,
        state: State,
    ) -> Result<(), Option<FenceError>> {
        let r = self.requests.get(id).ok_or(None)?;
        r.check_fence(supervisor, epoch, state).map_err(Some)
    }

    fn accept(
        &mut self,
        supervisor: PrincipalId,
        id: RequestId,
        epoch: u64,
    ) -> Result<Request, AcceptError> {
        self.fenced(&supervisor, &id, epoch, State::Offered)
            .map_err(|e| e.map_or(AcceptError::NotFound, AcceptError::Fence))?;
        self.record(
            &id,
            Actor::Principal(supervisor.clone()),
            Event::Accepted { supervisor, epoch },
        );
        Ok(Request::clone(&self.requests[&id]))
    }

    fn decline(
        &mut self,
        supervisor: PrincipalId,
        id: RequestId,
        epoch: u64,
        reason: String,
    ) -> Result<(), DeclineError> {
        self.fenced(&supervisor, &id, epoch, State::Offered)
            .map_err(|e| e.map_or(DeclineError::NotFound, DeclineError::Fence))?;
        self.record(
            &id,
            Actor::Principal(supervisor.clone()),
            Event::OfferDeclined {
                supervisor: supervisor.clone(),
                epoch,
                reason,
            },
        );
        self.release_task(&supervisor, &id);
        if self.requests[&id].declines_escalate() {
            self.escalate(&id, crate::domain::EscalationReason::Declined);
        }
        Ok(())
    }

    fn decide(
        &mut self,
        supervisor: Principal,
        id: RequestId,
        epoch: u64,
        verdict: Verdict,
    ) -> Result<Request, DecideError> {
        self.fenced(&supervisor.id, &id, epoch, State::InReview)
            .map_err(|e| e.map_or(DecideError::NotFound, DecideError::Fence))?;
        // Dispatch already kept these apart; checking again here means a bug in dispatch
        // cannot turn into a self-authorized or same-branch decision.
        let r = &self.requests[&id];
        if r.teller == supervisor.id {
            return Err(DecideError::NotAllowed(
                "a principal cannot decide their own request",
            ));
        }
        if r.requirements.independent && r.branch == supervisor.branch {
            return Err(DecideError::NotAllowed(
                "a supervisor cannot decide a request from their own branch",
            ));
        }
        if !supervisor.may_decide(r.level, &r.submission.transaction) {
            return Err(DecideError::NotAllowed(
                "the request needs more authority (level, amount ceiling or transaction code) than this supervisor has",
            ));
        }
        if verdict.decision == crate::domain::Decision::Approve
            && r.approvals.iter().any(|a| a.supervisor == supervisor.id)
        {
            return Err(DecideError::NotAllowed(
                "dual control: the second approval must come from another supervisor",
            ));
        }
        self.record(
            &id,
            Actor::Principal(supervisor.id.clone()),
            Event::Decided {
                supervisor: supervisor.id.clone(),
                epoch,
                verdict,
            },
        );
        self.release_task(&supervisor.id, &id);
        Ok(Request::clone(&self.requests[&id]))
    }

    /// Expires requests past their decision deadline and escalates those that waited too long.
    fn run_timers(&mut self) {
        let now = self.now();
        while let Some((when, id)) = self.timers.first().cloned() {
            if when > now {
                break;
            }
            self.timers.pop_first();
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            if r.state.is_final() {
                continue;
            }
            if now >= r.deadline() {
                let holder = r.assignee.clone().map(|s| (s, r.epoch));
                self.record(&id, Actor::System, Event::Expired);
                if let Some((supervisor, epoch)) = holder {
                    self.release_task(&supervisor, &id);
                    self.send_supervisor(
                        &supervisor,
                        SupervisorEvent::Withdrawn {
                            request: id.clone(),
                            epoch,
                            reason: "expired",
                        },
                    );
                }
            } else if r.escalate_at().is_some_and(|at| at <= now)
                && matches!(r.state, State::Queued | State::Offered)
                && r.level < 9
            {
                self.escalate(&id, crate::domain::EscalationReason::Waited);
            }
        }
    }

    /// Raises the level a request needs by one, recording why, and withdraws a current offer
    /// from a supervisor who no longer qualifies.
    fn escalate(&mut self, id: &RequestId, reason: crate::domain::EscalationReason) {
        let r = &self.requests[id];
        let level = r.level + 1;
        self.record(id, Actor::System, Event::Escalated { level, reason });
        let r = &self.requests[id];
        if let (State::Offered, Some(holder)) = (r.state, r.assignee.clone()) {
            let qualifies = self
                .sessions
                .get(&holder)
                .is_some_and(|s| s.principal.may_decide(level, &r.submission.transaction));
            if !qualifies {
                let epoch = r.epoch;
                self.record(
                    id,
                    Actor::System,
                    Event::OfferWithdrawn {
                        supervisor: holder.clone(),
                        epoch,
                        reason: WithdrawReason::Escalated,
                    },
                );
                self.release_task(&holder, id);
                self.send_supervisor(
                    &holder,
                    SupervisorEvent::Withdrawn {
                        request: id.clone(),
                        epoch,
                        reason: "escalated",
                    },
                );
            }
        }
    }

    /// Moves offers whose accept deadline passed, and reviews held past the review timeout,
    /// to the queue again.
    fn expire_offers(&mut self) {
        let now = self.now();
        while let Some((deadline, id, epoch)) = self.review_deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.review_deadlines.pop_first();
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            if r.state != State::InReview || r.epoch != epoch {
                continue;
            }
            let supervisor = r.assignee.clone().expect("reviews have an assignee");
            self.record(
                &id,
                Actor::System,
                Event::OfferWithdrawn {
                    supervisor: supervisor.clone(),
                    epoch,
                    reason: WithdrawReason::ReviewTimeout,
                },
            );
            self.release_task(&supervisor, &id);
            self.send_supervisor(
                &supervisor,
                SupervisorEvent::Withdrawn {
                    request: id.clone(),
                    epoch,
                    reason: "review_timeout",
                },
            );
        }
        while let Some((deadline, id, epoch)) = self.offer_deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.offer_deadlines.pop_first();
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            if r.state != State::Offered || r.epoch != epoch {
                continue;
            }
            let supervisor = r
                .assignee
                .clone()
                .expect("offered requests have an assignee");
            self.record(
                &id,
                Actor::System,
                Event::OfferTimedOut {
                    supervisor: supervisor.clone(),
                    epoch,
                },
            );
            self.release_task(&supervisor, &id);
            self.send_supervisor(
                &supervisor,
                SupervisorEvent::Withdrawn {
                    request: id.clone(),
                    epoch,
                    reason: "offer_timeout",
                },
            );
        }
    }

    /// Offers queued requests, oldest first, each to a supervisor drawn uniformly at random
    /// from those eligible for it.
    fn dispatch(&mut self) {
        let all = std::mem::take(&mut self.dispatch_all);
        let new = std::mem::take(&mut self.dispatch_new);
        if (!all && new.is_empty()) || self.failed.is_some() || self.stopping.is_some() {
            return;
        }
        let tasks_max = self.config.supervisor_tasks_max;
        let mut free: Vec<PrincipalId> = self
            .sessions
            .values()
            .filter(|s| s.tasks.len() < tasks_max && !s.paused)
            .map(|s| s.principal.id.clone())
            .collect();
        if free.is_empty() {
            return;
        }
        // Sessions live in a HashMap; sort so a seeded RNG replays the same choices.
        free.sort();
        // Tasks each free supervisor will hold, counting the offers made in this pass.
        let mut load: Vec<usize> = free.iter().map(|p| self.sessions[p].tasks.len()).collect();
        let mut offers = Vec::new();
        let queue = &self.queue;
        let keys: Box<dyn Iterator<Item = &QueueKey>> = if all {
            Box::new(queue.iter())
        } else {
            Box::new(new.iter().filter(|k| queue.contains(k)))
        };
        for (_, _, id) in keys {
            if free.is_empty() {
                break;
            }
            let r = &self.requests[id];
            let eligible: Vec<usize> = free
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    let s = &self.sessions[*p];
                    eligible(r, &s.principal)
                })
                .map(|(i, _)| i)
                .collect();
            if eligible.is_empty() {
                continue;
            }
            // An offer that timed out goes to someone else when anyone else can take it; a
            // lone eligible supervisor who was away still gets it back.
            let fresh: Vec<usize> = eligible
                .iter()
                .copied()
                .filter(|&i| !r.timed_out.contains(&free[i]))
                .collect();
            let eligible = if fresh.is_empty() { eligible } else { fresh };
            let pick = eligible[self.rng.random_range(0..eligible.len())];
            let supervisor = free[pick].clone();
            load[pick] += 1;
            if load[pick] >= tasks_max {
                free.remove(pick);
                load.remove(pick);
            }
            offers.push((id.clone(), supervisor, eligible.len() as u32));
        }
        let now = self.now();
        for (id, supervisor, pool_size) in offers {
            let r = &self.requests[&id];
            let epoch = r.epoch + 1;
            let accept_by = now.plus_ms(r.requirements.offer_timeout_ms);
            self.record(
                &id,
                Actor::System,
                Event::Offered {
                    supervisor: supervisor.clone(),
                    epoch,
                    pool_size,
                    accept_by,
                },
            );
            let s = self
                .sessions
                .get_mut(&supervisor)
                .expect("picked from sessions");
            s.tasks.insert(id.clone());
            let view = Request::clone(&self.requests[&id]);
            self.send_supervisor(
                &supervisor,
                SupervisorEvent::Offer {
                    request: view,
                    epoch,
                    accept_by,
                    pool_size,
                },
            );
        }
    }

    fn status(&self) -> super::status::QueueStatus {
        use super::status::*;
        let now = self.now();
        let mut st = QueueStatus {
            at: now,
            depth: Default::default(),
            queued: 0,
            offered: 0,
            in_review: 0,
            returned: 0,
            oldest_waiting_ms: None,
            supervisors: Vec::new(),
        };
        for r in self.requests.values() {
            match r.state {
                State::Queued => {
                    st.queued += 1;
                    *st.depth
                        .entry((r.level, r.requirements.priority))
                        .or_default() += 1;
                    let waited = now.0 - r.submitted_at.0;
                    st.oldest_waiting_ms =
                        Some(st.oldest_waiting_ms.map_or(waited, |w| w.max(waited)));
                }
                State::Offered => st.offered += 1,
                State::InReview => st.in_review += 1,
                State::Returned => st.returned += 1,
                _ => {}
            }
        }
        // Counts roll over when a record of a new day arrives; before that, after midnight,
        // today's counts are zero.
        let current = now.0.div_euclid(DAY_MS) == self.day.day;
        let today = |id: &PrincipalId| {
            current
                .then(|| self.day.per.get(id).cloned())
                .flatten()
                .unwrap_or_default()
        };
        for s in self.sessions.values() {
            st.supervisors.push(SupervisorStatus {
                id: s.principal.id.clone(),
                name: s.principal.name.clone(),
                branch: s.principal.branch.to_string(),
                level: s.principal.level,
                online: true,
                paused: s.paused,
                tasks: s.tasks.len() as u32,
                today: today(&s.principal.id),
            });
        }
        for (id, d) in self.day.per.iter().filter(|_| current) {
            if !self.sessions.contains_key(id) {
                st.supervisors.push(SupervisorStatus {
                    id: id.clone(),
                    name: String::new(),
                    branch: String::new(),
                    level: 0,
                    online: false,
                    paused: false,
                    tasks: 0,
                    today: d.clone(),
                });
            }
        }
        st.supervisors.sort_by(|a, b| a.id.cmp(&b.id));
        st
    }

    /// Takes in an undecided request loaded at start.
    pub(crate) fn adopt(&mut self, r: Request, fingerprint: [u8; 32]) {
        self.idem.insert(
            (r.teller.clone(), r.submission.serial.clone()),
            (r.id.clone(), fingerprint),
        );
        *self.pending_by_teller.entry(r.teller.clone()).or_default() += 1;
        self.metrics.engine.undecided(1);
        if r.state == State::Queued {
            self.queue.insert(queue_key(&r));
            self.metrics.engine.queued(r.level, 1);
        }
        // Timers are derived from ledger times, so they survive a restart.
        self.timers.insert((r.deadline(), r.id.clone()));
        if let Some(at) = r.escalate_at() {
            self.timers.insert((at, r.id.clone()));
        }
        self.requests.insert(r.id.clone(), Box::new(r));
    }

    /// Sets the supervisor gauges from the sessions; called wherever sessions are added,
    /// removed, cleared or paused. Sessions change per sign-in, not per event, so counting the
    /// paused ones afresh costs nothing that matters.
    fn count_sessions(&self) {
        let paused = self.sessions.values().filter(|s| s.paused).count();
        self.metrics.engine.supervisors(self.sessions.len(), paused);
    }

    /// Hands what was appended to the ledger writer.
    pub(crate) fn flush(&mut self) -> Result<(), crate::storage::embedded::LedgerError> {
        self.appender.flush()
    }
}

/// Answers a call the engine will not carry out with why. (Dropping the reply sender would
/// also say UNAVAILABLE, but as if the ledger had failed.) Status has no error to send:
/// dropping its reply ends it.
fn refuse(cmd: Command, u: Unavailable) {
    match cmd {
        Command::Submit { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Get { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Watch { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Cancel { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Resubmit { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Attend { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Accept { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Decline { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Decide { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::OfferImage { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Pause { reply, .. } => drop(reply.send(Err(u.into()))),
        Command::Status { .. } | Command::Shutdown { .. } | Command::Project { .. } => {}
    }
}

/// Queue order: higher priority first, then older (by the index of the Submitted record).
pub(crate) type QueueKey = (std::cmp::Reverse<u8>, u64, RequestId);

pub(crate) fn queue_key(r: &Request) -> QueueKey {
    (
        std::cmp::Reverse(r.requirements.priority),
        r.submitted_index,
        r.id.clone(),
    )
}

/// Whether supervisor `s` may be offered `r` now (DESIGN.md "Dispatch"): their own authority
/// covers it (level, ceiling, codes), they are not the teller, not of the teller's branch when
/// the policy asks independence, have not declined it, and have not already approved it.
pub(crate) fn eligible(r: &Request, s: &Principal) -> bool {
    s.id != r.teller
        && (!r.requirements.independent || s.branch != r.branch)
        && !r.declined_by.contains(&s.id)
        && !r.approvals.iter().any(|a| a.supervisor == s.id)
        && s.may_decide(r.level, &r.submission.transaction)
}

/// Counts one applied event: the one place where records move the engine's series. `before`
/// is the request as it was (`None` for a submission), `r` as the event left it, `at` the
/// record's time; durations come from record times (the injected clock), never from `Instant`.
fn measure(m: &EngineMetrics, event: &Event, before: Option<Before>, r: &Request, at: Timestamp) {
    // Leaving the queue, entering it, or an escalation while queued moves the depth gauges.
    let queued_before = before.filter(|b| b.state == State::Queued).map(|b| b.level);
    let queued_now = (r.state == State::Queued).then_some(r.level);
    if queued_before != queued_now {
        if let Some(level) = queued_before {
            m.queued(level, -1);
        }
        if let Some(level) = queued_now {
            m.queued(level, 1);
        }
    }
    match event {
        Event::Submitted { .. } => m.undecided(1),
        Event::Offered { .. } => m.offered(),
        Event::OfferDeclined { .. } => m.declined(),
        Event::OfferTimedOut { .. } => m.offer_timed_out(),
        Event::OfferWithdrawn {
            reason: WithdrawReason::ReviewTimeout,
            ..
        } => m.review_timed_out(),
        Event::Accepted { .. } if before.is_some_and(|b| !b.accepted) => {
            m.waited_ms(at.0 - r.submitted_at.0);
        }
        Event::Decided { .. } => {
            // Only leaving review changes a request in review (escalation is for queued and
            // offered ones), so its last record before the decision is the accept.
            if let Some(b) = before.filter(|b| b.state == State::InReview) {
                m.decided_after_ms(at.0 - b.updated_at.0);
            }
        }
        Event::Escalated { reason, .. } => m.escalated(match reason {
            crate::domain::EscalationReason::Waited => Escalation::Waited,
            crate::domain::EscalationReason::Declined => Escalation::Declined,
        }),
        _ => {}
    }
    // `Request::apply` refuses every event on a final request, so this is the transition.
    let outcome = match r.state {
        State::Approved => Some(Outcome::Approved),
        State::Rejected => Some(Outcome::Rejected),
        State::Cancelled => Some(Outcome::Cancelled),
        State::Expired => Some(Outcome::Expired),
        State::Queued | State::Offered | State::InReview | State::Returned => None,
    };
    if let Some(outcome) = outcome {
        m.undecided(-1);
        m.finished(outcome);
    }
}
