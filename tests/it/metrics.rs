//! The Prometheus endpoint: off unless configured, only `GET /metrics`, a scrape that parses
//! strictly as the text exposition format, and series that move by exactly what the traffic
//! did (requests, offers, timers, sessions, the ledger writer).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use countersign::api::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::exposition::{Exposition, parse};
use crate::fixtures::submit_request;
use crate::harness::*;

/// The sample config with metrics served on a port the OS picks.
fn with_metrics(s: String) -> String {
    let off = "# [metrics]\n# listen = \"127.0.0.1:9464\"\n";
    assert!(s.contains(off), "the sample config documents [metrics]");
    s.replace(off, "[metrics]\nlisten = \"127.0.0.1:0\"\n")
}

async fn start() -> (TestServer, SocketAddr) {
    let t = TestServer::start_with(&with_metrics).await;
    let addr = t
        .server
        .as_ref()
        .expect("running")
        .metrics_addr
        .expect("metrics are served when configured");
    (t, addr)
}

async fn metrics_are_off_by_default() {
    let t = TestServer::start().await;
    assert_eq!(t.config.metrics_listen, None);
    assert_eq!(t.server.as_ref().unwrap().metrics_addr, None);
}

async fn only_get_metrics_is_served() {
    let (t, addr) = start().await;
    let ok = http(addr, "GET", "/metrics").await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(&ok.body).unwrap_or_else(|e| panic!("{e}\n{}", ok.body));
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/metrics/"),
        ("GET", "/other"),
        ("POST", "/metrics"),
        ("PUT", "/metrics"),
    ] {
        let r = http(addr, method, path).await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert!(!r.body.contains("countersign_"), "{method} {path}");
    }
    // The endpoint stops with the server.
    let mut t = t;
    t.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

async fn a_request_moves_the_series_by_what_happened() {
    let (t, addr) = start().await;
    let m = scrape(addr).await;
    // Every series exists from the start, at zero, with all its label values.
    for (name, labels) in [
        (
            "countersign_submissions_total",
            vec![("result", "accepted")],
        ),
        (
            "countersign_submissions_total",
            vec![("result", "replayed")],
        ),
        ("countersign_submissions_total", vec![("result", "refused")]),
        (
            "countersign_requests_finished_total",
            vec![("outcome", "approved")],
        ),
        (
            "countersign_requests_finished_total",
            vec![("outcome", "rejected")],
        ),
        (
            "countersign_requests_finished_total",
            vec![("outcome", "cancelled")],
        ),
        (
            "countersign_requests_finished_total",
            vec![("outcome", "expired")],
        ),
        ("countersign_queue_depth", vec![("level", "1")]),
        ("countersign_queue_depth", vec![("level", "9")]),
        ("countersign_requests_undecided", vec![]),
        ("countersign_request_wait_seconds_count", vec![]),
        ("countersign_request_decision_seconds_count", vec![]),
        ("countersign_offers_total", vec![]),
        ("countersign_offer_declines_total", vec![]),
        ("countersign_offer_timeouts_total", vec![]),
        ("countersign_requests_unservable_total", vec![]),
        ("countersign_review_timeouts_total", vec![]),
        ("countersign_escalations_total", vec![("reason", "waited")]),
        (
            "countersign_escalations_total",
            vec![("reason", "declined")],
        ),
        ("countersign_supervisors_attending", vec![]),
        ("countersign_supervisors_paused", vec![]),
    ] {
        assert_eq!(m.get(name, &labels), 0.0, "{name} {labels:?}");
    }
    // The ledger holds the engine's start, durable before the server serves.
    assert_eq!(m.get("countersign_ledger_records", &[]), 1.0);
    for h in [
        "countersign_ledger_append_seconds",
        "countersign_ledger_batch_records",
        "countersign_ledger_fsync_seconds",
    ] {
        assert_eq!(m.types[h], "histogram", "{h}");
    }

    // Submitted, then retried, then the serial reused for something else.
    let mut teller = t.teller("teller-01").await;
    let req = submit_request("M-0001", "WDL-CASH", 5_000_000, "6222020200112233445");
    let r = teller.submit(req.clone()).await.unwrap().into_inner();
    let id = r.request.unwrap().request_id;
    assert!(
        teller
            .submit(req.clone())
            .await
            .unwrap()
            .into_inner()
            .replayed
    );
    let mut changed = req.clone();
    changed.transaction.as_mut().unwrap().account = "6222020200112233446".into();
    assert_status(teller.submit(changed).await, Code::AlreadyExists, "M-0001");
    let m = scrape(addr).await;
    assert_eq!(
        m.get("countersign_submissions_total", &[("result", "accepted")]),
        1.0
    );
    assert_eq!(
        m.get("countersign_submissions_total", &[("result", "replayed")]),
        1.0
    );
    assert_eq!(
        m.get("countersign_submissions_total", &[("result", "refused")]),
        1.0
    );
    assert_eq!(m.get("countersign_queue_depth", &[("level", "1")]), 1.0);
    assert_eq!(m.get("countersign_requests_undecided", &[]), 1.0);

    // A supervisor attends and is offered it; pausing and resuming shows in the gauges.
    let mut sup = Console::open(&t, "sup-01").await;
    let o = sup.next_offer().await;
    assert_eq!(o.request_id, id);
    let m = scrape(addr).await;
    assert_eq!(m.get("countersign_offers_total", &[]), 1.0);
    assert_eq!(m.get("countersign_queue_depth", &[("level", "1")]), 0.0);
    assert_eq!(m.get("countersign_supervisors_attending", &[]), 1.0);
    assert_eq!(m.get("countersign_supervisors_paused", &[]), 0.0);
    sup.client.pause(pb::PauseRequest {}).await.unwrap();
    assert_eq!(
        scrape(addr)
            .await
            .get("countersign_supervisors_paused", &[]),
        1.0
    );
    sup.client.resume(pb::ResumeRequest {}).await.unwrap();
    assert_eq!(
        scrape(addr)
            .await
            .get("countersign_supervisors_paused", &[]),
        0.0
    );

    // Accepted 7 s after submission, approved 3 s after that, by the engine's (manual) clock.
    t.clock.advance_ms(7_000);
    sup.accept(&o).await;
    t.clock.advance_ms(3_000);
    let done = sup
        .decide(&o, pb::Decision::Approve, "", "ok")
        .await
        .unwrap();
    assert_eq!(state(&done), pb::RequestState::Approved);
    let m = scrape(addr).await;
    assert_eq!(m.get("countersign_request_wait_seconds_count", &[]), 1.0);
    assert_eq!(m.get("countersign_request_wait_seconds_sum", &[]), 7.0);
    assert_eq!(
        m.get("countersign_request_wait_seconds_bucket", &[("le", "5")]),
        0.0
    );
    assert_eq!(
        m.get("countersign_request_wait_seconds_bucket", &[("le", "15")]),
        1.0
    );
    assert_eq!(
        m.get("countersign_request_decision_seconds_count", &[]),
        1.0
    );
    assert_eq!(m.get("countersign_request_decision_seconds_sum", &[]), 3.0);
    assert_eq!(
        m.get(
            "countersign_requests_finished_total",
            &[("outcome", "approved")]
        ),
        1.0
    );
    assert_eq!(m.get("countersign_requests_undecided", &[]), 0.0);

    // The ledger: the engine's start, then submitted, offered, accepted, decided, all
    // durable before the reply.
    let records = t.ledger_len();
    assert_eq!(records, 5);
    assert_eq!(m.get("countersign_ledger_records", &[]), records as f64);
    assert_eq!(
        m.get("countersign_ledger_batch_records_sum", &[]),
        records as f64,
        "each record is made durable by exactly one fdatasync"
    );
    let fsyncs = m.get("countersign_ledger_fsync_seconds_count", &[]);
    assert!(fsyncs >= 1.0);
    assert_eq!(m.get("countersign_ledger_batch_records_count", &[]), fsyncs);
    assert!(m.get("countersign_ledger_append_seconds_count", &[]) >= 1.0);

    // Signing out: the gauge follows once the engine sees the stream close.
    drop(sup);
    until(addr, "no supervisor attending", |m| {
        m.get("countersign_supervisors_attending", &[]) == 0.0
    })
    .await;
}

async fn timers_declines_and_cancellations_are_counted() {
    let (t, addr) = start().await;
    let mut teller = t.teller("teller-01").await;

    // Nobody attends: one request escalates after waiting 60 s, another expires at 120 s.
    let waits = submit_code(&t, "teller-01", "M-0101", "ESC-WAIT", 100_000).await;
    submit_code(&t, "teller-01", "M-0102", "SHORT", 100_000).await;
    assert_eq!(
        scrape(addr)
            .await
            .get("countersign_queue_depth", &[("level", "1")]),
        2.0
    );
    t.clock.advance_ms(60_001);
    let m = until(addr, "an escalation", |m| {
        m.get("countersign_escalations_total", &[("reason", "waited")]) == 1.0
    })
    .await;
    assert_eq!(m.get("countersign_queue_depth", &[("level", "1")]), 1.0);
    assert_eq!(m.get("countersign_queue_depth", &[("level", "2")]), 1.0);
    t.clock.advance_ms(60_000);
    let m = until(addr, "an expiry", |m| {
        m.get(
            "countersign_requests_finished_total",
            &[("outcome", "expired")],
        ) == 1.0
    })
    .await;
    assert_eq!(m.get("countersign_queue_depth", &[("level", "1")]), 0.0);
    assert_eq!(m.get("countersign_requests_undecided", &[]), 1.0);
    teller
        .cancel(pb::CancelRequest {
            request_id: waits.request_id.clone(),
            reason: "customer left".into(),
        })
        .await
        .unwrap();
    let m = scrape(addr).await;
    assert_eq!(
        m.get(
            "countersign_requests_finished_total",
            &[("outcome", "cancelled")]
        ),
        1.0
    );
    assert_eq!(m.get("countersign_queue_depth", &[("level", "2")]), 0.0);
    assert_eq!(m.get("countersign_requests_undecided", &[]), 0.0);

    // One supervisor: an offer times out and comes back to them (no one else can take it),
    // and they decline it.
    let mut sup = Console::open(&t, "sup-01").await;
    let declined = submit(&t, "teller-01", "M-0103").await;
    let o = sup.next_offer().await;
    assert_eq!(
        (o.request_id.as_str(), o.epoch),
        (declined.request_id.as_str(), 1)
    );
    t.clock.advance_ms(30_001);
    assert!(matches!(
        sup.next().await,
        pb::attend_response::Event::Withdrawn(_)
    ));
    let o = sup.next_offer().await;
    assert_eq!(
        (o.request_id.as_str(), o.epoch),
        (declined.request_id.as_str(), 2)
    );
    sup.client
        .decline(pb::DeclineRequest {
            request_id: o.request_id.clone(),
            epoch: o.epoch,
            reason: "I know the customer".into(),
        })
        .await
        .unwrap();
    let m = scrape(addr).await;
    assert_eq!(m.get("countersign_offer_timeouts_total", &[]), 1.0);
    assert_eq!(m.get("countersign_offer_declines_total", &[]), 1.0);
    assert_eq!(m.get("countersign_offers_total", &[]), 2.0);
    assert_eq!(
        m.get("countersign_queue_depth", &[("level", "1")]),
        1.0,
        "nobody left who may take it"
    );

    // Accepted and held past the review timeout: taken back, offered again, accepted again
    // (not a first accept: the wait is observed once), rejected.
    let held = submit(&t, "teller-01", "M-0104").await;
    let o = sup.next_offer().await;
    assert_eq!(o.request_id, held.request_id);
    sup.accept(&o).await;
    t.clock.advance_ms(600_001);
    assert!(matches!(
        sup.next().await,
        pb::attend_response::Event::Withdrawn(_)
    ));
    let o = sup.next_offer().await;
    sup.accept(&o).await;
    t.clock.advance_ms(2_000);
    sup.decide(&o, pb::Decision::Reject, "LIMIT", "over limit")
        .await
        .unwrap();
    let m = scrape(addr).await;
    assert_eq!(m.get("countersign_review_timeouts_total", &[]), 1.0);
    assert_eq!(
        m.get(
            "countersign_requests_finished_total",
            &[("outcome", "rejected")]
        ),
        1.0
    );
    assert_eq!(m.get("countersign_request_wait_seconds_count", &[]), 1.0);
    assert_eq!(
        m.get("countersign_request_decision_seconds_count", &[]),
        1.0
    );
    assert_eq!(m.get("countersign_request_decision_seconds_sum", &[]), 2.0);
    assert_eq!(m.get("countersign_requests_undecided", &[]), 1.0);
    assert_eq!(
        m.get("countersign_ledger_records", &[]),
        t.ledger_len() as f64
    );
    // Over every supervisor's ceiling: nobody in the directory may take it.
    assert_eq!(m.get("countersign_requests_unservable_total", &[]), 0.0);
    submit_code(&t, "teller-02", "M-0105", "WDL-CASH", 500_000_000_000).await;
    let m = scrape(addr).await;
    assert_eq!(m.get("countersign_requests_unservable_total", &[]), 1.0);
}

// ---- A minimal HTTP/1.1 client ----

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection, read to the end (the request asks to close).
async fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .expect("an answer within 10 s");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().and_then(|s| s.parse().ok()).expect("a status");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header");
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let r = HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    };
    let len: usize = r
        .header("content-length")
        .expect("a content length")
        .parse()
        .expect("a number");
    assert_eq!(len, r.body.len(), "the whole body arrived");
    r
}

async fn scrape(addr: SocketAddr) -> Exposition {
    let r = http(addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    parse(&r.body).unwrap_or_else(|e| panic!("{e}\n--- scraped:\n{}", r.body))
}

/// Scrapes until `done` holds; fails after 10 s. For what the engine does on its own time
/// (timers, a closed stream), never for what a reply already guarantees.
async fn until(addr: SocketAddr, what: &str, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(addr).await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "no {what} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What monitoring expects of any gRPC server and any process: per-RPC counts by code and
/// latency under go-grpc-prometheus's names, build info, process CPU, memory and files, the
/// serving gauge, free disk, and seconds until each certificate expires.
async fn rpcs_process_disk_and_certificates_are_exposed() {
    let (t, addr) = start().await;
    let submit = [
        ("grpc_type", "unary"),
        ("grpc_service", "countersign.v1.TellerService"),
        ("grpc_method", "Submit"),
    ];
    // Two accepted, one refused (the same serial with other content), one UNAUTHENTICATED role.
    submit_code(&t, "teller-01", "M-1", "WDL-CASH", 5_000_000).await;
    submit_code(&t, "teller-01", "M-2", "WDL-CASH", 5_000_000).await;
    let mut c = t.teller("teller-01").await;
    let reused = c
        .submit(submit_request(
            "M-2",
            "WDL-CASH",
            7_000_000,
            "6222020200112233445",
        ))
        .await;
    assert_status(reused, Code::AlreadyExists, "");
    let wrong_role = t
        .teller("audit-01")
        .await
        .submit(submit_request("M-3", "WDL-CASH", 1, "6222020200112233445"))
        .await;
    assert_status(wrong_role, Code::PermissionDenied, "");
    let m = scrape(addr).await;
    assert_eq!(m.types["grpc_server_handled_total"], "counter");
    assert_eq!(m.types["grpc_server_handling_seconds"], "histogram");
    let code = |c: &'static str| {
        let mut l = submit.to_vec();
        l.push(("grpc_code", c));
        m.get("grpc_server_handled_total", &l)
    };
    assert_eq!(code("OK"), 2.0);
    assert_eq!(code("AlreadyExists"), 1.0);
    assert_eq!(code("PermissionDenied"), 1.0);
    assert_eq!(m.get("grpc_server_started_total", &submit), 4.0);
    assert_eq!(m.get("grpc_server_handling_seconds_count", &submit), 4.0);
    assert_eq!(
        m.get(
            "countersign_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(m.get("countersign_serving", &[]), 1.0);
    assert!(m.get("process_cpu_seconds_total", &[]) > 0.0);
    assert!(m.get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.get("process_open_fds", &[]) > 0.0);
    assert!(m.get("process_max_fds", &[]) > 0.0);
    if t.database.is_none() {
        assert!(m.get("countersign_data_dir_free_bytes", &[]) > 0.0);
    }
    // pki init's certificates are valid for years: the server's, the CA's, and teller-01's
    // (seen by its calls).
    let subjects = |kind: &str| {
        m.samples_named("countersign_certificate_expiry_seconds")
            .into_iter()
            .filter(|(labels, _)| labels.iter().any(|(k, v)| k == "certificate" && v == kind))
            .collect::<Vec<_>>()
    };
    for kind in ["server", "client_ca"] {
        let s = subjects(kind);
        assert_eq!(s.len(), 1, "{kind}: {s:?}");
        assert!(s[0].1 > 300.0 * 86_400.0, "{kind}: {s:?}");
    }
    let teller = m.get(
        "countersign_certificate_expiry_seconds",
        &[("certificate", "principal"), ("name", "teller-01")],
    );
    assert!(teller > 300.0 * 86_400.0);
}

/// Refused TLS handshakes are counted by reason: a client with no certificate, and a peer
/// that does not speak TLS at all.
async fn refused_tls_handshakes_are_counted() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let (t, addr) = start().await;
    let ca = std::fs::read_to_string(t.pki.join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://{}", t.addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    if let Ok(ch) = endpoint.connect().await {
        let r = countersign::api::pb::teller_service_client::TellerServiceClient::new(ch)
            .get(pb::GetRequest {
                request_id: "0".repeat(32),
            })
            .await;
        assert!(r.is_err(), "{r:?}");
    }
    let mut plain = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut sink)).await;
    let reason = |r: &'static str| {
        move |m: &Exposition| {
            m.get("countersign_tls_handshake_failures_total", &[("reason", r)]) >= 1.0
        }
    };
    until(
        addr,
        "a refusal without a certificate",
        reason("no_client_certificate"),
    )
    .await;
    let m = until(addr, "a refusal of plain text", reason("not_tls")).await;
    assert_eq!(
        m.get(
            "countersign_tls_handshake_failures_total",
            &[("reason", "client_certificate_refused")]
        ),
        0.0
    );
}

crate::on_both_backends!(
    refused_tls_handshakes_are_counted,
    rpcs_process_disk_and_certificates_are_exposed,
    metrics_are_off_by_default,
    only_get_metrics_is_served,
    a_request_moves_the_series_by_what_happened,
    timers_declines_and_cancellations_are_counted,
);
