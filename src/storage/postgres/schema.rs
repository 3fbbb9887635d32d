//! The schema, created and migrated on start from the versioned migrations in `migrations/`.
//! Each runs once, in order, in one transaction with its row in `countersign_schema`, under an
//! advisory lock so that nodes starting together migrate once. A database whose schema is
//! newer than this build knows is refused: an old node must not write into a newer layout.

use deadpool_postgres::Pool;

use super::{no_connection, unavailable};
use crate::storage::StorageError;

/// The migrations, by version. A released migration is never edited: a change is a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (
        2,
        "cosignatures",
        include_str!("migrations/0002_cosignatures.sql"),
    ),
    (3, "rulebook", include_str!("migrations/0003_rulebook.sql")),
    (4, "returns", include_str!("migrations/0004_returns.sql")),
];

/// The newest schema version this build knows.
pub const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key migrations take ("cs-schema").
const LOCK: i64 = 0x63_73_2d_73_63_68_65_6d;

pub(super) async fn migrate(pool: &Pool) -> Result<(), StorageError> {
    let mut client = pool.get().await.map_err(no_connection)?;
    let tx = client
        .transaction()
        .await
        .map_err(unavailable("begin migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(unavailable("lock the schema"))?;
    // Created only when missing, so that a role without CREATE can start on a current schema.
    let exists: bool = tx
        .query_one("SELECT to_regclass('countersign_schema') IS NOT NULL", &[])
        .await
        .map_err(unavailable("look for the schema table"))?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE countersign_schema ( \
                version bigint PRIMARY KEY, \
                name text NOT NULL, \
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
                StorageError::unavailable(
                    "create the schema table",
                    std::io::Error::other(format!(
                        "{e}: the role in storage.url may not create tables: run the first \
                         start (which creates and migrates the schema) as the database's owner, \
                         or GRANT CREATE ON SCHEMA public to it (docs/operations.md gives the \
                         grants)"
                    )),
                )
            }
            _ => StorageError::unavailable("create the schema table", e),
        })?;
    }
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM countersign_schema",
            &[],
        )
        .await
        .map_err(unavailable("read the schema version"))?
        .get(0);
    if found > LATEST_VERSION {
        return Err(StorageError::SchemaNewer {
            found,
            known: LATEST_VERSION,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > found) {
        tx.batch_execute(sql)
            .await
            .map_err(unavailable("apply a schema migration"))?;
        tx.execute(
            "INSERT INTO countersign_schema (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(unavailable("record a schema migration"))?;
        tracing::info!(version, name, "migrated the database schema");
    }
    tx.commit().await.map_err(unavailable("commit migration"))
}
