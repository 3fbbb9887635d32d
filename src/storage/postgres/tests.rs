//! The PostgreSQL backend against the seam's conformance suite, each check in a database of
//! its own on the real server (`scratch`), and the backend's own guarantees: the append-only
//! triggers, fencing by term, and the schema version check.

use super::scratch::ScratchDatabase;
use super::*;
use crate::storage::conformance::{self, Backend};

struct Postgres {
    db: ScratchDatabase,
    node: &'static str,
}

impl Postgres {
    fn new() -> Self {
        Postgres {
            db: ScratchDatabase::create().expect("a scratch database"),
            node: "node-a",
        }
    }

    fn settings(&self, node: &str) -> PostgresSettings {
        PostgresSettings {
            url: self.db.url().to_string(),
            pool_size: 4,
            tls_ca_pem: None,
            node_id: node.to_string(),
            advertise: format!("{node}.test:7443"),
            lease_ms: 2000,
        }
    }
}

impl Backend for Postgres {
    fn open(&self) -> Storage {
        open(&self.settings(self.node), LedgerMetrics::new()).expect("open the database")
    }
}

#[tokio::test]
async fn ledger_appends_reads_and_proves() {
    conformance::ledger_appends_reads_and_proves(&Postgres::new()).await;
}

#[tokio::test]
async fn ledger_failure_loses_nothing_durable() {
    conformance::ledger_failure_loses_nothing_durable(&Postgres::new()).await;
}

#[test]
fn checkpoints_keep_their_order() {
    conformance::checkpoints_keep_their_order(&Postgres::new());
}

#[tokio::test]
async fn images_are_content_addressed() {
    conformance::images_are_content_addressed(&Postgres::new()).await;
}

#[test]
fn projection_applies_and_answers() {
    conformance::projection_applies_and_answers(&Postgres::new());
}

/// Runs one statement in the scratch database and returns the error text, if any.
fn exec(db: &ScratchDatabase, sql: &str) -> Result<(), String> {
    let (url, sql) = (db.url().to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{e:?}"))
        })
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn the_ledger_and_checkpoints_refuse_update_delete_and_truncate() {
    let pg = Postgres::new();
    let mut s = pg.open();
    s.appender.append(b"{}".to_vec());
    s.appender.flush().unwrap();
    s.durable
        .wait_for(|d| matches!(d, crate::storage::DurableState::Count(1)))
        .await
        .unwrap();
    s.checkpoints.append(0, "note\n").unwrap();
    for sql in [
        "UPDATE ledger SET record = 'x'",
        "DELETE FROM ledger",
        "TRUNCATE ledger",
        "UPDATE checkpoints SET note = 'x'",
        "DELETE FROM checkpoints",
        "TRUNCATE checkpoints",
    ] {
        let e = exec(&pg.db, sql).expect_err(sql);
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    assert_eq!(s.ledger.read(0).unwrap(), b"{}");
    assert_eq!(s.checkpoints.notes().unwrap(), vec!["note\n".to_string()]);
}

#[tokio::test]
async fn a_node_whose_lease_was_taken_cannot_write() {
    let pg = Postgres::new();
    let mut old = pg.open();
    old.appender.append(b"{\"a\":0}".to_vec());
    old.appender.flush().unwrap();
    old.durable
        .wait_for(|d| matches!(d, crate::storage::DurableState::Count(1)))
        .await
        .unwrap();
    // As if the old leader's lease lapsed while it was paused: another node takes it.
    exec(
        &pg.db,
        "UPDATE countersign_lease SET expires_at = now() - interval '1 s'",
    )
    .unwrap();
    let new = tokio::task::spawn_blocking({
        let settings = pg.settings("node-b");
        move || open(&settings, LedgerMetrics::new()).unwrap()
    })
    .await
    .unwrap();
    old.appender.append(b"{\"a\":1}".to_vec());
    old.appender.flush().unwrap();
    let state = old
        .durable
        .wait_for(|d| matches!(d, crate::storage::DurableState::Failed { .. }))
        .await
        .unwrap()
        .clone();
    let crate::storage::DurableState::Failed { count, error } = state else {
        unreachable!()
    };
    assert_eq!(count, 1);
    assert!(
        matches!(
            *error,
            StorageError::Fenced {
                ours: 1,
                current: 2
            }
        ),
        "{error}"
    );
    assert!(matches!(
        old.appender.probe(1),
        Err(StorageError::Fenced { .. })
    ));
    assert!(matches!(
        old.checkpoints.append(0, "stale\n"),
        Err(StorageError::Fenced { .. })
    ));
    assert!(matches!(
        old.projection.apply(&[], 1),
        Err(StorageError::Fenced { .. })
    ));
    assert_eq!(new.ledger.len(), 1);
    assert_eq!(new.projection.applied().unwrap(), 0);
}

#[test]
fn a_schema_newer_than_this_build_is_refused() {
    let pg = Postgres::new();
    drop(pg.open());
    exec(
        &pg.db,
        &format!(
            "INSERT INTO countersign_schema (version, name) VALUES ({}, 'from the future')",
            LATEST_VERSION + 1
        ),
    )
    .unwrap();
    match open(&pg.settings("node-a"), LedgerMetrics::new()) {
        Err(StorageError::SchemaNewer { found, known }) => {
            assert_eq!((found, known), (LATEST_VERSION + 1, LATEST_VERSION));
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("opened a schema newer than this build"),
    }
}
