//! Signed checkpoints in the `checkpoints` table and the witnesses' cosignatures in
//! `cosignatures`, written only under the leader's term.

use std::sync::Arc;

use super::{Db, no_connection, unavailable};
use crate::storage::{CheckpointLog, StorageError};

pub(super) struct PgCheckpoints {
    db: Arc<Db>,
}

impl PgCheckpoints {
    pub(super) fn new(db: Arc<Db>) -> Self {
        PgCheckpoints { db }
    }
}

impl CheckpointLog for PgCheckpoints {
    fn notes(&self) -> Result<Vec<String>, StorageError> {
        self.db.run(|pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let rows = client
                .query("SELECT seq, note FROM checkpoints ORDER BY seq", &[])
                .await
                .map_err(unavailable("read checkpoints"))?;
            let mut notes = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let seq: i64 = row.get(0);
                if seq != i as i64 {
                    return Err(StorageError::damaged(
                        "read checkpoints",
                        std::io::Error::other(format!("checkpoint {i} is missing")),
                    ));
                }
                notes.push(row.get::<_, String>(1));
            }
            Ok(notes)
        })
    }

    fn notes_from(&self, seq: u64) -> Result<Vec<String>, StorageError> {
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let rows = client
                .query(
                    "SELECT note FROM checkpoints WHERE seq >= $1 ORDER BY seq",
                    &[&(seq as i64)],
                )
                .await
                .map_err(unavailable("read checkpoints"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn append(&self, seq: u64, note: &str) -> Result<(), StorageError> {
        let (term, note) = (self.db.term()?, note.to_owned());
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            // As for ledger records: only while the lease has this node's term.
            let inserted = client
                .execute(
                    "WITH lease AS ( \
                        SELECT 1 FROM countersign_lease WHERE id = 1 AND term = $1 FOR SHARE) \
                     INSERT INTO checkpoints (seq, term, note) SELECT $2, $1, $3 FROM lease",
                    &[&(term as i64), &(seq as i64), &note],
                )
                .await
                .map_err(unavailable("store checkpoint"))?;
            if inserted == 0 {
                return Err(super::lease::fenced(&client, term).await);
            }
            Ok(())
        })
    }

    fn cosignatures(&self) -> Result<Vec<(u64, String)>, StorageError> {
        self.db.run(|pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let rows = client
                .query("SELECT seq, line FROM cosignatures ORDER BY stored", &[])
                .await
                .map_err(unavailable("read cosignatures"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect())
        })
    }

    fn cosignatures_from(&self, skip: u64) -> Result<Vec<(u64, String)>, StorageError> {
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let rows = client
                .query(
                    "SELECT seq, line FROM cosignatures ORDER BY stored OFFSET $1",
                    &[&(skip as i64)],
                )
                .await
                .map_err(unavailable("read cosignatures"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect())
        })
    }

    fn add_cosignature(&self, seq: u64, line: &str) -> Result<(), StorageError> {
        let (term, line) = (self.db.term()?, line.to_owned());
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let inserted = client
                .execute(
                    "WITH lease AS ( \
                        SELECT 1 FROM countersign_lease WHERE id = 1 AND term = $1 FOR SHARE) \
                     INSERT INTO cosignatures (seq, line, term) SELECT $2, $3, $1 FROM lease \
                     ON CONFLICT DO NOTHING",
                    &[&(term as i64), &(seq as i64), &line],
                )
                .await
                .map_err(unavailable("store cosignature"))?;
            if inserted == 0 {
                // Either stored already (a retry) or fenced: only the lease can tell.
                let held = client
                    .query_opt(
                        "SELECT 1 FROM countersign_lease WHERE id = 1 AND term = $1",
                        &[&(term as i64)],
                    )
                    .await
                    .map_err(unavailable("read the lease"))?;
                if held.is_none() {
                    return Err(super::lease::fenced(&client, term).await);
                }
            }
            Ok(())
        })
    }
}
