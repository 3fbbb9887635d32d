//! TLS accepted here rather than inside the gRPC library, so that a refused handshake (no
//! client certificate, one from another CA, not TLS at all, too slow) is logged with the
//! peer's address and the reason, rate-limited, and counted. Handshakes run concurrently, each
//! within a timeout, and the connections that pass go on to tonic, which reads the client
//! certificates from them (`TlsConnectInfo`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;

/// How long a peer has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the listen backlog.
const HANDSHAKES_MAX: usize = 256;
/// Connections accepted and not yet taken by the gRPC server.
const READY_MAX: usize = 128;
/// At most one refused-handshake log line per this interval; the rest are counted.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Refuses to start with a server certificate or client CA that has expired (every client
/// would refuse it, or every client certificate would fail), or a client CA that is not a
/// CA (a leaf certificate there refuses every client): said at start with the setting, rather
/// than as handshake failures later.
pub(super) fn check_in_force(
    cert_pem: &str,
    ca_pem: &str,
    now: crate::domain::Timestamp,
) -> anyhow::Result<()> {
    let now_s = now.0.div_euclid(1000);
    let parse = |setting: &str, pem: &str| -> anyhow::Result<Vec<(String, i64, String, bool)>> {
        let mut out = Vec::new();
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
                anyhow::bail!("{setting}: a certificate in it does not parse as X.509");
            };
            let is_ca = cert
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|b| b.value.ca);
            let not_after = cert.validity().not_after;
            out.push((
                cert.subject().to_string(),
                not_after.timestamp(),
                not_after.to_string(),
                is_ca,
            ));
        }
        Ok(out)
    };
    // The server's own certificate (the chain's first) must be valid.
    if let Some((subject, not_after, date, _)) = parse("tls.cert", cert_pem)?.first()
        && *not_after < now_s
    {
        anyhow::bail!(
            "tls.cert: the certificate of {subject} expired on {date}: renew it (`countersign \
             pki issue`, or your CA) and restart"
        );
    }
    // The client CAs: a bundle may keep an old CA beside the new one during a rotation, so
    // only a bundle with no CA in force, or with no CA at all, is refused.
    let cas = parse("tls.client_ca", ca_pem)?;
    if !cas.iter().any(|(_, _, _, is_ca)| *is_ca) {
        let subject = cas.first().map_or("", |c| c.0.as_str());
        anyhow::bail!(
            "tls.client_ca: {subject} is not a CA certificate (no basicConstraints CA:TRUE): \
             point tls.client_ca at the CA that issued the client certificates"
        );
    }
    if cas.iter().all(|(_, not_after, _, _)| *not_after < now_s) {
        let (subject, _, date, _) = &cas[0];
        anyhow::bail!(
            "tls.client_ca: the CA {subject} expired on {date}: no client certificate it issued \
             is accepted; renew the CA and the client certificates"
        );
    }
    for (subject, not_after, date, _) in &cas {
        if *not_after < now_s {
            tracing::warn!(%subject, expired = %date, "tls.client_ca holds an expired CA; certificates it issued are refused");
        }
    }
    Ok(())
}

/// The server's TLS: its certificate and key, client certificates required and checked
/// against the client CA, HTTP/2 (or HTTP/1.1, for the console) by ALPN.
pub(super) fn acceptor(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("tls.cert: not PEM")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("tls.key: not a key")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.context("tls.client_ca: not PEM")?)
            .context("tls.client_ca: not a CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("tls.client_ca: cannot verify clients with it")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("tls.cert and tls.key")?;
    // HTTP/1.1 too, for browsers that open the console with it (gRPC clients ask for h2).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TCP connections on `listener`, sets `tune` on each, and yields those whose TLS
/// handshake succeeds. Ends when the receiver is dropped.
pub(super) fn incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tune: impl Fn(&TcpStream) + Send + 'static,
    metrics: Arc<Metrics>,
) -> (
    tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(READY_MAX);
    let task = tokio::spawn(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        let log = Arc::new(std::sync::Mutex::new(RateLimit::default()));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            tune(&stream);
            let (acceptor, tx, metrics, log) =
                (acceptor.clone(), tx.clone(), metrics.clone(), log.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                match shaken {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => refused(&metrics, &log, peer, reason(&e), &e.to_string()),
                    Err(_) => refused(&metrics, &log, peer, "timeout", "no handshake within 10 s"),
                }
            });
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), task)
}

/// Logging of refusals, at most one line per `LOG_EVERY`.
#[derive(Default)]
struct RateLimit {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

fn refused(
    metrics: &Metrics,
    log: &std::sync::Mutex<RateLimit>,
    peer: SocketAddr,
    reason: &'static str,
    detail: &str,
) {
    metrics.tls_handshake_failed(reason);
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    // An elapsed-time measurement for rate limiting, not domain time.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    if log.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
        log.suppressed += 1;
        return;
    }
    let suppressed = std::mem::take(&mut log.suppressed);
    log.last = Some(now);
    tracing::warn!(%peer, reason, detail, suppressed_since_last = suppressed, "TLS handshake refused");
}

/// The reason label for a failed handshake.
fn reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return "io";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::InvalidCertificate(_) => "client_certificate_refused",
        rustls::Error::InvalidMessage(_) => "not_tls",
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
        _ => "other",
    }
}
