//! Offline verification, with no server running. `data_dir` re-reads a data directory of the
//! embedded backend (segments, checkpoints, images) and is the only part that knows its files;
//! `database` re-reads a PostgreSQL database through a read-only snapshot, never the lease;
//! `bundle` owns the proof bundle `ExportProof` returns, its format and its check with nothing
//! but the server's public key, and knows no backend. Both stop at the first problem and say
//! where it is. Both fold records into requests, in ledger order, with the engine's own fold
//! (`domain::fold`), so the verifier and the engine cannot disagree on what a history means,
//! and check each registered fallback's on-site signature again from its record.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use crate::domain::{ImageHash, Request, RequestId, fold};
use crate::ledger::checkpoint::{self, Verifier};
use crate::ledger::cosignature::WitnessKey;
use crate::ledger::merkle::{self, Tree};
use crate::ledger::record;

mod bundle;
mod data_dir;
mod database;

pub use bundle::{
    BUNDLE_FORMAT, Bundle, BundleImage, BundleRecord, BundleReport, verify_bundle,
    verify_bundle_with,
};
pub use data_dir::{Report, verify_data_dir, verify_data_dir_with};

/// The server's default `ledger.unsigned_records_max`.
pub const UNSIGNED_RECORDS_MAX: u64 = 10_000;
pub use database::{verify_database, verify_database_with};

/// What an auditor brings from outside the server: the log's key, the witnesses' keys and
/// how many of them must have cosigned, and cosigned checkpoints kept from earlier (from
/// `GetCheckpoint`, a bundle, or a witness's monitoring URL), each of which the ledger must
/// still contain.
#[derive(Default)]
pub struct Trust {
    /// The log's checkpoint verifier key; without it no signature is checked.
    pub pubkey: Option<Verifier>,
    /// Witness keys whose cosignatures are checked.
    pub witnesses: Vec<WitnessKey>,
    /// How many of `witnesses` must have cosigned a checkpoint for it to count as witnessed.
    pub witnesses_required: usize,
    /// Checkpoint notes kept outside the server.
    pub kept: Vec<String>,
    /// The log's origin as the auditor pinned it; every checkpoint must name it. `None`:
    /// the origin is read from the checkpoints themselves.
    pub origin: Option<String>,
}

impl Trust {
    /// Only the log's key (or nothing).
    pub fn signed_by(pubkey: Option<&Verifier>) -> Trust {
        Trust {
            pubkey: pubkey.cloned(),
            ..Trust::default()
        }
    }
}

/// What the checkpoints vouch for.
#[derive(Debug, Default)]
struct Vouched {
    /// Records the last checkpoint covers.
    signed: u64,
    /// Records the last checkpoint with enough witnesses covers.
    cosigned: u64,
    /// Cosignatures by the given witnesses, each checked.
    cosignatures: usize,
}

/// Decodes a record and folds a request's into its request, so a record that is well framed
/// but out of place (swapped, replayed) is caught by the state machine. An engine record must
/// decode, and belongs to no request.
fn replay(
    index: u64,
    payload: &[u8],
    requests: &mut HashMap<RequestId, Request>,
    images: &mut BTreeSet<ImageHash>,
    draws: &mut Draws,
) -> Result<(), String> {
    let entry = record::decode_entry(payload).map_err(|e| format!("record {index}: {e}"))?;
    let crate::domain::Entry::Request(rec) = entry else {
        return Ok(());
    };
    images.extend(rec.event.images_added().iter().map(|i| i.hash));
    check_on_site(index, &rec.event)?;
    let was = requests.get(&rec.request).map(|r| r.state);
    if let crate::domain::Event::ReviewDrawn {
        reason: crate::domain::ReviewReason::Sampled { draw, .. },
    } = rec.event
        && draws.0.remove(&rec.request).map(|(_, d)| d) != Some(draw)
    {
        return Err(format!(
            "record {index}: a review draw of request {} that the approving record's hash \
             does not give: the draw was steered",
            rec.request
        ));
    }
    let opened =
        fold::step(requests.get_mut(&rec.request), index, &rec).map_err(|e| e.to_string())?;
    if let Some(r) = opened {
        requests.insert(rec.request.clone(), r);
    }
    // An approval under a rule that samples: its draw, recomputed, must be recorded next
    // exactly when it falls under the rule's percent.
    if let Some(r) = requests.get(&rec.request)
        && r.state == crate::domain::State::Approved
        && was != Some(crate::domain::State::Approved)
        && r.requirements.review_percent > 0
    {
        let draw = record::review_draw(&merkle::leaf_hash(payload));
        if record::drawn(draw, r.requirements.review_percent) {
            draws.0.insert(rec.request.clone(), (index, draw));
        }
    }
    Ok(())
}

/// Approvals whose recomputed draw selects them for review, until their `review_drawn`
/// record is replayed: (index of the approving record, draw).
#[derive(Default)]
struct Draws(HashMap<RequestId, (u64, u64)>);

impl Draws {
    /// At the end of the records: every approval the draw selected was recorded as drawn.
    fn finish(self) -> Result<(), String> {
        match self.0.into_iter().min_by_key(|(_, (index, _))| *index) {
            None => Ok(()),
            Some((id, (index, draw))) => Err(format!(
                "record {index}: the approval of request {id} draws {draw:016x}, which selects \
                 it for review, but no review_drawn record follows: the draw was suppressed"
            )),
        }
    }
}

/// A registered fallback's on-site signature, checked again from the record alone: the
/// canonical bytes rebuilt from it (the images by their recorded kinds and hashes) and the
/// certificate it keeps. A record whose signature does not check was not written by a
/// server that checked it: damage or forgery.
fn check_on_site(index: u64, event: &crate::domain::Event) -> Result<(), String> {
    let crate::domain::Event::FallbackRegistered {
        teller,
        submission: s,
        on_site,
        ..
    } = event
    else {
        return Ok(());
    };
    let images: Vec<_> = s.images.iter().map(|i| (i.kind, i.hash)).collect();
    let message = crate::ledger::onsite::Signed {
        teller,
        serial: &s.serial,
        transaction: &s.transaction,
        customer: &s.customer,
        images: &images,
        supervisor: &on_site.supervisor,
        decided_at: on_site.decided_at,
        reason: on_site.reason,
    }
    .bytes();
    crate::ledger::onsite::verify(&on_site.certificate, &message, &on_site.signature)
        .map_err(|e| format!("record {index}: the on-site signature does not check: {e}"))
}

/// Checks every stored checkpoint against the recomputed tree: its signature (when the trust
/// names the log's key), that it covers records that are there, its root, and its consistency
/// with the one before; every cosignature by a given witness against its checkpoint; and each
/// kept checkpoint against the tree. `torn_at` is a torn final record a crash left, named
/// when a checkpoint covers it.
fn check_checkpoints(
    notes: &[String],
    cosignatures: &[(u64, String)],
    tree: &Tree,
    trust: &Trust,
    torn_at: Option<&(u64, String)>,
) -> Result<Vouched, String> {
    let mut previous: Option<checkpoint::Checkpoint> = None;
    let mut vouched = Vouched::default();
    let mut cosigners: Vec<Vec<&str>> = vec![Vec::new(); notes.len()];
    let mut checkpoints = Vec::with_capacity(notes.len());
    for (seq, note) in notes.iter().enumerate() {
        let cp = match &trust.pubkey {
            Some(v) => {
                let origin = pinned_origin(note, trust);
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
                    "checkpoint {seq} covers {} records but the ledger holds {}: records were removed",
                    cp.size,
                    tree.size()
                ),
            });
        }
        let root = tree.root_at(cp.size).map_err(|e| e.to_string())?;
        if root != cp.root {
            // The checkpoints before agree with the tree, so the change lies past them.
            let from = previous.as_ref().map_or(0, |p| p.size);
            return Err(format!(
                "checkpoint {seq} (size {}): root differs from the recomputed tree: a record \
                 from index {from} to {} was changed after it was signed{}",
                cp.size,
                cp.size.saturating_sub(1),
                match &previous {
                    Some(p) => format!(" (checkpoint {} at size {} still agrees)", seq - 1, p.size),
                    None => String::new(),
                }
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
        previous = Some(cp.clone());
        checkpoints.push(cp);
    }
    vouched.signed = previous.map_or(0, |p| p.size);
    for (seq, line) in cosignatures {
        let Some(cp) = checkpoints.get(*seq as usize) else {
            return Err(format!(
                "a cosignature names checkpoint {seq}, which does not exist"
            ));
        };
        for w in trust.witnesses.iter().filter(|w| w.owns_line(line)) {
            w.check_line(&cp.body(), line).map_err(|e| {
                format!(
                    "checkpoint {seq} (size {}): the cosignature of witness {} does not verify \
                     ({e}): the checkpoint was changed after the witness signed it",
                    cp.size,
                    w.name()
                )
            })?;
            vouched.cosignatures += 1;
            let by = &mut cosigners[*seq as usize];
            if !by.contains(&w.name()) {
                by.push(w.name());
            }
        }
    }
    if trust.witnesses_required > 0 {
        vouched.cosigned = checkpoints
            .iter()
            .zip(&cosigners)
            .filter(|(_, by)| by.len() >= trust.witnesses_required)
            .map(|(cp, _)| cp.size)
            .max()
            .unwrap_or(0);
    }
    for (n, note) in trust.kept.iter().enumerate() {
        check_kept(n, note, tree, trust)?;
    }
    Ok(vouched)
}

/// The origin a checkpoint must name: the pinned one, else its own first line.
fn pinned_origin<'a>(note: &'a str, trust: &'a Trust) -> &'a str {
    trust
        .origin
        .as_deref()
        .unwrap_or_else(|| note.lines().next().unwrap_or_default())
}

/// A checkpoint the auditor kept (or fetched from a witness) must verify and be a tree this
/// ledger holds: a ledger that is shorter was rolled back, one with another root rewritten.
fn check_kept(n: usize, note: &str, tree: &Tree, trust: &Trust) -> Result<(), String> {
    let cp = match &trust.pubkey {
        Some(v) => {
            let origin = pinned_origin(note, trust);
            checkpoint::open(note, v, origin)
                .map_err(|e| format!("kept checkpoint {n}: signature does not verify: {e}"))?
        }
        None => checkpoint::parse_unverified(note)
            .ok_or_else(|| format!("kept checkpoint {n}: not a checkpoint"))?,
    };
    let witnessed = crate::ledger::cosignature::cosigners(note, &trust.witnesses)
        .map_err(|e| format!("kept checkpoint {n}: a cosignature does not verify: {e}"))?;
    if witnessed.len() < trust.witnesses_required {
        return Err(format!(
            "kept checkpoint {n} (size {}) carries {} of the {} cosignatures required",
            cp.size,
            witnessed.len(),
            trust.witnesses_required
        ));
    }
    if cp.size > tree.size() {
        return Err(format!(
            "kept checkpoint {n} was signed at size {} but the ledger holds {} records: the \
             ledger was rolled back",
            cp.size,
            tree.size()
        ));
    }
    if tree.root_at(cp.size).map_err(|e| e.to_string())? != cp.root {
        return Err(format!(
            "kept checkpoint {n} (size {}): the ledger's tree of that size has another root: \
             its history was rewritten",
            cp.size
        ));
    }
    Ok(())
}

/// The rule for records beyond the last witnessed checkpoint, when witnesses are required:
/// some checkpoint must carry enough cosignatures, and at most `uncosigned_max` records may
/// lie beyond the last that does.
pub fn uncosigned_problem(report: &Report, trust: &Trust, uncosigned_max: u64) -> Option<String> {
    if trust.witnesses_required == 0 || report.records == 0 {
        return None;
    }
    let beyond = report.records.saturating_sub(report.cosigned);
    if report.cosigned == 0 {
        Some(format!(
            "no checkpoint carries cosignatures from {} of the given witnesses: nobody outside \
             the centre vouches for these {} records",
            trust.witnesses_required, report.records
        ))
    } else if beyond > uncosigned_max {
        Some(format!(
            "{beyond} records beyond the last witnessed checkpoint (size {}), more than the \
             {uncosigned_max} allowed: cosignatures are missing (a witness was down, or they \
             were removed)",
            report.cosigned
        ))
    } else {
        None
    }
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

/// Progress of a long command on a terminal: a line at most every second, nothing when
/// stderr is not a terminal (a log file or a pipe gets no control characters).
pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    terminal: bool,
    last: std::cell::Cell<Option<std::time::Instant>>,
}

impl Progress {
    pub fn new(what: &'static str, total: Option<u64>) -> Self {
        Progress {
            what,
            total,
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            last: std::cell::Cell::new(None),
        }
    }

    /// `done` records so far.
    pub fn at(&self, done: u64) {
        if !self.terminal {
            return;
        }
        let finished = self.total == Some(done);
        // Elapsed time for pacing a progress line, not domain time.
        #[allow(clippy::disallowed_methods)]
        let now = std::time::Instant::now();
        if !finished
            && self
                .last
                .get()
                .is_some_and(|t| now.duration_since(t).as_secs() < 1)
        {
            return;
        }
        self.last.set(Some(now));
        match self.total {
            Some(total) => eprint!("\r{}: {done} of {total} records", self.what),
            None => eprint!("\r{}: {done} records", self.what),
        }
        if finished {
            eprintln!();
        }
    }

    /// Ends the line, when one was started.
    pub fn done(&self) {
        if self.terminal && self.last.get().is_some() && self.total.is_none() {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod on_site_tests {
    use crate::domain::{Event, FallbackReason, OnSite, PrincipalId, RequestId, Timestamp};

    /// A fallback record as a server writes it checks; one whose amount was changed after
    /// the supervisor signed does not.
    #[test]
    fn a_fallback_record_is_checked_against_its_signature() {
        let r = crate::domain::testing::request(&RequestId::from_random([1; 16]), 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sup".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let supervisor = PrincipalId::new("sup");
        let images: Vec<_> = r
            .submission
            .images
            .iter()
            .map(|i| (i.kind, i.hash))
            .collect();
        let s = &r.submission;
        let message = crate::ledger::onsite::Signed {
            teller: &r.teller,
            serial: &s.serial,
            transaction: &s.transaction,
            customer: &s.customer,
            images: &images,
            supervisor: &supervisor,
            decided_at: Timestamp(5),
            reason: FallbackReason::DeclaredEmergency,
        }
        .bytes();
        use rcgen::SigningKey as _;
        let event = |minor_units: i64| {
            let mut submission = r.submission.clone();
            submission.transaction.amount.minor_units = minor_units;
            Event::FallbackRegistered {
                teller: r.teller.clone(),
                branch: r.branch.clone(),
                submission,
                requirements: r.requirements.clone(),
                on_site: OnSite {
                    supervisor: supervisor.clone(),
                    decided_at: Timestamp(5),
                    reason: FallbackReason::DeclaredEmergency,
                    certificate: cert.der().to_vec(),
                    signature: key.sign(&message).unwrap(),
                },
            }
        };
        assert_eq!(super::check_on_site(3, &event(100)), Ok(()));
        let forged = super::check_on_site(3, &event(100_000)).unwrap_err();
        assert!(forged.contains("record 3"), "{forged}");
    }
}

#[cfg(test)]
mod draw_tests {
    use std::collections::{BTreeSet, HashMap};

    use crate::domain::{
        Actor, Decision, Event, PrincipalId, Record, RequestId, ReviewReason, Timestamp, Verdict,
    };
    use crate::ledger::{merkle, record};

    /// An approval under a rule that reviews every approval, then (maybe) its draw.
    fn run(draw: Option<fn(u64) -> u64>) -> Result<(), String> {
        let id = RequestId::from_random([2; 16]);
        let mut r = crate::domain::testing::request(&id, 1);
        r.requirements.review_percent = 100;
        let s = PrincipalId::new("sup");
        let rec = |event| Record {
            request: id.clone(),
            at: Timestamp(10),
            actor: Actor::System,
            event,
        };
        let mut records = vec![
            rec(Event::Submitted {
                teller: r.teller.clone(),
                branch: r.branch.clone(),
                submission: r.submission.clone(),
                requirements: r.requirements.clone(),
            }),
            rec(Event::Offered {
                supervisor: s.clone(),
                epoch: 1,
                pool_size: 1,
                accept_by: Timestamp(100),
            }),
            rec(Event::Accepted {
                supervisor: s.clone(),
                epoch: 1,
            }),
            rec(Event::Decided {
                supervisor: s.clone(),
                epoch: 1,
                verdict: Verdict {
                    decision: Decision::Approve,
                    reason_code: String::new(),
                    comment: "ok".into(),
                },
            }),
        ];
        if let Some(f) = draw {
            let decided = record::encode(&records[3]);
            let real = record::review_draw(&merkle::leaf_hash(&decided));
            records.push(rec(Event::ReviewDrawn {
                reason: ReviewReason::Sampled {
                    draw: f(real),
                    percent: 100,
                },
            }));
        }
        let (mut requests, mut images, mut draws) =
            (HashMap::new(), BTreeSet::new(), super::Draws::default());
        for (i, r) in records.iter().enumerate() {
            super::replay(
                i as u64,
                &record::encode(r),
                &mut requests,
                &mut images,
                &mut draws,
            )?;
        }
        draws.finish()
    }

    #[test]
    fn a_draw_must_be_recorded_as_the_hash_gives_it() {
        assert_eq!(run(Some(|d| d)), Ok(()));
        let suppressed = run(None).unwrap_err();
        assert!(suppressed.contains("suppressed"), "{suppressed}");
        let steered = run(Some(|d| d ^ 1)).unwrap_err();
        assert!(steered.contains("steered"), "{steered}");
    }
}
