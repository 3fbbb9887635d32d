//! `countersign ledger copy`: moves a whole store from one backend to another, as a bank does
//! when a single-node pilot (the embedded data directory) becomes a cluster (PostgreSQL), or
//! goes back. The source and destination are named by the configuration files their nodes run
//! with; the destination must be empty.
//!
//! What is copied is what holds facts: every ledger record (the exact bytes, in order, so the
//! Merkle tree and every signed checkpoint stay valid), every signed checkpoint, and every image
//! a record names (read back checked against its hash, and stored before the record that names
//! it, as the engine does). The audit projection is derived, and the first node to start on the
//! destination rebuilds it from the ledger. The copy is checked as it goes: each batch of
//! records is read back from the destination and compared byte for byte, and at every signed
//! checkpoint's size both trees must have the checkpoint's root.
//!
//! Both stores are opened as their servers open them, so nothing else writes while the copy
//! runs: a data directory's lock is refused while a server holds it, and on a database the copy
//! holds the leader's lease (refusing to start while another node leads) and lets it go after.

use std::collections::BTreeSet;

use anyhow::{Context, bail, ensure};

use crate::domain::ImageHash;
use crate::ledger::checkpoint;
use crate::metrics::Metrics;
use crate::storage::{self, DurableState, Storage, StorageConfig, postgres};

/// Records copied and checked per batch.
const BATCH_RECORDS: u64 = 1024;

/// What a copy moved, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub records: u64,
    pub checkpoints: usize,
    /// Witness cosignatures copied with them.
    pub cosignatures: usize,
    pub images: usize,
    /// The Merkle root of the whole ledger, the same on both sides.
    pub root: [u8; 32],
}

/// A store opened for the copy, and how to let it go.
struct Opened {
    storage: Storage,
    /// The database lease holder, on the postgres backend, released when the copy ends.
    follower: Option<postgres::Follower>,
}

impl Opened {
    fn open(config: &StorageConfig, metrics: &Metrics, role: &str) -> anyhow::Result<Opened> {
        match config {
            StorageConfig::Embedded(s) => {
                let storage = storage::open(config, metrics).with_context(|| {
                    format!(
                        "open the {role} data directory {} (is a server running on it?)",
                        s.data_dir.display()
                    )
                })?;
                Ok(Opened {
                    storage,
                    follower: None,
                })
            }
            StorageConfig::Postgres(s) => {
                let follower = postgres::follow(s)
                    .with_context(|| format!("connect to the {role} database"))?;
                let leader = follower
                    .leader()
                    .with_context(|| format!("read the {role} database's lease"))?;
                // Even a lease in this configuration's own name: a node running with it would
                // be fenced mid-write. A stopped node's lease lapses within lease_ms.
                if leader.live {
                    bail!(
                        "node {} ({}) leads the {role} database: stop every node (and let a \
                         crashed node's lease lapse) before copying",
                        leader.node_id,
                        leader.advertise
                    );
                }
                let storage = follower
                    .lead_blocking(metrics.ledger.clone())
                    .with_context(|| format!("take the {role} database's lease"))?;
                Ok(Opened {
                    storage,
                    follower: Some(follower),
                })
            }
        }
    }

    fn close(self) -> anyhow::Result<()> {
        let Opened { storage, follower } = self;
        drop(storage);
        if let Some(f) = follower {
            f.release().context("let the database lease go")?;
        }
        Ok(())
    }
}

/// Copies the store `from` into the empty store `to`, checking record by record and root by
/// root. Blocking; call it from a thread that may block inside a tokio runtime (image writes
/// are awaited on it).
pub fn copy(from: &StorageConfig, to: &StorageConfig) -> anyhow::Result<Copied> {
    if let StorageConfig::Embedded(s) = from {
        // Opening a data directory creates it: a source that is not there is a mistake.
        ensure!(
            storage::embedded::ledger_dir(&s.data_dir).is_dir(),
            "the source data directory {} holds no ledger",
            s.data_dir.display()
        );
    }
    let metrics = Metrics::new();
    let source = Opened::open(from, &metrics, "source")?;
    let mut destination = Opened::open(to, &metrics, "destination")?;
    let copied = copy_opened(&source.storage, &mut destination.storage);
    let closed = source.close().and(destination.close());
    let copied = copied?;
    closed?;
    Ok(copied)
}

fn copy_opened(from: &Storage, to: &mut Storage) -> anyhow::Result<Copied> {
    let runtime = tokio::runtime::Handle::try_current()
        .context("the copy runs inside a tokio runtime (it awaits image writes)")?;
    ensure!(
        to.ledger.is_empty() && to.appender.next_index() == 0,
        "the destination already holds {} ledger records: copy only into an empty store",
        to.ledger.len()
    );
    let notes = from
        .checkpoints
        .notes()
        .context("read the source's checkpoints")?;
    ensure!(
        to.checkpoints
            .notes()
            .context("read the destination's checkpoints")?
            .is_empty(),
        "the destination already holds signed checkpoints: copy only into an empty store"
    );
    let signed: Vec<checkpoint::Checkpoint> = notes
        .iter()
        .enumerate()
        .map(|(seq, n)| {
            checkpoint::parse_unverified(n)
                .with_context(|| format!("source checkpoint {seq} is not a checkpoint"))
        })
        .collect::<anyhow::Result<_>>()?;
    let total = from.ledger.len();
    let mut images: BTreeSet<ImageHash> = BTreeSet::new();
    let mut next_checkpoint = 0;
    let mut start = 0;
    let progress = crate::verify::Progress::new("copy", Some(total));
    while start < total {
        let end = total.min(start + BATCH_RECORDS);
        let indexes: Vec<u64> = (start..end).collect();
        let records = from
            .ledger
            .read_many(&indexes)
            .with_context(|| format!("read source records {start}..{end}"))?;
        // Images first: a record never names an image its store does not hold.
        for (&index, bytes) in indexes.iter().zip(&records) {
            let rec = crate::ledger::record::decode_entry(bytes)
                .with_context(|| format!("decode source record {index}"))?;
            for image in rec.images_added() {
                if !images.insert(image.hash) || to.images.has(&image.hash) {
                    continue;
                }
                let content = from.images.get(&image.hash).with_context(|| {
                    format!("read image {} named by record {index}", image.hash)
                })?;
                let stored = runtime
                    .block_on(to.images.put(content))
                    .with_context(|| format!("store image {}", image.hash))?;
                ensure!(
                    stored == image.hash,
                    "image {} was stored as {stored}",
                    image.hash
                );
            }
        }
        for (&index, bytes) in indexes.iter().zip(&records) {
            let got = to.appender.append(bytes.clone());
            ensure!(got == index, "record {index} was appended at {got}");
        }
        to.appender
            .flush()
            .with_context(|| format!("write records {start}..{end}"))?;
        wait_durable(&runtime, &mut to.durable, end)?;
        let written = to
            .ledger
            .read_many(&indexes)
            .with_context(|| format!("read back records {start}..{end}"))?;
        if let Some(i) = (0..records.len()).find(|&i| written[i] != records[i]) {
            bail!(
                "record {} reads back differently from the copy",
                start + i as u64
            );
        }
        // Every checkpoint the records so far cover: the same root on both sides, then stored.
        while let Some(cp) = signed.get(next_checkpoint).filter(|cp| cp.size <= end) {
            let (a, b) = (from.ledger.root_at(cp.size), to.ledger.root_at(cp.size));
            ensure!(
                matches!((&a, &b), (Ok(x), Ok(y)) if *x == cp.root && *y == cp.root),
                "checkpoint {next_checkpoint} (size {}): its root differs from the source's \
                 or the copy's tree ({a:?}, {b:?})",
                cp.size
            );
            to.checkpoints
                .append(next_checkpoint as u64, &notes[next_checkpoint])
                .with_context(|| format!("store checkpoint {next_checkpoint}"))?;
            next_checkpoint += 1;
        }
        progress.at(end);
        start = end;
    }
    ensure!(
        next_checkpoint == signed.len(),
        "source checkpoint {next_checkpoint} covers {} records but the source holds {total}",
        signed.get(next_checkpoint).map_or(0, |c| c.size)
    );
    let (size, root) = to.ledger.head();
    ensure!(
        (size, root) == from.ledger.head(),
        "the copy's tree ({size} records) differs from the source's"
    );
    // The witnesses' cosignatures go with their checkpoints (each names one by number, and
    // the checkpoints are the same on both sides, so they still verify).
    let cosignatures = from
        .checkpoints
        .cosignatures()
        .context("read the source's cosignatures")?;
    to.checkpoints
        .cosignatures()
        .context("read the destination's cosignatures")?;
    for (seq, line) in &cosignatures {
        ensure!(
            (*seq as usize) < signed.len(),
            "a source cosignature names checkpoint {seq}, which does not exist"
        );
        to.checkpoints
            .add_cosignature(*seq, line)
            .with_context(|| format!("store a cosignature of checkpoint {seq}"))?;
    }
    Ok(Copied {
        records: total,
        checkpoints: signed.len(),
        cosignatures: cosignatures.len(),
        images: images.len(),
        root,
    })
}

/// Waits until the destination's writer has made `count` records durable.
fn wait_durable(
    runtime: &tokio::runtime::Handle,
    durable: &mut storage::Durable,
    count: u64,
) -> anyhow::Result<()> {
    loop {
        match &*durable.borrow_and_update() {
            DurableState::Count(n) if *n >= count => return Ok(()),
            DurableState::Count(_) => {}
            DurableState::Failed { count: n, error } => {
                bail!("the destination stopped writing at record {n}: {error}")
            }
        }
        runtime
            .block_on(durable.changed())
            .context("the destination's ledger writer stopped")?;
    }
}
