//! Countersign: remote centralized authorization for bank teller transactions.
//!
//! See ARCHITECTURE.md for the map and the layering rules that `tests/tidy.rs` checks.
#![forbid(unsafe_code)]
// An unwrap or expect outside tests needs an `#[allow]` and a comment saying why the invariant
// holds; clock reads are kept in `engine::clock` (clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

pub mod api;
pub mod config;
pub mod domain;
pub mod engine;
pub mod ledger;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod storage;
pub mod tools;
pub mod verify;
pub mod witness;
