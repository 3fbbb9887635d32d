//! Connecting to a server as a principal of a development PKI directory (the layout `pki init`
//! writes), and to a cluster's leader through `Cluster`, which finds the leader again when a
//! call says it is gone. Used by the demo, the tests and the load generator; real front-ends
//! use their own gRPC stacks with the same certificates and the same rules
//! (docs/operations.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::api::pb::audit_service_client::AuditServiceClient;
use crate::api::pb::supervisor_service_client::SupervisorServiceClient;
use crate::api::pb::teller_service_client::TellerServiceClient;

/// A TLS channel to `addr` presenting `<pki>/<principal>.pem` as the client certificate.
pub async fn channel(addr: SocketAddr, pki: &Path, principal: &str) -> anyhow::Result<Channel> {
    let read = |name: String| {
        std::fs::read_to_string(pki.join(&name))
            .with_context(|| format!("read {}", pki.join(name).display()))
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())?))
        .identity(Identity::from_pem(
            read(format!("{principal}.pem"))?,
            read(format!("{principal}.key"))?,
        ))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tcp_nodelay(true)
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("connect to {addr} as {principal}"))?;
    Ok(channel)
}

/// Finds the leader among a cluster's nodes: the first whose grpc.health.v1 status for
/// TellerService is SERVING (a standby reports NOT_SERVING; an unreachable node is skipped),
/// asking again every 100 ms for up to `within`, as a client does when its node is lost.
pub async fn leader(
    addrs: &[SocketAddr],
    pki: &Path,
    principal: &str,
    within: std::time::Duration,
) -> anyhow::Result<SocketAddr> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let deadline = tokio::time::Instant::now() + within;
    loop {
        for &addr in addrs {
            let Ok(ch) = channel(addr, pki, principal).await else {
                continue;
            };
            let status = HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: "countersign.v1.TellerService".into(),
                })
                .await;
            if status.is_ok_and(|s| s.into_inner().status == ServingStatus::Serving as i32) {
                return Ok(addr);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("no node of {addrs:?} leads (none reports TellerService SERVING)");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Largest message the clients here send or accept.
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

pub async fn teller(
    addr: SocketAddr,
    pki: &Path,
    principal: &str,
) -> anyhow::Result<TellerServiceClient<Channel>> {
    Ok(teller_on(channel(addr, pki, principal).await?))
}

/// A teller client on an open channel.
pub fn teller_on(ch: Channel) -> TellerServiceClient<Channel> {
    TellerServiceClient::new(ch)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

pub async fn supervisor(
    addr: SocketAddr,
    pki: &Path,
    principal: &str,
) -> anyhow::Result<SupervisorServiceClient<Channel>> {
    Ok(supervisor_on(channel(addr, pki, principal).await?))
}

/// A supervisor client on an open channel.
pub fn supervisor_on(ch: Channel) -> SupervisorServiceClient<Channel> {
    SupervisorServiceClient::new(ch)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

pub async fn auditor(
    addr: SocketAddr,
    pki: &Path,
    principal: &str,
) -> anyhow::Result<AuditServiceClient<Channel>> {
    Ok(auditor_on(channel(addr, pki, principal).await?))
}

/// An auditor client on an open channel.
pub fn auditor_on(ch: Channel) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(ch)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

pub fn reviewer_on(
    ch: Channel,
) -> crate::api::pb::review_service_client::ReviewServiceClient<Channel> {
    crate::api::pb::review_service_client::ReviewServiceClient::new(ch)
}

/// Whether a failed call may have failed because the node is not (or no longer) the leader:
/// UNAVAILABLE (a standby's NOT_LEADER, a node stopping, a connection refused), and UNKNOWN or
/// CANCELLED (a connection cut mid-call: hyper reports a request whose connection closed as
/// cancelled; these clients never cancel a call themselves). Anything else is the server's
/// answer and is not retried.
pub fn leader_gone(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// One principal's view of a cluster (or of one server, a cluster of one): calls go to the
/// leader, found by health; a caller whose call failed with `leader_gone` says so with
/// `failed`, which drops the connection so that the next `channel` finds the leader again,
/// and tells whether to retry (until `within` has passed since the call first failed).
/// Retrying is safe for what this project's clients retry: Submit is idempotent per serial,
/// a Watch resumes after the version it saw, an Attend hands back the reviews it held, and
/// Accept, Decline and Decide repeated after they took effect are answered as replays.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

struct ClusterInner {
    addrs: Vec<SocketAddr>,
    pki: PathBuf,
    principal: String,
    /// How long a call keeps looking for a leader before it gives up.
    within: Duration,
    /// The leader's connection and its number, so that many calls failing on one connection
    /// replace it once.
    current: tokio::sync::Mutex<Option<(u64, Channel)>>,
    /// How many connections were made.
    connections: std::sync::atomic::AtomicU64,
}

/// Why a call through a `Cluster` failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server's answer, or the last failure while the leader was gone.
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    /// No node could be reached as the leader within the cluster's `within`.
    #[error("{0:#}")]
    NoLeader(anyhow::Error),
}

impl CallError {
    /// The server's status, when it answered.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            CallError::Rpc(s) => Some(s),
            CallError::NoLeader(_) => None,
        }
    }
}

impl Cluster {
    pub fn new(addrs: &[SocketAddr], pki: &Path, principal: &str, within: Duration) -> Cluster {
        Cluster {
            inner: Arc::new(ClusterInner {
                addrs: addrs.to_vec(),
                pki: pki.to_owned(),
                principal: principal.to_owned(),
                within,
                current: tokio::sync::Mutex::new(None),
                connections: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// The leader's connection and its number; finds the leader first when none is known.
    pub async fn channel(&self) -> Result<(u64, Channel), CallError> {
        let i = &self.inner;
        let mut current = i.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let addr = match i.addrs.as_slice() {
            [one] => *one,
            all => leader(all, &i.pki, &i.principal, i.within)
                .await
                .map_err(CallError::NoLeader)?,
        };
        let ch = channel(addr, &i.pki, &i.principal)
            .await
            .map_err(CallError::NoLeader)?;
        let number = i
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *current = Some((number, ch.clone()));
        Ok((number, ch))
    }

    /// A call on connection `number` failed with `status`, first at `since`: `Ok` to retry it
    /// (on the leader the next `channel` finds), or the status to give up with.
    pub async fn failed(
        &self,
        number: u64,
        status: tonic::Status,
        since: tokio::time::Instant,
    ) -> Result<(), CallError> {
        if !leader_gone(&status) || since.elapsed() >= self.inner.within {
            return Err(status.into());
        }
        let mut current = self.inner.current.lock().await;
        if current.as_ref().is_some_and(|(n, _)| *n == number) {
            *current = None;
        }
        drop(current);
        // Not a hot loop while a leader is being elected.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(())
    }

    /// Runs `call` on the leader's connection, retrying it on the new leader while the
    /// failures say the leader is gone. Only for calls that are safe to repeat.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let since = tokio::time::Instant::now();
        loop {
            let (number, ch) = self.channel().await?;
            match call(ch).await {
                Ok(v) => return Ok(v),
                Err(s) => self.failed(number, s, since).await?,
            }
        }
    }
}

impl Cluster {
    /// A teller's Watch of `request_id` that follows the leader (see `ResumingWatch`).
    pub fn watch(&self, request_id: &str) -> ResumingWatch {
        ResumingWatch {
            cluster: self.clone(),
            request_id: request_id.to_owned(),
            seen: None,
            stream: None,
            failing_since: None,
        }
    }
}

/// A Watch that survives the loss of its node: when the stream fails because the leader is
/// gone, it is opened again on the new leader after the version last received, so `next`
/// gives every state in order, none missed and none twice.
pub struct ResumingWatch {
    cluster: Cluster,
    request_id: String,
    /// The version of the last state given.
    seen: Option<u64>,
    /// The open stream and the number of the connection it is on.
    stream: Option<(u64, tonic::Streaming<crate::api::pb::WatchResponse>)>,
    /// When the current run of failures began; none while the stream works.
    failing_since: Option<tokio::time::Instant>,
}

impl ResumingWatch {
    /// The next state; `None` once the stream ended after a final state.
    pub async fn next(
        &mut self,
    ) -> Result<Option<crate::api::pb::AuthorizationRequest>, CallError> {
        loop {
            let failed = match self.stream.as_mut() {
                None => {
                    let (number, ch) = self.cluster.channel().await?;
                    let opened = teller_on(ch)
                        .watch(crate::api::pb::WatchRequest {
                            request_id: self.request_id.clone(),
                            after_version: self.seen,
                        })
                        .await;
                    match opened {
                        Ok(w) => {
                            self.stream = Some((number, w.into_inner()));
                            continue;
                        }
                        Err(s) => (number, s),
                    }
                }
                Some((number, stream)) => match stream.message().await {
                    Ok(Some(w)) => {
                        let r = w.request.unwrap_or_default();
                        self.seen = Some(r.version);
                        self.failing_since = None;
                        return Ok(Some(r));
                    }
                    Ok(None) => return Ok(None),
                    Err(s) => (*number, s),
                },
            };
            self.stream = None;
            let since = *self
                .failing_since
                .get_or_insert_with(tokio::time::Instant::now);
            self.cluster.failed(failed.0, failed.1, since).await?;
        }
    }
}
