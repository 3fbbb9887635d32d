//! Signing checkpoints: the `Checkpointer` signs the ledger's tree as C2SP signed notes and
//! keeps every note it signed in the backend's `CheckpointLog`. It never signs a tree that is
//! not consistent with the last checkpoint: the consistency proof is built and checked before
//! each signature, as Certificate Transparency logs do. At start every stored checkpoint must
//! verify with our key and match the tree rebuilt from the records.

use std::sync::{Arc, Mutex, RwLock};

use crate::ledger::checkpoint::{self, Checkpoint, NoteError, Signer, Verifier};
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

/// A checkpoint and the signed note that carries it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    pub note: String,
}

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
}

impl Checkpointer {
    /// Reads the checkpoint log, checking that every stored checkpoint verifies with our key
    /// and matches the ledger's tree.
    pub fn open(
        ledger: Arc<dyn LedgerRead>,
        log: Box<dyn CheckpointLog>,
        signer: Signer,
        origin: String,
    ) -> Result<Self, CheckpointError> {
        Self::open_as(ledger, log, signer, origin, false)
    }

    /// As `open`, for a node that follows another's ledger: it never signs, and `sign_now`
    /// reads what the leader signed since instead.
    pub fn follow(
        ledger: Arc<dyn LedgerRead>,
        log: Box<dyn CheckpointLog>,
        signer: Signer,
        origin: String,
    ) -> Result<Self, CheckpointError> {
        Self::open_as(ledger, log, signer, origin, true)
    }

    fn open_as(
        ledger: Arc<dyn LedgerRead>,
        log: Box<dyn CheckpointLog>,
        signer: Signer,
        origin: String,
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
        };
        let size = c.ledger.tree_size();
        for (seq, note) in notes.into_iter().enumerate() {
            if following && c.covers(&note) > size {
                // The leader signed records this node has not followed yet.
                break;
            }
            c.adopt(seq as u64, note)?;
        }
        Ok(c)
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
            CheckpointError::Mismatch {
                seq,
                size: 0,
                why: format!("does not verify with this server's key and origin: {e}"),
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
            checkpoint: cp,
            note,
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
            checkpoint: cp,
            note,
        };
        self.signed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        Ok(s)
    }
}
