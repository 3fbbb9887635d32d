//! Countersign: remote centralized authorization for bank teller transactions.
//!
//! See ARCHITECTURE.md for the map. The dependency direction is
//! `api -> engine -> (ledger, store) -> domain`.
#![forbid(unsafe_code)]

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
