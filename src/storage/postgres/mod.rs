//! The PostgreSQL backend: the ledger, checkpoints, images and audit projection in one
//! database that several nodes share. The database is the distributed part (streaming
//! replication and a failover manager, as banks already run it); the nodes are active-standby
//! on top of it, and one of them leads through a lease row whose term only grows. Every write
//! that only the leader may make (ledger records, checkpoints, projection rows) checks that
//! term in its own transaction, so a node whose lease another took can never write again.
//!
//! tokio-postgres is async and the seam is blocking, so the backend runs a small runtime of
//! its own: blocking methods hand their work to it and wait (`Db::run`), and the ledger's
//! group-commit writer is a task there.

mod checkpoints;
mod images;
mod lease;
mod ledger;
mod projection;
mod schema;
pub mod scratch;
pub mod snapshot;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};

use crate::metrics::LedgerMetrics;
use crate::storage::{PostgresSettings, Storage, StorageError};

pub use schema::LATEST_VERSION;

/// How long a caller waits for a pooled connection (or a new one) before the database counts
/// as unavailable.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// What every part of the backend shares: the pool, the runtime its work runs on, and the term
/// this node writes under.
pub(crate) struct Db {
    pool: Pool,
    runtime: Background,
    term: u64,
}

/// The backend's own runtime, shut down without waiting when dropped: a `Storage` may be
/// dropped inside another runtime, where waiting for one to stop is not allowed.
struct Background(Option<tokio::runtime::Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Background {
    fn start(name: &str, threads: usize) -> Result<Background, StorageError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| StorageError::unavailable("start the database runtime", e))?;
        Ok(Background(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        // Set in `start` and taken only by `drop`.
        #[allow(clippy::expect_used)]
        self.0
            .as_ref()
            .expect("the runtime lives until dropped")
            .handle()
    }

    /// Runs `fut` here and waits for it on this thread, which may be inside another runtime
    /// (where `block_on` is not allowed): the answer comes back over a std channel.
    fn wait_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| {
            StorageError::unavailable(
                "wait for the database",
                std::io::Error::other("the backend's runtime stopped"),
            )
        })?
    }
}

impl Db {
    /// Runs `work` with the pool on the backend's runtime and waits for its answer: the
    /// blocking face of the seam. Callable from any thread, inside a runtime or not.
    pub(crate) fn run<T, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StorageError>> + Send + 'static,
    {
        self.runtime.wait_on(work(self.pool.clone()))
    }

    /// Spawns `work` on the backend's runtime.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.runtime.handle().spawn(work)
    }
}

/// A database error, as something worth retrying: the connection, the server or a conflict.
pub(crate) fn unavailable(
    action: &'static str,
) -> impl FnOnce(tokio_postgres::Error) -> StorageError {
    move |e| StorageError::unavailable(action, e)
}

/// A pool error (no connection within the wait, or the server refused one).
pub(crate) fn no_connection(e: deadpool_postgres::PoolError) -> StorageError {
    StorageError::unavailable("connect to the database", e)
}

/// Opens the database: connects, brings the schema up to date (refusing one newer than this
/// build), waits for and takes the leader's lease, reads the ledger's leaf hashes to rebuild
/// the Merkle tree, and starts the ledger writer and the lease's renewal.
pub fn open(settings: &PostgresSettings, metrics: LedgerMetrics) -> Result<Storage, StorageError> {
    let runtime = Background::start("postgres", 2)?;
    let pool = {
        let _entered = runtime.handle().enter();
        pool(settings)?
    };
    let mut db = Db {
        pool,
        runtime,
        term: 0,
    };
    let (node, advertise, lease_ms) = (
        settings.node_id.clone(),
        settings.advertise.clone(),
        settings.lease_ms,
    );
    db.term = db.run(move |pool| async move {
        schema::migrate(&pool).await?;
        lease::acquire(&pool, &node, &advertise, lease_ms).await
    })?;
    tracing::info!(term = db.term, node = %settings.node_id, "leading");
    let db = Arc::new(db);
    db.spawn(lease::renew(db.pool.clone(), db.term, settings.lease_ms));
    let (ledger, appender, durable) = ledger::open(db.clone(), metrics)?;
    Ok(Storage {
        ledger,
        appender: Box::new(appender),
        durable,
        checkpoints: Box::new(checkpoints::PgCheckpoints::new(db.clone())),
        images: Arc::new(images::PgImages::new(db.clone())),
        projection: Arc::new(projection::PgProjection::new(db)),
    })
}

/// The connection pool: libpq's URL (several hosts and `target_session_attrs` included), with
/// TLS when a CA is configured.
fn pool(settings: &PostgresSettings) -> Result<Pool, StorageError> {
    let config: tokio_postgres::Config = settings
        .url
        .parse()
        .map_err(|e| StorageError::unavailable("parse storage.url", e))?;
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &settings.tls_ca_pem {
        None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        Some(pem) => Manager::from_config(config, tls(pem)?, manager_config),
    };
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(CONNECTION_WAIT),
            create: Some(CONNECTION_WAIT),
            recycle: Some(CONNECTION_WAIT),
        })
        .build()
        .map_err(|e| StorageError::unavailable("build the connection pool", e))
}

/// rustls, trusting only the configured CAs.
fn tls(pem: &str) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StorageError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| {
        StorageError::unavailable("read storage.tls_ca", std::io::Error::other(e.to_string()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in the file"));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests;
