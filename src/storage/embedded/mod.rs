//! The embedded backend: everything on one local disk. The ledger in segment files with a
//! group-commit writer thread (`frame` the bytes of a record, `files` the pieces of a segment
//! file, `segments` reading, `writer` opening and appending), the signed checkpoints beside it
//! (`checkpoints`), the image log (`images`) and the sled projection (`projection`). Only this
//! module imports sled. Nothing here but the ledger is ever the sole copy of a fact: images are
//! named by hash in ledger records, and the projection can be rebuilt from the ledger.

pub mod checkpoints;
mod files;
pub mod frame;
pub mod images;
pub mod projection;
mod reopen;
mod seam;
mod segments;
mod writer;

pub use files::LedgerError;
pub use images::{ImageStore, ImageStoreError};
pub use projection::{SledProjection, StoreError};
pub use seam::{images_dir, ledger_dir, open, projection_dir};
pub use segments::Ledger;
pub use writer::Appender;
// The durable count is the seam's type; re-exported for the benches and tests of this backend.
pub use crate::storage::{Durable, DurableState};
