//! Connecting to a server as a principal of a development PKI directory (the layout `pki init`
//! writes). Used by the demo, the tests and the load generator; real front-ends use their own
//! gRPC stacks with the same certificates.

use std::net::SocketAddr;
use std::path::Path;

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
    Ok(
        TellerServiceClient::new(channel(addr, pki, principal).await?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX),
    )
}

pub async fn supervisor(
    addr: SocketAddr,
    pki: &Path,
    principal: &str,
) -> anyhow::Result<SupervisorServiceClient<Channel>> {
    Ok(
        SupervisorServiceClient::new(channel(addr, pki, principal).await?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX),
    )
}

pub async fn auditor(
    addr: SocketAddr,
    pki: &Path,
    principal: &str,
) -> anyhow::Result<AuditServiceClient<Channel>> {
    Ok(
        AuditServiceClient::new(channel(addr, pki, principal).await?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX),
    )
}
