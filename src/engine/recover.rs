//! Start-up from storage the composition root opened: check the stored checkpoints, bring the
//! projection up to date by replaying the records it has not seen, load every undecided
//! request into the engine, put back in the queue whatever was offered when the server stopped
//! (reviews stay with their supervisor), and start the engine on a thread of its own.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::domain::{Event, Request, RequestId, WithdrawReason, fold};
use crate::ledger::record;
use crate::storage::{
    DurableState, LedgerRead, Projection, RowUpdate, Storage, StorageError, Summary,
};

use super::checkpoints::Checkpointer;
use super::clock::Clock;
use super::core::{Core, Parts};
use super::{EngineConfig, EngineHandle, load};

/// Records replayed into sled per transaction.
const REPLAY_BATCH: usize = 4096;

/// Recovers from `storage` and starts the engine on a thread of its own; returns the handle
/// and the task that ends when the engine stops. Recovery reads and replays storage, so it runs
/// off the async runtime too.
pub(super) async fn start(
    storage: Storage,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    rng: Box<dyn rand::RngCore + Send>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<(EngineHandle, tokio::task::JoinHandle<()>)> {
    let Storage {
        ledger,
        appender,
        durable,
        checkpoints,
        images,
        projection,
    } = storage;
    let policy: super::SharedPolicy = Arc::new(std::sync::RwLock::new(config.policy.clone()));
    let parts = Parts {
        config: config.clone(),
        clock: clock.clone(),
        rng,
        appender,
        ledger: ledger.clone(),
        projection: projection.clone(),
        images: images.clone(),
        policy: policy.clone(),
        metrics: metrics.clone(),
    };
    let (mut core, checkpointer) = tokio::task::spawn_blocking(move || recover(parts, checkpoints))
        .await
        .context("join recovery")??;
    // A voucher the ledger names but the store lacks (images/ deleted or restored without it):
    // serving would show supervisors requests without their images.
    let tail = if config.check_all_images {
        ledger.len()
    } else {
        IMAGES_CHECKED_TAIL
    };
    let wanted = referenced_images(&core, ledger.as_ref(), tail)?;
    let store = images.clone();
    let missing: Vec<crate::domain::ImageHash> = tokio::task::spawn_blocking(move || {
        let wanted: Vec<_> = wanted.into_iter().collect();
        store.missing(&wanted)
    })
    .await
    .context("join the image check")?;
    if let Some(first) = missing.first() {
        let hashes: Vec<String> = missing.iter().map(|h| h.to_hex()).collect();
        tracing::error!(
            missing = missing.len(),
            hashes = %hashes.join(","),
            "images the ledger names are missing from the image store (restore them from a \
             backup): refusing calls, NOT_SERVING"
        );
        core.fail(super::Unavailable::Stopped {
            action: "find the images of undecided and recent requests",
            source: Arc::new(StorageError::ImageNotFound(*first)),
        });
    }
    if !core.availability.failed() {
        core.redraw_cut_review()
            .context("draw again an approval's review cut off by a crash")?;
        // Only an engine that will serve records its start: one stopped for missing images
        // does not.
        let started = crate::domain::EngineEvent::Started {
            node: core.config.node.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            policy_sha256: core
                .policy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .sha256()
                .to_owned(),
            directory_sha256: core.config.directory_sha256.clone(),
        };
        core.record_engine(crate::domain::Actor::System, started);
        core.appender
            .flush()
            .context("hand the engine's start to the ledger")?;
    }
    // Serving starts once the ledger holds the start (`engine_started`) and the withdrawals
    // recovery recorded: a record of when the centre served is part of what it promises.
    let recorded = core.appender.next_index();
    let written = durable
        .clone()
        .wait_for(|s| match s {
            DurableState::Count(n) => *n >= recorded,
            DurableState::Failed { .. } => true,
        })
        .await
        .map(|s| s.clone());
    match written {
        Ok(DurableState::Count(_)) => {}
        Ok(DurableState::Failed { error, .. }) => {
            return Err(
                anyhow::Error::new(error).context("record the engine's start in the ledger")
            );
        }
        Err(_) => bail!("record the engine's start in the ledger: the ledger writer stopped"),
    }

    let health = core.availability.subscribe();
    let evicted_round = core.evicted.shared();
    let (tx, rx) = mpsc::channel(config.command_buffer);
    let (leave_tx, leave_rx) = mpsc::unbounded_channel();
    // The engine gets a thread and a runtime of its own: its storage calls block (sled, disk
    // reads), and must not hold up the threads that serve gRPC.
    let engine = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .thread_name("engine")
        .build()
        .context("build the engine's runtime")?;
    let last = checkpointer.clone();
    let engine = tokio::task::spawn_blocking(move || {
        engine.block_on(core.run(rx, leave_rx, durable));
        // Everything the engine appended is durable or refused by now: sign it, so that a
        // clean stop leaves no record signed by nothing.
        sign_if_behind(&last, "at shutdown");
    });
    let signer = tokio::spawn(sign_checkpoints(
        checkpointer.clone(),
        ledger.clone(),
        config.checkpoints.clone(),
        tx.downgrade(),
    ));
    let (witnesses, witness_tasks) = super::witnesses::spawn(
        &config.checkpoints.witnesses,
        checkpointer.clone(),
        ledger.clone(),
        metrics,
        tx.downgrade(),
    );
    // The engine's task ends once the signer has let go of the storage too: whoever awaits it
    // (the server's shutdown) may then open the same store again, in this process or another.
    let task = tokio::spawn(async move {
        let ended = engine.await;
        signer.abort();
        let _ = signer.await;
        for t in witness_tasks {
            t.abort();
            let _ = t.await;
        }
        if let Err(e) = ended
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    });
    let handle = EngineHandle {
        tx,
        leave_tx,
        ledger,
        projection,
        images,
        checkpointer,
        witnesses,
        clock,
        policy,
        health,
        config,
        evicted_round,
    };
    Ok((handle, task))
}

/// Records at the ledger's end whose images are checked at start besides those of every
/// undecided request.
const IMAGES_CHECKED_TAIL: u64 = 1000;

/// The images of every undecided request and of the last `tail` records.
fn referenced_images(
    core: &Core,
    ledger: &dyn LedgerRead,
    tail: u64,
) -> Result<std::collections::BTreeSet<crate::domain::ImageHash>, StorageError> {
    let mut wanted: std::collections::BTreeSet<_> = core
        .requests
        .iter()
        .flat_map(|r| r.submission.images.iter().map(|i| i.hash))
        .collect();
    let len = ledger.len();
    for i in len.saturating_sub(tail)..len {
        wanted.extend(ledger.entry(i)?.images_added().iter().map(|i| i.hash));
    }
    Ok(wanted)
}

/// Checks the stored checkpoints, brings the projection up to the ledger and builds the engine's
/// state: the undecided requests, today's counts, and withdrawals (as ledger events) of what
/// was offered when the server stopped. Blocking.
fn recover(
    parts: Parts,
    checkpoints: Box<dyn crate::storage::CheckpointLog>,
) -> anyhow::Result<(Core, Arc<Checkpointer>)> {
    let config = &parts.config;
    let signer = crate::ledger::checkpoint::parse_signer(&config.checkpoints.signer_key)
        .context("read the checkpoint signing key")?;
    let checkpointer = Arc::new(
        Checkpointer::open(
            parts.ledger.clone(),
            checkpoints,
            signer,
            config.checkpoints.origin.clone(),
            witness_keys(config),
        )
        .context("open checkpoint log")?,
    );
    check_unsigned(&checkpointer, config.checkpoints.unsigned_records_max)?;
    let (ledger, projection) = (parts.ledger.clone(), parts.projection.clone());
    let len = ledger.len();
    let applied = projection.applied()?;
    if applied > len {
        bail!(
            "the projection reflects {applied} records but the ledger holds {len}; the ledger \
             lost records or the projection belongs to another ledger: rebuild the projection \
             (for the embedded backend, move the data directory's projection/ aside)"
        );
    }
    replay(ledger.as_ref(), projection.as_ref(), applied, len)?;
    tracing::info!(records = len, replayed = len - applied, "ledger opened");
    if len == 0 {
        // Right for a first start; after that, a data_dir or storage.url pointing at the
        // wrong place would start an empty ledger beside the real one.
        tracing::warn!(
            "the ledger is empty: a new ledger begins here. If this centre has served before, \
             stop it and check data_dir (or storage.url): it points somewhere else"
        );
    }
    let now = parts.clock.now();
    let mut core = Core::new(parts);
    count_today(ledger.as_ref(), &mut core, now)?;
    core.reload_from_durable()?;
    // What was offered when the server stopped goes back to the queue: the consoles that held
    // it are gone. Reviews wait for their supervisor's next Attend.
    core.withdraw_offers(WithdrawReason::Restart);
    tracing::info!(undecided = core.requests.len(), "requests loaded");
    core.appender.flush()?;
    Ok((core, checkpointer))
}

/// Refuses a ledger with more records beyond its last checkpoint than the window allows: its
/// checkpoints were deleted or cut short, and those records are signed by nothing, so they may
/// have been altered. Signing them now would vouch for whatever they say.
fn check_unsigned(checkpointer: &Checkpointer, max: u64) -> anyhow::Result<()> {
    let signed = checkpointer.latest().map_or(0, |s| s.checkpoint.size);
    let records = checkpointer.ledger_size();
    if records.saturating_sub(signed) > max {
        return Err(UnsignedRecords {
            records,
            signed,
            max,
        }
        .into());
    }
    Ok(())
}

/// A ledger with more records beyond its last checkpoint than `ledger.unsigned_records_max`:
/// the server does not start on it (a cluster node does not lead on it).
#[derive(Debug)]
pub struct UnsignedRecords {
    pub records: u64,
    pub signed: u64,
    pub max: u64,
}

impl std::fmt::Display for UnsignedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let UnsignedRecords {
            records,
            signed,
            max,
        } = self;
        let covered = match signed {
            0 => "no checkpoint at all".to_string(),
            n => format!("checkpoints covering only the first {n}"),
        };
        write!(
            f,
            "the ledger holds {records} records but {covered}: {} records are signed by \
             nothing, more than ledger.unsigned_records_max ({max}) allows, so the checkpoints \
             were deleted or cut short and those records may have been altered. Restore the \
             checkpoints (ledger/checkpoints.log, or the checkpoints table) from a backup, check \
             the ledger with `countersign ledger verify --pubkey`, and start again",
            records - signed
        )
    }
}

impl std::error::Error for UnsignedRecords {}

/// Applies records `from..to` to the projection. Requests are read back from the ledger as
/// they are first touched, then kept until the end of the replay.
fn replay(
    ledger: &dyn LedgerRead,
    projection: &dyn Projection,
    from: u64,
    to: u64,
) -> Result<(), StorageError> {
    let mut cache: HashMap<RequestId, Request> = HashMap::new();
    let mut updates = Vec::new();
    ledger.each_entry(from..to, |index, entry| {
        // Engine records belong to no request: the projection has no row for them.
        let crate::domain::Entry::Request(rec) = entry else {
            return Ok(());
        };
        let id = rec.request.clone();
        if !cache.contains_key(&id) && record::opens(&rec.event).is_none() {
            let (_, indexes) = projection.request(&id)?.ok_or_else(|| {
                StorageError::Inconsistent(format!("record {index} names unknown request {id}"))
            })?;
            cache.insert(
                id.clone(),
                load::fold_indexes(ledger, &id, &indexes)?.request,
            );
        }
        let fold_error = |source| StorageError::Fold {
            request: id.clone(),
            source,
        };
        if let Some(opened) = fold::step(cache.get_mut(&id), index, &rec).map_err(fold_error)? {
            cache.insert(id.clone(), opened);
        }
        let Some(r) = cache.get(&id) else {
            return Ok(());
        };
        let created = record::opens(&rec.event);
        let decided_by = match &rec.event {
            Event::Decided { supervisor, .. } => Some(supervisor.clone()),
            _ => None,
        };
        updates.push(RowUpdate {
            index,
            request: id,
            state: r.state,
            created,
            decided_by,
            summary: Summary::of(r),
        });
        if updates.len() >= REPLAY_BATCH {
            projection.apply(&updates, index + 1)?;
            updates.clear();
        }
        Ok(())
    })?;
    if !updates.is_empty() {
        projection.apply(&updates, to)?;
    }
    Ok(())
}

/// How often the signer looks at the ledger's size: often enough that half the unsigned window
/// is never overrun by more than this much of the records a busy engine appends.
const SIGNER_LOOK_MS: u64 = 20;

/// Signs a checkpoint every interval while records arrive, and sooner once half of
/// `unsigned_records_max` records are unsigned; stops with the engine (when the command channel
/// closes).
async fn sign_checkpoints(
    checkpointer: Arc<Checkpointer>,
    ledger: Arc<dyn LedgerRead>,
    config: super::CheckpointConfig,
    alive: mpsc::WeakSender<super::command::Command>,
) {
    let look = std::time::Duration::from_millis(SIGNER_LOOK_MS.min(config.interval_ms));
    let mut tick = tokio::time::interval(look);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let every = std::time::Duration::from_millis(config.interval_ms);
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        let signed = checkpointer.latest().map_or(0, |s| s.checkpoint.size);
        let unsigned = ledger.tree_size().saturating_sub(signed);
        let due = last.elapsed() >= every || unsigned >= config.unsigned_records_max / 2;
        if unsigned == 0 || !due {
            continue;
        }
        last = tokio::time::Instant::now();
        let c = checkpointer.clone();
        match tokio::task::spawn_blocking(move || c.sign_now()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "checkpoint not signed"),
            Err(e) => tracing::error!(error = %e, "checkpoint signer panicked"),
        }
    }
}

/// The configured witnesses' keys.
fn witness_keys(config: &EngineConfig) -> Vec<crate::ledger::cosignature::WitnessKey> {
    config
        .checkpoints
        .witnesses
        .iter()
        .map(|w| w.key.clone())
        .collect()
}

/// Signs a checkpoint when records are beyond the last one (a leader's; a follower signs
/// nothing). Blocking.
fn sign_if_behind(checkpointer: &Checkpointer, when: &str) {
    if checkpointer.following() {
        return;
    }
    let signed = checkpointer.latest().map_or(0, |s| s.checkpoint.size);
    if checkpointer.ledger_size() <= signed {
        return;
    }
    match checkpointer.sign_now() {
        Ok(s) => tracing::info!(size = s.checkpoint.size, when, "checkpoint signed"),
        Err(e) => tracing::error!(error = %e, when, "checkpoint not signed"),
    }
}

/// Rebuilds the supervisors' counts for today from today's records: the first is found by
/// binary search on record times, so this reads O(log n) records plus today's.
fn count_today(
    ledger: &dyn LedgerRead,
    core: &mut Core,
    now: crate::domain::Timestamp,
) -> Result<(), StorageError> {
    let start = now.0.div_euclid(super::status::DAY_MS) * super::status::DAY_MS;
    let at = |i: u64| -> Result<i64, StorageError> { Ok(ledger.entry(i)?.at().0) };
    let (mut lo, mut hi) = (0, ledger.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at(mid)? < start {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    ledger.each_entry(lo..ledger.len(), |_, entry| {
        if let crate::domain::Entry::Request(rec) = entry {
            let t = rec.at;
            core.day.count(&rec, t);
        }
        Ok(())
    })
}

impl EngineHandle {
    /// The handle of a node that does not lead: audit reads come from `reads` and checkpoints
    /// are the leader's, followed; no engine runs here, so every command is refused as
    /// UNAVAILABLE (the API sends teller, supervisor and admin calls to the leader first).
    pub fn standby(
        reads: crate::storage::StorageReads,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<EngineHandle> {
        let signer = crate::ledger::checkpoint::parse_signer(&config.checkpoints.signer_key)
            .context("read the checkpoint signing key")?;
        let checkpointer = Arc::new(
            Checkpointer::follow(
                reads.ledger.clone(),
                reads.checkpoints,
                signer,
                config.checkpoints.origin.clone(),
                witness_keys(&config),
            )
            .context("open checkpoint log")?,
        );
        // Nobody receives: every command finds the engine not running.
        let (tx, _) = mpsc::channel(1);
        let (leave_tx, _) = mpsc::unbounded_channel();
        let (_, health) = tokio::sync::watch::channel(false);
        Ok(EngineHandle {
            tx,
            leave_tx,
            ledger: reads.ledger,
            projection: reads.projection,
            images: reads.images,
            checkpointer,
            // The leader sends checkpoints to the witnesses; a follower reports none.
            witnesses: super::witnesses::Board::default(),
            clock,
            policy: Arc::new(std::sync::RwLock::new(config.policy.clone())),
            health,
            config,
            // No engine runs here: nothing is ever evicted.
            evicted_round: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }
}
