//! The checkpoint log of the embedded backend: every signed note in `checkpoints.log` beside
//! the ledger's segments, framed like records, fdatasync'd before a checkpoint is published.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::frame::{self, Decoded, SEGMENT_HEADER_LEN};
use crate::storage::{CheckpointLog, StorageError};

/// Why the checkpoint log cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointLogError {
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint log damaged at checkpoint {0}: {1}")]
    Damaged(u64, String),
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointLogError {
    move |source| CheckpointLogError::Io { action, source }
}

pub const LOG_NAME: &str = "checkpoints.log";
/// Segment-header magic of the checkpoint log.
const MAGIC_FIRST: u64 = 0;

/// The checkpoint log file, open for append.
pub struct FileCheckpointLog {
    path: PathBuf,
    /// Held while appending, so notes are written whole and in order.
    file: Mutex<File>,
}

impl FileCheckpointLog {
    /// Opens (or creates) `checkpoints.log` in the ledger directory `dir` for append. A torn
    /// final note left by a crash is cut off by `notes`, which the engine reads before it
    /// appends (appends go to the end of the file as it is then).
    pub fn open(dir: &Path) -> Result<Self, CheckpointLogError> {
        let path = dir.join(LOG_NAME);
        let file = open_for_append(&path)?;
        Ok(FileCheckpointLog {
            path,
            file: Mutex::new(file),
        })
    }
}

impl CheckpointLog for FileCheckpointLog {
    fn notes(&self) -> Result<Vec<String>, StorageError> {
        // The one read of the log at start, so it also cuts a torn tail.
        read_log(&self.path, true).map_err(|e| match e {
            e @ CheckpointLogError::Io { .. } => {
                StorageError::unavailable("read checkpoint log", e)
            }
            e => StorageError::damaged("read checkpoint log", e),
        })
    }

    fn append(&self, seq: u64, note: &str) -> Result<(), StorageError> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = Vec::new();
        frame::encode(seq, note.as_bytes(), &mut buf);
        file.write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(|e| StorageError::unavailable("write checkpoint log", e))
    }
}

/// Reads every signed note in a checkpoint log. With `repair`, a torn final frame (a crash
/// while appending) is cut off; otherwise it is reported.
pub fn read_log(path: &std::path::Path, repair: bool) -> Result<Vec<String>, CheckpointLogError> {
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
        return Err(CheckpointLogError::Damaged(0, "bad header".into()));
    }
    let mut notes = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let seq = notes.len() as u64;
        match frame::decode(&bytes[pos..], seq) {
            Decoded::Frame { payload, len, .. } => {
                let note = String::from_utf8(payload.to_vec())
                    .map_err(|_| CheckpointLogError::Damaged(seq, "not UTF-8".into()))?;
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
                return Err(CheckpointLogError::Damaged(seq, "torn final frame".into()));
            }
            Decoded::Corrupt(what) => return Err(CheckpointLogError::Damaged(seq, what.into())),
        }
    }
    Ok(notes)
}

fn open_for_append(path: &PathBuf) -> Result<File, CheckpointLogError> {
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
