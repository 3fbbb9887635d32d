//! The segment files' shared pieces, below both the reading side (`segments`) and the writer
//! (`writer`): the ledger's error type, the handle of one segment file, where the writer
//! carries on, creating a segment and writing bytes durably. It knows nothing of either side,
//! so the dependency runs one way: `writer` uses `segments` and this file, `segments` uses
//! this file only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::frame;

/// Why opening, reading or writing the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The filesystem refused an operation.
    #[error("{action}: {source}")]
    Io {
        /// What was being done, e.g. "fdatasync ledger".
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// A record fails its check somewhere a crash cannot have left it.
    #[error("ledger damaged in {segment} at byte {offset} (record {index}): {what}")]
    Damaged {
        /// The segment file's path.
        segment: String,
        /// Where in that file the bad frame starts.
        offset: u64,
        /// The index the record there should have.
        index: u64,
        /// Which check it fails.
        what: &'static str,
    },
    /// A read past the durable records.
    #[error("record {0} is not in the ledger")]
    NoSuchRecord(u64),
    /// The writer thread is gone, so nothing more can be appended.
    #[error("the ledger cannot write: {0}")]
    WriterFailed(String),
}

/// Maps an I/O error to `LedgerError::Io`, naming the `action` that failed.
pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> LedgerError {
    let action = action.into();
    move |source| LedgerError::Io { action, source }
}

/// One segment file and where each of its records starts.
pub(crate) struct Segment {
    /// The index of its first record, also in its header and its name.
    pub first: u64,
    /// Where it is, for messages and for reopening it to append.
    pub path: PathBuf,
    /// Open for reading; records are read with positioned reads, so readers share it.
    pub file: File,
    /// Byte offset of each record's frame, in index order.
    pub offsets: Vec<u64>,
}

/// Where the writer carries on after opening.
pub(crate) struct Tail {
    /// The last segment, open for append.
    pub file: File,
    /// Its length in bytes, after any torn tail was cut.
    pub len: u64,
    /// The index the next record gets: how many records the ledger holds.
    pub next_index: u64,
}

/// Creates segment `first_index` with its header, durably, and syncs the directory so the new
/// file's name survives a crash too.
pub(crate) fn create_segment(dir: &Path, first_index: u64) -> Result<Segment, LedgerError> {
    let path = dir.join(format!("{first_index:020}.seg"));
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io(format!("create {}", path.display())))?;
    let made = write_durable(&mut f, &frame::segment_header(first_index))
        .map_err(io("write segment header"))
        .and_then(|()| {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync ledger directory"))
        });
    if let Err(e) = made {
        // Otherwise the next rotation, after the disk recovers, would find the name taken.
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    let file = File::open(&path).map_err(io("open new segment for reading"))?;
    Ok(Segment {
        first: first_index,
        path,
        file,
        offsets: Vec::new(),
    })
}

/// Writes bytes and makes them durable; used for new segment headers.
pub(crate) fn write_durable(f: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    f.write_all(bytes)?;
    f.sync_data()
}
