//! AdminService: the duty manager's view of the queue, the policy, and the principal
//! directory (`reload_directory`, which SIGHUP runs too).

use super::EngineSlot;
use std::path::PathBuf;

use tonic::{Request, Response, Status};

use crate::domain::Role;
use crate::engine::EngineHandle;

use super::SharedDirectory;
use super::convert;
use super::pb::{self, admin_service_server::AdminService};
use super::status;

pub struct AdminApi {
    /// The engine of the moment: a standby's, or the leader's once this node takes over.
    pub engine: EngineSlot,
    pub directory: SharedDirectory,
    /// The policy file the config names; ReloadPolicy re-reads it.
    pub policy_path: PathBuf,
    /// The principal directory file the config names; ReloadDirectory re-reads it.
    pub directory_path: PathBuf,
}

/// Reads the principal directory file again and puts it in force: in the services at once
/// (every call is checked against it), and in the engine, which ends the revoked principals'
/// streams. `by` is who asked (an admin's id, or "SIGHUP"). A standby has no engine: its
/// directory changes and there are no streams to end.
pub async fn reload_directory(
    directory: &SharedDirectory,
    path: &std::path::Path,
    engine: &EngineHandle,
    by: &str,
) -> Result<(crate::api::Reloaded, crate::engine::Revoked), Status> {
    let (d, p) = (directory.clone(), path.to_owned());
    let reloaded = tokio::task::spawn_blocking(move || d.reload(&p))
        .await
        .map_err(status::policy_load_failed)?
        .map_err(|e| {
            tracing::error!(
                error = format!("{e:#}"),
                by,
                "principal directory not reloaded"
            );
            status::directory_not_reloaded(e)
        })?;
    let revoked = match engine
        .revoke(reloaded.revoked.clone(), reloaded.supervisors.clone())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "no engine runs here: no streams to end");
            crate::engine::Revoked::default()
        }
    };
    let revoked_ids: Vec<&str> = reloaded.revoked.iter().map(|p| p.as_str()).collect();
    tracing::info!(
        by,
        sha256 = %reloaded.sha256,
        previous_sha256 = %reloaded.previous_sha256,
        certificates = reloaded.principals,
        revoked = %revoked_ids.join(","),
        attend_streams_ended = revoked.attend_streams,
        watched_requests_ended = revoked.watched_requests,
        "principal directory reloaded"
    );
    Ok((reloaded, revoked))
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    #[tracing::instrument(
        name = "GetQueueStatus",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn get_queue_status(
        &self,
        req: Request<pb::GetQueueStatusRequest>,
    ) -> Result<Response<pb::GetQueueStatusResponse>, Status> {
        self.directory.authorize(&req, &[Role::Admin])?;
        let pb::GetQueueStatusRequest {} = req.into_inner();
        let s = self
            .engine()
            .queue_status()
            .await
            .map_err(status::queue_status_unavailable)?;
        Ok(Response::new(pb::GetQueueStatusResponse {
            taken_at: Some(convert::timestamp(s.at)),
            depth: s
                .depth
                .into_iter()
                .map(|((level, priority), count)| pb::QueueDepth {
                    level: u32::from(level),
                    priority: u32::from(priority),
                    count,
                })
                .collect(),
            queued: s.queued,
            offered: s.offered,
            in_review: s.in_review,
            returned: s.returned,
            oldest_waiting_ms: s.oldest_waiting_ms.unwrap_or(0),
            supervisors: s
                .supervisors
                .into_iter()
                .map(|v| pb::SupervisorState {
                    supervisor_id: v.id.to_string(),
                    name: v.name,
                    branch_id: v.branch,
                    level: u32::from(v.level),
                    online: v.online,
                    paused: v.paused,
                    tasks: v.tasks,
                    offers_today: v.today.offers,
                    accepts_today: v.today.accepts,
                    declines_today: v.today.declines,
                    timeouts_today: v.today.timeouts,
                    approvals_today: v.today.approvals,
                    rejections_today: v.today.rejections,
                    returns_today: v.today.returns,
                })
                .collect(),
            unservable: s.unservable,
            unservable_request_ids: s.unservable_ids.iter().map(|id| id.to_string()).collect(),
        }))
    }

    #[tracing::instrument(
        name = "GetPolicy",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        self.directory.authorize(&req, &[Role::Admin])?;
        let pb::GetPolicyRequest {} = req.into_inner();
        let p = self.engine().policy();
        Ok(Response::new(pb::GetPolicyResponse {
            text: p.text().to_owned(),
            sha256: p.sha256().to_owned(),
            rule_names: p.rule_names().into_iter().map(str::to_owned).collect(),
        }))
    }

    #[tracing::instrument(
        name = "ReloadPolicy",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn reload_policy(
        &self,
        req: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        self.directory.authorize(&req, &[Role::Admin])?;
        let pb::ReloadPolicyRequest {} = req.into_inner();
        let path = self.policy_path.clone();
        let policy = tokio::task::spawn_blocking(move || crate::policy::Policy::load(&path))
            .await
            .map_err(status::policy_load_failed)?
            .map_err(status::policy_not_reloaded)?;
        let sha256 = policy.sha256().to_owned();
        let previous_sha256 = self.engine().set_policy(policy);
        tracing::info!(%sha256, %previous_sha256, "policy reloaded by admin");
        Ok(Response::new(pb::ReloadPolicyResponse {
            sha256,
            previous_sha256,
        }))
    }

    #[tracing::instrument(
        name = "ReloadDirectory",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn reload_directory(
        &self,
        req: Request<pb::ReloadDirectoryRequest>,
    ) -> Result<Response<pb::ReloadDirectoryResponse>, Status> {
        let admin = self.directory.authorize(&req, &[Role::Admin])?;
        let pb::ReloadDirectoryRequest {} = req.into_inner();
        let (reloaded, revoked) = reload_directory(
            &self.directory,
            &self.directory_path,
            &self.engine(),
            admin.id.as_str(),
        )
        .await?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ReloadDirectoryResponse {
            sha256: reloaded.sha256,
            previous_sha256: reloaded.previous_sha256,
            certificates: count(reloaded.principals),
            revoked_principal_ids: reloaded.revoked.iter().map(|p| p.to_string()).collect(),
            attend_streams_ended: count(revoked.attend_streams),
            watched_requests_ended: count(revoked.watched_requests),
        }))
    }
}

impl AdminApi {
    fn engine(&self) -> EngineHandle {
        self.engine.borrow().clone()
    }
}
