//! The group-commit writer: one thread that takes every batch queued since its last write,
//! writes them in one go, calls fdatasync once, and then publishes the durable record count.
//! Callers are answered only when that count passes their records, so one fsync answers many.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::watch;

use super::frame::{self, FRAME_HEADER_LEN};
use super::merkle::{self, Hash};
use super::segments::{Ledger, LedgerError, Segment, Tail, io, write_durable};

/// What the writer has made durable: a record count, or the error that stopped it. After an
/// error the writer writes nothing more, so the log never gets a gap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurableState {
    Count(u64),
    Failed(String),
}

/// Watches the durable record count.
pub type Durable = watch::Receiver<DurableState>;

/// The only way to add records. Indexes are given out here, in order; records are sent to the
/// writer thread on `flush`.
pub struct Appender {
    tx: mpsc::Sender<Vec<(u64, Vec<u8>)>>,
    next: u64,
    buf: Vec<(u64, Vec<u8>)>,
}

impl Appender {
    /// The index the next appended record will get (also: how many records there will be).
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Queues a record and returns its index. It is durable once the durable count exceeds it.
    pub fn append(&mut self, payload: Vec<u8>) -> u64 {
        assert!(
            payload.len() <= frame::PAYLOAD_BYTES_MAX as usize,
            "record of {} bytes exceeds the frame limit",
            payload.len()
        );
        let index = self.next;
        self.next += 1;
        self.buf.push((index, payload));
        index
    }

    /// Hands everything appended so far to the writer thread.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.buf);
        self.tx
            .send(batch)
            .map_err(|_| LedgerError::WriterFailed("writer thread has stopped".into()))
    }
}

pub(crate) fn start(
    ledger: Arc<Ledger>,
    tail: Tail,
    segment_bytes_max: u64,
) -> Result<(Appender, Durable), LedgerError> {
    let (tx, rx) = mpsc::channel::<Vec<(u64, Vec<u8>)>>();
    let (durable_tx, durable_rx) = watch::channel(DurableState::Count(tail.next_index));
    let next = tail.next_index;
    std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || {
            let mut w = Writer {
                ledger,
                file: tail.file,
                len: tail.len,
                segment_bytes_max,
                buf: Vec::new(),
                pending: Vec::new(),
                leaves: Vec::new(),
            };
            while let Ok(first) = rx.recv() {
                let mut batches = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batches.push(more);
                }
                match w.write(batches) {
                    Ok(count) => {
                        durable_tx.send_replace(DurableState::Count(count));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "ledger write failed; refusing all further writes");
                        durable_tx.send_replace(DurableState::Failed(e.to_string()));
                        return;
                    }
                }
            }
        })
        .map_err(io("start ledger writer thread"))?;
    Ok((
        Appender {
            tx,
            next,
            buf: Vec::new(),
        },
        durable_rx,
    ))
}

struct Writer {
    ledger: Arc<Ledger>,
    /// The last segment, open for append.
    file: File,
    /// Its length in bytes.
    len: u64,
    segment_bytes_max: u64,
    /// Frames not yet written to `file`.
    buf: Vec<u8>,
    /// Offsets of the frames in `buf`, published once they are durable.
    pending: Vec<u64>,
    /// Leaf hashes of the frames in `buf`, added to the tree once they are durable.
    leaves: Vec<Hash>,
}

impl Writer {
    /// Writes the batches, rolling to a new segment when one is full, and returns the durable
    /// record count.
    fn write(&mut self, batches: Vec<Vec<(u64, Vec<u8>)>>) -> Result<u64, LedgerError> {
        let mut count = 0;
        for (index, payload) in batches.into_iter().flatten() {
            let frame_len = (FRAME_HEADER_LEN + payload.len()) as u64;
            let used = self.len + self.buf.len() as u64;
            if used + frame_len > self.segment_bytes_max && used > frame::SEGMENT_HEADER_LEN as u64
            {
                self.sync()?;
                let seg = create_segment(&self.ledger.dir, index)?;
                self.file = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(io("open new ledger segment"))?;
                self.len = frame::SEGMENT_HEADER_LEN as u64;
                self.ledger
                    .segments
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(seg);
            }
            self.pending.push(self.len + self.buf.len() as u64);
            self.leaves.push(merkle::leaf_hash(&payload));
            frame::encode(index, &payload, &mut self.buf);
            count = index + 1;
        }
        self.sync()?;
        Ok(count)
    }

    /// Writes the buffered frames, fdatasyncs, and only then makes them readable.
    fn sync(&mut self) -> Result<(), LedgerError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(io("write ledger records"))?;
        self.file.sync_data().map_err(io("fdatasync ledger"))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        let mut segs = self
            .ledger
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut tree = self.ledger.tree.write().unwrap_or_else(|e| e.into_inner());
        for leaf in self.leaves.drain(..) {
            tree.push(leaf).expect("a ledger cannot hold 2^64 records");
        }
        let last = segs.last_mut().expect("the writer always has a segment");
        last.offsets.append(&mut self.pending);
        Ok(())
    }
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
    write_durable(&mut f, &frame::segment_header(first_index))
        .map_err(io("write segment header"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync ledger directory"))?;
    let file = File::open(&path).map_err(io("open new segment for reading"))?;
    Ok(Segment {
        first: first_index,
        path,
        file,
        offsets: Vec::new(),
    })
}
