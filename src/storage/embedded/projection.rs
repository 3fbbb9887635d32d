//! sled projections: which ledger records belong to each request and its state, the
//! idempotency index, and the set of undecided requests. Each batch of updates is applied in
//! one sled transaction together with the count of ledger records it reflects, so after a crash
//! the engine replays exactly the records sled has not seen.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::domain::{PrincipalId, RequestId, State, TellerSerial};
use crate::storage::{RowUpdate, SearchPage, SearchQuery, Summary, state_from, state_name};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action}: {source}")]
    Sled {
        action: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("projection row for {0} is damaged")]
    Damaged(String),
}

fn sled_err(action: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Sled { action, source }
}

/// The projection in sled.
pub struct SledProjection {
    db: sled::Db,
    /// request id -> RequestRow
    requests: sled::Tree,
    /// teller \0 serial -> IdemRow
    idem: sled::Tree,
    /// request id -> () for every request not in a final state
    active: sled::Tree,
    /// "applied" -> count of ledger records reflected, u64 big-endian
    meta: sled::Tree,
    /// kind \0 value \0 (i64::MAX - submitted ms, big-endian) request id -> (): audit search
    search: sled::Tree,
}

#[derive(Serialize, Deserialize)]
struct RequestRow {
    state: String,
    /// Ledger indexes of the request's records, oldest first.
    records: Vec<u64>,
    summary: Option<Summary>,
}

#[derive(Serialize, Deserialize)]
struct IdemRow {
    request: String,
    fingerprint: String,
}

const APPLIED: &[u8] = b"applied";

impl SledProjection {
    /// Opens (or creates) the projection with a page cache of at most `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        // Nothing here needs sled's own fsync for safety: every row is rebuilt from the ledger
        // past `applied` at start. Every transaction already hands its log to the OS; sled's
        // periodic flush only added fsyncs that showed as latency spikes (W1 at 1,000/s: notify
        // p99.9 up to 39 ms with a 2 s flush, at most 21 ms without). Shutdown flushes.
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None);
        let db = open_when_released(&config)?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_err("open sled tree"));
        Ok(SledProjection {
            requests: tree("requests")?,
            idem: tree("idem")?,
            active: tree("active")?,
            meta: tree("meta")?,
            search: tree("search")?,
            db,
        })
    }

    /// How many ledger records the projections reflect.
    pub fn applied(&self) -> Result<u64, StoreError> {
        let v = self
            .meta
            .get(APPLIED)
            .map_err(sled_err("read applied index"))?;
        match v {
            None => Ok(0),
            Some(b) => Ok(u64::from_be_bytes(
                b.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Damaged("applied".into()))?,
            )),
        }
    }

    /// Applies the updates of consecutive records, ending at `applied` records, atomically.
    pub fn apply(&self, updates: &[RowUpdate], applied: u64) -> Result<(), StoreError> {
        let trees = (
            &self.requests,
            &self.idem,
            &self.active,
            &self.meta,
            &self.search,
        );
        let res: Result<(), TransactionError<StoreError>> =
            trees.transaction(|(requests, idem, active, meta, search)| {
                // A batch often holds several records of one request (submitted and offered
                // land together under load): each row is read and written once per batch.
                let mut rows: Vec<(&RequestId, RequestRow)> = Vec::new();
                let mut slots: std::collections::HashMap<&RequestId, usize> =
                    std::collections::HashMap::new();
                for u in updates {
                    let key = u.request.as_str().as_bytes();
                    let slot = match slots.get(&u.request) {
                        Some(&i) => i,
                        None => {
                            let row = match requests.get(key)? {
                                Some(b) => {
                                    serde_json::from_slice::<RequestRow>(&b).map_err(|_| {
                                        ConflictableTransactionError::Abort(StoreError::Damaged(
                                            u.request.to_string(),
                                        ))
                                    })?
                                }
                                None => RequestRow {
                                    state: String::new(),
                                    records: Vec::new(),
                                    summary: None,
                                },
                            };
                            rows.push((&u.request, row));
                            slots.insert(&u.request, rows.len() - 1);
                            rows.len() - 1
                        }
                    };
                    let row = &mut rows[slot].1;
                    let was_final = state_from(&row.state).is_some_and(State::is_final);
                    row.state = state_name(u.state).into();
                    row.records.push(u.index);
                    row.summary = Some(u.summary.clone());
                    let at = u.summary.submitted_at_ms;
                    if let Some((teller, serial, fp)) = &u.created {
                        let idem_row = IdemRow {
                            request: u.request.to_string(),
                            fingerprint: hex::encode(fp),
                        };
                        idem.insert(idem_key(teller, serial), plain_json(&idem_row))?;
                        search.insert(index_key("a", "", at, &u.request), &[])?;
                        search.insert(index_key("t", &u.summary.teller, at, &u.request), &[])?;
                        search.insert(index_key("b", &u.summary.branch, at, &u.request), &[])?;
                        search.insert(index_key("c", &u.summary.code, at, &u.request), &[])?;
                    }
                    if let Some(s) = &u.decided_by {
                        search.insert(index_key("s", s.as_str(), at, &u.request), &[])?;
                    }
                    if (u.state.is_final() && !was_final) || u.state == State::Returned {
                        search.insert(index_key("o", state_name(u.state), at, &u.request), &[])?;
                    }
                    // Once per status: the key of a status already indexed is the same key.
                    if let Some(v) = &u.summary.review {
                        search.insert(index_key("v", v, at, &u.request), &[])?;
                    }
                }
                for (id, row) in &rows {
                    let key = id.as_str().as_bytes();
                    if state_from(&row.state).is_some_and(State::is_final) {
                        active.remove(key)?;
                    } else {
                        active.insert(key, &[])?;
                    }
                    requests.insert(key, plain_json(row))?;
                }
                meta.insert(APPLIED, &applied.to_be_bytes())?;
                Ok(())
            });
        res.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(source) => StoreError::Sled {
                action: "apply projection batch",
                source,
            },
        })
    }

    /// The request's ledger record indexes and state, if it exists.
    pub fn request(&self, id: &RequestId) -> Result<Option<(State, Vec<u64>)>, StoreError> {
        let Some(row) = self.row(id)? else {
            return Ok(None);
        };
        let state = state_from(&row.state).ok_or_else(|| StoreError::Damaged(id.to_string()))?;
        Ok(Some((state, row.records)))
    }

    /// The request a teller's serial names, with the submission's fingerprint.
    pub fn idempotency(
        &self,
        teller: &PrincipalId,
        serial: &TellerSerial,
    ) -> Result<Option<(RequestId, [u8; 32])>, StoreError> {
        let Some(b) = self
            .idem
            .get(idem_key(teller, serial))
            .map_err(sled_err("read idempotency row"))?
        else {
            return Ok(None);
        };
        let damaged = || StoreError::Damaged(format!("idempotency {teller}/{serial}"));
        let row: IdemRow = serde_json::from_slice(&b).map_err(|_| damaged())?;
        let id = RequestId::parse(&row.request).ok_or_else(damaged)?;
        let mut fp = [0u8; 32];
        hex::decode_to_slice(&row.fingerprint, &mut fp).map_err(|_| damaged())?;
        Ok(Some((id, fp)))
    }

    /// The request's summary, if it exists.
    pub fn summary(&self, id: &RequestId) -> Result<Option<Summary>, StoreError> {
        Ok(self.row(id)?.and_then(|row| row.summary))
    }

    /// A request's row, decoded.
    fn row(&self, id: &RequestId) -> Result<Option<RequestRow>, StoreError> {
        let Some(b) = self
            .requests
            .get(id.as_str().as_bytes())
            .map_err(sled_err("read request row"))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&b)
            .map(Some)
            .map_err(|_| StoreError::Damaged(id.to_string()))
    }

    /// Walks the most selective index newest first, filtering on the summaries.
    pub fn search(&self, q: &SearchQuery) -> Result<SearchPage, StoreError> {
        // A review status first: the review queue is small beside the rest.
        let (kind, value) = match (&q.teller, &q.supervisor, &q.branch, &q.code, q.outcome) {
            _ if q.review.is_some() => ("v", q.review.as_deref().unwrap_or_default()),
            (Some(t), ..) => ("t", t.as_str()),
            (None, Some(s), ..) => ("s", s.as_str()),
            (None, None, Some(b), ..) => ("b", b.as_str()),
            (None, None, None, Some(c), _) => ("c", c.as_str()),
            (None, None, None, None, Some(o)) => ("o", state_name(o)),
            _ => ("a", ""),
        };
        let mut prefix = kind.as_bytes().to_vec();
        prefix.push(0);
        prefix.extend_from_slice(value.as_bytes());
        prefix.push(0);
        // Newest first: keys hold i64::MAX - time, so "until" is where the scan starts.
        let mut start = prefix.clone();
        if let Some(until) = q.until_ms {
            start.extend_from_slice(&rev_time(until.saturating_sub(1)));
        }
        if let Some(c) = &q.cursor
            && c.starts_with(&prefix)
            && *c >= start
        {
            start = c.clone();
            start.push(0);
        }
        let mut end = prefix.clone();
        match q.from_ms {
            Some(from) => {
                end.extend_from_slice(&rev_time(from));
                end.push(0xFF);
            }
            None => {
                // Every prefix ends with the 0 that ends its value: 1 sorts after all of it.
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
            }
        }
        let mut hits = Vec::new();
        let mut examined = 0;
        for item in self.search.range(start..end) {
            let (k, _) = item.map_err(sled_err("scan search index"))?;
            examined += 1;
            let id = k
                .get(prefix.len() + 8..)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(RequestId::parse)
                .ok_or_else(|| StoreError::Damaged("search key".into()))?;
            if let Some(s) = self.summary(&id)? {
                let keep = q.teller.as_ref().is_none_or(|t| &s.teller == t)
                    && q.supervisor.as_ref().is_none_or(|x| s.deciders.contains(x))
                    && q.branch.as_ref().is_none_or(|b| &s.branch == b)
                    && q.code.as_ref().is_none_or(|c| &s.code == c)
                    && q.outcome.is_none_or(|o| s.state() == Some(o))
                    && q.review
                        .as_ref()
                        .is_none_or(|v| s.review.as_ref() == Some(v));
                if keep {
                    hits.push((id, s));
                }
            }
            if hits.len() >= q.page_size || examined >= q.scan_max {
                return Ok(SearchPage {
                    hits,
                    cursor: Some(k.to_vec()),
                });
            }
        }
        Ok(SearchPage { hits, cursor: None })
    }

    /// The summaries of requests submitted in [from, until), at most `max` of them; `Err`
    /// with the count reached when there are more.
    pub fn summaries_between(
        &self,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
        max: usize,
    ) -> Result<Result<Vec<Summary>, usize>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.search(&SearchQuery {
                teller: None,
                supervisor: None,
                branch: None,
                code: None,
                outcome: None,
                from_ms,
                until_ms,
                page_size: 10_000,
                scan_max: 10_000,
                cursor,
                review: None,
            })?;
            out.extend(page.hits.into_iter().map(|(_, s)| s));
            if out.len() > max {
                return Ok(Err(out.len()));
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(Ok(out)),
            }
        }
    }

    /// Every request not in a final state.
    pub fn active(&self) -> Result<Vec<RequestId>, StoreError> {
        self.active
            .iter()
            .keys()
            .map(|k| {
                let k = k.map_err(sled_err("scan active requests"))?;
                std::str::from_utf8(&k)
                    .ok()
                    .and_then(RequestId::parse)
                    .ok_or_else(|| StoreError::Damaged("active key".into()))
            })
            .collect()
    }

    /// Makes sled's own state durable (used at shutdown; at other times sled flushes itself,
    /// and anything it loses is replayed from the ledger).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(sled_err("flush sled"))?;
        Ok(())
    }
}

/// The JSON of a row made of strings, numbers and lists, which cannot fail to serialize.
fn plain_json(row: &impl serde::Serialize) -> Vec<u8> {
    // serde_json fails only on maps with non-string keys and on types whose Serialize fails;
    // the rows have neither.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(row).expect("rows are plain data")
}

/// How long opening waits for sled's file lock to be let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled, waiting up to `LOCK_WAIT` for its file lock: sled lets go of it from a
/// background thread once the last handle is dropped, so a reopen in the same process right
/// after a close (a restart, a test) may find it still held for a moment. A lock held by
/// another running server is still refused, after the wait.
fn open_when_released(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let mut waited = std::time::Duration::ZERO;
    let step = std::time::Duration::from_millis(20);
    loop {
        match config.open() {
            // sled 0.34 reports a held lock only as this I/O error's text.
            Err(sled::Error::Io(e))
                if waited < LOCK_WAIT && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(step);
                waited += step;
            }
            r => return r.map_err(sled_err("open sled")),
        }
    }
}

/// i64::MAX - ms, big-endian, so that newer sorts first.
fn rev_time(ms: i64) -> [u8; 8] {
    (i64::MAX - ms.max(0)).to_be_bytes()
}

fn index_key(kind: &str, value: &str, submitted_ms: i64, id: &RequestId) -> Vec<u8> {
    let mut k = kind.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k.extend_from_slice(&rev_time(submitted_ms));
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn idem_key(teller: &PrincipalId, serial: &TellerSerial) -> Vec<u8> {
    let mut k = teller.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(serial.as_str().as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_let_go_is_waited_for_and_one_held_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("projection");
        let first = SledProjection::open(&path, 1 << 20).unwrap();
        let held = SledProjection::open(&path, 1 << 20);
        assert!(
            matches!(held, Err(StoreError::Sled { .. })),
            "a projection another handle holds open is refused"
        );
        drop(first);
        // Reopened at once after the drop: sled may still be letting go of its lock.
        let again = SledProjection::open(&path, 1 << 20).unwrap();
        assert_eq!(again.applied().unwrap(), 0);
    }
}
