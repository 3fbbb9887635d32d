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
