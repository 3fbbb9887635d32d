//! Images, stored once per content under their SHA-256 and made durable before any ledger
//! record names them.
//!
//! They live in an append-only image log, not one file per image: `images/NNNNNNNN.img`
//! segments of frames, written by one `image-writer` thread that appends every image queued
//! since its last write and calls fdatasync once for all of them (group commit, as the ledger
//! does). One file per image cost two fsyncs (the file, then its folder for the rename) and an
//! inode allocation per image; under load that was most of the server's CPU and the W1
//! throughput limit (README.md, "Benchmarks").
//!
//! Segment layout: an 8-byte magic `CSIMAGE1`, then frames: `len` (u32 LE, the content length),
//! the content's SHA-256 (32 bytes), the content. Reads check the content against its hash, so
//! damage is reported as damage, never served.
//!
//! The index (hash -> place) is rebuilt at start by walking the frame headers, which reads
//! 36 bytes per image, not the images. A crash can leave the last batch half on disk; it was
//! never acknowledged and no record names it. Such a batch lies within the last
//! `BATCH_BYTES_MAX + FRAME_BYTES_MAX` bytes of the last segment, so only frames there are
//! checked against their hashes at start, and a frame that fails is left out of the index (a
//! later upload of the same content writes it again). An incomplete frame at the very end is cut.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::domain::ImageHash;

#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("image {0} is not stored")]
    NotFound(ImageHash),
    #[error("image {0} is damaged: its content no longer matches its hash")]
    Damaged(ImageHash),
    #[error("image log {segment}: {problem}")]
    Corrupt { segment: String, problem: String },
    #[error("the image writer has stopped")]
    Stopped,
    /// A write failure, reported to every upload of the batch it failed.
    #[error("{0}")]
    Batch(Arc<ImageStoreError>),
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> ImageStoreError {
    move |source| ImageStoreError::Io { action, source }
}

const MAGIC: &[u8; 8] = b"CSIMAGE1";
const FRAME_HEADER: u64 = 4 + 32;
/// Largest image content one frame holds (far above any configured image size).
pub const FRAME_BYTES_MAX: u64 = 64 << 20;
/// Most bytes one write-and-fdatasync takes.
const BATCH_BYTES_MAX: u64 = 32 << 20;
/// A segment is closed once it passes this size.
const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// Where one image's content is.
#[derive(Debug, Clone, Copy)]
struct Place {
    segment: u32,
    /// Offset of the content (after the frame header).
    offset: u64,
    len: u32,
}

fn segment_name(n: u32) -> String {
    format!("{n:08}.img")
}

/// Reading side, shared by the server's store and the offline verifier.
pub struct ImageReader {
    dir: PathBuf,
    index: RwLock<HashMap<ImageHash, Place>>,
    files: Mutex<HashMap<u32, Arc<File>>>,
}

impl ImageReader {
    /// Walks every segment's frame headers (cutting an incomplete frame at the very end when
    /// `repair`), and returns the reader with the number of the last segment and its length.
    fn scan(dir: &Path, repair: bool) -> Result<(ImageReader, u32, u64), ImageStoreError> {
        let mut segments: Vec<u32> = Vec::new();
        for e in fs::read_dir(dir).map_err(io("list image log"))? {
            let e = e.map_err(io("list image log"))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".img").and_then(|n| n.parse().ok()) {
                segments.push(n);
            }
        }
        segments.sort_unstable();
        let mut index = HashMap::new();
        let (mut last, mut last_len) = (0, 0);
        for (i, &n) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            last = n;
            last_len = scan_segment(dir, n, is_last, repair, &mut index)?;
        }
        Ok((
            ImageReader {
                dir: dir.to_owned(),
                index: RwLock::new(index),
                files: Mutex::new(HashMap::new()),
            },
            last,
            last_len,
        ))
    }

    /// Opens a data directory's image log read-only (the offline verifier).
    pub fn open_read_only(dir: &Path) -> Result<ImageReader, ImageStoreError> {
        Ok(Self::scan(dir, false)?.0)
    }

    pub fn contains(&self, hash: &ImageHash) -> bool {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(hash)
    }

    /// Reads an image back and checks it still matches its hash.
    pub fn get(&self, hash: &ImageHash) -> Result<Vec<u8>, ImageStoreError> {
        let found = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
            .copied();
        let Some(place) = found else {
            return self.get_legacy(hash);
        };
        let file = {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            match files.get(&place.segment) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(
                        File::open(self.dir.join(segment_name(place.segment)))
                            .map_err(io("open image log segment"))?,
                    );
                    files.insert(place.segment, f.clone());
                    f
                }
            }
        };
        let mut bytes = vec![0u8; place.len as usize];
        file.read_exact_at(&mut bytes, place.offset)
            .map_err(io("read image"))?;
        if ImageStore::hash(&bytes) != *hash {
            return Err(ImageStoreError::Damaged(*hash));
        }
        Ok(bytes)
    }
}

impl ImageReader {
    /// Data directories written before the image log kept one file per image, at
    /// `images/ab/abcd…`; those images are still served (and verified) from there.
    fn get_legacy(&self, hash: &ImageHash) -> Result<Vec<u8>, ImageStoreError> {
        let hex = hash.to_hex();
        let bytes = match fs::read(self.dir.join(&hex[..2]).join(&hex)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageStoreError::NotFound(*hash));
            }
            Err(e) => return Err(io("read image")(e)),
        };
        if ImageStore::hash(&bytes) != *hash {
            return Err(ImageStoreError::Damaged(*hash));
        }
        Ok(bytes)
    }
}

/// Indexes one segment's frames; returns the segment's (possibly cut) length.
fn scan_segment(
    dir: &Path,
    n: u32,
    is_last: bool,
    repair: bool,
    index: &mut HashMap<ImageHash, Place>,
) -> Result<u64, ImageStoreError> {
    let path = dir.join(segment_name(n));
    let corrupt = |problem: String| ImageStoreError::Corrupt {
        segment: path.display().to_string(),
        problem,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(repair && is_last)
        .open(&path)
        .map_err(io("open image log segment"))?;
    let size = f.metadata().map_err(io("stat image log segment"))?.len();
    let mut magic = [0u8; 8];
    if size < 8 || f.read_exact(&mut magic).is_err() || &magic != MAGIC {
        if is_last && size < 8 {
            // Created, and the crash came before its header was synced.
            if repair {
                f.set_len(0).map_err(io("cut image log"))?;
                f.write_all_at(MAGIC, 0)
                    .map_err(io("write image log header"))?;
                f.sync_data().map_err(io("fdatasync image log"))?;
            }
            return Ok(8);
        }
        return Err(corrupt("no CSIMAGE1 header".into()));
    }
    // Frames that start here or later may belong to a batch whose fdatasync never finished.
    // The offline verifier (no repair) indexes them all and reports damage when it reads.
    let unsynced_from = if repair {
        size.saturating_sub(BATCH_BYTES_MAX + FRAME_BYTES_MAX)
    } else {
        u64::MAX
    };
    let mut pos = 8u64;
    let mut header = [0u8; FRAME_HEADER as usize];
    while pos < size {
        let torn = |what: &str| format!("{what} at offset {pos}");
        let whole = pos + FRAME_HEADER <= size
            && f.seek(SeekFrom::Start(pos)).is_ok()
            && f.read_exact(&mut header).is_ok();
        let [l0, l1, l2, l3, ..] = header;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let end = pos + FRAME_HEADER + u64::from(len);
        if !whole || len == 0 || u64::from(len) > FRAME_BYTES_MAX || end > size {
            if !is_last {
                return Err(corrupt(torn("a damaged frame")));
            }
            // The end of the last segment: what a crash in the middle of a write leaves.
            tracing::warn!(segment = %path.display(), offset = pos, "cutting an incomplete image frame left by a crash");
            if repair {
                f.set_len(pos).map_err(io("cut image log"))?;
                f.sync_data().map_err(io("fdatasync image log"))?;
            }
            return Ok(pos);
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&header[4..]);
        let hash = ImageHash(hash);
        let place = Place {
            segment: n,
            offset: pos + FRAME_HEADER,
            len,
        };
        let keep = if is_last && pos >= unsynced_from {
            let mut bytes = vec![0u8; len as usize];
            f.read_exact_at(&mut bytes, place.offset)
                .map_err(io("read image"))?;
            let ok = ImageStore::hash(&bytes) == hash;
            if !ok {
                tracing::warn!(segment = %path.display(), offset = pos, "an image frame of the last, unacknowledged batch does not match its hash; not indexed");
            }
            ok
        } else {
            true
        };
        if keep {
            index.entry(hash).or_insert(place);
        }
        pos = end;
    }
    Ok(pos)
}

/// One image waiting for the writer.
struct Job {
    hash: ImageHash,
    bytes: Vec<u8>,
    done: oneshot::Sender<Result<(), Arc<ImageStoreError>>>,
}

/// The image log: reads from any thread, writes through the `image-writer` thread.
pub struct ImageStore {
    reader: Arc<ImageReader>,
    tx: mpsc::Sender<Job>,
    dir: PathBuf,
    /// Tests: every write fails as on a full disk while set.
    faults: Arc<std::sync::atomic::AtomicBool>,
}

impl ImageStore {
    /// Opens (or creates) the image log in `dir`; at most `queue` images wait for the writer
    /// at once (more uploads wait their turn).
    pub fn open(dir: &Path, queue: usize) -> Result<Self, ImageStoreError> {
        fs::create_dir_all(dir).map_err(|e| ImageStoreError::Io {
            action: "create image directory",
            source: std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())),
        })?;
        let (reader, mut last, mut len) = ImageReader::scan(dir, true)?;
        let reader = Arc::new(reader);
        let path = dir.join(segment_name(last));
        let file = if len == 0 {
            // No segment yet.
            last = 0;
            len = 8;
            new_segment(dir, last)?
        } else {
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io("open image log segment"))?
        };
        let (tx, rx) = mpsc::channel(queue.max(1));
        let faults = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = Writer {
            faults: faults.clone(),
            dir: dir.to_owned(),
            reader: reader.clone(),
            segment: last,
            file,
            len,
            broken: false,
        };
        std::thread::Builder::new()
            .name("image-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io("start the image writer"))?;
        Ok(ImageStore {
            reader,
            tx,
            dir: dir.to_owned(),
            faults,
        })
    }

    /// Whether the image directory's disk can take a durable write now: a small file written,
    /// fdatasync'd and removed. Blocking.
    pub fn probe(&self) -> Result<(), ImageStoreError> {
        if self.faults.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io("probe the image log")(injected_full()));
        }
        let path = self.dir.join(".probe");
        let wrote = (|| {
            let mut f = File::create(&path)?;
            f.write_all(&[0u8; 4096])?;
            f.sync_data()
        })();
        let _ = fs::remove_file(&path);
        wrote.map_err(io("probe the image log"))
    }

    /// Tests: make every write fail as on a full disk, or succeed again.
    pub fn inject_write_faults(&self, on: bool) {
        self.faults.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn hash(bytes: &[u8]) -> ImageHash {
        ImageHash(Sha256::digest(bytes).into())
    }

    /// Stores `bytes` durably and returns their hash: answered after the fdatasync of the
    /// batch that holds them (at once if the same content is already stored).
    pub async fn put(&self, bytes: Vec<u8>) -> Result<ImageHash, ImageStoreError> {
        let hash = Self::hash(&bytes);
        if self.reader.contains(&hash) {
            return Ok(hash);
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { hash, bytes, done })
            .await
            .map_err(|_| ImageStoreError::Stopped)?;
        wait.await
            .map_err(|_| ImageStoreError::Stopped)?
            .map_err(ImageStoreError::Batch)?;
        Ok(hash)
    }

    /// Reads an image back and checks it still matches its hash. Blocking.
    pub fn get(&self, hash: &ImageHash) -> Result<Vec<u8>, ImageStoreError> {
        self.reader.get(hash)
    }

    /// Whether an image of this hash is stored.
    pub fn contains(&self, hash: &ImageHash) -> bool {
        self.reader.contains(hash)
    }
}

fn new_segment(dir: &Path, n: u32) -> Result<File, ImageStoreError> {
    let path = dir.join(segment_name(n));
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io("create image log segment"))?;
    let made = f
        .write_all(MAGIC)
        .and_then(|()| f.sync_data())
        // The new name is durable only once the folder is synced.
        .and_then(|()| File::open(dir).and_then(|d| d.sync_all()));
    if let Err(e) = made {
        // Otherwise the next rotation, after the disk recovers, would find the name taken.
        let _ = fs::remove_file(&path);
        return Err(io("start image log segment")(e));
    }
    Ok(f)
}

fn injected_full() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "injected fault: no space left on device",
    )
}

struct Writer {
    faults: Arc<std::sync::atomic::AtomicBool>,
    dir: PathBuf,
    reader: Arc<ImageReader>,
    segment: u32,
    file: File,
    /// Durable length of the current segment.
    len: u64,
    /// A failed write could not be cut back: refuse everything until a restart re-scans.
    broken: bool,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            let mut bytes = batch[0].bytes.len() as u64;
            while bytes < BATCH_BYTES_MAX {
                match rx.try_recv() {
                    Ok(j) => {
                        bytes += j.bytes.len() as u64;
                        batch.push(j);
                    }
                    Err(_) => break,
                }
            }
            let result = self.write(&batch).map_err(Arc::new);
            for j in batch {
                let _ = j.done.send(result.clone());
            }
        }
    }

    /// Appends the batch's new images, fdatasyncs, then indexes them.
    fn write(&mut self, batch: &[Job]) -> Result<(), ImageStoreError> {
        if self.broken {
            return Err(ImageStoreError::Stopped);
        }
        let mut buf = Vec::new();
        let mut placed: Vec<(ImageHash, u64, u32)> = Vec::new();
        for j in batch {
            if self.reader.contains(&j.hash) || placed.iter().any(|p| p.0 == j.hash) {
                continue;
            }
            let len = u32::try_from(j.bytes.len())
                .ok()
                .filter(|&l| l > 0 && u64::from(l) <= FRAME_BYTES_MAX)
                .ok_or_else(|| ImageStoreError::Io {
                    action: "store image",
                    source: std::io::Error::other("image is empty or larger than a frame"),
                })?;
            placed.push((j.hash, buf.len() as u64 + FRAME_HEADER, len));
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&j.hash.0);
            buf.extend_from_slice(&j.bytes);
        }
        if buf.is_empty() {
            return Ok(());
        }
        if self.faults.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io("write image log")(injected_full()));
        }
        if self.len > 8 && self.len + buf.len() as u64 > SEGMENT_BYTES_MAX {
            self.file = new_segment(&self.dir, self.segment + 1)?;
            self.segment += 1;
            self.len = 8;
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Nothing past the durable length is trusted (as for the ledger): cut back to it.
            if self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                self.broken = true;
            }
            return Err(io("write image log")(e));
        }
        let base = self.len;
        self.len += buf.len() as u64;
        let mut index = self.reader.index.write().unwrap_or_else(|e| e.into_inner());
        for (hash, offset, len) in placed {
            index.entry(hash).or_insert(Place {
                segment: self.segment,
                offset: base + offset,
                len,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(seed: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF];
        v.extend((0..len).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed)));
        v
    }

    #[tokio::test]
    async fn put_get_dedupe_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path(), 4).unwrap();
        let (a, b) = (jpeg(3, 70_000), jpeg(5, 1000));
        let (ha, hb, ha2) = tokio::join!(
            store.put(a.clone()),
            store.put(b.clone()),
            store.put(a.clone())
        );
        let (ha, hb) = (ha.unwrap(), hb.unwrap());
        assert_eq!(ha, ha2.unwrap());
        assert_eq!(store.get(&ha).unwrap(), a);
        assert_eq!(store.get(&hb).unwrap(), b);
        let size = fs::metadata(dir.path().join(segment_name(0)))
            .unwrap()
            .len();
        // Stored once each.
        assert_eq!(size, 8 + 2 * FRAME_HEADER + (a.len() + b.len()) as u64);
        drop(store);
        let again = ImageStore::open(dir.path(), 4).unwrap();
        assert_eq!(again.get(&ha).unwrap(), a);
        let missing = ImageStore::hash(b"nothing");
        assert!(matches!(
            again.get(&missing),
            Err(ImageStoreError::NotFound(_))
        ));
        // Appends continue after the existing frames.
        let c = jpeg(7, 10);
        let hc = again.put(c.clone()).await.unwrap();
        drop(again);
        let reader = ImageReader::open_read_only(dir.path()).unwrap();
        for (h, v) in [(ha, &a), (hb, &b), (hc, &c)] {
            assert_eq!(&reader.get(&h).unwrap(), v);
        }
    }

    #[tokio::test]
    async fn images_of_the_old_one_file_layout_are_still_served() {
        let dir = tempfile::tempdir().unwrap();
        let old = jpeg(9, 3000);
        let h = ImageStore::hash(&old);
        let hex = h.to_hex();
        fs::create_dir_all(dir.path().join(&hex[..2])).unwrap();
        fs::write(dir.path().join(&hex[..2]).join(&hex), &old).unwrap();
        let store = ImageStore::open(dir.path(), 4).unwrap();
        assert_eq!(store.get(&h).unwrap(), old);
        drop(store);
        let mut damaged = old.clone();
        damaged[100] ^= 1;
        fs::write(dir.path().join(&hex[..2]).join(&hex), &damaged).unwrap();
        let reader = ImageReader::open_read_only(dir.path()).unwrap();
        assert!(matches!(reader.get(&h), Err(ImageStoreError::Damaged(_))));
    }

    #[tokio::test]
    async fn every_kind_of_torn_last_frame_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path(), 4).unwrap();
        let a = jpeg(3, 5000);
        let ha = store.put(a.clone()).await.unwrap();
        drop(store);
        let seg = dir.path().join(segment_name(0));
        let good = fs::metadata(&seg).unwrap().len();
        let mut content_short = 10_000u32.to_le_bytes().to_vec();
        content_short.extend([7u8; 32]);
        content_short.extend([1u8; 100]);
        let mut too_long = (FRAME_BYTES_MAX as u32 + 1).to_le_bytes().to_vec();
        too_long.extend([7u8; 32]);
        for tail in [content_short, vec![0u8; 36], too_long] {
            let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
            f.write_all(&tail).unwrap();
            drop(f);
            // The offline reader leaves the file alone and still reads what is whole.
            let reader = ImageReader::open_read_only(dir.path()).unwrap();
            assert_eq!(reader.get(&ha).unwrap(), a);
            assert_eq!(fs::metadata(&seg).unwrap().len(), good + tail.len() as u64);
            drop(reader);
            let store = ImageStore::open(dir.path(), 4).unwrap();
            assert_eq!(fs::metadata(&seg).unwrap().len(), good);
            assert_eq!(store.get(&ha).unwrap(), a);
        }
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path(), 4).unwrap();
        let a = jpeg(3, 5000);
        let ha = store.put(a.clone()).await.unwrap();
        drop(store);
        let seg = dir.path().join(segment_name(0));
        let good = fs::metadata(&seg).unwrap().len();
        // A crash in the middle of the next frame.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0x10, 0x27, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let store = ImageStore::open(dir.path(), 4).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
        assert_eq!(store.get(&ha).unwrap(), a);
        drop(store);
        // A flipped byte in the content: damage, never served.
        let mut bytes = fs::read(&seg).unwrap();
        bytes[8 + FRAME_HEADER as usize + 100] ^= 1;
        fs::write(&seg, bytes).unwrap();
        let reader = ImageReader::open_read_only(dir.path()).unwrap();
        assert!(matches!(reader.get(&ha), Err(ImageStoreError::Damaged(_))));
        drop(reader);
        // The server, at start, leaves a frame of the last batch that fails its hash out of the
        // index: that batch may never have been synced, and a new upload writes it again.
        let store = ImageStore::open(dir.path(), 4).unwrap();
        assert!(matches!(store.get(&ha), Err(ImageStoreError::NotFound(_))));
        assert_eq!(store.put(a.clone()).await.unwrap(), ha);
        assert_eq!(store.get(&ha).unwrap(), a);
    }
}
