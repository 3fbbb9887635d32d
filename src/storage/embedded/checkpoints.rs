//! The checkpoint log of the embedded backend: every signed note in `checkpoints.log` beside
//! the ledger's segments, framed like records, fdatasync'd before a checkpoint is published;
//! and the witnesses' cosignatures in `cosignatures.log`, framed the same way, each entry the
//! checkpoint's number, a space and the signature line.

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
pub const COSIGNATURES_NAME: &str = "cosignatures.log";
/// Segment-header magic of the checkpoint log.
const MAGIC_FIRST: u64 = 0;

/// The checkpoint log file, open for append.
pub struct FileCheckpointLog {
    path: PathBuf,
    /// Held while appending, so notes are written whole and in order.
    file: Mutex<File>,
    cosignatures_path: PathBuf,
    /// The cosignature log, with how many entries it holds (each frame's index) once read.
    cosignatures: Mutex<(File, Option<u64>)>,
}

impl FileCheckpointLog {
    /// Opens (or creates) `checkpoints.log` in the ledger directory `dir` for append. A torn
    /// final note left by a crash is cut off by `notes`, which the engine reads before it
    /// appends (appends go to the end of the file as it is then).
    pub fn open(dir: &Path) -> Result<Self, CheckpointLogError> {
        let path = dir.join(LOG_NAME);
        let file = open_for_append(&path)?;
        let cosignatures_path = dir.join(COSIGNATURES_NAME);
        let cosignatures = open_for_append(&cosignatures_path)?;
        Ok(FileCheckpointLog {
            path,
            file: Mutex::new(file),
            cosignatures_path,
            cosignatures: Mutex::new((cosignatures, None)),
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

    fn cosignatures(&self) -> Result<Vec<(u64, String)>, StorageError> {
        let mut log = self.cosignatures.lock().unwrap_or_else(|e| e.into_inner());
        let read = read_cosignatures(&self.cosignatures_path, true).map_err(|e| match e {
            e @ CheckpointLogError::Io { .. } => {
                StorageError::unavailable("read cosignature log", e)
            }
            e => StorageError::damaged("read cosignature log", e),
        })?;
        log.1 = Some(read.len() as u64);
        Ok(read)
    }

    fn add_cosignature(&self, seq: u64, line: &str) -> Result<(), StorageError> {
        let mut log = self.cosignatures.lock().unwrap_or_else(|e| e.into_inner());
        let count = match log.1 {
            Some(n) => n,
            // Not read at start: count what is there, so the frame gets its right index.
            None => read_cosignatures(&self.cosignatures_path, false)
                .map_err(|e| StorageError::damaged("read cosignature log", e))?
                .len() as u64,
        };
        let mut buf = Vec::new();
        frame::encode(count, format!("{seq} {line}").as_bytes(), &mut buf);
        log.0
            .write_all(&buf)
            .and_then(|()| log.0.sync_data())
            .map_err(|e| StorageError::unavailable("write cosignature log", e))?;
        log.1 = Some(count + 1);
        Ok(())
    }
}

/// Reads every cosignature in a cosignature log as (checkpoint number, line); `repair` as for
/// `read_log`.
pub fn read_cosignatures(
    path: &std::path::Path,
    repair: bool,
) -> Result<Vec<(u64, String)>, CheckpointLogError> {
    read_log(path, repair)?
        .into_iter()
        .enumerate()
        .map(|(n, entry)| {
            entry
                .split_once(' ')
                .and_then(|(seq, line)| Some((seq.parse().ok()?, line.to_owned())))
                .ok_or_else(|| CheckpointLogError::Damaged(n as u64, "not a cosignature".into()))
        })
        .collect()
}

/// Reads every signed note in a checkpoint log (or every entry of a cosignature log). With
/// `repair`, a torn final frame (a crash while appending) is cut off; otherwise it is reported.
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
