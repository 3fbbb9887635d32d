//! The leader's lease: one row with a term that only grows, the holder's name and address,
//! and when it lapses. Time is the database's own (`now()`), so the nodes' clocks need not
//! agree. A node takes the lease when it has lapsed, or at once when the holder is itself (a
//! restart); taking it adds one to the term, which fences every write of the term before.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::{no_connection, unavailable};
use crate::storage::StorageError;

/// Takes the lease when it is free, lapsed or this node's own, and returns the new term.
const TAKE: &str = "UPDATE countersign_lease \
    SET term = term + 1, holder = $1, advertise = $2, \
        expires_at = now() + $3::float8 * interval '1 millisecond' \
    WHERE id = 1 AND (expires_at < now() OR holder = $1) \
    RETURNING term";

/// Extends the lease of `term`; no row when another node has taken it.
const RENEW: &str = "UPDATE countersign_lease \
    SET expires_at = now() + $2::float8 * interval '1 millisecond' \
    WHERE id = 1 AND term = $1 \
    RETURNING term";

/// Waits until this node holds the lease, and returns its term.
pub(super) async fn acquire(
    pool: &Pool,
    node: &str,
    advertise: &str,
    lease_ms: u64,
) -> Result<u64, StorageError> {
    let mut told = false;
    loop {
        let client = pool.get().await.map_err(no_connection)?;
        let row = client
            .query_opt(TAKE, &[&node, &advertise, &(lease_ms as f64)])
            .await
            .map_err(unavailable("take the leader's lease"))?;
        if let Some(row) = row {
            return Ok(row.get::<_, i64>(0) as u64);
        }
        if !told {
            let holder = client
                .query_one(
                    "SELECT holder, term FROM countersign_lease WHERE id = 1",
                    &[],
                )
                .await
                .map_err(unavailable("read the leader's lease"))?;
            tracing::info!(holder = %holder.get::<_, String>(0), term = holder.get::<_, i64>(1), "another node leads; waiting for its lease to lapse");
            told = true;
        }
        drop(client);
        tokio::time::sleep(Duration::from_millis(lease_ms / 4)).await;
    }
}

/// Renews the lease every third of its length while it is this node's. Runs until the
/// runtime stops; a lost lease is logged, and every write of this term is refused from then on.
pub(super) async fn renew(pool: Pool, term: u64, lease_ms: u64) {
    let every = Duration::from_millis((lease_ms / 3).max(1));
    loop {
        tokio::time::sleep(every).await;
        let renewed = async {
            let client = pool.get().await.map_err(no_connection)?;
            client
                .query_opt(RENEW, &[&(term as i64), &(lease_ms as f64)])
                .await
                .map_err(unavailable("renew the leader's lease"))
        }
        .await;
        match renewed {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::error!(
                    term,
                    "another node took the leader's lease; this node's writes are refused"
                );
                return;
            }
            Err(e) => tracing::warn!(error = %e, term, "could not renew the leader's lease"),
        }
    }
}

/// Who holds the lease, and whether it is current.
pub(super) async fn holder(pool: &Pool) -> Result<super::Leader, StorageError> {
    let client = pool.get().await.map_err(no_connection)?;
    let row = client
        .query_one(
            "SELECT holder, advertise, term, expires_at > now() FROM countersign_lease WHERE id = 1",
            &[],
        )
        .await
        .map_err(unavailable("read the leader's lease"))?;
    Ok(super::Leader {
        node_id: row.get(0),
        advertise: row.get(1),
        term: row.get::<_, i64>(2) as u64,
        live: row.get(3),
    })
}
