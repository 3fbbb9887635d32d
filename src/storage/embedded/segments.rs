//! The reading side of the ledger: `Ledger`, the durable records and the Merkle tree over them.
//! It scans the segment files at start (checking every frame, cutting a torn tail), reads
//! records by index and answers tree questions (roots, proofs). It never writes records and
//! never imports `writer`: the writer adds to a `Ledger`, and `Ledger::open`, which starts the
//! writer, lives there.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::files::{LedgerError, Segment, Tail, create_segment, io, write_durable};
use super::frame::{self, Decoded, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::ledger::merkle::{self, Hash, ProofError, Tree};

/// The durable records, readable by index, and the Merkle tree over them. Only the writer
/// thread adds to either, and only after fdatasync, so a reader never sees a record that a
/// crash could take back.
pub struct Ledger {
    pub(crate) dir: PathBuf,
    pub(crate) segments: RwLock<Vec<Segment>>,
    /// Every complete-subtree hash, kept in memory (64 bytes per record in all) and rebuilt at
    /// start from the records, which opening reads anyway to check them.
    pub(crate) tree: RwLock<Tree>,
    /// Indexes of the durable engine records (a few a day), found at start as the records are
    /// read and added by the writer: the engine's history is then read without a scan.
    pub(crate) engine_records: RwLock<Vec<u64>>,
    /// Set by tests to make every write fail as on a full disk.
    pub(crate) faults: std::sync::atomic::AtomicBool,
    /// `LOCK` in the ledger directory, locked while this ledger is open: one process at a time
    /// may read, cut or append to a ledger. Released when the file closes (with the last `Arc`,
    /// or by the kernel when the process dies).
    _lock: fs::File,
}

/// How long opening waits for another handle's lock (one being dropped, as at a restart in
/// the same process) before it refuses.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes `LOCK` in `dir`, waiting up to `LOCK_WAIT` for a handle being let go.
fn lock(dir: &Path) -> Result<fs::File, LedgerError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("open {}", path.display())))?;
    #[allow(clippy::disallowed_methods)] // a wall-clock wait for another handle, not domain time
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the next one refused.
                use std::io::Write;
                let mut f = &file;
                let _ = f.set_len(0);
                let _ = writeln!(f, "{}", std::process::id());
                return Ok(file);
            }
            Err(fs::TryLockError::WouldBlock) => {
                #[allow(clippy::disallowed_methods)]
                let now = std::time::Instant::now();
                if now >= deadline {
                    let pid = fs::read_to_string(&path).unwrap_or_default();
                    let data = dir.parent().unwrap_or(dir);
                    return Err(LedgerError::Io {
                        action: format!("lock {}", path.display()),
                        source: std::io::Error::other(format!(
                            "data directory {} is in use (pid {}): another server or tool has \
                             it open; stop it first",
                            data.display(),
                            pid.trim()
                        )),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io(format!("lock {}", path.display()))(e));
            }
        }
    }
}

impl Ledger {
    /// Reads the ledger in `dir` (creating it if need be), checking every record and
    /// rebuilding the tree, and says where the writer carries on. A torn final record, left
    /// by a crash in the middle of a write, is cut off and logged; damage anywhere else
    /// refuses to open, since it is not what a crash leaves. `Ledger::open` (in `writer`)
    /// calls this and then starts the writer thread on the tail.
    pub(crate) fn recover(dir: &Path) -> Result<(Arc<Ledger>, Tail), LedgerError> {
        fs::create_dir_all(dir)
            .map_err(io(format!("create ledger directory {}", dir.display())))?;
        // Before anything is read or cut: a second server must not touch this ledger at all.
        let lock = lock(dir)?;
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io(format!("list ledger directory {}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        names.sort();
        let mut segments = Vec::new();
        let mut tree = Tree::new();
        let mut engine_records = Vec::new();
        let mut next_index = 0u64;
        let count = names.len();
        for (i, path) in names.into_iter().enumerate() {
            let last = i + 1 == count;
            let seg = scan_segment(&path, next_index, last, &mut tree, &mut engine_records)?;
            next_index = seg.first + seg.offsets.len() as u64;
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(create_segment(dir, 0)?);
        }
        // One was created above when the directory held none.
        #[allow(clippy::expect_used)]
        let last = segments.last().expect("at least one segment");
        let file = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(io(format!("open {} for append", last.path.display())))?;
        let len = file
            .metadata()
            .map_err(io("stat last ledger segment"))?
            .len();
        let ledger = Arc::new(Ledger {
            dir: dir.to_owned(),
            segments: RwLock::new(segments),
            tree: RwLock::new(tree),
            engine_records: RwLock::new(engine_records),
            faults: std::sync::atomic::AtomicBool::new(false),
            _lock: lock,
        });
        let tail = Tail {
            file,
            len,
            next_index,
        };
        Ok((ledger, tail))
    }

    /// How many records are durable.
    pub fn len(&self) -> u64 {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segs.last()
            .map(|s| s.first + s.offsets.len() as u64)
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the payload of record `index`, checking its frame again on the way out.
    pub fn read(&self, index: u64) -> Result<Vec<u8>, LedgerError> {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let pos = segs.partition_point(|s| s.first <= index);
        let seg = pos
            .checked_sub(1)
            .map(|p| &segs[p])
            .ok_or(LedgerError::NoSuchRecord(index))?;
        let offset = *seg
            .offsets
            .get((index - seg.first) as usize)
            .ok_or(LedgerError::NoSuchRecord(index))?;
        let mut header = [0u8; FRAME_HEADER_LEN];
        seg.file
            .read_exact_at(&mut header, offset)
            .map_err(io("read ledger frame header"))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if len > frame::PAYLOAD_BYTES_MAX {
            return Err(damaged(&seg.path, offset, index, "length out of range"));
        }
        let mut buf = vec![0u8; FRAME_HEADER_LEN + len as usize];
        seg.file
            .read_exact_at(&mut buf, offset)
            .map_err(io("read ledger frame"))?;
        match frame::decode(&buf, index) {
            Decoded::Frame { payload, .. } => Ok(payload.to_vec()),
            Decoded::Incomplete => Err(damaged(&seg.path, offset, index, "frame cut short")),
            Decoded::Corrupt(what) => Err(damaged(&seg.path, offset, index, what)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every ledger write fail (as on a full disk) until called with `false`: for tests
    /// of storage faults, in place of a small filesystem.
    #[doc(hidden)]
    pub fn inject_write_faults(&self, on: bool) {
        self.faults.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The indexes of the durable engine records from `from` on.
    pub fn engine_records_from(&self, from: u64) -> Vec<u64> {
        let all = self
            .engine_records
            .read()
            .unwrap_or_else(|e| e.into_inner());
        all[all.partition_point(|&i| i < from)..].to_vec()
    }

    /// Leaves in the Merkle tree: the durable record count.
    pub fn tree_size(&self) -> u64 {
        self.tree.read().unwrap_or_else(|e| e.into_inner()).size()
    }

    /// The RFC 6962 root of the first `size` records.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.tree
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .root_at(size)
    }

    /// The inclusion proof of record `index` in the tree of `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.tree
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .inclusion_proof(index, size)
    }

    /// The consistency proof between the trees of `size1` and `size2` records.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        self.tree
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .consistency_proof(size1, size2)
    }

    /// The tree size and root, read together.
    pub fn head(&self) -> (u64, Hash) {
        let t = self.tree.read().unwrap_or_else(|e| e.into_inner());
        (t.size(), t.root())
    }
}

/// Adds a record's leaf hash to the tree.
pub(crate) fn push_leaf(tree: &mut Tree, payload: &[u8]) {
    // The tree refuses only a 2^64th leaf; indexes are u64, so no ledger gets there.
    #[allow(clippy::expect_used)]
    tree.push(merkle::leaf_hash(payload))
        .expect("a ledger cannot hold 2^64 records");
}

fn damaged(path: &Path, offset: u64, index: u64, what: &'static str) -> LedgerError {
    LedgerError::Damaged {
        segment: path.display().to_string(),
        offset,
        index,
        what,
    }
}

/// Reads a segment, checking every frame. In the last segment an incomplete or unreadable
/// final frame is a torn write: the file is cut back to the last whole record.
fn scan_segment(
    path: &Path,
    expected_first: u64,
    last: bool,
    tree: &mut Tree,
    engine_records: &mut Vec<u64>,
) -> Result<Segment, LedgerError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io(format!("read {}", path.display())))?;
    if last && frame::parse_segment_header(&bytes).is_none() && bytes.iter().all(|&b| b == 0) {
        // A crash while creating the segment: the file exists but its header never reached
        // the disk, so it holds no record. Write the header it should have.
        tracing::warn!(segment = %path.display(), "rewriting the header of an empty segment left by a crash");
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(io("open empty segment"))?;
        write_durable(&mut f, &frame::segment_header(expected_first))
            .map_err(io("rewrite segment header"))?;
        bytes = frame::segment_header(expected_first).to_vec();
    }
    let first = frame::parse_segment_header(&bytes)
        .ok_or_else(|| damaged(path, 0, expected_first, "bad segment header"))?;
    if first != expected_first {
        return Err(damaged(
            path,
            0,
            expected_first,
            "segment does not continue the previous one",
        ));
    }
    let mut offsets = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let index = first + offsets.len() as u64;
        match frame::decode(&bytes[pos..], index) {
            Decoded::Frame { len, payload, .. } => {
                offsets.push(pos as u64);
                push_leaf(tree, payload);
                if crate::ledger::record::is_engine(payload) {
                    engine_records.push(index);
                }
                pos += len;
            }
            Decoded::Incomplete if last => {
                truncate_torn(path, pos as u64, index, "incomplete final frame")?;
                break;
            }
            Decoded::Corrupt(what) if last && frame::is_torn_tail(&bytes[pos..]) => {
                truncate_torn(path, pos as u64, index, what)?;
                break;
            }
            Decoded::Incomplete => return Err(damaged(path, pos as u64, index, "frame cut short")),
            Decoded::Corrupt(what) => return Err(damaged(path, pos as u64, index, what)),
        }
    }
    let file = File::open(path).map_err(io(format!("open {}", path.display())))?;
    Ok(Segment {
        first,
        path: path.to_owned(),
        file,
        offsets,
    })
}

fn truncate_torn(path: &Path, at: u64, index: u64, what: &str) -> Result<(), LedgerError> {
    tracing::warn!(
        segment = %path.display(),
        offset = at,
        record = index,
        what,
        "cutting a torn final record left by a crash; it was never acknowledged"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open torn segment"))?;
    f.set_len(at).map_err(io("truncate torn segment"))?;
    f.sync_all().map_err(io("sync truncated segment"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::storage::embedded::DurableState;

    async fn wait(durable: &mut crate::storage::embedded::Durable, n: u64) {
        durable
            .wait_for(|s| matches!(s, DurableState::Count(c) if *c >= n))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn records_roll_over_segments_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let payload = |i: u64| {
            format!("record number {i} ")
                .repeat((i % 5 + 1) as usize)
                .into_bytes()
        };
        {
            let (ledger, mut app, mut durable) = Ledger::open(dir.path(), 256).unwrap();
            for i in 0..40 {
                assert_eq!(app.append(payload(i)), i);
                if i % 7 == 0 {
                    app.flush().unwrap();
                }
            }
            app.flush().unwrap();
            wait(&mut durable, 40).await;
            assert_eq!(ledger.len(), 40);
            for i in 0..40 {
                assert_eq!(ledger.read(i).unwrap(), payload(i));
            }
            assert!(matches!(
                ledger.read(40),
                Err(LedgerError::NoSuchRecord(40))
            ));
        }
        let segments = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(
            segments > 5,
            "small segments must roll over, got {segments}"
        );
        let (ledger, mut app, mut durable) = Ledger::open(dir.path(), 256).unwrap();
        assert_eq!(ledger.len(), 40);
        assert_eq!(app.next_index(), 40);
        app.append(b"after reopening".to_vec());
        app.flush().unwrap();
        wait(&mut durable, 41).await;
        for i in 0..40 {
            assert_eq!(ledger.read(i).unwrap(), payload(i));
        }
        assert_eq!(ledger.read(40).unwrap(), b"after reopening");
    }

    #[tokio::test]
    async fn a_missing_segment_in_the_middle_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_l, mut app, mut durable) = Ledger::open(dir.path(), 128).unwrap();
            for i in 0..20u8 {
                app.append(vec![i; 60]);
            }
            app.flush().unwrap();
            wait(&mut durable, 20).await;
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        std::fs::remove_file(&names[2]).unwrap();
        let err = Ledger::open(dir.path(), 128)
            .err()
            .expect("a gap must not open");
        assert!(err.to_string().contains("does not continue"), "{err}");
    }

    async fn three_records(dir: &Path) {
        let (_l, mut app, mut durable) = Ledger::open(dir, 1 << 20).unwrap();
        for i in 0..3u8 {
            app.append(vec![i; 10]);
        }
        app.flush().unwrap();
        wait(&mut durable, 3).await;
    }

    async fn reopens_with_three(dir: &Path) {
        let (ledger, mut app, mut durable) = Ledger::open(dir, 1 << 20).unwrap();
        assert_eq!(ledger.len(), 3);
        app.append(b"next".to_vec());
        app.flush().unwrap();
        wait(&mut durable, 4).await;
        assert_eq!(ledger.read(3).unwrap(), b"next");
        assert_eq!(ledger.read(2).unwrap(), vec![2u8; 10]);
    }

    #[tokio::test]
    async fn a_zero_filled_tail_is_a_crash_leftover() {
        let dir = tempfile::tempdir().unwrap();
        three_records(dir.path()).await;
        // The file grew but its data never reached the disk.
        let seg = dir.path().join(format!("{:020}.seg", 0));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        reopens_with_three(dir.path()).await;
    }

    #[tokio::test]
    async fn an_empty_new_segment_is_a_crash_leftover() {
        let dir = tempfile::tempdir().unwrap();
        three_records(dir.path()).await;
        // A new segment was created but its header never reached the disk.
        std::fs::write(dir.path().join(format!("{:020}.seg", 3)), b"").unwrap();
        reopens_with_three(dir.path()).await;
    }

    #[tokio::test]
    async fn damage_followed_by_more_records_is_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        three_records(dir.path()).await;
        let seg = dir.path().join(format!("{:020}.seg", 0));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 2] ^= 1;
        std::fs::write(&seg, bytes).unwrap();
        let err = Ledger::open(dir.path(), 1 << 20)
            .err()
            .expect("damage must not open");
        assert!(err.to_string().contains("record 0"), "{err}");
    }
}
