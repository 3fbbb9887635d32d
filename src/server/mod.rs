//! Starting and stopping the gRPC server: TLS with required client certificates, the
//! services with their message limits, and the health service. With the embedded backend the
//! engine starts at once; with the postgres backend the node starts as a standby and leads
//! when it takes the lease (`cluster`).

mod cluster;
mod console;
mod rpc_metrics;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{EngineSlot, HEALTH_NAMES, Role};
use crate::config::Config;
use crate::engine::{Clock, EngineHandle};
use crate::storage::StorageConfig;

/// A running server.
pub struct Server {
    /// The address actually bound (the port is chosen by the OS when the config says 0).
    pub addr: SocketAddr,
    /// The principal directory in force.
    directory: crate::api::SharedDirectory,
    directory_path: std::path::PathBuf,
    policy_path: std::path::PathBuf,
    /// The engine of the moment (a standby's until this node leads).
    engine: EngineSlot,
    /// Whether this node leads.
    role: tokio::sync::watch::Receiver<Role>,
    /// The embedded backend's engine and role, which never change.
    _kept: Option<(
        tokio::sync::watch::Sender<EngineHandle>,
        tokio::sync::watch::Sender<Role>,
    )>,
    /// Where `GET /metrics` is served, when the config names a metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// The leading engine's task, once this node leads.
    engine_task: cluster::EngineTask,
    /// The postgres backend's connection to the database, closed after the engine stops.
    follower: Option<Arc<crate::storage::postgres::Follower>>,
    /// A standby's wait to take over (and a leader's watch on its lease).
    cluster_task: Option<JoinHandle<()>>,
    metrics: Option<crate::metrics::Endpoint>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// The health statuses; cleared at shutdown, which ends every health Watch stream.
    health: tonic_health::server::HealthReporter,
    /// Makes health follow the engine; stopped at shutdown so it cannot set a status again.
    health_task: JoinHandle<()>,
    /// The daily certificate expiry warning.
    expiry_task: JoinHandle<()>,
    /// Accepts TCP connections and runs their TLS handshakes.
    accept_task: JoinHandle<()>,
    /// How long connections still open at shutdown get to close.
    grace: Duration,
}

/// Opens the data directory, recovers, and starts serving.
pub async fn start(
    config: &Config,
    clock: Arc<dyn Clock>,
    rng: Box<dyn rand::RngCore + Send>,
) -> anyhow::Result<Server> {
    // Bound first: a cluster node advertises the address it is reached at.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| bind_error("listen", config.listen, e))?;
    tls::check_in_force(&config.tls_cert_pem, &config.client_ca_pem, clock.now())?;
    // The metrics address too, before the storage is opened (which may take a while).
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .map_err(|e| bind_error("metrics.listen", at, e))?,
        ),
        None => None,
    };
    let addr = listener.local_addr().context("read bound address")?;
    // The directory in force, which the services check every call against and a reload
    // replaces.
    let directory = crate::api::SharedDirectory::new(config.directory.clone());
    // Always kept, so the engine records the same way whether or not anything is served.
    let metrics = Arc::new(crate::metrics::Metrics::with_host(host_series(
        config,
        &directory,
        clock.clone(),
    )?));
    let metrics_series = metrics.clone();
    let engine_task = cluster::EngineTask::default();
    let mut kept = None;
    let mut follower = None;
    let (engine, role, cluster_task) = match &config.storage {
        StorageConfig::Embedded(_) => {
            // Opening reads the whole ledger (to check it and rebuild the tree): off the runtime.
            let (storage_config, m) = (config.storage.clone(), metrics.clone());
            let storage =
                tokio::task::spawn_blocking(move || crate::storage::open(&storage_config, &m))
                    .await
                    .context("join storage opening")?
                    .context("open storage")?;
            let (engine, task) =
                EngineHandle::start(storage, config.engine.clone(), clock, rng, metrics.clone())
                    .await?;
            engine_task.set(task);
            let (engine_tx, engine) = tokio::sync::watch::channel(engine);
            let (role_tx, role) = tokio::sync::watch::channel(Role::Leader);
            // Held, never changed: one node, always the leader.
            kept = Some((engine_tx, role_tx));
            (engine, role, None)
        }
        StorageConfig::Postgres(settings) => {
            let mut settings = settings.clone();
            // Port 0 in the advertised address is the port just bound (tests, one machine).
            if let Some(host) = settings.advertise.strip_suffix(":0") {
                settings.advertise = format!("{host}:{}", addr.port());
            }
            let c = cluster::start(
                &settings,
                config.engine.clone(),
                directory.clone(),
                cluster::ReloadFiles {
                    directory: config.directory_path.clone(),
                    policy: config.policy_path.clone(),
                },
                clock,
                rng,
                metrics.clone(),
                engine_task.clone(),
            )
            .await?;
            follower = Some(c.follower);
            (c.engine, c.role, Some(c.task))
        }
    };
    let metrics = match metrics_listener {
        Some(listener) => {
            let endpoint = crate::metrics::serve_on(listener, metrics)?;
            tracing::info!(addr = %endpoint.addr, "serving metrics at GET /metrics");
            Some(endpoint)
        }
        None => None,
    };
    let tls = tls::acceptor(
        &config.tls_cert_pem,
        &config.tls_key_pem,
        &config.client_ca_pem,
    )?;
    let mut services = crate::api::services(
        engine.clone(),
        role.clone(),
        directory.clone(),
        config.api.clone(),
        config.policy_path.clone(),
        config.directory_path.clone(),
    );
    console::add(&mut services);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Set before serving, so that the first health check already has an answer.
    let leading = *role.borrow() == Role::Leader;
    let healthy = *engine.borrow().health().borrow();
    set_health(&health_reporter, leading, healthy).await;
    let health_task = tokio::spawn(follow_health(
        health_reporter.clone(),
        engine.clone(),
        role.clone(),
        metrics_series.clone(),
    ));
    // v1 and v1alpha both: grpcurl before 1.9 and grpcio's reflection client speak only
    // v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("build the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("build the v1alpha reflection service")?;
    let (tx, rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        // The browser console speaks gRPC-Web, over HTTP/1.1 or HTTP/2.
        .accept_http1(true)
        // A peer that vanished without closing (a cut line, a firewall dropping state) is found
        // by an unanswered PING, and its Attend stream ends: presence is only what answers.
        .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
        // Outermost: a gRPC-Web call becomes a gRPC call before anything else sees it.
        .layer(console::WebLayer)
        // Next, so it counts the status the client gets (after the mapping below).
        .layer(rpc_metrics::RpcMetricsLayer(metrics_series.clone()))
        .layer(tower::util::MapResponseLayer::new({
            let max = config.api.message_bytes_max;
            move |r| library_statuses_get_details(r, max)
        }))
        .add_routes(services)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // Small replies must not wait for Nagle's algorithm and the peer's delayed ACK: that costs
    // tens of milliseconds per call (serve_with_incoming does not set it for us).
    // TCP keepalive too, below HTTP/2's PING: the kernel drops a connection whose peer is gone
    // even when nothing above asks.
    let tcp_keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_millis(config.keepalive_interval_ms))
        .with_interval(Duration::from_millis(config.keepalive_timeout_ms));
    let tune = move |s: &tokio::net::TcpStream| {
        let _ = s.set_nodelay(true);
        let _ = socket2::SockRef::from(s).set_tcp_keepalive(&tcp_keepalive);
    };
    let (incoming, accept_task) = tls::incoming(listener, tls, tune, metrics_series.clone());
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    tracing::info!(%addr, principals = config.directory.len(), "serving");
    let expiry_task = tokio::spawn(warn_of_expiry(metrics_series.host_certificates()));
    Ok(Server {
        addr,
        expiry_task,
        accept_task,
        directory,
        directory_path: config.directory_path.clone(),
        policy_path: config.policy_path.clone(),
        engine,
        role,
        _kept: kept,
        follower,
        cluster_task,
        metrics_addr: metrics.as_ref().map(|m| m.addr),
        metrics,
        engine_task,
        shutdown: Some(tx),
        task,
        health: health_reporter,
        health_task,
        grace: Duration::from_millis(config.shutdown_grace_ms),
    })
}

/// How far ahead of a certificate's expiry the log warns.
const EXPIRY_WARNING_SECONDS: i64 = 30 * 24 * 3600;

/// The process, disk and certificate series: the server's certificate and the client CA's
/// (read once here) and every principal certificate seen since start
/// (`SharedDirectory::seen_certificates`).
fn host_series(
    config: &Config,
    directory: &crate::api::SharedDirectory,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<crate::metrics::Host> {
    let now = move || clock.now().0.div_euclid(1000);
    let mut fixed = Vec::new();
    for (kind, setting, pem) in [
        ("server", "tls.cert", &config.tls_cert_pem),
        ("client_ca", "tls.client_ca", &config.client_ca_pem),
    ] {
        for cert in rustls_pki_pems(pem) {
            let (name, not_after) = crate::metrics::certificate_expiry(&cert)
                .with_context(|| format!("{setting}: a certificate in it does not parse"))?;
            fixed.push(crate::metrics::CertExpiry {
                kind,
                name,
                not_after,
            });
        }
    }
    let seen = directory.clone();
    Ok(crate::metrics::Host {
        data_dir: match &config.storage {
            StorageConfig::Embedded(s) => Some(s.data_dir.clone()),
            StorageConfig::Postgres(_) => None,
        },
        certificates: Arc::new(move || {
            let mut all = fixed.clone();
            all.extend(seen.seen_certificates());
            all
        }),
        now: Arc::new(now),
    })
}

/// Once a day (and at start), warns in the log of every certificate the server knows of
/// (its own, the client CA, the principals seen) that expires within 30 days.
async fn warn_of_expiry(certificates: Option<crate::metrics::Host>) {
    let Some(host) = certificates else { return };
    let mut day = tokio::time::interval(Duration::from_secs(24 * 3600));
    loop {
        day.tick().await;
        let now = (host.now)();
        for c in (host.certificates)() {
            let left = c.not_after - now;
            if left < EXPIRY_WARNING_SECONDS {
                tracing::warn!(certificate = c.kind, name = %c.name, days_left = left / 86_400,
                    "certificate expires within 30 days: renew it");
            }
        }
    }
}

/// The DER bytes of every CERTIFICATE block in a PEM text.
fn rustls_pki_pems(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + "-----BEGIN CERTIFICATE-----".len()..];
        let Some(end) = body.find("-----END CERTIFICATE-----") else {
            break;
        };
        let b64: String = body[..end].split_whitespace().collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[end..];
    }
    out
}

/// Why an address could not be bound, with the setting that names it and what to do.
fn bind_error(setting: &str, addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let what = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another process listens there: stop it (`ss -ltnp 'sport = :{}'` names it) or \
             choose another port",
            addr.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that address: use one of its addresses, or 0.0.0.0"
                .into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges: choose a port from 1024 up".into()
        }
        _ => "check the address".into(),
    };
    anyhow::Error::new(e).context(format!("{setting} = \"{addr}\": cannot bind it: {what}"))
}

/// Reloads the policy and the principal directory of a running server.
#[derive(Clone)]
pub struct Reloader {
    directory: crate::api::SharedDirectory,
    directory_path: std::path::PathBuf,
    policy_path: std::path::PathBuf,
    engine: EngineSlot,
}

impl Reloader {
    /// Reads the principal directory file again and puts it in force, as
    /// AdminService.ReloadDirectory does (`api::reload_directory`), recorded as asked by the
    /// system (SIGHUP).
    pub async fn reload_directory(
        &self,
    ) -> Result<(crate::api::Reloaded, crate::engine::Revoked), tonic::Status> {
        let engine = self.engine.borrow().clone();
        let system = crate::domain::Actor::System;
        crate::api::reload_directory(&self.directory, &self.directory_path, &engine, system).await
    }

    /// Reads the policy file again and puts it in force, as AdminService.ReloadPolicy does
    /// (`api::reload_policy`), recorded as asked by the system (SIGHUP). Returns the new and
    /// the previous policy's hashes.
    pub async fn reload_policy(&self) -> Result<(String, String), tonic::Status> {
        let engine = self.engine.borrow().clone();
        crate::api::reload_policy(&self.policy_path, &engine, crate::domain::Actor::System).await
    }
}

/// Statuses the gRPC library makes itself, before any of our code runs, get what ours carry:
/// an over-size message (tonic says OUT_OF_RANGE; gRPC's status table says RESOURCE_EXHAUSTED)
/// becomes the API's MESSAGE_TOO_LARGE with the limit; any other refusal without details (an
/// unknown method, bytes that do not decode) keeps its code and message and gains an
/// ErrorInfo (`api::status::from_library`). Such refusals are always trailers-only: the
/// request was refused before any reply.
fn library_statuses_get_details(
    mut response: tonic::codegen::http::Response<tonic::body::Body>,
    max: usize,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    // tonic's own reading of the headers: the code, and the message percent-decoded.
    let Some(made) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    let (code, message) = (made.code(), made.message().to_string());
    if code == tonic::Code::Ok {
        return response;
    }
    // "Error, decoded message length too large: found N bytes, the limit is: M bytes"
    let too_large = "Error, decoded message length too large: found ";
    let replaced = match message.strip_prefix(too_large) {
        Some(rest) if code == tonic::Code::OutOfRange => {
            let found: String = rest.chars().take_while(char::is_ascii_digit).collect();
            crate::api::status::message_too_large(&found, max)
        }
        _ => crate::api::status::from_library(code, message),
    };
    let replaced = replaced.into_http::<tonic::body::Body>();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        match replaced.headers().get(name) {
            Some(v) => {
                headers.insert(name, v.clone());
            }
            None => {
                headers.remove(name);
            }
        }
    }
    response
}

/// Keeps the health statuses true: on the leader every service follows the engine (NOT_SERVING
/// while the ledger cannot write); on a standby AuditService is SERVING (it reads the database)
/// and the rest, "" included, NOT_SERVING, so that a load balancer finds the leader.
async fn follow_health(
    reporter: tonic_health::server::HealthReporter,
    mut engine: EngineSlot,
    mut role: tokio::sync::watch::Receiver<Role>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    loop {
        let mut healthy = engine.borrow_and_update().health();
        let leading = *role.borrow_and_update() == Role::Leader;
        loop {
            let serving = *healthy.borrow_and_update();
            set_health(&reporter, leading, serving).await;
            // A standby serves audits only: it counts as not serving.
            metrics.serving(leading && serving);
            tokio::select! {
                changed = healthy.changed(), if leading => if changed.is_err() { break },
                changed = engine.changed() => if changed.is_err() { return } else { break },
                changed = role.changed() => if changed.is_err() { return } else { break },
            }
        }
    }
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, leading: bool, serving: bool) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    for name in HEALTH_NAMES {
        let up = if leading {
            serving
        } else {
            name == crate::api::AUDIT_SERVICE
        };
        reporter
            .set_service_status(name, if up { Serving } else { NotServing })
            .await;
    }
}

impl Server {
    /// What reloads the policy and the principal directory (SIGHUP), apart from the server.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            directory: self.directory.clone(),
            directory_path: self.directory_path.clone(),
            policy_path: self.policy_path.clone(),
            engine: self.engine.clone(),
        }
    }

    /// The engine of the moment: a standby's until this node leads.
    pub fn engine(&self) -> EngineHandle {
        self.engine.borrow().clone()
    }

    /// Follows the engine of the moment.
    pub fn engine_slot(&self) -> EngineSlot {
        self.engine.clone()
    }

    /// Whether this node leads.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Reports NOT_SERVING, ends every stream (clients see UNAVAILABLE and reconnect; health
    /// watchers see the stream end), answers the calls in flight once their records are
    /// durable, stops serving, flushes sled and closes the data directory, so that a new server
    /// can open it at once. Connections still open after the grace period (a stream the server
    /// does not end, such as reflection, or a client that does not read) are left behind: by
    /// then nothing they could be told is missing from disk.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(t) = self.cluster_task.take() {
            t.abort();
        }
        self.health_task.abort();
        self.expiry_task.abort();
        self.accept_task.abort();
        for name in HEALTH_NAMES {
            self.health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        self.engine().shutdown().await;
        // A health Watch lasts as long as its status: without this, one monitor would hold its
        // connection, and so the graceful stop below, open forever.
        for name in HEALTH_NAMES {
            self.health.clear_service_status(name).await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(joined) => joined.context("join server task")??,
            Err(_) => {
                tracing::warn!(
                    grace_ms = self.grace.as_millis() as u64,
                    "connections still open after the shutdown grace period; stopping anyway"
                );
                self.task.abort();
            }
        }
        if let Some(m) = self.metrics.take() {
            m.stop().await;
        }
        self.engine().flush().await?;
        let Server {
            engine,
            engine_task,
            follower,
            ..
        } = self;
        drop(engine);
        engine_task.join().await.context("join engine task")?;
        if let Some(f) = follower {
            // Nothing more will be written under this term: a standby may take over now.
            tokio::task::spawn_blocking(move || f.release())
                .await
                .context("join releasing the lease")?
                .context("release the lease")?;
        }
        Ok(())
    }
}
