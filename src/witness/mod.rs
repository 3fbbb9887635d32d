//! The witness: a party other than the centre (internal audit, risk, a regulator) that keeps
//! the latest checkpoint it has seen of each log it knows and cosigns a new one only when a
//! consistency proof shows it extends the old, so nobody, not even whoever holds the centre's
//! disk and signing key, can fork or rewrite the history it has cosigned. It speaks C2SP
//! tlog-witness (`POST /add-checkpoint`, and `GET /<sha256(origin) hex>/checkpoint` for
//! monitors) with tlog-cosignature's `cosignature/v1` and works with any log that follows
//! those specifications.
//!
//! `Witness` owns the logic and the durable state (one file per log, replaced atomically and
//! fsynced before a cosignature is returned); `http` serves it; `client` is the log's side,
//! which the centre's engine uses; `config` reads the witness's own configuration file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::ledger::checkpoint::{self, Checkpoint, NoteError, Verifier};
use crate::ledger::cosignature::{Cosigner, WitnessKey};
use crate::ledger::merkle::{self, Hash};

pub mod client;
pub mod config;
mod http;
mod request;

pub use http::{Running, serve};
pub use request::{AddCheckpoint, PROOF_LINES_MAX, parse_add_checkpoint};

/// Why a checkpoint was not cosigned, each with the HTTP status tlog-witness gives it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the body is not an add-checkpoint request, or its old size exceeds the new.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 404: no log with this origin is known to this witness.
    #[error("unknown log origin")]
    UnknownLog,
    /// 403: no signature by the log's key verifies (or one by its key fails).
    #[error("the log's signature does not verify: {0}")]
    Forbidden(NoteError),
    /// 409: the old size is not the size this witness last cosigned, which it returns.
    #[error("the old size is not the size last cosigned ({0})")]
    Conflict(u64),
    /// 422: the checkpoint does not extend the one last cosigned.
    #[error("not consistent with the checkpoint last cosigned: {0}")]
    Inconsistent(String),
    /// 500: the new state could not be stored; nothing was cosigned.
    #[error("state not stored: {0}")]
    Storage(String),
}

impl Refusal {
    /// The HTTP status tlog-witness assigns.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownLog => 404,
            Refusal::Conflict(_) => 409,
            Refusal::Inconsistent(_) => 422,
            Refusal::Storage(_) => 500,
        }
    }
}

/// A log this witness knows: its origin and the keys its checkpoints are signed with.
#[derive(Clone, Debug)]
pub struct KnownLog {
    pub origin: String,
    pub keys: Vec<Verifier>,
}

/// The latest checkpoint cosigned for one log.
#[derive(Clone, Debug)]
struct Latest {
    size: u64,
    root: Hash,
    /// The log's note with this witness's cosignature line: what monitors fetch.
    note: String,
}

/// Why a witness cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {0} does not verify with the log's key and this witness's key ({1}): it was \
         changed or belongs to another witness; restore it from a backup"
    )]
    Damaged(PathBuf, String),
}

/// The witness: its key, the logs it knows and the latest checkpoint of each.
pub struct Witness {
    cosigner: Cosigner,
    key: WitnessKey,
    logs: HashMap<String, KnownLog>,
    /// Per origin; held across the size check and the persist, as the spec requires, so two
    /// requests can never roll the state back.
    latest: Mutex<HashMap<String, Latest>>,
    state_dir: PathBuf,
    /// Unix seconds: the time each cosignature states.
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl Witness {
    /// Opens the state directory (creating it), reading and checking every log's state file.
    pub fn open(
        cosigner: Cosigner,
        logs: Vec<KnownLog>,
        state_dir: &Path,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Self, OpenError> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
        let key = cosigner.key();
        let mut latest = HashMap::new();
        for log in &logs {
            let path = state_dir.join(state_file(&log.origin));
            let note = match std::fs::read_to_string(&path) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &path)(e)),
            };
            let damaged = |why: String| OpenError::Damaged(path.clone(), why);
            // Our own cosignature vouches for the state; the log's signature may no longer
            // verify after the log rotated its key out of this configuration.
            match key.check(&note) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(damaged("no cosignature by this witness".into())),
                Err(e) => return Err(damaged(e.to_string())),
            }
            let cp = checkpoint::parse_unverified(&note)
                .ok_or_else(|| damaged("not a checkpoint".into()))?;
            if let Err(e) = open_log_note(&note, log) {
                tracing::warn!(origin = %log.origin, error = %e,
                    "the stored checkpoint's log signature does not verify with the keys \
                     configured now; kept, on this witness's own cosignature");
            }
            latest.insert(
                log.origin.clone(),
                Latest {
                    size: cp.size,
                    root: cp.root,
                    note,
                },
            );
        }
        Ok(Witness {
            cosigner,
            key,
            logs: logs.into_iter().map(|l| (l.origin.clone(), l)).collect(),
            latest: Mutex::new(latest),
            state_dir: state_dir.to_owned(),
            clock,
        })
    }

    /// This witness's public key (what logs and auditors configure).
    pub fn key(&self) -> &WitnessKey {
        &self.key
    }

    /// tlog-witness `add-checkpoint`: checks the request and, when it extends what was last
    /// cosigned, stores the new checkpoint durably and returns the cosignature line.
    /// Blocking (it fsyncs).
    pub fn add_checkpoint(&self, req: &AddCheckpoint) -> Result<String, Refusal> {
        let origin = req.note.split('\n').next().unwrap_or_default();
        let log = self.logs.get(origin).ok_or(Refusal::UnknownLog)?;
        let (cp, text) = open_log_text(&req.note, log).map_err(Refusal::Forbidden)?;
        if req.old > cp.size {
            return Err(Refusal::BadRequest(format!(
                "old size {} exceeds the checkpoint's size {}",
                req.old, cp.size
            )));
        }
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = latest.get(origin);
        let recorded_size = recorded.map_or(0, |l| l.size);
        if req.old != recorded_size {
            return Err(Refusal::Conflict(recorded_size));
        }
        check_extends(recorded.map(|l| (l.size, l.root)), &cp, &req.proof)
            .map_err(Refusal::Inconsistent)?;
        // The spec forbids a zero timestamp.
        let line = self.cosigner.cosign_text(text, (self.clock)().max(1));
        // Stored and served to monitors: the text, the log's signatures that verified, and
        // ours; nothing else the request carried (lines by unknown keys, or claiming ours).
        let mut note = format!("{text}\n");
        for raw in req.note[text.len() + 1..].lines() {
            let owned_by_log = checkpoint::parse_sig_line_owner(raw).is_some_and(|(name, id)| {
                log.keys
                    .iter()
                    .any(|k| k.name() == name && k.key_id() == id)
            });
            if owned_by_log {
                note.push_str(raw);
                note.push('\n');
            }
        }
        note.push_str(&line);
        self.persist(origin, &note)
            .map_err(|e| Refusal::Storage(e.to_string()))?;
        latest.insert(
            origin.to_owned(),
            Latest {
                size: cp.size,
                root: cp.root,
                note,
            },
        );
        Ok(line)
    }

    /// The latest cosigned checkpoint of the log whose origin hashes to `origin_hex`, for
    /// monitors (tlog-witness's monitoring interface).
    pub fn latest_note(&self, origin_hex: &str) -> Option<String> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .iter()
            .find(|(origin, _)| origin_hash(origin) == origin_hex)
            .map(|(_, l)| l.note.clone())
    }

    /// Replaces the log's state file atomically: write a temporary file, fsync it, rename it
    /// over the old one, fsync the directory.
    fn persist(&self, origin: &str, note: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let name = state_file(origin);
        let tmp = self.state_dir.join(format!("{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(note.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.state_dir.join(&name))?;
        std::fs::File::open(&self.state_dir)?.sync_all()
    }
}

/// Lowercase hex SHA-256 of an origin: the monitoring path's name for a log.
pub fn origin_hash(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

/// The state file of a log: named by its origin's hash, so any origin makes a safe name.
fn state_file(origin: &str) -> String {
    format!("{}.checkpoint", origin_hash(origin))
}

/// Opens a note signed by the log: at least one of its keys must have signed it, and a line
/// claiming any of its keys that does not verify makes the note malformed (403), whatever
/// else verified.
fn open_log_text<'a>(note: &'a str, log: &KnownLog) -> Result<(Checkpoint, &'a str), NoteError> {
    let mut opened = None;
    let mut last = NoteError::MissingSignature;
    for key in &log.keys {
        match checkpoint::open_any(note, key) {
            Ok((cp, text)) if cp.origin == log.origin => opened = Some((cp, text)),
            Ok(_) => last = NoteError::OriginMismatch,
            Err(e @ (NoteError::InvalidSignature | NoteError::DuplicateSignature)) => {
                return Err(e);
            }
            Err(NoteError::MissingSignature) => {}
            Err(e) => last = e,
        }
    }
    opened.ok_or(last)
}

fn open_log_note(note: &str, log: &KnownLog) -> Result<Checkpoint, NoteError> {
    open_log_text(note, log).map(|(cp, _)| cp)
}

/// The consistency rules of add-checkpoint, once the old size matches what was recorded.
fn check_extends(
    recorded: Option<(u64, Hash)>,
    cp: &Checkpoint,
    proof: &[Hash],
) -> Result<(), String> {
    if cp.size == 0 && cp.root != merkle::empty_root() {
        return Err("a checkpoint of size 0 must have the empty tree's root".into());
    }
    match recorded {
        None | Some((0, _)) => {
            if !proof.is_empty() {
                return Err("the proof from size 0 must be empty".into());
            }
            Ok(())
        }
        Some((size, root)) => merkle::verify_consistency(size, cp.size, proof, &root, &cp.root)
            .map_err(|e| format!("from size {size} to {}: {e}", cp.size)),
    }
}

#[cfg(test)]
mod tests;
