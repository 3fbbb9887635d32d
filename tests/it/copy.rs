//! Moving a store between backends with `countersign ledger copy`: from the test's backend to
//! the other one and back, as a bank moves a single-node pilot to a cluster (or back). The
//! copy serves the same history, the same images and the same signed checkpoints, and carries
//! on as a working store.

use std::process::Command;
use std::sync::Arc;

use countersign::api::pb;
use countersign::storage::postgres::scratch::ScratchDatabase;

use crate::fixtures::fake_jpeg;
use crate::harness::*;

/// Runs `countersign ledger copy`; its status, stdout and stderr.
fn copy(from: &std::path::Path, to: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["ledger", "copy", "--from"])
        .arg(from)
        .arg("--to")
        .arg(to)
        .output()
        .expect("run countersign ledger copy");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A store of the backend the test does not run on (`other`), or of the same one (`!other`).
fn store(other: bool) -> Option<Arc<ScratchDatabase>> {
    let postgres = (backend() == Backend::Postgres) != other;
    postgres.then(|| Arc::new(ScratchDatabase::create().expect("a scratch database")))
}

async fn histories(t: &TestServer, ids: &[String]) -> Vec<pb::GetRequestResponse> {
    let mut auditor = t.auditor().await;
    let mut out = Vec::new();
    for id in ids {
        out.push(
            auditor
                .get_request(pb::GetRequestRequest {
                    request_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner(),
        );
    }
    out
}

async fn a_store_copied_to_the_other_backend_and_back_is_the_same_store() {
    let mut t = TestServer::start().await;
    // A history: one approved, one returned and resubmitted with a new image, one queued, and
    // a signed checkpoint over them. The console pauses before anything else is queued, so
    // nothing is offered when the server stops.
    let mut sup = Console::open(&t, "sup-01").await;
    let approved = submit(&t, "teller-01", "M-1").await;
    let o = sup.next_offer().await;
    sup.approve(&o).await;
    let returned = submit(&t, "teller-01", "M-2").await;
    let o = sup.next_offer().await;
    sup.accept(&o).await;
    sup.decide(&o, pb::Decision::Return, "IMG_UNREADABLE", "rescan")
        .await
        .unwrap();
    sup.client.pause(pb::PauseRequest {}).await.unwrap();
    let rescan = fake_jpeg(3000);
    let resubmitted = t
        .teller("teller-01")
        .await
        .resubmit(pb::ResubmitRequest {
            request_id: returned.request_id.clone(),
            images: vec![pb::ImageUpload {
                kind: pb::ImageKind::Voucher as i32,
                media_type: "image/jpeg".into(),
                content: rescan.clone(),
            }],
            remove_image_sha256: vec![returned.images[0].sha256.clone()],
            note: "rescanned".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let queued = submit(&t, "teller-03", "M-3").await;
    let ids = [&approved, &returned, &queued].map(|r| r.request_id.clone());
    let checkpoint = t
        .auditor()
        .await
        .get_checkpoint(pb::GetCheckpointRequest {
            tree_size: 0,
            refresh: true,
        })
        .await
        .unwrap()
        .into_inner();
    let before = histories(&t, &ids).await;
    let source = t.write_config("source");

    // A source that is not there is refused, and not created.
    let nowhere = t.pki.join("nowhere.toml");
    std::fs::write(&nowhere, store_config_text(None, "nowhere")).unwrap();
    let (ok, _, err) = copy(&nowhere, &t.pki.join("nowhere.toml"));
    assert!(!ok && err.contains("holds no ledger"), "{err}");
    assert!(!t.pki.join("../nowhere").exists());
    // Nothing is copied from a store a server is using.
    let (ok, _, err) = copy(&source, &t.pki.join("missing.toml"));
    assert!(!ok, "{err}");
    drop(sup);
    let dest = store(true);
    let target = t.pki.join("copy.toml");
    std::fs::write(&target, store_config_text(dest.as_deref(), "copy")).unwrap();
    let (ok, _, err) = copy(&source, &target);
    assert!(!ok, "a running server's store is refused");
    assert!(
        err.contains("leads the source database") || err.contains("is a server running on it"),
        "{err}"
    );
    t.stop().await;
    let records = t.records();

    let (ok, out, err) = copy(&source, &target);
    assert!(ok, "copy failed: {out}\n{err}");
    assert!(
        out.contains(&format!("records:     {}", records.len())),
        "{out}"
    );
    let checkpoints = t.verify(None).checkpoints;
    assert!(
        out.contains(&format!("checkpoints: {checkpoints} ")),
        "{out}"
    );
    assert!(out.contains("result:      OK"), "{out}");
    // A second copy into the same (no longer empty) store is refused, and changes nothing.
    let (ok, _, err) = copy(&source, &target);
    assert!(!ok);
    assert!(err.contains("copy only into an empty store"), "{err}");

    // The copy, served by the other backend: the same histories, images and checkpoint.
    let mut u = t.on_store(dest, "copy").await;
    let served = u.records();
    assert!(
        served.starts_with(&records),
        "the same bytes in the same order"
    );
    // Serving it added the engine's start, nothing else.
    let added: Vec<serde_json::Value> = served[records.len()..]
        .iter()
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["engine"]["type"], "engine_started");
    assert_eq!(histories(&u, &ids).await, before);
    let image = u
        .auditor()
        .await
        .get_image(pb::GetImageRequest {
            sha256: resubmitted.images.last().unwrap().sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(image.content, rescan);
    let seen = u
        .auditor()
        .await
        .get_checkpoint(pb::GetCheckpointRequest {
            tree_size: 0,
            refresh: false,
        })
        .await
        .unwrap()
        .into_inner();
    // The source's last checkpoint, signed at its shutdown over everything copied.
    assert!(seen.tree_size > checkpoint.tree_size);
    assert_eq!(seen.tree_size, records.len() as u64);
    // And it carries on: the queue is the source's, and a decision is recorded on the copy.
    let mut s = Console::open(&u, "sup-02").await;
    let o = s.next_offer().await;
    assert_eq!(
        o.request_id, returned.request_id,
        "the oldest waiting first"
    );
    s.approve(&o).await;
    drop(s);
    u.stop().await;
    let key = std::fs::read_to_string(t.pki.join("ledger.pub")).unwrap();
    let verifier = countersign::ledger::checkpoint::parse_verifier(key.trim()).unwrap();
    assert_eq!(u.verify(Some(&verifier)).problem, None);

    // And back to the first backend, into a fresh store: the same bytes again.
    let copied = u.records();
    let back = store(false);
    let home = t.pki.join("back.toml");
    std::fs::write(&home, store_config_text(back.as_deref(), "back")).unwrap();
    let (ok, out, err) = copy(&target, &home);
    assert!(ok, "copy back failed: {out}\n{err}");
    let back_data = t.pki.join("../back");
    assert_eq!(
        stored_records(&back_data, back.as_deref().map(|d| d.url())),
        copied
    );
    assert_eq!(
        verify_stored(
            &back_data,
            back.as_deref().map(|d| d.url()),
            Some(&verifier)
        )
        .problem,
        None
    );
}

crate::on_both_backends!(a_store_copied_to_the_other_backend_and_back_is_the_same_store,);
