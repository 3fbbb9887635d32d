//! The engine's own records in the ledger, read as an auditor reads them (GetRecords): when it
//! started and stopped, which policy and principal directory it served with, who reloaded
//! them, and when writes resumed after a store could not write. A reload that cannot be
//! recorded is refused whole.

use std::time::{Duration, Instant};

use countersign::api::pb;
use sha2::Digest as _;
use tonic::Code;

use crate::harness::*;

crate::on_both_backends!(
    the_ledger_records_starts_stops_and_every_reload_with_who_asked,
    a_reload_that_cannot_be_recorded_is_refused_whole_and_the_outage_is_recorded
);

// The image log is the embedded backend's own file (see tests/it/faults.rs).
crate::embedded_only!(
    a_revocation_is_taken_while_only_the_image_log_cannot_write,
    a_reload_after_the_engine_stopped_is_refused_not_left_unrecorded
);

fn hex_sha256(path: &std::path::Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn kinds(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Writes the principal directory without `id`'s entry (listed once).
fn remove_principal(t: &TestServer, id: &str) {
    let directory = t.pki.join("principals.toml");
    let text = std::fs::read_to_string(&directory).unwrap();
    let blocks: Vec<&str> = text.split("[[principals]]").collect();
    let kept: Vec<&str> = blocks
        .iter()
        .copied()
        .filter(|b| !b.contains(&format!("id = \"{id}\"\n")))
        .collect();
    assert_eq!(kept.len() + 1, blocks.len(), "{id} was listed once");
    std::fs::write(&directory, kept.join("[[principals]]")).unwrap();
}

/// A teller's read of a request that does not exist: NOT_FOUND while the teller is known,
/// UNAUTHENTICATED once revoked.
async fn teller_read(
    t: &TestServer,
    id: &str,
) -> Result<tonic::Response<pb::GetResponse>, tonic::Status> {
    t.teller(id)
        .await
        .get(pb::GetRequest {
            request_id: "0123456789abcdef0123456789abcdef".into(),
        })
        .await
}

async fn reload_directory(t: &TestServer) -> Result<pb::ReloadDirectoryResponse, tonic::Status> {
    let mut admin = t.admin().await;
    let r = admin.reload_directory(pb::ReloadDirectoryRequest {}).await;
    r.map(|r| r.into_inner())
}

async fn reload_policy(t: &TestServer) -> Result<pb::ReloadPolicyResponse, tonic::Status> {
    let mut admin = t.admin().await;
    let r = admin.reload_policy(pb::ReloadPolicyRequest {}).await;
    r.map(|r| r.into_inner())
}

/// Changes the policy file's bytes (so its hash) without changing a rule.
fn touch_policy(t: &TestServer, comment: &str) {
    let path = t.pki.join("policy.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\n# {comment}\n"));
    std::fs::write(&path, text).unwrap();
}

async fn policy_sha256(t: &TestServer) -> (String, usize) {
    let p = t
        .admin()
        .await
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    (p.sha256, p.rule_names.len())
}

async fn the_ledger_records_starts_stops_and_every_reload_with_who_asked() {
    let mut t = TestServer::start().await;
    let directory = t.pki.join("principals.toml");
    let ledger = t.ledger().await;
    assert_eq!(ledger[0].0.kind, "engine_started", "the first record");
    assert!(ledger[0].0.request_id.is_empty());
    assert_eq!(ledger[0].0.actor_id, "system");
    let records = t.engine_records().await;
    assert_eq!(kinds(&records), ["engine_started"]);
    let started = &records[0];
    let (policy, rules) = policy_sha256(&t).await;
    assert_eq!(started["policy_sha256"], policy.as_str());
    assert_eq!(started["directory_sha256"], hex_sha256(&directory).as_str());
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert!(started["actor"].is_null(), "{started}");
    if backend() == Backend::Postgres {
        assert_eq!(started["node"], "node-1");
    } else {
        assert!(!started["node"].as_str().unwrap().is_empty(), "{started}");
    }

    // The duty manager onboards a teller: recorded with who asked and what changed.
    let fp = countersign::tools::pki::issue_client(&t.pki, "teller-99").unwrap();
    let mut text = std::fs::read_to_string(&directory).unwrap();
    text.push_str(&format!(
        "\n[[principals]]\nid = \"teller-99\"\nname = \"New Teller\"\nrole = \"teller\"\n\
         branch = \"BR-0101\"\ncert_sha256 = \"{fp}\"\n"
    ));
    std::fs::write(&directory, &text).unwrap();
    let reloaded = reload_directory(&t).await.unwrap();
    let records = t.engine_records().await;
    assert_eq!(kinds(&records), ["engine_started", "directory_loaded"]);
    let loaded = &records[1];
    assert_eq!(loaded["actor"], "admin-01");
    assert_eq!(loaded["sha256"], reloaded.sha256.as_str());
    assert_eq!(loaded["sha256"], hex_sha256(&directory).as_str());
    assert_eq!(loaded["certificates"], reloaded.certificates);
    assert_eq!(loaded["added"], serde_json::json!(["teller-99"]));
    assert_eq!(loaded["removed"], serde_json::json!([]));
    assert_eq!(loaded["changed"], serde_json::json!([]));

    // A policy reload is recorded before any submission evaluated against it.
    touch_policy(&t, "reviewed 2026-12-07");
    let policy_reloaded = reload_policy(&t).await.unwrap();
    assert_eq!(policy_reloaded.previous_sha256, policy);
    assert_ne!(policy_reloaded.sha256, policy);
    let r = submit(&t, "teller-99", "ER-1").await;
    let ledger = t.ledger().await;
    let at = |kind: &str| ledger.iter().position(|(e, _)| e.kind == kind).unwrap();
    let (policy_event, policy_json) = &ledger[at("policy_loaded")];
    assert_eq!(policy_event.actor_id, "admin-01");
    assert_eq!(
        policy_json["engine"]["sha256"],
        policy_reloaded.sha256.as_str()
    );
    assert_eq!(policy_json["engine"]["rules"], rules);
    let (submitted, json) = &ledger[at("submitted")];
    assert_eq!(submitted.request_id, r.request_id);
    assert!(submitted.index > policy_event.index);
    assert_eq!(
        json["event"]["requirements"]["policy_sha256"],
        policy_reloaded.sha256.as_str()
    );

    // A clean restart: the stop and the new start.
    t.restart().await;
    let records = t.engine_records().await;
    assert_eq!(
        kinds(&records),
        [
            "engine_started",
            "directory_loaded",
            "policy_loaded",
            "engine_stopped",
            "engine_started"
        ]
    );
    // The request's own history holds none of them.
    let history = t.history(&r.request_id).await;
    assert!(history.iter().all(|h| h.get("engine").is_none()));
    t.stop().await;
    let report = t.verify(None);
    assert_eq!(report.problem, None);
    assert_eq!(report.requests, 1);
}

async fn wait_serving(t: &TestServer, serving: bool) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let want = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    } as i32;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ch = countersign::tools::client::channel(t.addr(), &t.pki, "audit-01")
            .await
            .unwrap();
        let status = tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "countersign.v1.TellerService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "health never became {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_reload_that_cannot_be_recorded_is_refused_whole_and_the_outage_is_recorded() {
    let t = TestServer::start().await;
    let (policy, _) = policy_sha256(&t).await;
    let engine = t.server.as_ref().unwrap().engine();
    let before = t.ledger_len();

    // The ledger's disk is full; teller-02 is to be revoked and the policy changed.
    engine.inject_ledger_faults(true);
    remove_principal(&t, "teller-02");
    let refused = reload_directory(&t).await;
    assert_status(refused, Code::Unavailable, "");
    wait_serving(&t, false).await;
    touch_policy(&t, "changed while the disk was full");
    let refused = reload_policy(&t).await;
    assert_status(refused, Code::Unavailable, "cannot write");
    // Nothing changed: teller-02 is still known (a read works), the policy is the old one.
    let got = teller_read(&t, "teller-02").await;
    assert_status(got, Code::NotFound, "");
    assert_eq!(policy_sha256(&t).await.0, policy);
    assert_eq!(t.ledger_len(), before, "nothing was written");

    // Space returns: the outage is recorded, then the reloads go through.
    engine.inject_ledger_faults(false);
    wait_serving(&t, true).await;
    let records = t.engine_records().await;
    assert_eq!(kinds(&records), ["engine_started", "writes_resumed"]);
    let resumed = &records[1];
    assert_eq!(resumed["store"], "ledger");
    assert!(resumed["actor"].is_null());
    let ledger = t.ledger().await;
    let (event, _) = ledger
        .iter()
        .find(|(e, _)| e.kind == "writes_resumed")
        .unwrap();
    let at_ms = event.recorded_at.unwrap().seconds * 1000
        + i64::from(event.recorded_at.unwrap().nanos / 1_000_000);
    let since = resumed["since_ms"].as_i64().unwrap();
    assert!(since <= at_ms, "since {since} after {at_ms}");
    reload_directory(&t).await.unwrap();
    let after = teller_read(&t, "teller-02").await;
    assert_status(after, Code::Unauthenticated, "");
    let records = t.engine_records().await;
    assert_eq!(
        kinds(&records),
        ["engine_started", "writes_resumed", "directory_loaded"]
    );
    assert_eq!(records[2]["removed"], serde_json::json!(["teller-02"]));
}

/// A full image disk refuses Submits, but a revocation needs only the ledger: it is taken and
/// recorded at once, and the outage is recorded once the image log writes again.
async fn a_revocation_is_taken_while_only_the_image_log_cannot_write() {
    let t = TestServer::start().await;
    let engine = t.server.as_ref().unwrap().engine();
    engine.inject_image_faults(true);
    let refused = t
        .teller("teller-01")
        .await
        .submit(crate::fixtures::submit_request(
            "IMG-1",
            "WDL-CASH",
            100,
            "6222020200110002",
        ))
        .await;
    assert_status(refused, Code::Unavailable, "image");
    wait_serving(&t, false).await;
    remove_principal(&t, "teller-02");
    reload_directory(&t)
        .await
        .expect("a revocation does not wait for the image disk");
    let gone = teller_read(&t, "teller-02").await;
    assert_status(gone, Code::Unauthenticated, "");
    engine.inject_image_faults(false);
    wait_serving(&t, true).await;
    let records = t.engine_records().await;
    assert_eq!(
        kinds(&records),
        ["engine_started", "directory_loaded", "writes_resumed"]
    );
    assert_eq!(records[2]["store"], "images");
}

/// Between the engine's stop and the server's (a shutdown's grace period), a reload cannot be
/// recorded: it is refused, and the directory in force stays (it is not a standby's).
async fn a_reload_after_the_engine_stopped_is_refused_not_left_unrecorded() {
    let t = TestServer::start().await;
    remove_principal(&t, "teller-02");
    t.server.as_ref().unwrap().engine().shutdown().await;
    let refused = reload_directory(&t).await;
    assert_status(refused, Code::Unavailable, "");
    // teller-02 is still known (the engine is gone, so the call itself is refused as such).
    let still = teller_read(&t, "teller-02").await.unwrap_err();
    assert_ne!(still.code(), Code::Unauthenticated, "{still:?}");
}
