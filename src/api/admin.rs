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
/// (every call is checked against it), and in the engine, which records it in the ledger
/// (`directory_loaded`, by `actor`: the admin who asked, or the system for SIGHUP) and ends the
/// revoked principals' streams. The answer comes once the record is durable; if it cannot be
/// recorded (the ledger cannot write, the server is stopping), the directory that was in
/// force stays in force and the caller hears UNAVAILABLE. A standby has no engine: its
/// directory changes unrecorded (the leader records its own reload) and there are no streams
/// to end.
///
/// It runs as a task of its own, so that a caller who gives up (a deadline, a dropped
/// connection) cannot leave it half done: the file swapped in but never recorded.
pub async fn reload_directory(
    directory: &SharedDirectory,
    path: &std::path::Path,
    engine: &EngineHandle,
    actor: crate::domain::Actor,
) -> Result<(crate::api::Reloaded, crate::engine::Revoked), Status> {
    let (directory, path, engine) = (directory.clone(), path.to_owned(), engine.clone());
    tokio::spawn(async move { reload_directory_whole(&directory, &path, &engine, actor).await })
        .await
        .map_err(status::policy_load_failed)?
}

async fn reload_directory_whole(
    directory: &SharedDirectory,
    path: &std::path::Path,
    engine: &EngineHandle,
    actor: crate::domain::Actor,
) -> Result<(crate::api::Reloaded, crate::engine::Revoked), Status> {
    let by = match &actor {
        crate::domain::Actor::Principal(p) => p.to_string(),
        crate::domain::Actor::System => "SIGHUP".to_owned(),
    };
    let _one_at_a_time = directory.reloading.lock().await;
    let (d, p) = (directory.clone(), path.to_owned());
    let reloaded = tokio::task::spawn_blocking(move || d.reload(&p))
        .await
        .map_err(status::policy_load_failed)?
        .map_err(|e| {
            tracing::error!(
                error = format!("{e:#}"),
                by,
                file = %path.display(),
                "principal directory not reloaded: the one in force stays; fix the file and reload again"
            );
            status::directory_not_reloaded(e)
        })?;
    let changes = &reloaded.changes;
    let loaded = crate::domain::EngineEvent::DirectoryLoaded {
        sha256: reloaded.sha256.clone(),
        certificates: u32::try_from(reloaded.principals).unwrap_or(u32::MAX),
        added: changes.added.clone(),
        removed: changes.removed.clone(),
        changed: changes.changed.clone(),
    };
    let revoked = match engine
        .revoke(
            actor,
            loaded,
            changes.revoked(),
            reloaded.supervisors.clone(),
        )
        .await
    {
        Ok(r) => r,
        Err(crate::engine::Unavailable::NotRunning) if engine.is_standby() => {
            tracing::info!("a standby: nothing to record here, no streams to end");
            crate::engine::Revoked::default()
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                by,
                sha256 = %reloaded.sha256,
                "principal directory not reloaded: it could not be recorded; the one in force stays"
            );
            directory.undo(reloaded);
            return Err(status::reload_not_recorded(e));
        }
    };
    // Recorded (or a standby's): additions and changed details are in force from now on.
    directory.commit(&reloaded);
    let ids = |v: &[crate::domain::PrincipalId]| {
        v.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
    };
    tracing::info!(
        by,
        sha256 = %reloaded.sha256,
        previous_sha256 = %reloaded.previous_sha256,
        certificates = reloaded.principals,
        added = %ids(&changes.added),
        removed = %ids(&changes.removed),
        changed = %ids(&changes.changed),
        attend_streams_ended = revoked.attend_streams,
        watched_requests_ended = revoked.watched_requests,
        "principal directory reloaded"
    );
    Ok((reloaded, revoked))
}

/// Reads the policy file again and puts it in force for later submissions, recorded in the
/// ledger (`policy_loaded`, by `actor`) before any submission is evaluated against it. A file
/// with any mistake, or a reload that cannot be recorded, leaves the policy in force as it
/// was. A standby has no engine: its copy changes unrecorded. Returns the new and the previous
/// policy's hashes.
pub async fn reload_policy(
    path: &std::path::Path,
    engine: &EngineHandle,
    actor: crate::domain::Actor,
) -> Result<(String, String), Status> {
    // A task of its own, as for the directory: a caller who gives up does not cut it short.
    let (path, engine) = (path.to_owned(), engine.clone());
    tokio::spawn(async move { reload_policy_whole(&path, &engine, actor).await })
        .await
        .map_err(status::policy_load_failed)?
}

async fn reload_policy_whole(
    path: &std::path::Path,
    engine: &EngineHandle,
    actor: crate::domain::Actor,
) -> Result<(String, String), Status> {
    let (path, path_shown) = (path.to_owned(), path.display().to_string());
    let policy = tokio::task::spawn_blocking(move || crate::policy::Policy::load(&path))
        .await
        .map_err(status::policy_load_failed)?
        .map_err(|e| {
            tracing::error!(
                error = format!("{e:#}"),
                file = %path_shown,
                "policy not reloaded: the one in force stays; fix the file and reload again"
            );
            status::policy_not_reloaded(e)
        })?;
    let sha256 = policy.sha256().to_owned();
    let previous_sha256 = match engine.set_policy(actor, policy).await {
        Ok(previous) => previous,
        Err(e) => {
            tracing::error!(error = %e, %sha256, "policy not reloaded: it could not be recorded; the one in force stays");
            return Err(status::reload_not_recorded(e));
        }
    };
    tracing::info!(%sha256, %previous_sha256, "policy reloaded; it applies to new submissions");
    Ok((sha256, previous_sha256))
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
        name = "PauseSupervisor",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn pause_supervisor(
        &self,
        req: Request<pb::PauseSupervisorRequest>,
    ) -> Result<Response<pb::PauseSupervisorResponse>, Status> {
        let admin = self.directory.authorize(&req, &[Role::Admin])?;
        let pb::PauseSupervisorRequest { supervisor_id } = req.into_inner();
        let supervisor = self.supervisor(&supervisor_id)?;
        self.engine()
            .pause(&supervisor, true, Some(&admin.id))
            .await?;
        Ok(Response::new(pb::PauseSupervisorResponse {}))
    }

    #[tracing::instrument(
        name = "ResumeSupervisor",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn resume_supervisor(
        &self,
        req: Request<pb::ResumeSupervisorRequest>,
    ) -> Result<Response<pb::ResumeSupervisorResponse>, Status> {
        let admin = self.directory.authorize(&req, &[Role::Admin])?;
        let pb::ResumeSupervisorRequest { supervisor_id } = req.into_inner();
        let supervisor = self.supervisor(&supervisor_id)?;
        self.engine()
            .pause(&supervisor, false, Some(&admin.id))
            .await?;
        Ok(Response::new(pb::ResumeSupervisorResponse {}))
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
        let admin = self.directory.authorize(&req, &[Role::Admin])?;
        let pb::ReloadPolicyRequest {} = req.into_inner();
        let (sha256, previous_sha256) = reload_policy(
            &self.policy_path,
            &self.engine(),
            crate::domain::Actor::Principal(admin.id),
        )
        .await?;
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
            crate::domain::Actor::Principal(admin.id),
        )
        .await?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ReloadDirectoryResponse {
            sha256: reloaded.sha256,
            previous_sha256: reloaded.previous_sha256,
            certificates: count(reloaded.principals),
            revoked_principal_ids: reloaded
                .changes
                .revoked()
                .iter()
                .map(|p| p.to_string())
                .collect(),
            attend_streams_ended: count(revoked.attend_streams),
            watched_requests_ended: count(revoked.watched_requests),
        }))
    }
}

impl AdminApi {
    fn engine(&self) -> EngineHandle {
        self.engine.borrow().clone()
    }

    /// The supervisor `supervisor_id` names in the directory in force.
    fn supervisor(&self, supervisor_id: &str) -> Result<crate::domain::PrincipalId, Status> {
        match self.directory.current().principal(supervisor_id) {
            Some(p) if p.role == Role::Supervisor => Ok(p.id),
            _ => Err(status::invalid(crate::domain::validate::FieldError::new(
                "supervisor_id",
                "names no supervisor in the principal directory",
            ))),
        }
    }
}
