//! `countersign backup` and `restore` as an operator runs them: a backup taken with the real
//! binary while tellers submit, restored into a new data directory after its check, and
//! served by a new server that has every request acknowledged before the backup's checkpoint;
//! a changed backup is refused before anything is written.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use countersign::api::pb;

use crate::harness::*;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .output()
        .expect("run countersign");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

crate::on_both_backends!(
    a_backup_taken_under_load_restores_verifies_and_serves { flavor = "multi_thread" },
);

async fn a_backup_taken_under_load_restores_verifies_and_serves() {
    let t = TestServer::start().await;
    let mut acked = Vec::new();
    for i in 0..8 {
        acked.push(submit(&t, "teller-01", &format!("BK-{i}")).await.request_id);
    }
    // A checkpoint over all of them, as the server signs one every second anyway.
    let covered = t
        .auditor()
        .await
        .get_checkpoint(pb::GetCheckpointRequest {
            tree_size: 0,
            refresh: true,
        })
        .await
        .unwrap()
        .into_inner()
        .tree_size;
    // Tellers go on submitting while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, mut teller) = (stop.clone(), t.teller("teller-02").await);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = crate::fixtures::submit_request(
                    &format!("LOAD-{n}"),
                    "WDL-CASH",
                    5_000_000,
                    "6222020200112233445",
                );
                let _ = teller.submit(r).await;
                n += 1;
            }
            n
        })
    };
    let config = t.write_config("live");
    let backup_dir = t.dir.path().join("backup");
    let (ok, out) = run(&[
        "backup",
        "--config",
        config.to_str().unwrap(),
        "--to",
        backup_dir.to_str().unwrap(),
    ]);
    stop.store(true, Ordering::Relaxed);
    let submitted_during = load.await.unwrap();
    assert!(ok, "{out}");
    assert!(submitted_during > 0);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup_dir.join("manifest.json")).unwrap()).unwrap();
    let size = manifest["tree_size"].as_u64().unwrap();
    assert!(size >= covered, "{manifest}");
    assert_eq!(manifest["includes_keys"], false);
    assert!(!backup_dir.join("config/ledger.key").exists());
    // Keys only when asked; a backup never goes into a directory holding something.
    let with_keys = t.dir.path().join("backup-with-keys");
    let (ok, out) = run(&[
        "backup",
        "--config",
        config.to_str().unwrap(),
        "--to",
        with_keys.to_str().unwrap(),
        "--with-keys",
    ]);
    assert!(ok, "{out}");
    let key = std::fs::read_to_string(with_keys.join("config/ledger.key")).unwrap();
    assert!(key.starts_with("PRIVATE+KEY+"));
    let (ok, out) = run(&[
        "backup",
        "--config",
        config.to_str().unwrap(),
        "--to",
        with_keys.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("not empty"), "{out}");

    // A changed backup is refused, and nothing is written.
    let policy = backup_dir.join("config/policy.toml");
    let kept = std::fs::read(&policy).unwrap();
    std::fs::write(&policy, b"# changed\n").unwrap();
    let target = t.dir.path().join("restored");
    let pubkey = t.pki.join("ledger.pub");
    let restore = |to: &std::path::Path| {
        run(&[
            "restore",
            "--from",
            backup_dir.to_str().unwrap(),
            "--data",
            to.to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
        ])
    };
    let (ok, out) = restore(&target);
    assert!(!ok && out.contains("changed after the backup"), "{out}");
    assert!(!target.exists());
    std::fs::write(&policy, kept).unwrap();
    let (ok, out) = restore(&target);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("verified:     {size} records")),
        "{out}"
    );
    // Restoring over it again is refused: it is not empty.
    let (ok, out) = restore(&target);
    assert!(!ok && out.contains("not empty"), "{out}");

    // A server on the restored directory has every request acknowledged before the checkpoint.
    let mut u = t.on_store(None, "restored").await;
    let mut teller = u.teller("teller-01").await;
    for id in &acked {
        let r = teller
            .get(pb::GetRequest {
                request_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:?}"))
            .into_inner()
            .request
            .unwrap();
        assert_eq!(state(&r), pb::RequestState::Queued);
    }
    // And it goes on from there.
    submit(&u, "teller-01", "AFTER-RESTORE").await;
    u.stop().await;
    let report = countersign::verify::verify_data_dir(
        &target,
        Some(&{
            let text = std::fs::read_to_string(&pubkey).unwrap();
            countersign::ledger::checkpoint::parse_verifier(text.trim()).unwrap()
        }),
    );
    assert_eq!(report.problem, None);
    assert!(report.records > size);
}
