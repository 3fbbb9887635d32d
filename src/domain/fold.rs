//! The one fold: how ledger records become requests. A Submitted record opens a request and
//! every later record of it applies to it through `Request::apply`. The engine (live and at a
//! rebuild), recovery's replay into the projection, loading a request no longer in memory and
//! the offline verifier all call `step` or `fold`, so they cannot disagree on what a history
//! means.

use std::fmt;

use super::event::{Event, Record};
use super::ids::RequestId;
use super::request::{ApplyError, Request};

/// Why records do not fold into a request: a ledger that disagrees with the state machine,
/// which means a bug or damage, never a caller's mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoldError {
    /// A record other than Submitted names a request that no earlier record opened.
    NotOpened { index: u64, request: RequestId },
    /// A second Submitted record names a request that is already open.
    Reopened { index: u64, request: RequestId },
    /// The record belongs to another request than the one being folded.
    OtherRequest {
        index: u64,
        expected: RequestId,
        found: RequestId,
    },
    /// The state machine refuses the record's event in the request's state.
    Refused { index: u64, source: ApplyError },
    /// There were no records at all.
    Empty,
}

impl fmt::Display for FoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoldError::NotOpened { index, request } => write!(
                f,
                "record {index} names request {request}, which no submitted record opened"
            ),
            FoldError::Reopened { index, request } => {
                write!(f, "record {index} submits request {request} a second time")
            }
            FoldError::OtherRequest {
                index,
                expected,
                found,
            } => write!(f, "record {index} belongs to {found}, not {expected}"),
            FoldError::Refused { index, source } => write!(f, "record {index}: {source}"),
            FoldError::Empty => write!(f, "no records to fold"),
        }
    }
}

impl std::error::Error for FoldError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FoldError::Refused { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Folds one record: `current` is the request the record names as folded so far (`None` when
/// there is none yet). A Submitted or FallbackRegistered record returns the request it opens; any other record
/// changes `current` in place and returns `None`.
pub fn step(
    current: Option<&mut Request>,
    index: u64,
    rec: &Record,
) -> Result<Option<Request>, FoldError> {
    match (current, &rec.event) {
        (None, Event::Submitted { .. } | Event::FallbackRegistered { .. }) => {
            Ok(Request::open(index, rec))
        }
        (Some(_), Event::Submitted { .. } | Event::FallbackRegistered { .. }) => {
            Err(FoldError::Reopened {
                index,
                request: rec.request.clone(),
            })
        }
        (None, _) => Err(FoldError::NotOpened {
            index,
            request: rec.request.clone(),
        }),
        (Some(r), event) => {
            if r.id != rec.request {
                return Err(FoldError::OtherRequest {
                    index,
                    expected: r.id.clone(),
                    found: rec.request.clone(),
                });
            }
            r.apply(index, rec.at, event)
                .map_err(|source| FoldError::Refused { index, source })?;
            Ok(None)
        }
    }
}

/// Folds the records of one request, oldest first, into the request they describe.
pub fn fold<'a>(
    records: impl IntoIterator<Item = (u64, &'a Record)>,
) -> Result<Request, FoldError> {
    let mut request: Option<Request> = None;
    for (index, rec) in records {
        if let Some(opened) = step(request.as_mut(), index, rec)? {
            request = Some(opened);
        }
    }
    request.ok_or(FoldError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Actor, WithdrawReason};
    use crate::domain::ids::PrincipalId;
    use crate::domain::request::State;
    use crate::domain::types::Timestamp;

    fn submitted(id: &RequestId) -> Record {
        let r = crate::domain::testing::request(id, 1);
        Record {
            request: id.clone(),
            at: Timestamp(1),
            actor: Actor::Principal(r.teller.clone()),
            event: Event::Submitted {
                teller: r.teller,
                branch: r.branch,
                submission: r.submission,
                requirements: r.requirements,
            },
        }
    }

    fn offered(id: &RequestId, epoch: u64) -> Record {
        Record {
            request: id.clone(),
            at: Timestamp(2),
            actor: Actor::System,
            event: Event::Offered {
                supervisor: PrincipalId::new("sup-01"),
                epoch,
                pool_size: 1,
                accept_by: Timestamp(1000),
            },
        }
    }

    #[test]
    fn a_history_folds_into_its_request() {
        let id = RequestId::from_random([7; 16]);
        let records = [submitted(&id), offered(&id, 1)];
        let r = fold(records.iter().enumerate().map(|(i, r)| (i as u64 + 5, r)))
            .expect("a valid history");
        assert_eq!(r.state, State::Offered);
        assert_eq!(r.submitted_index, 5);
        assert_eq!(r.version, 6);
    }

    #[test]
    fn what_does_not_fold_is_named() {
        let id = RequestId::from_random([7; 16]);
        let other = RequestId::from_random([8; 16]);
        assert_eq!(fold([]), Err(FoldError::Empty));
        let o = offered(&id, 1);
        assert_eq!(
            fold([(0, &o)]),
            Err(FoldError::NotOpened {
                index: 0,
                request: id.clone()
            })
        );
        let s = submitted(&id);
        assert_eq!(
            fold([(0, &s), (1, &s)]),
            Err(FoldError::Reopened {
                index: 1,
                request: id.clone()
            })
        );
        let foreign = offered(&other, 1);
        assert!(matches!(
            fold([(0, &s), (1, &foreign)]),
            Err(FoldError::OtherRequest { index: 1, .. })
        ));
        let stale = offered(&id, 2);
        assert!(matches!(
            fold([(0, &s), (1, &stale)]),
            Err(FoldError::Refused { index: 1, .. })
        ));
        let w = Record {
            request: id.clone(),
            at: Timestamp(3),
            actor: Actor::System,
            event: Event::OfferWithdrawn {
                supervisor: PrincipalId::new("sup-01"),
                epoch: 1,
                reason: WithdrawReason::Restart,
            },
        };
        assert!(matches!(
            fold([(0, &s), (1, &w)]),
            Err(FoldError::Refused { index: 1, .. })
        ));
    }
}
