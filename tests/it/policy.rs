//! Authorization policy and independent dispatch at the gRPC boundary: authority levels and
//! ceilings, dual control, escalation, expiry, priority, pause, the concurrency limit, queue
//! visibility, policy reloads, statistics, and uniform random assignment. The RNG is seeded
//! and the clock is manual: nothing here depends on timing.

use countersign::api::pb;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::fixtures::submit_request;
use crate::harness::*;

async fn dual_control_needs_a_second_different_supervisor() {
    let t = TestServer::start().await;
    // sup-01 gets a second certificate (a renewal): same principal, another key.
    let fp = countersign::tools::pki::issue_client(&t.pki, "sup-01-renewed").unwrap();
    let mut dir = std::fs::read_to_string(t.pki.join("principals.toml")).unwrap();
    dir.push_str(&format!(
        "\n[[principals]]\nid = \"sup-01\"\nname = \"Chen Jianguo\"\nrole = \"supervisor\"\nbranch = \"CENTRE\"\ncert_sha256 = \"{fp}\"\nlevel = 3\nceilings = {{ CNY = 100000000000, USD = 10000000000 }}\n"
    ));
    std::fs::write(t.pki.join("principals.toml"), dir).unwrap();
    let mut t = t;
    t.config.directory = countersign::api::Directory::load(&t.pki.join("principals.toml")).unwrap();
    t.restart().await;

    let r = submit_code(&t, "teller-01", "D-1", "DUAL", 100_000).await;
    assert_eq!(r.approvals_needed, 2);
    let mut watch = t
        .teller("teller-01")
        .await
        .watch(pb::WatchRequest {
            request_id: r.request_id.clone(),
            after_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut a = Console::open(&t, "sup-01").await;
    let o = a.next_offer().await;
    let after_first = a.approve(&o).await;
    assert_eq!(
        state(&after_first),
        pb::RequestState::Queued,
        "one approval of two: back to the queue"
    );
    assert_eq!(after_first.approvals.len(), 1);
    // The teller sees "1 of 2 approvals".
    let mut one_of_two = false;
    while let Some(w) = watch.next().await {
        let v = w.unwrap().request.unwrap();
        if v.approvals.len() == 1
            && v.approvals_needed == 2
            && state(&v) == pb::RequestState::Queued
        {
            one_of_two = true;
            break;
        }
    }
    assert!(one_of_two);
    // The same person is never offered it again, not even through the renewed certificate.
    a.expect_quiet(300).await;
    drop(a);
    let mut renewed_client =
        countersign::tools::client::supervisor(t.addr(), &t.pki, "sup-01-renewed")
            .await
            .unwrap();
    let mut renewed = renewed_client
        .attend(pb::AttendRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), renewed.message())
            .await
            .is_err()
    );
    // A second, different supervisor completes it.
    let mut b = Console::open(&t, "sup-02").await;
    let o2 = b.next_offer().await;
    assert_eq!(
        (o2.request_id.as_str(), o2.epoch),
        (r.request_id.as_str(), 2)
    );
    let done = b.approve(&o2).await;
    assert_eq!(state(&done), pb::RequestState::Approved);
    assert_eq!(done.approvals.len(), 1);
    assert_eq!(done.decision.unwrap().supervisor_id, "sup-02");

    // A rejection by the second approver ends a dual-control request.
    drop(renewed);
    wait_offline(&t, "sup-01").await;
    let r2 = submit_code(&t, "teller-01", "D-2", "DUAL", 100_000).await;
    let o = b.next_offer().await;
    b.approve(&o).await;
    let mut c = Console::open(&t, "sup-05").await;
    let o = c.next_offer().await;
    assert_eq!(o.request_id, r2.request_id);
    c.accept(&o).await;
    let rejected = c
        .decide(&o, pb::Decision::Reject, "LIMIT", "no")
        .await
        .unwrap();
    assert_eq!(state(&rejected), pb::RequestState::Rejected);
}

async fn supervisors_are_offered_only_what_their_level_and_ceiling_allow() {
    let t = TestServer::start().await;
    // sup-05 is level 1 with a CNY 100,000.00 ceiling.
    let mut low = Console::open(&t, "sup-05").await;
    let big = submit_code(&t, "teller-01", "L-1", "BIG", 100_000).await;
    assert_eq!(big.level_needed, 2);
    let over = submit_code(&t, "teller-01", "L-2", "WDL-CASH", 20_000_000).await;
    low.expect_quiet(300).await;
    let mut high = Console::open(&t, "sup-04").await;
    let o = high.next_offer().await;
    assert_eq!(o.request_id, big.request_id, "oldest first");
    assert_eq!(o.candidate_pool_size, 1);
    high.approve(&o).await;
    let o = high.next_offer().await;
    assert_eq!(o.request_id, over.request_id);
    // The candidate pool and the choice are in the ledger.
    let offered = t
        .history(&o.request_id)
        .await
        .into_iter()
        .find(|v| v["event"]["type"] == "offered")
        .unwrap();
    assert_eq!(
        (
            offered["event"]["pool_size"].as_u64(),
            offered["event"]["supervisor"].as_str()
        ),
        (Some(1), Some("sup-04"))
    );
    // A small one goes to the level-1 supervisor.
    let small = submit_code(&t, "teller-01", "L-3", "WDL-CASH", 50_000).await;
    let o = low.next_offer().await;
    assert_eq!(o.request_id, small.request_id);
}

async fn escalation_after_declines_and_after_a_wait() {
    let t = TestServer::start().await;
    let r = submit_code(&t, "teller-01", "E-1", "ESC-DECL", 100_000).await;
    let mut a = Console::open(&t, "sup-05").await;
    let mut b = Console::open(&t, "sup-02").await;
    for _ in 0..2 {
        let (o, a_got) =
            tokio::select! { o = a.next_offer() => (o, true), o = b.next_offer() => (o, false) };
        let c = if a_got { &mut a } else { &mut b };
        c.decline(&o).await;
    }
    let h = t.history(&r.request_id).await;
    let e = h
        .iter()
        .find(|v| v["event"]["type"] == "escalated")
        .expect("escalated after two declines");
    assert_eq!(
        (e["event"]["level"].as_u64(), e["event"]["reason"].as_str()),
        (Some(2), Some("declined"))
    );
    // Level 2 now: sup-05 (level 1) is not eligible, sup-04 (level 2) is.
    let mut low = Console::open(&t, "sup-05").await;
    low.expect_quiet(300).await;
    let mut c = Console::open(&t, "sup-04").await;
    let o = c.next_offer().await;
    assert_eq!(o.request_id, r.request_id);
    c.accept(&o).await;
    c.decide(&o, pb::Decision::Approve, "", "").await.unwrap();

    // Nobody in the directory holds level 4: a level-3 request declined past its trigger stays
    // at 3 and goes to the other level-3 supervisor.
    let top = submit_code(&t, "teller-01", "E-3", "ESC-TOP", 100_000).await;
    drop((a, b, low, c));
    let mut s1 = Console::open(&t, "sup-01").await;
    let o = s1.next_offer().await;
    assert_eq!(o.request_id, top.request_id);
    s1.decline(&o).await;
    let mut s2 = Console::open(&t, "sup-02").await;
    assert_eq!(s2.next_offer().await.request_id, top.request_id);
    let h = t.history(&top.request_id).await;
    assert!(
        h.iter().all(|v| v["event"]["type"] != "escalated"),
        "escalated past the highest level held: {h:?}"
    );
    drop((s1, s2));

    // Waiting unaccepted for escalate_after_ms raises the level too, from ledger times.
    let w = submit_code(&t, "teller-02", "E-2", "ESC-WAIT", 100_000).await;
    t.clock.advance_ms(60_001);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let h = t.history(&w.request_id).await;
        if let Some(e) = h.iter().find(|v| v["event"]["type"] == "escalated") {
            assert_eq!(e["event"]["reason"], "waited");
            assert_eq!(e["actor"], serde_json::Value::Null);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no escalation after the wait"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn a_request_not_decided_by_its_deadline_expires_and_survives_restart_timing() {
    let mut t = TestServer::start().await;
    let r = submit_code(&t, "teller-01", "X-1", "SHORT", 100_000).await;
    let held = submit_code(&t, "teller-01", "X-2", "SHORT", 100_000).await;
    let mut s = Console::open(&t, "sup-05").await;
    let o = s.next_offer().await;
    assert_eq!(o.request_id, r.request_id);
    s.accept(&o).await;
    // The deadline is derived from the Submitted record's time: a restart does not reset it.
    drop(s);
    t.restart().await;
    let mut watch = t
        .teller("teller-01")
        .await
        .watch(pb::WatchRequest {
            request_id: held.request_id.clone(),
            after_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    t.clock.advance_ms(120_001);
    let mut last = None;
    while let Some(w) = watch.next().await {
        last = Some(state(&w.unwrap().request.unwrap()));
    }
    assert_eq!(last, Some(pb::RequestState::Expired), "the teller is told");
    let got = t
        .teller("teller-01")
        .await
        .get(pb::GetRequest {
            request_id: r.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&got), pb::RequestState::Expired);
}

async fn an_expired_review_is_taken_from_the_supervisor() {
    let t = TestServer::start().await;
    let r = submit_code(&t, "teller-01", "X-3", "SHORT", 100_000).await;
    let mut s = Console::open(&t, "sup-05").await;
    let o = s.next_offer().await;
    s.accept(&o).await;
    t.clock.advance_ms(120_001);
    match s.next().await {
        pb::attend_response::Event::Withdrawn(w) => assert_eq!(
            (w.request_id.as_str(), w.reason.as_str()),
            (r.request_id.as_str(), "expired")
        ),
        other => panic!("expected a withdrawal, got {other:?}"),
    }
    assert_status(
        s.decide(&o, pb::Decision::Approve, "", "").await,
        Code::FailedPrecondition,
        "",
    );
}

async fn higher_priority_first_then_older() {
    let t = TestServer::start().await;
    let a = submit_code(&t, "teller-01", "P-1", "WDL-CASH", 100_000).await;
    let b = submit_code(&t, "teller-01", "P-2", "URGENT", 100_000).await;
    let c = submit_code(&t, "teller-02", "P-3", "WDL-CASH", 100_000).await;
    let d = submit_code(&t, "teller-02", "P-4", "URGENT", 100_000).await;
    let mut s = Console::open(&t, "sup-02").await;
    let mut order = Vec::new();
    for _ in 0..4 {
        let o = s.next_offer().await;
        order.push(o.request_id.clone());
        s.approve(&o).await;
    }
    assert_eq!(
        order,
        [b.request_id, d.request_id, a.request_id, c.request_id]
    );
}

async fn pause_stops_offers_without_closing_the_stream() {
    let t = TestServer::start().await;
    let mut none = t.supervisor("sup-02").await;
    assert_status(
        none.pause(pb::PauseRequest {}).await,
        Code::FailedPrecondition,
        "Attend",
    );
    let mut s = Console::open(&t, "sup-02").await;
    s.client.pause(pb::PauseRequest {}).await.unwrap();
    let r = submit_code(&t, "teller-01", "Z-1", "WDL-CASH", 100_000).await;
    s.expect_quiet(300).await;
    let status = t.queue_status().await;
    let me = supervisor_state(&status, "sup-02");
    assert!(me.online && me.paused);
    s.client.resume(pb::ResumeRequest {}).await.unwrap();
    assert_eq!(s.next_offer().await.request_id, r.request_id);
}

/// The duty manager pauses and resumes a supervisor: offers stop and start, the supervisor's
/// console is told who did it, and the ledger records both as the duty manager's.
async fn a_duty_manager_pauses_a_supervisor_and_it_is_recorded() {
    let t = TestServer::start().await;
    let mut admin = t.admin().await;
    let pause = |id: &str| pb::PauseSupervisorRequest {
        supervisor_id: id.into(),
    };
    assert_status(
        admin.pause_supervisor(pause("teller-01")).await,
        Code::InvalidArgument,
        "supervisor_id",
    );
    assert_status(
        admin.pause_supervisor(pause("sup-02")).await,
        Code::FailedPrecondition,
        "Attend",
    );
    let mut teller_as_admin = countersign::api::pb::admin_service_client::AdminServiceClient::new(
        countersign::tools::client::channel(t.addr(), &t.pki, "teller-01")
            .await
            .unwrap(),
    );
    assert_status(
        teller_as_admin.pause_supervisor(pause("sup-02")).await,
        Code::PermissionDenied,
        "has role teller",
    );

    let mut s = Console::open(&t, "sup-02").await;
    admin.pause_supervisor(pause("sup-02")).await.unwrap();
    // A second pause of the paused (a double click) changes and records nothing.
    admin.pause_supervisor(pause("sup-02")).await.unwrap();
    match s.next().await {
        pb::attend_response::Event::Presence(p) => {
            assert!(p.paused);
            assert_eq!(p.by, "admin-01");
        }
        other => panic!("expected a presence change, got {other:?}"),
    }
    let r = submit_code(&t, "teller-01", "Z-2", "WDL-CASH", 100_000).await;
    s.expect_quiet(300).await;
    assert!(supervisor_state(&t.queue_status().await, "sup-02").paused);
    admin
        .resume_supervisor(pb::ResumeSupervisorRequest {
            supervisor_id: "sup-02".into(),
        })
        .await
        .unwrap();
    match s.next().await {
        pb::attend_response::Event::Presence(p) => assert!(!p.paused),
        other => panic!("expected a presence change, got {other:?}"),
    }
    assert_eq!(s.next_offer().await.request_id, r.request_id);
    let recorded: Vec<_> = t
        .engine_records()
        .await
        .into_iter()
        .filter(|e| e["type"] == "supervisor_paused")
        .map(|e| {
            (
                e["actor"].clone(),
                e["supervisor"].clone(),
                e["paused"].clone(),
            )
        })
        .collect();
    assert_eq!(
        recorded,
        [
            (json!("admin-01"), json!("sup-02"), json!(true)),
            (json!("admin-01"), json!("sup-02"), json!(false)),
        ]
    );
}

/// A console whose connection goes silent (a cut line or a firewall dropping state: no FIN,
/// no RST) stops counting as present once the server's keepalive PING goes unanswered: its
/// offer is withdrawn and goes to a supervisor who is there.
async fn a_console_that_vanished_silently_is_noticed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = TestServer::start_with(&|s| {
        s.replace(
            "keepalive_interval_ms = 30000",
            "keepalive_interval_ms = 300",
        )
        .replace("keepalive_timeout_ms = 10000", "keepalive_timeout_ms = 300")
    })
    .await;
    // A proxy on loopback whose forwarding can be frozen: its sockets stay open, nothing passes.
    let frozen = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let server = t.addr();
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::TcpStream::connect(server).await.unwrap();
            let ((cr, cw), (sr, sw)) = (client.into_split(), upstream.into_split());
            tokio::spawn(pipe(cr, sw, f.clone()));
            tokio::spawn(pipe(sr, cw, f.clone()));
        }
    });
    let mut away = countersign::tools::client::supervisor(proxy, &t.pki, "sup-01")
        .await
        .unwrap();
    let mut stream = away
        .attend(pb::AttendRequest {})
        .await
        .unwrap()
        .into_inner();
    let r = submit(&t, "teller-01", "K-1").await;
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(pb::attend_response::Event::Offer(_))
    ));
    // The line goes silent; a supervisor who is there is waiting.
    frozen.store(true, Ordering::Relaxed);
    let mut here = Console::open(&t, "sup-02").await;
    let o = here.next_offer().await;
    assert_eq!(
        o.request_id, r.request_id,
        "the vanished console's offer moved on"
    );
    let status = t.queue_status().await;
    let gone = supervisor_state(&status, "sup-01");
    assert!(!gone.online, "sup-01 no longer counts as present");
}

/// Copies `from` to `to` while `frozen` is false; while it is true, holds what it read.
async fn pipe(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn the_task_limit_holds_under_many_concurrent_accepts() {
    let t = TestServer::start_with(&|s| {
        s.replace("supervisor_tasks_max = 1", "supervisor_tasks_max = 2")
    })
    .await;
    for i in 0..5 {
        submit_code(&t, "teller-01", &format!("C-{i}"), "WDL-CASH", 100_000).await;
    }
    let mut s = Console::open(&t, "sup-02").await;
    let o1 = s.next_offer().await;
    let o2 = s.next_offer().await;
    s.expect_quiet(300).await;
    // Twenty concurrent Accepts of the two offers (and of wrong epochs) from the same console.
    let mut calls = Vec::new();
    for i in 0..20u64 {
        let mut c = s.client.clone();
        let (id, epoch) = match i % 4 {
            0 => (o1.request_id.clone(), o1.epoch),
            1 => (o2.request_id.clone(), o2.epoch),
            2 => (o1.request_id.clone(), o1.epoch + 1),
            _ => (o2.request_id.clone(), 0),
        };
        let right = i % 4 < 2;
        calls.push(tokio::spawn(async move {
            let r = c
                .accept(pb::AcceptRequest {
                    request_id: id,
                    epoch,
                })
                .await
                .map(|r| r.into_inner().replayed);
            (right, r)
        }));
    }
    let (mut accepted, mut replayed) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            (true, Ok(false)) => accepted += 1,
            // The same Accept again: answered as the one that took effect, nothing recorded.
            (true, Ok(true)) => replayed += 1,
            (false, Ok(r)) => panic!("a wrong epoch was accepted (replayed {r})"),
            (_, Err(st)) => assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}"),
        }
    }
    assert_eq!(accepted, 2, "each offer is accepted exactly once");
    assert_eq!(
        replayed, 8,
        "the other Accepts of the right epochs are replays"
    );
    s.expect_quiet(200).await;
    let status = t.queue_status().await;
    let me = supervisor_state(&status, "sup-02");
    assert_eq!(me.tasks, 2);
    assert_eq!((status.in_review, status.queued), (2, 3));
    // Deciding one frees exactly one slot.
    s.decide(&o1, pb::Decision::Approve, "", "").await.unwrap();
    s.next_offer().await;
    s.expect_quiet(200).await;
}

async fn the_duty_manager_sees_the_queue_exactly() {
    let t = TestServer::start().await;
    assert_status(
        t.auditor()
            .await
            .get_request(pb::GetRequestRequest {
                request_id: "0".repeat(32),
            })
            .await,
        Code::NotFound,
        "",
    );
    assert_status(
        countersign::api::pb::admin_service_client::AdminServiceClient::new(
            countersign::tools::client::channel(t.addr(), &t.pki, "audit-01")
                .await
                .unwrap(),
        )
        .get_queue_status(pb::GetQueueStatusRequest {})
        .await,
        Code::PermissionDenied,
        "",
    );
    submit_code(&t, "teller-01", "Q-1", "WDL-CASH", 100_000).await;
    submit_code(&t, "teller-01", "Q-2", "BIG", 100_000).await;
    submit_code(&t, "teller-01", "Q-3", "URGENT", 100_000).await;
    t.clock.advance_ms(5_000);
    let mut s = Console::open(&t, "sup-05").await;
    let o = s.next_offer().await;
    s.approve(&o).await;
    let o = s.next_offer().await;
    s.decline(&o).await;
    let st = t.queue_status().await;
    let depth: Vec<_> = st
        .depth
        .iter()
        .map(|d| (d.level, d.priority, d.count))
        .collect();
    assert_eq!(depth, [(1, 0, 1), (2, 0, 1)]);
    assert_eq!(st.queued, 2);
    assert_eq!(st.oldest_waiting_ms, 5_000);
    let me = supervisor_state(&st, "sup-05");
    assert_eq!((me.online, me.paused, me.tasks), (true, false, 0));
    assert_eq!(
        (
            me.offers_today,
            me.accepts_today,
            me.approvals_today,
            me.declines_today
        ),
        (2, 1, 1, 1)
    );
    // The counts are rebuilt from the day's records after a restart.
    drop(s);
    let mut t = t;
    t.restart().await;
    let st = t.queue_status().await;
    let me = supervisor_state(&st, "sup-05");
    assert_eq!(
        (
            me.online,
            me.offers_today,
            me.approvals_today,
            me.declines_today
        ),
        (false, 2, 1, 1)
    );
    assert_eq!(st.unservable, 0);
    // Over every supervisor's ceiling (the highest is CNY 1,000,000,000.00): nobody in the
    // directory may take it, and the duty manager is told which request waits for nothing.
    let huge = submit_code(&t, "teller-01", "Q-4", "WDL-CASH", 500_000_000_000).await;
    let st = t.queue_status().await;
    assert_eq!(
        (st.unservable, st.unservable_request_ids),
        (1, vec![huge.request_id])
    );
}

async fn the_policy_is_recorded_read_back_and_reloaded_for_new_submissions_only() {
    let t = TestServer::start().await;
    let mut admin = t.admin().await;
    let p = admin
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.text, TEST_POLICY);
    assert!(p.rule_names.contains(&"dual".to_string()));
    let before = submit_code(&t, "teller-01", "R-1", "DUAL", 100_000).await;
    let rec = &t.history(&before.request_id).await[0];
    assert_eq!(
        rec["event"]["requirements"]["policy_sha256"],
        p.sha256.as_str()
    );
    assert_eq!(rec["event"]["requirements"]["rule"], "dual");
    // A broken file is refused whole; the old policy stays.
    std::fs::write(
        t.pki.join("policy.toml"),
        TEST_POLICY.replace("approvals = 2", "approvals = 7"),
    )
    .unwrap();
    assert_status(
        admin.reload_policy(pb::ReloadPolicyRequest {}).await,
        Code::InvalidArgument,
        "rules[0] \"dual\".approvals",
    );
    assert_eq!(
        admin
            .get_policy(pb::GetPolicyRequest {})
            .await
            .unwrap()
            .into_inner()
            .sha256,
        p.sha256
    );
    // A good one applies to new submissions; earlier ones keep what they were given.
    std::fs::write(
        t.pki.join("policy.toml"),
        TEST_POLICY.replace("approvals = 2", "approvals = 1"),
    )
    .unwrap();
    let reloaded = admin
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.previous_sha256, p.sha256);
    assert_ne!(reloaded.sha256, p.sha256);
    let after = submit_code(&t, "teller-01", "R-2", "DUAL", 100_000).await;
    assert_eq!((before.approvals_needed, after.approvals_needed), (2, 1));
    let again = t
        .teller("teller-01")
        .await
        .get(pb::GetRequest {
            request_id: before.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(again.approvals_needed, 2);
}

async fn a_request_no_rule_matches_is_refused_and_a_bad_policy_never_starts() {
    let t = TestServer::start_with(&|s| s).await;
    std::fs::write(
        t.pki.join("policy.toml"),
        TEST_POLICY.replace("allow = true", "allow = false"),
    )
    .unwrap();
    t.admin()
        .await
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap();
    let len = t.ledger_len();
    assert_status(
        t.teller("teller-01")
            .await
            .submit(submit_request(
                "N-1",
                "UNKNOWN-CODE",
                100,
                "6222020200110002",
            ))
            .await,
        Code::InvalidArgument,
        "transaction.code: no policy rule matches",
    );
    assert_eq!(t.ledger_len(), len);
    // The server refuses to start with a half-valid policy, naming the rule and field.
    std::fs::write(
        t.pki.join("policy.toml"),
        TEST_POLICY.replace("priority = 9", "priority = 99"),
    )
    .unwrap();
    let err = countersign::config::Config::parse(&t.config_text(&|s| s), &t.pki)
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("rules[2] \"urgent\".priority"),
        "{err:#}"
    );
}

async fn random_assignment_is_uniform_over_eligible_supervisors() {
    let t = TestServer::start().await;
    // Four eligible supervisors for teller-01 (BR-0101); sup-03 is of BR-0101 and never drawn.
    let ids = ["sup-01", "sup-02", "sup-04", "sup-05", "sup-03"];
    let mut consoles = Vec::new();
    for id in ids {
        consoles.push(Console::open(&t, id).await);
    }
    let draws = 200;
    let mut counts = [0u64; 5];
    for i in 0..draws {
        submit_code(&t, "teller-01", &format!("U-{i}"), "WDL-CASH", 100_000).await;
        // Exactly one console gets the offer; find it and decide, so all are free again.
        let (k, o) = loop {
            let mut got = None;
            for (k, c) in consoles.iter_mut().enumerate() {
                if let Ok(Ok(Some(m))) =
                    tokio::time::timeout(std::time::Duration::from_millis(5), c.stream.message())
                        .await
                    && let Some(pb::attend_response::Event::Offer(o)) = m.event
                {
                    got = Some((k, o));
                    break;
                }
            }
            if let Some(g) = got {
                break g;
            }
        };
        assert_eq!(o.candidate_pool_size, 4);
        counts[k] += 1;
        consoles[k].approve(&o).await;
    }
    assert_eq!(
        counts[4], 0,
        "a supervisor of the teller's branch is never drawn"
    );
    let observed = &counts[..4];
    let chi = countersign::engine::stats::chi_square(observed);
    let critical = countersign::engine::stats::chi_square_critical_999(3);
    assert!(
        chi < critical,
        "chi-square {chi:.2} >= {critical:.2} for {observed:?}"
    );
    assert!(observed.iter().all(|&c| c > 0));
}

async fn statistics_count_outcomes_and_flag_an_unusual_pair() {
    let t = TestServer::start().await;
    // teller-01's requests go only to sup-01 and teller-02's only to sup-02 (each is alone
    // online when they arrive): far from what random assignment over both would give.
    for (teller, sup, n) in [("teller-01", "sup-01", 20), ("teller-02", "sup-02", 20)] {
        let mut s = Console::open(&t, sup).await;
        for i in 0..n {
            submit_code(&t, teller, &format!("{teller}-{i}"), "WDL-CASH", 100_000).await;
            let o = s.next_offer().await;
            s.accept(&o).await;
            let d = if i % 5 == 0 {
                pb::Decision::Reject
            } else {
                pb::Decision::Approve
            };
            s.decide(
                &o,
                d,
                if d == pb::Decision::Reject {
                    "LIMIT"
                } else {
                    ""
                },
                "c",
            )
            .await
            .unwrap();
            t.clock.advance_ms(1000);
        }
        drop(s);
        wait_offline(&t, sup).await;
    }
    let st = t
        .auditor()
        .await
        .get_statistics(pb::GetStatisticsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.requests, 40);
    assert_eq!(
        (st.by_outcome["approved"], st.by_outcome["rejected"]),
        (32, 8)
    );
    assert_eq!(st.by_branch["BR-0101"], 40);
    assert_eq!(
        (st.by_supervisor["sup-01"], st.by_supervisor["sup-02"]),
        (20, 20)
    );
    assert_eq!(st.wait.unwrap().count, 40);
    let rate = st
        .branch_rejection
        .iter()
        .find(|b| b.branch_id == "BR-0101")
        .unwrap();
    assert_eq!((rate.approved, rate.rejected), (32, 8));
    assert!((rate.rate - 0.2).abs() < 1e-9);
    let pair = st
        .unusual_pairs
        .iter()
        .find(|p| p.teller_id == "teller-01" && p.supervisor_id == "sup-01")
        .expect("the planted pair is flagged");
    assert_eq!(pair.observed, 20);
    // teller-01's own decisions are left out of the reference: it is teller-02's 20, all by
    // sup-02, so sup-01's smoothed share is (0 + 1) / (20 + 2).
    assert!((pair.expected - 20.0 / 22.0).abs() < 1e-9, "{pair:?}");
    assert!(pair.z > 19.0, "{pair:?}");
}

/// Waits (bounded) until the server has noticed that a supervisor's stream closed.
async fn wait_offline(t: &TestServer, id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = t.queue_status().await;
        if !st
            .supervisors
            .iter()
            .any(|s| s.supervisor_id == id && s.online)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} still online after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn a_supervisor_who_accepts_and_never_decides_loses_the_request() {
    let t = TestServer::start().await;
    let r = submit_code(&t, "teller-01", "RT-1", "WDL-CASH", 100_000).await;
    let mut a = Console::open(&t, "sup-02").await;
    let o = a.next_offer().await;
    a.accept(&o).await;
    let mut b = Console::open(&t, "sup-05").await;
    b.expect_quiet(100).await;
    t.clock.advance_ms(600_001);
    match a.next().await {
        pb::attend_response::Event::Withdrawn(w) => assert_eq!(
            (w.request_id.as_str(), w.reason.as_str()),
            (r.request_id.as_str(), "review_timeout")
        ),
        other => panic!("expected a withdrawal, got {other:?}"),
    }
    // It goes to the other supervisor, and the late decision is refused.
    let o2 = b.next_offer().await;
    assert_eq!(
        (o2.request_id.as_str(), o2.epoch),
        (r.request_id.as_str(), 2)
    );
    assert_status(
        a.decide(&o, pb::Decision::Approve, "", "late").await,
        Code::FailedPrecondition,
        "",
    );
}

crate::on_both_backends!(
    dual_control_needs_a_second_different_supervisor,
    supervisors_are_offered_only_what_their_level_and_ceiling_allow,
    escalation_after_declines_and_after_a_wait,
    a_request_not_decided_by_its_deadline_expires_and_survives_restart_timing,
    an_expired_review_is_taken_from_the_supervisor,
    higher_priority_first_then_older,
    pause_stops_offers_without_closing_the_stream,
    a_duty_manager_pauses_a_supervisor_and_it_is_recorded,
    the_task_limit_holds_under_many_concurrent_accepts,
    a_console_that_vanished_silently_is_noticed,
    the_duty_manager_sees_the_queue_exactly,
    the_policy_is_recorded_read_back_and_reloaded_for_new_submissions_only,
    a_request_no_rule_matches_is_refused_and_a_bad_policy_never_starts,
    random_assignment_is_uniform_over_eligible_supervisors,
    statistics_count_outcomes_and_flag_an_unusual_pair,
    a_supervisor_who_accepts_and_never_decides_loses_the_request,
);
