//! Storage faults: when the ledger, the image log or the projection cannot write (an injected
//! full disk), the server refuses writes with UNAVAILABLE, reports NOT_SERVING, keeps serving
//! reads, and carries on without a restart when the disk can write again, with no gap and no
//! duplicate in the ledger.

use std::time::{Duration, Instant};

use countersign::api::pb;
use tonic::Code;

use crate::fixtures::submit_request;
use crate::harness::*;

async fn health(t: &TestServer) -> i32 {
    let ch = countersign::tools::client::channel(t.addr(), &t.pki, "audit-01")
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "countersign.v1.TellerService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn wait_health(t: &TestServer, want: tonic_health::pb::health_check_response::ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(t).await != want as i32 {
        assert!(Instant::now() < deadline, "health never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_full_disk_refuses_writes_and_recovers_without_a_restart() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut t = TestServer::start().await;
    let a = submit(&t, "teller-01", "F-1").await;
    let engine = t.server.as_ref().unwrap().engine();
    let len = t.ledger_len();

    engine.inject_ledger_faults(true);
    let mut teller = t.teller("teller-01").await;
    let b = submit_request("F-2", "WDL-CASH", 100, "6222020200110002");
    let refused = teller.submit(b.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("ledger"), "{refused:?}");
    wait_health(&t, ServingStatus::NotServing).await;
    // Further writes are refused at once; reads still work.
    assert_status(
        teller
            .submit(submit_request("F-3", "WDL-CASH", 100, "6222020200110002"))
            .await,
        Code::Unavailable,
        "cannot write",
    );
    assert_status(
        teller
            .cancel(pb::CancelRequest {
                request_id: a.request_id.clone(),
                reason: String::new(),
            })
            .await,
        Code::Unavailable,
        "",
    );
    let got = teller
        .get(pb::GetRequest {
            request_id: a.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&got), pb::RequestState::Queued);
    assert_eq!(t.ledger_len(), len, "nothing was written");

    // Space returns: the server serves again by itself.
    engine.inject_ledger_faults(false);
    wait_health(&t, ServingStatus::Serving).await;
    let b2 = teller.submit(b).await.unwrap().into_inner();
    assert!(
        !b2.replayed,
        "the refused submit stored nothing, so this is its first time"
    );
    let a2 = teller
        .submit(submit_request(
            "F-1",
            "WDL-CASH",
            5_000_000,
            "6222020200112233445",
        ))
        .await;
    // F-1 used different image bytes in `submit`, so its serial is taken by other content.
    assert_status(a2, Code::AlreadyExists, "F-1");
    // The lifecycle carries on.
    let mut s = Console::open(&t, "sup-02").await;
    let o = s.next_offer().await;
    assert_eq!(o.request_id, a.request_id);
    s.approve(&o).await;
    drop(s);
    drop(engine);

    t.stop().await;
    let report = t.verify(None);
    assert_eq!(report.problem, None);
    assert_eq!(report.torn_tail, None);
    // Exactly one submitted record per acknowledged submission: no duplicate, no gap.
    let mut submitted = 0;
    for i in 0..report.records {
        let v = t_record(&t, i);
        if v["event"]["type"] == "submitted" {
            submitted += 1;
        }
    }
    assert_eq!(submitted, 2);
    t.restart().await;
}

fn t_record(t: &TestServer, i: u64) -> serde_json::Value {
    serde_json::from_slice(&t.records()[i as usize]).unwrap()
}

crate::on_both_backends!(a_full_disk_refuses_writes_and_recovers_without_a_restart,);

// The image log and sled are the embedded backend's own files; a database's full disk comes
// back as the database's error, handled like any other failure to write.
crate::embedded_only!(a_full_image_log_or_projection_is_survived_without_a_restart,);

/// A full disk under the image log, then under the projection (sled keeps the error it hit,
/// so it must be reopened): each time writes are refused and health says NOT_SERVING, and
/// once space is back the server serves again by itself with nothing acknowledged lost.
async fn a_full_image_log_or_projection_is_survived_without_a_restart() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut t = TestServer::start().await;
    let engine = t.server.as_ref().unwrap().engine();
    let a = submit(&t, "teller-01", "D-1").await;
    let mut teller = t.teller("teller-01").await;

    // The image log's disk is full.
    engine.inject_image_faults(true);
    let b = crate::fixtures::submit_request("D-2", "WDL-CASH", 100, "6222020200110002");
    let refused = teller.submit(b.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("image"), "{refused:?}");
    wait_health(&t, ServingStatus::NotServing).await;
    assert_status(
        teller
            .cancel(pb::CancelRequest {
                request_id: a.request_id.clone(),
                reason: String::new(),
            })
            .await,
        Code::Unavailable,
        "",
    );
    engine.inject_image_faults(false);
    wait_health(&t, ServingStatus::Serving).await;
    let b = teller.submit(b).await.unwrap().into_inner();
    assert!(!b.replayed);

    // sled's disk is full: the next projection batch fails after the records are durable.
    // (An audit read first brings the projection up to date, so the batch that fails is D-3's.)
    t.auditor()
        .await
        .search(pb::SearchRequest::default())
        .await
        .unwrap();
    engine.inject_projection_faults(true);
    let d = submit(&t, "teller-02", "D-3").await;
    wait_health(&t, ServingStatus::NotServing).await;
    assert_status(
        teller
            .submit(crate::fixtures::submit_request(
                "D-4",
                "WDL-CASH",
                100,
                "6222020200110002",
            ))
            .await,
        Code::Unavailable,
        "projection",
    );
    engine.inject_projection_faults(false);
    wait_health(&t, ServingStatus::Serving).await;
    submit(&t, "teller-01", "D-5").await;
    // What was submitted while the projection could not write is there for auditors.
    let found = t
        .auditor()
        .await
        .search(pb::SearchRequest {
            teller_id: "teller-02".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(
        found.iter().any(|r| r.request_id == d.request_id),
        "{found:?}"
    );
    drop(engine);
    t.stop().await;
    let report = t.verify(None);
    assert_eq!(report.problem, None);
    assert_eq!(
        report.requests, 4,
        "A, B, D and D-5: the refused ones stored nothing"
    );
    t.restart().await;
}
