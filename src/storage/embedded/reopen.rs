//! The sled projection behind a handle that can close and open it again: sled keeps the first
//! write error it hits (a full disk) and fails every later write even once space is free, so
//! after a failed apply the handle refuses writes until `reopen` has dropped that sled and
//! opened it afresh. The projection holds nothing the ledger does not: what the engine could
//! not apply it applies again after the reopen.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::projection::SledProjection;
use super::seam::projection_error;
use crate::domain::{PrincipalId, RequestId, State, TellerSerial};
use crate::storage::{
    self, BoxFuture, RowUpdate, SearchPage, SearchQuery, StorageError, Submitted, Summary,
};

pub struct ReopeningProjection {
    path: PathBuf,
    cache_bytes: u64,
    /// `None` only while being reopened, or after a reopen failed.
    sled: RwLock<Option<Arc<SledProjection>>>,
    /// Set by a failed apply (as sled poisons itself); cleared by a reopen.
    poisoned: AtomicBool,
    /// Tests: make every write fail as on a full disk.
    faults: AtomicBool,
}

fn closed() -> StorageError {
    StorageError::unavailable(
        "use the projection",
        std::io::Error::other("the projection is closed: a reopen after a failure did not succeed"),
    )
}

fn full(action: &'static str) -> StorageError {
    StorageError::unavailable(
        action,
        std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "injected fault: no space left on device",
        ),
    )
}

impl ReopeningProjection {
    pub fn open(path: PathBuf, cache_bytes: u64) -> Result<Self, StorageError> {
        let sled = SledProjection::open(&path, cache_bytes)
            .map_err(|e| projection_error("open projection", e))?;
        Ok(ReopeningProjection {
            path,
            cache_bytes,
            sled: RwLock::new(Some(Arc::new(sled))),
            poisoned: AtomicBool::new(false),
            faults: AtomicBool::new(false),
        })
    }

    fn current(&self) -> Result<Arc<SledProjection>, StorageError> {
        self.sled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(closed)
    }
}

impl storage::Projection for ReopeningProjection {
    fn applied(&self) -> Result<u64, StorageError> {
        storage::Projection::applied(self.current()?.as_ref())
    }

    fn apply(&self, updates: &[RowUpdate], applied: u64) -> Result<(), StorageError> {
        if self.faults.load(Ordering::Relaxed) {
            self.poisoned.store(true, Ordering::Relaxed);
            return Err(full("apply projection batch"));
        }
        if self.poisoned.load(Ordering::Relaxed) {
            return Err(StorageError::unavailable(
                "apply projection batch",
                std::io::Error::other("an earlier write failed: reopen the projection first"),
            ));
        }
        let result = storage::Projection::apply(self.current()?.as_ref(), updates, applied);
        if result.is_err() {
            self.poisoned.store(true, Ordering::Relaxed);
        }
        result
    }

    fn request(&self, id: &RequestId) -> Result<Option<(State, Vec<u64>)>, StorageError> {
        storage::Projection::request(self.current()?.as_ref(), id)
    }

    fn idempotency(
        &self,
        teller: &PrincipalId,
        serial: &TellerSerial,
    ) -> Result<Option<(RequestId, [u8; 32])>, StorageError> {
        storage::Projection::idempotency(self.current()?.as_ref(), teller, serial)
    }

    fn idempotency_soon(
        &self,
        teller: PrincipalId,
        serial: TellerSerial,
    ) -> BoxFuture<'_, Result<Option<Submitted>, StorageError>> {
        Box::pin(std::future::ready(storage::Projection::idempotency(
            self, &teller, &serial,
        )))
    }

    fn summary(&self, id: &RequestId) -> Result<Option<Summary>, StorageError> {
        storage::Projection::summary(self.current()?.as_ref(), id)
    }

    fn search(&self, q: &SearchQuery) -> Result<SearchPage, StorageError> {
        storage::Projection::search(self.current()?.as_ref(), q)
    }

    fn summaries_between(
        &self,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
        max: usize,
    ) -> Result<Result<Vec<Summary>, usize>, StorageError> {
        storage::Projection::summaries_between(self.current()?.as_ref(), from_ms, until_ms, max)
    }

    fn active(&self) -> Result<Vec<RequestId>, StorageError> {
        storage::Projection::active(self.current()?.as_ref())
    }

    fn flush(&self) -> Result<(), StorageError> {
        storage::Projection::flush(self.current()?.as_ref())
    }

    fn batch_size(&self) -> usize {
        // Every sled transaction seals and writes sled's log from a thread of its own: one
        // per ledger batch cost more CPU under load than the rest of the projection.
        2048
    }

    fn remote(&self) -> bool {
        // sled answers from its page cache in microseconds, on the engine's own thread.
        false
    }

    fn reopens_after_failure(&self) -> bool {
        true
    }

    fn reopen(&self) -> Result<(), StorageError> {
        if self.faults.load(Ordering::Relaxed) {
            return Err(full("reopen projection"));
        }
        let mut slot = self.sled.write().unwrap_or_else(|e| e.into_inner());
        // The old sled must be gone before the new one can take its file lock (sled lets go
        // from a background thread once the last handle drops; `open` waits for it).
        drop(slot.take());
        let sled = SledProjection::open(&self.path, self.cache_bytes)
            .map_err(|e| projection_error("reopen projection", e))?;
        *slot = Some(Arc::new(sled));
        self.poisoned.store(false, Ordering::Relaxed);
        tracing::info!(path = %self.path.display(), "projection reopened");
        Ok(())
    }

    fn inject_write_faults(&self, on: bool) {
        self.faults.store(on, Ordering::Relaxed);
    }
}
