//! The embedded backend behind the storage seam: opening the data directory (its layout is
//! unchanged: `ledger/`, `images/`, `projection/`) and the trait implementations, each a thin
//! translation of this backend's own errors into `StorageError` with the cause kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoints::FileCheckpointLog;
use super::files::LedgerError;
use super::images::{ImageStore, ImageStoreError};
use super::projection::{SledProjection, StoreError};
use super::segments::Ledger;
use super::writer::Appender;
use crate::domain::{ImageHash, PrincipalId, RequestId, State, TellerSerial};
use crate::ledger::merkle::{Hash, ProofError};
use crate::metrics::LedgerMetrics;
use crate::storage::{
    self, BoxFuture, EmbeddedSettings, LedgerAppend, LedgerRead, RowUpdate, SearchPage,
    SearchQuery, Storage, StorageError, Submitted, Summary,
};

/// The ledger's directory below a data directory.
pub fn ledger_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("ledger")
}

/// The image log's directory below a data directory.
pub fn images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// sled's directory below a data directory.
pub fn projection_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("projection")
}

/// Opens (or creates) the data directory: the ledger (cutting a torn tail) with its writer
/// thread, the checkpoint log, the image log with its writer thread, and sled.
pub fn open(settings: &EmbeddedSettings, metrics: LedgerMetrics) -> Result<Storage, StorageError> {
    let dir = &settings.data_dir;
    if dir.exists() && !dir.is_dir() {
        return Err(StorageError::damaged(
            "open the data directory",
            std::io::Error::other(format!(
                "data_dir {} is a file, not a directory: point data_dir at a directory",
                dir.display()
            )),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        StorageError::unavailable(
            "create data directory",
            std::io::Error::new(e.kind(), format!("data_dir {}: {e}", dir.display())),
        )
    })?;
    let (ledger, appender, durable) =
        Ledger::open_measured(&ledger_dir(dir), settings.segment_bytes_max, metrics)
            .map_err(|e| ledger_error("open ledger", e))?;
    let checkpoints = FileCheckpointLog::open(&ledger_dir(dir))
        .map_err(|e| StorageError::damaged("open checkpoint log", e))?;
    let projection = super::reopen::ReopeningProjection::open(
        projection_dir(dir),
        settings.projection_cache_bytes,
    )?;
    let images = ImageStore::open(&images_dir(dir), settings.image_writes_max)
        .map_err(|e| image_error("open image store", e))?;
    // The subdirectories just created must survive a crash too.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::unavailable("sync data directory", e))?;
    Ok(Storage {
        ledger,
        appender: Box::new(appender),
        durable,
        checkpoints: Box::new(checkpoints),
        images: Arc::new(images),
        projection: Arc::new(projection),
    })
}

fn ledger_error(action: &'static str, e: LedgerError) -> StorageError {
    match e {
        LedgerError::NoSuchRecord(i) => StorageError::NoSuchRecord(i),
        e @ LedgerError::Damaged { .. } => StorageError::damaged(action, e),
        e @ (LedgerError::Io { .. } | LedgerError::WriterFailed(_)) => {
            StorageError::unavailable(action, e)
        }
    }
}

pub(super) fn projection_error(action: &'static str, e: StoreError) -> StorageError {
    match e {
        e @ StoreError::Sled { .. } => StorageError::unavailable(action, e),
        e @ StoreError::Damaged(_) => StorageError::damaged(action, e),
    }
}

fn image_error(action: &'static str, e: ImageStoreError) -> StorageError {
    match e {
        ImageStoreError::NotFound(h) => StorageError::ImageNotFound(h),
        ImageStoreError::Damaged(h) => StorageError::ImageDamaged(h),
        // The disk refused a write, or the writer is gone: worth retrying later.
        e @ (ImageStoreError::Io { .. } | ImageStoreError::Stopped) => {
            StorageError::unavailable(action, e)
        }
        e @ ImageStoreError::Corrupt { .. } => StorageError::damaged(action, e),
        ImageStoreError::Batch(inner) => match &*inner {
            ImageStoreError::NotFound(h) => StorageError::ImageNotFound(*h),
            ImageStoreError::Damaged(h) => StorageError::ImageDamaged(*h),
            ImageStoreError::Corrupt { .. } => {
                StorageError::damaged(action, ImageStoreError::Batch(inner))
            }
            _ => StorageError::unavailable(action, ImageStoreError::Batch(inner)),
        },
    }
}

impl LedgerRead for Ledger {
    fn len(&self) -> u64 {
        Ledger::len(self)
    }

    fn read(&self, index: u64) -> Result<Vec<u8>, StorageError> {
        Ledger::read(self, index).map_err(|e| ledger_error("read ledger record", e))
    }

    fn tree_size(&self) -> u64 {
        Ledger::tree_size(self)
    }

    fn engine_records_from(&self, from: u64) -> Result<super::super::EngineRecords, StorageError> {
        let to = Ledger::len(self);
        let indexes = Ledger::engine_records_from(self, from);
        let records = self.read_many(&indexes)?;
        Ok((to.max(from), indexes.into_iter().zip(records).collect()))
    }

    fn head(&self) -> (u64, Hash) {
        Ledger::head(self)
    }

    fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        Ledger::root_at(self, size)
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        Ledger::inclusion_proof(self, index, size)
    }

    fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        Ledger::consistency_proof(self, from, to)
    }

    fn inject_write_faults(&self, on: bool) {
        Ledger::inject_write_faults(self, on)
    }
}

impl LedgerAppend for Appender {
    fn next_index(&self) -> u64 {
        Appender::next_index(self)
    }

    fn append(&mut self, payload: Vec<u8>) -> u64 {
        Appender::append(self, payload)
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        Appender::flush(self).map_err(|e| ledger_error("hand records to the ledger writer", e))
    }

    fn rewind(&mut self, durable: u64) {
        Appender::rewind(self, durable)
    }

    fn probe(&mut self, durable: u64) -> Result<(), StorageError> {
        Appender::probe(self, durable).map_err(|e| StorageError::Unavailable {
            action: "probe the ledger writer",
            source: e.into(),
        })
    }
}

impl storage::ImageStore for ImageStore {
    fn put(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<ImageHash, StorageError>> {
        Box::pin(async move {
            ImageStore::put(self, bytes)
                .await
                .map_err(|e| image_error("store image", e))
        })
    }

    fn get(&self, hash: &ImageHash) -> Result<Vec<u8>, StorageError> {
        ImageStore::get(self, hash).map_err(|e| image_error("read image", e))
    }

    fn has(&self, hash: &ImageHash) -> bool {
        ImageStore::contains(self, hash)
    }

    fn probed_after_failure(&self) -> bool {
        true
    }

    fn probe(&self) -> Result<(), StorageError> {
        ImageStore::probe(self).map_err(|e| image_error("probe the image log", e))
    }

    fn inject_write_faults(&self, on: bool) {
        ImageStore::inject_write_faults(self, on)
    }
}

impl storage::Projection for SledProjection {
    fn applied(&self) -> Result<u64, StorageError> {
        SledProjection::applied(self).map_err(|e| projection_error("read applied count", e))
    }

    fn apply(&self, updates: &[RowUpdate], applied: u64) -> Result<(), StorageError> {
        SledProjection::apply(self, updates, applied)
            .map_err(|e| projection_error("apply projection batch", e))
    }

    fn request(&self, id: &RequestId) -> Result<Option<(State, Vec<u64>)>, StorageError> {
        SledProjection::request(self, id).map_err(|e| projection_error("read request row", e))
    }

    fn idempotency(
        &self,
        teller: &PrincipalId,
        serial: &TellerSerial,
    ) -> Result<Option<(RequestId, [u8; 32])>, StorageError> {
        SledProjection::idempotency(self, teller, serial)
            .map_err(|e| projection_error("read idempotency row", e))
    }

    fn idempotency_soon(
        &self,
        teller: PrincipalId,
        serial: TellerSerial,
    ) -> BoxFuture<'_, Result<Option<Submitted>, StorageError>> {
        Box::pin(std::future::ready(crate::storage::Projection::idempotency(
            self, &teller, &serial,
        )))
    }

    fn summary(&self, id: &RequestId) -> Result<Option<Summary>, StorageError> {
        SledProjection::summary(self, id).map_err(|e| projection_error("read summary", e))
    }

    fn search(&self, q: &SearchQuery) -> Result<SearchPage, StorageError> {
        SledProjection::search(self, q).map_err(|e| projection_error("search", e))
    }

    fn summaries_between(
        &self,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
        max: usize,
    ) -> Result<Result<Vec<Summary>, usize>, StorageError> {
        SledProjection::summaries_between(self, from_ms, until_ms, max)
            .map_err(|e| projection_error("read summaries", e))
    }

    fn active(&self) -> Result<Vec<RequestId>, StorageError> {
        SledProjection::active(self).map_err(|e| projection_error("scan active requests", e))
    }

    fn flush(&self) -> Result<(), StorageError> {
        SledProjection::flush(self).map_err(|e| projection_error("flush sled", e))
    }

    fn remote(&self) -> bool {
        // sled answers from its page cache in microseconds, on the engine's own thread.
        false
    }

    fn batch_size(&self) -> usize {
        // Every sled transaction seals and writes sled's log from a thread of its own: one
        // per ledger batch cost more CPU under load than the rest of the projection.
        2048
    }
}

#[cfg(test)]
mod tests {
    //! The embedded backend against the seam's conformance suite.

    use super::*;
    use crate::storage::conformance::{self, Backend};

    /// A data directory in a temporary folder, opened afresh each time.
    struct Embedded(tempfile::TempDir);

    impl Embedded {
        fn new() -> Self {
            Embedded(tempfile::tempdir().expect("temporary directory"))
        }
    }

    impl Backend for Embedded {
        fn open(&self) -> Storage {
            let settings = EmbeddedSettings {
                data_dir: self.0.path().to_owned(),
                segment_bytes_max: 1 << 20,
                image_writes_max: 16,
                projection_cache_bytes: 1 << 20,
            };
            open(&settings, LedgerMetrics::new()).expect("open the data directory")
        }
    }

    conformance::suite!(Embedded::new());
}
