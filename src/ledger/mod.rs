//! The ledger's format and mathematics, whatever stores it: `record` maps domain records to
//! the bytes stored and hashed, `merkle` is the RFC 6962 tree over them, `checkpoint` the
//! C2SP signed notes that commit to a tree, `cosignature` the witnesses' cosignatures on
//! them, and `onsite` the bytes an on-site supervisor signs in a fallback and their check.
//! The ledger knows nothing of files, sled, protobuf or the engine; the backends in `storage`
//! keep its records.

pub mod checkpoint;
pub mod cosignature;
pub mod merkle;
pub mod onsite;
pub mod record;
