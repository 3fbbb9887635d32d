//! Storage besides the ledger: the content-addressed image store and the sled projections.
//! Only this module imports sled. Nothing here is ever the sole copy of a fact: images are named
//! by hash in ledger records, and every projection can be rebuilt from the ledger.

pub mod images;
pub mod projection;

pub use images::{ImageStore, ImageStoreError};
pub use projection::{Projection, RowUpdate, SearchPage, SearchQuery, StoreError, Summary};
