//! Offline verification, with no server running. `data_dir` re-reads a data directory of the
//! embedded backend (segments, checkpoints, images) and is the only part that knows its files;
//! `bundle` owns the proof bundle `ExportProof` returns, its format and its check with nothing
//! but the server's public key, and knows no backend. Both stop at the first problem and say
//! where it is. This module owns the replay both share: records folded, in ledger order, into
//! the requests they are about.

use std::collections::{BTreeSet, HashMap};

use crate::domain::{Event, ImageHash, Request, RequestId};
use crate::ledger::record;

mod bundle;
mod data_dir;

pub use bundle::{BUNDLE_FORMAT, Bundle, BundleImage, BundleRecord, BundleReport, verify_bundle};
pub use data_dir::{Report, verify_data_dir};

/// Decodes a record and applies it to its request, so a record that is well framed but out of
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
            images.extend(submission.images.iter().map(|i| i.hash));
            let r = Request::open(index, &rec).expect("a submitted record");
            if requests.insert(rec.request.clone(), r).is_some() {
                return Err(format!(
                    "record {index}: request {} is submitted twice",
                    rec.request
                ));
            }
        }
        e => {
            if let Event::Resubmitted { added, .. } = e {
                images.extend(added.iter().map(|i| i.hash));
            }
            let r = requests.get_mut(&rec.request).ok_or_else(|| {
                format!(
                    "record {index}: names request {} before its submission",
                    rec.request
                )
            })?;
            r.apply(index, rec.at, e)
                .map_err(|e| format!("record {index}: {e}"))?;
        }
    }
    Ok(())
}
