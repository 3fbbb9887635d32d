//! Rebuilding a request from its ledger records, for requests no longer held in memory and
//! for recovery at start.

use crate::domain::{Event, Record, Request, RequestId};
use crate::ledger::record;
use crate::storage::embedded::Ledger;
use crate::storage::embedded::Projection;

use super::error::StorageFault;

/// A request folded from its records, with the records (index, decoded, stored bytes).
pub struct Loaded {
    pub request: Request,
    pub records: Vec<(u64, Record, Vec<u8>)>,
}

/// Reads the request's records named by the projection and folds them. `Ok(None)` when the
/// projection has no such request.
pub fn load(
    ledger: &Ledger,
    projection: &Projection,
    id: &RequestId,
) -> Result<Option<Loaded>, StorageFault> {
    let Some((_, indexes)) = projection
        .request(id)
        .map_err(|e| StorageFault(e.to_string()))?
    else {
        return Ok(None);
    };
    fold(ledger, id, &indexes).map(Some)
}

/// Folds the records at `indexes` (oldest first) into the request they describe.
pub fn fold(ledger: &Ledger, id: &RequestId, indexes: &[u64]) -> Result<Loaded, StorageFault> {
    let mut records = Vec::with_capacity(indexes.len());
    let mut request: Option<Request> = None;
    for &index in indexes {
        let bytes = ledger
            .read(index)
            .map_err(|e| StorageFault(e.to_string()))?;
        let rec =
            record::decode(&bytes).map_err(|e| StorageFault(format!("record {index}: {e}")))?;
        if &rec.request != id {
            return Err(StorageFault(format!(
                "record {index} belongs to {}, not {id}",
                rec.request
            )));
        }
        match (&mut request, &rec.event) {
            (None, Event::Submitted { .. }) => request = Request::open(index, &rec),
            (Some(r), e) => r
                .apply(index, rec.at, e)
                .map_err(|e| StorageFault(format!("record {index}: {e}")))?,
            (None, _) => {
                return Err(StorageFault(format!(
                    "request {id} does not start with a submitted record"
                )));
            }
        }
        records.push((index, rec, bytes));
    }
    let request = request.ok_or_else(|| StorageFault(format!("request {id} has no records")))?;
    Ok(Loaded { request, records })
}
