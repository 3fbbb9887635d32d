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
        if pool.is_closed() {
            return Err(StorageError::unavailable(
                "take the leader's lease",
                std::io::Error::other("the node stopped waiting"),
            ));
        }
        let client = pool.get().await.map_err(no_connection)?;
        let row = client
            .query_opt(TAKE, &[&node, &advertise, &(lease_ms as f64)])
            .await
            .map_err(unavailable("take the leader's lease"))?;
        if let Some(row) = row {
            return Ok(row.get::<_, i64>(0) as u64);
        }
        let holder = client
            .query_one(
                "SELECT holder, term, \
                        greatest(0, extract(epoch FROM expires_at - now()) * 1000)::float8 \
                 FROM countersign_lease WHERE id = 1",
                &[],
            )
            .await
            .map_err(unavailable("read the leader's lease"))?;
        if !told {
            tracing::info!(holder = %holder.get::<_, String>(0), term = holder.get::<_, i64>(1), "another node leads; waiting for its lease to lapse");
            told = true;
        }
        drop(client);
        // Try again just after the lease would lapse, and at least every quarter lease (a
        // renewal moves the expiry on).
        let left = Duration::from_secs_f64(holder.get::<_, f64>(2) / 1000.0);
        let wait = (left + Duration::from_millis(10))
            .min(Duration::from_millis(lease_ms / 4))
            .max(Duration::from_millis(10));
        tokio::time::sleep(wait).await;
    }
}

/// Renews the lease every third of its length while it is this node's. When another node has
/// taken it, or no renewal succeeded for a whole lease (it may have lapsed and been taken),
/// the node stops writing at once (term 0: projection and checkpoint writes are refused here,
/// ledger writes by the database) and `lease_lost` tells the server to step down.
///
/// It holds the `Db` weakly: the runtime it runs on belongs to the `Db`, and ends with it.
pub(super) async fn renew(db: std::sync::Weak<super::Db>, pool: Pool, term: u64, lease_ms: u64) {
    let every = Duration::from_millis((lease_ms / 3).max(1));
    let lease = Duration::from_millis(lease_ms);
    // Elapsed time since the last renewal that the database confirmed.
    #[allow(clippy::disallowed_methods)]
    let mut renewed_at = std::time::Instant::now();
    let lost = |why: &str| {
        tracing::error!(
            term,
            why,
            "lost the leader's lease; this node's writes are refused"
        );
        // Only while this term is the node's: after stepping down and leading again, an old
        // term's renewal finds the new term in the row and just ends.
        if let Some(db) = db.upgrade()
            && db
                .term
                .compare_exchange(
                    term,
                    0,
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                )
                .is_ok()
        {
            db.lease_lost.send_replace(true);
        }
    };
    // A term this node has since left (stepped down, or taken again after a failed start) is
    // not renewed: its row has moved on, and a "lost" for it would be noise.
    let current = || {
        db.upgrade()
            .is_some_and(|db| db.term.load(std::sync::atomic::Ordering::Acquire) == term)
    };
    loop {
        if !current() {
            return;
        }
        tokio::time::sleep(every).await;
        if !current() {
            return;
        }
        let renewed = async {
            let client = pool.get().await.map_err(no_connection)?;
            client
                .query_opt(RENEW, &[&(term as i64), &(lease_ms as f64)])
                .await
                .map_err(unavailable("renew the leader's lease"))
        }
        .await;
        match renewed {
            Ok(Some(_)) => {
                #[allow(clippy::disallowed_methods)]
                let now = std::time::Instant::now();
                renewed_at = now;
            }
            Ok(None) => return lost("another node holds it"),
            Err(e) => {
                tracing::warn!(error = %e, term, "could not renew the leader's lease");
                if renewed_at.elapsed() >= lease {
                    return lost("not renewed for a whole lease");
                }
            }
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

/// Ends the lease of `term` now, if it is still this node's.
pub(super) async fn release(pool: &Pool, term: u64) -> Result<(), StorageError> {
    let client = pool.get().await.map_err(no_connection)?;
    client
        .execute(
            "UPDATE countersign_lease SET expires_at = now() WHERE id = 1 AND term = $1",
            &[&(term as i64)],
        )
        .await
        .map_err(unavailable("release the leader's lease"))?;
    Ok(())
}

/// The error for a write the lease's term refused, naming the term that leads now.
pub(super) async fn fenced(client: &deadpool_postgres::Client, ours: u64) -> StorageError {
    match client
        .query_one("SELECT term FROM countersign_lease WHERE id = 1", &[])
        .await
    {
        Ok(row) => StorageError::Fenced {
            ours,
            current: row.get::<_, i64>(0) as u64,
        },
        Err(e) => StorageError::unavailable("read the lease after a refused write", e),
    }
}
