//! Signed checkpoints: the log of every checkpoint the server signed (`checkpoints.log` beside
//! the segments, framed like records), and the `Checkpointer` that signs new ones. It never
//! signs a tree that is not consistent with the last checkpoint: the consistency proof is built
//! and checked before each signature, as Certificate Transparency logs do.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use super::frame::{self, Decoded, SEGMENT_HEADER_LEN};
use super::segments::Ledger;
use crate::ledger::checkpoint::{self, Checkpoint, NoteError, Signer, Verifier};
use crate::ledger::merkle::{self, ProofError};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
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

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError {
    move |source| CheckpointError::Io { action, source }
}

/// A checkpoint and the signed note that carries it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    pub note: String,
}

pub struct Checkpointer {
    ledger: Arc<Ledger>,
    signer: Signer,
    verifier: Verifier,
    origin: String,
    /// The log file, open for append; holding the lock serializes signing.
    file: Mutex<File>,
    /// Every checkpoint signed, in order of tree size.
    signed: RwLock<Vec<Signed>>,
}

pub const LOG_NAME: &str = "checkpoints.log";
/// Segment-header magic of the checkpoint log.
const MAGIC_FIRST: u64 = 0;

impl Checkpointer {
    /// Opens the checkpoint log next to the ledger's segments, checking that every stored
    /// checkpoint verifies with our key and matches the ledger's tree.
    pub fn open(
        ledger: Arc<Ledger>,
        signer: Signer,
        origin: String,
    ) -> Result<Self, CheckpointError> {
        let path = ledger.dir().join(LOG_NAME);
        let verifier = signer.verifier();
        let notes = read_log(&path, true)?;
        let mut signed: Vec<Signed> = Vec::with_capacity(notes.len());
        for (seq, note) in notes.into_iter().enumerate() {
            let seq = seq as u64;
            let cp = checkpoint::open(&note, &verifier, &origin).map_err(|e| {
                CheckpointError::Mismatch {
                    seq,
                    size: 0,
                    why: format!("does not verify with this server's key and origin: {e}"),
                }
            })?;
            let root = ledger
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
        }
        let file = open_for_append(&path)?;
        Ok(Checkpointer {
            ledger,
            signer,
            verifier,
            origin,
            file: Mutex::new(file),
            signed: RwLock::new(signed),
        })
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
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut buf = Vec::new();
        frame::encode(seq, note.as_bytes(), &mut buf);
        file.write_all(&buf).map_err(io("write checkpoint"))?;
        file.sync_data().map_err(io("fdatasync checkpoint log"))?;
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

/// Reads every signed note in a checkpoint log. With `repair`, a torn final frame (a crash
/// while appending) is cut off; otherwise it is reported.
pub fn read_log(path: &std::path::Path, repair: bool) -> Result<Vec<String>, CheckpointError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(io("read checkpoint log"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("open checkpoint log")(e)),
    }
    if frame::parse_segment_header(&bytes) != Some(MAGIC_FIRST) {
        return Err(CheckpointError::Damaged(0, "bad header".into()));
    }
    let mut notes = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let seq = notes.len() as u64;
        match frame::decode(&bytes[pos..], seq) {
            Decoded::Frame { payload, len, .. } => {
                let note = String::from_utf8(payload.to_vec())
                    .map_err(|_| CheckpointError::Damaged(seq, "not UTF-8".into()))?;
                notes.push(note);
                pos += len;
            }
            Decoded::Incomplete if repair => {
                tracing::warn!(
                    checkpoint = seq,
                    "cutting a torn final checkpoint left by a crash"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io("open checkpoint log"))?;
                f.set_len(pos as u64)
                    .map_err(io("truncate checkpoint log"))?;
                f.sync_all().map_err(io("sync checkpoint log"))?;
                break;
            }
            Decoded::Incomplete => {
                return Err(CheckpointError::Damaged(seq, "torn final frame".into()));
            }
            Decoded::Corrupt(what) => return Err(CheckpointError::Damaged(seq, what.into())),
        }
    }
    Ok(notes)
}

fn open_for_append(path: &PathBuf) -> Result<File, CheckpointError> {
    let exists = path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io("open checkpoint log"))?;
    if !exists || f.metadata().map_err(io("stat checkpoint log"))?.len() == 0 {
        f.write_all(&frame::segment_header(MAGIC_FIRST))
            .map_err(io("write checkpoint log header"))?;
        f.sync_all().map_err(io("sync checkpoint log"))?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync ledger directory"))?;
        }
    }
    Ok(f)
}
