//! After-the-fact review (事后监督): approvals drawn at random by the rule's review_percent
//! (the draw recorded, and recomputed here from the ledger as an auditor would) and every
//! registered fallback go to the reviewers' queue; a reviewer confirms or flags each, once;
//! the statistics count flags by branch, teller and supervisor.

use countersign::api::pb;
use countersign::domain::Timestamp;
use countersign::engine::Clock as _;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::*;

crate::on_both_backends!(drawn_approvals_and_fallbacks_are_reviewed_once_and_counted);

fn reason(s: &tonic::Status) -> String {
    s.get_details_error_info().expect("ErrorInfo").reason
}

async fn review(
    t: &TestServer,
    id: &str,
    outcome: pb::ReviewOutcome,
    comment: &str,
) -> Result<pb::ReviewResponse, tonic::Status> {
    t.reviewer("review-01")
        .await
        .review(pb::ReviewRequest {
            request_id: id.into(),
            outcome: outcome as i32,
            comment: comment.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn queue(t: &TestServer, status: pb::ReviewStatus) -> Vec<String> {
    t.reviewer("review-01")
        .await
        .list_reviews(pb::ListReviewsRequest {
            status: status as i32,
            ..Default::default()
        })
        .await
        .expect("list reviews")
        .into_inner()
        .requests
        .into_iter()
        .map(|r| r.request_id)
        .collect()
}

async fn drawn_approvals_and_fallbacks_are_reviewed_once_and_counted() {
    let mut t = TestServer::start().await;
    let mut sup = Console::open(&t, "sup-01").await;
    // review-all draws every approval; the default rule none.
    let sampled = submit_code(&t, "teller-01", "RV-1", "REVIEWED", 1_000_000).await;
    let o = sup.next_offer().await;
    let approved = sup.approve(&o).await;
    assert_eq!(state(&approved), pb::RequestState::Approved);
    let plain = submit_code(&t, "teller-01", "RV-2", "WDL-CASH", 1_000_000).await;
    let o = sup.next_offer().await;
    sup.approve(&o).await;

    // The draw is in the ledger, and an auditor recomputes it from the approving record.
    let history = t.history(&sampled.request_id).await;
    let kinds: Vec<&str> = history
        .iter()
        .map(|r| r["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"review_drawn"), "{kinds:?}");
    let drawn = &history.last().unwrap()["event"];
    assert_eq!(drawn["reason"], "sampled");
    assert_eq!(drawn["percent"], 100);
    let events = t
        .auditor()
        .await
        .get_request(pb::GetRequestRequest {
            request_id: sampled.request_id.clone(),
        })
        .await
        .expect("history")
        .into_inner()
        .events;
    let decided = events.iter().rev().find(|e| e.kind == "decided").unwrap();
    let leaf = countersign::ledger::merkle::leaf_hash(&decided.record);
    let draw = countersign::ledger::record::review_draw(&leaf);
    assert_eq!(drawn["draw"], format!("{draw:016x}"));
    let kinds = t.history_kinds(&plain.request_id).await;
    assert!(!kinds.contains(&"review_drawn".to_owned()), "{kinds:?}");

    // Every fallback is drawn.
    let cert = countersign::tools::fallback::certificate_der(
        &std::fs::read_to_string(t.pki.join("sup-03.pem")).unwrap(),
    )
    .unwrap();
    let fallback = t
        .teller("teller-01")
        .await
        .register_fallback(
            countersign::tools::fallback::register_request(
                "teller-01",
                crate::fixtures::submit_request(
                    "RV-3",
                    "FALLBACK",
                    2_000_000,
                    "6222020200112233445",
                ),
                "sup-03",
                Timestamp(t.clock.now().0 - 60_000),
                pb::FallbackReason::DeclaredEmergency,
                &cert,
                &std::fs::read_to_string(t.pki.join("sup-03.key")).unwrap(),
            )
            .unwrap(),
        )
        .await
        .expect("register")
        .into_inner()
        .request
        .unwrap();
    let info = fallback.review.expect("review");
    assert_eq!(info.status, pb::ReviewStatus::Pending as i32);
    assert_eq!(info.reason, "fallback");

    // The reviewers' queue: both, and only reviewers may read it.
    let mut pending = queue(&t, pb::ReviewStatus::Pending).await;
    pending.sort();
    let mut both = vec![sampled.request_id.clone(), fallback.request_id.clone()];
    both.sort();
    assert_eq!(pending, both);
    let denied = t
        .reviewer("audit-01")
        .await
        .list_reviews(pb::ListReviewsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A bad filter or page token is named.
    let mut reviewer = t.reviewer("review-01").await;
    let bad = reviewer
        .list_reviews(pb::ListReviewsRequest {
            status: 99,
            ..Default::default()
        })
        .await;
    assert_status(bad, Code::InvalidArgument, "status");
    let bad = reviewer
        .list_reviews(pb::ListReviewsRequest {
            page_token: "not hex".into(),
            ..Default::default()
        })
        .await;
    assert_status(bad, Code::InvalidArgument, "page_token");

    // Refusals store nothing.
    let len = t.ledger_len();
    let s = review(&t, &plain.request_id, pb::ReviewOutcome::Confirmed, "")
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "REVIEW_NOT_DRAWN");
    let s = review(&t, &fallback.request_id, pb::ReviewOutcome::Flagged, " ")
        .await
        .unwrap_err();
    assert_status(Err::<(), _>(s), Code::InvalidArgument, "comment");
    assert_eq!(t.ledger_len(), len);

    // A flag, once; a retry is a replay, another finding is refused.
    let flagged = review(
        &t,
        &fallback.request_id,
        pb::ReviewOutcome::Flagged,
        "the centre was serving: why on site?",
    )
    .await
    .expect("flag");
    assert!(!flagged.replayed);
    let info = flagged.request.unwrap().review.unwrap();
    assert_eq!(info.status, pb::ReviewStatus::Flagged as i32);
    assert_eq!(info.reviewer_id, "review-01");
    let again = review(
        &t,
        &fallback.request_id,
        pb::ReviewOutcome::Flagged,
        "the centre was serving: why on site?",
    )
    .await
    .expect("retry");
    assert!(again.replayed);
    let s = review(&t, &fallback.request_id, pb::ReviewOutcome::Confirmed, "")
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert_eq!(reason(&s), "REVIEW_DONE");

    // After a restart the sampled approval is no longer in memory: it is read back for review.
    t.restart().await;
    let confirmed = review(&t, &sampled.request_id, pb::ReviewOutcome::Confirmed, "")
        .await
        .expect("confirm");
    assert_eq!(
        confirmed.request.unwrap().review.unwrap().status,
        pb::ReviewStatus::Confirmed as i32
    );
    assert!(queue(&t, pb::ReviewStatus::Pending).await.is_empty());
    assert_eq!(
        queue(&t, pb::ReviewStatus::Flagged).await,
        vec![fallback.request_id.clone()]
    );
    // A review changes no outcome.
    let got = t
        .auditor()
        .await
        .get_request(pb::GetRequestRequest {
            request_id: sampled.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&got), pb::RequestState::Approved);
    assert_eq!(got.updated_at, approved.updated_at);

    let stats = t
        .auditor()
        .await
        .get_statistics(pb::GetStatisticsRequest::default())
        .await
        .expect("statistics")
        .into_inner();
    let r = stats.reviews.expect("reviews");
    assert_eq!((r.drawn, r.reviewed, r.flagged), (2, 2, 1));
    let one = |k: &str| [(k.to_string(), 1u64)].into_iter().collect();
    assert_eq!(r.flagged_by_branch, one("BR-0101"));
    assert_eq!(r.flagged_by_teller, one("teller-01"));
    assert_eq!(r.flagged_by_supervisor, one("sup-03"));
    assert_eq!(t.verify(None).problem, None);
}

crate::embedded_only!(a_draw_cut_off_by_a_crash_is_made_again_at_start);

/// A crash can keep an approval as the ledger's last record and lose its review draw, written
/// just after it: the next start makes the draw again, from that record, and the ledger
/// verifies (no draw suppressed).
async fn a_draw_cut_off_by_a_crash_is_made_again_at_start() {
    let mut t = TestServer::start().await;
    let mut sup = Console::open(&t, "sup-01").await;
    let r = submit_code(&t, "teller-01", "RV-C", "REVIEWED", 1_000_000).await;
    let o = sup.next_offer().await;
    sup.approve(&o).await;
    drop(sup);
    t.stop().await;
    // What the crash leaves: the ledger up to the approval, no checkpoint past it, and a
    // projection rebuilt from the ledger.
    let ledger = t.data_dir().join("ledger");
    let seg = std::fs::read_dir(&ledger)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let mut pos = 16;
    let cut = loop {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let payload = &bytes[pos + 16..pos + 16 + len];
        if std::str::from_utf8(payload)
            .unwrap()
            .contains(r#""type":"review_drawn""#)
        {
            break pos;
        }
        pos += 16 + len;
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    std::fs::remove_file(ledger.join("checkpoints.log")).unwrap();
    t.drop_projection();
    assert!(t.verify(None).problem.unwrap().contains("suppressed"));

    t.boot().await;
    let history = t.history(&r.request_id).await;
    let last = &history.last().unwrap()["event"];
    assert_eq!(last["type"], "review_drawn");
    assert_eq!(last["reason"], "sampled");
    assert_eq!(t.verify(None).problem, None);
}
