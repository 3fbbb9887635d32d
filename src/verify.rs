//! Offline verification, with no server running: `verify_data_dir` re-reads a data directory
//! (segments, checkpoints, images) and `verify_bundle` checks an exported proof bundle with
//! nothing but the server's public key. Both stop at the first problem and say where it is.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Event, ImageHash, Request, RequestId, State};
use crate::ledger::checkpoint::{self, Verifier};
use crate::ledger::merkle::{self, Hash, Tree};
use crate::ledger::record;
use crate::storage::embedded::checkpoints::{LOG_NAME, read_log};
use crate::storage::embedded::frame::{self, Decoded, SEGMENT_HEADER_LEN};
use crate::storage::embedded::images::ImageReader;

/// The proof bundle `ExportProof` returns (JSON). docs/ledger.md documents it for auditors.
#[derive(Serialize, Deserialize)]
pub struct Bundle {
    /// Always `BUNDLE_FORMAT`.
    pub format: String,
    pub request_id: String,
    /// The log's origin; the checkpoint's first line.
    pub origin: String,
    /// The signed checkpoint note (C2SP signed-note text).
    pub checkpoint: String,
    /// The tree size the checkpoint and every proof are for.
    pub tree_size: u64,
    /// Every record of the request, oldest first.
    pub records: Vec<BundleRecord>,
    /// Every image the records name.
    pub images: Vec<BundleImage>,
}

#[derive(Serialize, Deserialize)]
pub struct BundleRecord {
    pub index: u64,
    /// The record bytes exactly as stored, base64.
    pub record: String,
    /// Inclusion proof hashes, base64, leaf side first.
    pub inclusion_proof: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct BundleImage {
    pub sha256: String,
    pub media_type: String,
}

pub const BUNDLE_FORMAT: &str = "countersign-proof-bundle/1";

/// What `verify_data_dir` found.
#[derive(Debug, Default)]
pub struct Report {
    pub records: u64,
    pub root: Hash,
    pub checkpoints: usize,
    pub requests: usize,
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
    let mut report = Report {
        root: merkle::empty_root(),
        ..Report::default()
    };
    if let Err(p) = verify_into(data, verifier, &mut report) {
        report.problem = Some(p);
    }
    report
}

fn verify_into(
    data: &Path,
    verifier: Option<&Verifier>,
    report: &mut Report,
) -> Result<(), String> {
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
    let mut torn_at = None;
    let count = names.len();
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
                    replay(index, payload, &mut requests, &mut images)?;
                    tree.push(merkle::leaf_hash(payload))
                        .map_err(|e| e.to_string())?;
                    payloads_checked += 1;
                    pos += len;
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
    report.records = payloads_checked;
    report.root = tree.root();
    report.requests = requests.len();

    let notes = read_log(&ledger.join(LOG_NAME), false).map_err(|e| e.to_string())?;
    let mut previous: Option<checkpoint::Checkpoint> = None;
    for (seq, note) in notes.iter().enumerate() {
        let cp = match verifier {
            Some(v) => {
                let origin = note.lines().next().unwrap_or_default();
                checkpoint::open(note, v, origin)
                    .map_err(|e| format!("checkpoint {seq}: signature does not verify: {e}"))?
            }
            None => parse_unverified(note)
                .ok_or_else(|| format!("checkpoint {seq}: not a checkpoint"))?,
        };
        if cp.size > tree.size() {
            // A signed checkpoint covers records that are not there: records were removed.
            return Err(match &torn_at {
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
    report.checkpoints = notes.len();
    report.torn_tail = torn_at.map(|(_, what)| what);

    // The image log's reader is the store's own; what it reads is checked here, hash by hash.
    let log =
        ImageReader::open_read_only(&data.join("images")).map_err(|e| format!("image log: {e}"))?;
    for h in &images {
        let hex = h.to_hex();
        let bytes = log.get(h).map_err(|e| format!("image {hex}: {e}"))?;
        if ImageHash(Sha256::digest(&bytes).into()) != *h {
            return Err(format!(
                "image {hex}: its content no longer matches its hash"
            ));
        }
    }
    report.images = images.len();
    Ok(())
}

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

/// Reads a checkpoint body without checking its signature (for `verify` without a key).
fn parse_unverified(note: &str) -> Option<checkpoint::Checkpoint> {
    let mut lines = note.lines();
    let origin = lines.next()?;
    let size = lines.next()?.parse().ok()?;
    let root: Hash = B64.decode(lines.next()?).ok()?.try_into().ok()?;
    checkpoint::Checkpoint::new(origin, size, root).ok()
}

/// What a verified bundle proves.
#[derive(Debug)]
pub struct BundleReport {
    pub request_id: String,
    pub origin: String,
    pub tree_size: u64,
    pub records: usize,
    /// The request's state after its records, e.g. Approved.
    pub state: State,
    pub images_checked: usize,
}

/// Checks a bundle: the checkpoint's signature and origin, each record's inclusion in the
/// signed tree, that the records are one request's whole history in order, that the image list
/// is what the records name, and (with `images`) each image file's hash.
pub fn verify_bundle(
    json: &[u8],
    verifier: &Verifier,
    images: Option<&Path>,
) -> Result<BundleReport, String> {
    let b: Bundle = serde_json::from_slice(json)
        .map_err(|e| format!("bundle is not valid JSON of the expected shape: {e}"))?;
    if b.format != BUNDLE_FORMAT {
        return Err(format!("unknown bundle format {:?}", b.format));
    }
    let cp = checkpoint::open(&b.checkpoint, verifier, &b.origin)
        .map_err(|e| format!("checkpoint: {e}"))?;
    if cp.size != b.tree_size {
        return Err(format!(
            "the checkpoint is for size {}, the bundle says {}",
            cp.size, b.tree_size
        ));
    }
    let id = RequestId::parse(&b.request_id).ok_or("request_id is not a request id")?;
    let mut requests = HashMap::new();
    let mut named = BTreeSet::new();
    let mut last_index = None;
    for r in &b.records {
        let bytes = B64
            .decode(&r.record)
            .map_err(|_| format!("record {}: bad base64", r.index))?;
        let proof = r
            .inclusion_proof
            .iter()
            .map(|h| B64.decode(h).ok().and_then(|v| <Hash>::try_from(v).ok()))
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| format!("record {}: bad proof hash", r.index))?;
        merkle::verify_inclusion(
            &merkle::leaf_hash(&bytes),
            r.index,
            cp.size,
            &proof,
            &cp.root,
        )
        .map_err(|e| format!("record {}: not in the signed tree: {e}", r.index))?;
        if last_index.is_some_and(|l| l >= r.index) {
            return Err(format!(
                "record {}: records are not in ledger order",
                r.index
            ));
        }
        last_index = Some(r.index);
        let rec = record::decode(&bytes).map_err(|e| format!("record {}: {e}", r.index))?;
        if rec.request != id {
            return Err(format!(
                "record {} is about request {}, not {id}",
                r.index, rec.request
            ));
        }
        replay(r.index, &bytes, &mut requests, &mut named)?;
    }
    let request = requests
        .remove(&id)
        .ok_or("the bundle holds no submission of the request")?;
    let listed: BTreeSet<String> = b.images.iter().map(|i| i.sha256.clone()).collect();
    let named_hex: BTreeSet<String> = named.iter().map(ImageHash::to_hex).collect();
    if listed != named_hex {
        return Err("the image list differs from the images the records name".into());
    }
    let mut checked = 0;
    if let Some(dir) = images {
        for h in &named_hex {
            let flat = dir.join(h);
            let fanned = dir.join(&h[..2]).join(h);
            let path = if flat.exists() { flat } else { fanned };
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("image {h}: cannot read {}: {e}", path.display()))?;
            if hex::encode(Sha256::digest(&bytes)) != *h {
                return Err(format!("image {h}: content does not match its hash"));
            }
            checked += 1;
        }
    }
    Ok(BundleReport {
        request_id: b.request_id,
        origin: b.origin,
        tree_size: cp.size,
        records: b.records.len(),
        state: request.state,
        images_checked: checked,
    })
}
