//! AuditService: read-only access to requests, their ledger records and images.

use tonic::{Request, Response, Status};

use crate::domain::{Actor, Role};
use crate::engine::EngineHandle;

use super::Directory;
use super::convert;
use super::pb::{self, audit_service_server::AuditService};
use super::status::invalid;

pub struct AuditApi {
    pub engine: EngineHandle,
    pub directory: Directory,
}

const AUDIT_ROLES: &[Role] = &[Role::Auditor, Role::Admin];

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn get_request(
        &self,
        req: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::GetRequestResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetRequestRequest { request_id } = req.into_inner();
        let id = convert::request_id("request_id", &request_id).map_err(invalid)?;
        let loaded = self.engine.audit_request(&id).await?;
        let events = loaded
            .records
            .into_iter()
            .map(|(index, rec, bytes)| pb::LedgerEvent {
                index,
                recorded_at: Some(convert::timestamp(rec.at)),
                actor_id: match &rec.actor {
                    Actor::Principal(p) => p.to_string(),
                    Actor::System => "system".into(),
                },
                kind: rec.event.kind().into(),
                record: bytes,
            })
            .collect();
        Ok(Response::new(pb::GetRequestResponse {
            request: Some(convert::request(&loaded.request)),
            events,
        }))
    }

    async fn get_image(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetImageRequest { sha256 } = req.into_inner();
        let hash = convert::image_hash("sha256", &sha256).map_err(invalid)?;
        let content = self.engine.audit_image(hash).await?;
        Ok(Response::new(pb::GetImageResponse { content }))
    }
}
