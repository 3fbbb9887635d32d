//! The storage seam: what the engine needs of the ledger, the image store and the audit
//! projection, and the backends behind it. `embedded` (segment files, the image log and sled)
//! is the default.

pub mod embedded;
