//! SessionService: who the caller is. The browser console asks it first, to choose the screen
//! for the principal's role; any principal the directory knows may ask, on a standby too.

use tonic::{Request, Response, Status};

use crate::domain::Role;

use super::SharedDirectory;
use super::pb::{self, session_service_server::SessionService};

pub struct SessionApi {
    pub directory: SharedDirectory,
    /// Whether this node leads.
    pub role: tokio::sync::watch::Receiver<super::Role>,
}

/// Every role: the call only says who the caller is.
const ANY_ROLE: &[Role] = &[
    Role::Teller,
    Role::Supervisor,
    Role::Auditor,
    Role::Admin,
    Role::Reviewer,
];

#[tonic::async_trait]
impl SessionService for SessionApi {
    #[tracing::instrument(
        name = "GetSession",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let p = self.directory.authorize(&req, ANY_ROLE)?;
        let role = match p.role {
            Role::Teller => pb::PrincipalRole::Teller,
            Role::Supervisor => pb::PrincipalRole::Supervisor,
            Role::Auditor => pb::PrincipalRole::Auditor,
            Role::Admin => pb::PrincipalRole::Admin,
            Role::Reviewer => pb::PrincipalRole::Reviewer,
        };
        let leader_address = match &*self.role.borrow() {
            super::Role::Standby { leader } => leader.clone().unwrap_or_default(),
            super::Role::Leader => String::new(),
        };
        Ok(Response::new(pb::GetSessionResponse {
            principal_id: p.id.as_str().to_owned(),
            name: p.name,
            role: role.into(),
            branch_id: p.branch.as_str().to_owned(),
            level: p.level.into(),
            leader: *self.role.borrow() == super::Role::Leader,
            directory_sha256: self.directory.current().sha256().to_owned(),
            leader_address,
        }))
    }
}
