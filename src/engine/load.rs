//! Reading a request back from storage: its records named by the projection, folded by the
//! one fold (`domain::fold`). For requests no longer in memory, for audits, and for recovery.

use crate::domain::{Record, Request, RequestId, fold};
use crate::storage::{LedgerRead, Projection, StorageError};

/// A request folded from its records, with the records (index, decoded, stored bytes).
pub struct Loaded {
    pub request: Request,
    pub records: Vec<(u64, Record, Vec<u8>)>,
}

/// Reads the request's records named by the projection and folds them. `Ok(None)` when the
/// projection has no such request. Blocking.
pub fn load(
    ledger: &dyn LedgerRead,
    projection: &dyn Projection,
    id: &RequestId,
) -> Result<Option<Loaded>, StorageError> {
    let Some((_, indexes)) = projection.request(id)? else {
        return Ok(None);
    };
    fold_indexes(ledger, id, &indexes).map(Some)
}

/// Folds the records at `indexes` (oldest first) into request `id`. Blocking.
pub fn fold_indexes(
    ledger: &dyn LedgerRead,
    id: &RequestId,
    indexes: &[u64],
) -> Result<Loaded, StorageError> {
    let mut records = Vec::with_capacity(indexes.len());
    for (&index, bytes) in indexes.iter().zip(ledger.read_many(indexes)?) {
        let rec = crate::ledger::record::decode(&bytes)
            .map_err(|source| StorageError::Record { index, source })?;
        records.push((index, rec, bytes));
    }
    let request = fold::fold(records.iter().map(|(i, r, _)| (*i, r))).map_err(|source| {
        StorageError::Fold {
            request: id.clone(),
            source,
        }
    })?;
    is_of(&request, id)?;
    Ok(Loaded { request, records })
}

/// The request as it stood after each of its records with an index in `(after, until)`,
/// oldest first: the changes a Watch resuming after version `after` missed, up to the state
/// `until` that it is sent as current. Reads what the projection names. Blocking.
pub fn states_between(
    ledger: &dyn LedgerRead,
    projection: &dyn Projection,
    id: &RequestId,
    after: u64,
    until: u64,
) -> Result<Vec<Request>, StorageError> {
    let Some((_, indexes)) = projection.request(id)? else {
        return Err(StorageError::Inconsistent(format!(
            "request {id} is watched but has no projection row"
        )));
    };
    let indexes: Vec<u64> = indexes.into_iter().filter(|&i| i < until).collect();
    let mut request: Option<Request> = None;
    let mut states = Vec::new();
    for (&index, bytes) in indexes.iter().zip(ledger.read_many(&indexes)?) {
        let rec = crate::ledger::record::decode(&bytes)
            .map_err(|source| StorageError::Record { index, source })?;
        let opened =
            fold::step(request.as_mut(), index, &rec).map_err(|source| StorageError::Fold {
                request: id.clone(),
                source,
            })?;
        if let Some(opened) = opened {
            is_of(&opened, id)?;
            request = Some(opened);
        }
        if let Some(r) = request.as_ref().filter(|_| index > after) {
            states.push(r.clone());
        }
    }
    Ok(states)
}

/// The fold checks the records agree with each other; the first must also be `id`'s.
fn is_of(request: &Request, id: &RequestId) -> Result<(), StorageError> {
    if &request.id != id {
        return Err(StorageError::Inconsistent(format!(
            "the projection's records for {id} belong to {}",
            request.id
        )));
    }
    Ok(())
}
