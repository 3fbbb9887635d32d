//! `verify_data_dir`: the walk of a data directory of the embedded backend. It re-reads every
//! segment file with the backend's frame decoder, the checkpoint log and the image log with the
//! backend's own readers, and checks what they return itself: framing, sequence, the Merkle
//! tree, every checkpoint, the replay of every request and every image's hash.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::domain::{ImageHash, Request, RequestId};
use crate::ledger::checkpoint::Verifier;
use crate::ledger::merkle::{self, Hash, Tree};
use crate::storage::embedded::checkpoints::{
    COSIGNATURES_NAME, LOG_NAME, read_cosignatures, read_log,
};
use crate::storage::embedded::frame::{self, Decoded, SEGMENT_HEADER_LEN};
use crate::storage::embedded::images::ImageReader;

use super::{Trust, check_checkpoints, check_images, replay};

/// What `verify_data_dir` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Records read and checked, in order from index 0.
    pub records: u64,
    /// The Merkle root recomputed over those records.
    pub root: Hash,
    /// Checkpoints in the checkpoint log, each checked against the tree.
    pub checkpoints: usize,
    /// Records the last checkpoint covers; the rest are signed by nothing yet.
    pub signed: u64,
    /// Records the last checkpoint cosigned by the required witnesses covers (0 when none
    /// are required).
    pub cosigned: u64,
    /// Cosignatures by the given witnesses, each checked against its checkpoint.
    pub cosignatures: usize,
    /// Requests the records were replayed into.
    pub requests: usize,
    /// Images the records name, each rehashed from the image log.
    pub images: usize,
    /// A torn final record left by a crash (not tampering), if there is one.
    pub torn_tail: Option<String>,
    /// The first problem found; `None` means the data verified.
    pub problem: Option<String>,
}

/// Re-reads every record (framing, checksums, sequence), recomputes the Merkle tree, checks
/// every stored checkpoint (signature when `verifier` is given, root, consistency with the
/// next), replays every request through the state machine, and rehashes every image.
pub fn verify_data_dir(data: &Path, verifier: Option<&Verifier>) -> Report {
    verify_data_dir_with(data, &Trust::signed_by(verifier))
}

/// As `verify_data_dir`, checking cosignatures and kept checkpoints as `trust` says.
pub fn verify_data_dir_with(data: &Path, trust: &Trust) -> Report {
    let mut report = Report {
        root: merkle::empty_root(),
        ..Report::default()
    };
    if let Err(p) = verify_into(data, trust, &mut report) {
        report.problem = Some(p);
    }
    report
}

/// The checks of `verify_data_dir`, filling `report` as far as they get.
fn verify_into(data: &Path, trust: &Trust, report: &mut Report) -> Result<(), String> {
    let ledger = data.join("ledger");
    let mut names: Vec<_> = std::fs::read_dir(&ledger)
        .map_err(|e| format!("list {}: {e}", ledger.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    names.sort();
    let mut tree = Tree::new();
    let mut payloads_checked = 0u64;
    let mut requests: HashMap<RequestId, Request> = HashMap::new();
    let mut images: BTreeSet<ImageHash> = BTreeSet::new();
    let mut draws = super::Draws::default();
    let mut torn_at = None;
    let count = names.len();
    let progress = super::Progress::new("verify", None);
    for (n, path) in names.iter().enumerate() {
        let last = n + 1 == count;
        let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let name = path.display();
        let first = frame::parse_segment_header(&bytes)
            .ok_or_else(|| format!("{name}: bad segment header"))?;
        if first != tree.size() {
            return Err(format!(
                "{name}: starts at record {first}, but record {} comes next",
                tree.size()
            ));
        }
        let mut pos = SEGMENT_HEADER_LEN;
        while pos < bytes.len() {
            let index = tree.size();
            match frame::decode(&bytes[pos..], index) {
                Decoded::Frame { payload, len, .. } => {
                    replay(index, payload, &mut requests, &mut images, &mut draws)?;
                    tree.push(merkle::leaf_hash(payload))
                        .map_err(|e| e.to_string())?;
                    payloads_checked += 1;
                    pos += len;
                    if payloads_checked.is_multiple_of(4096) {
                        progress.at(payloads_checked);
                    }
                }
                Decoded::Incomplete if last => {
                    torn_at = Some((
                        index,
                        format!("record {index} at byte {pos} of {name}: incomplete final frame"),
                    ));
                    break;
                }
                Decoded::Corrupt(what) if last && frame::is_torn_tail(&bytes[pos..]) => {
                    torn_at = Some((
                        index,
                        format!(
                            "record {index} at byte {pos} of {name}: final frame fails its check ({what})"
                        ),
                    ));
                    break;
                }
                Decoded::Incomplete => {
                    return Err(format!(
                        "record {index} at byte {pos} of {name}: frame cut short"
                    ));
                }
                Decoded::Corrupt(what) => {
                    return Err(format!("record {index} at byte {pos} of {name}: {what}"));
                }
            }
        }
    }
    progress.done();
    // A torn tail may have cut a draw's record off together with the approval's answer.
    if torn_at.is_none() {
        draws.finish()?;
    }
    report.records = payloads_checked;
    report.root = tree.root();
    report.requests = requests.len();

    let notes = read_log(&ledger.join(LOG_NAME), false).map_err(|e| e.to_string())?;
    let cosignatures =
        read_cosignatures(&ledger.join(COSIGNATURES_NAME), false).map_err(|e| e.to_string())?;
    report.checkpoints = notes.len();
    let vouched = check_checkpoints(&notes, &cosignatures, &tree, trust, torn_at.as_ref())?;
    report.signed = vouched.signed;
    report.cosigned = vouched.cosigned;
    report.cosignatures = vouched.cosignatures;
    report.torn_tail = torn_at.map(|(_, what)| what);

    // The image log's reader is the store's own; what it reads is checked by hash.
    let log =
        ImageReader::open_read_only(&data.join("images")).map_err(|e| format!("image log: {e}"))?;
    check_images(&images, |h| log.get(h).map_err(|e| e.to_string()))?;
    report.images = images.len();
    Ok(())
}
