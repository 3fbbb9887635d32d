//! ReviewService: after-the-fact review (事后监督) of drawn approvals and of every registered
//! fallback, by principals with the reviewer role.

use tonic::{Request, Response, Status};

use crate::domain::validate::{self, FieldError};
use crate::domain::{ReviewOutcome, Role};
use crate::storage::SearchQuery;

use super::pb::{self, review_service_server::ReviewService};
use super::status::invalid;
use super::{EngineSlot, SharedDirectory, convert};

pub struct ReviewApi {
    /// The engine of the moment: a standby's, or the leader's once this node takes over.
    pub engine: EngineSlot,
    pub directory: SharedDirectory,
}

/// A list page with no size asked for.
const PAGE_DEFAULT: u32 = 100;

#[tonic::async_trait]
impl ReviewService for ReviewApi {
    #[tracing::instrument(
        name = "ListReviews",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn list_reviews(
        &self,
        req: Request<pb::ListReviewsRequest>,
    ) -> Result<Response<pb::ListReviewsResponse>, Status> {
        self.directory.authorize(&req, &[Role::Reviewer])?;
        let pb::ListReviewsRequest {
            status,
            page_size,
            page_token,
        } = req.into_inner();
        let status = match pb::ReviewStatus::try_from(status) {
            Ok(pb::ReviewStatus::Unspecified | pb::ReviewStatus::Pending) => "pending",
            Ok(pb::ReviewStatus::Confirmed) => "confirmed",
            Ok(pb::ReviewStatus::Flagged) => "flagged",
            Err(_) => {
                return Err(invalid(FieldError::new(
                    "status",
                    "must be PENDING, CONFIRMED or FLAGGED",
                )));
            }
        };
        let cursor = convert::page_token(&page_token).map_err(invalid)?;
        let page_size = if page_size == 0 {
            PAGE_DEFAULT
        } else {
            page_size
        };
        let page = self
            .engine()
            .search(SearchQuery {
                teller: None,
                supervisor: None,
                branch: None,
                code: None,
                outcome: None,
                from_ms: None,
                until_ms: None,
                page_size: page_size as usize,
                scan_max: 0,
                cursor,
                review: Some(status.into()),
            })
            .await?;
        Ok(Response::new(pb::ListReviewsResponse {
            requests: page.hits.iter().map(convert::summary).collect(),
            next_page_token: page.cursor.map(hex::encode).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(
        name = "Review",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn review(
        &self,
        req: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::ReviewResponse>, Status> {
        let reviewer = self.directory.authorize(&req, &[Role::Reviewer])?;
        let pb::ReviewRequest {
            request_id,
            outcome,
            comment,
        } = req.into_inner();
        let id = super::concerning("request_id", &request_id)?;
        let outcome = match pb::ReviewOutcome::try_from(outcome) {
            Ok(pb::ReviewOutcome::Confirmed) => ReviewOutcome::Confirmed,
            Ok(pb::ReviewOutcome::Flagged) => ReviewOutcome::Flagged,
            Ok(pb::ReviewOutcome::Unspecified) | Err(_) => {
                return Err(invalid(FieldError::new(
                    "outcome",
                    "must be CONFIRMED or FLAGGED",
                )));
            }
        };
        validate::text("comment", &comment, validate::TEXT_CHARS_MAX, false, true)
            .map_err(invalid)?;
        if outcome == ReviewOutcome::Flagged && comment.trim().is_empty() {
            return Err(invalid(FieldError::new(
                "comment",
                "is required with FLAGGED: say what is to be followed up",
            )));
        }
        let done = self
            .engine()
            .review(reviewer.id, id, outcome, comment)
            .await?;
        Ok(Response::new(pb::ReviewResponse {
            request: Some(convert::request(&done.request)),
            replayed: done.replayed,
        }))
    }
}

impl ReviewApi {
    fn engine(&self) -> crate::engine::EngineHandle {
        self.engine.borrow().clone()
    }
}
