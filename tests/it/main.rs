//! Integration tests at the gRPC boundary: the real server on 127.0.0.1:0 with mutual TLS, real
//! clients, real ledger and sled files in a temporary directory. Nothing of ours is mocked;
//! time is a manual clock the test moves, and dispatch draws from a seeded RNG.

// Benchmarks and tests time real elapsed time; only the engine keeps its clock reads in
// `engine::clock` (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod backup;
mod bench;
mod cluster;
mod console;
mod copy;
mod crash;
mod database_failover;
mod database_tls;
mod directory;
mod durability;
mod engine_records;
mod exposition;
mod failover;
mod fallback;
mod faults;
mod fixtures;
mod harness;
mod identity;
mod interop;
mod ledger;
mod lifecycle;
mod limits;
mod metrics;
mod policy;
mod rekey;
mod review;
mod shutdown;
mod simulation;
mod spans;
mod startup;
mod witness;
