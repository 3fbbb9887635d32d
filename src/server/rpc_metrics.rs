//! The tower layer that counts and times every RPC for `metrics::RpcMetrics`: started when
//! the request arrives, handled with its status code when the status is sent (in the
//! headers of a trailers-only answer, else in the trailers at the end of the body, which for
//! a stream is its end), and as `Canceled` when the client goes away first.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use tonic::body::Body as TonicBody;
use tonic::codegen::http;

use crate::metrics::{Metrics, Rpc, code_name};

/// Services whose methods get their own labels; any other path is counted as "unknown", so
/// a client cannot grow the label sets by calling made-up names.
const KNOWN_SERVICES: &[&str] = &[
    "countersign.v1.TellerService",
    "countersign.v1.SupervisorService",
    "countersign.v1.AuditService",
    "countersign.v1.AdminService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// What a path `/package.Service/Method` names.
pub(super) fn classify(path: &str) -> Rpc {
    let named = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(s, m)| {
            KNOWN_SERVICES.contains(s)
                && !m.is_empty()
                && m.len() <= 64
                && m.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    match named {
        Some((service, method)) => Rpc {
            kind: match method {
                "Watch" | "Attend" => "server_stream",
                "ServerReflectionInfo" => "bidi_stream",
                _ => "unary",
            },
            service: service.to_owned(),
            method: method.to_owned(),
        },
        None => Rpc {
            kind: "unary",
            service: "unknown".into(),
            method: "unknown".into(),
        },
    }
}

#[derive(Clone)]
pub(super) struct RpcMetricsLayer(pub(super) Arc<Metrics>);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(super) struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<TonicBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<TonicBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = classify(req.uri().path());
        self.metrics.rpc.started(&rpc);
        // An elapsed-time measurement, not domain time.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            let mut observed = Observed {
                rpc,
                start,
                metrics,
                done: false,
            };
            // Trailers-only: the status is in the headers, and the body is empty.
            if let Some(code) = status_of(response.headers()) {
                observed.finish(code);
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(
                parts,
                TonicBody::new(ObservedBody {
                    inner: body,
                    observed,
                }),
            ))
        })
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One RPC on its way to its status.
struct Observed {
    rpc: Rpc,
    start: Instant,
    metrics: Arc<Metrics>,
    done: bool,
}

impl Observed {
    fn finish(&mut self, code: i32) {
        if !self.done {
            self.done = true;
            let seconds = self.start.elapsed().as_secs_f64();
            self.metrics
                .rpc
                .handled(&self.rpc, code_name(code), seconds);
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // The body was dropped before its trailers: the client went away (or the connection).
        self.finish(1);
    }
}

/// A response body that reports the status in its trailers.
struct ObservedBody {
    inner: TonicBody,
    observed: Observed,
}

impl Body for ObservedBody {
    type Data = <TonicBody as Body>::Data;
    type Error = <TonicBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    self.observed.finish(code);
                }
            }
            // Ended without a status: gRPC says that is UNKNOWN.
            Poll::Ready(None) => self.observed.finish(2),
            Poll::Ready(Some(Err(_))) => self.observed.finish(13),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_known_methods_and_nothing_else() {
        let r = classify("/countersign.v1.TellerService/Submit");
        assert_eq!(
            (r.kind, r.service.as_str(), r.method.as_str()),
            ("unary", "countersign.v1.TellerService", "Submit")
        );
        assert_eq!(
            classify("/countersign.v1.SupervisorService/Attend").kind,
            "server_stream"
        );
        for made_up in [
            "/evil.Service/Method",
            "/countersign.v1.TellerService/",
            "/x",
            "",
            "/countersign.v1.TellerService/a-b",
        ] {
            assert_eq!(classify(made_up).service, "unknown", "{made_up}");
        }
    }
}
