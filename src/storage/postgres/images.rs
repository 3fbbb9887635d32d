//! Images in the `images` table, by SHA-256: stored uncompressed, checked on every read. No
//! term check: an image is named by its content, so whoever writes it writes the same row.
//! Puts are group-committed: each of `WRITERS` writer tasks inserts every image queued since
//! it last looked in one statement, and answers each put once that commit is durable.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::Type;

use super::{Db, SharedError, no_connection, unavailable};
use crate::domain::ImageHash;
use crate::storage::{self, BoxFuture, StorageError};

/// An image waiting for the writer, and who to tell.
type Put = (
    ImageHash,
    Vec<u8>,
    oneshot::Sender<Result<(), Arc<StorageError>>>,
);

/// Most bytes of images one commit carries; more wait for the next.
const BATCH_BYTES_MAX: usize = 16 << 20;

/// Statements in flight at once. One writer left the database idle while its commit was
/// flushed and the next batch queued behind it, and one backend (one core) copies a statement's
/// images into TOAST: with two, one inserts while the other commits. On the 2-core machine
/// (W1, PostgreSQL on the same host) one writer was busy all the time and lifecycles were at
/// 712/s; two took them to 833/s, three 819/s.
const WRITERS: usize = 2;

pub(super) struct PgImages {
    db: Arc<Db>,
    puts: mpsc::Sender<Put>,
}

impl PgImages {
    /// `writes_max` bounds the images queued for the writer at once; more uploads wait.
    pub(super) fn new(db: Arc<Db>, writes_max: usize) -> Self {
        let (puts, rx) = mpsc::channel(writes_max.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            db.spawn(write(db.pool.clone(), rx.clone()));
        }
        PgImages { db, puts }
    }
}

/// An image writer: takes what is queued (up to `BATCH_BYTES_MAX`), inserts it in one
/// statement (committed synchronously, as the server is configured), answers every put in it.
async fn write(pool: deadpool_postgres::Pool, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Put>>>) {
    let mut carry: Option<Put> = None;
    loop {
        // A put carried over from a full batch goes first and needs no new upload: the queue
        // is drained behind it only if free, since the other writer may hold it waiting for
        // one (and this put would wait with it).
        let (first, queued) = match carry.take() {
            Some(p) => (p, queue.try_lock().ok()),
            None => {
                let mut rx = queue.lock().await;
                match rx.recv().await {
                    Some(p) => (p, Some(rx)),
                    None => return,
                }
            }
        };
        let mut bytes = first.1.len();
        let mut batch = vec![first];
        if let Some(mut rx) = queued {
            while let Ok(p) = rx.try_recv() {
                if bytes + p.1.len() > BATCH_BYTES_MAX {
                    carry = Some(p);
                    break;
                }
                bytes += p.1.len();
                batch.push(p);
            }
        }
        // In hash order: two writers inserting the same two images in opposite orders would
        // each wait for the other's uncommitted row (a deadlock PostgreSQL breaks after a
        // second by failing one); in one order, the second waits, then finds the row there.
        batch.sort_by_key(|p| p.0.0);
        let hashes: Vec<&[u8]> = batch.iter().map(|(h, _, _)| h.0.as_slice()).collect();
        let contents: Vec<&[u8]> = batch.iter().map(|(_, b, _)| b.as_slice()).collect();
        let result = async {
            let client = pool.get().await.map_err(no_connection)?;
            let insert = client
                .prepare_cached(
                    "INSERT INTO images (hash, bytes) \
                     SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON CONFLICT (hash) DO NOTHING",
                )
                .await
                .map_err(unavailable("store images"))?;
            client
                .execute(&insert, &[&hashes, &contents])
                .await
                .map_err(unavailable("store images"))
        }
        .await
        .map(|_| ())
        .map_err(Arc::new);
        for (_, _, reply) in batch {
            let _ = reply.send(result.clone());
        }
    }
}

impl storage::ImageStore for PgImages {
    fn put(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<ImageHash, StorageError>> {
        Box::pin(async move {
            let hash = ImageHash(Sha256::digest(&bytes).into());
            let (tx, rx) = oneshot::channel();
            let stopped = || {
                StorageError::unavailable(
                    "store image",
                    std::io::Error::other("the image writer has stopped"),
                )
            };
            self.puts
                .send((hash, bytes, tx))
                .await
                .map_err(|_| stopped())?;
            match rx.await.map_err(|_| stopped())? {
                Ok(()) => Ok(hash),
                Err(e) => Err(StorageError::unavailable("store image", SharedError(e))),
            }
        })
    }

    fn get(&self, hash: &ImageHash) -> Result<Vec<u8>, StorageError> {
        let hash = *hash;
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let row = super::by_key(
                &client,
                "SELECT bytes FROM images WHERE hash = $1",
                &[(&hash.0.as_slice(), Type::BYTEA)],
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

    fn missing(&self, hashes: &[ImageHash]) -> Vec<ImageHash> {
        let mut missing = Vec::new();
        for chunk in hashes.chunks(MISSING_CHUNK) {
            let wanted: Vec<Vec<u8>> = chunk.iter().map(|h| h.0.to_vec()).collect();
            let found = self.db.run(move |pool| async move {
                let client = pool.get().await.map_err(no_connection)?;
                let rows = client
                    .query("SELECT hash FROM images WHERE hash = ANY($1)", &[&wanted])
                    .await
                    .map_err(unavailable("look up images"))?;
                Ok(rows
                    .into_iter()
                    .map(|r| r.get::<_, Vec<u8>>(0))
                    .collect::<std::collections::HashSet<Vec<u8>>>())
            });
            match found {
                Ok(found) => missing.extend(chunk.iter().filter(|h| !found.contains(&h.0[..]))),
                // Not answered: counted missing, as `has` counts a failed lookup.
                Err(_) => missing.extend_from_slice(chunk),
            }
        }
        missing
    }
}

/// Hashes looked up per statement by `missing`.
const MISSING_CHUNK: usize = 4096;
