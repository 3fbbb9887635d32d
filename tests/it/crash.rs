//! The crash harness: the real server binary under load from tellers and supervisors over
//! gRPC, killed with SIGKILL at random moments, again and again, and restarted on the same
//! data. After each restart: every acknowledged Submit and Decide is there with the same
//! content, the ledger verifies (framing, checksums, the state machine per request, the tree),
//! and the queue holds exactly the requests that should be waiting.
//!
//! CI runs `CRASH_KILLS` kills (12 by default); set `COUNTERSIGN_CRASH_KILLS=200` for a long run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign::api::pb;
use countersign::domain::{Request, State};
use rand::{Rng, SeedableRng};

use crate::durability::{BinaryFiles, spawn_server};
use crate::fixtures::submit_request;

/// What clients were told succeeded: request id -> (teller, serial, amount, decision if any).
pub type Acked = Arc<Mutex<HashMap<String, (String, String, i64, Option<(String, i32)>)>>>;

async fn repeated_sigkill_under_load_loses_nothing_acknowledged() {
    let kills: usize = std::env::var("COUNTERSIGN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    // `_dir` keeps the temporary directory until the end of the test.
    let BinaryFiles {
        dir: _dir,
        pki,
        config,
        data,
        database: _database,
    } = BinaryFiles::new();
    let acked: Acked = Default::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let started = std::time::Instant::now();
    for round in 0..=kills {
        let (mut child, addr) = spawn_server(&config);
        if round > 0 {
            let t0 = std::time::Instant::now();
            check(
                addr,
                &pki,
                &acked,
                &data,
                _database.as_ref().map(|d| d.url()),
            )
            .await;
            let n = acked.lock().unwrap().len();
            eprintln!(
                "after kill {round}: {n} acknowledged requests checked in {:.2} s",
                t0.elapsed().as_secs_f64()
            );
        }
        if round == kills {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = load(
            addr,
            &pki,
            &["teller-01", "teller-02", "teller-03"],
            &["sup-02", "sup-04"],
            &format!("K{round}"),
            &acked,
            &stop,
        );
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for l in load {
            let _ = l.await;
        }
    }
    let n = acked.lock().unwrap().len();
    let decided = acked
        .lock()
        .unwrap()
        .values()
        .filter(|v| v.3.is_some())
        .count();
    eprintln!(
        "crash harness: survived {kills} SIGKILLs in {:.1} s; {n} acknowledged submits, {decided} acknowledged decisions, all present",
        started.elapsed().as_secs_f64()
    );
    assert!(n > kills, "too little load to test anything: {n} submits");
    assert!(decided > 0, "no decision was acknowledged");
}

/// Starts a `tell` task for each teller (serials `PREFIX-N-…`, N its place in the list) and a
/// `decide` task for each supervisor against `addr`, all stopping with `stop`.
pub fn load(
    addr: std::net::SocketAddr,
    pki: &std::path::Path,
    tellers: &[&'static str],
    supervisors: &[&'static str],
    prefix: &str,
    acked: &Acked,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Ended>> {
    let tellers = tellers.iter().enumerate().map(|(w, teller)| {
        tokio::spawn(tell(
            addr,
            pki.to_owned(),
            teller,
            format!("{prefix}-{w}"),
            acked.clone(),
            stop.clone(),
        ))
    });
    let supervisors = supervisors.iter().map(|sup| {
        tokio::spawn(decide(
            addr,
            pki.to_owned(),
            sup,
            acked.clone(),
            stop.clone(),
        ))
    });
    tellers.chain(supervisors).collect()
}

/// How a load task ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// The call whose failure ended the task (a refusal or a broken connection); `None` when
    /// the task was told to stop or could not connect.
    pub call: Option<tonic::Status>,
    /// A supervisor's Attend stream: how it ended, `Ok` for an end without a status.
    pub stream: Option<Result<(), tonic::Status>>,
}

/// A teller submitting one request after another until a Submit fails or `stop` is set;
/// every acknowledged Submit goes into `acked`.
pub async fn tell(
    addr: std::net::SocketAddr,
    pki: std::path::PathBuf,
    teller: &'static str,
    prefix: String,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Ended {
    let Ok(mut c) = countersign::tools::client::teller(addr, &pki, teller).await else {
        return Ended::default();
    };
    for i in 0.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let serial = format!("{prefix}-{i}");
        let amount = 1_000 + i as i64;
        let mut req = submit_request(&serial, "WDL-CASH", amount, "6222020200110001");
        req.images.truncate(1);
        match c.submit(req).await {
            Ok(r) => {
                let id = r.into_inner().request.unwrap().request_id;
                acked
                    .lock()
                    .unwrap()
                    .insert(id, (teller.to_string(), serial, amount, None));
            }
            Err(s) => {
                return Ended {
                    call: Some(s),
                    stream: None,
                };
            }
        }
    }
    Ended::default()
}

/// A supervisor attending, and accepting and deciding every offer (rejecting when the epoch
/// is a multiple of 3), until a call fails, the Attend stream ends, or `stop` is set; every
/// acknowledged decision goes into `acked`.
pub async fn decide(
    addr: std::net::SocketAddr,
    pki: std::path::PathBuf,
    sup: &'static str,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Ended {
    let Ok(mut c) = countersign::tools::client::supervisor(addr, &pki, sup).await else {
        return Ended::default();
    };
    let mut offers = match c.attend(pb::AttendRequest {}).await {
        Ok(resp) => resp.into_inner(),
        Err(s) => {
            return Ended {
                call: Some(s),
                stream: None,
            };
        }
    };
    // After a failed call the stream is read to its end, to learn how it ended.
    let mut call = None;
    let stream = loop {
        let m = match offers.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(s) => break Err(s),
        };
        if call.is_some() {
            continue;
        }
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ended::default();
        }
        // A review held from before a restart or takeover is decided as it is; an offer is
        // accepted first.
        let ((request_id, epoch), offered) = match m.event {
            Some(pb::attend_response::Event::Offer(o)) => ((o.request_id, o.epoch), true),
            Some(pb::attend_response::Event::ReviewResumed(r)) => ((r.request_id, r.epoch), false),
            _ => continue,
        };
        if offered
            && let Err(s) = c
                .accept(pb::AcceptRequest {
                    request_id: request_id.clone(),
                    epoch,
                })
                .await
        {
            call = Some(s);
            continue;
        }
        let decision = if epoch % 3 == 0 {
            pb::Decision::Reject
        } else {
            pb::Decision::Approve
        };
        let req = pb::DecideRequest {
            request_id: request_id.clone(),
            epoch,
            decision: decision as i32,
            reason_code: if decision == pb::Decision::Reject {
                "LIMIT".into()
            } else {
                String::new()
            },
            comment: "c".into(),
            rekeyed: None,
        };
        match c.decide(req).await {
            Ok(_) => {
                if let Some(v) = acked.lock().unwrap().get_mut(&request_id) {
                    v.3 = Some((sup.to_string(), decision as i32));
                }
            }
            Err(s) => call = Some(s),
        }
    };
    Ended {
        call,
        stream: Some(stream),
    }
}

/// After a restart: everything acknowledged is there, the ledger verifies, and the queue is
/// exactly what the ledger says is waiting.
pub async fn check(
    addr: std::net::SocketAddr,
    pki: &std::path::Path,
    acked: &Acked,
    data: &std::path::Path,
    database: Option<&str>,
) {
    let snapshot = acked.lock().unwrap().clone();
    let mut clients = HashMap::new();
    for (id, (teller, serial, amount, decision)) in &snapshot {
        if !clients.contains_key(teller) {
            clients.insert(
                teller.clone(),
                countersign::tools::client::teller(addr, pki, teller)
                    .await
                    .unwrap(),
            );
        }
        let c = clients.get_mut(teller).unwrap();
        let r = c
            .get(pb::GetRequest {
                request_id: id.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("acknowledged request {id} lost: {s:?}"))
            .into_inner()
            .request
            .unwrap();
        assert_eq!(
            (
                &r.teller_serial,
                r.transaction
                    .as_ref()
                    .unwrap()
                    .amount
                    .as_ref()
                    .unwrap()
                    .minor_units
            ),
            (serial, *amount)
        );
        if let Some((sup, d)) = decision {
            let got = r
                .decision
                .unwrap_or_else(|| panic!("acknowledged decision on {id} lost"));
            assert_eq!((&got.supervisor_id, got.decision), (sup, *d));
        }
    }
    // The ledger as the server left it after restart: every request's history is valid.
    let states = replay_states(&crate::harness::stored_records(data, database));
    let report = crate::harness::verify_stored(data, database, None);
    assert_eq!(report.problem, None);
    // Right after a restart nobody attends: every offer went back to the queue, and every
    // review waits for its supervisor, exactly as the ledger says.
    let mut admin = countersign::api::pb::admin_service_client::AdminServiceClient::new(
        countersign::tools::client::channel(addr, pki, "admin-01")
            .await
            .unwrap(),
    );
    let st = admin
        .get_queue_status(pb::GetQueueStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let count = |want: State| states.values().filter(|s| **s == want).count() as u64;
    assert_eq!(count(State::Offered), 0, "the restart withdrew every offer");
    assert_eq!(
        (st.queued, st.offered, st.in_review),
        (count(State::Queued), 0, count(State::InReview)),
        "the queue holds exactly what the ledger says is waiting"
    );
}

/// Every request's state, folded from the stored records.
fn replay_states(records: &[Vec<u8>]) -> HashMap<String, State> {
    let mut requests: HashMap<String, Request> = HashMap::new();
    for (index, payload) in records.iter().enumerate() {
        let index = index as u64;
        let entry = countersign::ledger::record::decode_entry(payload).unwrap();
        let countersign::domain::Entry::Request(rec) = entry else {
            continue;
        };
        match Request::open(index, &rec) {
            Some(r) => {
                requests.insert(rec.request.to_string(), r);
            }
            None => requests
                .get_mut(rec.request.as_str())
                .unwrap()
                .apply(index, rec.at, &rec.event)
                .unwrap(),
        }
    }
    requests.into_iter().map(|(k, r)| (k, r.state)).collect()
}

crate::on_both_backends!(
    repeated_sigkill_under_load_loses_nothing_acknowledged { flavor = "multi_thread", worker_threads = 2 },
);
