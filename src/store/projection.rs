//! sled projections: which ledger records belong to each request and its state, the
//! idempotency index, and the set of undecided requests. Each batch of updates is applied in
//! one sled transaction together with the count of ledger records it reflects, so after a crash
//! the engine replays exactly the records sled has not seen.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::domain::{PrincipalId, RequestId, State, TellerSerial};

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

/// What one ledger record changes in the projections.
#[derive(Debug, Clone)]
pub struct RowUpdate {
    pub index: u64,
    pub request: RequestId,
    /// The request's state after the record.
    pub state: State,
    /// For a Submitted record: the teller, serial and content fingerprint to index.
    pub created: Option<(PrincipalId, TellerSerial, [u8; 32])>,
}

pub struct Projection {
    db: sled::Db,
    /// request id -> RequestRow
    requests: sled::Tree,
    /// teller \0 serial -> IdemRow
    idem: sled::Tree,
    /// request id -> () for every request not in a final state
    active: sled::Tree,
    /// "applied" -> count of ledger records reflected, u64 big-endian
    meta: sled::Tree,
}

#[derive(Serialize, Deserialize)]
struct RequestRow {
    state: String,
    /// Ledger indexes of the request's records, oldest first.
    records: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct IdemRow {
    request: String,
    fingerprint: String,
}

const APPLIED: &[u8] = b"applied";

impl Projection {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::open(path).map_err(sled_err("open sled"))?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_err("open sled tree"));
        Ok(Projection {
            requests: tree("requests")?,
            idem: tree("idem")?,
            active: tree("active")?,
            meta: tree("meta")?,
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
        let res: Result<(), TransactionError<StoreError>> =
            (&self.requests, &self.idem, &self.active, &self.meta).transaction(
                |(requests, idem, active, meta)| {
                    for u in updates {
                        let key = u.request.as_str().as_bytes();
                        let mut row = match requests.get(key)? {
                            Some(b) => serde_json::from_slice::<RequestRow>(&b).map_err(|_| {
                                ConflictableTransactionError::Abort(StoreError::Damaged(
                                    u.request.to_string(),
                                ))
                            })?,
                            None => RequestRow {
                                state: String::new(),
                                records: Vec::new(),
                            },
                        };
                        row.state = state_name(u.state).into();
                        row.records.push(u.index);
                        requests.insert(key, serde_json::to_vec(&row).expect("plain data"))?;
                        if let Some((teller, serial, fp)) = &u.created {
                            let idem_row = IdemRow {
                                request: u.request.to_string(),
                                fingerprint: hex::encode(fp),
                            };
                            idem.insert(
                                idem_key(teller, serial),
                                serde_json::to_vec(&idem_row).expect("plain data"),
                            )?;
                        }
                        if u.state.is_final() {
                            active.remove(key)?;
                        } else {
                            active.insert(key, &[])?;
                        }
                    }
                    meta.insert(APPLIED, &applied.to_be_bytes())?;
                    Ok(())
                },
            );
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
        let Some(b) = self
            .requests
            .get(id.as_str().as_bytes())
            .map_err(sled_err("read request row"))?
        else {
            return Ok(None);
        };
        let row: RequestRow =
            serde_json::from_slice(&b).map_err(|_| StoreError::Damaged(id.to_string()))?;
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

fn idem_key(teller: &PrincipalId, serial: &TellerSerial) -> Vec<u8> {
    let mut k = teller.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(serial.as_str().as_bytes());
    k
}

pub fn state_name(s: State) -> &'static str {
    match s {
        State::Queued => "queued",
        State::Offered => "offered",
        State::InReview => "in_review",
        State::Approved => "approved",
        State::Rejected => "rejected",
        State::Returned => "returned",
        State::Cancelled => "cancelled",
        State::Expired => "expired",
    }
}

fn state_from(s: &str) -> Option<State> {
    Some(match s {
        "queued" => State::Queued,
        "offered" => State::Offered,
        "in_review" => State::InReview,
        "approved" => State::Approved,
        "rejected" => State::Rejected,
        "returned" => State::Returned,
        "cancelled" => State::Cancelled,
        "expired" => State::Expired,
        _ => return None,
    })
}
