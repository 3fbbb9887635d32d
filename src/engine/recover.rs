//! Start-up: open the ledger, bring sled up to date by replaying the records it has not seen,
//! load every undecided request into the engine, and put back in the queue whatever was
//! offered or in review when the server stopped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::domain::{Event, Request, RequestId, WithdrawReason};
use crate::ledger::record;
use crate::storage::embedded::Ledger;
use crate::storage::embedded::checkpoints::Checkpointer;
use crate::storage::embedded::{ImageStore, Projection, RowUpdate, Summary};

use super::clock::Clock;
use super::core::Core;
use super::{EngineConfig, EngineHandle, load};

/// Records replayed into sled per transaction.
const REPLAY_BATCH: usize = 4096;

pub(super) async fn start(
    data_dir: &Path,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    rng: Box<dyn rand::RngCore + Send>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<(EngineHandle, tokio::task::JoinHandle<()>)> {
    std::fs::create_dir_all(data_dir).context("create data directory")?;
    let (ledger, appender, durable) = Ledger::open_measured(
        &data_dir.join("ledger"),
        config.segment_bytes_max,
        metrics.ledger.clone(),
    )
    .context("open ledger")?;
    let projection = Arc::new(
        Projection::open(&data_dir.join("projection"), config.projection_cache_bytes)
            .context("open projection")?,
    );
    let images = Arc::new(
        ImageStore::open(&data_dir.join("images"), config.image_writes_max)
            .context("open image store")?,
    );
    let signer = crate::ledger::checkpoint::parse_signer(&config.checkpoints.signer_key)
        .context("read the checkpoint signing key")?;
    let checkpointer = Arc::new(
        Checkpointer::open(ledger.clone(), signer, config.checkpoints.origin.clone())
            .context("open checkpoint log")?,
    );

    // The subdirectories just created must survive a crash too.
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .context("sync data directory")?;
    let len = ledger.len();
    let applied = projection.applied()?;
    if applied > len {
        bail!(
            "the projection reflects {applied} records but the ledger holds {len}; the ledger \
             lost records or the projection belongs to another ledger: move {} aside to rebuild it",
            data_dir.join("projection").display()
        );
    }
    replay(&ledger, &projection, applied, len)?;
    tracing::info!(records = len, replayed = len - applied, "ledger opened");

    let policy: super::SharedPolicy = Arc::new(std::sync::RwLock::new(config.policy.clone()));
    let mut core = Core::new(
        config.clone(),
        clock.clone(),
        rng,
        appender,
        projection.clone(),
        policy.clone(),
        ledger.clone(),
        metrics,
    );
    count_today(&ledger, &mut core, clock.now())?;
    core.reload_from_durable()?;
    // Whatever was offered or in review when the server stopped goes back to the queue: the
    // consoles that held it are gone.
    core.withdraw_held(WithdrawReason::Restart);
    tracing::info!(undecided = core.requests.len(), "requests loaded");

    let health = core.health.subscribe();
    let (tx, rx) = mpsc::channel(config.command_buffer);
    let (leave_tx, leave_rx) = mpsc::unbounded_channel();
    core.flush()?;
    let task = tokio::spawn(core.run(rx, leave_rx, durable));
    tokio::spawn(sign_checkpoints(
        checkpointer.clone(),
        ledger.clone(),
        config.checkpoints.interval_ms,
        tx.downgrade(),
    ));
    let handle = EngineHandle {
        tx,
        leave_tx,
        ledger,
        projection,
        images,
        checkpointer,
        clock,
        policy,
        health,
        config,
    };
    Ok((handle, task))
}

/// Applies records `from..to` to the projection. Requests are read back from the ledger as
/// they are first touched, then kept until the end of the replay.
fn replay(ledger: &Ledger, projection: &Projection, from: u64, to: u64) -> anyhow::Result<()> {
    let mut cache: HashMap<RequestId, Request> = HashMap::new();
    let mut updates = Vec::new();
    for index in from..to {
        let bytes = ledger.read(index)?;
        let rec = record::decode(&bytes).with_context(|| format!("decode record {index}"))?;
        let created = match &rec.event {
            Event::Submitted {
                teller, submission, ..
            } => {
                let r = Request::open(index, &rec).expect("a submitted record");
                cache.insert(rec.request.clone(), r);
                Some((
                    teller.clone(),
                    submission.serial.clone(),
                    record::submission_fingerprint(submission),
                ))
            }
            e => {
                if !cache.contains_key(&rec.request) {
                    let indexes = projection
                        .request(&rec.request)?
                        .with_context(|| {
                            format!("record {index} names unknown request {}", rec.request)
                        })?
                        .1;
                    let r = load::fold(ledger, &rec.request, &indexes)?.request;
                    cache.insert(rec.request.clone(), r);
                }
                let r = cache.get_mut(&rec.request).expect("inserted above");
                r.apply(index, rec.at, e)
                    .with_context(|| format!("replay record {index}"))?;
                None
            }
        };
        let r = &cache[&rec.request];
        let decided_by = match &rec.event {
            Event::Decided { supervisor, .. } => Some(supervisor.clone()),
            _ => None,
        };
        updates.push(RowUpdate {
            index,
            request: rec.request.clone(),
            state: r.state,
            created,
            decided_by,
            summary: Summary::of(r),
        });
        if updates.len() >= REPLAY_BATCH {
            projection.apply(&updates, index + 1)?;
            updates.clear();
        }
    }
    if !updates.is_empty() {
        projection.apply(&updates, to)?;
    }
    Ok(())
}

/// Signs a checkpoint every interval while records arrive; stops with the engine (when the
/// command channel closes).
async fn sign_checkpoints(
    checkpointer: Arc<Checkpointer>,
    ledger: Arc<Ledger>,
    interval_ms: u64,
    alive: mpsc::WeakSender<super::core::Command>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        let signed = checkpointer.latest().map_or(0, |s| s.checkpoint.size);
        if ledger.tree_size() <= signed {
            continue;
        }
        let c = checkpointer.clone();
        match tokio::task::spawn_blocking(move || c.sign_now()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "checkpoint not signed"),
            Err(e) => tracing::error!(error = %e, "checkpoint signer panicked"),
        }
    }
}

/// Rebuilds the supervisors' counts for today from today's records: the first is found by
/// binary search on record times, so this reads O(log n) records plus today's.
fn count_today(
    ledger: &Ledger,
    core: &mut Core,
    now: crate::domain::Timestamp,
) -> anyhow::Result<()> {
    let start = now.0.div_euclid(super::status::DAY_MS) * super::status::DAY_MS;
    let at = |i: u64| -> anyhow::Result<i64> { Ok(record::decode(&ledger.read(i)?)?.at.0) };
    let (mut lo, mut hi) = (0, ledger.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at(mid)? < start {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for i in lo..ledger.len() {
        let rec = record::decode(&ledger.read(i)?)?;
        let t = rec.at;
        core.day.count(&rec, t);
    }
    Ok(())
}
