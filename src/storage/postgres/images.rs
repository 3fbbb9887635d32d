//! Images in the `images` table, by SHA-256: stored uncompressed, checked on every read. No
//! term check: an image is named by its content, so whoever writes it writes the same row.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Db, no_connection, unavailable};
use crate::domain::ImageHash;
use crate::storage::{self, BoxFuture, StorageError};

pub(super) struct PgImages {
    db: Arc<Db>,
}

impl PgImages {
    pub(super) fn new(db: Arc<Db>) -> Self {
        PgImages { db }
    }
}

impl storage::ImageStore for PgImages {
    fn put(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<ImageHash, StorageError>> {
        let pool = self.db.pool.clone();
        // Run on the backend's runtime, where its connections live; awaited from any runtime.
        let task = self.db.spawn(async move {
            let hash = ImageHash(Sha256::digest(&bytes).into());
            let client = pool.get().await.map_err(no_connection)?;
            // Committed (synchronously, as the server is configured) before this returns.
            client
                .execute(
                    "INSERT INTO images (hash, bytes) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                    &[&hash.0.as_slice(), &bytes],
                )
                .await
                .map_err(unavailable("store image"))?;
            Ok(hash)
        });
        Box::pin(async move { task.await.map_err(StorageError::Join)? })
    }

    fn get(&self, hash: &ImageHash) -> Result<Vec<u8>, StorageError> {
        let hash = *hash;
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let row = client
                .query_opt(
                    "SELECT bytes FROM images WHERE hash = $1",
                    &[&hash.0.as_slice()],
                )
                .await
                .map_err(unavailable("read image"))?;
            let bytes: Vec<u8> = row.ok_or(StorageError::ImageNotFound(hash))?.get(0);
            if Sha256::digest(&bytes).as_slice() != hash.0 {
                return Err(StorageError::ImageDamaged(hash));
            }
            Ok(bytes)
        })
    }

    fn has(&self, hash: &ImageHash) -> bool {
        let hash = *hash;
        self.db
            .run(move |pool| async move {
                let client = pool.get().await.map_err(no_connection)?;
                let row = client
                    .query_opt(
                        "SELECT 1 FROM images WHERE hash = $1",
                        &[&hash.0.as_slice()],
                    )
                    .await
                    .map_err(unavailable("look up image"))?;
                Ok(row.is_some())
            })
            .unwrap_or(false)
    }
}
