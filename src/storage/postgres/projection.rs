//! The audit projection in tables: `requests` (state, record indexes and what audit search
//! shows, with an index per search key), `idempotency`, and `projection_state.applied`. A
//! batch is applied in one transaction that first checks the leader's term, so a node that
//! lost the lease cannot change rows the new leader owns.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use super::{Db, SharedError, no_connection, unavailable};
use crate::domain::{PrincipalId, RequestId, State, TellerSerial};
use crate::storage::{
    BoxFuture, Projection, RowUpdate, SearchPage, SearchQuery, StorageError, Submitted, Summary,
    state_from, state_name,
};

pub(super) struct PgProjection {
    db: Arc<Db>,
    lookups: mpsc::Sender<Lookup>,
}

impl PgProjection {
    pub(super) fn new(db: Arc<Db>) -> Self {
        let (lookups, rx) = mpsc::channel(LOOKUPS_QUEUED_MAX);
        db.spawn(look_up(db.pool.clone(), rx));
        PgProjection { db, lookups }
    }
}

/// A submission's (teller, serial) to look up, and who to tell.
type Lookup = (
    PrincipalId,
    TellerSerial,
    oneshot::Sender<Result<Option<Submitted>, Arc<StorageError>>>,
);

/// Lookups queued for the batcher at once; more callers wait (the server's own limits on
/// calls in flight keep this far off).
const LOOKUPS_QUEUED_MAX: usize = 4096;

/// Most lookups one statement carries.
const LOOKUPS_PER_STATEMENT: usize = 256;

/// Planned on every call, as `by_key` explains: prepared once, this kept a hash join over a
/// sequential scan of `idempotency` and read the whole table on every lookup.
const LOOK_UP: &str = "SELECT k.n, i.request, i.fingerprint \
    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(teller, serial, n) \
    JOIN idempotency i ON i.teller = k.teller AND i.serial = k.serial";

/// The idempotency batcher: every lookup queued while the last statement ran goes in the next,
/// so at a few thousand submissions a second the database sees a few hundred statements.
async fn look_up(pool: deadpool_postgres::Pool, mut rx: mpsc::Receiver<Lookup>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < LOOKUPS_PER_STATEMENT {
            match rx.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        let tellers: Vec<&str> = batch.iter().map(|(t, _, _)| t.as_str()).collect();
        let serials: Vec<&str> = batch.iter().map(|(_, s, _)| s.as_str()).collect();
        let found = async {
            let client = pool.get().await.map_err(no_connection)?;
            let rows = client
                .query_typed(
                    LOOK_UP,
                    &[(&tellers, Type::TEXT_ARRAY), (&serials, Type::TEXT_ARRAY)],
                )
                .await
                .map_err(unavailable("read idempotency rows"))?;
            let mut found = vec![None; batch.len()];
            for row in rows {
                let n = row.get::<_, i64>(0) as usize;
                let Some(slot) = n.checked_sub(1).and_then(|i| found.get_mut(i)) else {
                    return Err(damaged(format!("idempotency lookup: ordinal {n}")));
                };
                let fp: &[u8] = row.get(2);
                let fp: [u8; 32] = fp.try_into().map_err(|_| {
                    let (t, s, _) = &batch[n - 1];
                    damaged(format!("idempotency {t}/{s}: fingerprint"))
                })?;
                *slot = Some((request_id(row.get(1))?, fp));
            }
            Ok(found)
        }
        .await
        .map_err(Arc::new);
        match found {
            Ok(found) => {
                for ((_, _, reply), f) in batch.into_iter().zip(found) {
                    let _ = reply.send(Ok(f));
                }
            }
            Err(e) => {
                for (_, _, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A batch's request rows as one array per column, which `unnest` turns back into rows. Sent
/// in binary: as JSON (`jsonb_to_recordset`), parsing every field cost the database about as
/// much as writing the row and its indexes.
#[derive(Default)]
struct RequestColumns {
    id: Vec<String>,
    state: Vec<String>,
    /// Not yet final.
    open: Vec<bool>,
    /// The indexes of this batch's records of each request (appended to the stored ones), as
    /// array literals: `unnest` cannot take an array of arrays of different lengths.
    records: Vec<String>,
    teller: Vec<String>,
    branch: Vec<String>,
    code: Vec<String>,
    minor_units: Vec<i64>,
    currency: Vec<String>,
    submitted_at_ms: Vec<i64>,
    updated_at_ms: Vec<i64>,
    /// Array literals, as `records`.
    deciders: Vec<String>,
    final_decider: Vec<Option<String>>,
    first_accepted_at_ms: Vec<Option<i64>>,
    finished_at_ms: Vec<Option<i64>>,
    on_site_supervisor: Vec<Option<String>>,
    on_site_at_ms: Vec<Option<i64>>,
    review: Vec<Option<String>>,
    returns: Vec<i32>,
}

impl RequestColumns {
    fn push(&mut self, id: &str, open: bool, records: &[u64], s: &Summary) {
        self.id.push(id.to_owned());
        self.state.push(s.state.clone());
        self.open.push(open);
        self.records
            .push(array_literal(records.iter().map(u64::to_string)));
        self.teller.push(s.teller.clone());
        self.branch.push(s.branch.clone());
        self.code.push(s.code.clone());
        self.minor_units.push(s.minor_units);
        self.currency.push(s.currency.clone());
        self.submitted_at_ms.push(s.submitted_at_ms);
        self.updated_at_ms.push(s.updated_at_ms);
        self.deciders
            .push(array_literal(s.deciders.iter().map(|d| quoted(d))));
        self.final_decider.push(s.final_decider.clone());
        self.first_accepted_at_ms.push(s.first_accepted_at_ms);
        self.finished_at_ms.push(s.finished_at_ms);
        self.on_site_supervisor.push(s.on_site_supervisor.clone());
        self.on_site_at_ms.push(s.on_site_at_ms);
        self.review.push(s.review.clone());
        self.returns
            .push(i32::try_from(s.returns).unwrap_or(i32::MAX));
    }

    /// In `UPSERT_REQUESTS`'s order.
    fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.id,
            &self.state,
            &self.open,
            &self.records,
            &self.teller,
            &self.branch,
            &self.code,
            &self.minor_units,
            &self.currency,
            &self.submitted_at_ms,
            &self.updated_at_ms,
            &self.deciders,
            &self.final_decider,
            &self.first_accepted_at_ms,
            &self.finished_at_ms,
            &self.on_site_supervisor,
            &self.on_site_at_ms,
            &self.review,
            &self.returns,
        ]
    }
}

/// PostgreSQL's text form of a one-dimensional array of already-quoted elements.
fn array_literal(elements: impl Iterator<Item = String>) -> String {
    format!("{{{}}}", elements.collect::<Vec<_>>().join(","))
}

/// An array element in double quotes, backslash before `"` and `\`: any text reads back as
/// itself, commas, braces and the word NULL included.
fn quoted(text: &str) -> String {
    let mut q = String::with_capacity(text.len() + 2);
    q.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// New (teller, serial) rows, one array per column.
#[derive(Default)]
struct IdempotencyColumns {
    teller: Vec<String>,
    serial: Vec<String>,
    request: Vec<String>,
    fingerprint: Vec<Vec<u8>>,
}

const UPSERT_REQUESTS: &str = "INSERT INTO requests AS q (id, state, open, records, teller, \
        branch, code, minor_units, currency, submitted_at_ms, updated_at_ms, deciders, \
        final_decider, first_accepted_at_ms, finished_at_ms, on_site_supervisor, \
        on_site_at_ms, review, returns) \
    SELECT id, state, open, records::bigint[], teller, branch, code, minor_units, currency, \
        submitted_at_ms, updated_at_ms, deciders::text[], final_decider, first_accepted_at_ms, \
        finished_at_ms, on_site_supervisor, on_site_at_ms, review, returns \
    FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::text[], $6::text[], \
        $7::text[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], \
        $13::text[], $14::bigint[], $15::bigint[], $16::text[], $17::bigint[], $18::text[], \
        $19::integer[]) AS r(id, state, open, records, teller, branch, code, minor_units, \
        currency, submitted_at_ms, updated_at_ms, deciders, final_decider, \
        first_accepted_at_ms, finished_at_ms, on_site_supervisor, on_site_at_ms, review, \
        returns) \
    ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, open = EXCLUDED.open, \
        records = q.records || EXCLUDED.records, teller = EXCLUDED.teller, \
        branch = EXCLUDED.branch, code = EXCLUDED.code, minor_units = EXCLUDED.minor_units, \
        currency = EXCLUDED.currency, submitted_at_ms = EXCLUDED.submitted_at_ms, \
        updated_at_ms = EXCLUDED.updated_at_ms, deciders = EXCLUDED.deciders, \
        final_decider = EXCLUDED.final_decider, \
        first_accepted_at_ms = EXCLUDED.first_accepted_at_ms, \
        finished_at_ms = EXCLUDED.finished_at_ms, \
        on_site_supervisor = EXCLUDED.on_site_supervisor, \
        on_site_at_ms = EXCLUDED.on_site_at_ms, review = EXCLUDED.review, \
        returns = EXCLUDED.returns";

const CHECK_TERM: &str = "SELECT term FROM countersign_lease WHERE id = 1 FOR SHARE";

const SET_APPLIED: &str = "UPDATE projection_state SET applied = $1 WHERE id = 1";

const UPSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency (teller, serial, request, fingerprint) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) \
    ON CONFLICT (teller, serial) DO UPDATE SET request = EXCLUDED.request, \
        fingerprint = EXCLUDED.fingerprint";

/// The summary's columns, in `summary_of`'s order.
const SUMMARY: &str = "teller, branch, code, minor_units, currency, submitted_at_ms, \
    updated_at_ms, state, deciders, final_decider, first_accepted_at_ms, finished_at_ms, \
    on_site_supervisor, on_site_at_ms, review, returns";

fn summary_of(row: &Row, at: usize) -> Summary {
    Summary {
        teller: row.get(at),
        branch: row.get(at + 1),
        code: row.get(at + 2),
        minor_units: row.get(at + 3),
        currency: row.get(at + 4),
        submitted_at_ms: row.get(at + 5),
        updated_at_ms: row.get(at + 6),
        state: row.get(at + 7),
        deciders: row.get(at + 8),
        final_decider: row.get(at + 9),
        first_accepted_at_ms: row.get(at + 10),
        finished_at_ms: row.get(at + 11),
        on_site_supervisor: row.get(at + 12),
        on_site_at_ms: row.get(at + 13),
        review: row.get(at + 14),
        returns: u32::try_from(row.get::<_, i32>(at + 15)).unwrap_or(0),
    }
}

fn damaged(what: String) -> StorageError {
    StorageError::damaged("read the projection", std::io::Error::other(what))
}

fn request_id(s: &str) -> Result<RequestId, StorageError> {
    RequestId::parse(s).ok_or_else(|| damaged(format!("request id {s:?} does not parse")))
}

/// A search cursor: the last hit's submission time (big-endian) and id.
fn cursor_of(at_ms: i64, id: &str) -> Vec<u8> {
    let mut c = at_ms.to_be_bytes().to_vec();
    c.extend_from_slice(id.as_bytes());
    c
}

fn parse_cursor(c: &[u8]) -> Option<(i64, String)> {
    let (at, id) = c.split_at_checked(8)?;
    Some((
        i64::from_be_bytes(at.try_into().ok()?),
        String::from_utf8(id.to_vec()).ok()?,
    ))
}

impl Projection for PgProjection {
    fn applied(&self) -> Result<u64, StorageError> {
        self.db.run(|pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let row = client
                .query_one("SELECT applied FROM projection_state WHERE id = 1", &[])
                .await
                .map_err(unavailable("read the applied count"))?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn apply(&self, updates: &[RowUpdate], applied: u64) -> Result<(), StorageError> {
        // A batch often holds several records of one request: one row each, as of its last.
        let mut order: Vec<&RequestId> = Vec::new();
        let mut last: HashMap<&RequestId, (&RowUpdate, Vec<u64>)> = HashMap::new();
        let mut idem = IdempotencyColumns::default();
        for u in updates {
            let (row, records) = last.entry(&u.request).or_insert_with(|| {
                order.push(&u.request);
                (u, Vec::new())
            });
            *row = u;
            records.push(u.index);
            if let Some((teller, serial, fp)) = &u.created {
                idem.teller.push(teller.to_string());
                idem.serial.push(serial.to_string());
                idem.request.push(u.request.to_string());
                idem.fingerprint.push(fp.to_vec());
            }
        }
        let mut requests = RequestColumns::default();
        for (u, records) in order.iter().filter_map(|id| last.get(id)) {
            requests.push(u.request.as_str(), !u.state.is_final(), records, &u.summary);
        }
        let term = self.db.term()?;
        self.db.run(move |pool| async move {
            let mut client = pool.get().await.map_err(no_connection)?;
            let tx = client
                .transaction()
                .await
                .map_err(unavailable("begin projection batch"))?;
            // Prepared once per connection, as every statement of the hot path: a Parse and
            // Describe round trip and a plan each time cost more than the rows.
            let prepare = |sql: &'static str| tx.prepare_cached(sql);
            let check = prepare(CHECK_TERM)
                .await
                .map_err(unavailable("check the leader's term"))?;
            let (upsert_requests, upsert_idempotency, set_applied) = (
                prepare(UPSERT_REQUESTS)
                    .await
                    .map_err(unavailable("write request rows"))?,
                prepare(UPSERT_IDEMPOTENCY)
                    .await
                    .map_err(unavailable("write idempotency rows"))?,
                prepare(SET_APPLIED)
                    .await
                    .map_err(unavailable("write the applied count"))?,
            );
            let current: i64 = tx
                .query_one(&check, &[])
                .await
                .map_err(unavailable("check the leader's term"))?
                .get(0);
            if current as u64 != term {
                return Err(StorageError::Fenced {
                    ours: term,
                    current: current as u64,
                });
            }
            tx.execute(&upsert_requests, &requests.params())
                .await
                .map_err(unavailable("write request rows"))?;
            let idem_params: [&(dyn ToSql + Sync); 4] =
                [&idem.teller, &idem.serial, &idem.request, &idem.fingerprint];
            tx.execute(&upsert_idempotency, &idem_params)
                .await
                .map_err(unavailable("write idempotency rows"))?;
            tx.execute(&set_applied, &[&(applied as i64)])
                .await
                .map_err(unavailable("write the applied count"))?;
            tx.commit()
                .await
                .map_err(unavailable("commit projection batch"))
        })
    }

    fn request(&self, id: &RequestId) -> Result<Option<(State, Vec<u64>)>, StorageError> {
        let id = id.to_string();
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let Some(row) = super::by_key(
                &client,
                "SELECT state, records FROM requests WHERE id = $1",
                &[(&id, Type::TEXT)],
            )
            .await
            .map_err(unavailable("read request row"))?
            else {
                return Ok(None);
            };
            let state: String = row.get(0);
            let state = state_from(&state)
                .ok_or_else(|| damaged(format!("request {id}: unknown state {state:?}")))?;
            let records: Vec<i64> = row.get(1);
            Ok(Some((
                state,
                records.into_iter().map(|i| i as u64).collect(),
            )))
        })
    }

    fn idempotency(
        &self,
        teller: &PrincipalId,
        serial: &TellerSerial,
    ) -> Result<Option<(RequestId, [u8; 32])>, StorageError> {
        let (teller, serial) = (teller.to_string(), serial.to_string());
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let Some(row) = super::by_key(
                &client,
                "SELECT request, fingerprint FROM idempotency WHERE teller = $1 AND serial = $2",
                &[(&teller, Type::TEXT), (&serial, Type::TEXT)],
            )
            .await
            .map_err(unavailable("read idempotency row"))?
            else {
                return Ok(None);
            };
            let id = request_id(row.get(0))?;
            let fp: &[u8] = row.get(1);
            let fp: [u8; 32] = fp
                .try_into()
                .map_err(|_| damaged(format!("idempotency {teller}/{serial}: fingerprint")))?;
            Ok(Some((id, fp)))
        })
    }

    fn idempotency_soon(
        &self,
        teller: PrincipalId,
        serial: TellerSerial,
    ) -> BoxFuture<'_, Result<Option<Submitted>, StorageError>> {
        Box::pin(async move {
            let stopped = || {
                StorageError::unavailable(
                    "read idempotency row",
                    std::io::Error::other("the lookup batcher has stopped"),
                )
            };
            let (tx, rx) = oneshot::channel();
            self.lookups
                .send((teller, serial, tx))
                .await
                .map_err(|_| stopped())?;
            rx.await
                .map_err(|_| stopped())?
                .map_err(|e| StorageError::unavailable("read idempotency row", SharedError(e)))
        })
    }

    fn summary(&self, id: &RequestId) -> Result<Option<Summary>, StorageError> {
        let id = id.to_string();
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let row = super::by_key(
                &client,
                &format!("SELECT {SUMMARY} FROM requests WHERE id = $1"),
                &[(&id, Type::TEXT)],
            )
            .await
            .map_err(unavailable("read summary"))?;
            Ok(row.map(|r| summary_of(&r, 0)))
        })
    }

    fn search(&self, q: &SearchQuery) -> Result<SearchPage, StorageError> {
        let q = q.clone();
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            // Only the filters given become conditions, so the planner picks their index.
            let mut conditions: Vec<String> = Vec::new();
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            let mut condition = |sql: &str, value: Box<dyn ToSql + Sync + Send>| {
                params.push(value);
                conditions.push(sql.replace('?', &format!("${}", params.len())));
            };
            if let Some(t) = &q.teller {
                condition("teller = ?", Box::new(t.clone()));
            }
            if let Some(s) = &q.supervisor {
                condition("deciders @> ARRAY[?::text]", Box::new(s.clone()));
            }
            if let Some(b) = &q.branch {
                condition("branch = ?", Box::new(b.clone()));
            }
            if let Some(c) = &q.code {
                condition("code = ?", Box::new(c.clone()));
            }
            if let Some(o) = q.outcome {
                condition("state = ?", Box::new(state_name(o).to_string()));
            }
            if let Some(v) = &q.review {
                condition("review = ?", Box::new(v.clone()));
            }
            if let Some(from) = q.from_ms {
                condition("submitted_at_ms >= ?", Box::new(from));
            }
            if let Some(until) = q.until_ms {
                condition("submitted_at_ms < ?", Box::new(until));
            }
            if let Some((at, id)) = q.cursor.as_deref().and_then(parse_cursor) {
                condition("submitted_at_ms <= ?", Box::new(at));
                let n = params.len();
                params.push(Box::new(id));
                conditions.push(format!(
                    "(submitted_at_ms < ${n} OR id > ${})",
                    params.len()
                ));
            }
            let filter = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            let limit = q.page_size as i64 + 1;
            let sql = format!(
                "SELECT id, {SUMMARY} FROM requests {filter} \
                 ORDER BY submitted_at_ms DESC, id LIMIT {limit}"
            );
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = client
                .query(&sql, &refs)
                .await
                .map_err(unavailable("search"))?;
            let more = rows.len() > q.page_size;
            let mut hits = Vec::with_capacity(rows.len().min(q.page_size));
            for row in rows.iter().take(q.page_size) {
                hits.push((request_id(row.get(0))?, summary_of(row, 1)));
            }
            let cursor = more
                .then(|| {
                    hits.last()
                        .map(|(id, s)| cursor_of(s.submitted_at_ms, id.as_str()))
                })
                .flatten();
            Ok(SearchPage { hits, cursor })
        })
    }

    fn summaries_between(
        &self,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
        max: usize,
    ) -> Result<Result<Vec<Summary>, usize>, StorageError> {
        self.db.run(move |pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {SUMMARY} FROM requests \
                         WHERE ($1::bigint IS NULL OR submitted_at_ms >= $1) \
                           AND ($2::bigint IS NULL OR submitted_at_ms < $2) \
                         ORDER BY submitted_at_ms DESC, id LIMIT $3"
                    ),
                    &[&from_ms, &until_ms, &(max as i64 + 1)],
                )
                .await
                .map_err(unavailable("read summaries"))?;
            if rows.len() > max {
                return Ok(Err(rows.len()));
            }
            Ok(Ok(rows.iter().map(|r| summary_of(r, 0)).collect()))
        })
    }

    fn active(&self) -> Result<Vec<RequestId>, StorageError> {
        self.db.run(|pool| async move {
            let client = pool.get().await.map_err(no_connection)?;
            let rows = client
                .query("SELECT id FROM requests WHERE open", &[])
                .await
                .map_err(unavailable("scan active requests"))?;
            rows.iter().map(|r| request_id(r.get(0))).collect()
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        // Every batch was committed when `apply` returned.
        Ok(())
    }

    fn remote(&self) -> bool {
        true
    }

    fn batch_size(&self) -> usize {
        // One transaction of five statements per batch: large enough that the engine's thread
        // spends little of its time waiting on them under load.
        1024
    }
}
