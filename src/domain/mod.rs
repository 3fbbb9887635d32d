//! The pure domain: identifiers, the submission's content, the request state machine and the
//! events that move it. Nothing here does I/O, reads the clock or knows protobuf, sled or serde;
//! time arrives as an argument and every fact arrives as a value.

pub mod event;
pub mod fold;
pub mod ids;
pub mod request;
#[cfg(test)]
pub(crate) mod testing;
pub mod types;
pub mod validate;

pub use event::{Actor, EngineEvent, EngineRecord, Entry, Event, Record, WithdrawReason};
pub use fold::FoldError;
pub use ids::{BranchId, ImageHash, PrincipalId, RequestId, TellerSerial};
pub use request::{Act, FenceError, Request, State};
pub use types::*;
