//! The binary's tools, apart from the engine's layers: the demo, the load generator, the
//! development PKI and the mTLS client helpers they and the tests use. Nothing in the engine's
//! layers imports this module.

pub mod bench;
pub mod client;
pub mod demo;
pub mod pki;
