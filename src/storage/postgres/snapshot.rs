//! A read-only view of a Countersign database for the offline tools (`ledger verify`, the
//! copy between backends): one connection in one REPEATABLE READ transaction, so everything
//! read comes from one moment even while a leader writes. It never takes the lease and
//! writes nothing.

use std::future::Future;
use std::sync::Arc;

use tokio_postgres::Client;

use super::{Background, unavailable};
use crate::domain::ImageHash;
use crate::storage::StorageError;

/// One stored record as the table holds it.
pub struct StoredRecord {
    pub index: u64,
    /// The term of the leader that wrote it.
    pub term: u64,
    /// The leaf hash stored beside it (a verifier recomputes it).
    pub leaf_hash: Vec<u8>,
    pub record: Vec<u8>,
}

/// The database as of one moment.
pub struct Snapshot {
    client: Arc<Client>,
    runtime: Background,
}

impl Snapshot {
    /// Connects with `url` (TLS when `tls_ca_pem` is given) and opens the snapshot.
    pub fn open(url: &str, tls_ca_pem: Option<&str>) -> Result<Snapshot, StorageError> {
        let runtime = Background::start("postgres-snapshot", 1)?;
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StorageError::unavailable("parse the database URL", e))?;
        let tls = tls_ca_pem.map(super::tls).transpose()?;
        let client = runtime.wait_on(async move {
            let client = match tls {
                None => {
                    let (client, conn) = config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(unavailable("connect to the database"))?;
                    tokio::spawn(conn);
                    client
                }
                Some(tls) => {
                    let (client, conn) = config
                        .connect(tls)
                        .await
                        .map_err(unavailable("connect to the database"))?;
                    tokio::spawn(conn);
                    client
                }
            };
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(unavailable("begin the snapshot"))?;
            Ok(client)
        })?;
        Ok(Snapshot {
            client: Arc::new(client),
            runtime,
        })
    }

    fn run<T, F>(&self, work: impl FnOnce(Arc<Client>) -> F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StorageError>> + Send + 'static,
    {
        self.runtime.wait_on(work(self.client.clone()))
    }

    /// Up to `max` records from index `from` on, in index order.
    pub fn records(&self, from: u64, max: usize) -> Result<Vec<StoredRecord>, StorageError> {
        self.run(move |client| async move {
            let rows = client
                .query(
                    "SELECT idx, term, leaf_hash, record FROM ledger \
                     WHERE idx >= $1 ORDER BY idx LIMIT $2",
                    &[&(from as i64), &(max as i64)],
                )
                .await
                .map_err(unavailable("read ledger records"))?;
            Ok(rows
                .iter()
                .map(|r| StoredRecord {
                    index: r.get::<_, i64>(0) as u64,
                    term: r.get::<_, i64>(1) as u64,
                    leaf_hash: r.get(2),
                    record: r.get(3),
                })
                .collect())
        })
    }

    /// Every signed checkpoint with its sequence number, in order.
    pub fn notes(&self) -> Result<Vec<(u64, String)>, StorageError> {
        self.run(|client| async move {
            let rows = client
                .query("SELECT seq, note FROM checkpoints ORDER BY seq", &[])
                .await
                .map_err(unavailable("read checkpoints"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect())
        })
    }

    /// Every witness cosignature as (checkpoint number, line), in the order stored; none in
    /// a database whose schema predates them.
    pub fn cosignatures(&self) -> Result<Vec<(u64, String)>, StorageError> {
        self.run(|client| async move {
            let exists: Option<String> = client
                .query_one("SELECT to_regclass('cosignatures')::text", &[])
                .await
                .map_err(unavailable("read cosignatures"))?
                .get(0);
            if exists.is_none() {
                return Ok(Vec::new());
            }
            let rows = client
                .query("SELECT seq, line FROM cosignatures ORDER BY stored", &[])
                .await
                .map_err(unavailable("read cosignatures"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect())
        })
    }

    /// An image's stored bytes, unchecked (the caller checks the hash).
    pub fn image(&self, hash: &ImageHash) -> Result<Option<Vec<u8>>, StorageError> {
        let hash = hash.0.to_vec();
        self.run(move |client| async move {
            let row = client
                .query_opt("SELECT bytes FROM images WHERE hash = $1", &[&hash])
                .await
                .map_err(unavailable("read image"))?;
            Ok(row.map(|r| r.get(0)))
        })
    }
}
