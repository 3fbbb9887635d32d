//! The witness's configuration file: where it listens, its key, its state directory and the
//! logs it witnesses, each with the keys their checkpoints are signed with. Read whole and
//! checked before anything starts; every mistake names its setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::KnownLog;
use crate::ledger::checkpoint;
use crate::ledger::cosignature::{self, Cosigner};

/// A sample, as `pki init` writes it beside the server's.
pub const SAMPLE: &str = r#"# A Countersign witness (c2sp.org/tlog-witness): run by a party other than the centre.
# Start it with: countersign witness serve --config FILE
listen = "127.0.0.1:7380"
# This witness's Ed25519 cosigning key (type 0x04); its public half goes to the centre's
# [[ledger.witnesses]] and to every auditor who requires this witness.
signing_key = "witness.key"
# The latest checkpoint cosigned of each log, one file each, replaced atomically.
state_dir = "witness-state"

[[logs]]
# The log's origin (the centre's ledger.origin) and its checkpoint verifier key(s)
# (`countersign ledger pubkey --config countersign.toml`).
origin = "countersign.example/ledger"
keys = ["@ledger.pub"]
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: SocketAddr,
    signing_key: PathBuf,
    state_dir: PathBuf,
    logs: Vec<LogFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    origin: String,
    keys: Vec<String>,
}

/// A checked witness configuration.
pub struct WitnessConfig {
    pub listen: SocketAddr,
    pub cosigner: Cosigner,
    pub state_dir: PathBuf,
    pub logs: Vec<KnownLog>,
}

/// Reads and checks the file at `path`; relative paths in it are relative to its directory,
/// and a key given as `@file` is read from that file.
pub fn load(path: &Path) -> anyhow::Result<WitnessConfig> {
    load_checked(path).with_context(|| format!("witness config {}", path.display()))
}

fn load_checked(path: &Path) -> anyhow::Result<WitnessConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let f: File = toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let key_path = dir.join(&f.signing_key);
    let key = std::fs::read_to_string(&key_path).with_context(|| {
        format!(
            "signing_key: read {} (make one with `countersign witness keygen`)",
            key_path.display()
        )
    })?;
    let cosigner = cosignature::parse_cosigner(key.trim())
        .with_context(|| format!("signing_key: {} is not a witness key", key_path.display()))?;
    if f.logs.is_empty() {
        bail!("logs: name at least one log to witness");
    }
    let mut logs = Vec::new();
    for (i, log) in f.logs.iter().enumerate() {
        if log.origin.is_empty() || log.origin.chars().any(char::is_control) {
            bail!("logs[{i}].origin: must be one non-empty line");
        }
        if logs.iter().any(|l: &KnownLog| l.origin == log.origin) {
            bail!("logs[{i}].origin: {} is listed twice", log.origin);
        }
        if log.keys.is_empty() {
            bail!("logs[{i}].keys: give the log's checkpoint verifier key");
        }
        let mut keys = Vec::new();
        for (j, k) in log.keys.iter().enumerate() {
            let text = match k.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(dir.join(file)).with_context(|| {
                    format!("logs[{i}].keys[{j}]: read {}", dir.join(file).display())
                })?,
                None => k.clone(),
            };
            keys.push(checkpoint::parse_verifier(text.trim()).with_context(|| {
                format!(
                    "logs[{i}].keys[{j}]: not a checkpoint verifier key (expected the log's \
                         public key, ledger.pub as `countersign pki init` writes it, or \
                         `countersign ledger pubkey`)"
                )
            })?);
        }
        logs.push(KnownLog {
            origin: log.origin.clone(),
            keys,
        });
    }
    Ok(WitnessConfig {
        listen: f.listen,
        cosigner,
        state_dir: dir.join(&f.state_dir),
        logs,
    })
}
