//! Signing checkpoints: the `Checkpointer` signs the ledger's tree as C2SP signed notes and
//! keeps every note it signed in the backend's `CheckpointLog`. It never signs a tree that is
//! not consistent with the last checkpoint: the consistency proof is built and checked before
//! each signature, as Certificate Transparency logs do. At start every stored checkpoint must
//! verify with our key and match the tree rebuilt from the records.

use std::sync::{Arc, Mutex, RwLock};

use crate::ledger::checkpoint::{self, Checkpoint, NoteError, Signer, Verifier};
use crate::ledger::cosignature::WitnessKey;
use crate::ledger::merkle::{self, ProofError};
use crate::storage::{CheckpointLog, LedgerRead, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("checkpoint log damaged at checkpoint {0}: {1}")]
    Damaged(u64, String),
    #[error("stored checkpoint {seq} (tree size {size}) does not match the ledger: {why}")]
    Mismatch { seq: u64, size: u64, why: String },
    #[error("the ledger is empty; there is nothing to sign")]
    Empty,
    #[error("refusing to sign: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// A checkpoint, the signed note that carries it, and the witnesses' cosignatures on it.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Its number in the checkpoint log.
    pub seq: u64,
    pub checkpoint: Checkpoint,
    pub note: String,
    /// Witnesses' signature lines (no newline), in the order stored.
    pub cosignatures: Vec<String>,
}

impl Signed {
    /// The note with every cosignature appended: still a signed note the log's key opens
    /// (verifiers ignore lines by keys they do not know), and what auditors keep.
    pub fn cosigned_note(&self) -> String {
        let mut note = self.note.clone();
        for line in &self.cosignatures {
            note.push_str(line);
            note.push('\n');
        }
        note
    }

    /// Whether every one of `witnesses` has a cosignature here (each was checked when it
    /// was stored or read at start).
    fn cosigned_by_all(&self, witnesses: &[WitnessKey]) -> bool {
        witnesses
            .iter()
            .all(|w| self.cosignatures.iter().any(|l| w.owns_line(l)))
    }
}

/// Checkpoints `latest_cosigned` looks back through (about three hours of one a second).
const COSIGNED_LOOK_BACK: usize = 10_000;

pub struct Checkpointer {
    ledger: Arc<dyn LedgerRead>,
    signer: Signer,
    verifier: Verifier,
    origin: String,
    /// Where signed notes are kept.
    log: Box<dyn CheckpointLog>,
    /// Held while signing, so two signatures never race on a sequence number.
    signing: Mutex<()>,
    /// Every checkpoint signed, in order of tree size.
    signed: RwLock<Vec<Signed>>,
    /// A follower's: never signs, reads the leader's instead.
    following: bool,
    /// The witnesses configured now: their stored cosignatures are checked at start.
    witnesses: Vec<WitnessKey>,
    /// How many cosignatures have been read from the log (a follower reads the rest).
    cosignatures_read: Mutex<u64>,
    /// The size of the latest signed checkpoint, for the tasks that send it to witnesses.
    signed_size: tokio::sync::watch::Sender<u64>,
}

impl Checkpointer {
    /// Reads the checkpoint log, checking that every stored checkpoint verifies with our key
    /// and matches the ledger's tree.
    pub fn open(
        ledger: Arc<dyn LedgerRead>,
        log: Box<dyn CheckpointLog>,
        signer: Signer,
        origin: String,
        witnesses: Vec<WitnessKey>,
    ) -> Result<Self, CheckpointError> {
        Self::open_as(ledger, log, signer, origin, witnesses, false)
    }

    /// As `open`, for a node that follows another's ledger: it never signs, and `sign_now`
    /// reads what the leader signed since instead.
    pub fn follow(
        ledger: Arc<dyn LedgerRead>,
        log: Box<dyn CheckpointLog>,
        signer: Signer,
        origin: String,
        witnesses: Vec<WitnessKey>,
    ) -> Result<Self, CheckpointError> {
        Self::open_as(ledger, log, signer, origin, witnesses, true)
    }

    fn open_as(
        ledger: Arc<dyn LedgerRead>,
        log: Box<dyn CheckpointLog>,
        signer: Signer,
        origin: String,
        witnesses: Vec<WitnessKey>,
        following: bool,
    ) -> Result<Self, CheckpointError> {
        let verifier = signer.verifier();
        let notes = log.notes()?;
        let c = Checkpointer {
            ledger,
            signer,
            verifier,
            origin,
            log,
            signing: Mutex::new(()),
            signed: RwLock::new(Vec::with_capacity(notes.len())),
            following,
            witnesses,
            cosignatures_read: Mutex::new(0),
            signed_size: tokio::sync::watch::Sender::new(0),
        };
        let size = c.ledger.tree_size();
        for (seq, note) in notes.into_iter().enumerate() {
            if following && c.covers(&note) > size {
                // The leader signed records this node has not followed yet.
                break;
            }
            c.adopt(seq as u64, note)?;
        }
        c.read_cosignatures()?;
        c.signed_size
            .send_replace(c.latest().map_or(0, |s| s.checkpoint.size));
        Ok(c)
    }

    /// Reads the cosignatures stored since the last read and keeps each beside its checkpoint,
    /// checking those by a configured witness: one that fails means the checkpoint or the
    /// cosignature was changed after the witness signed.
    fn read_cosignatures(&self) -> Result<(), CheckpointError> {
        let mut read = self
            .cosignatures_read
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let stored = if *read == 0 {
            self.log.cosignatures()?
        } else {
            self.log.cosignatures_from(*read)?
        };
        let mut signed = self.signed.write().unwrap_or_else(|e| e.into_inner());
        for (seq, line) in stored {
            let Some(s) = signed.get_mut(seq as usize) else {
                if self.following {
                    // Cosigns a checkpoint this node has not adopted yet: read again later.
                    break;
                }
                return Err(CheckpointError::Damaged(
                    seq,
                    "a cosignature names a checkpoint that does not exist".into(),
                ));
            };
            *read += 1;
            let body = s.checkpoint.body();
            for w in &self.witnesses {
                if w.owns_line(&line) {
                    w.check_line(&body, &line)
                        .map_err(|e| CheckpointError::Mismatch {
                            seq,
                            size: s.checkpoint.size,
                            why: format!(
                                "the cosignature of witness {} does not verify: {e}",
                                w.name()
                            ),
                        })?;
                }
            }
            if !s.cosignatures.contains(&line) {
                s.cosignatures.push(line);
            }
        }
        Ok(())
    }

    /// Stores a witness's cosignature line of checkpoint `seq` (checked by the caller) and
    /// keeps it beside the checkpoint. Blocking.
    pub fn add_cosignature(&self, seq: u64, line: &str) -> Result<(), CheckpointError> {
        let line = line.trim_end_matches('\n');
        {
            let signed = self.signed.read().unwrap_or_else(|e| e.into_inner());
            match signed.get(seq as usize) {
                None => return Err(CheckpointError::Damaged(seq, "no such checkpoint".into())),
                Some(s) if s.cosignatures.iter().any(|l| l == line) => return Ok(()),
                Some(_) => {}
            }
        }
        self.log.add_cosignature(seq, line)?;
        *self
            .cosignatures_read
            .lock()
            .unwrap_or_else(|e| e.into_inner()) += 1;
        let mut signed = self.signed.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = signed.get_mut(seq as usize) {
            s.cosignatures.push(line.to_owned());
        }
        Ok(())
    }

    /// The size of the largest checkpoint `witness` has cosigned, as stored.
    pub fn cosigned_size(&self, witness: &WitnessKey) -> Option<u64> {
        let signed = self.signed.read().unwrap_or_else(|e| e.into_inner());
        signed
            .iter()
            .rev()
            .find(|s| s.cosignatures.iter().any(|l| witness.owns_line(l)))
            .map(|s| s.checkpoint.size)
    }

    /// The latest checkpoint of at least `size` that every configured witness cosigned, if any.
    pub fn latest_cosigned(&self, size: u64) -> Option<Signed> {
        let signed = self.signed.read().unwrap_or_else(|e| e.into_inner());
        signed
            .iter()
            .rev()
            .take_while(|s| s.checkpoint.size >= size)
            // A witness down for days leaves many checkpoints uncosigned: look back a while.
            .take(COSIGNED_LOOK_BACK)
            .find(|s| s.cosigned_by_all(&self.witnesses))
            .cloned()
    }

    /// Follows the size of the latest signed checkpoint.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signed_size.subscribe()
    }

    /// The tree size a note claims (0 when it does not verify: `adopt` says why).
    fn covers(&self, note: &str) -> u64 {
        checkpoint::open(note, &self.verifier, &self.origin)
            .map(|cp| cp.size)
            .unwrap_or(0)
    }

    /// Checks stored note `seq` against our key and the ledger's tree and keeps it.
    fn adopt(&self, seq: u64, note: String) -> Result<(), CheckpointError> {
        let cp = checkpoint::open(&note, &self.verifier, &self.origin).map_err(|e| {
            let claimed = checkpoint::parse_unverified(&note);
            let origin = note.lines().next().unwrap_or_default();
            let why = if origin != self.origin {
                format!(
                    "it names the origin {origin:?} but ledger.origin is {:?}: set ledger.origin \
                     back to {origin:?} (a ledger keeps its origin for life)",
                    self.origin
                )
            } else {
                format!(
                    "it does not verify with the key in ledger.signing_key ({e}): point \
                     ledger.signing_key at the key this ledger was signed with (its ledger.pub \
                     is what auditors pin)"
                )
            };
            CheckpointError::Mismatch {
                seq,
                size: claimed.map_or(0, |c| c.size),
                why,
            }
        })?;
        let root = self
            .ledger
            .root_at(cp.size)
            .map_err(|e| CheckpointError::Mismatch {
                seq,
                size: cp.size,
                why: format!("the ledger has no tree of that size: {e}"),
            })?;
        if root != cp.root {
            return Err(CheckpointError::Mismatch {
                seq,
                size: cp.size,
                why: "its root differs from the ledger's".into(),
            });
        }
        let mut signed = self.signed.write().unwrap_or_else(|e| e.into_inner());
        if signed.last().is_some_and(|p| p.checkpoint.size >= cp.size) {
            return Err(CheckpointError::Damaged(
                seq,
                "tree sizes do not grow".into(),
            ));
        }
        signed.push(Signed {
            seq,
            checkpoint: cp,
            note,
            cosignatures: Vec::new(),
        });
        Ok(())
    }

    /// How many records the ledger holds (as far as this node has it).
    pub fn ledger_size(&self) -> u64 {
        self.ledger.tree_size()
    }

    /// Whether this node follows another's checkpoints rather than signing its own.
    pub fn following(&self) -> bool {
        self.following
    }

    /// A follower's `sign_now`: adopts what the leader signed since the last call, as far as
    /// the followed ledger reaches, and returns the latest.
    fn refresh(&self) -> Result<Signed, CheckpointError> {
        let _signing = self.signing.lock().unwrap_or_else(|e| e.into_inner());
        let known = self.signed.read().unwrap_or_else(|e| e.into_inner()).len() as u64;
        let size = self.ledger.tree_size();
        for (seq, note) in (known..).zip(self.log.notes_from(known)?) {
            if self.covers(&note) > size {
                // Signed over records this node has not followed yet: adopted next time.
                break;
            }
            self.adopt(seq, note)?;
        }
        self.read_cosignatures()?;
        self.latest().ok_or(CheckpointError::Empty)
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn latest(&self) -> Option<Signed> {
        self.signed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    /// The checkpoint signed at exactly `size`, if there is one.
    pub fn at_size(&self, size: u64) -> Option<Signed> {
        let s = self.signed.read().unwrap_or_else(|e| e.into_inner());
        s.binary_search_by_key(&size, |x| x.checkpoint.size)
            .ok()
            .map(|i| s[i].clone())
    }

    /// Signs a checkpoint of the current tree, unless the latest already covers it. Blocking
    /// (it fsyncs): call it off the async runtime.
    pub fn sign_now(&self) -> Result<Signed, CheckpointError> {
        if self.following {
            return self.refresh();
        }
        let _signing = self.signing.lock().unwrap_or_else(|e| e.into_inner());
        let (size, root) = self.ledger.head();
        if size == 0 {
            return Err(CheckpointError::Empty);
        }
        let latest = self.latest();
        if let Some(prev) = &latest {
            if prev.checkpoint.size == size {
                return Ok(prev.clone());
            }
            if prev.checkpoint.size > size {
                return Err(CheckpointError::Inconsistent(format!(
                    "the tree shrank from {} to {size}",
                    prev.checkpoint.size
                )));
            }
            // Never sign a head that does not extend the last signed one.
            let proof = self.ledger.consistency_proof(prev.checkpoint.size, size)?;
            merkle::verify_consistency(
                prev.checkpoint.size,
                size,
                &proof,
                &prev.checkpoint.root,
                &root,
            )
            .map_err(|e| {
                CheckpointError::Inconsistent(format!("consistency with the last checkpoint: {e}"))
            })?;
        }
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        };
        let note = self.signer.sign(&cp);
        // Pair assertion: what we publish must verify with what we tell auditors to use.
        let back = checkpoint::open(&note, &self.verifier, &self.origin)?;
        assert_eq!(back, cp, "a signed checkpoint must read back as signed");
        let seq = self.signed.read().unwrap_or_else(|e| e.into_inner()).len() as u64;
        self.log.append(seq, &note)?;
        let s = Signed {
            seq,
            checkpoint: cp,
            note,
            cosignatures: Vec::new(),
        };
        self.signed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        self.signed_size.send_replace(s.checkpoint.size);
        Ok(s)
    }
}
