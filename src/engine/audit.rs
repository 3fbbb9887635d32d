//! Read-only audit operations: checkpoints, proofs, records, search and proof bundles. They
//! read only durable state (the ledger's tree and records, sled's rows), never the engine's
//! in-memory state, so they need no command round trip.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::domain::validate::FieldError;
use crate::domain::{Event, RequestId, State};
use crate::ledger::{merkle, record};
use crate::storage::{SearchPage, SearchQuery, StorageError};
use crate::verify::{BUNDLE_FORMAT, Bundle, BundleImage, BundleRecord};

use super::EngineHandle;
use super::checkpoints::{CheckpointError, Signed};
use super::error::{AuditError, StorageFault};
use super::handle::blocking;

/// What an inclusion proof is for.
pub enum ProofTarget {
    Record(u64),
    DecisionOf(RequestId),
}

/// An inclusion proof with the record it proves.
pub struct Inclusion {
    pub index: u64,
    pub tree_size: u64,
    pub record: Vec<u8>,
    pub proof: Vec<merkle::Hash>,
}

fn fault(e: StorageError) -> AuditError {
    AuditError::Storage(StorageFault(e))
}

/// A proof the tree cannot give for sizes it holds: the tree disagrees with itself.
fn proof_fault(e: crate::ledger::merkle::ProofError) -> AuditError {
    fault(StorageError::damaged("build a proof", e))
}

impl EngineHandle {
    /// The latest checkpoint (signing one first when `refresh`), or the one at `size`.
    pub async fn checkpoint(&self, size: u64, refresh: bool) -> Result<Signed, AuditError> {
        if size != 0 {
            return self.checkpointer.at_size(size).ok_or(AuditError::NotFound);
        }
        // A follower's latest is what the leader signed, read afresh.
        if refresh || self.checkpointer.following() {
            return self.sign_checkpoint().await;
        }
        match self.checkpointer.latest() {
            Some(s) => Ok(s),
            None => self.sign_checkpoint().await,
        }
    }

    /// What the leader knows of each configured witness now.
    pub fn witness_states(&self) -> Vec<super::WitnessState> {
        self.witnesses.states()
    }

    async fn sign_checkpoint(&self) -> Result<Signed, AuditError> {
        let c = self.checkpointer.clone();
        tokio::task::spawn_blocking(move || c.sign_now())
            .await
            .map_err(|e| fault(StorageError::Join(e)))?
            .map_err(|e| match e {
                CheckpointError::Empty => AuditError::NotFound,
                e => AuditError::Checkpoint(e),
            })
    }

    pub async fn inclusion(&self, target: ProofTarget, size: u64) -> Result<Inclusion, AuditError> {
        let size = match size {
            0 => self.checkpoint(0, false).await?.checkpoint.size,
            s => s,
        };
        let index = match target {
            ProofTarget::Record(i) => i,
            ProofTarget::DecisionOf(id) => self.decision_index(&id).await?,
        };
        let tree = self.ledger.tree_size();
        if size > tree {
            return Err(AuditError::OutOfRange(format!(
                "tree_size {size} exceeds the tree ({tree})"
            )));
        }
        if index >= size {
            return Err(AuditError::OutOfRange(format!(
                "record {index} is not in the tree of size {size}"
            )));
        }
        let proof = self
            .ledger
            .inclusion_proof(index, size)
            .map_err(proof_fault)?;
        let record = self.ledger.read(index).map_err(fault)?;
        Ok(Inclusion {
            index,
            tree_size: size,
            record,
            proof,
        })
    }

    async fn decision_index(&self, id: &RequestId) -> Result<u64, AuditError> {
        let loaded = self.audit_request(id).await?;
        loaded
            .records
            .iter()
            .rev()
            .find(|(_, r, _)| matches!(&r.event, Event::Decided { .. }))
            .filter(|_| matches!(loaded.request.state, State::Approved | State::Rejected))
            .map(|(i, _, _)| *i)
            .ok_or(AuditError::NoDecision)
    }

    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<merkle::Hash>, AuditError> {
        let tree = self.ledger.tree_size();
        if from == 0 || from > to {
            return Err(FieldError::new(
                "from_tree_size",
                "must be at least 1 and at most to_tree_size",
            )
            .into());
        }
        if to > tree {
            return Err(AuditError::OutOfRange(format!(
                "to_tree_size {to} exceeds the tree ({tree})"
            )));
        }
        self.ledger.consistency_proof(from, to).map_err(proof_fault)
    }

    /// Records `start..end`, at most `page_size_max` of them.
    pub async fn records(
        &self,
        start: u64,
        end: u64,
    ) -> Result<(Vec<(u64, crate::domain::Entry, Vec<u8>)>, u64), AuditError> {
        let len = self.ledger.len();
        if start > end {
            return Err(FieldError::new("end", "must not be less than start").into());
        }
        let end = end
            .min(len)
            .min(start.saturating_add(self.config.page_size_max as u64));
        let ledger = self.ledger.clone();
        let records = blocking(move || {
            (start..end)
                .map(|index| {
                    let bytes = ledger.read(index)?;
                    let rec = record::decode_entry(&bytes)
                        .map_err(|source| StorageError::Record { index, source })?;
                    Ok((index, rec, bytes))
                })
                .collect()
        })
        .await
        .map_err(fault)?;
        Ok((records, len))
    }

    pub async fn search(&self, mut q: SearchQuery) -> Result<SearchPage, AuditError> {
        q.page_size = match q.page_size {
            0 => self.config.page_size_max,
            n => n.min(self.config.page_size_max),
        };
        q.scan_max = self.config.search_scan_max;
        self.projected().await?;
        let p = self.projection.clone();
        blocking(move || p.search(&q)).await.map_err(fault)
    }

    /// A self-contained bundle proving every record of one request against a checkpoint.
    pub async fn export_proof(&self, id: &RequestId) -> Result<Vec<u8>, AuditError> {
        let loaded = self.audit_request(id).await?;
        let last = loaded.records.last().map(|(i, _, _)| *i).unwrap_or(0);
        // The latest checkpoint every witness has cosigned, when one covers the request: the
        // bundle then stands on more than the centre's own key.
        let signed = match self.checkpointer.latest_cosigned(last + 1) {
            Some(s) => s,
            None => {
                let s = self.checkpoint(0, false).await?;
                if s.checkpoint.size <= last {
                    self.sign_checkpoint().await?
                } else {
                    s
                }
            }
        };
        let size = signed.checkpoint.size;
        let mut records = Vec::new();
        let mut images = Vec::new();
        for (index, rec, bytes) in &loaded.records {
            let proof = self
                .ledger
                .inclusion_proof(*index, size)
                .map_err(proof_fault)?;
            records.push(BundleRecord {
                index: *index,
                record: B64.encode(bytes),
                inclusion_proof: proof.iter().map(|h| B64.encode(h)).collect(),
            });
            for i in rec.event.images_added() {
                images.push(BundleImage {
                    sha256: i.hash.to_hex(),
                    media_type: i.media_type.as_mime().into(),
                });
            }
        }
        let bundle = Bundle {
            format: BUNDLE_FORMAT.into(),
            request_id: id.to_string(),
            origin: self.checkpointer.origin().into(),
            checkpoint: signed.cosigned_note(),
            tree_size: size,
            records,
            images,
        };
        // The bundle is strings, numbers and lists: serializing it cannot fail.
        #[allow(clippy::expect_used)]
        Ok(serde_json::to_vec_pretty(&bundle).expect("plain data"))
    }
}
