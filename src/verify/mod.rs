//! Offline verification, with no server running. `data_dir` re-reads a data directory of the
//! embedded backend (segments, checkpoints, images) and is the only part that knows its files;
//! `bundle` owns the proof bundle `ExportProof` returns, its format and its check with nothing
//! but the server's public key, and knows no backend. Both stop at the first problem and say
//! where it is. Both fold records into requests, in ledger order, with the engine's own fold
//! (`domain::fold`), so the verifier and the engine cannot disagree on what a history means.

use std::collections::{BTreeSet, HashMap};

use crate::domain::{Event, ImageHash, Request, RequestId, fold};
use crate::ledger::record;

mod bundle;
mod data_dir;

pub use bundle::{BUNDLE_FORMAT, Bundle, BundleImage, BundleRecord, BundleReport, verify_bundle};
pub use data_dir::{Report, verify_data_dir};

/// Decodes a record and folds it into its request, so a record that is well framed but out of
/// place (swapped, replayed) is caught by the state machine.
fn replay(
    index: u64,
    payload: &[u8],
    requests: &mut HashMap<RequestId, Request>,
    images: &mut BTreeSet<ImageHash>,
) -> Result<(), String> {
    let rec = record::decode(payload).map_err(|e| format!("record {index}: {e}"))?;
    match &rec.event {
        Event::Submitted { submission, .. } => {
            images.extend(submission.images.iter().map(|i| i.hash))
        }
        Event::Resubmitted { added, .. } => images.extend(added.iter().map(|i| i.hash)),
        _ => {}
    }
    let opened =
        fold::step(requests.get_mut(&rec.request), index, &rec).map_err(|e| e.to_string())?;
    if let Some(r) = opened {
        requests.insert(rec.request.clone(), r);
    }
    Ok(())
}
