//! The group-commit writer: one thread that takes every batch queued since its last write,
//! writes them in one go, calls fdatasync once, and then publishes the durable record count.
//! Callers are answered only when that count passes their records, so one fsync answers many.
//!
//! When a write or fdatasync fails (a full disk, an I/O error), the writer cuts the segment
//! back to its last durable length, drops the batch (none of it was acknowledged), publishes
//! `Failed` and refuses batches until a probe (a trial write and fdatasync of scratch bytes,
//! cut off again) succeeds. Nothing after the last durable record survives a failure, so the
//! log never gets a gap or a duplicate.
//!
//! Opening the ledger starts this thread, so `Ledger::open` is here: it recovers the segments
//! with `segments` and hands their tail to a new writer. The dependency is one way: this file
//! uses `segments` and `files`, neither uses this one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::watch;

use crate::storage::{Durable, DurableState, StorageError};

use super::files::{LedgerError, Tail, create_segment, io};
use super::frame::{self, FRAME_HEADER_LEN};
use super::segments::Ledger;
use crate::ledger::merkle::{self, Hash};
use crate::metrics::LedgerMetrics;

/// What the writer thread is asked to do.
enum Job {
    /// Records, and when they were handed over (for the append latency).
    Batch(Vec<(u64, Vec<u8>)>, Instant),
    /// Try a write and fdatasync; on success the writer takes batches again, starting at
    /// the durable count.
    Probe(std::sync::mpsc::Sender<Result<(), String>>),
}

/// The only way to add records. Indexes are given out here, in order; records are sent to the
/// writer thread on `flush`.
pub struct Appender {
    tx: mpsc::Sender<Job>,
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
        // Elapsed time for the append-latency metric, not a domain time.
        #[allow(clippy::disallowed_methods)]
        let handed_over = Instant::now();
        self.tx
            .send(Job::Batch(batch, handed_over))
            .map_err(|_| LedgerError::WriterFailed("writer thread has stopped".into()))
    }

    /// After a failure: forgets every record past `durable` (none was written), so the next
    /// append gets index `durable` again.
    pub fn rewind(&mut self, durable: u64) {
        self.buf.clear();
        self.next = durable;
    }

    /// After a failure: drops what was appended but not written, and asks the writer whether
    /// it can write again. Blocking (one small write and fdatasync). On success the next index
    /// is `durable`.
    pub fn probe(&mut self, durable: u64) -> Result<(), String> {
        self.buf.clear();
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx
            .send(Job::Probe(tx))
            .map_err(|_| "writer thread has stopped".to_string())?;
        rx.recv()
            .map_err(|_| "writer thread has stopped".to_string())??;
        self.next = durable;
        Ok(())
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` and starts its writer thread. A torn final
    /// record, left by a crash in the middle of a write, is cut off and logged; damage anywhere
    /// else refuses to open, since it is not what a crash leaves.
    pub fn open(
        dir: &Path,
        segment_bytes_max: u64,
    ) -> Result<(Arc<Ledger>, Appender, Durable), LedgerError> {
        Self::open_measured(dir, segment_bytes_max, LedgerMetrics::new())
    }

    /// As `open`, with the writer recording into `metrics` (the server's registry).
    pub fn open_measured(
        dir: &Path,
        segment_bytes_max: u64,
        metrics: LedgerMetrics,
    ) -> Result<(Arc<Ledger>, Appender, Durable), LedgerError> {
        let (ledger, tail) = Ledger::recover(dir)?;
        let (appender, durable) = start(ledger.clone(), tail, segment_bytes_max, metrics)?;
        Ok((ledger, appender, durable))
    }
}

/// Starts the writer thread on `tail`, the end of the ledger's last segment.
fn start(
    ledger: Arc<Ledger>,
    tail: Tail,
    segment_bytes_max: u64,
    metrics: LedgerMetrics,
) -> Result<(Appender, Durable), LedgerError> {
    let (tx, rx) = mpsc::channel::<Job>();
    let (durable_tx, durable_rx) = watch::channel(DurableState::Count(tail.next_index));
    let next = tail.next_index;
    metrics.durable(next);
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
                engine_records: Vec::new(),
                metrics,
            };
            // Whether the last write failed and no probe has succeeded since.
            let mut failed = false;
            // When each batch of this round was handed over; kept to reuse its capacity.
            let mut queued: Vec<Instant> = Vec::new();
            while let Ok(first) = rx.recv() {
                let mut batches = Vec::new();
                queued.clear();
                let mut probes = Vec::new();
                for job in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                    match job {
                        // Batches sent before the engine saw the failure were never
                        // acknowledged; they are dropped with it.
                        Job::Batch(b, at) if !failed => {
                            batches.push(b);
                            queued.push(at);
                        }
                        Job::Batch(..) => {}
                        Job::Probe(reply) => probes.push(reply),
                    }
                }
                if !batches.is_empty() {
                    match w.write(batches) {
                        Ok(count) => {
                            w.metrics.durable(count);
                            // Elapsed time for the append-latency metric.
                            #[allow(clippy::disallowed_methods)]
                            let now = Instant::now();
                            for at in &queued {
                                w.metrics.appended(now.duration_since(*at));
                            }
                            durable_tx.send_replace(DurableState::Count(count));
                        }
                        Err(e) => {
                            failed = true;
                            let count = w.recover();
                            w.metrics.durable(count);
                            tracing::error!(error = %e, durable = count, "ledger write failed; refusing writes until the disk can write again");
                            durable_tx.send_replace(DurableState::Failed {
                                count,
                                error: Arc::new(StorageError::unavailable("write ledger batch", e)),
                            });
                        }
                    }
                }
                for reply in probes {
                    let r = w.probe();
                    if r.is_ok() && failed {
                        failed = false;
                        let count = w.ledger.len();
                        tracing::info!(durable = count, "ledger writes again");
                        w.metrics.durable(count);
                        durable_tx.send_replace(DurableState::Count(count));
                    }
                    let _ = reply.send(r);
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
    /// Indexes of the engine records among the frames in `buf`, made known with them.
    engine_records: Vec<u64>,
    /// Batch sizes, fdatasync times, append latency and the durable count.
    metrics: LedgerMetrics,
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
            if crate::ledger::record::is_engine(&payload) {
                self.engine_records.push(index);
            }
            frame::encode(index, &payload, &mut self.buf);
            count = index + 1;
        }
        self.sync()?;
        Ok(count)
    }

    /// After a failed write: forgets the unwritten frames and cuts the file back to its last
    /// durable length (best effort: if even that fails, the next open cuts the torn tail).
    /// Returns the durable record count.
    fn recover(&mut self) -> u64 {
        self.buf.clear();
        self.pending.clear();
        self.leaves.clear();
        self.engine_records.clear();
        if let Err(e) = self
            .file
            .set_len(self.len)
            .and_then(|()| self.file.sync_all())
        {
            tracing::warn!(error = %e, "could not cut the segment back after a failed write");
        }
        self.ledger.len()
    }

    /// Checks the disk can take a write again: writes and fdatasyncs a block past the end of
    /// the segment, then cuts it off again.
    fn probe(&mut self) -> Result<(), String> {
        let r = (|| {
            fault(&self.ledger)?;
            self.file.write_all(&[0u8; 4096])?;
            self.file.sync_data()?;
            self.file.set_len(self.len)?;
            self.file.sync_all()
        })();
        if r.is_err() {
            let _ = self.file.set_len(self.len);
        }
        r.map_err(|e| e.to_string())
    }

    /// Writes the buffered frames, fdatasyncs, and only then makes them readable.
    fn sync(&mut self) -> Result<(), LedgerError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        fault(&self.ledger).map_err(io("write ledger records"))?;
        self.file
            .write_all(&self.buf)
            .map_err(io("write ledger records"))?;
        // Elapsed time for the fdatasync metric.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        self.file.sync_data().map_err(io("fdatasync ledger"))?;
        self.metrics.synced(self.pending.len(), started.elapsed());
        self.len += self.buf.len() as u64;
        self.buf.clear();
        let mut segs = self
            .ledger
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut tree = self.ledger.tree.write().unwrap_or_else(|e| e.into_inner());
        for leaf in self.leaves.drain(..) {
            // The tree refuses only a 2^64th leaf; indexes are u64, so no ledger gets there.
            #[allow(clippy::expect_used)]
            tree.push(leaf).expect("a ledger cannot hold 2^64 records");
        }
        // Opening creates a segment when there is none, and rotation adds before it removes.
        #[allow(clippy::expect_used)]
        let last = segs.last_mut().expect("the writer always has a segment");
        last.offsets.append(&mut self.pending);
        self.ledger
            .engine_records
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .append(&mut self.engine_records);
        Ok(())
    }
}

/// The fault a test injected, if any: lets tests make the disk "full" without a small
/// filesystem. Always `Ok` unless `Ledger::inject_write_faults(true)` was called.
fn fault(ledger: &Ledger) -> std::io::Result<()> {
    if ledger.faults.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "injected fault: no space left on device",
        ));
    }
    Ok(())
}
