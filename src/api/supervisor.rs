//! SupervisorService: presence through Attend, and fenced actions on offers.

use super::EngineSlot;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::domain::Role;
use crate::engine::{EngineHandle, SessionGuard, SupervisorEvent};

use super::SharedDirectory;
use super::convert;
use super::pb::{self, supervisor_service_server::SupervisorService};
use super::status::{self, invalid};

pub struct SupervisorApi {
    /// The engine of the moment: a standby's, or the leader's once this node takes over.
    pub engine: EngineSlot,
    pub directory: SharedDirectory,
}

/// The Attend stream. Dropping it (the console went away) drops the guard, which signs the
/// supervisor out and puts what they held back in the queue.
pub struct AttendStream {
    rx: mpsc::Receiver<SupervisorEvent>,
    _guard: SessionGuard,
    done: bool,
    /// The Attend call's span: entered on every poll, so what the stream logs is the call's.
    span: tracing::Span,
}

impl Stream for AttendStream {
    type Item = Result<pb::AttendResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        if this.done {
            return Poll::Ready(None);
        }
        let ev = match this.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(ev) => ev,
        };
        let item = match ev {
            Some(SupervisorEvent::Offer {
                request,
                epoch,
                accept_by,
                pool_size,
            }) => Ok(pb::AttendResponse {
                event: Some(pb::attend_response::Event::Offer(pb::Offer {
                    request_id: request.id.to_string(),
                    epoch,
                    accept_by: Some(convert::timestamp(accept_by)),
                    request: Some(convert::request_for_supervisor(&request)),
                    candidate_pool_size: pool_size,
                })),
            }),
            Some(SupervisorEvent::Withdrawn {
                request,
                epoch,
                reason,
            }) => Ok(pb::AttendResponse {
                event: Some(pb::attend_response::Event::Withdrawn(pb::OfferWithdrawn {
                    request_id: request.to_string(),
                    epoch,
                    reason: reason.into(),
                })),
            }),
            Some(SupervisorEvent::Review {
                request,
                epoch,
                review_by,
            }) => Ok(pb::AttendResponse {
                event: Some(pb::attend_response::Event::ReviewResumed(
                    pb::ReviewResumed {
                        request_id: request.id.to_string(),
                        epoch,
                        review_by: Some(convert::timestamp(review_by)),
                        request: Some(convert::request_for_supervisor(&request)),
                    },
                )),
            }),
            Some(SupervisorEvent::Revoked) => {
                this.done = true;
                tracing::info!("attend stream ended: principal revoked");
                Err(status::principal_revoked())
            }
            Some(SupervisorEvent::Presence { paused, by }) => Ok(pb::AttendResponse {
                event: Some(pb::attend_response::Event::Presence(pb::PresenceChanged {
                    paused,
                    by: by.to_string(),
                })),
            }),
            Some(SupervisorEvent::Superseded) => {
                this.done = true;
                tracing::debug!("attend stream replaced by a newer one");
                Err(status::attend_superseded())
            }
            None => {
                // The engine ended the session: it stopped or could not deliver to us.
                this.done = true;
                tracing::debug!("attend session ended by the engine");
                Err(status::attend_ended())
            }
        };
        Poll::Ready(Some(item))
    }
}

#[tonic::async_trait]
impl SupervisorService for SupervisorApi {
    type AttendStream = AttendStream;

    #[tracing::instrument(
        name = "Attend",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn attend(
        &self,
        req: Request<pb::AttendRequest>,
    ) -> Result<Response<AttendStream>, Status> {
        let supervisor = self.directory.authorize(&req, &[Role::Supervisor])?;
        let pb::AttendRequest {} = req.into_inner();
        let (guard, rx) = self.engine().attend(supervisor).await?;
        Ok(Response::new(AttendStream {
            rx,
            _guard: guard,
            done: false,
            span: tracing::Span::current(),
        }))
    }

    #[tracing::instrument(
        name = "Accept",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn accept(
        &self,
        req: Request<pb::AcceptRequest>,
    ) -> Result<Response<pb::AcceptResponse>, Status> {
        let supervisor = self.directory.authorize(&req, &[Role::Supervisor])?;
        let (id, epoch) = convert::accept(req.into_inner()).map_err(invalid)?;
        super::record_request(&id);
        let engine = self.engine();
        let r = engine.accept(&supervisor.id, &id, epoch).await?;
        let review_by = (r.request.state == crate::domain::State::InReview)
            .then(|| r.request.review_by(engine.config().review_timeout_ms))
            .flatten();
        Ok(Response::new(pb::AcceptResponse {
            request: Some(convert::request_for_supervisor(&r.request)),
            replayed: r.replayed,
            review_by: review_by.map(convert::timestamp),
        }))
    }

    #[tracing::instrument(
        name = "Decline",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn decline(
        &self,
        req: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::DeclineResponse>, Status> {
        let supervisor = self.directory.authorize(&req, &[Role::Supervisor])?;
        let (id, epoch, reason) = convert::decline(req.into_inner()).map_err(invalid)?;
        super::record_request(&id);
        let replayed = self
            .engine()
            .decline(&supervisor.id, &id, epoch, reason)
            .await?;
        Ok(Response::new(pb::DeclineResponse { replayed }))
    }

    #[tracing::instrument(
        name = "Decide",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn decide(
        &self,
        req: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::DecideResponse>, Status> {
        let supervisor = self.directory.authorize(&req, &[Role::Supervisor])?;
        let (id, epoch, verdict, rekeyed) = convert::decide(req.into_inner()).map_err(invalid)?;
        super::record_request(&id);
        let r = self
            .engine()
            .decide(&supervisor, &id, epoch, verdict, rekeyed)
            .await?;
        // Until the request is final the supervisor may meet it again (a return, a first of two
        // approvals): what they must re-key stays withheld.
        let request = if r.request.state.is_final() {
            convert::request(&r.request)
        } else {
            convert::request_for_supervisor(&r.request)
        };
        Ok(Response::new(pb::DecideResponse {
            request: Some(request),
            replayed: r.replayed,
        }))
    }

    #[tracing::instrument(
        name = "GetOfferImage",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn get_offer_image(
        &self,
        req: Request<pb::GetOfferImageRequest>,
    ) -> Result<Response<pb::GetOfferImageResponse>, Status> {
        let supervisor = self.directory.authorize(&req, &[Role::Supervisor])?;
        let pb::GetOfferImageRequest { request_id, sha256 } = req.into_inner();
        let id = super::concerning("request_id", &request_id)?;
        let hash = convert::image_hash("sha256", &sha256).map_err(invalid)?;
        let (media, content) = self.engine().offer_image(&supervisor.id, &id, hash).await?;
        Ok(Response::new(pb::GetOfferImageResponse {
            media_type: media.as_mime().into(),
            content,
        }))
    }

    #[tracing::instrument(
        name = "Pause",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn pause(
        &self,
        req: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseResponse>, Status> {
        let supervisor = self.directory.authorize(&req, &[Role::Supervisor])?;
        let pb::PauseRequest {} = req.into_inner();
        self.engine().pause(&supervisor.id, true, None).await?;
        Ok(Response::new(pb::PauseResponse {}))
    }

    #[tracing::instrument(
        name = "Resume",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn resume(
        &self,
        req: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let supervisor = self.directory.authorize(&req, &[Role::Supervisor])?;
        let pb::ResumeRequest {} = req.into_inner();
        self.engine().pause(&supervisor.id, false, None).await?;
        Ok(Response::new(pb::ResumeResponse {}))
    }
}

impl SupervisorApi {
    fn engine(&self) -> EngineHandle {
        self.engine.borrow().clone()
    }
}
