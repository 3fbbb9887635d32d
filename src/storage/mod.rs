//! The storage seam: what the engine needs of the ledger, the image store and the audit
//! projection, named by what it does (append a batch durably, read a record, put an image),
//! never by how. A backend implements the traits here; the composition root opens one with
//! `open` and hands it to the engine, which sees nothing else. `embedded` (segment files, the
//! image log and sled on one disk) is the default backend; `postgres` keeps everything in a
//! PostgreSQL database that several nodes share, one of them leading.
//!
//! Every method here may block (a disk read, a fsync, a database round trip): the engine calls
//! them from its own thread, and async callers go through `spawn_blocking`.

#[cfg(test)]
pub(crate) mod conformance;
pub mod embedded;
pub mod postgres;
mod rows;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crate::domain::{FoldError, ImageHash, PrincipalId, RequestId, State, TellerSerial};
use crate::ledger::merkle::{Hash, ProofError};
use crate::ledger::record::RecordError;

pub(crate) use rows::state_from;
pub use rows::{RowUpdate, SearchKey, SearchPage, SearchQuery, Summary, state_name};

/// A backend's own error, kept whole as the cause of a `StorageError`.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A storage operation failed. The backend's error is kept as the source, so logs and callers
/// see the whole chain; the variants say what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The backend cannot do it now (disk full, I/O error, writer stopped): worth retrying
    /// once the operator has fixed the cause.
    #[error("{action}: {source}")]
    Unavailable {
        action: &'static str,
        #[source]
        source: Cause,
    },
    /// Stored data is damaged or disagrees with itself: an operator must look.
    #[error("{action}: {source}")]
    Damaged {
        action: &'static str,
        #[source]
        source: Cause,
    },
    /// The ledger holds fewer records.
    #[error("record {0} is not in the ledger")]
    NoSuchRecord(u64),
    #[error("image {0} is not stored")]
    ImageNotFound(ImageHash),
    #[error("image {0} is damaged: its content no longer matches its hash")]
    ImageDamaged(ImageHash),
    /// A stored record does not decode.
    #[error("decode ledger record {index}: {source}")]
    Record {
        index: u64,
        #[source]
        source: RecordError,
    },
    /// A request's records do not fold into a request.
    #[error("fold the records of request {request}: {source}")]
    Fold {
        request: RequestId,
        #[source]
        source: FoldError,
    },
    /// The projection names something the ledger does not hold (or the reverse).
    #[error("{0}")]
    Inconsistent(String),
    /// Another node took the leader's lease (a higher term), or this node never held it: it
    /// may not write. (`ours` is 0 for a node that does not lead.)
    #[error("this node does not lead (its term {ours}, the lease's {current}): it may not write")]
    Fenced { ours: u64, current: u64 },
    /// The database's schema is newer than this build knows: upgrade the node first.
    #[error(
        "the database schema is version {found}; this build knows versions up to {known}: \
         another node was upgraded first, so run a Countersign release that knows version \
         {found} here too (never an older one)"
    )]
    SchemaNewer { found: i64, known: i64 },
    /// Blocking storage work run off the async runtime panicked or was cancelled.
    #[error("run blocking storage work: {0}")]
    Join(#[source] tokio::task::JoinError),
}

impl StorageError {
    /// A backend error for an operation that may succeed later.
    pub fn unavailable(
        action: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageError::Unavailable {
            action,
            source: Box::new(source),
        }
    }

    /// A backend error that means stored data is damaged.
    pub fn damaged(
        action: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageError::Damaged {
            action,
            source: Box::new(source),
        }
    }
}

/// What the ledger's writer has made durable: a record count, or the error that stopped it
/// with the count durable before it. After an error nothing is written until a probe succeeds.
#[derive(Clone, Debug)]
pub enum DurableState {
    Count(u64),
    Failed {
        count: u64,
        error: Arc<StorageError>,
    },
}

/// Follows the durable record count.
pub type Durable = tokio::sync::watch::Receiver<DurableState>;

/// The durable ledger and the Merkle tree over it, as readers see them. Only records that are
/// durable are visible, so a reader never sees one that a crash could take back.
pub trait LedgerRead: Send + Sync {
    /// How many records are durable.
    fn len(&self) -> u64;
    /// Whether no record is durable yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The stored bytes of record `index`.
    fn read(&self, index: u64) -> Result<Vec<u8>, StorageError>;
    /// The stored bytes of several records, in the order asked: one round trip where the
    /// backend has them (recovery and a request's history read many).
    fn read_many(&self, indexes: &[u64]) -> Result<Vec<Vec<u8>>, StorageError> {
        indexes.iter().map(|&i| self.read(i)).collect()
    }
    /// How many records the Merkle tree covers (every durable record).
    fn tree_size(&self) -> u64;
    /// The engine records (about no request: starts, stops, resumed writes, reloads) at
    /// indexes `from..` among the durable ones, with their bytes; and where the next look
    /// starts. Backends find them without reading the requests' records.
    fn engine_records_from(&self, from: u64) -> Result<EngineRecords, StorageError>;
    /// The tree size and root hash, read together.
    fn head(&self) -> (u64, Hash);
    /// The root of the tree of the first `size` records.
    fn root_at(&self, size: u64) -> Result<Hash, ProofError>;
    /// The RFC 6962 inclusion proof of record `index` in the tree of `size` records.
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError>;
    /// The RFC 6962 consistency proof between trees of `from` and `to` records.
    fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError>;
    /// Makes every later write fail as on a full disk (`true`) or succeed again: a hook for
    /// tests of storage faults.
    fn inject_write_faults(&self, on: bool);
}

/// Where the next look starts, and the engine records found (index, bytes).
pub type EngineRecords = (u64, Vec<(u64, Vec<u8>)>);

impl dyn LedgerRead + '_ {
    /// Reads and decodes record `index`, which must be a request's.
    pub fn record(&self, index: u64) -> Result<crate::domain::Record, StorageError> {
        let bytes = self.read(index)?;
        crate::ledger::record::decode(&bytes)
            .map_err(|source| StorageError::Record { index, source })
    }

    /// Reads and decodes record `index`, a request's or the engine's.
    pub fn entry(&self, index: u64) -> Result<crate::domain::Entry, StorageError> {
        let bytes = self.read(index)?;
        crate::ledger::record::decode_entry(&bytes)
            .map_err(|source| StorageError::Record { index, source })
    }

    /// Reads and decodes the records in `range`, `RANGE_CHUNK` at a time, handing each to `f`.
    pub fn each_entry(
        &self,
        range: std::ops::Range<u64>,
        mut f: impl FnMut(u64, crate::domain::Entry) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut from = range.start;
        while from < range.end {
            let to = range.end.min(from + RANGE_CHUNK);
            let indexes: Vec<u64> = (from..to).collect();
            for (index, bytes) in indexes.iter().zip(self.read_many(&indexes)?) {
                let rec = crate::ledger::record::decode_entry(&bytes).map_err(|source| {
                    StorageError::Record {
                        index: *index,
                        source,
                    }
                })?;
                f(*index, rec)?;
            }
            from = to;
        }
        Ok(())
    }
}

/// Records `each_record` reads at once.
const RANGE_CHUNK: u64 = 4096;

/// The one way to add records: held by the engine's single writer. Indexes are handed out
/// here in order; `flush` hands what was appended to the backend, which makes it durable and
/// then moves the `Durable` count.
pub trait LedgerAppend: Send {
    /// The index the next appended record gets (also: how many records there will be).
    fn next_index(&self) -> u64;
    /// Queues a record and returns its index; it is durable once the durable count passes it.
    fn append(&mut self, payload: Vec<u8>) -> u64;
    /// Hands everything appended so far to be made durable.
    fn flush(&mut self) -> Result<(), StorageError>;
    /// After a failure: forgets every record past `durable` (none was written).
    fn rewind(&mut self, durable: u64);
    /// After a failure: asks whether the backend can write again; on success the next index
    /// is `durable`. Blocking.
    fn probe(&mut self, durable: u64) -> Result<(), StorageError>;
}

/// Where signed checkpoints are kept, in the order they were signed.
pub trait CheckpointLog: Send + Sync {
    /// Every signed note stored, oldest first. Read once, at start, before any `append`: a
    /// backend may repair what a crash left (a torn last note) while reading.
    fn notes(&self) -> Result<Vec<String>, StorageError>;
    /// Stores note number `seq` durably before returning.
    fn append(&self, seq: u64, note: &str) -> Result<(), StorageError>;
    /// The notes from number `seq` on, oldest first: how a node following another's ledger
    /// reads what the leader signed since. A backend with followers reads only those.
    fn notes_from(&self, seq: u64) -> Result<Vec<String>, StorageError> {
        Ok(self.notes()?.into_iter().skip(seq as usize).collect())
    }
    /// Every witness cosignature stored: (checkpoint number, its signature line without the
    /// newline), in the order stored. Like `notes`, read at start; a backend may repair a torn
    /// last entry while reading.
    fn cosignatures(&self) -> Result<Vec<(u64, String)>, StorageError>;
    /// The cosignatures stored after the first `skip`, in the order stored: what a follower
    /// reads of the leader's since its last read.
    fn cosignatures_from(&self, skip: u64) -> Result<Vec<(u64, String)>, StorageError> {
        Ok(self
            .cosignatures()?
            .into_iter()
            .skip(skip as usize)
            .collect())
    }
    /// Stores a witness's cosignature line for checkpoint `seq` durably before returning.
    fn add_cosignature(&self, seq: u64, line: &str) -> Result<(), StorageError>;
}

/// A boxed future, for the trait methods that wait (an image's fsync).
/// The request a teller's serial submitted, with the submission's fingerprint.
pub type Submitted = (RequestId, [u8; 32]);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Images, content-addressed by SHA-256. An image is durable before `put` returns, so a
/// record naming it can never name something a crash took back.
pub trait ImageStore: Send + Sync {
    /// Stores `bytes` durably and returns their hash (at once when already stored).
    fn put(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<ImageHash, StorageError>>;
    /// Reads an image back, checked against its hash. Blocking.
    fn get(&self, hash: &ImageHash) -> Result<Vec<u8>, StorageError>;
    /// Whether an image is stored.
    fn has(&self, hash: &ImageHash) -> bool;
    /// Which of `hashes` are not stored (a failed lookup counts as missing). A database
    /// answers in one round trip per few thousand, not one per image: a node taking over
    /// checks the images of every undecided request. Blocking.
    fn missing(&self, hashes: &[ImageHash]) -> Vec<ImageHash> {
        hashes.iter().filter(|h| !self.has(h)).copied().collect()
    }
    /// Whether a failed put is this store's own (a local disk that filled up), which the
    /// engine waits out by probing: `false` for a database, whose failures show in the ledger's
    /// writes too and are handled there (a node that cannot write for a lease steps down).
    fn probed_after_failure(&self) -> bool {
        false
    }
    /// Whether the store can write now (after a failed put, say a full disk): a small write
    /// made durable and taken back. Blocking.
    fn probe(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Makes every later write fail as on a full disk (`true`) or succeed again: a hook for
    /// tests of storage faults.
    fn inject_write_faults(&self, _on: bool) {}
}

/// The audit projection: rows derived from the ledger, never the sole copy of a fact. Each
/// `apply` carries the count of ledger records it reflects, stored with the rows, so after a
/// crash exactly the records it has not seen are replayed.
pub trait Projection: Send + Sync {
    /// How many ledger records the projection reflects.
    fn applied(&self) -> Result<u64, StorageError>;
    /// Applies the updates of consecutive records, ending at `applied` records, atomically.
    fn apply(&self, updates: &[RowUpdate], applied: u64) -> Result<(), StorageError>;
    /// A request's state and the ledger indexes of its records, oldest first.
    fn request(&self, id: &RequestId) -> Result<Option<(State, Vec<u64>)>, StorageError>;
    /// The request a (teller, serial) submitted, with the submission's fingerprint.
    fn idempotency(
        &self,
        teller: &PrincipalId,
        serial: &TellerSerial,
    ) -> Result<Option<(RequestId, [u8; 32])>, StorageError>;
    /// `idempotency` for a caller on the async runtime: on a database, the lookups of
    /// submissions arriving together share one round trip; a local store just looks.
    fn idempotency_soon(
        &self,
        teller: PrincipalId,
        serial: TellerSerial,
    ) -> BoxFuture<'_, Result<Option<Submitted>, StorageError>>;
    /// What audit search shows of a request.
    fn summary(&self, id: &RequestId) -> Result<Option<Summary>, StorageError>;
    /// One page of an audit search, newest submission first.
    fn search(&self, q: &SearchQuery) -> Result<SearchPage, StorageError>;
    /// The summaries of requests submitted in [from, until), at most `max`; `Err` with the
    /// count reached when there are more.
    fn summaries_between(
        &self,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
        max: usize,
    ) -> Result<Result<Vec<Summary>, usize>, StorageError>;
    /// Every request not in a final state.
    fn active(&self) -> Result<Vec<RequestId>, StorageError>;
    /// Makes the projection's own state durable (at shutdown; anything lost otherwise is
    /// replayed from the ledger).
    fn flush(&self) -> Result<(), StorageError>;
    /// How many row updates this backend wants per `apply` under load: the engine applies
    /// sooner only on its tick.
    fn batch_size(&self) -> usize;
    /// Whether a read is a round trip worth keeping off the engine's thread (a database), not
    /// a local lookup that costs less than handing it to another thread.
    fn remote(&self) -> bool;
    /// Whether a failed `apply` is waited out by `reopen` (a local store on a disk that filled
    /// up); `false`: it stops the engine, as for a database, where a node that cannot write
    /// steps down and leads again from the ledger.
    fn reopens_after_failure(&self) -> bool {
        false
    }
    /// After a failed `apply`, makes the projection writable again (sled keeps the error it
    /// hit until it is closed and opened again); the caller then applies again what failed.
    /// Blocking.
    fn reopen(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Makes every later write fail as on a full disk (`true`) or succeed again: a hook for
    /// tests of storage faults.
    fn inject_write_faults(&self, _on: bool) {}
}

/// An opened backend: everything the engine stores, handed to it by the composition root.
pub struct Storage {
    pub ledger: Arc<dyn LedgerRead>,
    /// Taken by the engine's single writer.
    pub appender: Box<dyn LedgerAppend>,
    /// Follows the appender's durable count.
    pub durable: Durable,
    pub checkpoints: Box<dyn CheckpointLog>,
    pub images: Arc<dyn ImageStore>,
    pub projection: Arc<dyn Projection>,
}

/// What a node that does not lead reads: everything but the appender. Writes through these
/// (a projection batch, a checkpoint) are refused.
pub struct StorageReads {
    pub ledger: Arc<dyn LedgerRead>,
    pub checkpoints: Box<dyn CheckpointLog>,
    pub images: Arc<dyn ImageStore>,
    pub projection: Arc<dyn Projection>,
}

/// How to open storage: the backend and its settings.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    /// Everything under one local data directory.
    Embedded(EmbeddedSettings),
    /// Everything in PostgreSQL, shared by the nodes of a cluster.
    Postgres(PostgresSettings),
}

/// Where the embedded backend keeps its files and the sizes it works with.
#[derive(Clone, Debug)]
pub struct EmbeddedSettings {
    /// The data directory: `ledger/`, `images/` and `projection/` below it.
    pub data_dir: PathBuf,
    /// Size at which the ledger starts a new segment file.
    pub segment_bytes_max: u64,
    /// Images queued for the image writer at once; more uploads wait their turn.
    pub image_writes_max: usize,
    /// Most bytes sled keeps in its page cache.
    pub projection_cache_bytes: u64,
}

/// How to reach PostgreSQL and how this node holds the leader's lease there.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    /// libpq connection URL; several hosts and `target_session_attrs=read-write` find the
    /// primary after a database failover.
    pub url: String,
    /// Most connections this node opens.
    pub pool_size: usize,
    /// PEM certificates of the CAs that sign the database's certificate: TLS to the database
    /// when set (the URL's `sslmode` then says whether it is required).
    pub tls_ca_pem: Option<String>,
    /// This node's name in the lease: unique in the cluster.
    pub node_id: String,
    /// The address clients reach this node at, told to callers of a standby.
    pub advertise: String,
    /// How long a lease lasts unless renewed; a lapsed one may be taken by another node.
    pub lease_ms: u64,
    /// Images queued for the image writer at once; more uploads wait their turn.
    pub image_writes_max: usize,
}

/// Opens the configured backend. Called by the composition root (`server`), never by the
/// engine.
pub fn open(
    config: &StorageConfig,
    metrics: &crate::metrics::Metrics,
) -> Result<Storage, StorageError> {
    match config {
        StorageConfig::Embedded(settings) => embedded::open(settings, metrics.ledger.clone()),
        StorageConfig::Postgres(settings) => postgres::open(settings, metrics.ledger.clone()),
    }
}
