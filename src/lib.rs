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

/// An error and its causes on one line, each cause once: many errors' messages already end
/// with their source's (so a log line carries it), and `{:#}` would then repeat it.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) || out.contains(&format!("{text}: ")) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod error_chain_tests {
    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::other("Permission denied");
        let inner = crate::storage::StorageError::unavailable("create ledger directory", io);
        let e = anyhow::Error::new(inner)
            .context("open ledger")
            .context("open storage");
        assert_eq!(
            super::error_chain(&e),
            "open storage: open ledger: create ledger directory: Permission denied"
        );
        assert_eq!(
            format!("{e:#}"),
            "open storage: open ledger: create ledger directory: Permission denied: \
             Permission denied",
            "what `{{:#}}` prints, which this avoids"
        );
    }
}
