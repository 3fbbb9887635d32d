//! `verify_database`: the walk of a PostgreSQL database, through a read-only snapshot (one
//! moment, even while a leader writes; never the lease). The same checks as a data directory
//! gets, plus what only the tables hold: each stored leaf hash against the record, indexes
//! without a gap, and terms that never go back (no fenced writer got a record in).

use std::collections::{BTreeSet, HashMap};

use crate::domain::{ImageHash, Request, RequestId};
use crate::ledger::checkpoint::Verifier;
use crate::ledger::merkle::{self, Tree};
use crate::storage::postgres::snapshot::Snapshot;

use super::{Report, Trust, check_checkpoints, check_images, replay};

/// Records read per round trip.
const PAGE: usize = 10_000;

/// Verifies the database `url` names (TLS when `tls_ca_pem` is given).
pub fn verify_database(url: &str, tls_ca_pem: Option<&str>, verifier: Option<&Verifier>) -> Report {
    verify_database_with(url, tls_ca_pem, &Trust::signed_by(verifier))
}

/// As `verify_database`, checking cosignatures and kept checkpoints as `trust` says.
pub fn verify_database_with(url: &str, tls_ca_pem: Option<&str>, trust: &Trust) -> Report {
    let mut report = Report {
        root: merkle::empty_root(),
        ..Report::default()
    };
    if let Err(p) = verify_into(url, tls_ca_pem, trust, &mut report) {
        report.problem = Some(p);
    }
    report
}

fn verify_into(
    url: &str,
    tls_ca_pem: Option<&str>,
    trust: &Trust,
    report: &mut Report,
) -> Result<(), String> {
    let db = Snapshot::open(url, tls_ca_pem).map_err(|e| e.to_string())?;
    let mut tree = Tree::new();
    let mut requests: HashMap<RequestId, Request> = HashMap::new();
    let mut images: BTreeSet<ImageHash> = BTreeSet::new();
    let mut draws = super::Draws::default();
    let mut term = 0;
    let progress = super::Progress::new("verify", None);
    loop {
        let page = db.records(tree.size(), PAGE).map_err(|e| e.to_string())?;
        let done = page.len() < PAGE;
        for r in page {
            let index = tree.size();
            if r.index != index {
                return Err(format!(
                    "record {index} is missing (the next is {})",
                    r.index
                ));
            }
            let leaf = merkle::leaf_hash(&r.record);
            if r.leaf_hash != leaf {
                return Err(format!(
                    "record {index}: its stored leaf hash does not match its bytes: the record was changed"
                ));
            }
            if r.term < term {
                return Err(format!(
                    "record {index} was written in term {} after a record of term {term}",
                    r.term
                ));
            }
            term = r.term;
            replay(index, &r.record, &mut requests, &mut images, &mut draws)?;
            tree.push(leaf).map_err(|e| e.to_string())?;
        }
        progress.at(tree.size());
        if done {
            break;
        }
    }
    progress.done();
    draws.finish()?;
    report.records = tree.size();
    report.root = tree.root();
    report.requests = requests.len();
    let stored = db.notes().map_err(|e| e.to_string())?;
    let mut notes = Vec::with_capacity(stored.len());
    for (i, (seq, note)) in stored.into_iter().enumerate() {
        if seq != i as u64 {
            return Err(format!("checkpoint {i} is missing (the next is {seq})"));
        }
        notes.push(note);
    }
    let cosignatures = db.cosignatures().map_err(|e| e.to_string())?;
    report.checkpoints = notes.len();
    let vouched = check_checkpoints(&notes, &cosignatures, &tree, trust, None)?;
    report.signed = vouched.signed;
    report.cosigned = vouched.cosigned;
    report.cosignatures = vouched.cosignatures;
    check_images(&images, |h| {
        db.image(h)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not stored".to_string())
    })?;
    report.images = images.len();
    Ok(())
}
