//! Offline verification, with no server running. `data_dir` re-reads a data directory of the
//! embedded backend (segments, checkpoints, images) and is the only part that knows its files;
//! `database` re-reads a PostgreSQL database through a read-only snapshot, never the lease;
//! `bundle` owns the proof bundle `ExportProof` returns, its format and its check with nothing
//! but the server's public key, and knows no backend. Both stop at the first problem and say
//! where it is. Both fold records into requests, in ledger order, with the engine's own fold
//! (`domain::fold`), so the verifier and the engine cannot disagree on what a history means.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use crate::domain::{ImageHash, Request, RequestId, fold};
use crate::ledger::checkpoint::{self, Verifier};
use crate::ledger::merkle::{self, Tree};
use crate::ledger::record;

mod bundle;
mod data_dir;
mod database;

pub use bundle::{BUNDLE_FORMAT, Bundle, BundleImage, BundleRecord, BundleReport, verify_bundle};
pub use data_dir::{Report, verify_data_dir};

/// The server's default `ledger.unsigned_records_max`.
pub const UNSIGNED_RECORDS_MAX: u64 = 10_000;
pub use database::verify_database;

/// Decodes a record and folds it into its request, so a record that is well framed but out of
/// place (swapped, replayed) is caught by the state machine.
fn replay(
    index: u64,
    payload: &[u8],
    requests: &mut HashMap<RequestId, Request>,
    images: &mut BTreeSet<ImageHash>,
) -> Result<(), String> {
    let rec = record::decode(payload).map_err(|e| format!("record {index}: {e}"))?;
    images.extend(rec.event.images_added().iter().map(|i| i.hash));
    let opened =
        fold::step(requests.get_mut(&rec.request), index, &rec).map_err(|e| e.to_string())?;
    if let Some(r) = opened {
        requests.insert(rec.request.clone(), r);
    }
    Ok(())
}

/// Checks every stored checkpoint against the recomputed tree: its signature (when `verifier`
/// is given), that it covers records that are there, its root, and its consistency with the
/// one before. `torn_at` is a torn final record a crash left, named when a checkpoint covers it.
fn check_checkpoints(
    notes: &[String],
    tree: &Tree,
    verifier: Option<&Verifier>,
    torn_at: Option<&(u64, String)>,
) -> Result<u64, String> {
    let mut previous: Option<checkpoint::Checkpoint> = None;
    for (seq, note) in notes.iter().enumerate() {
        let cp = match verifier {
            Some(v) => {
                let origin = note.lines().next().unwrap_or_default();
                checkpoint::open(note, v, origin)
                    .map_err(|e| format!("checkpoint {seq}: signature does not verify: {e}"))?
            }
            None => checkpoint::parse_unverified(note)
                .ok_or_else(|| format!("checkpoint {seq}: not a checkpoint"))?,
        };
        if cp.size > tree.size() {
            // A signed checkpoint covers records that are not there: records were removed.
            return Err(match torn_at {
                Some((i, what)) if *i < cp.size => format!(
                    "{what}, but checkpoint {seq} (size {}) covers it: an acknowledged record is damaged",
                    cp.size
                ),
                _ => format!(
                    "checkpoint {seq} covers {} records but the ledger holds {}",
                    cp.size,
                    tree.size()
                ),
            });
        }
        let root = tree.root_at(cp.size).map_err(|e| e.to_string())?;
        if root != cp.root {
            return Err(format!(
                "checkpoint {seq} (size {}): root differs from the recomputed tree: records were changed",
                cp.size
            ));
        }
        if let Some(p) = &previous {
            let proof = tree
                .consistency_proof(p.size, cp.size)
                .map_err(|e| e.to_string())?;
            merkle::verify_consistency(p.size, cp.size, &proof, &p.root, &cp.root).map_err(
                |e| {
                    format!(
                        "checkpoint {seq} is not consistent with checkpoint {}: {e}",
                        seq - 1
                    )
                },
            )?;
        }
        previous = Some(cp);
    }
    Ok(previous.map_or(0, |p| p.size))
}

/// The rule for records beyond the last checkpoint, for a verifier that checks signatures:
/// none may exist without any checkpoint, and no more than `unsigned_max` (the server's
/// `ledger.unsigned_records_max`) beyond the last one. Such records are signed by nothing, so
/// whoever holds the disk could have changed them.
pub fn unsigned_problem(report: &Report, unsigned_max: u64) -> Option<String> {
    let unsigned = report.records.saturating_sub(report.signed);
    if report.records > 0 && report.checkpoints == 0 {
        Some(format!(
            "{} records and no checkpoint: nothing vouches for them (the checkpoints were \
             deleted, or the server never signed)",
            report.records
        ))
    } else if unsigned > unsigned_max {
        Some(format!(
            "{unsigned} records beyond the last checkpoint (size {}), more than the {unsigned_max} \
             the server leaves unsigned: checkpoints are missing or were cut short",
            report.signed
        ))
    } else {
        None
    }
}

/// Rehashes every image the records name, read with the backend's own reader.
fn check_images(
    images: &BTreeSet<ImageHash>,
    get: impl Fn(&ImageHash) -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    for h in images {
        let hex = h.to_hex();
        let bytes = get(h).map_err(|e| format!("image {hex}: {e}"))?;
        if ImageHash(Sha256::digest(&bytes).into()) != *h {
            return Err(format!(
                "image {hex}: its content no longer matches its hash"
            ));
        }
    }
    Ok(())
}
