//! A simulation of a busy day on the manual clock: a dozen supervisors coming and going and
//! acting at random (accept, approve, reject, return, decline, or let offers time out), three
//! tellers submitting several hundred requests under the test policy (dual control, levels,
//! priorities, escalation, short deadlines) and resubmitting returns. Afterwards the ledger is
//! read back and checked: every request is final, no supervisor ever held more than their
//! limit, no dispatch rule was broken, and the ledger replays to the same state.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use countersign::api::pb;
use countersign::domain::{Event, Principal, Record, Request};
use rand::{Rng, SeedableRng};

use crate::fixtures::submit_request;
use crate::harness::*;

const SUPERVISORS: usize = 12;
const REQUESTS: usize = 300;
const TASKS_MAX: usize = 2;

/// Adds seven simulated supervisors to the directory: branches and levels spread out.
fn add_supervisors(t: &TestServer) -> Vec<String> {
    let mut dir = std::fs::read_to_string(t.pki.join("principals.toml")).unwrap();
    let mut ids: Vec<String> = ["sup-01", "sup-02", "sup-03", "sup-04", "sup-05"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let branches = ["CENTRE", "BR-0101", "BR-0202", "BR-0303"];
    for i in 0..(SUPERVISORS - ids.len()) {
        let id = format!("sim-{i:02}");
        let fp = countersign::tools::pki::issue_client(&t.pki, &id).unwrap();
        let level = 1 + (i % 3) as i64;
        dir.push_str(&format!(
            "\n[[principals]]\nid = \"{id}\"\nname = \"Sim {i}\"\nrole = \"supervisor\"\nbranch = \"{}\"\ncert_sha256 = \"{fp}\"\nlevel = {level}\nceilings = {{ CNY = {} }}\n",
            branches[i % 4],
            10_000_000i64 * 100i64.pow(level as u32 - 1)
        ));
        ids.push(id);
    }
    std::fs::write(t.pki.join("principals.toml"), dir).unwrap();
    ids
}

/// One supervisor: signs in and out at random and acts on offers at random.
async fn supervisor(
    t: Arc<(std::net::SocketAddr, std::path::PathBuf)>,
    id: String,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = countersign::tools::client::supervisor(t.0, &t.1, &id).await else {
            return;
        };
        let Ok(resp) = c.attend(pb::AttendRequest {}).await else {
            return;
        };
        let mut stream = resp.into_inner();
        let stay = rng.random_range(3..12);
        let mut handled = 0;
        while handled < stay && !stop.load(Ordering::Relaxed) {
            let msg = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await
            {
                Err(_) => continue,
                Ok(Ok(Some(m))) => m,
                Ok(_) => break,
            };
            let Some(pb::attend_response::Event::Offer(o)) = msg.event else {
                continue;
            };
            handled += 1;
            let (rid, epoch) = (o.request_id.clone(), o.epoch);
            match rng.random_range(0..100) {
                0..10 => {
                    let _ = c
                        .decline(pb::DeclineRequest {
                            request_id: rid,
                            epoch,
                            reason: String::new(),
                        })
                        .await;
                }
                10..20 => {} // let it time out
                roll => {
                    if c.accept(pb::AcceptRequest {
                        request_id: rid.clone(),
                        epoch,
                    })
                    .await
                    .is_err()
                    {
                        continue;
                    }
                    let (decision, code, comment) = match roll {
                        20..30 => (pb::Decision::Reject, "LIMIT", "no"),
                        30..40 => (pb::Decision::Return, "IMG_UNREADABLE", "rescan"),
                        _ => (pb::Decision::Approve, "", "ok"),
                    };
                    let _ = c
                        .decide(pb::DecideRequest {
                            request_id: rid,
                            epoch,
                            decision: decision as i32,
                            reason_code: code.into(),
                            comment: comment.into(),
                            rekeyed: None,
                        })
                        .await;
                }
            }
        }
        drop(stream);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
    }
}

/// One teller: submits, follows each request, resubmits most returns.
async fn teller(
    t: Arc<(std::net::SocketAddr, std::path::PathBuf)>,
    id: &'static str,
    n: usize,
    seed: u64,
) -> Vec<String> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let c = countersign::tools::client::teller(t.0, &t.1, id)
        .await
        .unwrap();
    let codes = [
        "WDL-CASH", "WDL-CASH", "DUAL", "BIG", "URGENT", "ESC-DECL", "ESC-WAIT", "SHORT",
    ];
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..n {
        let code = codes[rng.random_range(0..codes.len())];
        let amount = rng.random_range(1_000..50_000_000i64);
        let resubmit = rng.random_range(0..10) < 8;
        let permit = gate.clone().acquire_owned().await.unwrap();
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut req = submit_request(&format!("{id}-{i}"), code, amount, "6222020200112233445");
            req.images.truncate(1);
            let r = c.submit(req).await.unwrap().into_inner().request.unwrap();
            let mut w = c
                .watch(pb::WatchRequest {
                    request_id: r.request_id.clone(),
                    after_version: None,
                })
                .await
                .unwrap()
                .into_inner();
            // Follow until final; a Watch cut short is opened again.
            loop {
                match w.message().await {
                    Ok(Some(v)) => {
                        let v = v.request.unwrap();
                        if state(&v) == pb::RequestState::Returned && resubmit {
                            let _ = c
                                .resubmit(pb::ResubmitRequest {
                                    request_id: v.request_id.clone(),
                                    images: vec![],
                                    remove_image_sha256: vec![],
                                    note: "fixed".into(),
                                })
                                .await;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        w = c
                            .watch(pb::WatchRequest {
                                request_id: r.request_id.clone(),
                                after_version: None,
                            })
                            .await
                            .unwrap()
                            .into_inner();
                    }
                }
            }
            r.request_id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids
}

async fn a_busy_day_breaks_no_rule_and_replays_to_the_same_state() {
    let mut t = TestServer::start_with(&|s| {
        s.replace(
            "supervisor_tasks_max = 1",
            &format!("supervisor_tasks_max = {TASKS_MAX}"),
        )
        .replace(
            "pending_per_teller_max = 20",
            "pending_per_teller_max = 100",
        )
    })
    .await;
    let sups = add_supervisors(&t);
    // Undecided requests expire within an hour of simulated time (about 15 s of real time).
    std::fs::write(
        t.pki.join("policy.toml"),
        TEST_POLICY.replace(
            "decision_deadline_ms = 86400000",
            "decision_deadline_ms = 3600000",
        ),
    )
    .unwrap();
    t.config = countersign::config::Config::parse(
        &t.config_text(&|s| {
            s.replace(
                "supervisor_tasks_max = 1",
                &format!("supervisor_tasks_max = {TASKS_MAX}"),
            )
            .replace(
                "pending_per_teller_max = 20",
                "pending_per_teller_max = 100",
            )
        }),
        &t.pki,
    )
    .unwrap();
    t.restart().await;
    let shared = Arc::new((t.addr(), t.pki.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut sup_tasks = Vec::new();
    for (i, id) in sups.iter().enumerate() {
        sup_tasks.push(tokio::spawn(supervisor(
            shared.clone(),
            id.clone(),
            100 + i as u64,
            stop.clone(),
        )));
    }
    // The clock moves 15 s of simulated time every 20 ms of real time: offers time out, waits
    // escalate and short deadlines pass while the day runs.
    let clock = t.clock.clone();
    let ticking = stop.clone();
    let ticker = tokio::spawn(async move {
        while !ticking.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            clock.advance_ms(15_000);
        }
    });
    let tellers: Vec<_> = ["teller-01", "teller-02", "teller-03"]
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let s = shared.clone();
            // Requests left undecided expire within a day of simulated time at most.
            tokio::spawn(teller(s, id, REQUESTS / 3, 7 + i as u64))
        })
        .collect();
    let mut ids = Vec::new();
    for tt in tellers {
        ids.extend(
            tokio::time::timeout(Duration::from_secs(240), tt)
                .await
                .expect("the day ends")
                .unwrap(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    ticker.await.unwrap();
    for s in sup_tasks {
        let _ = s.await;
    }
    assert_eq!(ids.len(), REQUESTS);

    let directory: HashMap<String, Principal> = {
        let d = countersign::api::Directory::load(&t.pki.join("principals.toml")).unwrap();
        sups.iter()
            .map(|id| (id.clone(), d.principal(id).unwrap()))
            .collect()
    };
    // Read every request back before the restart.
    let before = snapshot(&t, &ids).await;
    for (id, r) in &before {
        assert!(
            matches!(
                state(r),
                pb::RequestState::Approved
                    | pb::RequestState::Rejected
                    | pb::RequestState::Cancelled
                    | pb::RequestState::Expired
            ),
            "{id} ended the day {:?}",
            state(r)
        );
    }
    let mut outcomes: HashMap<i32, usize> = HashMap::new();
    for r in before.values() {
        *outcomes.entry(r.state).or_default() += 1;
    }
    eprintln!("simulation outcomes by state: {outcomes:?}");
    for s in [
        pb::RequestState::Approved,
        pb::RequestState::Rejected,
        pb::RequestState::Expired,
    ] {
        assert!(
            outcomes.get(&(s as i32)).is_some_and(|n| *n > 0),
            "no request ended {s:?}: the day was too quiet to test anything"
        );
    }
    assert!(
        before
            .values()
            .any(|r| r.approvals_needed == 2 && state(r) == pb::RequestState::Approved),
        "no dual-control approval happened"
    );
    assert!(
        before.values().any(|r| !r.returns.is_empty()),
        "no return happened"
    );
    t.stop().await;
    let kinds = check_ledger(&t, &directory);
    eprintln!("simulation records by kind: {kinds:?}");
    for k in [
        "offer_declined",
        "offer_timed_out",
        "offer_withdrawn",
        "escalated",
        "expired",
        "resubmitted",
    ] {
        assert!(
            kinds.get(k).is_some_and(|n| *n > 0),
            "no {k} record: the day was too quiet to test anything"
        );
    }
    let report = t.verify(None);
    assert_eq!(report.problem, None);
    t.drop_projection();
    t.restart().await;
    let after = snapshot(&t, &ids).await;
    assert_eq!(before, after, "the ledger replays to the same state");
}

async fn snapshot(t: &TestServer, ids: &[String]) -> HashMap<String, pb::AuthorizationRequest> {
    let mut a = t.auditor().await;
    let mut out = HashMap::new();
    for id in ids {
        let r = a
            .get_request(pb::GetRequestRequest {
                request_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        out.insert(id.clone(), r);
    }
    out
}

/// Replays the ledger, checking every offer and decision against the dispatch rules and the
/// supervisors' task limit.
fn check_ledger(
    t: &TestServer,
    directory: &HashMap<String, Principal>,
) -> HashMap<&'static str, usize> {
    let mut kinds: HashMap<&'static str, usize> = HashMap::new();
    let mut requests: HashMap<String, Request> = HashMap::new();
    let mut held: HashMap<String, usize> = HashMap::new();
    let mut max_held = 0;
    let mut index = 0u64;
    for payload in t.records() {
        {
            let entry = countersign::ledger::record::decode_entry(&payload).unwrap();
            *kinds.entry(entry.kind()).or_default() += 1;
            let countersign::domain::Entry::Request(rec) = entry else {
                index += 1;
                continue;
            };
            let rec: Record = rec;
            let key = rec.request.to_string();
            if let Some(r) = Request::open(index, &rec) {
                requests.insert(key, r);
                index += 1;
                continue;
            }
            let r = requests.get_mut(&key).unwrap();
            let holder = r.assignee.clone();
            match &rec.event {
                Event::Offered {
                    supervisor,
                    pool_size,
                    ..
                } => {
                    let s = &directory[supervisor.as_str()];
                    assert!(*pool_size >= 1);
                    assert_ne!(s.id, r.teller);
                    assert!(
                        !r.requirements.independent || s.branch != r.branch,
                        "record {index}: same-branch offer"
                    );
                    assert!(
                        s.may_decide(r.level, &r.submission.transaction),
                        "record {index}: {} lacks authority",
                        s.id
                    );
                    assert!(
                        !r.declined_by.contains(supervisor),
                        "record {index}: offered to a decliner"
                    );
                    assert!(
                        !r.approvals.iter().any(|a| &a.supervisor == supervisor),
                        "record {index}: offered to an approver"
                    );
                    let n = held.entry(supervisor.to_string()).or_default();
                    *n += 1;
                    max_held = max_held.max(*n);
                    assert!(*n <= TASKS_MAX, "record {index}: {supervisor} holds {n}");
                }
                Event::Decided { supervisor, .. } => {
                    let s = &directory[supervisor.as_str()];
                    assert!(
                        s.may_decide(r.level, &r.submission.transaction),
                        "record {index}: decided without authority"
                    );
                }
                _ => {}
            }
            r.apply(index, rec.at, &rec.event).unwrap();
            // A task ends when the request is no longer held by that supervisor.
            if let Some(h) = holder
                && r.assignee.as_ref() != Some(&h)
            {
                *held.get_mut(h.as_str()).unwrap() -= 1;
            }
            if let Event::Decided { .. } = rec.event
                && r.state == countersign::domain::State::Approved
                && r.requirements.approvals == 2
            {
                let first = &r.approvals[0].supervisor;
                assert_ne!(
                    first,
                    &r.decision.as_ref().unwrap().supervisor,
                    "dual control by one person"
                );
            }
            index += 1;
        }
    }
    assert!(max_held >= 1);
    assert!(requests.len() >= REQUESTS);
    kinds
}

crate::on_both_backends!(
    a_busy_day_breaks_no_rule_and_replays_to_the_same_state { flavor = "multi_thread", worker_threads = 2 },
);
