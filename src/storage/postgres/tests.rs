//! The PostgreSQL backend against the seam's conformance suite, each check in a database of
//! its own on the real server (`scratch`), and the backend's own guarantees: the append-only
//! triggers, fencing by term, and the schema version check.

use super::scratch::ScratchDatabase;
use super::*;
use crate::storage::conformance::{self, Backend};

/// As if the leader (still renewing in this process) had been paused past its lease and
/// node-b had taken it: the term moves on, so the paused leader's renewals fail, and node-b
/// (the holder now) opens at once.
const LAPSE_FOR_NODE_B: &str = "UPDATE countersign_lease \
    SET term = term + 1, holder = 'node-b', expires_at = now() - interval '1 s'";

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
            image_writes_max: 16,
        }
    }
}

impl Backend for Postgres {
    fn open(&self) -> Storage {
        open(&self.settings(self.node), LedgerMetrics::new()).expect("open the database")
    }
}

conformance::suite!(Postgres::new());

/// Runs SQL in the scratch database and returns the error's whole text, if any.
fn exec(db: &ScratchDatabase, sql: &str) -> Result<(), String> {
    db.execute(sql).map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn the_ledger_checkpoints_and_cosignatures_refuse_update_delete_and_truncate() {
    let pg = Postgres::new();
    let mut s = pg.open();
    s.appender.append(b"{}".to_vec());
    s.appender.flush().unwrap();
    s.durable
        .wait_for(|d| matches!(d, crate::storage::DurableState::Count(1)))
        .await
        .unwrap();
    s.checkpoints.append(0, "note\n").unwrap();
    s.checkpoints.add_cosignature(0, "— w AAAA").unwrap();
    for sql in [
        "UPDATE cosignatures SET line = 'x'",
        "DELETE FROM cosignatures",
        "TRUNCATE cosignatures",
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
    assert_eq!(
        s.checkpoints.cosignatures().unwrap(),
        vec![(0, "— w AAAA".to_string())]
    );
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
    exec(&pg.db, LAPSE_FOR_NODE_B).unwrap();
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
                current: 3
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

/// A node runs under a role granted only what docs/operations.md lists (`grants.sql`), and that
/// role cannot change or remove a ledger record even with the triggers off.
#[tokio::test]
async fn a_node_runs_with_only_the_documented_grants() {
    let role = format!("countersign_role_{}", rand::random::<u32>());
    // Dropped after the database (declared before it): a role with grants in a live database
    // cannot be dropped.
    let _role = DropRole(role.clone());
    let pg = Postgres::new();
    drop(pg.open());
    let grants = include_str!("grants.sql").replace("TO countersign;", &format!("TO {role};"));
    exec(&pg.db, &format!("CREATE ROLE {role} LOGIN; {grants}")).unwrap();
    let mut settings = pg.settings("node-r");
    settings.url = settings.url.replacen("postgres@", &format!("{role}@"), 1);
    assert!(settings.url.contains(&role), "{}", settings.url);
    {
        let mut s =
            tokio::task::spawn_blocking(move || open(&settings, LedgerMetrics::new()).unwrap())
                .await
                .unwrap();
        s.appender.append(b"{}".to_vec());
        s.appender.flush().unwrap();
        s.durable
            .wait_for(|d| matches!(d, crate::storage::DurableState::Count(1)))
            .await
            .unwrap();
        s.checkpoints.append(0, "note\n").unwrap();
        let hash = s.images.put(b"image".to_vec()).await.unwrap();
        assert_eq!(s.images.get(&hash).unwrap(), b"image");
        let r = crate::domain::testing::request(&crate::domain::RequestId::from_random([4; 16]), 1);
        let update = crate::storage::RowUpdate {
            index: 0,
            request: r.id.clone(),
            state: r.state,
            created: Some((r.teller.clone(), r.submission.serial.clone(), [1; 32])),
            decided_by: None,
            summary: crate::storage::Summary::of(&r),
        };
        s.projection.apply(&[update], 1).unwrap();
        assert_eq!(s.projection.applied().unwrap(), 1);
    }
    let url = pg
        .settings("x")
        .url
        .replacen("postgres@", &format!("{role}@"), 1);
    let denied: Vec<Result<(), String>> = [
        "ALTER TABLE ledger DISABLE TRIGGER USER",
        "UPDATE ledger SET record = 'x'",
        "DELETE FROM checkpoints",
    ]
    .into_iter()
    .map(|sql| super::scratch::execute_at(&url, sql).map_err(|e| format!("{e:#}")))
    .collect();
    for d in denied {
        let e = d.expect_err("refused");
        assert!(
            e.contains("permission denied") || e.contains("must be owner"),
            "{e}"
        );
    }
}

/// Drops a test's role when the test ends, passed or not.
struct DropRole(String);

impl Drop for DropRole {
    fn drop(&mut self) {
        admin_exec(&format!("DROP ROLE IF EXISTS {}", self.0));
    }
}

/// Runs SQL on the scratch server's admin database.
fn admin_exec(sql: &str) {
    super::scratch::execute_at(&super::scratch::admin_url(), sql).unwrap();
}

/// Waits (up to 10 s) until `ledger` holds `n` records.
async fn holds(ledger: &dyn crate::storage::LedgerRead, n: u64) {
    for _ in 0..500 {
        if ledger.len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the ledger holds {} records, not {n}", ledger.len());
}

#[tokio::test]
async fn a_follower_follows_the_ledger_writes_nothing_and_takes_over_where_it_ends() {
    let pg = Postgres::new();
    let mut leader = pg.open();
    let settings = pg.settings("node-b");
    let follower = tokio::task::spawn_blocking(move || follow(&settings).unwrap())
        .await
        .unwrap();
    for i in 0..3 {
        leader
            .appender
            .append(format!("{{\"n\":{i}}}").into_bytes());
    }
    leader.appender.flush().unwrap();
    holds(follower.ledger().as_ref(), 3).await;
    // The follower can see the committed rows before the leader's writer has published its
    // durable count: both must hold them before their heads are compared.
    holds(leader.ledger.as_ref(), 3).await;
    assert_eq!(follower.ledger().head(), leader.ledger.head());
    assert_eq!(follower.ledger().read(2).unwrap(), b"{\"n\":2}");
    let holder = follower.leader().unwrap();
    assert_eq!((holder.node_id.as_str(), holder.live), ("node-a", true));
    assert_eq!(holder.advertise, "node-a.test:7443");
    // A follower writes nothing.
    assert!(matches!(
        follower.projection().apply(&[], 3),
        Err(StorageError::Fenced { ours: 0, .. })
    ));
    assert!(matches!(
        follower.checkpoints().append(0, "x\n"),
        Err(StorageError::Fenced { ours: 0, .. })
    ));

    exec(&pg.db, LAPSE_FOR_NODE_B).unwrap();
    let follower = std::sync::Arc::new(follower);
    let f = follower.clone();
    let mut taken =
        tokio::task::spawn_blocking(move || f.lead_blocking(LedgerMetrics::new()).unwrap())
            .await
            .unwrap();
    assert_eq!(
        taken.appender.next_index(),
        3,
        "carries on where the ledger ends"
    );
    taken.appender.append(b"{\"n\":3}".to_vec());
    taken.appender.flush().unwrap();
    taken
        .durable
        .wait_for(|d| matches!(d, crate::storage::DurableState::Count(4)))
        .await
        .unwrap();
    assert_eq!(follower.leader().unwrap().node_id, "node-b");
    // The old leader's next write is refused.
    leader.appender.append(b"{\"stale\":true}".to_vec());
    leader.appender.flush().unwrap();
    let state = leader
        .durable
        .wait_for(|d| matches!(d, crate::storage::DurableState::Failed { .. }))
        .await
        .unwrap()
        .clone();
    assert!(matches!(
        state,
        crate::storage::DurableState::Failed { count: 3, ref error }
            if matches!(**error, StorageError::Fenced { .. })
    ));
    assert_eq!(taken.ledger.read(3).unwrap(), b"{\"n\":3}");
}

/// Uploads of the same images, forwards and backwards, all at once across the writers: every
/// put succeeds and each image reads back. (The writers insert in hash order so that two
/// batches never wait on each other's rows; whether two such batches meet here is timing, so
/// this checks the outcome, not that ordering.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_images_put_at_once_in_every_order_are_all_stored() {
    let pg = Postgres::new();
    let s = pg.open();
    let images: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 20_000]).collect();
    let mut puts = tokio::task::JoinSet::new();
    for round in 0..64 {
        for k in 0..images.len() {
            // Forwards, then backwards.
            let k = if round % 2 == 0 {
                k
            } else {
                images.len() - 1 - k
            };
            let (store, bytes) = (s.images.clone(), images[k].clone());
            puts.spawn(async move { store.put(bytes).await });
        }
    }
    let mut stored = std::collections::HashSet::new();
    while let Some(put) = puts.join_next().await {
        stored.insert(put.unwrap().expect("every put succeeds").0);
    }
    assert_eq!(stored.len(), images.len());
    for bytes in &images {
        let hash = crate::domain::ImageHash(<sha2::Sha256 as sha2::Digest>::digest(bytes).into());
        let images = s.images.clone();
        let back = tokio::task::spawn_blocking(move || images.get(&hash))
            .await
            .unwrap();
        assert_eq!(&back.unwrap(), bytes);
    }
}

/// Many statements' worth of images queued at once, then nothing more: every put is answered,
/// those left over from a full batch included (a writer holding one must not wait for a next
/// upload behind the other writer; whether that meeting happens here is timing, so this checks
/// the outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_past_a_full_batch_are_stored_without_a_next_upload() {
    let pg = Postgres::new();
    let s = pg.open();
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..16u8 {
        let store = s.images.clone();
        puts.spawn(async move { store.put(vec![i; 6 << 20]).await });
    }
    let all = tokio::time::timeout(std::time::Duration::from_secs(60), puts.join_all())
        .await
        .expect("every put is answered");
    assert!(all.iter().all(Result::is_ok), "{all:?}");
}
