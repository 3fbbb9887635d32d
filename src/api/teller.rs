//! TellerService: submit, follow, cancel and resubmit one's own requests.

use super::EngineSlot;
use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::domain::{Role, Submission};
use crate::engine::EngineHandle;

use super::convert;
use super::pb::{self, teller_service_server::TellerService};
use super::status::{self, invalid};
use super::{ApiLimits, SharedDirectory};

pub struct TellerApi {
    /// The engine of the moment: a standby's, or the leader's once this node takes over.
    pub engine: EngineSlot,
    pub directory: SharedDirectory,
    pub limits: ApiLimits,
    /// Open Watch streams per teller.
    pub watches: super::StreamCounts,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// One request's states: those the client missed (or the current one), then each change. It
/// ends after a final state; if it ends before one (the server is stopping, or the client read
/// too slowly), it ends with UNAVAILABLE so the client knows to watch again.
struct Watch {
    /// Holds the teller's stream slot until the stream is dropped.
    _slot: super::StreamSlot,
    /// States to send before the live ones, oldest first.
    first: std::collections::VecDeque<crate::domain::Request>,
    /// Live changes; `None` once the request is final (nothing more will come).
    rx: Option<tokio::sync::mpsc::Receiver<crate::domain::Request>>,
    done: bool,
    /// The Watch call's span: entered on every poll, so what the stream logs is the call's.
    span: tracing::Span,
}

impl Stream for Watch {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        let _entered = this.span.enter();
        if this.done {
            return Poll::Ready(None);
        }
        let next = match this.first.pop_front() {
            Some(r) => Some(r),
            None => match this.rx.as_mut() {
                // Final, and the client has every state up to it.
                None => return Poll::Ready(None),
                Some(rx) => match rx.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                },
            },
        };
        match next {
            Some(r) => {
                if r.state.is_final() {
                    this.done = true;
                }
                Poll::Ready(Some(Ok(pb::WatchResponse {
                    request: Some(convert::request(&r)),
                })))
            }
            None => {
                this.done = true;
                tracing::debug!("watch ended before a final state");
                Poll::Ready(Some(Err(status::watch_ended())))
            }
        }
    }
}

#[tonic::async_trait]
impl TellerService for TellerApi {
    #[tracing::instrument(
        name = "Submit",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let teller = self.directory.authorize(&req, &[Role::Teller])?;
        let input = convert::submit(req.into_inner(), self.engine().now(), &self.limits)
            .map_err(invalid)?;
        // Images are made durable before the record that names them is appended.
        let images = self
            .engine()
            .store_images(input.images)
            .await
            .map_err(crate::engine::SubmitError::from)?;
        let submission = Submission {
            serial: input.serial,
            transaction: input.transaction,
            customer: input.customer,
            images,
            note: input.note,
        };
        let done = self.engine().submit(teller, submission).await?;
        super::record_request(&done.request.id);
        Ok(Response::new(pb::SubmitResponse {
            request: Some(convert::request(&done.request)),
            replayed: done.replayed,
        }))
    }

    #[tracing::instrument(
        name = "RegisterFallback",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn register_fallback(
        &self,
        req: Request<pb::RegisterFallbackRequest>,
    ) -> Result<Response<pb::RegisterFallbackResponse>, Status> {
        let teller = self.directory.authorize(&req, &[Role::Teller])?;
        let input = convert::register_fallback(req.into_inner(), self.engine().now(), &self.limits)
            .map_err(invalid)?;
        let supervisor = on_site_supervisor(&self.directory.current(), &teller, &input)?;
        let s = input.submission;
        let images = self
            .engine()
            .store_images(s.images)
            .await
            .map_err(crate::engine::FallbackError::from)?;
        let submission = Submission {
            serial: s.serial,
            transaction: s.transaction,
            customer: s.customer,
            images,
            note: s.note,
        };
        let on_site = crate::domain::OnSite {
            supervisor: supervisor.id.clone(),
            decided_at: input.decided_at,
            reason: input.reason,
            certificate: input.certificate,
            signature: input.signature,
        };
        let done = self
            .engine()
            .register_fallback(teller, submission, on_site, supervisor)
            .await?;
        super::record_request(&done.request.id);
        Ok(Response::new(pb::RegisterFallbackResponse {
            request: Some(convert::request(&done.request)),
            replayed: done.replayed,
        }))
    }

    #[tracing::instrument(
        name = "Get",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let teller = self.directory.authorize(&req, &[Role::Teller])?;
        let pb::GetRequest { request_id } = req.into_inner();
        let id = super::concerning("request_id", &request_id)?;
        let r = self.engine().get(&teller.id, &id).await?;
        Ok(Response::new(pb::GetResponse {
            request: Some(convert::request(&r)),
        }))
    }

    type WatchStream = WatchStream;

    #[tracing::instrument(
        name = "Watch",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let teller = self.directory.authorize(&req, &[Role::Teller])?;
        let pb::WatchRequest {
            request_id,
            after_version,
        } = req.into_inner();
        let id = super::concerning("request_id", &request_id)?;
        let max = self.limits.watch_streams_per_principal_max;
        let slot = self
            .watches
            .take(teller.id.as_str(), max)
            .ok_or_else(|| status::watch_streams_full(max))?;
        let (states, rx) = self.engine().watch(&teller.id, &id, after_version).await?;
        Ok(Response::new(Box::pin(Watch {
            _slot: slot,
            first: states.into(),
            rx,
            done: false,
            span: tracing::Span::current(),
        })))
    }

    #[tracing::instrument(
        name = "Cancel",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let teller = self.directory.authorize(&req, &[Role::Teller])?;
        let (id, reason) = convert::cancel(req.into_inner()).map_err(invalid)?;
        super::record_request(&id);
        let r = self.engine().cancel(&teller.id, &id, reason).await?;
        Ok(Response::new(pb::CancelResponse {
            request: Some(convert::request(&r.request)),
            replayed: r.replayed,
        }))
    }

    #[tracing::instrument(
        name = "Resubmit",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn resubmit(
        &self,
        req: Request<pb::ResubmitRequest>,
    ) -> Result<Response<pb::ResubmitResponse>, Status> {
        let teller = self.directory.authorize(&req, &[Role::Teller])?;
        let convert::ResubmitInput {
            id,
            uploads,
            removed,
            note,
        } = convert::resubmit(req.into_inner(), &self.limits).map_err(invalid)?;
        super::record_request(&id);
        let added = self
            .engine()
            .store_images(uploads)
            .await
            .map_err(crate::engine::ResubmitError::from)?;
        let r = self
            .engine()
            .resubmit(&teller.id, &id, added, removed, note)
            .await?;
        Ok(Response::new(pb::ResubmitResponse {
            request: Some(convert::request(&r.request)),
            replayed: r.replayed,
        }))
    }
}

impl TellerApi {
    fn engine(&self) -> EngineHandle {
        self.engine.borrow().clone()
    }
}

/// The on-site supervisor of a fallback, once their certificate and signature check: the
/// directory must list the certificate for the supervisor named, the certificate must have
/// been valid when they decided, and the signature must verify over the canonical bytes
/// (`ledger::onsite`) of what the teller sent.
fn on_site_supervisor(
    directory: &super::identity::Directory,
    teller: &crate::domain::Principal,
    input: &convert::FallbackInput,
) -> Result<crate::domain::Principal, crate::engine::FallbackError> {
    use crate::engine::FallbackError;
    use crate::ledger::onsite;
    let named = input.supervisor.as_str();
    let supervisor = directory
        .by_certificate(&input.certificate)
        .filter(|p| p.id.as_str() == named && p.role == Role::Supervisor)
        .ok_or_else(|| {
            FallbackError::SupervisorUnknown(format!(
                "the principal directory lists no supervisor {named:?} with this certificate"
            ))
        })?;
    let bad = |field, reason: String| FallbackError::SignatureInvalid { field, reason };
    let (from, until) = onsite::validity(&input.certificate)
        .map_err(|e| bad("on_site.certificate", e.to_string()))?;
    if input.decided_at < from || input.decided_at > until {
        return Err(bad(
            "on_site.certificate",
            "was not valid at on_site.decided_at".into(),
        ));
    }
    let message = input.signed_bytes(&teller.id);
    onsite::verify(&input.certificate, &message, &input.signature)
        .map_err(|e| bad("on_site.signature", e.to_string()))?;
    Ok(supervisor.clone())
}
