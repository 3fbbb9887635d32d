//! The storage seam's conformance suite (test builds only): what every backend must do, as
//! the engine relies on it. Each check opens the backend through a `Backend` (so it can also
//! reopen it, to check what survives), and the backend's own tests call every check. A second
//! backend passes the same checks before the engine may use it.

use std::collections::BTreeSet;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;
use crate::domain::{ImageHash, PrincipalId, RequestId, TellerSerial};
use crate::ledger::merkle;

/// Declares every check as a test of the backend `$make` builds (afresh for each test): how a
/// backend's own tests run the suite.
macro_rules! suite {
    ($make:expr) => {
        #[tokio::test]
        async fn ledger_appends_reads_and_proves() {
            $crate::storage::conformance::ledger_appends_reads_and_proves(&$make).await;
        }

        #[tokio::test]
        async fn ledger_failure_loses_nothing_durable() {
            $crate::storage::conformance::ledger_failure_loses_nothing_durable(&$make).await;
        }

        #[test]
        fn checkpoints_keep_their_order() {
            $crate::storage::conformance::checkpoints_keep_their_order(&$make);
        }

        #[tokio::test]
        async fn images_are_content_addressed() {
            $crate::storage::conformance::images_are_content_addressed(&$make).await;
        }

        #[test]
        fn projection_applies_and_answers() {
            $crate::storage::conformance::projection_applies_and_answers(&$make);
        }
    };
}
pub(crate) use suite;

/// Opens one backend's storage, again and again on the same place.
pub(crate) trait Backend {
    fn open(&self) -> Storage;
}

/// Waits until `n` records are durable, or the writer fails.
async fn durable_at(durable: &mut Durable, n: u64) -> DurableState {
    let state = tokio::time::timeout(
        Duration::from_secs(10),
        durable.wait_for(|s| match s {
            DurableState::Count(c) => *c >= n,
            DurableState::Failed { .. } => true,
        }),
    )
    .await
    .expect("the durable count moves within 10 s")
    .expect("the writer is running");
    state.clone()
}

fn payload(i: u64) -> Vec<u8> {
    format!("{{\"record\":{i}}}").into_bytes()
}

/// Appended records become durable in order, read back byte for byte, and the Merkle tree over
/// them proves inclusion and consistency; all of it survives a reopen, where appending carries
/// on at the next index.
pub(crate) async fn ledger_appends_reads_and_proves(b: &impl Backend) {
    let mut s = b.open();
    assert_eq!(s.ledger.len(), 0);
    assert_eq!(s.appender.next_index(), 0);
    for i in 0..10 {
        assert_eq!(s.appender.append(payload(i)), i);
    }
    s.appender.flush().expect("flush");
    assert!(matches!(
        durable_at(&mut s.durable, 10).await,
        DurableState::Count(10)
    ));
    assert_eq!(s.ledger.len(), 10);
    let leaves: Vec<merkle::Hash> = (0..10).map(|i| merkle::leaf_hash(&payload(i))).collect();
    for i in 0..10 {
        assert_eq!(s.ledger.read(i).expect("read"), payload(i));
    }
    assert!(matches!(
        s.ledger.read(10),
        Err(StorageError::NoSuchRecord(10))
    ));
    assert_eq!(
        s.ledger.read_many(&[7, 2, 9]).expect("read many"),
        vec![payload(7), payload(2), payload(9)],
        "in the order asked"
    );
    assert!(matches!(
        s.ledger.read_many(&[1, 10]),
        Err(StorageError::NoSuchRecord(10))
    ));
    let (size, root) = s.ledger.head();
    assert_eq!((size, root), (10, merkle::root_from_leaves(&leaves)));
    assert_eq!(s.ledger.tree_size(), 10);
    let root4 = s.ledger.root_at(4).expect("root at 4");
    assert_eq!(root4, merkle::root_from_leaves(&leaves[..4]));
    let proof = s.ledger.inclusion_proof(3, 10).expect("inclusion proof");
    merkle::verify_inclusion(&leaves[3], 3, 10, &proof, &root).expect("inclusion verifies");
    let proof = s
        .ledger
        .consistency_proof(4, 10)
        .expect("consistency proof");
    merkle::verify_consistency(4, 10, &proof, &root4, &root).expect("consistency verifies");
    drop(s);

    let mut s = b.open();
    assert_eq!(s.ledger.len(), 10, "durable records survive a reopen");
    assert_eq!(s.appender.next_index(), 10);
    assert_eq!(s.ledger.head().1, root);
    assert_eq!(s.appender.append(payload(10)), 10);
    s.appender.flush().expect("flush");
    durable_at(&mut s.durable, 11).await;
    assert_eq!(s.ledger.read(10).expect("read"), payload(10));
}

/// A write that fails acknowledges nothing past the last durable record; the backend refuses
/// to write until a probe succeeds, and then appends at the durable count again.
pub(crate) async fn ledger_failure_loses_nothing_durable(b: &impl Backend) {
    let mut s = b.open();
    s.appender.append(payload(0));
    s.appender.flush().expect("flush");
    durable_at(&mut s.durable, 1).await;
    s.ledger.inject_write_faults(true);
    s.appender.append(payload(1));
    s.appender.flush().expect("hand over");
    let DurableState::Failed { count, .. } = durable_at(&mut s.durable, 2).await else {
        panic!("an injected fault fails the write");
    };
    assert_eq!(count, 1, "nothing past the last durable record");
    assert_eq!(s.ledger.len(), 1);
    s.appender.rewind(count);
    assert!(
        s.appender.probe(count).is_err(),
        "the probe fails while the fault lasts"
    );
    s.ledger.inject_write_faults(false);
    s.appender
        .probe(count)
        .expect("the probe succeeds once the fault is gone");
    assert_eq!(
        s.appender.append(payload(1)),
        1,
        "appending carries on at the durable count"
    );
    s.appender.flush().expect("flush");
    assert!(matches!(
        durable_at(&mut s.durable, 2).await,
        DurableState::Count(2)
    ));
    assert_eq!(s.ledger.read(1).expect("read"), payload(1));
}

/// Signed notes and their cosignatures are kept in order and survive a reopen.
pub(crate) fn checkpoints_keep_their_order(b: &impl Backend) {
    let s = b.open();
    assert!(s.checkpoints.notes().expect("notes").is_empty());
    assert!(
        s.checkpoints
            .cosignatures()
            .expect("cosignatures")
            .is_empty()
    );
    s.checkpoints.append(0, "first\n").expect("append");
    s.checkpoints.append(1, "second\n").expect("append");
    s.checkpoints
        .add_cosignature(1, "— w1 AAAA")
        .expect("cosign");
    s.checkpoints
        .add_cosignature(0, "— w2 BBBB")
        .expect("cosign");
    drop(s);
    let s = b.open();
    assert_eq!(
        s.checkpoints.notes().expect("notes"),
        vec!["first\n".to_string(), "second\n".to_string()]
    );
    let stored = vec![(1, "— w1 AAAA".to_string()), (0, "— w2 BBBB".to_string())];
    assert_eq!(s.checkpoints.cosignatures().expect("cosignatures"), stored);
    assert_eq!(
        s.checkpoints.cosignatures_from(1).expect("cosignatures"),
        stored[1..]
    );
    // One more after the reopen goes after the others.
    s.checkpoints
        .add_cosignature(1, "— w3 CCCC")
        .expect("cosign");
    drop(s);
    let s = b.open();
    assert_eq!(s.checkpoints.cosignatures().expect("cosignatures").len(), 3);
}

/// Images are named by their SHA-256, read back checked, stored once, and survive a reopen.
pub(crate) async fn images_are_content_addressed(b: &impl Backend) {
    let s = b.open();
    let bytes = b"\xff\xd8\xff\xe0 a voucher".to_vec();
    let hash = s.images.put(bytes.clone()).await.expect("put");
    assert_eq!(hash, ImageHash(Sha256::digest(&bytes).into()));
    assert!(s.images.has(&hash));
    assert_eq!(s.images.get(&hash).expect("get"), bytes);
    assert_eq!(s.images.put(bytes.clone()).await.expect("put again"), hash);
    let unknown = ImageHash([7; 32]);
    assert!(!s.images.has(&unknown));
    assert_eq!(s.images.missing(&[hash, unknown, hash]), vec![unknown]);
    assert!(s.images.missing(&[]).is_empty());
    assert!(matches!(
        s.images.get(&unknown),
        Err(StorageError::ImageNotFound(h)) if h == unknown
    ));
    drop(s);
    let s = b.open();
    assert_eq!(s.images.get(&hash).expect("get after reopen"), bytes);
}

fn update(index: u64, r: &crate::domain::Request, created: bool) -> RowUpdate {
    RowUpdate {
        index,
        request: r.id.clone(),
        state: r.state,
        created: created.then(|| (r.teller.clone(), r.submission.serial.clone(), [9; 32])),
        decided_by: None,
        summary: Summary::of(r),
    }
}

/// The projection applies batches with the count they reflect, answers every read the engine
/// and audits make, and keeps it all across a reopen once flushed.
pub(crate) fn projection_applies_and_answers(b: &impl Backend) {
    let s = b.open();
    let p = &s.projection;
    assert_eq!(p.applied().expect("applied"), 0);
    assert!(p.batch_size() > 0);
    let a = crate::domain::testing::request(&RequestId::from_random([1; 16]), 1);
    let mut c = crate::domain::testing::request(&RequestId::from_random([2; 16]), 1);
    p.apply(&[update(0, &a, true), update(1, &c, true)], 2)
        .expect("apply");
    c.state = crate::domain::State::Cancelled;
    c.updated_at = crate::domain::Timestamp(5);
    // Every field set, and names that a text format would have to escape: each reads back as
    // it was written.
    let mut last = update(2, &c, false);
    last.summary.deciders = ["a\"b", "c\\d", "e,f", "NULL", "{g}", " h ", "中"]
        .map(String::from)
        .to_vec();
    last.summary.final_decider = Some("x\"y".into());
    last.summary.first_accepted_at_ms = Some(3);
    last.summary.finished_at_ms = Some(5);
    last.summary.on_site_supervisor = Some("on-site".into());
    last.summary.on_site_at_ms = Some(4);
    last.summary.review = Some("pending".into());
    last.summary.returns = 2;
    let c_summary = last.summary.clone();
    p.apply(&[last], 3).expect("apply");
    assert_eq!(p.applied().expect("applied"), 3);
    let check = |p: &std::sync::Arc<dyn Projection>| {
        assert_eq!(
            p.request(&c.id).expect("row"),
            Some((crate::domain::State::Cancelled, vec![1, 2]))
        );
        assert_eq!(
            p.request(&RequestId::from_random([3; 16])).expect("row"),
            None
        );
        assert_eq!(
            p.idempotency(&a.teller, &a.submission.serial)
                .expect("idem"),
            Some((a.id.clone(), [9; 32]))
        );
        assert_eq!(
            p.idempotency(&PrincipalId::new("other"), &TellerSerial::new("S"))
                .expect("idem"),
            None
        );
        assert_eq!(p.summary(&c.id).expect("summary"), Some(c_summary.clone()));
        assert_eq!(c_summary.state, "cancelled");
        // Lookups made together (a database answers them in one statement) each get their
        // own answer.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let answers = runtime.block_on(async {
            let mut asked = tokio::task::JoinSet::new();
            for i in 0..40 {
                let (teller, serial) = if i % 8 == 3 {
                    (a.teller.clone(), a.submission.serial.clone())
                } else {
                    (
                        PrincipalId::new("other"),
                        TellerSerial::new(format!("S{i}")),
                    )
                };
                let p = p.clone();
                asked.spawn(async move { (i, p.idempotency_soon(teller, serial).await) });
            }
            asked.join_all().await
        });
        assert_eq!(answers.len(), 40);
        for (i, found) in answers {
            let want = (i % 8 == 3).then(|| (a.id.clone(), [9; 32]));
            assert_eq!(found.expect("idempotency_soon"), want, "lookup {i}");
        }
        let active: BTreeSet<RequestId> = p.active().expect("active").into_iter().collect();
        assert_eq!(active, BTreeSet::from([a.id.clone()]));
        let page = p
            .search(&SearchQuery {
                teller: Some("teller".into()),
                supervisor: None,
                branch: None,
                code: None,
                outcome: Some(crate::domain::State::Cancelled),
                from_ms: None,
                until_ms: None,
                page_size: 10,
                scan_max: 100,
                cursor: None,
                review: None,
            })
            .expect("search");
        let hits: Vec<&RequestId> = page.hits.iter().map(|(id, _)| id).collect();
        assert_eq!(hits, vec![&c.id]);
        let all = p
            .summaries_between(None, None, 10)
            .expect("summaries")
            .expect("within the maximum");
        assert_eq!(all.len(), 2);
        assert_eq!(
            p.summaries_between(None, None, 1).expect("summaries"),
            Err(2),
            "more than the maximum is refused with the count reached"
        );
    };
    check(p);
    p.flush().expect("flush");
    drop(s);
    let s = b.open();
    assert_eq!(s.projection.applied().expect("applied"), 3);
    check(&s.projection);
}
