//! Prometheus metrics: the registry, the series the engine and the ledger writer record, and
//! the plain-HTTP endpoint that serves them (`GET /metrics`, text format 0.0.4) when the config
//! names an address. The registry always exists, so the engine records the same way whether
//! or not anyone scrapes it.
//!
//! `rpc` holds the per-RPC series (go-grpc-prometheus names), `host` the process, disk and
//! certificate series read at each scrape. The engine's series are created at start with all
//! their label values, and the recorders hold the
//! handles, so recording is an atomic add (a histogram takes an uncontended lock) and never
//! allocates or hashes a label set. This module knows neither the domain nor the engine: the
//! engine maps its events onto the typed recorders here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// Scrapes served at once; a scraper keeps one connection, so more waits in the listen backlog.
const CONNECTIONS_MAX: usize = 8;
/// A connection that has not sent a request's headers within this is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered for one request's headers (hyper's minimum); `GET /metrics` needs a few
/// hundred.
const REQUEST_BUFFER_BYTES_MAX: usize = 8192;
/// Authority levels a request can need (the policy's range; escalation stops at the top).
const LEVELS: usize = 9;

mod host;
mod rpc;

pub use host::{CertExpiry, Host, certificate_expiry};
pub use rpc::{Rpc, RpcMetrics, code_name};

/// The registry and every series.
pub struct Metrics {
    registry: Registry,
    pub engine: EngineMetrics,
    pub ledger: LedgerMetrics,
    pub witnesses: WitnessMetrics,
    pub rpc: RpcMetrics,
    /// 1 while the server serves (health SERVING for its services), 0 when it does not.
    serving: Gauge,
    host: Option<Host>,
    /// TLS handshakes refused, by reason.
    tls_refused: Family<[(&'static str, &'static str); 1], Counter>,
}

/// The reasons a TLS handshake is refused, as `tls_handshake_failures_total` labels them.
pub const TLS_REFUSALS: [&str; 7] = [
    "no_client_certificate",
    "client_certificate_refused",
    "not_tls",
    "incompatible",
    "timeout",
    "io",
    "other",
];

/// How a request ended.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Approved,
    Rejected,
    Cancelled,
    Expired,
    /// Authorized on site during a fallback and registered afterwards.
    Fallback,
}

/// What the engine did with a Submit.
#[derive(Clone, Copy, Debug)]
pub enum SubmitResult {
    /// A new request was recorded.
    Accepted,
    /// A retry of an earlier identical Submit, answered with the existing request.
    Replayed,
    /// Refused: a full queue or teller limit, a reused serial, no policy rule, unavailable.
    Refused,
}

/// Why a request's level was raised.
#[derive(Clone, Copy, Debug)]
pub enum Escalation {
    Waited,
    Declined,
}

/// What the engine records. Held by the engine task; every method is a few atomic operations.
pub struct EngineMetrics {
    /// Indexed by `Outcome as usize`.
    finished: [Counter; 5],
    /// Indexed by `SubmitResult as usize`.
    submissions: [Counter; 3],
    /// QUEUED requests by the level they need now; index = level - 1.
    queue_depth: [Gauge; LEVELS],
    /// Requests not yet final (queued, offered, in review, returned).
    undecided: Gauge,
    wait: Histogram,
    decision: Histogram,
    offers: Counter,
    declines: Counter,
    offer_timeouts: Counter,
    unservable: Counter,
    review_timeouts: Counter,
    /// Indexed by `Escalation as usize`.
    escalations: [Counter; 2],
    attending: Gauge,
    paused: Gauge,
}

/// What the centre sees of its witnesses, labelled by witness name.
pub struct WitnessMetrics {
    cosigned: Family<[(&'static str, String); 1], Gauge>,
    lag: Family<[(&'static str, String); 1], Gauge>,
    failures: Family<[(&'static str, String); 1], Counter>,
}

/// What the ledger writer thread records. Cloning shares the series.
#[derive(Clone)]
pub struct LedgerMetrics {
    append: Histogram,
    batch: Histogram,
    fsync: Histogram,
    records: Gauge,
}

/// The metrics endpoint while it runs.
pub struct Endpoint {
    /// The address actually bound (the OS chooses the port when the config says 0).
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Metrics {
    /// A registry with every series at zero, without the host series (tools and tests).
    pub fn new() -> Metrics {
        Self::build(None)
    }

    /// As `new`, with the process, disk and certificate series `host` describes.
    pub fn with_host(host: Host) -> Metrics {
        Self::build(Some(host))
    }

    fn build(host: Option<Host>) -> Metrics {
        // The standard series (process_*, grpc_server_*) keep their standard names; ours are
        // prefixed.
        let mut registry = Registry::default();
        let rpc = RpcMetrics::register(&mut registry);
        if let Some(host) = &host {
            registry.register_collector(Box::new(host::HostCollector(host.clone())));
        }
        let ours = registry.sub_registry_with_prefix("countersign");
        let engine = EngineMetrics::register(ours);
        let ledger = LedgerMetrics::new();
        ledger.register(ours);
        let witnesses = WitnessMetrics::register(ours);
        let serving = Gauge::default();
        ours.register(
            "serving",
            "1 while this node serves its services (health SERVING), else 0",
            serving.clone(),
        );
        let build = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        ours.register("build_info", "The running build: always 1", build);
        let tls_refused = Family::<[(&'static str, &'static str); 1], Counter>::default();
        for reason in TLS_REFUSALS {
            let _ = tls_refused.get_or_create(&[("reason", reason)]);
        }
        ours.register(
            "tls_handshake_failures",
            "TLS handshakes refused (no or untrusted client certificate, not TLS, too slow), by reason",
            tls_refused.clone(),
        );
        Metrics {
            registry,
            engine,
            ledger,
            witnesses,
            rpc,
            serving,
            host,
            tls_refused,
        }
    }

    /// The host series' sources, when this registry has them.
    pub fn host_certificates(&self) -> Option<Host> {
        self.host.clone()
    }

    /// A TLS handshake was refused for `reason` (one of `TLS_REFUSALS`).
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_refused.get_or_create(&[("reason", reason)]).inc();
    }

    /// Whether this node serves now.
    pub fn serving(&self, serving: bool) {
        self.serving.set(i64::from(serving));
    }

    /// Every series in the Prometheus text format, version 0.0.4.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(8192);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineMetrics {
    fn register(r: &mut Registry) -> EngineMetrics {
        let finished = Family::<[(&'static str, &'static str); 1], Counter>::default();
        r.register(
            "requests_finished",
            "Requests that reached a final state, by outcome",
            finished.clone(),
        );
        let submissions = Family::<[(&'static str, &'static str); 1], Counter>::default();
        r.register(
            "submissions",
            "Submit calls the engine handled, by result (refused: limits, reused serial, no \
             policy rule, unavailable)",
            submissions.clone(),
        );
        let depth = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        r.register(
            "queue_depth",
            "Requests waiting in the queue (QUEUED), by the authority level they need now",
            depth.clone(),
        );
        let undecided = Gauge::default();
        r.register(
            "requests_undecided",
            "Requests not yet final: queued, offered, in review or returned to the teller",
            undecided.clone(),
        );
        // From seconds to a day: requests wait for a free supervisor, and decision deadlines
        // are counted in hours.
        let wait = Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
            28800.0, 86400.0,
        ]);
        r.register_with_unit(
            "request_wait",
            "Time from submission to the first accept by a supervisor, from ledger record times",
            Unit::Seconds,
            wait.clone(),
        );
        // A review is bounded by the review timeout (ten minutes in the sample config).
        let decision = Histogram::new([
            1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
        ]);
        r.register_with_unit(
            "request_decision",
            "Time from a supervisor's accept to their decision, from ledger record times",
            Unit::Seconds,
            decision.clone(),
        );
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let offers = counter(r, "offers", "Offers made to supervisors");
        let declines = counter(r, "offer_declines", "Offers declined by supervisors");
        let offer_timeouts = counter(
            r,
            "offer_timeouts",
            "Offers not accepted within their offer timeout",
        );
        let unservable = counter(
            r,
            "requests_unservable",
            "Requests queued that no supervisor in the directory may take (level, ceiling, codes, independence, declines)",
        );
        let review_timeouts = counter(
            r,
            "review_timeouts",
            "Accepted requests taken back because no decision came within the review timeout",
        );
        let escalations = Family::<[(&'static str, &'static str); 1], Counter>::default();
        r.register(
            "escalations",
            "Raises of the level a request needs, by reason",
            escalations.clone(),
        );
        let attending = Gauge::default();
        r.register(
            "supervisors_attending",
            "Supervisors with an open Attend stream, paused ones included",
            attending.clone(),
        );
        let paused = Gauge::default();
        r.register(
            "supervisors_paused",
            "Attending supervisors who paused new offers",
            paused.clone(),
        );
        let get = |f: &Family<[(&'static str, &'static str); 1], Counter>, k, v| {
            f.get_or_create(&[(k, v)]).clone()
        };
        EngineMetrics {
            finished: ["approved", "rejected", "cancelled", "expired", "fallback"]
                .map(|v| get(&finished, "outcome", v)),
            submissions: ["accepted", "replayed", "refused"]
                .map(|v| get(&submissions, "result", v)),
            queue_depth: ["1", "2", "3", "4", "5", "6", "7", "8", "9"]
                .map(|v| depth.get_or_create(&[("level", v)]).clone()),
            undecided,
            wait,
            decision,
            offers,
            declines,
            offer_timeouts,
            unservable,
            review_timeouts,
            escalations: ["waited", "declined"].map(|v| get(&escalations, "reason", v)),
            attending,
            paused,
        }
    }

    pub fn finished(&self, outcome: Outcome) {
        self.finished[outcome as usize].inc();
    }

    pub fn submission(&self, result: SubmitResult) {
        self.submissions[result as usize].inc();
    }

    /// A request entered (`delta` 1) or left (-1) the queue at `level`.
    pub fn queued(&self, level: u8, delta: i64) {
        // The policy admits levels 1..=9 and escalation stops at 9; clamping keeps a bug
        // elsewhere from panicking here.
        let i = usize::from(level.clamp(1, LEVELS as u8)) - 1;
        self.queue_depth[i].inc_by(delta);
    }

    /// A request was submitted or loaded (1), or became final (-1).
    pub fn undecided(&self, delta: i64) {
        self.undecided.inc_by(delta);
    }

    /// The engine dropped its in-memory requests to load them again: the queue and undecided
    /// gauges start from zero and are counted up as requests are loaded.
    pub fn clear_requests(&self) {
        for g in &self.queue_depth {
            g.set(0);
        }
        self.undecided.set(0);
    }

    /// A request was first accepted `ms` after its submission.
    pub fn waited_ms(&self, ms: i64) {
        self.wait.observe(seconds(ms));
    }

    /// A supervisor decided `ms` after accepting.
    pub fn decided_after_ms(&self, ms: i64) {
        self.decision.observe(seconds(ms));
    }

    pub fn offered(&self) {
        self.offers.inc();
    }

    pub fn declined(&self) {
        self.declines.inc();
    }

    /// A request was queued that no supervisor in the directory may take.
    pub fn unservable(&self) {
        self.unservable.inc();
    }

    pub fn offer_timed_out(&self) {
        self.offer_timeouts.inc();
    }

    pub fn review_timed_out(&self) {
        self.review_timeouts.inc();
    }

    pub fn escalated(&self, reason: Escalation) {
        self.escalations[reason as usize].inc();
    }

    /// The supervisors' sessions changed: `attending` open, `paused` of them paused.
    pub fn supervisors(&self, attending: usize, paused: usize) {
        self.attending
            .set(i64::try_from(attending).unwrap_or(i64::MAX));
        self.paused.set(i64::try_from(paused).unwrap_or(i64::MAX));
    }
}

impl WitnessMetrics {
    fn register(r: &mut Registry) -> WitnessMetrics {
        let w = WitnessMetrics {
            cosigned: Family::default(),
            lag: Family::default(),
            failures: Family::default(),
        };
        r.register(
            "witness_cosigned_tree_size",
            "Size of the largest checkpoint each witness has cosigned",
            w.cosigned.clone(),
        );
        r.register(
            "witness_lag_records",
            "Records signed by the centre but not yet cosigned by each witness",
            w.lag.clone(),
        );
        r.register(
            "witness_failures",
            "Calls to each witness that failed or were refused",
            w.failures.clone(),
        );
        w
    }

    /// `witness` has cosigned up to `size`, `lag` records behind the latest checkpoint.
    pub fn cosigned(&self, witness: &str, size: u64, lag: u64) {
        let label = [("witness", witness.to_owned())];
        self.cosigned
            .get_or_create(&label)
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        self.lag
            .get_or_create(&label)
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// A call to `witness` failed or was refused.
    pub fn failed(&self, witness: &str) {
        self.failures
            .get_or_create(&[("witness", witness.to_owned())])
            .inc();
    }
}

impl LedgerMetrics {
    /// Series not in any registry: for tools, tests and benchmarks that open a ledger without
    /// a server. The writer records into them all the same.
    pub fn new() -> LedgerMetrics {
        // fdatasync takes from tens of microseconds (a fast SSD) to a second (a busy disk).
        let seconds = || Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        LedgerMetrics {
            append: seconds(),
            batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            fsync: seconds(),
            records: Gauge::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "ledger_append",
            "Time from a batch of records handed to the ledger writer until it is durable",
            Unit::Seconds,
            self.append.clone(),
        );
        r.register_with_unit(
            "ledger_batch",
            "Records made durable by one fdatasync (group commit)",
            Unit::Other("records".into()),
            self.batch.clone(),
        );
        r.register_with_unit(
            "ledger_fsync",
            "Duration of one fdatasync of the ledger",
            Unit::Seconds,
            self.fsync.clone(),
        );
        r.register(
            "ledger_records",
            "Records durable in the ledger",
            self.records.clone(),
        );
    }

    /// A batch handed to the writer `waited` ago is durable now.
    pub fn appended(&self, waited: Duration) {
        self.append.observe(waited.as_secs_f64());
    }

    /// One fdatasync made `records` records durable and took `took`.
    pub fn synced(&self, records: usize, took: Duration) {
        self.batch.observe(records as f64);
        self.fsync.observe(took.as_secs_f64());
    }

    /// The ledger holds `count` durable records.
    pub fn durable(&self, count: u64) {
        self.records.set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

impl Default for LedgerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Binds `addr` and serves `GET /metrics` over HTTP/1.1 until `Endpoint::stop`. Plain HTTP,
/// no client certificates: bind it to loopback or a management network.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<Endpoint> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics.listen = \"{addr}\": cannot bind it"))?;
    serve_on(listener, metrics)
}

/// Serves `GET /metrics` on a listener already bound (a server binds it before opening its
/// storage, so that an address in use is found at once).
pub fn serve_on(listener: TcpListener, metrics: Arc<Metrics>) -> anyhow::Result<Endpoint> {
    let addr = listener
        .local_addr()
        .context("read bound metrics address")?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept(listener, metrics, stopped));
    Ok(Endpoint { addr, stop, task })
}

impl Endpoint {
    /// Stops accepting and closes every open connection.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "metrics endpoint task failed");
        }
    }
}

fn seconds(ms: i64) -> f64 {
    // A clock set back between two records must not make a negative observation.
    ms.max(0) as f64 / 1000.0
}

async fn accept(listener: TcpListener, metrics: Arc<Metrics>, mut stop: oneshot::Receiver<()>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    // Dropped at the end of this function, which aborts every connection still open.
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        // The reply is written in more than one piece; Nagle would hold the last one back.
        let _ = stream.set_nodelay(true);
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let reply = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(reply) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(REQUEST_BUFFER_BYTES_MAX)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

/// `GET /metrics` gets the text; anything else is 404.
fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<String> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        let mut r = Response::new("not found\n".to_owned());
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    match metrics.encode() {
        Ok(text) => {
            let mut r = Response::new(text);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "encode metrics");
            let mut r = Response::new("cannot encode metrics\n".to_owned());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}
