//! The witness's HTTP/1.1 interface: `POST /add-checkpoint` (tlog-witness) and
//! `GET /<sha256(origin) hex>/checkpoint` (its monitoring interface). Bodies are capped and
//! connections bounded; the cosigning itself, which fsyncs, runs off the async threads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use super::{Refusal, Witness, parse_add_checkpoint};

/// The largest request body: a checkpoint with many signatures and 63 proof lines is a few
/// kilobytes.
const BODY_BYTES_MAX: usize = 64 * 1024;
/// Connections served at once; more wait in the listen backlog.
const CONNECTIONS_MAX: usize = 64;
/// A client that sends no complete header in this time is cut off.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The content type of a 409 body (the spec's).
const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A running witness server.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting and ends every open connection.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Serves `witness` on `listener` until stopped.
pub fn serve(witness: Arc<Witness>, listener: TcpListener) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept(listener, witness, stopped));
    Ok(Running {
        addr,
        stop: Some(stop),
        task,
    })
}

async fn accept(listener: TcpListener, witness: Arc<Witness>, mut stop: oneshot::Receiver<()>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "witness: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let witness = witness.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let witness = witness.clone();
                async move { Ok::<_, Infallible>(respond(witness, req, peer).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "witness connection ended with an error");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body)
}

async fn respond(
    witness: Arc<Witness>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/add-checkpoint") => {}
        (&Method::GET, p) => {
            let hash = p
                .strip_prefix('/')
                .and_then(|p| p.strip_suffix("/checkpoint"));
            return match hash.and_then(|h| witness.latest_note(h)) {
                Some(note) => text(StatusCode::OK, note),
                None => text(
                    StatusCode::NOT_FOUND,
                    "no checkpoint cosigned for that log\n".into(),
                ),
            };
        }
        _ => return text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
    // A client that trickles its body cannot hold a connection slot for long.
    let collected = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(req.into_body(), BODY_BYTES_MAX).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {BODY_BYTES_MAX} bytes or was cut short\n"),
            );
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {BODY_READ_TIMEOUT:?}\n"),
            );
        }
    };
    let request = match parse_add_checkpoint(&body) {
        Ok(r) => r,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    let origin = request.note.lines().next().unwrap_or_default().to_owned();
    let (old, size) = (
        request.old,
        request.note.lines().nth(1).unwrap_or("?").to_owned(),
    );
    let outcome = tokio::task::spawn_blocking(move || witness.add_checkpoint(&request)).await;
    match outcome {
        Ok(Ok(line)) => {
            tracing::info!(%origin, old, size, "cosigned");
            text(StatusCode::OK, line)
        }
        Ok(Err(Refusal::Conflict(latest))) => {
            tracing::info!(%origin, old, latest, "old size is not the latest cosigned");
            reply(
                StatusCode::CONFLICT,
                SIZE_CONTENT_TYPE,
                format!("{latest}\n"),
            )
        }
        Ok(Err(refusal)) => {
            // A known log whose signature verified but whose tree does not extend what was
            // cosigned is what witnesses exist to catch: said loudly.
            match refusal {
                Refusal::Inconsistent(_) => {
                    tracing::error!(%origin, %peer, old, size, %refusal, "refused a checkpoint")
                }
                _ => tracing::warn!(%origin, %peer, %refusal, "refused a checkpoint"),
            }
            let status =
                StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, format!("{refusal}\n"))
        }
        Err(e) => {
            tracing::error!(error = %e, "witness: cosigning task failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into())
        }
    }
}
