//! Images, stored once per content under their SHA-256 and made durable before any ledger
//! record names them.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

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
}

fn sync_dir(dir: &Path) -> Result<(), ImageStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync image directory"))
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> ImageStoreError {
    move |source| ImageStoreError::Io { action, source }
}

/// Images under `dir/ab/abcd…` (fanned out by the first byte so no folder grows huge).
pub struct ImageStore {
    dir: PathBuf,
    /// Names temporary files uniquely within this process.
    tmp_seq: AtomicU64,
}

impl ImageStore {
    pub fn open(dir: &Path) -> Result<Self, ImageStoreError> {
        fs::create_dir_all(dir.join("tmp")).map_err(io("create image directory"))?;
        // Leftovers of writes a crash interrupted were never named by any record.
        if let Ok(entries) = fs::read_dir(dir.join("tmp")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(ImageStore {
            dir: dir.to_owned(),
            tmp_seq: AtomicU64::new(0),
        })
    }

    pub fn hash(bytes: &[u8]) -> ImageHash {
        ImageHash(Sha256::digest(bytes).into())
    }

    /// Stores `bytes` durably and returns their hash. Blocking: call it off the async runtime.
    pub fn put(&self, bytes: &[u8]) -> Result<ImageHash, ImageStoreError> {
        let hash = Self::hash(bytes);
        let path = self.path(&hash);
        let parent = path.parent().expect("image paths have a parent");
        if path.exists() {
            // Another upload of the same content may not have synced its rename yet; ours is
            // acknowledged only once the name is durable.
            sync_dir(parent)?;
            return Ok(hash);
        }
        if !parent.exists() {
            fs::create_dir_all(parent).map_err(io("create image fan-out directory"))?;
            sync_dir(&self.dir)?;
        }
        let tmp = self.dir.join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = File::create(&tmp).map_err(io("create image temporary file"))?;
        f.write_all(bytes).map_err(io("write image"))?;
        f.sync_data().map_err(io("fdatasync image"))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io("rename image into place"))?;
        // The rename is durable only once the directory is synced.
        sync_dir(parent)?;
        Ok(hash)
    }

    /// Reads an image back and checks it still matches its hash.
    pub fn get(&self, hash: &ImageHash) -> Result<Vec<u8>, ImageStoreError> {
        let bytes = match fs::read(self.path(hash)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageStoreError::NotFound(*hash));
            }
            Err(e) => return Err(io("read image")(e)),
        };
        if Self::hash(&bytes) != *hash {
            return Err(ImageStoreError::Damaged(*hash));
        }
        Ok(bytes)
    }

    pub fn path(&self, hash: &ImageHash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }
}
