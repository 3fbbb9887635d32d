//! Witnesses, end to end: a real witness server on loopback (the one `countersign witness
//! serve` runs), the real server sending it checkpoints, and the attacks witnesses exist to
//! catch: a whole history rewritten consistently with the real signing key, and a ledger
//! rolled back to an earlier copy. Each is caught by the witness refusing to cosign and by the
//! auditor's offline check.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use countersign::api::pb;
use countersign::ledger::checkpoint::{self, Verifier};
use countersign::ledger::cosignature::{self, WitnessKey};
use countersign::verify::{Trust, uncosigned_problem};
use countersign::witness::{self, Running, Witness};

use crate::harness::*;

fn log_key(t: &TestServer) -> Verifier {
    let text = std::fs::read_to_string(t.pki.join("ledger.pub")).unwrap();
    checkpoint::parse_verifier(text.trim()).unwrap()
}

fn witness_key(t: &TestServer) -> WitnessKey {
    let text = std::fs::read_to_string(t.pki.join("witness.pub")).unwrap();
    cosignature::parse_witness_key(text.trim()).unwrap()
}

/// The witness `pki init` configured (witness.key, trusting ledger.pub), with its state in
/// `state`, listening on `listener`.
async fn run_witness(pki: &Path, state: &Path, listener: tokio::net::TcpListener) -> Running {
    let c = witness::config::load(&pki.join("witness.toml")).unwrap();
    // Every cosignature at a time of its own, as a real clock gives them.
    let time = std::sync::atomic::AtomicU64::new(1_800_000_000);
    let clock = Arc::new(move || time.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let w = Witness::open(c.cosigner, c.logs, state, clock).unwrap();
    witness::serve(Arc::new(w), listener).unwrap()
}

async fn loopback() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// The sample configuration naming the witness at `addr`.
fn with_witness(addr: std::net::SocketAddr) -> impl Fn(String) -> String {
    move |s: String| {
        s.replace(
            "[policy]",
            &format!(
                "[[ledger.witnesses]]\nurl = \"http://{addr}\"\nkey = \"@witness.pub\"\n\n[policy]"
            ),
        )
    }
}

const ORIGIN: &str = "countersign.example/ledger";

async fn checkpoint_now(t: &TestServer, refresh: bool) -> pb::GetCheckpointResponse {
    t.auditor()
        .await
        .get_checkpoint(pb::GetCheckpointRequest {
            tree_size: 0,
            refresh,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Signs a checkpoint of everything and waits until `ok` holds of the answer (10 s at most).
async fn await_witness(
    t: &TestServer,
    ok: impl Fn(&pb::WitnessStatus, u64) -> bool,
) -> pb::GetCheckpointResponse {
    let mut refresh = true;
    for _ in 0..200 {
        let r = checkpoint_now(t, refresh).await;
        refresh = false;
        if ok(&r.witnesses[0], r.tree_size) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the witness never got there: {:?}",
        checkpoint_now(t, false).await.witnesses
    );
}

/// `n` requests submitted, approved by sup-01.
async fn approve(t: &TestServer, n: usize, serial: &str) -> Vec<String> {
    let mut sup = Console::open(t, "sup-01").await;
    let mut ids = Vec::new();
    for i in 0..n {
        let r = submit(t, "teller-01", &format!("{serial}-{i}")).await;
        let o = sup.next_offer().await;
        sup.approve(&o).await;
        ids.push(r.request_id);
    }
    ids
}

fn verify_store(t: &TestServer, trust: &Trust) -> countersign::verify::Report {
    match &t.database {
        None => countersign::verify::verify_data_dir_with(&t.data_dir(), trust),
        Some(d) => countersign::verify::verify_database_with(d.url(), None, trust),
    }
}

fn trust(t: &TestServer, kept: Vec<String>) -> Trust {
    Trust {
        pubkey: Some(log_key(t)),
        witnesses: vec![witness_key(t)],
        witnesses_required: 1,
        kept,
        origin: Some(ORIGIN.into()),
    }
}

crate::on_both_backends!(
    checkpoints_are_cosigned_and_proofs_and_verify_carry_the_cosignatures,
    a_witness_that_is_down_holds_up_no_authorization_and_catches_up,
    a_history_rewritten_with_the_real_key_is_refused_by_the_witness_and_fails_verify,
    a_ledger_rolled_back_to_an_earlier_copy_is_caught_against_the_witness
);

async fn checkpoints_are_cosigned_and_proofs_and_verify_carry_the_cosignatures() {
    let state = tempfile::tempdir().unwrap();
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    let mut t = TestServer::start_with(&with_witness(addr)).await;
    let w = run_witness(&t.pki, state.path(), listener).await;
    let ids = approve(&t, 3, "W").await;
    let r = await_witness(&t, |w, size| {
        w.cosigned_tree_size == size && w.error.is_empty()
    })
    .await;
    assert_eq!(r.witnesses[0].name, "audit.countersign.example/witness");
    assert_eq!(r.witnesses[0].lag_records, 0);
    // The cosigned note: the log's key opens it, the witness's cosignature verifies on it.
    let r = checkpoint_now(&t, false).await;
    assert!(r.cosigned_note.starts_with(&r.signed_note));
    let cp =
        checkpoint::open(&r.cosigned_note, &log_key(&t), "countersign.example/ledger").unwrap();
    assert_eq!(cp.size, r.tree_size);
    assert!(witness_key(&t).check(&r.cosigned_note).unwrap().is_some());
    assert_eq!(witness_key(&t).check(&r.signed_note).unwrap(), None);

    // A proof bundle stands on the witness too.
    let bundle = t
        .auditor()
        .await
        .export_proof(pb::ExportProofRequest {
            request_id: ids[0].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .bundle;
    let report =
        countersign::verify::verify_bundle_with(&bundle, &log_key(&t), &[witness_key(&t)], 1, None)
            .unwrap();
    assert_eq!(
        report.witnessed_by,
        vec!["audit.countersign.example/witness"]
    );
    assert!(report.final_state);
    // Another witness's key is not satisfied by it.
    let mut rng = rand::rng();
    let (_, other) = cosignature::generate("other.example/witness", &mut rng).unwrap();
    let other = cosignature::parse_witness_key(&other).unwrap();
    let e = countersign::verify::verify_bundle_with(&bundle, &log_key(&t), &[other], 1, None)
        .unwrap_err();
    assert!(e.contains("cosigned by 0 of the 1"), "{e}");

    // A restart with nothing new asks the witness again (it cosigns the same tree at a later
    // time); the checkpoint keeps one line of it.
    let endpoint = witness::client::Endpoint::parse(&format!("http://{addr}")).unwrap();
    let key = witness_key(&t);
    let witnessed_at = || async {
        let note = witness::client::latest(&endpoint, ORIGIN, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        key.check(&note).unwrap().unwrap()
    };
    let before = witnessed_at().await;
    t.restart().await;
    for _ in 0..200 {
        if witnessed_at().await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        witnessed_at().await > before,
        "the restarted server asked the witness again"
    );
    // Time for the answer to be stored, were it stored twice (only the failure waits on it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cosigned = t
        .auditor()
        .await
        .get_checkpoint(pb::GetCheckpointRequest {
            tree_size: r.tree_size,
            refresh: false,
        })
        .await
        .unwrap()
        .into_inner()
        .cosigned_note;
    assert_eq!(
        cosigned
            .matches("audit.countersign.example/witness")
            .count(),
        1,
        "{cosigned}"
    );
    t.stop().await;
    w.stop().await;
    let report = verify_store(&t, &trust(&t, vec![r.cosigned_note.clone()]));
    assert_eq!(report.problem, None);
    assert!(report.cosignatures >= 1);
    // The checkpoint signed at shutdown, over the engine's stop record, may have been
    // cosigned too before the witness task stopped.
    assert!(report.cosigned >= r.tree_size, "{report:?}");
    assert_eq!(uncosigned_problem(&report, &trust(&t, vec![]), 100), None);
}

async fn a_witness_that_is_down_holds_up_no_authorization_and_catches_up() {
    // Its address is known, but nothing listens there yet.
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut t = TestServer::start_with(&with_witness(addr)).await;
    approve(&t, 3, "D").await;
    let r = await_witness(&t, |w, _| !w.error.is_empty()).await;
    assert!(
        r.witnesses[0].error.contains("unreachable"),
        "{:?}",
        r.witnesses
    );
    assert_eq!(r.witnesses[0].cosigned_tree_size, 0);
    assert!(r.cosigned_note == r.signed_note);
    // The witness comes up on that address: the checkpoints catch up by themselves.
    let state = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let w = run_witness(&t.pki, state.path(), listener).await;
    approve(&t, 2, "D2").await;
    await_witness(&t, |w, size| {
        w.cosigned_tree_size == size && w.error.is_empty()
    })
    .await;
    t.stop().await;
    w.stop().await;
}

async fn a_history_rewritten_with_the_real_key_is_refused_by_the_witness_and_fails_verify() {
    let state = tempfile::tempdir().unwrap();
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    let mut t = TestServer::start_with(&with_witness(addr)).await;
    let w = run_witness(&t.pki, state.path(), listener).await;
    approve(&t, 3, "REAL").await;
    let real = await_witness(&t, |w, size| w.cosigned_tree_size == size).await;
    t.stop().await;

    // Whoever holds the centre's disk and key writes another history from the start, signed
    // with the real key, and serves it in place of the real one.
    let database = t.database.as_ref().map(|_| {
        Arc::new(countersign::storage::postgres::scratch::ScratchDatabase::create().unwrap())
    });
    let mut forged = t
        .on_store_with(database, "forged", &with_witness(addr))
        .await;
    approve(&forged, 6, "FORGED").await;
    // The witness refuses: the forged tree does not extend what it cosigned.
    let r = await_witness(&forged, |w, _| w.error.contains("refused (422)")).await;
    assert_eq!(r.witnesses[0].cosigned_tree_size, 0, "{:?}", r.witnesses);
    // Authorizations went on all the same.
    assert!(r.tree_size > real.tree_size);
    forged.stop().await;
    w.stop().await;

    // The auditor: the forged store carries the real key's signatures, and no witness.
    let report = verify_store(&forged, &trust(&t, vec![]));
    assert_eq!(
        report.problem, None,
        "signed with the real key, consistently"
    );
    let problem = uncosigned_problem(&report, &trust(&t, vec![]), 100).expect("caught");
    assert!(
        problem.contains("no checkpoint carries cosignatures"),
        "{problem}"
    );
    // With the cosigned checkpoint the auditor kept from the real history:
    let report = verify_store(&forged, &trust(&t, vec![real.cosigned_note.clone()]));
    let problem = report.problem.expect("caught");
    assert!(problem.contains("history was rewritten"), "{problem}");
    // The real store passes the same checks.
    let report = verify_store(&t, &trust(&t, vec![real.cosigned_note]));
    assert_eq!(report.problem, None);
}

async fn a_ledger_rolled_back_to_an_earlier_copy_is_caught_against_the_witness() {
    let state = tempfile::tempdir().unwrap();
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    let mut t = TestServer::start_with(&with_witness(addr)).await;
    let w = run_witness(&t.pki, state.path(), listener).await;
    approve(&t, 2, "EARLY").await;
    await_witness(&t, |w, size| w.cosigned_tree_size == size).await;
    t.stop().await;
    // An earlier copy of the whole store (a backup), taken with `ledger copy`.
    let database = t.database.as_ref().map(|_| {
        Arc::new(countersign::storage::postgres::scratch::ScratchDatabase::create().unwrap())
    });
    let earlier_text = store_config_text(database.as_deref(), "earlier");
    let earlier = countersign::config::Config::parse(&with_witness(addr)(earlier_text), &t.pki)
        .unwrap()
        .storage;
    let from = t.config.storage.clone();
    tokio::task::spawn_blocking(move || countersign::tools::copy::copy(&from, &earlier))
        .await
        .unwrap()
        .unwrap();
    t.boot().await;
    approve(&t, 4, "LATER").await;
    let later = await_witness(&t, |w, size| w.cosigned_tree_size == size).await;
    t.stop().await;

    // The centre is brought back on the earlier copy: what was decided since is gone.
    let mut rolled = t
        .on_store_with(database, "earlier", &with_witness(addr))
        .await;
    let r = await_witness(&rolled, |w, _| w.error.contains("rolled back")).await;
    assert!(r.tree_size < later.tree_size);
    rolled.stop().await;
    // The auditor asks the witness for the latest it cosigned, and checks the ledger has it.
    let endpoint = witness::client::Endpoint::parse(&format!("http://{addr}")).unwrap();
    let latest = witness::client::latest(
        &endpoint,
        "countersign.example/ledger",
        Duration::from_secs(5),
    )
    .await
    .unwrap()
    .expect("the witness has one");
    w.stop().await;
    // At least the checkpoint seen cosigned under load (the one signed at shutdown, over the
    // engine's stop record, may have reached the witness too).
    let size: u64 = latest.lines().nth(1).unwrap().parse().unwrap();
    assert!(size >= later.tree_size, "{latest}");
    let report = verify_store(&rolled, &trust(&t, vec![latest.clone()]));
    let problem = report.problem.expect("caught");
    assert!(problem.contains("rolled back"), "{problem}");
    // The real store has it.
    assert_eq!(verify_store(&t, &trust(&t, vec![latest])).problem, None);
}

crate::on_both_backends!(the_witness_and_the_auditors_commands_work_as_the_readme_says);

/// The binary as an operator and an auditor run it: `witness serve` from the witness.toml
/// `pki init` wrote, `witness fetch` for what the auditor keeps, and `ledger verify` with
/// `--witness` and `--checkpoint`.
async fn the_witness_and_the_auditors_commands_work_as_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    // A free port for the witness, named in the server's configuration.
    let addr = loopback().await.local_addr().unwrap();
    let url = format!("http://{addr}");
    let mut t = TestServer::start_with(&with_witness(addr)).await;
    // The witness.toml `pki init` wrote, on that port.
    let pki = t.pki.clone();
    let text = std::fs::read_to_string(pki.join("witness.toml")).unwrap();
    std::fs::write(
        pki.join("witness.toml"),
        text.replace("127.0.0.1:7380", &addr.to_string()),
    )
    .unwrap();
    let mut witness = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["witness", "serve", "--config"])
        .arg(pki.join("witness.toml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(witness.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(
        line.trim(),
        format!("countersign witness listening on {url}")
    );
    approve(&t, 2, "CLI").await;
    await_witness(&t, |w, size| {
        w.cosigned_tree_size == size && w.error.is_empty()
    })
    .await;
    t.stop().await;

    let bin = env!("CARGO_BIN_EXE_countersign");
    let fetched = std::process::Command::new(bin)
        .args([
            "witness",
            "fetch",
            "--url",
            &url,
            "--origin",
            "countersign.example/ledger",
        ])
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let kept = dir.path().join("kept.note");
    std::fs::write(&kept, &fetched.stdout).unwrap();
    let _ = witness.kill();
    let _ = witness.wait();

    let verify = |witness_pub: &Path, origin: &str| {
        let mut c = std::process::Command::new(bin);
        c.args(["ledger", "verify", "--origin", origin, "--pubkey"])
            .arg(t.pki.join("ledger.pub"));
        c.arg("--witness")
            .arg(witness_pub)
            .arg("--checkpoint")
            .arg(&kept);
        match &t.database {
            None => c.arg("--data").arg(t.data_dir()),
            Some(d) => c.args(["--database", d.url()]),
        };
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = verify(&pki.join("witness.pub"), ORIGIN);
    assert_eq!(code, Some(0), "{out}");
    // The auditor pins the origin: checkpoints of another log do not pass for this one's.
    let (code, out) = verify(&pki.join("witness.pub"), "other.example/log");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("origin"), "{out}");
    assert!(out.contains("witnessed:"), "{out}");
    assert!(out.contains("kept:        1 checkpoint(s) found"), "{out}");
    // Another witness's key: nothing it vouches for, so the auditor's rule fails.
    let other = dir.path().join("other");
    let made = std::process::Command::new(bin)
        .args([
            "witness",
            "keygen",
            "--name",
            "audit.countersign.example/witness",
            "--out",
        ])
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (code, out) = verify(&other.join("witness.pub"), ORIGIN);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("PROBLEM"), "{out}");
}
