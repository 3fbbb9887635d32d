//! A node on the postgres backend: it starts as a standby (audit reads from the database,
//! teller, supervisor and admin calls refused with the leader's address), waits for the lease,
//! and leads once it holds it: the engine recovers from the shared ledger and projection and
//! replaces the standby's handle in the services. When a leader loses its lease (another node
//! took it while it was paused or cut off) it stops its engine, whose writes the database
//! already refuses, and goes back to waiting as a standby; so does a leader whose engine could
//! not write for a whole lease, which then leads again at once from the ledger.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{EngineSlot, Role};
use crate::engine::{Clock, EngineConfig, EngineHandle};
use crate::metrics::Metrics;
use crate::storage::PostgresSettings;
use crate::storage::postgres::{self, Follower};

/// The leading engine's task, set when this node starts leading; `join` waits for the last.
#[derive(Clone, Default)]
pub(super) struct EngineTask(Arc<Mutex<Option<JoinHandle<()>>>>);

impl EngineTask {
    pub(super) fn set(&self, task: JoinHandle<()>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    pub(super) async fn join(&self) -> Result<(), tokio::task::JoinError> {
        let task = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match task {
            Some(t) => t.await,
            None => Ok(()),
        }
    }
}

/// A started cluster node: the engine slot and role the services follow, and the task that
/// takes over (and steps down).
pub(super) struct Node {
    pub(super) engine: EngineSlot,
    pub(super) role: watch::Receiver<Role>,
    pub(super) task: JoinHandle<()>,
    /// Kept by the server until its engine has stopped: dropping the last one closes the
    /// connections the engine writes through.
    pub(super) follower: Arc<Follower>,
}

/// How often a standby reads who leads, to name them to callers.
fn leader_poll(settings: &PostgresSettings) -> Duration {
    Duration::from_millis((settings.lease_ms / 4).max(100))
}

/// Longest a starting node waits to settle as leader or standby before it serves anyway.
const SETTLE_MAX: Duration = Duration::from_secs(60);

/// How long a node waits before trying again after taking over failed.
const RETRY: Duration = Duration::from_secs(1);

/// The files a node reloads when the leader records a reload of its own.
#[derive(Clone)]
pub(super) struct ReloadFiles {
    pub directory: std::path::PathBuf,
    pub policy: std::path::PathBuf,
}

/// How often a standby looks for the leader's engine records (reloads, starts).
const RELOADS_POLL: Duration = Duration::from_secs(1);

#[allow(clippy::too_many_arguments)]
pub(super) async fn start(
    settings: &PostgresSettings,
    config: EngineConfig,
    directory: crate::api::SharedDirectory,
    files: ReloadFiles,
    clock: Arc<dyn Clock>,
    rng: Box<dyn rand::RngCore + Send>,
    metrics: Arc<Metrics>,
    engine_task: EngineTask,
) -> anyhow::Result<Node> {
    let s = settings.clone();
    let follower = tokio::task::spawn_blocking(move || postgres::follow(&s))
        .await
        .context("join opening the database")?
        .with_context(|| {
            format!(
                "open the database ({}): check that it runs and that storage.url's host, port, \
                 database, user and password are right",
                postgres::describe_url(&settings.url)
            )
        })?;
    let follower = Arc::new(follower);
    let standby = EngineHandle::standby(follower.reads(), config.clone(), clock.clone())?;
    let (engine_tx, engine) = watch::channel(standby);
    let (role_tx, role) = watch::channel(Role::Standby { leader: None });
    let node = Takeover {
        follower: follower.clone(),
        settings: settings.clone(),
        config,
        directory,
        files,
        clock,
        rng: Some(rng),
        metrics,
        engine: engine_tx,
        role: role_tx,
        engine_task,
    };
    let (fatal_tx, mut fatal) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(node.run(fatal_tx));
    // Come up settled: leading when the lease is free, this node's own (a restart) or lapsed
    // (after recovering the engine), else a standby that can name the leader. Should taking
    // over keep failing, the node serves as a standby and goes on trying.
    let mut settled = role.clone();
    tokio::select! {
        // The fatal error first: the task sends it, then ends, which also ends the wait below.
        biased;
        Ok(e) = &mut fatal => {
            task.abort();
            return Err(e);
        }
        _ = tokio::time::timeout(
            SETTLE_MAX,
            settled.wait_for(|r| !matches!(r, Role::Standby { leader: None })),
        ) => {}
    }
    Ok(Node {
        engine,
        role,
        task,
        follower,
    })
}

struct Takeover {
    follower: Arc<Follower>,
    settings: PostgresSettings,
    config: EngineConfig,
    /// The directory in force: an engine started at takeover dispatches with its supervisors,
    /// not the ones the node started with.
    directory: crate::api::SharedDirectory,
    /// Reloaded while standing by when the leader records a reload.
    files: ReloadFiles,
    clock: Arc<dyn Clock>,
    rng: Option<Box<dyn rand::RngCore + Send>>,
    metrics: Arc<Metrics>,
    engine: watch::Sender<EngineHandle>,
    role: watch::Sender<Role>,
    engine_task: EngineTask,
}

impl Takeover {
    /// Standby, leader, standby again when the lease is lost, for as long as the node runs. A
    /// ledger the engine refuses to lead on (records signed by nothing) ends a node that is
    /// starting (`fatal`); a running standby keeps trying, and saying why.
    async fn run(mut self, fatal: tokio::sync::oneshot::Sender<anyhow::Error>) {
        let mut fatal = Some(fatal);
        loop {
            let leader = match self.lead().await {
                Ok(engine) => engine,
                Err(e) if e.chain().any(|c| c.is::<crate::engine::UnsignedRecords>()) => {
                    // Told to a node still starting, which then exits with it; once it serves
                    // (the start gave up waiting), it goes on trying like any other failure.
                    let e = match fatal.take() {
                        Some(f) => match f.send(e) {
                            Ok(()) => return,
                            Err(e) => e,
                        },
                        None => e,
                    };
                    tracing::error!(
                        error = format!("{e:#}"),
                        "could not take over; trying again"
                    );
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "could not take over; trying again"
                    );
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            fatal = None;
            let mut lost = self.follower.lease_lost();
            let lease = Duration::from_millis(self.settings.lease_ms);
            tokio::select! {
                _ = lost.wait_for(|l| *l) => {}
                _ = cannot_write_for(leader.health(), lease) => {
                    tracing::warn!("the engine could not write for a whole lease; recovering from the ledger");
                }
            }
            self.step_down(leader).await;
        }
    }

    /// Waits for the lease, naming the leader to callers meanwhile, then starts the engine
    /// on the shared ledger and serves it.
    async fn lead(&mut self) -> anyhow::Result<EngineHandle> {
        let naming = tokio::spawn(name_leader(
            self.follower.clone(),
            self.settings.clone(),
            self.role.clone(),
        ));
        let reloads = Reloads {
            follower: self.follower.clone(),
            directory: self.directory.clone(),
            files: self.files.clone(),
            engine: self.engine.subscribe(),
        };
        let next = Arc::new(std::sync::atomic::AtomicU64::new(
            self.follower.ledger().len(),
        ));
        let (stop, stopped) = watch::channel(false);
        let following = tokio::spawn(follow_reloads(reloads.clone(), next.clone(), stopped));
        let storage = self.follower.lead(self.metrics.ledger.clone()).await;
        naming.abort();
        // Between looks, never inside one (a reload half applied).
        stop.send_replace(true);
        let _ = following.await;
        // The ledger is caught up now: a reload the last leader recorded since the last look
        // is followed before this node's engine starts.
        if storage.is_ok() {
            reloads.look(&next).await;
        }
        let storage = storage.context("take the lease")?;
        // The injected generator for the first term; a later one (after stepping down) is
        // seeded from the OS, as the composition root seeds the first.
        let rng: Box<dyn rand::RngCore + Send> = match self.rng.take() {
            Some(rng) => rng,
            None => {
                use rand::SeedableRng;
                Box::new(rand_chacha::ChaCha20Rng::from_rng(&mut rand::rng()))
            }
        };
        let mut config = self.config.clone();
        let directory = self.directory.current();
        config.supervisors = Arc::new(directory.supervisors());
        config.directory_sha256 = directory.sha256().to_owned();
        // The policy in force here: the leader's last reload, followed while standing by.
        config.policy = self.engine.borrow().policy();
        let (engine, task) = EngineHandle::start(
            storage,
            config,
            self.clock.clone(),
            rng,
            self.metrics.clone(),
        )
        .await
        .context("start the engine on the shared ledger")?;
        self.engine_task.set(task);
        self.engine.send_replace(engine.clone());
        self.role.send_replace(Role::Leader);
        tracing::info!(node = %self.settings.node_id, "serving as the leader");
        Ok(engine)
    }

    /// After the lease was lost: callers are sent elsewhere at once, the engine stops (what it
    /// had made durable is answered; the rest was refused by the database), and the node
    /// follows the ledger again.
    async fn step_down(&mut self, leader: EngineHandle) {
        tracing::warn!(node = %self.settings.node_id, "stepping down: another node leads");
        self.role.send_replace(Role::Standby { leader: None });
        let policy = leader.policy();
        leader.stop_without_record().await;
        let _ = self.engine_task.join().await;
        self.follower.step_down();
        let mut config = self.config.clone();
        config.policy = policy;
        match EngineHandle::standby(self.follower.reads(), config, self.clock.clone()) {
            Ok(standby) => {
                self.engine.send_replace(standby);
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "could not reopen as a standby"),
        }
    }
}

/// Returns once the engine has been unable to write for `lease` on end (a database failover
/// that broke its connections, a commit whose answer was lost, a projection batch that
/// failed): the node then steps down and leads again, which recovers the engine from the
/// ledger under a new term, whatever the database holds now. Shorter outages it rides out.
async fn cannot_write_for(mut healthy: watch::Receiver<bool>, lease: Duration) {
    loop {
        if healthy.wait_for(|h| !*h).await.is_err() {
            return;
        }
        if tokio::time::timeout(lease, healthy.wait_for(|h| *h))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// While standing by: reads the leader's engine records as they arrive and, when one puts in
/// force a principal directory or a policy (a reload, or a new leader's start) other than
/// this node's, reloads this node's files, so that its audits are authorized, and an engine
/// it starts at takeover dispatches, with what the leader had. A file that still differs
/// after the reload (the nodes' copies are not the same) is logged as an error. `next` is
/// where the next look starts, shared so that taking over looks once more from there.
/// It stops between looks, when `stop` says so, never in the middle of one.
async fn follow_reloads(
    reloads: Reloads,
    next: Arc<std::sync::atomic::AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOADS_POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !reloads.look(&next).await {
            return;
        }
    }
}

/// What following the leader's reloads needs.
#[derive(Clone)]
struct Reloads {
    follower: Arc<Follower>,
    directory: crate::api::SharedDirectory,
    files: ReloadFiles,
    engine: watch::Receiver<EngineHandle>,
}

impl Reloads {
    /// One look at the engine records from `next` on; `false` once the runtime is going away.
    async fn look(&self, next: &std::sync::atomic::AtomicU64) -> bool {
        use crate::domain::{Actor, EngineEvent, Entry};
        use std::sync::atomic::Ordering;
        let (f, from) = (self.follower.clone(), next.load(Ordering::Acquire));
        let (to, records) =
            match tokio::task::spawn_blocking(move || f.engine_records_from(from)).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not read the leader's engine records");
                    return true;
                }
                Err(_) => return false,
            };
        for (index, bytes) in records {
            let Ok(Entry::Engine(rec)) = crate::ledger::record::decode_entry(&bytes) else {
                continue;
            };
            let (dir, pol) = match &rec.event {
                EngineEvent::DirectoryLoaded { sha256, .. } => (Some(sha256), None),
                EngineEvent::PolicyLoaded { sha256, .. } => (None, Some(sha256)),
                EngineEvent::SupervisorPaused { .. } => continue,
                EngineEvent::Started {
                    policy_sha256,
                    directory_sha256,
                    ..
                } => (Some(directory_sha256), Some(policy_sha256)),
                _ => continue,
            };
            let handle = self.engine.borrow().clone();
            let (directory, files) = (&self.directory, &self.files);
            if let Some(want) = dir
                && directory.current().sha256() != want
            {
                let _ = crate::api::reload_directory(
                    directory,
                    &files.directory,
                    &handle,
                    Actor::System,
                )
                .await;
                let here = directory.current().sha256().to_owned();
                if &here != want {
                    tracing::error!(index, leader = %want, here = %here, file = %files.directory.display(),
                        "this node's principal directory differs from the one the leader put in \
                         force: copy the leader's file here (this node authorizes audits, and \
                         would dispatch after a takeover, with its own)");
                } else {
                    tracing::info!(index, sha256 = %here, "followed the leader's principal directory");
                }
            }
            if let Some(want) = pol
                && handle.policy().sha256() != want
            {
                let _ = crate::api::reload_policy(&files.policy, &handle, Actor::System).await;
                let here = handle.policy().sha256().to_owned();
                if &here != want {
                    tracing::error!(index, leader = %want, here = %here, file = %files.policy.display(),
                        "this node's policy file differs from the one the leader put in force: \
                         copy the leader's file here (after a takeover this node would evaluate \
                         submissions against its own)");
                } else {
                    tracing::info!(index, sha256 = %here, "followed the leader's policy");
                }
            }
        }
        // Only once every record found is handled (a look is never cut short: see
        // `follow_reloads`), so the takeover's last look starts after them.
        next.store(to, Ordering::Release);
        true
    }
}

/// Keeps the standby's role naming whoever holds a live lease.
async fn name_leader(
    follower: Arc<Follower>,
    settings: PostgresSettings,
    role: watch::Sender<Role>,
) {
    loop {
        let f = follower.clone();
        let leader = match tokio::task::spawn_blocking(move || f.leader()).await {
            Ok(Ok(l)) if l.live && l.node_id != settings.node_id => Some(l.advertise),
            _ => None,
        };
        role.send_if_modified(|r| {
            let next = Role::Standby {
                leader: leader.clone(),
            };
            let changed = *r != next;
            *r = next;
            changed
        });
        tokio::time::sleep(leader_poll(&settings)).await;
    }
}
