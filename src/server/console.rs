//! The browser console's files (built from `console/` and embedded in the binary), served on
//! the gRPC port over the same mutual TLS: the browser presents the principal's client
//! certificate, and the page calls the services through gRPC-Web with the same identity
//! checks as any client. Every response carries a strict Content-Security-Policy: the page
//! loads nothing but these files and talks to nothing but this origin.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode, header};

/// One embedded file.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

/// The built console (`console/dist`, committed; CI rebuilds it and compares).
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        media_type: "text/html; charset=utf-8",
        body: include_bytes!("../../console/dist/index.html"),
    },
    Asset {
        path: "/console/app.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/dist/app.js"),
    },
    Asset {
        path: "/console/app.css",
        media_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/dist/app.css"),
    },
];

/// Nothing from elsewhere, no inline script or style, no framing; images may be `blob:` URLs
/// (voucher images fetched over gRPC-Web) and `data:` (the empty favicon).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Adds the console's routes beside the gRPC services.
pub(super) fn add(routes: &mut tonic::service::Routes) {
    let router = routes.axum_router_mut();
    let mut with = std::mem::take(router);
    for asset in ASSETS {
        with = with.route_service(asset.path, Files(asset));
    }
    *router = with;
}

/// Serves one embedded file to GET and HEAD.
#[derive(Clone, Copy)]
struct Files(&'static Asset);

impl<B> tower::Service<Request<B>> for Files {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let asset = self.0;
        let response = respond(asset, req.method());
        Box::pin(async move { Ok(response) })
    }
}

fn respond(asset: &Asset, method: &Method) -> Response<Full<Bytes>> {
    let builder = Response::builder()
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header("cross-origin-opener-policy", "same-origin")
        .header("cross-origin-resource-policy", "same-origin")
        // Always asked again: a new binary's console replaces the old at once.
        .header(header::CACHE_CONTROL, "no-cache");
    // HEAD gets the same body, which the HTTP layer leaves out (keeping its length).
    let (status, body) = match *method {
        Method::GET | Method::HEAD => (StatusCode::OK, Bytes::from_static(asset.body)),
        _ => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
    };
    let builder = if status == StatusCode::METHOD_NOT_ALLOWED {
        builder.header(header::ALLOW, "GET, HEAD")
    } else {
        builder.header(header::CONTENT_TYPE, asset.media_type)
    };
    builder
        .status(status)
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// gRPC-Web for the page's calls, and the console's files for any HTTP version: tonic-web's
/// layer answers every HTTP/1.1 request that is not gRPC-Web with 400, so a browser on
/// HTTP/1.1 (behind a proxy without HTTP/2, say) could call the services but not load the
/// page. Those requests go past it, to the routes.
#[derive(Clone, Copy, Default)]
pub(super) struct WebLayer;

impl<S: Clone> tower::Layer<S> for WebLayer {
    type Service = Web<S>;

    fn layer(&self, inner: S) -> Web<S> {
        Web {
            grpc_web: tonic_web::GrpcWebLayer::new().layer(inner.clone()),
            inner,
        }
    }
}

#[derive(Clone)]
pub(super) struct Web<S> {
    grpc_web: tonic_web::GrpcWebService<S>,
    inner: S,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<Request<tonic::body::Body>> for Web<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display,
{
    type Response = hyper::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        use tower::ServiceExt as _;
        let grpc_web = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc-web"));
        if req.version() == hyper::Version::HTTP_2 || grpc_web {
            let web = self.grpc_web.clone();
            Box::pin(web.oneshot(req))
        } else {
            // `inner` was made ready by poll_ready; a clone takes its place for the next call.
            let clone = self.inner.clone();
            let mut ready = std::mem::replace(&mut self.inner, clone);
            Box::pin(async move { Ok(ready.call(req).await?.map(tonic::body::Body::new)) })
        }
    }
}
