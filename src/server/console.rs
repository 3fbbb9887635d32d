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
