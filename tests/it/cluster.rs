//! Several nodes on one database (the postgres backend only: the embedded backend is one node
//! by design). A standby serves audits, sends every other caller to the leader with an
//! ErrorInfo, reports health so a load balancer finds the leader, and takes over when the
//! leader stops, carrying the ledger on under a new term.

use std::time::{Duration, Instant};

use countersign::api::Role;
use countersign::api::pb;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::*;

async fn health(t: &TestServer, service: &str) -> i32 {
    let ch = countersign::tools::client::channel(t.addr(), &t.pki, "audit-01")
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// Waits (up to 15 s) until `t` has `role`.
async fn becomes(t: &TestServer, role: Role) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while t.role() != role {
        assert!(
            Instant::now() < deadline,
            "{:?} never became {role:?}",
            t.role()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_standby_serves_audits_names_the_leader_and_takes_over() {
    let mut one = TestServer::start().await;
    assert_eq!(one.role(), Role::Leader);
    let mut sup = Console::open(&one, "sup-01").await;
    let first = submit(&one, "teller-01", "C-1").await;
    let o = sup.next_offer().await;
    sup.approve(&o).await;
    drop(sup);

    let mut two = one.join("node-2").await;
    assert_eq!(
        two.role(),
        Role::Standby {
            leader: Some("node-1.test:7443".into())
        }
    );
    // A client with both addresses finds the leader by health.
    let found = countersign::tools::client::leader(
        &[two.addr(), one.addr()],
        &one.pki,
        "teller-01",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(found, one.addr());
    // Tellers, supervisors and admins are sent to the leader, by name.
    let refused = two
        .teller("teller-01")
        .await
        .submit(crate::fixtures::submit_request(
            "C-2",
            "WDL-CASH",
            5_000_000,
            "6222020200112233445",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    let info = tonic_types::StatusExt::get_details_error_info(&refused).expect("an ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("NOT_LEADER", "countersign.v1")
    );
    assert_eq!(info.metadata["leader"], "node-1.test:7443");
    assert!(
        two.supervisor("sup-01")
            .await
            .attend(pb::AttendRequest {})
            .await
            .is_err_and(|s| s.code() == Code::Unavailable)
    );
    // Health sends a load balancer to the leader; audits are served here.
    for (service, want) in [
        ("", ServingStatus::NotServing),
        ("countersign.v1.TellerService", ServingStatus::NotServing),
        ("countersign.v1.AdminService", ServingStatus::NotServing),
        ("countersign.v1.AuditService", ServingStatus::Serving),
    ] {
        assert_eq!(health(&two, service).await, want as i32, "{service}");
        assert_eq!(health(&one, service).await, ServingStatus::Serving as i32);
    }
    let pki = one.pki.clone();
    let read = |t: &TestServer, id: String| {
        let t = t.addr();
        let pki = pki.clone();
        async move {
            countersign::tools::client::auditor(t, &pki, "audit-01")
                .await
                .unwrap()
                .get_request(pb::GetRequestRequest { request_id: id })
                .await
                .map(|r| r.into_inner().request.unwrap())
        }
    };
    let on_leader = read(&one, first.request_id.clone()).await.unwrap();
    assert_eq!(on_leader.state, pb::RequestState::Approved as i32);
    assert_eq!(
        read(&two, first.request_id.clone()).await.unwrap(),
        on_leader
    );
    // The standby's checkpoint is the leader's, once followed.
    let signed = one
        .auditor()
        .await
        .get_checkpoint(pb::GetCheckpointRequest {
            tree_size: 0,
            refresh: true,
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = two
            .auditor()
            .await
            .get_checkpoint(pb::GetCheckpointRequest {
                tree_size: 0,
                refresh: false,
            })
            .await
            .map(|r| r.into_inner());
        if seen
            .as_ref()
            .is_ok_and(|s| s.signed_note == signed.signed_note)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never followed: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A review in progress and an offer not yet accepted when the leader goes, both under the
    // old term.
    let mut held = Console::open(&one, "sup-01").await;
    let pending = submit(&one, "teller-01", "C-3").await;
    let old = held.next_offer().await;
    assert_eq!(old.request_id, pending.request_id);
    held.accept(&old).await;
    let mut offered_to = Console::open(&one, "sup-02").await;
    let waiting = submit(&one, "teller-01", "C-4").await;
    let old_offer = offered_to.next_offer().await;
    assert_eq!(old_offer.request_id, waiting.request_id);
    // teller-01 watches C-4 and has seen it offered.
    let mut watched = one
        .teller("teller-01")
        .await
        .watch(pb::WatchRequest {
            request_id: waiting.request_id.clone(),
            after_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    let seen = watched.message().await.unwrap().unwrap().request.unwrap();
    assert_eq!(state(&seen), pb::RequestState::Offered);

    // The leader stops cleanly and lets the lease go: the standby takes over.
    let len = one.ledger_len();
    one.stop().await;
    drop((held, offered_to));
    becomes(&two, Role::Leader).await;
    // The offer was withdrawn: its old epoch is refused, and it is offered again under a new
    // one.
    let mut again = Console::open(&two, "sup-02").await;
    let stale = again
        .client
        .accept(pb::AcceptRequest {
            request_id: old_offer.request_id.clone(),
            epoch: old_offer.epoch,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let offered = again.next_offer().await;
    assert_eq!(offered.request_id, waiting.request_id);
    assert!(
        offered.epoch > old_offer.epoch,
        "a new epoch after the takeover"
    );
    again.approve(&offered).await;
    drop(again);
    // The teller's Watch ended with the old leader; resumed on the new one from the version it
    // saw, it is sent every change since, the takeover's withdrawal included.
    let ended = watched.message().await.expect_err("ends with a status");
    assert_eq!(ended.code(), Code::Unavailable);
    let resumed: Vec<pb::RequestState> = two
        .teller("teller-01")
        .await
        .watch(pb::WatchRequest {
            request_id: waiting.request_id.clone(),
            after_version: Some(seen.version),
        })
        .await
        .unwrap()
        .into_inner()
        .map(|w| state(&w.unwrap().request.unwrap()))
        .collect()
        .await;
    assert_eq!(
        resumed,
        [
            pb::RequestState::Queued,
            pb::RequestState::Offered,
            pb::RequestState::InReview,
            pb::RequestState::Approved
        ]
    );
    // The review stayed with sup-01, who is handed it back on the new leader and decides it
    // under the epoch it accepted.
    let mut back = Console::open(&two, "sup-01").await;
    let review = back.next_review().await;
    assert_eq!(
        (review.request_id.as_str(), review.epoch),
        (pending.request_id.as_str(), old.epoch)
    );
    let decided = back
        .decide(&old, pb::Decision::Approve, "", "after takeover")
        .await
        .expect("the review survives the takeover");
    assert_eq!(state(&decided), pb::RequestState::Approved);
    drop(back);
    let found = countersign::tools::client::leader(
        &[two.addr()],
        &one.pki,
        "teller-01",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(found, two.addr());
    assert_eq!(
        health(&two, "countersign.v1.TellerService").await,
        ServingStatus::Serving as i32
    );
    let mut sup = Console::open(&two, "sup-02").await;
    let next = submit(&two, "teller-01", "C-2").await;
    let o = sup.next_offer().await;
    assert_eq!(o.request_id, next.request_id);
    sup.approve(&o).await;
    drop(sup);
    assert!(two.ledger_len() > len, "the ledger carries on");
    assert_eq!(
        read(&two, first.request_id.clone()).await.unwrap(),
        on_leader
    );
    // The first leader comes back as the standby.
    one.restart().await;
    assert_eq!(
        one.role(),
        Role::Standby {
            leader: Some("node-2.test:7443".into())
        }
    );
    two.stop().await;
    one.stop().await;
    let report = one.verify(None);
    assert_eq!(
        report.problem, None,
        "the ledger verifies across both terms"
    );
    assert!(report.checkpoints >= 1);
}

crate::postgres_only!(a_standby_serves_audits_names_the_leader_and_takes_over);

crate::postgres_only!(a_standby_follows_the_leaders_reloads_and_takes_over_with_them);

/// The duty manager reloads the directory and the policy on the leader only: the standby
/// reads the leader's records of it, reloads its own files, and after a takeover dispatches
/// and evaluates with what the leader had in force.
async fn a_standby_follows_the_leaders_reloads_and_takes_over_with_them() {
    let mut one = TestServer::start().await;
    let two = one.join("node-2").await;
    // A new auditor: a standby serves audits itself, so it authenticates them itself.
    let fp = countersign::tools::pki::issue_client(&one.pki, "audit-99").unwrap();
    let audit_99 = |t: &TestServer| {
        let (addr, pki) = (t.addr(), t.pki.clone());
        async move {
            countersign::tools::client::auditor(addr, &pki, "audit-99")
                .await
                .unwrap()
                .search(pb::SearchRequest::default())
                .await
        }
    };
    assert_status(audit_99(&two).await, Code::Unauthenticated, "");
    let path = one.pki.join("principals.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[principals]]\nid = \"audit-99\"\nname = \"New Auditor\"\nrole = \"auditor\"\n\
         branch = \"HQ\"\ncert_sha256 = \"{fp}\"\n"
    ));
    std::fs::write(&path, text).unwrap();
    one.admin()
        .await
        .reload_directory(pb::ReloadDirectoryRequest {})
        .await
        .unwrap();
    let policy_path = one.pki.join("policy.toml");
    let mut policy = std::fs::read_to_string(&policy_path).unwrap();
    policy.push_str("\n# reviewed by the duty manager\n");
    std::fs::write(&policy_path, policy).unwrap();
    let reloaded = one
        .admin()
        .await
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    // The standby follows: the new auditor is served there.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match audit_99(&two).await {
            Ok(_) => break,
            other => assert!(
                Instant::now() < deadline,
                "the standby never followed the reload: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    one.stop().await;
    becomes(&two, Role::Leader).await;
    let r = submit(&two, "teller-01", "F-1").await;
    assert_eq!(
        r.policy_sha256, reloaded.sha256,
        "the new leader evaluates with the policy the old one had reloaded"
    );
}
