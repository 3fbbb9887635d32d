//! Durability: restarts, a lost sled, a torn ledger tail, and SIGKILL of the real binary.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use countersign::api::pb;

use crate::fixtures::submit_request;
use crate::harness::*;

async fn get(t: &TestServer, teller: &str, id: &str) -> pb::AuthorizationRequest {
    t.teller(teller)
        .await
        .get(pb::GetRequest {
            request_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
}

async fn a_restart_keeps_every_request_and_hands_open_reviews_back() {
    let mut t = TestServer::start().await;
    let approved = submit(&t, "teller-01", "R-1").await;
    let reviewing = submit(&t, "teller-01", "R-2").await;
    let queued = submit(&t, "teller-03", "R-3").await;
    let cancelled = submit(&t, "teller-02", "R-4").await;
    let accepted_epoch;
    t.teller("teller-02")
        .await
        .cancel(pb::CancelRequest {
            request_id: cancelled.request_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    {
        // sup-03 is of BR-0101: it can take only teller-03's request.
        let mut s3 = Console::open(&t, "sup-03").await;
        let o = s3.next_offer().await;
        assert_eq!(o.request_id, queued.request_id);
        s3.decline(&o).await;
        let mut s = Console::open(&t, "sup-04").await;
        let o = s.next_offer().await;
        assert_eq!(o.request_id, approved.request_id, "oldest first");
        s.accept(&o).await;
        s.decide(&o, pb::Decision::Approve, "", "ok").await.unwrap();
        let o = s.next_offer().await;
        assert_eq!(o.request_id, reviewing.request_id);
        s.accept(&o).await;
        accepted_epoch = o.epoch;
        // Stop with the review open, the console attached and a Watch open.
        let mut watch = t
            .teller("teller-01")
            .await
            .watch(pb::WatchRequest {
                request_id: reviewing.request_id.clone(),
                after_version: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            state(&watch.message().await.unwrap().unwrap().request.unwrap()),
            pb::RequestState::InReview
        );
        t.stop().await;
        // The stream ends with a status that tells the client to reconnect.
        let end = watch.message().await.expect_err("ends with a status");
        assert_eq!(end.code(), tonic::Code::Unavailable);
    }
    t.restart().await;
    assert_eq!(
        state(&get(&t, "teller-02", &cancelled.request_id).await),
        pb::RequestState::Cancelled
    );
    assert_eq!(
        state(&get(&t, "teller-01", &approved.request_id).await),
        pb::RequestState::Approved
    );
    assert_eq!(
        state(&get(&t, "teller-03", &queued.request_id).await),
        pb::RequestState::Queued
    );
    // The review stays with its supervisor across the restart, and a Watch opened after it
    // starts from that state.
    let mut watch = t
        .teller("teller-01")
        .await
        .watch(pb::WatchRequest {
            request_id: reviewing.request_id.clone(),
            after_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&watch.message().await.unwrap().unwrap().request.unwrap()),
        pb::RequestState::InReview
    );
    // The decline survives the restart too: sup-03 is never offered R-3 again.
    let mut s3 = Console::open(&t, "sup-03").await;
    s3.expect_quiet(300).await;
    // Nobody else is offered the review: sup-01 could take it, but it is not in the queue.
    let mut s1 = Console::open(&t, "sup-01").await;
    let o = s1.next_offer().await;
    assert_eq!(o.request_id, queued.request_id, "only R-3 is queued");
    // sup-04 signs in again and is handed the review first, under the epoch it accepted.
    let mut s = Console::open(&t, "sup-04").await;
    let r = s.next_review().await;
    assert_eq!(r.request_id, reviewing.request_id);
    assert_eq!(r.epoch, accepted_epoch);
    let review_by = r.review_by.expect("review_by");
    let accepted_at = r
        .request
        .as_ref()
        .expect("request")
        .updated_at
        .expect("updated_at");
    assert_eq!(
        (review_by.seconds - accepted_at.seconds) * 1000
            + i64::from(review_by.nanos - accepted_at.nanos) / 1_000_000,
        600_000,
        "the review timeout runs from the Accept, not from the restart"
    );
    let decided = s
        .client
        .decide(pb::DecideRequest {
            request_id: r.request_id.clone(),
            epoch: r.epoch,
            decision: pb::Decision::Approve as i32,
            reason_code: String::new(),
            comment: "after restart".into(),
            rekeyed: None,
        })
        .await
        .expect("the resumed review is decided")
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&decided), pb::RequestState::Approved);
    assert_eq!(
        state(&watch.message().await.unwrap().unwrap().request.unwrap()),
        pb::RequestState::Approved
    );
    let history = t
        .auditor()
        .await
        .get_request(pb::GetRequestRequest {
            request_id: reviewing.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = history.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["accepted", "decided"],
        "nothing was withdrawn between the Accept and the decision"
    );
}

/// A review whose supervisor does not come back after a restart waits only until its review
/// timeout, counted from the Accept, and is then offered to someone else; the late decision
/// presents a stale epoch and changes nothing.
async fn a_review_not_resumed_after_a_restart_times_out_and_is_offered_again() {
    let mut t = TestServer::start().await;
    let reviewing = submit(&t, "teller-01", "T-1").await;
    let epoch = {
        let mut s = Console::open(&t, "sup-04").await;
        let o = s.next_offer().await;
        s.accept(&o).await;
        t.stop().await;
        o.epoch
    };
    t.restart().await;
    let mut other = Console::open(&t, "sup-01").await;
    other.expect_quiet(300).await;
    t.clock.advance_ms(600_001);
    let o = other.next_offer().await;
    assert_eq!(o.request_id, reviewing.request_id);
    assert_eq!(o.epoch, epoch + 1, "a withdrawn epoch is never reused");
    let late = t
        .supervisor("sup-04")
        .await
        .decide(pb::DecideRequest {
            request_id: reviewing.request_id.clone(),
            epoch,
            decision: pb::Decision::Approve as i32,
            reason_code: String::new(),
            comment: "too late".into(),
            rekeyed: None,
        })
        .await
        .expect_err("the old epoch is refused");
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    let history = t
        .auditor()
        .await
        .get_request(pb::GetRequestRequest {
            request_id: reviewing.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let withdrawn = history
        .events
        .iter()
        .rfind(|e| e.kind == "offer_withdrawn")
        .expect("a withdrawal");
    let v: serde_json::Value = serde_json::from_slice(&withdrawn.record).unwrap();
    assert_eq!(v["event"]["reason"], "review_timeout");
}

async fn a_missing_projection_is_rebuilt_and_equals_the_state_before() {
    let mut t = TestServer::start().await;
    // Requests in several states, from two tellers.
    let mut ids = Vec::new();
    for i in 0..4 {
        let teller = if i % 2 == 0 { "teller-01" } else { "teller-03" };
        ids.push((
            teller,
            submit(&t, teller, &format!("E-{i}")).await.request_id,
        ));
    }
    {
        let mut s = Console::open(&t, "sup-02").await;
        let o = s.next_offer().await;
        s.accept(&o).await;
        s.decide(&o, pb::Decision::Return, "IMG_UNREADABLE", "rescan")
            .await
            .unwrap();
        let o = s.next_offer().await;
        s.accept(&o).await;
        s.decide(&o, pb::Decision::Approve, "", "ok").await.unwrap();
    }
    let snapshot = |t: &TestServer| {
        let ids = ids.clone();
        let (addr, pki) = (t.addr(), t.pki.clone());
        async move {
            let mut out = Vec::new();
            for (teller, id) in &ids {
                let mut c = countersign::tools::client::teller(addr, &pki, teller)
                    .await
                    .unwrap();
                out.push(
                    c.get(pb::GetRequest {
                        request_id: id.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .request
                    .unwrap(),
                );
            }
            let mut a = countersign::tools::client::auditor(addr, &pki, "audit-01")
                .await
                .unwrap();
            let search = a
                .search(pb::SearchRequest::default())
                .await
                .unwrap()
                .into_inner()
                .requests;
            (out, search)
        }
    };
    let before = snapshot(&t).await;
    t.stop().await;
    t.drop_projection();
    t.restart().await;
    let after = snapshot(&t).await;
    assert_eq!(
        before, after,
        "every request and the search index are rebuilt exactly"
    );
}

async fn a_missing_projection_is_rebuilt_from_the_ledger() {
    let mut t = TestServer::start().await;
    let req = submit_request("P-1", "WDL-CASH", 5_000_000, "6222020200112233445");
    let r = t
        .teller("teller-01")
        .await
        .submit(req.clone())
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let mut s = Console::open(&t, "sup-01").await;
    let o = s.next_offer().await;
    s.accept(&o).await;
    s.decide(&o, pb::Decision::Reject, "FRAUD_RISK", "mismatch")
        .await
        .unwrap();
    drop(s);
    let len = t.ledger_len();
    t.stop().await;
    t.drop_projection();
    t.restart().await;
    // Nothing lost or added but the engine's stop and start.
    assert_eq!(t.ledger_len(), len + 2);
    let got = get(&t, "teller-01", &r.request_id).await;
    assert_eq!(state(&got), pb::RequestState::Rejected);
    assert_eq!(got.decision.unwrap().reason_code, "FRAUD_RISK");
    let again = t
        .teller("teller-01")
        .await
        .submit(req)
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed, "idempotency survives the rebuild");
}

async fn a_torn_final_record_is_cut_and_the_rest_kept() {
    let mut t = TestServer::start().await;
    let r = submit(&t, "teller-01", "T-1").await;
    let len = t.ledger_len();
    t.stop().await;
    let seg = last_segment(&t);
    // A frame header promising 500 bytes, followed by only 10: what a crash mid-write leaves.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&500u32.to_le_bytes()).unwrap();
    f.write_all(&[0u8; 22]).unwrap();
    drop(f);
    t.restart().await;
    // The torn frame is cut; the engine's stop and new start are recorded around it.
    assert_eq!(t.ledger_len(), len + 2);
    assert_eq!(
        state(&get(&t, "teller-01", &r.request_id).await),
        pb::RequestState::Queued
    );
    submit(&t, "teller-01", "T-2").await;
    assert_eq!(t.ledger_len(), len + 3);
}

async fn damage_in_the_middle_of_the_ledger_refuses_to_start() {
    let mut t = TestServer::start().await;
    submit(&t, "teller-01", "D-1").await;
    submit(&t, "teller-01", "D-2").await;
    t.stop().await;
    let seg = last_segment(&t);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x01; // inside the first record's payload
    std::fs::write(&seg, bytes).unwrap();
    let rng = Box::new(<rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(1));
    let err = countersign::server::start(&t.config, std::sync::Arc::new(t.clock.clone()), rng)
        .await
        .err()
        .expect("a damaged ledger must not open");
    assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");
}

/// Images the ledger names that the store no longer has (images/ deleted, a restore without
/// them) are noticed at start: NOT_SERVING, calls refused, instead of offering requests whose
/// vouchers are gone.
async fn missing_images_are_noticed_at_start() {
    let mut t = TestServer::start().await;
    submit(&t, "teller-01", "I-1").await;
    t.stop().await;
    match &t.database {
        None => std::fs::remove_dir_all(t.data_dir().join("images")).unwrap(),
        Some(d) => d.execute("DELETE FROM images").unwrap(),
    }
    t.boot().await;
    let ch = countersign::tools::client::channel(t.addr(), &t.pki, "audit-01")
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "countersign.v1.TellerService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let refused = t
        .teller("teller-01")
        .await
        .submit(submit_request("I-2", "WDL-CASH", 100, "6222020200110001"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("image"), "{refused:?}");
}

/// A second server on a data directory another has open is refused before it reads, cuts or
/// appends anything (the ledger's LOCK), and the first carries on.
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let t = TestServer::start().await;
    submit(&t, "teller-01", "L-1").await;
    let len = t.ledger_len();
    let rng = Box::new(<rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(2));
    let err = countersign::server::start(&t.config, std::sync::Arc::new(t.clock.clone()), rng)
        .await
        .err()
        .expect("a second server on the same data must not start");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!(
            "data directory {} is in use (pid {})",
            t.data_dir().display(),
            std::process::id()
        )),
        "{err}"
    );
    assert_eq!(t.ledger_len(), len);
    submit(&t, "teller-01", "L-2").await;
    assert_eq!(t.ledger_len(), len + 1, "the first server carries on");
}

/// What an operator reads: a log written to a file holds no terminal colour codes, and a start
/// that is refused says why on one line, with no backtrace even under RUST_BACKTRACE=1.
async fn logs_in_a_file_are_plain_and_a_refused_start_says_why_in_one_line() {
    let files = BinaryFiles::new();
    let log = files.config.with_extension("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config"])
        .arg(&files.config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("countersign listening on"), "{line:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "the log has lines: {text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );

    let refused = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config"])
        .arg(files.dir.path().join("missing.toml"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.starts_with("Error: ") && err.contains("missing.toml"),
        "{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line, no backtrace: {err}"
    );
}

/// The real binary under load is killed with SIGKILL; every Submit it acknowledged must be
/// there after a restart on the same data.
async fn sigkill_loses_no_acknowledged_submit() {
    let files = BinaryFiles::new();
    let (pki, config) = (&files.pki, &files.config);
    const TELLERS: [&str; 3] = ["teller-01", "teller-02", "teller-03"];
    let mut acked: Vec<(usize, String)> = Vec::new();
    for round in 0..3 {
        let (mut child, addr) = spawn_server(config);
        assert_all_present(addr, pki, &acked).await;
        // Submit from one task per teller, and kill the server while they are submitting.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (w, teller) in TELLERS.iter().enumerate() {
            let (tx, pki) = (tx.clone(), pki.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = countersign::tools::client::teller(addr, &pki, teller)
                    .await
                    .unwrap();
                for i in 0..100_000 {
                    let mut req = submit_request(
                        &format!("K{round}-{i}"),
                        "WDL-CASH",
                        100,
                        "6222020200110001",
                    );
                    req.images.truncate(1);
                    match c.submit(req).await {
                        Ok(r) => drop(tx.send((w, r.into_inner().request.unwrap().request_id))),
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(tx);
        // Kill once at least 20 submits were acknowledged, while more are in flight.
        let mut got = Vec::new();
        while got.len() < 20 {
            got.push(rx.recv().await.expect("submits are acknowledged"));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        while let Some(x) = rx.recv().await {
            got.push(x);
        }
        acked.extend(got);
    }
    let (mut child, addr) = spawn_server(config);
    assert_all_present(addr, pki, &acked).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acked.len() >= 60);
}

async fn assert_all_present(
    addr: std::net::SocketAddr,
    pki: &std::path::Path,
    acked: &[(usize, String)],
) {
    const TELLERS: [&str; 3] = ["teller-01", "teller-02", "teller-03"];
    for (w, teller) in TELLERS.iter().enumerate() {
        let mut c = countersign::tools::client::teller(addr, pki, teller)
            .await
            .unwrap();
        for (_, id) in acked.iter().filter(|(x, _)| *x == w) {
            let r = c
                .get(pb::GetRequest {
                    request_id: id.clone(),
                })
                .await;
            let r = r
                .unwrap_or_else(|s| panic!("acknowledged request {id} of {teller} is lost: {s:?}"));
            assert_eq!(&r.into_inner().request.unwrap().request_id, id);
        }
    }
}

/// The files the real binary runs on, in a temporary directory: a PKI, the test policy and a
/// configuration that lets each teller hold as many undecided requests as a load test submits.
pub struct BinaryFiles {
    /// Holds everything below; removed when dropped.
    pub dir: tempfile::TempDir,
    pub pki: std::path::PathBuf,
    pub config: std::path::PathBuf,
    /// The server's data directory (ledger, images, projections).
    pub data: std::path::PathBuf,
    /// The test's own database when it runs on PostgreSQL.
    pub database: Option<countersign::storage::postgres::scratch::ScratchDatabase>,
}

impl BinaryFiles {
    pub fn new() -> BinaryFiles {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        countersign::tools::pki::init(&pki).unwrap();
        std::fs::write(pki.join("policy.toml"), TEST_POLICY).unwrap();
        let config = pki.join("countersign.toml");
        let database = crate::harness::scratch_database();
        let text = test_config_text(database.as_ref(), &|s| {
            s.replace(
                "pending_per_teller_max = 20",
                "pending_per_teller_max = 100000",
            )
        });
        std::fs::write(&config, text).unwrap();
        let data = dir.path().join("data");
        BinaryFiles {
            dir,
            pki,
            config,
            data,
            database,
        }
    }
}

/// Starts the real binary and reads the address it bound from its first line of output.
/// A server process a test started: killed when dropped if still running, so that a test that
/// fails part-way leaves nothing running to load the machine (or take a lease) after it.
pub struct Spawned(pub std::process::Child);

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn spawn_server(config: &std::path::Path) -> (Spawned, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        // Beside the config, for a failing test to be read: every start appends to it.
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(config.with_extension("log"))
                .expect("open the server's log"),
        )
        .spawn()
        .expect("spawn countersign");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("countersign listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Spawned(child), addr)
}

fn last_segment(t: &TestServer) -> std::path::PathBuf {
    std::fs::read_dir(t.data_dir().join("ledger"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap()
}

crate::on_both_backends!(
    a_restart_keeps_every_request_and_hands_open_reviews_back,
    a_review_not_resumed_after_a_restart_times_out_and_is_offered_again,
    a_missing_projection_is_rebuilt_and_equals_the_state_before,
    a_missing_projection_is_rebuilt_from_the_ledger,
    sigkill_loses_no_acknowledged_submit,
    logs_in_a_file_are_plain_and_a_refused_start_says_why_in_one_line,
    missing_images_are_noticed_at_start,
);

// Torn writes and damaged segment files are the embedded backend's own failures: a database
// commits a record whole or not at all. Tampering with the tables is tested in ledger.rs. A
// second node on one database is a standby by design (cluster.rs), not a second writer.
crate::embedded_only!(
    a_torn_final_record_is_cut_and_the_rest_kept,
    damage_in_the_middle_of_the_ledger_refuses_to_start,
    a_second_server_on_the_same_data_directory_is_refused,
);

crate::on_both_backends!(check_all_images_finds_an_old_requests_missing_voucher);

/// The start-up check covers undecided requests and the last 1,000 records; `serve
/// --check-all-images` covers every image the ledger names, however old.
async fn check_all_images_finds_an_old_requests_missing_voucher() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut t = TestServer::start_with(&|s| {
        s.replace("images_per_request_min = 1", "images_per_request_min = 0")
            .replace(
                "pending_per_teller_max = 20",
                "pending_per_teller_max = 100000",
            )
    })
    .await;
    // An old request with vouchers, finished long ago.
    let old = submit(&t, "teller-01", "OLD-1").await;
    let mut teller = t.teller("teller-01").await;
    teller
        .cancel(pb::CancelRequest {
            request_id: old.request_id.clone(),
            reason: "customer left".into(),
        })
        .await
        .unwrap();
    // 1,001 later requests without images.
    for i in 0..1001 {
        let mut r = submit_request(&format!("N-{i}"), "WDL-CASH", 100, "6222020200110001");
        r.images.clear();
        teller.submit(r).await.unwrap();
    }
    t.stop().await;
    match &t.database {
        None => std::fs::remove_dir_all(t.data_dir().join("images")).unwrap(),
        Some(d) => d.execute("DELETE FROM images").unwrap(),
    }
    let health = |t: &TestServer| {
        let (addr, pki) = (t.addr(), t.pki.clone());
        async move {
            let ch = countersign::tools::client::channel(addr, &pki, "audit-01")
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
    };
    // The default check does not reach it.
    t.boot().await;
    assert_eq!(health(&t).await, ServingStatus::Serving as i32);
    t.stop().await;
    // The whole check does.
    t.config.engine.check_all_images = true;
    t.boot().await;
    assert_eq!(health(&t).await, ServingStatus::NotServing as i32);
}
