//! The ledger: the append-only, segmented log of records that is the system of record.
//!
//! `frame` owns the byte layout; `Ledger` opens the segments (cutting a torn tail left by a
//! crash), serves reads by index, and hands out the single `Appender`; the group-commit writer
//! thread makes records durable and publishes how many are. `record` maps domain records to the
//! bytes stored. The ledger knows nothing of sled, protobuf or the engine.

pub mod checkpoint;
pub mod checkpoints;
pub mod frame;
pub mod merkle;
pub mod record;
mod segments;
pub mod verify;
mod writer;

pub use segments::{Ledger, LedgerError};
pub use writer::{Appender, Durable, DurableState};
