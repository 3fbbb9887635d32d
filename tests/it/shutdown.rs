//! Graceful shutdown of the real binary: SIGTERM under load from tellers and supervisors. The
//! server stops taking calls, answers those in flight once they are durable, ends the streams
//! with UNAVAILABLE and exits 0; nothing it acknowledged is missing after a restart.

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use countersign::api::pb;
use tonic::Code;

use crate::crash::{Acked, Ended, check, decide, tell};
use crate::durability::{BinaryFiles, spawn_server};
use crate::fixtures::submit_request;
use crate::harness::*;

/// How long the server may take to exit after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// `shutdown_grace_ms` in the sample configuration: how long the server waits for connections
/// still open, which none should be when every stream is one the server ends.
const SAMPLE_GRACE: Duration = Duration::from_secs(5);

async fn sigterm_under_load_loses_no_acknowledged_call() {
    let files = BinaryFiles::new();
    let (mut child, addr) = spawn_server(&files.config);
    let acked: Acked = Default::default();

    // A request above every supervisor's ceiling waits in the queue until the end, so its Watch
    // is still open when the server stops.
    let mut teller = countersign::tools::client::teller(addr, &files.pki, "teller-02")
        .await
        .unwrap();
    let amount = 500_000_000_000;
    let held = teller
        .submit(submit_request(
            "HELD-1",
            "WDL-CASH",
            amount,
            "6222020200110001",
        ))
        .await
        .expect("submit the held request")
        .into_inner()
        .request
        .unwrap()
        .request_id;
    acked.lock().unwrap().insert(
        held.clone(),
        ("teller-02".into(), "HELD-1".into(), amount, None),
    );
    let mut watch = teller
        .watch(pb::WatchRequest {
            request_id: held.clone(),
            after_version: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch state").expect("open");
    assert_eq!(state(&first.request.unwrap()), pb::RequestState::Queued);

    // A monitor following the server's health holds its stream open until the server ends it.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        countersign::tools::client::channel(addr, &files.pki, "admin-01")
            .await
            .unwrap(),
    )
    .watch(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .expect("health watch")
    .into_inner();
    let serving = health.message().await.expect("health").expect("open");
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    // Two submitting loops per teller, each on its own connection.
    for (w, teller) in ["teller-01", "teller-02", "teller-03"]
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        let prefix = format!("T{w}");
        let (pki, acked, stop) = (files.pki.clone(), acked.clone(), stop.clone());
        load.push((
            teller,
            tokio::spawn(tell(addr, pki, teller, prefix, acked, stop)),
        ));
    }
    for sup in ["sup-02", "sup-04"] {
        let (pki, acked, stop) = (files.pki.clone(), acked.clone(), stop.clone());
        load.push((sup, tokio::spawn(decide(addr, pki, sup, acked, stop))));
    }

    // SIGTERM once submits and decisions have been acknowledged, with more in flight.
    let loaded = Instant::now();
    while counts(&acked).0 < 100 || counts(&acked).1 < 10 {
        assert!(
            loaded.elapsed() < Duration::from_secs(10),
            "too little load: {:?} submits and decisions acknowledged",
            counts(&acked)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = counts(&acked);
    let exit = terminate(&mut child).await;
    assert!(
        exit < SAMPLE_GRACE,
        "exit took {exit:?}: a connection stayed open until the grace period ended"
    );

    // Every teller ended on a refused Submit, and every supervisor's Attend stream ended, with
    // UNAVAILABLE from the server or from a transport that lost its connection; nothing failed
    // in another way, and nothing kept running.
    let mut endings = std::collections::BTreeMap::<String, usize>::new();
    for (who, task) in load {
        let Ended { call, stream } = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap_or_else(|_| panic!("{who}: still running after the server exited"))
            .unwrap();
        let stream = match stream {
            Some(Err(s)) => Some(s),
            None if who.starts_with("teller") => None,
            other => panic!("{who}: the Attend stream ended {other:?}"),
        };
        if who.starts_with("teller") {
            assert!(call.is_some(), "{who}: no Submit failed");
        }
        for s in call.iter().chain(&stream) {
            assert!(retryable(s), "{who}: ended with {s:?}");
            *endings.entry(s.message().to_owned()).or_default() += 1;
        }
    }
    let end = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the Watch stream ends");
    match end {
        Err(s) => assert!(retryable(&s), "Watch ended with {s:?}"),
        Ok(m) => panic!("Watch: expected UNAVAILABLE, got {m:?}"),
    }
    // The health watcher was told NOT_SERVING, then the server ended its stream.
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let mut last = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), health.message())
            .await
            .expect("the health stream ends")
        {
            Ok(Some(m)) => last = Some(m.status),
            Ok(None) => break,
            Err(s) => panic!("the health Watch broke instead of ending: {s:?}"),
        }
    }
    assert_eq!(last, Some(not_serving));

    // A graceful stop leaves no torn tail (the last record was written whole) and no record
    // signed by nothing: the last checkpoint, signed at shutdown, covers them all.
    let report =
        crate::harness::verify_stored(&files.data, files.database.as_ref().map(|d| d.url()), None);
    assert_eq!((report.problem, report.torn_tail), (None, None));
    assert_eq!(report.signed, report.records, "signed at shutdown");

    // On the same data: everything acknowledged is there, as acknowledged, and the held
    // request is still waiting.
    let (mut child, addr) = spawn_server(&files.config);
    check(
        addr,
        &files.pki,
        &acked,
        &files.data,
        files.database.as_ref().map(|d| d.url()),
    )
    .await;
    let mut teller = countersign::tools::client::teller(addr, &files.pki, "teller-02")
        .await
        .unwrap();
    let r = teller
        .get(pb::GetRequest { request_id: held })
        .await
        .expect("get the held request")
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&r), pb::RequestState::Queued);
    // Idle, it stops cleanly too.
    terminate(&mut child).await;

    let (submits, decisions) = counts(&acked);
    eprintln!(
        "SIGTERM after {before:?} acknowledged submits and decisions; \
         {submits} submits and {decisions} decisions acknowledged in all; exit 0 in {:.0} ms; \
         load ended with {endings:?}",
        exit.as_secs_f64() * 1000.0
    );
}

/// How many submits and decisions were acknowledged.
fn counts(acked: &Acked) -> (usize, usize) {
    let acked = acked.lock().unwrap();
    let decisions = acked.values().filter(|v| v.3.is_some()).count();
    (acked.len(), decisions)
}

/// A failure that tells the client to try again: UNAVAILABLE from the server, and not blamed
/// on the ledger (a shutdown is not a storage failure), or any error of the client's own
/// transport once the connection is going or gone. (tonic's client reports a request caught
/// by the server's GOAWAY as INTERNAL and one queued on a connection that closed as CANCELLED;
/// the server answered neither, so both are safe to retry with the same serial.)
fn retryable(s: &tonic::Status) -> bool {
    let transport = std::error::Error::source(s)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    transport || (s.code() == Code::Unavailable && !s.message().contains("ledger"))
}

/// Sends SIGTERM and returns how long the server took to exit, failing the test unless it
/// exits with status 0 within `EXIT_BOUND` (it is killed after that).
async fn terminate(child: &mut Child) -> Duration {
    let start = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(sent, "kill -TERM {}", child.id());
    loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            return start.elapsed();
        }
        if start.elapsed() > EXIT_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit within {EXIT_BOUND:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A stream the server does not end (here gRPC reflection, held open by its client) holds its
/// connection open; the server waits `shutdown_grace_ms` for it, then exits 0 anyway.
async fn sigterm_with_a_stream_left_open_exits_after_the_grace_period() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let files = BinaryFiles::new();
    let text = std::fs::read_to_string(&files.config).unwrap();
    let edited = text.replace("shutdown_grace_ms = 5000", "shutdown_grace_ms = 1000");
    assert_ne!(edited, text, "the sample states shutdown_grace_ms");
    std::fs::write(&files.config, edited).unwrap();
    let (mut child, addr) = spawn_server(&files.config);
    let channel = countersign::tools::client::channel(addr, &files.pki, "admin-01")
        .await
        .unwrap();
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    // One question, then a request stream that never ends.
    let requests =
        tokio_stream::StreamExt::chain(tokio_stream::iter([ask]), tokio_stream::pending());
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(requests)
        .await
        .expect("reflection")
        .into_inner();
    answers.message().await.expect("answer").expect("open");
    let exit = terminate(&mut child).await;
    assert!(
        exit >= Duration::from_millis(900),
        "exited in {exit:?}: the open stream was not waited for"
    );
    // The configured grace (1 s), not the sample's 5 s.
    assert!(
        exit < Duration::from_millis(2500),
        "exited in {exit:?}: shutdown_grace_ms was not used"
    );
    eprintln!(
        "SIGTERM with a reflection stream open: exit 0 in {:.0} ms (grace 1000 ms)",
        exit.as_secs_f64() * 1000.0
    );
    let report =
        crate::harness::verify_stored(&files.data, files.database.as_ref().map(|d| d.url()), None);
    assert_eq!((report.problem, report.torn_tail), (None, None));
}

crate::on_both_backends!(
    sigterm_under_load_loses_no_acknowledged_call { flavor = "multi_thread", worker_threads = 2 },
    sigterm_with_a_stream_left_open_exits_after_the_grace_period { flavor = "multi_thread", worker_threads = 2 },
);
