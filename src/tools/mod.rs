//! The binary's tools, apart from the engine's layers: the demo, the load generator, the
//! requests and images both send (`workload`), the copy of a store from one backend to
//! another (`copy`), online backup and checked restore (`backup`), the development PKI and
//! the mTLS client helpers the tools and the tests use. Nothing in the engine's layers imports
//! this module.

pub mod backup;
pub mod bench;
pub mod client;
pub mod copy;
pub mod demo;
pub mod pki;
pub mod workload;
