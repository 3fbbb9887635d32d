//! The lifecycle end to end: submit, offer, accept, decide, return and resubmit, decline,
//! timeouts, disconnects, cancellation, and the teller's Watch.

use countersign::api::pb;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::fixtures::{fake_jpeg, submit_request};
use crate::harness::*;

async fn approve_end_to_end_with_watch_and_audit() {
    let t = TestServer::start().await;
    let mut teller = t.teller("teller-01").await;
    let req = submit_request("BR0101-0001", "WDL-CASH", 8_000_000, "6222020200112233445");
    let voucher = req.images[0].content.clone();
    let submitted = teller.submit(req).await.unwrap().into_inner();
    assert!(!submitted.replayed);
    let r = submitted.request.unwrap();
    assert_eq!(
        state(&r),
        pb::RequestState::Queued,
        "nobody is attending yet"
    );
    let mut watch = teller
        .watch(pb::WatchRequest {
            request_id: r.request_id.clone(),
            after_version: None,
        })
        .await
        .unwrap()
        .into_inner();

    let mut sup = Console::open(&t, "sup-01").await;
    let offer = sup.next_offer().await;
    assert_eq!(offer.request_id, r.request_id);
    assert_eq!(offer.epoch, 1);
    assert_eq!(offer.candidate_pool_size, 1);
    let offered = offer.request.clone().unwrap();
    assert_eq!(
        offered
            .transaction
            .as_ref()
            .unwrap()
            .amount
            .as_ref()
            .unwrap()
            .minor_units,
        8_000_000
    );
    assert_eq!(
        offered.customer.as_ref().unwrap().document_number,
        "11010519491231002X"
    );
    assert_eq!(offered.images.len(), 2);
    assert!(offered.note.contains("house deposit"));

    let in_review = sup.accept(&offer).await;
    assert_eq!(state(&in_review), pb::RequestState::InReview);
    let img = sup
        .client
        .get_offer_image(pb::GetOfferImageRequest {
            request_id: offer.request_id.clone(),
            sha256: offered.images[0].sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(img.content, voucher);
    assert_eq!(
        hex::encode(Sha256::digest(&img.content)),
        offered.images[0].sha256
    );

    let decided = sup
        .decide(&offer, pb::Decision::Approve, "", "signature matches")
        .await
        .unwrap();
    assert_eq!(state(&decided), pb::RequestState::Approved);
    assert_eq!(decided.decision.as_ref().unwrap().supervisor_id, "sup-01");

    let mut seen = Vec::new();
    while let Some(w) = watch.next().await {
        seen.push(state(&w.unwrap().request.unwrap()));
    }
    assert_eq!(
        seen,
        [
            pb::RequestState::Queued,
            pb::RequestState::Offered,
            pb::RequestState::InReview,
            pb::RequestState::Approved
        ],
        "the watch sees every state and ends after the final one"
    );

    let got = teller
        .get(pb::GetRequest {
            request_id: r.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&got), pb::RequestState::Approved);

    let mut auditor = t.auditor().await;
    let history = auditor
        .get_request(pb::GetRequestRequest {
            request_id: r.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = history.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["submitted", "offered", "accepted", "decided"]);
    let actors: Vec<_> = history.events.iter().map(|e| e.actor_id.as_str()).collect();
    assert_eq!(actors, ["teller-01", "system", "sup-01", "sup-01"]);
    for e in &history.events {
        let v: serde_json::Value = serde_json::from_slice(&e.record).unwrap();
        assert_eq!(v["request"], r.request_id.as_str());
    }
    let image = auditor
        .get_image(pb::GetImageRequest {
            sha256: offered.images[0].sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(image.content, voucher);
}

async fn retried_submit_returns_the_same_request_and_stores_nothing() {
    let t = TestServer::start().await;
    let mut teller = t.teller("teller-01").await;
    let req = submit_request("BR0101-0002", "WDL-CASH", 5_000_000, "6222020200112233445");
    let first = teller.submit(req.clone()).await.unwrap().into_inner();
    let len = t.ledger_len();
    let again = teller.submit(req.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(
        again.request.unwrap().request_id,
        first.request.as_ref().unwrap().request_id
    );
    assert_eq!(t.ledger_len(), len, "a retry appends nothing");

    let mut changed = req.clone();
    changed
        .transaction
        .as_mut()
        .unwrap()
        .amount
        .as_mut()
        .unwrap()
        .minor_units += 1;
    assert_status(
        teller.submit(changed).await,
        Code::AlreadyExists,
        "BR0101-0002",
    );
    assert_eq!(t.ledger_len(), len);

    // Another teller may use the same serial: the key is (teller, serial).
    let other = t
        .teller("teller-02")
        .await
        .submit(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!other.replayed);

    // Still recognised once the request is decided and no longer held in memory.
    let mut sup = Console::open(&t, "sup-02").await;
    for _ in 0..2 {
        let o = sup.next_offer().await;
        sup.accept(&o).await;
        sup.decide(&o, pb::Decision::Reject, "LIMIT", "over limit")
            .await
            .unwrap();
    }
    // An audit read brings the projection up to date, which lets decided requests leave
    // memory: the retry below is found in the projection.
    t.auditor()
        .await
        .get_request(pb::GetRequestRequest {
            request_id: first.request.as_ref().unwrap().request_id.clone(),
        })
        .await
        .unwrap();
    let late = teller.submit(req).await.unwrap().into_inner();
    assert!(late.replayed);
    assert_eq!(
        state(late.request.as_ref().unwrap()),
        pb::RequestState::Rejected
    );
}

async fn return_then_resubmit_with_a_replaced_image() {
    let t = TestServer::start().await;
    let mut teller = t.teller("teller-01").await;
    let r = submit(&t, "teller-01", "BR0101-0003").await;
    let mut sup = Console::open(&t, "sup-01").await;
    let o = sup.next_offer().await;
    sup.accept(&o).await;
    // RETURN needs a reason code and a comment for the teller.
    assert_status(
        sup.decide(&o, pb::Decision::Return, "", "rescan").await,
        Code::InvalidArgument,
        "reason_code",
    );
    assert_status(
        sup.decide(&o, pb::Decision::Return, "IMG_UNREADABLE", "")
            .await,
        Code::InvalidArgument,
        "comment",
    );
    let returned = sup
        .decide(
            &o,
            pb::Decision::Return,
            "IMG_UNREADABLE",
            "voucher is blurred",
        )
        .await
        .unwrap();
    assert_eq!(state(&returned), pb::RequestState::Returned);

    let old = r.images[0].sha256.clone();
    let resubmitted = teller
        .resubmit(pb::ResubmitRequest {
            request_id: r.request_id.clone(),
            images: vec![pb::ImageUpload {
                kind: pb::ImageKind::Voucher as i32,
                media_type: "image/jpeg".into(),
                content: fake_jpeg(2048),
            }],
            remove_image_sha256: vec![old.clone()],
            note: "rescanned".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(resubmitted.images.len(), 2);
    assert!(resubmitted.images.iter().all(|i| i.sha256 != old));

    let o2 = sup.next_offer().await;
    assert_eq!(o2.epoch, 2);
    let seen = o2.request.unwrap();
    assert_eq!(
        seen.returns.len(),
        1,
        "the next supervisor sees the earlier return"
    );
    assert_eq!(seen.returns[0].reason_code, "IMG_UNREADABLE");
    assert_eq!(seen.returns[0].resubmit_note, "rescanned");
    assert_eq!(seen.note, "rescanned");

    // Resubmitting what is not RETURNED is refused.
    assert_status(
        teller
            .resubmit(pb::ResubmitRequest {
                request_id: r.request_id.clone(),
                images: vec![],
                remove_image_sha256: vec![],
                note: "again".into(),
            })
            .await,
        Code::FailedPrecondition,
        "RETURNED",
    );
}

async fn a_declined_request_goes_elsewhere_and_never_back() {
    let t = TestServer::start().await;
    let mut a = Console::open(&t, "sup-01").await;
    let mut b = Console::open(&t, "sup-02").await;
    let r = submit(&t, "teller-01", "BR0101-0004").await;
    // Whoever is drawn declines; the other must get it next.
    let (o, a_drawn) = tokio::select! {
        o = a.next_offer() => (o, true),
        o = b.next_offer() => (o, false),
    };
    assert_eq!(o.request_id, r.request_id);
    assert_eq!(o.candidate_pool_size, 2);
    let (decliner, taker) = if a_drawn {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    decliner
        .client
        .decline(pb::DeclineRequest {
            request_id: o.request_id.clone(),
            epoch: o.epoch,
            reason: "I know the customer".into(),
        })
        .await
        .unwrap();
    let o2 = taker.next_offer().await;
    assert_eq!(o2.request_id, r.request_id);
    assert_eq!(
        o2.candidate_pool_size, 1,
        "the decliner is no longer a candidate"
    );
    taker
        .client
        .decline(pb::DeclineRequest {
            request_id: o2.request_id.clone(),
            epoch: o2.epoch,
            reason: String::new(),
        })
        .await
        .unwrap();
    // Both declined: it waits, offered to neither, until someone else signs in.
    decliner.expect_quiet(300).await;
    taker.expect_quiet(10).await;
    let mut c = Console::open(&t, "sup-04").await;
    let o3 = c.next_offer().await;
    assert_eq!(
        (o3.request_id.as_str(), o3.epoch),
        (r.request_id.as_str(), 3)
    );
}

async fn stale_or_foreign_epochs_are_refused_and_change_nothing() {
    let t = TestServer::start().await;
    let mut sup = Console::open(&t, "sup-01").await;
    let mut other = t.supervisor("sup-02").await;
    submit(&t, "teller-01", "BR0101-0005").await;
    let o = sup.next_offer().await;
    let len = t.ledger_len();
    let stale = pb::AcceptRequest {
        request_id: o.request_id.clone(),
        epoch: o.epoch + 1,
    };
    assert_status(
        sup.client.accept(stale).await,
        Code::FailedPrecondition,
        "stale epoch",
    );
    assert_status(
        sup.decide(&o, pb::Decision::Approve, "", "").await,
        Code::FailedPrecondition,
        "not in the state",
    );
    assert_status(
        other
            .accept(pb::AcceptRequest {
                request_id: o.request_id.clone(),
                epoch: o.epoch,
            })
            .await,
        Code::FailedPrecondition,
        "not offered to",
    );
    assert_eq!(t.ledger_len(), len, "refused calls append nothing");
    sup.accept(&o).await;
    sup.decide(&o, pb::Decision::Approve, "", "ok")
        .await
        .unwrap();
    assert_status(
        sup.decide(&o, pb::Decision::Reject, "X", "again").await,
        Code::FailedPrecondition,
        "",
    );
}

async fn an_offer_not_accepted_in_time_moves_on() {
    let t = TestServer::start().await;
    let mut a = Console::open(&t, "sup-01").await;
    submit(&t, "teller-01", "BR0101-0006").await;
    let o = a.next_offer().await;
    let mut b = Console::open(&t, "sup-02").await;
    t.clock.advance_ms(30_001);
    match a.next().await {
        pb::attend_response::Event::Withdrawn(w) => {
            assert_eq!(
                (w.request_id.as_str(), w.epoch, w.reason.as_str()),
                (o.request_id.as_str(), 1, "offer_timeout")
            );
        }
        other => panic!("expected a withdrawal, got {other:?}"),
    }
    // It goes to the other supervisor, with a new epoch; the old epoch is dead.
    let o2 = b.next_offer().await;
    assert_eq!(
        (o2.request_id.as_str(), o2.epoch),
        (o.request_id.as_str(), 2)
    );
    assert_status(
        a.client
            .accept(pb::AcceptRequest {
                request_id: o.request_id.clone(),
                epoch: 1,
            })
            .await,
        Code::FailedPrecondition,
        "",
    );
}

async fn a_dropped_console_loses_its_review_to_another_supervisor() {
    let t = TestServer::start().await;
    let r = submit(&t, "teller-01", "BR0101-0007").await;
    let mut a = Console::open(&t, "sup-01").await;
    let o = a.next_offer().await;
    a.accept(&o).await;
    drop(a);
    let mut b = Console::open(&t, "sup-02").await;
    let o2 = b.next_offer().await;
    assert_eq!(
        (o2.request_id.as_str(), o2.epoch),
        (r.request_id.as_str(), 2)
    );
    let history = t
        .auditor()
        .await
        .get_request(pb::GetRequestRequest {
            request_id: r.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let withdrawn = history
        .events
        .iter()
        .find(|e| e.kind == "offer_withdrawn")
        .expect("withdrawal recorded");
    let v: serde_json::Value = serde_json::from_slice(&withdrawn.record).unwrap();
    assert_eq!(v["event"]["reason"], "disconnected");
    assert_eq!(withdrawn.actor_id, "system");
}

async fn a_request_waits_while_nobody_eligible_is_online() {
    let t = TestServer::start().await;
    let r = submit(&t, "teller-01", "BR0101-0008").await;
    // sup-03 works at the teller's own branch: never eligible.
    let mut same_branch = Console::open(&t, "sup-03").await;
    same_branch.expect_quiet(300).await;
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
    assert_eq!(state(&got), pb::RequestState::Queued);
    let mut c = Console::open(&t, "sup-02").await;
    assert_eq!(c.next_offer().await.request_id, r.request_id);
}

async fn cancel_while_queued_and_while_in_review() {
    let t = TestServer::start().await;
    let mut teller = t.teller("teller-01").await;
    let r = submit(&t, "teller-01", "BR0101-0009").await;
    let c = teller
        .cancel(pb::CancelRequest {
            request_id: r.request_id.clone(),
            reason: "customer left".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&c), pb::RequestState::Cancelled);
    assert_status(
        teller
            .cancel(pb::CancelRequest {
                request_id: r.request_id.clone(),
                reason: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        "REQUEST_STATE_CANCELLED",
    );

    let r2 = submit(&t, "teller-01", "BR0101-0010").await;
    let mut sup = Console::open(&t, "sup-01").await;
    let o = sup.next_offer().await;
    assert_eq!(
        o.request_id, r2.request_id,
        "the cancelled request is never offered"
    );
    sup.accept(&o).await;
    teller
        .cancel(pb::CancelRequest {
            request_id: r2.request_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    match sup.next().await {
        pb::attend_response::Event::Withdrawn(w) => assert_eq!(w.reason, "cancelled"),
        other => panic!("expected a withdrawal, got {other:?}"),
    }
    assert_status(
        sup.decide(&o, pb::Decision::Approve, "", "").await,
        Code::FailedPrecondition,
        "",
    );
}

async fn a_second_attend_replaces_the_first() {
    let t = TestServer::start().await;
    let mut first = Console::open(&t, "sup-01").await;
    let _second = Console::open(&t, "sup-01").await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), first.stream.message())
        .await
        .expect("the old stream ends")
        .expect_err("with a status");
    assert_eq!(status.code(), Code::Aborted);
}

async fn next_state(w: &mut tonic::Streaming<pb::WatchResponse>) -> pb::AuthorizationRequest {
    tokio::time::timeout(std::time::Duration::from_secs(10), w.message())
        .await
        .expect("a state within 10 s")
        .unwrap()
        .unwrap()
        .request
        .unwrap()
}

/// A Watch that reconnects with the version it last saw is sent every change after it, oldest
/// first, then the live ones; one that is up to date waits for the next change; one resumed at
/// a final state ends at once; a version the request never reached is refused.
async fn a_resumed_watch_misses_no_change() {
    let t = TestServer::start().await;
    let mut teller = t.teller("teller-01").await;
    let r = submit(&t, "teller-01", "W-1").await;
    let watcher = teller.clone();
    let watch = |after_version: u64| {
        let after_version = Some(after_version);
        let mut teller = watcher.clone();
        let request_id = r.request_id.clone();
        async move {
            teller
                .watch(pb::WatchRequest {
                    request_id,
                    after_version,
                })
                .await
        }
    };
    // While the teller is away, a supervisor takes the request and returns it.
    let mut sup = Console::open(&t, "sup-01").await;
    let o = sup.next_offer().await;
    sup.accept(&o).await;
    sup.decide(&o, pb::Decision::Return, "IMG_UNREADABLE", "rescan")
        .await
        .unwrap();
    let mut resumed = watch(r.version).await.unwrap().into_inner();
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(next_state(&mut resumed).await);
    }
    assert_eq!(
        missed.iter().map(state).collect::<Vec<_>>(),
        [
            pb::RequestState::Offered,
            pb::RequestState::InReview,
            pb::RequestState::Returned
        ],
        "every change after the version seen, oldest first"
    );
    let versions: Vec<u64> = missed.iter().map(|m| m.version).collect();
    assert!(
        r.version < versions[0] && versions.windows(2).all(|v| v[0] < v[1]),
        "{} then {versions:?}",
        r.version
    );
    assert_eq!(missed[1].assigned_supervisor_id, "sup-01");
    let current = teller
        .get(pb::GetRequest {
            request_id: r.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(missed[2], current, "the last state sent is the current one");
    // Up to date: nothing is sent until the next change, which both streams then see live.
    let mut up_to_date = watch(current.version).await.unwrap().into_inner();
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), up_to_date.message());
    assert!(quiet.await.is_err(), "nothing changed since that version");
    let cancelled = teller
        .cancel(pb::CancelRequest {
            request_id: r.request_id.clone(),
            reason: "customer left".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    for w in [&mut resumed, &mut up_to_date] {
        assert_eq!(next_state(w).await, cancelled);
        assert!(w.message().await.unwrap().is_none(), "ends after final");
    }
    // Resumed at the final state, the stream ends at once; from the submission, it is sent
    // every change there was.
    let mut done = watch(cancelled.version).await.unwrap().into_inner();
    assert!(done.message().await.unwrap().is_none());
    let all: Vec<pb::RequestState> = watch(r.version)
        .await
        .unwrap()
        .into_inner()
        .map(|w| state(&w.unwrap().request.unwrap()))
        .collect()
        .await;
    assert_eq!(
        all,
        [
            pb::RequestState::Offered,
            pb::RequestState::InReview,
            pb::RequestState::Returned,
            pb::RequestState::Cancelled
        ]
    );
    assert_status(
        watch(cancelled.version + 1).await,
        Code::InvalidArgument,
        "after_version",
    );
}

async fn a_resubmit_naming_an_image_twice_is_refused_and_harms_nothing() {
    let t = TestServer::start().await;
    let mut teller = t.teller("teller-01").await;
    let r = submit(&t, "teller-01", "BR0101-0011").await;
    let mut sup = Console::open(&t, "sup-01").await;
    let o = sup.next_offer().await;
    sup.accept(&o).await;
    sup.decide(&o, pb::Decision::Return, "IMG_UNREADABLE", "rescan")
        .await
        .unwrap();
    let h = r.images[0].sha256.clone();
    let resubmit = |remove: Vec<String>| pb::ResubmitRequest {
        request_id: r.request_id.clone(),
        images: vec![],
        remove_image_sha256: remove,
        note: String::new(),
    };
    let len = t.ledger_len();
    assert_status(
        teller.resubmit(resubmit(vec![h.clone(), h.clone()])).await,
        Code::InvalidArgument,
        "remove_image_sha256",
    );
    assert_status(
        teller.resubmit(resubmit(vec![h.clone(); 300])).await,
        Code::InvalidArgument,
        "remove_image_sha256",
    );
    assert_eq!(t.ledger_len(), len);
    // The engine is still serving.
    let ok = teller
        .resubmit(resubmit(vec![h]))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&ok), pb::RequestState::Queued);
}

/// Accept, Decline, Decide, Cancel and Resubmit repeated after they took effect (as a client
/// does when the answer was lost) are answered as they were, with `replayed` set, and record
/// nothing; a different call on the same epoch is refused. After a restart, when the final
/// requests are no longer in memory, retries are still recognised from the ledger.
async fn every_action_is_safe_to_retry() {
    // Makes `$call` twice: the first takes effect, the second is answered as a replay and
    // records nothing. The second answer is the value.
    macro_rules! twice {
        ($t:expr, $call:expr, $what:literal) => {{
            let first = $call.await.unwrap().into_inner();
            assert!(
                !first.replayed,
                concat!("the first ", $what, " is not a replay")
            );
            let len = $t.ledger_len();
            let again = $call.await.unwrap().into_inner();
            assert!(
                again.replayed,
                concat!("the second ", $what, " is a replay")
            );
            assert_eq!(
                $t.ledger_len(),
                len,
                concat!("a replayed ", $what, " records nothing")
            );
            again
        }};
    }
    let mut t = TestServer::start().await;
    let mut teller = t.teller("teller-01").await;
    let r = submit(&t, "teller-01", "BR0101-0101").await;
    let mut sup = Console::open(&t, "sup-01").await;
    let o = sup.next_offer().await;
    let accept = pb::AcceptRequest {
        request_id: o.request_id.clone(),
        epoch: o.epoch,
    };
    let again = twice!(t, sup.client.accept(accept.clone()), "Accept");
    assert_eq!(state(&again.request.unwrap()), pb::RequestState::InReview);

    let ret = pb::DecideRequest {
        request_id: o.request_id.clone(),
        epoch: o.epoch,
        decision: pb::Decision::Return as i32,
        reason_code: "IMG_UNREADABLE".into(),
        comment: "voucher is blurred".into(),
        rekeyed: None,
    };
    let again = twice!(t, sup.client.decide(ret.clone()), "Decide");
    assert_eq!(state(&again.request.unwrap()), pb::RequestState::Returned);
    let len = t.ledger_len();
    // Another decision on the same epoch is not a retry.
    assert_status(
        sup.client
            .decide(pb::DecideRequest {
                decision: pb::Decision::Approve as i32,
                reason_code: String::new(),
                comment: String::new(),
                ..ret
            })
            .await,
        Code::FailedPrecondition,
        "",
    );
    assert_eq!(t.ledger_len(), len, "a refused Decide records nothing");

    let resubmit = pb::ResubmitRequest {
        request_id: r.request_id.clone(),
        images: vec![pb::ImageUpload {
            kind: pb::ImageKind::Voucher as i32,
            media_type: "image/jpeg".into(),
            content: fake_jpeg(2048),
        }],
        remove_image_sha256: vec![r.images[0].sha256.clone()],
        note: "rescanned".into(),
    };
    let again = twice!(t, teller.resubmit(resubmit.clone()), "Resubmit");
    assert_eq!(again.request.unwrap().images.len(), 2);

    let o2 = sup.next_offer().await;
    let decline = pb::DeclineRequest {
        request_id: o2.request_id.clone(),
        epoch: o2.epoch,
        reason: "conflict of interest".into(),
    };
    twice!(t, sup.client.decline(decline.clone()), "Decline");

    let mut sup2 = Console::open(&t, "sup-02").await;
    let o3 = sup2.next_offer().await;
    sup2.accept(&o3).await;
    let approve = pb::DecideRequest {
        request_id: o3.request_id.clone(),
        epoch: o3.epoch,
        decision: pb::Decision::Approve as i32,
        reason_code: String::new(),
        comment: "checked".into(),
        rekeyed: None,
    };
    assert!(
        !sup2
            .client
            .decide(approve.clone())
            .await
            .unwrap()
            .into_inner()
            .replayed
    );

    let c = submit(&t, "teller-01", "BR0101-0102").await;
    let cancel = pb::CancelRequest {
        request_id: c.request_id.clone(),
        reason: "customer left".into(),
    };
    twice!(t, teller.cancel(cancel.clone()), "Cancel");
    drop((sup, sup2));

    // Final requests are not loaded at start: these retries are answered from the ledger.
    t.restart().await;
    let len = t.ledger_len();
    let mut sup2 = t.supervisor("sup-02").await;
    let again = sup2.decide(approve.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(state(&again.request.unwrap()), pb::RequestState::Approved);
    let mut teller = t.teller("teller-01").await;
    let again = teller.cancel(cancel).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(state(&again.request.unwrap()), pb::RequestState::Cancelled);
    // A different decision, or another supervisor's, is still refused.
    assert_status(
        sup2.decide(pb::DecideRequest {
            decision: pb::Decision::Reject as i32,
            reason_code: "LIMIT".into(),
            ..approve.clone()
        })
        .await,
        Code::FailedPrecondition,
        "",
    );
    assert_status(
        t.supervisor("sup-04").await.decide(approve).await,
        Code::FailedPrecondition,
        "",
    );
    assert_eq!(t.ledger_len(), len);
}

crate::on_both_backends!(
    approve_end_to_end_with_watch_and_audit,
    retried_submit_returns_the_same_request_and_stores_nothing,
    return_then_resubmit_with_a_replaced_image,
    a_declined_request_goes_elsewhere_and_never_back,
    stale_or_foreign_epochs_are_refused_and_change_nothing,
    an_offer_not_accepted_in_time_moves_on,
    a_dropped_console_loses_its_review_to_another_supervisor,
    a_request_waits_while_nobody_eligible_is_online,
    cancel_while_queued_and_while_in_review,
    a_resumed_watch_misses_no_change,
    a_second_attend_replaces_the_first,
    a_resubmit_naming_an_image_twice_is_refused_and_harms_nothing,
    every_action_is_safe_to_retry,
);
