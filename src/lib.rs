//! Countersign: remote centralized authorization for bank teller transactions.
//!
//! See ARCHITECTURE.md for the map. The dependency direction is
//! `api -> engine -> (ledger, store) -> domain`.
#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod ledger;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod server;
pub mod store;
