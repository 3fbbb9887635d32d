//! The proof bundle: its JSON format (`Bundle`, which `ExportProof` builds and docs/ledger.md
//! documents for auditors) and `verify_bundle`, which checks one with nothing but the server's
//! public key. Backend-neutral: a bundle holds the record bytes and proofs themselves, so this
//! file reads no data directory and names no storage backend.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{ImageHash, RequestId, State};
use crate::ledger::checkpoint::{self, Verifier};
use crate::ledger::cosignature::{self, WitnessKey};
use crate::ledger::merkle::{self, Hash};
use crate::ledger::record;

use super::replay;

/// The proof bundle `ExportProof` returns (JSON). docs/ledger.md documents it for auditors.
#[derive(Serialize, Deserialize)]
pub struct Bundle {
    /// Always `BUNDLE_FORMAT`.
    pub format: String,
    /// The request whose history this is.
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

/// One record of the request, with the proof that it is in the signed tree.
#[derive(Serialize, Deserialize)]
pub struct BundleRecord {
    /// The record's index in the ledger (its leaf in the tree).
    pub index: u64,
    /// The record bytes exactly as stored, base64.
    pub record: String,
    /// Inclusion proof hashes, base64, leaf side first.
    pub inclusion_proof: Vec<String>,
}

/// An image a record names; the bundle lists it, the image file travels beside the bundle.
#[derive(Serialize, Deserialize)]
pub struct BundleImage {
    /// Its SHA-256, hex: the name the records give it and the name of its file.
    pub sha256: String,
    /// The media type it was stored with, e.g. image/jpeg.
    pub media_type: String,
}

/// The `format` of every bundle this code writes and reads; a change of shape gets a new one.
pub const BUNDLE_FORMAT: &str = "countersign-proof-bundle/1";

/// What a verified bundle proves.
#[derive(Debug)]
pub struct BundleReport {
    /// The request the bundle is about.
    pub request_id: String,
    /// The log's origin, as the signed checkpoint names it.
    pub origin: String,
    /// The size of the signed tree every record was proved in.
    pub tree_size: u64,
    /// How many records were proved and replayed.
    pub records: usize,
    /// The request's state after its records, e.g. Approved.
    pub state: State,
    /// How many image files were rehashed (0 without an image directory).
    pub images_checked: usize,
    /// Whether `state` is final (approved, rejected, cancelled, expired): when it is not, the
    /// request went on after the checkpoint and the bundle shows only its beginning.
    pub final_state: bool,
    /// The witnesses among those given whose cosignatures on the checkpoint verify.
    pub witnessed_by: Vec<String>,
}

/// Checks a bundle: the checkpoint's signature and origin, each record's inclusion in the
/// signed tree, that the records are one request's whole history in order, that the image list
/// is what the records name, and (with `images`) each image file's hash.
pub fn verify_bundle(
    json: &[u8],
    verifier: &Verifier,
    images: Option<&Path>,
) -> Result<BundleReport, String> {
    verify_bundle_with(json, verifier, &[], 0, images)
}

/// As `verify_bundle`, also requiring cosignatures on the checkpoint by `required` of
/// `witnesses`.
pub fn verify_bundle_with(
    json: &[u8],
    verifier: &Verifier,
    witnesses: &[WitnessKey],
    required: usize,
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
    let witnessed_by: Vec<String> = cosignature::cosigners(&b.checkpoint, witnesses)
        .map_err(|e| format!("checkpoint: a witness cosignature does not verify: {e}"))?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    if witnessed_by.len() < required {
        return Err(format!(
            "checkpoint: cosigned by {} of the {required} witnesses required{}",
            witnessed_by.len(),
            if witnessed_by.is_empty() {
                String::new()
            } else {
                format!(" ({})", witnessed_by.join(", "))
            }
        ));
    }
    let id = RequestId::parse(&b.request_id).ok_or("request_id is not a request id")?;
    let mut requests = HashMap::new();
    let mut named = BTreeSet::new();
    let mut draws = super::Draws::default();
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
        replay(r.index, &bytes, &mut requests, &mut named, &mut draws)?;
    }
    draws.finish()?;
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
        final_state: request.state.is_final(),
        state: request.state,
        images_checked: checked,
        witnessed_by,
    })
}
