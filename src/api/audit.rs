//! AuditService: read-only access to requests, their ledger records and images.

use super::EngineSlot;
use tonic::{Request, Response, Status};

use crate::domain::validate::FieldError;
use crate::domain::{Actor, Entry, Role, State};
use crate::engine::{EngineHandle, ProofTarget};
use crate::storage::SearchQuery;

use super::SharedDirectory;
use super::convert;
use super::pb::{self, audit_service_server::AuditService};
use super::status::invalid;

pub struct AuditApi {
    /// The engine of the moment: a standby's, or the leader's once this node takes over.
    pub engine: EngineSlot,
    pub directory: SharedDirectory,
}

/// Reviewers read what they review (records, images, proofs) as auditors do.
const AUDIT_ROLES: &[Role] = &[Role::Auditor, Role::Admin, Role::Reviewer];

#[tonic::async_trait]
impl AuditService for AuditApi {
    #[tracing::instrument(
        name = "GetRequest",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn get_request(
        &self,
        req: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::GetRequestResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetRequestRequest { request_id } = req.into_inner();
        let id = super::concerning("request_id", &request_id)?;
        let loaded = self.engine().audit_request(&id).await?;
        let events = loaded
            .records
            .into_iter()
            .map(|(i, r, b)| ledger_event((i, Entry::Request(r), b)))
            .collect();
        Ok(Response::new(pb::GetRequestResponse {
            request: Some(convert::request(&loaded.request)),
            events,
        }))
    }

    #[tracing::instrument(
        name = "GetImage",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn get_image(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetImageRequest { sha256 } = req.into_inner();
        let hash = convert::image_hash("sha256", &sha256).map_err(invalid)?;
        let content = self.engine().audit_image(hash).await?;
        Ok(Response::new(pb::GetImageResponse { content }))
    }

    #[tracing::instrument(
        name = "GetCheckpoint",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn get_checkpoint(
        &self,
        req: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetCheckpointRequest { tree_size, refresh } = req.into_inner();
        let engine = self.engine();
        let s = engine.checkpoint(tree_size, refresh).await?;
        let witnesses = engine
            .witness_states()
            .into_iter()
            .map(|w| pb::WitnessStatus {
                name: w.name,
                url: w.url,
                cosigned_tree_size: w.cosigned_size,
                lag_records: w.lag,
                error: w.error.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::GetCheckpointResponse {
            cosigned_note: s.cosigned_note(),
            signed_note: s.note,
            tree_size: s.checkpoint.size,
            root_hash: s.checkpoint.root.to_vec(),
            witnesses,
        }))
    }

    #[tracing::instrument(
        name = "GetInclusionProof",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn get_inclusion_proof(
        &self,
        req: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetInclusionProofRequest { target, tree_size } = req.into_inner();
        let target = match target {
            Some(pb::get_inclusion_proof_request::Target::RecordIndex(i)) => ProofTarget::Record(i),
            Some(pb::get_inclusion_proof_request::Target::DecisionOfRequestId(id)) => {
                ProofTarget::DecisionOf(super::concerning("decision_of_request_id", &id)?)
            }
            None => {
                return Err(invalid(FieldError::new(
                    "target",
                    "record_index or decision_of_request_id is required",
                )));
            }
        };
        let p = self.engine().inclusion(target, tree_size).await?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            record_index: p.index,
            tree_size: p.tree_size,
            record: p.record,
            proof: p.proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    #[tracing::instrument(
        name = "GetConsistencyProof",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn get_consistency_proof(
        &self,
        req: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetConsistencyProofRequest {
            from_tree_size,
            to_tree_size,
        } = req.into_inner();
        let proof = self.engine().consistency(from_tree_size, to_tree_size)?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            proof: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    #[tracing::instrument(
        name = "GetRecords",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn get_records(
        &self,
        req: Request<pb::GetRecordsRequest>,
    ) -> Result<Response<pb::GetRecordsResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetRecordsRequest { start, end } = req.into_inner();
        let (records, ledger_size) = self.engine().records(start, end).await?;
        // Past the ledger's end nothing is returned and next_start stays at start, which is
        // then at or past ledger_size: the pager knows to stop.
        let next_start = records.last().map_or(start, |(i, _, _)| i + 1);
        Ok(Response::new(pb::GetRecordsResponse {
            records: records.into_iter().map(ledger_event).collect(),
            next_start,
            ledger_size,
        }))
    }

    #[tracing::instrument(
        name = "Search",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::SearchRequest {
            teller_id,
            supervisor_id,
            branch_id,
            transaction_code,
            outcome,
            submitted_from,
            submitted_until,
            page_size,
            page_token,
        } = req.into_inner();
        let outcome = match pb::RequestState::try_from(outcome) {
            Ok(pb::RequestState::Unspecified) => None,
            Ok(pb::RequestState::Approved) => Some(State::Approved),
            Ok(pb::RequestState::Rejected) => Some(State::Rejected),
            Ok(pb::RequestState::Returned) => Some(State::Returned),
            Ok(pb::RequestState::Cancelled) => Some(State::Cancelled),
            Ok(pb::RequestState::Expired) => Some(State::Expired),
            Ok(pb::RequestState::Fallback) => Some(State::Fallback),
            _ => {
                return Err(invalid(FieldError::new(
                    "outcome",
                    "must be APPROVED, REJECTED, RETURNED, CANCELLED, EXPIRED or FALLBACK",
                )));
            }
        };
        let cursor = convert::page_token(&page_token).map_err(invalid)?;
        let some = |s: String| (!s.is_empty()).then_some(s);
        let page = self
            .engine()
            .search(SearchQuery {
                teller: some(teller_id),
                supervisor: some(supervisor_id),
                branch: some(branch_id),
                code: some(transaction_code),
                outcome,
                from_ms: convert::millis(submitted_from),
                until_ms: convert::millis(submitted_until),
                page_size: page_size as usize,
                scan_max: 0,
                cursor,
                review: None,
            })
            .await?;
        let requests = page.hits.iter().map(convert::summary).collect();
        Ok(Response::new(pb::SearchResponse {
            requests,
            next_page_token: page.cursor.map(hex::encode).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(
        name = "ExportProof",
        skip_all,
        err(level = "debug"),
        fields(principal, branch, request_id)
    )]
    async fn export_proof(
        &self,
        req: Request<pb::ExportProofRequest>,
    ) -> Result<Response<pb::ExportProofResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::ExportProofRequest { request_id } = req.into_inner();
        let id = super::concerning("request_id", &request_id)?;
        let bundle = self.engine().export_proof(&id).await?;
        Ok(Response::new(pb::ExportProofResponse { bundle }))
    }

    #[tracing::instrument(
        name = "GetStatistics",
        skip_all,
        err(level = "debug"),
        fields(principal, branch)
    )]
    async fn get_statistics(
        &self,
        req: Request<pb::GetStatisticsRequest>,
    ) -> Result<Response<pb::GetStatisticsResponse>, Status> {
        self.directory.authorize(&req, AUDIT_ROLES)?;
        let pb::GetStatisticsRequest {
            submitted_from,
            submitted_until,
        } = req.into_inner();
        let supervisor_branches = self
            .directory
            .current()
            .supervisors()
            .into_iter()
            .map(|p| (p.id.to_string(), p.branch.to_string()))
            .collect();
        let s = self
            .engine()
            .statistics(
                convert::millis(submitted_from),
                convert::millis(submitted_until),
                supervisor_branches,
            )
            .await?;
        let pct = |p: crate::engine::stats::Percentiles| pb::DurationPercentiles {
            count: p.count,
            p50_ms: p.p50.unwrap_or_default(),
            p90_ms: p.p90.unwrap_or_default(),
            p99_ms: p.p99.unwrap_or_default(),
            max_ms: p.max.unwrap_or_default(),
        };
        let map = |m: std::collections::BTreeMap<String, u64>| m.into_iter().collect();
        Ok(Response::new(pb::GetStatisticsResponse {
            requests: s.requests,
            by_outcome: map(s.by_outcome),
            by_branch: map(s.by_branch),
            by_transaction_code: map(s.by_code),
            by_supervisor: map(s.by_supervisor),
            wait: Some(pct(s.wait_ms)),
            decision: Some(pct(s.decision_ms)),
            branch_rejection: s
                .branch_rejection_rate
                .into_iter()
                .map(|(branch_id, r)| pb::BranchRejection {
                    branch_id,
                    approved: r.approved,
                    rejected: r.rejected,
                    rate: r.rate,
                    returned: r.returned,
                    return_rate: r.return_rate,
                })
                .collect(),
            unusual_pairs: s
                .unusual_pairs
                .into_iter()
                .map(|p| pb::UnusualPair {
                    teller_id: p.teller,
                    supervisor_id: p.supervisor,
                    observed: p.observed,
                    expected: p.expected,
                    z: p.z,
                })
                .collect(),
            reviews: Some(pb::ReviewCounts {
                drawn: s.reviews.drawn,
                reviewed: s.reviews.reviewed,
                flagged: s.reviews.flagged,
                flagged_by_branch: map(s.reviews.flagged_by_branch),
                flagged_by_teller: map(s.reviews.flagged_by_teller),
                flagged_by_supervisor: map(s.reviews.flagged_by_supervisor),
            }),
            fallbacks: s
                .fallbacks
                .into_iter()
                .map(|(branch_id, f)| pb::BranchFallbacks {
                    branch_id,
                    registered: f.registered,
                    while_serving: f.while_serving,
                })
                .collect(),
        }))
    }
}

fn ledger_event((index, entry, bytes): (u64, Entry, Vec<u8>)) -> pb::LedgerEvent {
    pb::LedgerEvent {
        index,
        recorded_at: Some(convert::timestamp(entry.at())),
        actor_id: match entry.actor() {
            Actor::Principal(p) => p.to_string(),
            Actor::System => "system".into(),
        },
        kind: entry.kind().into(),
        record: bytes,
        request_id: match &entry {
            Entry::Request(r) => r.request.to_string(),
            Entry::Engine(_) => String::new(),
        },
    }
}

impl AuditApi {
    fn engine(&self) -> EngineHandle {
        self.engine.borrow().clone()
    }
}
