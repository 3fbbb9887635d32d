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
    /// The term this node leads in; 0 while it follows (no lease ever has term 0 once taken,
    /// so every fenced write is refused).
    term: std::sync::atomic::AtomicU64,
    /// How to open a connection outside the pool (the follower's LISTEN).
    connect: Connector,
    /// Set when the lease this node led under was lost.
    lease_lost: tokio::sync::watch::Sender<bool>,
}

/// A connection's settings and TLS, for the connection that listens for notifications.
#[derive(Clone)]
struct Connector {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
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

    /// The term this node writes under; a node that does not lead may not write.
    pub(crate) fn term(&self) -> Result<u64, StorageError> {
        match self.term.load(std::sync::atomic::Ordering::Acquire) {
            0 => Err(StorageError::Fenced {
                ours: 0,
                current: 0,
            }),
            term => Ok(term),
        }
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

pub use super::EngineRecords;

/// Where a URL points, without its password: for messages.
pub fn describe_url(url: &str) -> String {
    let Ok(c) = url.parse::<tokio_postgres::Config>() else {
        return "storage.url does not parse".into();
    };
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = c
                .get_ports()
                .get(i)
                .or(c.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    format!(
        "storage.url: host {}, database {}, user {}",
        hosts.join(","),
        c.get_dbname().unwrap_or("(the user's)"),
        c.get_user().unwrap_or("(none)")
    )
}

/// A pool error (no connection within the wait, or the server refused one).
pub(crate) fn no_connection(e: deadpool_postgres::PoolError) -> StorageError {
    StorageError::unavailable("connect to the database", e)
}

/// Opens the database as the leader: `follow`, then `Follower::lead`, which waits for the lease.
pub fn open(settings: &PostgresSettings, metrics: LedgerMetrics) -> Result<Storage, StorageError> {
    follow(settings)?.lead_blocking(metrics)
}

/// This node on the database before it leads: it reads the ledger (following it as the leader
/// writes), the checkpoints, the images and the projection, and writes nothing.
pub struct Follower {
    db: Arc<Db>,
    ledger: Arc<ledger::PgLedger>,
    settings: PostgresSettings,
    /// Woken by the leader's notifications.
    notified: Arc<tokio::sync::Notify>,
}

/// Who holds the leader's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub node_id: String,
    /// The address clients reach it at.
    pub advertise: String,
    pub term: u64,
    /// Whether the lease is still current (by the database's clock).
    pub live: bool,
}

/// Connects, brings the schema up to date (refusing one newer than this build), reads the
/// ledger's leaf hashes to rebuild the Merkle tree, and starts following the ledger.
pub fn follow(settings: &PostgresSettings) -> Result<Follower, StorageError> {
    let runtime = Background::start("postgres", 2)?;
    let connect = Connector {
        config: settings
            .url
            .parse()
            .map_err(|e| StorageError::unavailable("parse storage.url", e))?,
        tls: settings.tls_ca_pem.as_deref().map(tls).transpose()?,
    };
    let pool = {
        let _entered = runtime.handle().enter();
        pool(&connect, settings.pool_size)?
    };
    let db = Arc::new(Db {
        pool,
        runtime,
        term: std::sync::atomic::AtomicU64::new(0),
        lease_lost: tokio::sync::watch::channel(false).0,
        connect,
    });
    db.run(|pool| async move { schema::migrate(&pool).await })?;
    let ledger = ledger::open_reader(db.clone())?;
    let notified = Arc::new(tokio::sync::Notify::new());
    db.spawn(listen(
        db.connect.clone(),
        Arc::downgrade(&ledger),
        notified.clone(),
    ));
    db.spawn(ledger::follow(
        db.pool.clone(),
        Arc::downgrade(&ledger),
        notified.clone(),
    ));
    Ok(Follower {
        db,
        ledger,
        settings: settings.clone(),
        notified,
    })
}

impl Follower {
    /// The ledger as far as it has been followed.
    pub fn ledger(&self) -> Arc<dyn crate::storage::LedgerRead> {
        self.ledger.clone()
    }

    /// The audit projection, to read (a follower's writes are refused).
    pub fn projection(&self) -> Arc<dyn crate::storage::Projection> {
        Arc::new(projection::PgProjection::new(self.db.clone()))
    }

    pub fn images(&self) -> Arc<dyn crate::storage::ImageStore> {
        Arc::new(images::PgImages::new(
            self.db.clone(),
            self.settings.image_writes_max,
        ))
    }

    pub fn checkpoints(&self) -> Box<dyn crate::storage::CheckpointLog> {
        Box::new(checkpoints::PgCheckpoints::new(self.db.clone()))
    }

    /// Everything this node reads while it does not lead.
    pub fn reads(&self) -> crate::storage::StorageReads {
        crate::storage::StorageReads {
            ledger: self.ledger(),
            checkpoints: self.checkpoints(),
            images: self.images(),
            projection: self.projection(),
        }
    }

    /// The engine records from index `from` up to what this node has followed (see
    /// `PgLedger::engine_records_from`); returns where the next look starts.
    pub fn engine_records_from(&self, from: u64) -> Result<EngineRecords, StorageError> {
        crate::storage::LedgerRead::engine_records_from(&*self.ledger, from)
    }

    /// Who holds the lease now.
    pub fn leader(&self) -> Result<Leader, StorageError> {
        self.db
            .run(|pool| async move { lease::holder(&pool).await })
    }

    /// Waits until this node holds the lease, then makes it the writer: the term fences every
    /// other node, the ledger is caught up with what the last leader committed, and the writer
    /// and the lease's renewal start. The `Storage` shares this follower's tree, so taking
    /// over reads only the records it had not followed yet. The wait ends with the follower
    /// (its runtime stops), not with the caller's future.
    pub async fn lead(&self, metrics: LedgerMetrics) -> Result<Storage, StorageError> {
        self.db
            .spawn(self.lead_future(metrics))
            .await
            .map_err(StorageError::Join)?
    }

    /// `lead` for a caller that may block (a test, a tool).
    pub fn lead_blocking(&self, metrics: LedgerMetrics) -> Result<Storage, StorageError> {
        self.db.runtime.wait_on(self.lead_future(metrics))
    }

    fn lead_future(
        &self,
        metrics: LedgerMetrics,
    ) -> impl Future<Output = Result<Storage, StorageError>> + Send + 'static {
        // Weak while waiting: the runtime this runs on belongs to the Db, so a strong reference
        // here would keep both alive after the follower is gone.
        let (db, pool) = (Arc::downgrade(&self.db), self.db.pool.clone());
        let (ledger, s) = (Arc::downgrade(&self.ledger), self.settings.clone());
        async move {
            let term = lease::acquire(&pool, &s.node_id, &s.advertise, s.lease_ms).await?;
            let gone = || {
                StorageError::unavailable(
                    "take the leader's lease",
                    std::io::Error::other("the node stopped waiting"),
                )
            };
            let (db, ledger) = (
                db.upgrade().ok_or_else(gone)?,
                ledger.upgrade().ok_or_else(gone)?,
            );
            db.term.store(term, std::sync::atomic::Ordering::Release);
            // send_replace, not send: nobody may be subscribed yet (the server subscribes after
            // `lead` returns), and `send` drops the value when no receiver exists, which left
            // the flag `true` from the last term and made every later term step down at once.
            db.lease_lost.send_replace(false);
            tracing::info!(term, node = %s.node_id, "leading");
            tokio::spawn(lease::renew(
                Arc::downgrade(&db),
                db.pool.clone(),
                term,
                s.lease_ms,
            ));
            let (appender, durable) =
                ledger::start_writer(&db.pool, &ledger, term, metrics).await?;
            Ok(Storage {
                ledger,
                appender: Box::new(appender),
                durable,
                checkpoints: Box::new(checkpoints::PgCheckpoints::new(db.clone())),
                images: Arc::new(images::PgImages::new(db.clone(), s.image_writes_max)),
                projection: Arc::new(projection::PgProjection::new(db)),
            })
        }
    }

    /// Turns true when this node, leading, finds its lease taken (or it lapses unrenewed):
    /// from then on its writes are refused, and it should stop its engine and `step_down`.
    pub fn lease_lost(&self) -> tokio::sync::watch::Receiver<bool> {
        self.db.lease_lost.subscribe()
    }

    /// Lets the lease go at once (a clean shutdown, after the engine stopped), so that a
    /// standby takes over without waiting for it to lapse. Nothing when this node does not lead.
    pub fn release(&self) -> Result<(), StorageError> {
        let Ok(term) = self.db.term() else {
            return Ok(());
        };
        self.db.term.store(0, std::sync::atomic::Ordering::Release);
        self.db
            .run(move |pool| async move { lease::release(&pool, term).await })
    }

    /// Back to following after the lease was lost and this node's engine (and with it the
    /// ledger writer) stopped. `lead` may be called again.
    pub fn step_down(&self) {
        self.db.term.store(0, std::sync::atomic::Ordering::Release);
        self.ledger.stop_leading();
        self.db.spawn(ledger::follow(
            self.db.pool.clone(),
            Arc::downgrade(&self.ledger),
            self.notified.clone(),
        ));
    }
}

/// How long the listening connection waits before connecting again after it was lost.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Keeps a connection that LISTENs for the leader's `countersign_ledger` notifications and
/// wakes the follower on each, reconnecting when it is lost, until the ledger is dropped.
async fn listen(
    connect: Connector,
    ledger: std::sync::Weak<ledger::PgLedger>,
    notified: Arc<tokio::sync::Notify>,
) {
    while ledger.strong_count() > 0 {
        let r = match &connect.tls {
            None => listen_once(&connect.config, tokio_postgres::NoTls, &notified).await,
            Some(tls) => listen_once(&connect.config, tls.clone(), &notified).await,
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "the ledger's notifications stopped; listening again");
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    notified: &tokio::sync::Notify,
) -> Result<(), tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await?;
    // The connection must be polled for LISTEN to be answered and notifications to arrive.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute("LISTEN countersign_ledger").await?;
    // Anything committed before LISTEN took effect is read now.
    notified.notify_one();
    while rx.recv().await.is_some() {
        notified.notify_one();
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}

/// At most one row, found by a key, with a statement planned for this call (`query_typed`: one
/// round trip). A statement prepared once keeps the generic plan PostgreSQL made when it was
/// prepared; made while a table was small (a fresh database), that is a sequential scan, which
/// then reads the whole table on every call until autovacuum's next ANALYZE invalidates it.
/// Reads of a growing table go through here; the hot path's batched writes, whose plans do not
/// scan them, stay prepared.
async fn by_key(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[(
        &(dyn tokio_postgres::types::ToSql + Sync),
        tokio_postgres::types::Type,
    )],
) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    Ok(client.query_typed(sql, params).await?.into_iter().next())
}

/// The connection pool: libpq's URL (several hosts and `target_session_attrs` included), with
/// TLS when a CA is configured.
fn pool(connect: &Connector, size: usize) -> Result<Pool, StorageError> {
    let config = connect.config.clone();
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &connect.tls {
        None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        Some(tls) => Manager::from_config(config, tls.clone(), manager_config),
    };
    Pool::builder(manager)
        .max_size(size)
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

/// A batch's error, shared by every caller in it (an image put, an idempotency lookup).
#[derive(Debug)]
pub(super) struct SharedError(pub(super) Arc<StorageError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

#[cfg(test)]
mod tests;
