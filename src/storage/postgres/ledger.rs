//! The ledger in PostgreSQL: `PgLedger` answers reads (records from the `ledger` table, checked
//! against their leaf hash; roots and proofs from the Merkle tree kept in memory, as the
//! embedded backend does), and `PgAppender` hands batches to a group-commit writer task that
//! inserts each round of batches in one statement under the lease's term.
//!
//! A write whose answer was lost (the connection dropped during commit) may have committed.
//! Nothing was acknowledged, but the table may then hold records this node does not know: the
//! probe compares the table's count with the durable count and refuses to resume when they
//! differ, so the node recovers from the ledger instead of writing over its own records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch};

use super::{Db, no_connection, unavailable};
use crate::ledger::merkle::{self, Hash, NodeStore, ProofError, Tree};
use crate::metrics::LedgerMetrics;
use crate::storage::{Durable, DurableState, LedgerAppend, LedgerRead, StorageError};

/// The durable records as this node knows them, and the tree over them.
pub(crate) struct PgLedger {
    db: Arc<Db>,
    tree: RwLock<Tree>,
    /// Set by tests to make every write fail as on an unreachable database.
    faults: AtomicBool,
    /// This node writes the ledger: only its writer adds to the tree, no longer the follower.
    leading: AtomicBool,
}

/// Reads every leaf hash in index order to rebuild the tree: the ledger as a reader sees it,
/// before this node writes (if it ever does).
pub(super) fn open_reader(db: Arc<Db>) -> Result<Arc<PgLedger>, StorageError> {
    let ledger = Arc::new(PgLedger {
        db: db.clone(),
        tree: RwLock::new(Tree::new()),
        faults: AtomicBool::new(false),
        leading: AtomicBool::new(false),
    });
    let l = ledger.clone();
    db.run(move |pool| async move { catch_up(&pool, &l, false).await })?;
    Ok(ledger)
}

/// Leaf hashes read per round trip while catching up.
const CATCH_UP_PAGE: i64 = 10_000;

/// Adds to the tree every record the table holds past it. A follower stops adding once this
/// node leads (`leading`), when only the writer adds; `lead` catches up one last time itself.
pub(super) async fn catch_up(
    pool: &Pool,
    ledger: &PgLedger,
    leading: bool,
) -> Result<u64, StorageError> {
    loop {
        let from = ledger.len();
        let client = pool.get().await.map_err(no_connection)?;
        let rows = client
            .query(
                "SELECT idx, leaf_hash FROM ledger WHERE idx >= $1 ORDER BY idx LIMIT $2",
                &[&(from as i64), &CATCH_UP_PAGE],
            )
            .await
            .map_err(unavailable("read the ledger's leaf hashes"))?;
        drop(client);
        let mut tree = ledger.tree.write().unwrap_or_else(|e| e.into_inner());
        if ledger.leading.load(Ordering::Acquire) != leading || tree.size() != from {
            // This node began leading, or another catch-up got there first.
            return Ok(tree.size());
        }
        for row in &rows {
            let idx: i64 = row.get(0);
            let leaf: &[u8] = row.get(1);
            let leaf: Hash = leaf
                .try_into()
                .map_err(|_| damaged(idx, "leaf hash is not 32 bytes"))?;
            if idx != tree.size() as i64 {
                return Err(damaged(idx, "the ledger has a gap before this index"));
            }
            push(&mut tree, leaf);
        }
        if (rows.len() as i64) < CATCH_UP_PAGE {
            return Ok(tree.size());
        }
    }
}

/// How often a follower reads the table when no notification came (one may be lost while the
/// listening connection reconnects).
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Follows the ledger as the leader writes it: on each notification the leader's insert sends
/// (`countersign_ledger`), and every `FOLLOW_EVERY` regardless. Ends when this node leads or
/// the ledger is dropped.
pub(super) async fn follow(
    pool: Pool,
    ledger: std::sync::Weak<PgLedger>,
    notified: Arc<tokio::sync::Notify>,
) {
    loop {
        tokio::select! {
            _ = notified.notified() => {}
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        if ledger.leading.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = catch_up(&pool, &ledger, false).await {
            tracing::warn!(error = %e, "could not follow the ledger");
        }
    }
}

/// Makes this node the ledger's writer under `term`: marks it leading (the follower stops),
/// catches up with everything the previous leader committed (its term is fenced now, so the
/// table no longer grows), and starts the group-commit writer at the end of it.
pub(super) async fn start_writer(
    pool: &Pool,
    ledger: &Arc<PgLedger>,
    term: u64,
    metrics: LedgerMetrics,
) -> Result<(PgAppender, Durable), StorageError> {
    ledger.leading.store(true, Ordering::Release);
    let count = catch_up(pool, ledger, true).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (durable_tx, durable_rx) = watch::channel(DurableState::Count(count));
    metrics.durable(count);
    let writer = Writer {
        pool: pool.clone(),
        term,
        ledger: Arc::downgrade(ledger),
        metrics,
    };
    tokio::spawn(writer.run(rx, durable_tx));
    let appender = PgAppender {
        tx,
        next: count,
        buf: Vec::new(),
    };
    Ok((appender, durable_rx))
}

fn damaged(idx: i64, what: &'static str) -> StorageError {
    StorageError::damaged(
        "read the ledger",
        std::io::Error::other(format!("record {idx}: {what}")),
    )
}

fn push(tree: &mut Tree, leaf: Hash) {
    // The tree refuses only a 2^64th leaf; indexes are i64 in the table, so none gets there.
    #[allow(clippy::expect_used)]
    tree.push(leaf).expect("a ledger cannot hold 2^64 records");
}

impl PgLedger {
    /// Back to following, after this node lost the lease: its writer is gone with its engine.
    pub(super) fn stop_leading(&self) {
        self.leading.store(false, Ordering::Release);
    }

    fn tree(&self) -> std::sync::RwLockReadGuard<'_, Tree> {
        self.tree.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine records (records about no request) at indexes `from..` up to what this node
    /// has followed, each checked against its leaf; returns where the next look starts. The
    /// database picks them out by their first bytes (a request's record starts
    /// `{"v":1,"request"`, an engine record `{"v":1,"at_ms"`), so a standby learning of the
    /// leader's reloads reads none of the requests' records.
    fn engine_records_since(&self, from: u64) -> Result<super::EngineRecords, StorageError> {
        let to = self.tree().size();
        if from >= to {
            return Ok((from.max(to), Vec::new()));
        }
        let (lo, hi) = (from as i64, to as i64);
        let rows = self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            client
                .query(
                    "SELECT idx, record FROM ledger WHERE idx >= $1 AND idx < $2 \
                     AND substring(record from 1 for 14) = '{\"v\":1,\"at_ms\"'::bytea \
                     ORDER BY idx",
                    &[&lo, &hi],
                )
                .await
                .map_err(unavailable("read engine records"))
        })?;
        let tree = self.tree();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (idx, record): (i64, Vec<u8>) = (row.get(0), row.get(1));
            if tree.store().get(0, idx as u64) != Some(merkle::leaf_hash(&record)) {
                return Err(damaged(idx, "the record no longer matches its leaf hash"));
            }
            out.push((idx as u64, record));
        }
        Ok((to, out))
    }
}

impl LedgerRead for PgLedger {
    fn len(&self) -> u64 {
        self.tree().size()
    }

    fn engine_records_from(&self, from: u64) -> Result<super::EngineRecords, StorageError> {
        self.engine_records_since(from)
    }

    fn read(&self, index: u64) -> Result<Vec<u8>, StorageError> {
        let mut one = self.read_many(&[index])?;
        one.pop().ok_or(StorageError::NoSuchRecord(index))
    }

    fn read_many(&self, indexes: &[u64]) -> Result<Vec<Vec<u8>>, StorageError> {
        let leaves: Vec<Hash> = {
            let tree = self.tree();
            indexes
                .iter()
                .map(|&i| {
                    (i < tree.size())
                        .then(|| tree.store().get(0, i))
                        .flatten()
                        .ok_or(StorageError::NoSuchRecord(i))
                })
                .collect::<Result<_, _>>()?
        };
        let wanted: Vec<i64> = indexes.iter().map(|&i| i as i64).collect();
        let rows = self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            client
                .query(
                    "SELECT idx, record FROM ledger WHERE idx = ANY($1)",
                    &[&wanted],
                )
                .await
                .map_err(unavailable("read ledger records"))
        })?;
        let by_index: std::collections::HashMap<i64, Vec<u8>> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        indexes
            .iter()
            .zip(leaves)
            .map(|(&i, leaf)| {
                let record = by_index
                    .get(&(i as i64))
                    .cloned()
                    .ok_or_else(|| damaged(i as i64, "a durable record is missing"))?;
                if merkle::leaf_hash(&record) != leaf {
                    return Err(damaged(
                        i as i64,
                        "the record no longer matches its leaf hash",
                    ));
                }
                Ok(record)
            })
            .collect()
    }

    fn tree_size(&self) -> u64 {
        self.tree().size()
    }

    fn head(&self) -> (u64, Hash) {
        let t = self.tree();
        (t.size(), t.root())
    }

    fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.tree().root_at(size)
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.tree().inclusion_proof(index, size)
    }

    fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        self.tree().consistency_proof(from, to)
    }

    fn inject_write_faults(&self, on: bool) {
        self.faults.store(on, Ordering::Relaxed);
    }
}

/// What the writer task is asked to do.
enum Job {
    /// Records with their indexes, and when they were handed over (for the append latency).
    Batch(Vec<(u64, Vec<u8>)>, Instant),
    /// Check that this node may write again; on success the writer takes batches again.
    Probe(std::sync::mpsc::SyncSender<Result<(), StorageError>>),
}

/// The only way to add records; indexes are given out here, in order.
pub(crate) struct PgAppender {
    tx: mpsc::UnboundedSender<Job>,
    next: u64,
    buf: Vec<(u64, Vec<u8>)>,
}

fn writer_stopped() -> StorageError {
    StorageError::unavailable(
        "hand records to the ledger writer",
        std::io::Error::other("the writer task has stopped"),
    )
}

impl LedgerAppend for PgAppender {
    fn next_index(&self) -> u64 {
        self.next
    }

    fn append(&mut self, payload: Vec<u8>) -> u64 {
        let index = self.next;
        self.next += 1;
        self.buf.push((index, payload));
        index
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Elapsed time for the append-latency metric, not a domain time.
        #[allow(clippy::disallowed_methods)]
        let handed_over = Instant::now();
        self.tx
            .send(Job::Batch(std::mem::take(&mut self.buf), handed_over))
            .map_err(|_| writer_stopped())
    }

    fn rewind(&mut self, durable: u64) {
        self.buf.clear();
        self.next = durable;
    }

    fn probe(&mut self, durable: u64) -> Result<(), StorageError> {
        self.buf.clear();
        // A std channel: the engine may call this from inside its own runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.tx.send(Job::Probe(tx)).map_err(|_| writer_stopped())?;
        rx.recv().map_err(|_| writer_stopped())??;
        self.next = durable;
        Ok(())
    }
}

/// The group-commit writer: takes every batch queued since its last write and inserts them in
/// one statement, which commits only while this node's term is the lease's.
struct Writer {
    pool: Pool,
    term: u64,
    /// Weak: the writer must not keep the ledger (and with it the runtime) alive.
    ledger: std::sync::Weak<PgLedger>,
    metrics: LedgerMetrics,
}

/// Inserts the records when, and only when, the lease still has this node's term, and tells
/// followers (delivered at commit). The lease row is locked FOR SHARE, so a takeover (which
/// updates it) waits for this insert to commit, and an insert after a takeover finds the new
/// term and inserts nothing.
const INSERT: &str = "WITH lease AS ( \
        SELECT 1 FROM countersign_lease WHERE id = 1 AND term = $1 FOR SHARE), \
    inserted AS ( \
        INSERT INTO ledger (idx, term, leaf_hash, record) \
        SELECT r.idx, $1, r.leaf_hash, r.record \
        FROM lease, unnest($2::bigint[], $3::bytea[], $4::bytea[]) AS r(idx, leaf_hash, record) \
        RETURNING idx) \
    SELECT count(*), pg_notify('countersign_ledger', '') FROM inserted";

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Job>, durable: watch::Sender<DurableState>) {
        // Whether the last write failed and no probe has succeeded since.
        let mut failed = false;
        while let Some(first) = rx.recv().await {
            let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut queued = Vec::new();
            let mut probes = Vec::new();
            let mut job = Some(first);
            while let Some(j) = job.take().or_else(|| rx.try_recv().ok()) {
                match j {
                    // Batches sent before the engine saw the failure were never acknowledged;
                    // they are dropped with it.
                    Job::Batch(b, at) if !failed => {
                        records.extend(b);
                        queued.push(at);
                    }
                    Job::Batch(..) => {}
                    Job::Probe(reply) => probes.push(reply),
                }
            }
            let Some(ledger) = self.ledger.upgrade() else {
                return;
            };
            if !records.is_empty() {
                match self.write(&ledger, &records).await {
                    Ok(()) => {
                        let count = {
                            let mut tree = ledger.tree.write().unwrap_or_else(|e| e.into_inner());
                            for (_, payload) in &records {
                                push(&mut tree, merkle::leaf_hash(payload));
                            }
                            tree.size()
                        };
                        self.metrics.durable(count);
                        // Elapsed time for the append-latency metric.
                        #[allow(clippy::disallowed_methods)]
                        let now = Instant::now();
                        for at in &queued {
                            self.metrics.appended(now.duration_since(*at));
                        }
                        durable.send_replace(DurableState::Count(count));
                    }
                    Err(e) => {
                        failed = true;
                        let count = ledger.len();
                        tracing::error!(error = %e, durable = count, "ledger write failed; refusing writes until the database takes them again");
                        durable.send_replace(DurableState::Failed {
                            count,
                            error: Arc::new(e),
                        });
                    }
                }
            }
            for reply in probes {
                let r = self.probe(&ledger).await;
                if r.is_ok() && failed {
                    failed = false;
                    let count = ledger.len();
                    tracing::info!(durable = count, "ledger writes again");
                    durable.send_replace(DurableState::Count(count));
                }
                let _ = reply.send(r);
            }
        }
    }

    async fn write(
        &self,
        ledger: &PgLedger,
        records: &[(u64, Vec<u8>)],
    ) -> Result<(), StorageError> {
        if ledger.faults.load(Ordering::Relaxed) {
            return Err(injected());
        }
        // Elapsed time for the write metric.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        let idx: Vec<i64> = records.iter().map(|(i, _)| *i as i64).collect();
        let leaves: Vec<Vec<u8>> = records
            .iter()
            .map(|(_, p)| merkle::leaf_hash(p).to_vec())
            .collect();
        let payloads: Vec<&[u8]> = records.iter().map(|(_, p)| p.as_slice()).collect();
        let client = self.pool.get().await.map_err(no_connection)?;
        let term = self.term as i64;
        let insert = client
            .prepare_cached(INSERT)
            .await
            .map_err(unavailable("write ledger batch"))?;
        let inserted = client
            .query_one(&insert, &[&term, &idx, &leaves, &payloads])
            .await
            .map_err(unavailable("write ledger batch"))?
            .get::<_, i64>(0) as u64;
        if inserted == 0 {
            return Err(super::lease::fenced(&client, self.term).await);
        }
        if inserted != records.len() as u64 {
            return Err(StorageError::Inconsistent(format!(
                "inserted {inserted} of {} ledger records",
                records.len()
            )));
        }
        self.metrics.synced(records.len(), started.elapsed());
        Ok(())
    }

    /// Whether this node may write again: the database answers, the lease still has this
    /// node's term, and the table holds exactly the records this node counts as durable.
    async fn probe(&self, ledger: &PgLedger) -> Result<(), StorageError> {
        if ledger.faults.load(Ordering::Relaxed) {
            return Err(injected());
        }
        let client = self.pool.get().await.map_err(no_connection)?;
        let row = client
            .query_one(
                "SELECT (SELECT term FROM countersign_lease WHERE id = 1), \
                        (SELECT count(*) FROM ledger)",
                &[],
            )
            .await
            .map_err(unavailable("probe the ledger"))?;
        let (current, count): (i64, i64) = (row.get(0), row.get(1));
        if current as u64 != self.term {
            return Err(StorageError::Fenced {
                ours: self.term,
                current: current as u64,
            });
        }
        if count as u64 != ledger.len() {
            return Err(StorageError::Inconsistent(format!(
                "the database holds {count} ledger records and this node {}: a write whose answer \
                 was lost committed; restart the node to recover from the ledger",
                ledger.len()
            )));
        }
        Ok(())
    }
}

fn injected() -> StorageError {
    StorageError::unavailable(
        "write ledger batch",
        std::io::Error::other("injected write fault"),
    )
}
