//! The binary's tools, apart from the engine's layers: the demo, the load generator, the
//! requests and images both send (`workload`), the copy of a store from one backend to
//! another (`copy`), online backup and checked restore (`backup`), a branch terminal's side
//! of a fallback (`fallback`: the on-site signature), the development PKI and
//! the mTLS client helpers the tools and the tests use. Nothing in the engine's layers imports
//! this module.

pub mod backup;
pub mod bench;
pub mod client;
pub mod console_demo;
pub mod copy;
pub mod demo;
pub mod fallback;
pub mod pki;
pub mod png;
pub mod workload;

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
