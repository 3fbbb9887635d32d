//! Server configuration in two stages: the TOML file's shape (`ConfigFile`, serde), then a
//! checked `Config` with paths resolved and every limit validated. No field has a hidden
//! default: the file states every choice.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::api::{ApiLimits, Directory};
use crate::engine::EngineConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: String,
    data_dir: PathBuf,
    tls: TlsFile,
    identity: IdentityFile,
    limits: LimitsFile,
    dispatch: DispatchFile,
    ledger: LedgerFile,
    policy: PolicyFile,
    log: LogFile,
    storage: StorageFile,
    /// Only with the postgres backend: this node in the cluster.
    cluster: Option<ClusterFile>,
    /// Absent: metrics are not served.
    metrics: Option<MetricsFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    principals: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    message_bytes_max: usize,
    image_bytes_max: usize,
    images_per_request_min: usize,
    images_per_request_max: usize,
    projection_cache_bytes: u64,
    image_writes_max: usize,
    queue_length_max: usize,
    pending_per_teller_max: u32,
    watch_buffer: usize,
    attend_buffer: usize,
    command_buffer: usize,
    page_size_max: usize,
    search_scan_max: usize,
    stats_rows_max: usize,
    watch_streams_per_principal_max: usize,
    shutdown_grace_ms: u64,
    keepalive_interval_ms: u64,
    keepalive_timeout_ms: u64,
    /// Added after release: absent in older files, which keep the default.
    #[serde(default = "fallback_age_max_days")]
    fallback_age_max_days: usize,
}

fn fallback_age_max_days() -> usize {
    30
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchFile {
    supervisor_tasks_max: usize,
    review_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    segment_bytes_max: u64,
    origin: String,
    signing_key: PathBuf,
    checkpoint_interval_ms: u64,
    unsigned_records_max: u64,
    /// Absent: no witness (the sample names one; `pki init` makes its key).
    #[serde(default)]
    witnesses: Vec<WitnessFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessFile {
    url: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageFile {
    backend: String,
    url: Option<String>,
    pool_size: Option<usize>,
    tls_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    node_id: String,
    advertise: String,
    lease_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    format: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A checked configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The storage backend and its settings.
    pub storage: crate::storage::StorageConfig,
    pub tls_cert_pem: String,
    pub tls_key_pem: String,
    pub client_ca_pem: String,
    pub directory: Directory,
    /// Where the principal directory was read from, for reloads.
    pub directory_path: PathBuf,
    pub api: ApiLimits,
    pub engine: EngineConfig,
    pub log_format: LogFormat,
    /// Where the policy was read from, for reloads.
    pub policy_path: PathBuf,
    /// Where Prometheus metrics are served over plain HTTP; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// How long connections still open at shutdown get to close before the server stops anyway.
    pub shutdown_grace_ms: u64,
    /// After how long without traffic a connection is pinged, and how long the peer has to
    /// answer before the connection is closed.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
}

/// The configuration `pki init` writes next to the certificates; also the reference for every
/// setting, with the reason for each default.
/// The sample's one witness, which the demo points at a witness of its own and tests without
/// a witness remove.
pub const SAMPLE_WITNESS: &str =
    "[[ledger.witnesses]]\nurl = \"http://127.0.0.1:7380\"\nkey = \"@witness.pub\"\n";

pub const SAMPLE: &str = r#"# Countersign server configuration. Relative paths are relative to this file.
listen = "127.0.0.1:7443"
data_dir = "data"

[tls]
cert = "server.pem"
key = "server.key"
# Client certificates must chain to this CA; the principal directory then names each one.
client_ca = "ca.pem"

[identity]
principals = "principals.toml"

[limits]
# Largest gRPC message: must carry images_per_request_max images of image_bytes_max.
message_bytes_max = 41943040
# A 300 dpi A4 voucher scan as JPEG is well under 4 MiB.
image_bytes_max = 4194304
# Every request carries its voucher scan; 0 admits requests with no image at all.
images_per_request_min = 1
images_per_request_max = 8
# Images queued for the image writer at once (it appends them and fsyncs once for the lot, or
# on PostgreSQL inserts them in one commit); more uploads wait their turn. Bounds the memory uploads waiting to be written can hold.
image_writes_max = 256
# Page cache of the projections (sled); rows beyond it are read from disk.
projection_cache_bytes = 16777216
# Undecided requests held at once; Submit beyond it is RESOURCE_EXHAUSTED.
queue_length_max = 100000
# Undecided requests one teller may have at once.
pending_per_teller_max = 20
# State changes buffered per Watch stream before a reader that does not keep up is dropped.
watch_buffer = 64
# Events buffered per Attend stream before a console that does not read is signed out.
attend_buffer = 64
# Calls queued for the engine before callers wait.
command_buffer = 4096
# Most records or search results in one page of the audit API.
page_size_max = 1000
# Most index entries one audit search call examines before it returns a partial page.
search_scan_max = 20000
# Most requests one statistics call covers; a wider range is RESOURCE_EXHAUSTED.
stats_rows_max = 1000000
# Most Watch streams one teller may hold open at once (a terminal follows a few requests).
watch_streams_per_principal_max = 50
# At shutdown, how long open connections get to close (replies written, streams ended) before
# the server stops anyway. Every acknowledged call is durable before this wait begins.
shutdown_grace_ms = 5000
# The server pings every connection (HTTP/2 PING) after this long without traffic, and closes
# one whose peer does not answer within keepalive_timeout_ms: a console that vanished behind a
# branch firewall stops counting as present (its offers go to someone else) within about the
# sum, instead of holding offers until they time out.
keepalive_interval_ms = 30000
keepalive_timeout_ms = 10000
# A fallback (an authorization given on site while the centre could not be used) must be
# registered within this many days of the on-site decision; older ones are refused.
fallback_age_max_days = 30

[dispatch]
# Offer timeouts, decision deadlines, levels and dual control come from the policy file.
# Requests one supervisor holds at once (offered or in review).
supervisor_tasks_max = 1
# A supervisor who accepts and does not decide within this loses the request to the queue.
review_timeout_ms = 600000

[ledger]
segment_bytes_max = 67108864
# The first line of every signed checkpoint: names this log. Auditors pin it.
origin = "countersign.example/ledger"
# The Ed25519 checkpoint signing key (C2SP signed-note format); `pki init` writes one.
# `countersign ledger pubkey --config FILE` prints the key auditors verify with.
signing_key = "ledger.key"
# A new checkpoint is signed this often while records arrive (and on request), as soon as
# half of unsigned_records_max records are unsigned, and at shutdown.
checkpoint_interval_ms = 1000
# The most records that may be beyond the last checkpoint: the server refuses to start when
# more are (its checkpoints were deleted or cut short), and `ledger verify --pubkey` fails.
unsigned_records_max = 10000

# Witnesses (c2sp.org/tlog-witness), run by parties other than the centre (internal audit,
# risk, a regulator): each new checkpoint goes to each with a consistency proof, and their
# cosignatures are kept beside it. One that is down holds up nothing but its cosignatures.
# `key` is the witness's public key (type 0x04), or @file. `pki init` makes one witness and
# its configuration (witness.toml); start it with `countersign witness serve --config witness.toml`.
[[ledger.witnesses]]
url = "http://127.0.0.1:7380"
key = "@witness.pub"

[policy]
# The authorization rules (TOML); `pki init` writes a sample. Reload with SIGHUP or
# AdminService.ReloadPolicy: a reload applies to new submissions only.
file = "policy.toml"

[log]
# "text" or "json"; filter with RUST_LOG, e.g. RUST_LOG=countersign=debug.
format = "text"

[storage]
# "embedded": the ledger, images and projection under data_dir, on this machine's disk.
# "postgres": all of it in PostgreSQL, which several nodes share (docs/operations.md).
backend = "embedded"
# For "postgres": the libpq URL. List every database host; target_session_attrs=read-write
# finds the primary after a database failover.
# url = "postgresql://countersign@db1:5432,db2:5432/countersign?target_session_attrs=read-write"
# Most connections this node opens.
# pool_size = 16
# TLS to the database, trusting this CA's certificates (add sslmode=require to the URL).
# tls_ca = "db-ca.pem"

# For "postgres": this node in the cluster. One node leads, through a lease in the database
# that it renews every third of lease_ms; when it stops renewing, another takes over.
# [cluster]
# Unique in the cluster.
# node_id = "node-1"
# Where clients reach this node: a standby names the leader's. A port of 0 stands for the
# port `listen` bound.
# advertise = "node-1.example:7443"
# lease_ms = 2000

# Prometheus metrics at GET /metrics over plain HTTP (no TLS, no client certificates), on an
# address of their own: bind it to loopback or a management network. Without this section
# nothing is served. The series are listed in README.md.
# [metrics]
# listen = "127.0.0.1:9464"
"#;

/// The sample's configuration moved to the postgres backend: the database at `url`, this
/// node's id and advertised address, a pool of `pool_size` and the sample's lease. For tests,
/// the bench and anyone scripting a cluster from the sample.
pub fn on_postgres(
    text: &str,
    url: &str,
    node_id: &str,
    advertise: &str,
    pool_size: usize,
) -> String {
    text.replace(
        "backend = \"embedded\"\n",
        &format!(
            "backend = \"postgres\"\nurl = \"{url}\"\npool_size = {pool_size}\n\n\
             [cluster]\nnode_id = \"{node_id}\"\nadvertise = \"{advertise}\"\nlease_ms = 2000\n"
        ),
    )
}

/// The storage section, checked: the embedded backend takes none of the database settings,
/// the postgres backend needs all of them and a `[cluster]` section.
fn storage(
    f: &ConfigFile,
    rel: &dyn Fn(&Path) -> PathBuf,
) -> anyhow::Result<crate::storage::StorageConfig> {
    use crate::storage::{EmbeddedSettings, PostgresSettings, StorageConfig};
    let s = &f.storage;
    match s.backend.as_str() {
        "embedded" => {
            let set = [
                ("storage.url", s.url.is_some()),
                ("storage.pool_size", s.pool_size.is_some()),
                ("storage.tls_ca", s.tls_ca.is_some()),
                ("cluster", f.cluster.is_some()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, on)| *on) {
                bail!("{name}: only for storage.backend = \"postgres\"");
            }
            Ok(StorageConfig::Embedded(EmbeddedSettings {
                data_dir: rel(&f.data_dir),
                segment_bytes_max: f.ledger.segment_bytes_max,
                image_writes_max: f.limits.image_writes_max,
                projection_cache_bytes: f.limits.projection_cache_bytes,
            }))
        }
        "postgres" => {
            let url = s
                .url
                .clone()
                .context("storage.url: needed for storage.backend = \"postgres\"")?;
            let parsed = url.parse::<tokio_postgres::Config>().context(
                "storage.url: not a libpq connection URL (expected e.g. \
                 postgresql://countersign@db1:5432,db2:5432/countersign?target_session_attrs=read-write)",
            )?;
            if parsed.get_hosts().is_empty() {
                bail!(
                    "storage.url: names no host (expected e.g. postgresql://countersign@db1:5432/countersign)"
                );
            }
            let pool_size = s
                .pool_size
                .context("storage.pool_size: needed for storage.backend = \"postgres\"")?;
            if !(2..=1000).contains(&pool_size) {
                bail!("storage.pool_size: must be from 2 to 1000");
            }
            let tls_ca_pem = match &s.tls_ca {
                None => None,
                Some(p) => {
                    let p = rel(p);
                    let pem = std::fs::read_to_string(&p)
                        .with_context(|| format!("storage.tls_ca: read {}", p.display()))?;
                    check_certificates(&pem, "storage.tls_ca", &p.display().to_string())?;
                    Some(pem)
                }
            };
            let c = f
                .cluster
                .as_ref()
                .context("cluster: needed for storage.backend = \"postgres\"")?;
            let id = c.node_id.as_str();
            if id.is_empty() || id.contains(char::is_whitespace) {
                bail!("cluster.node_id: must be one non-empty word without spaces");
            }
            let port_ok = c
                .advertise
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if c.advertise.trim().is_empty() || !port_ok {
                bail!(
                    "cluster.advertise: must be the host:port clients reach this node at (e.g. \
                     node-1.bank.example:7443), found {:?}",
                    c.advertise
                );
            }
            if !(500..=60_000).contains(&c.lease_ms) {
                bail!("cluster.lease_ms: must be from 500 to 60000");
            }
            Ok(StorageConfig::Postgres(PostgresSettings {
                url,
                pool_size,
                tls_ca_pem,
                node_id: c.node_id.clone(),
                advertise: c.advertise.clone(),
                lease_ms: c.lease_ms,
                image_writes_max: f.limits.image_writes_max,
            }))
        }
        other => bail!("storage.backend: must be \"embedded\" or \"postgres\", not {other:?}"),
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("config {}", path.display()))
    }

    /// Parses and checks a config; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Config> {
        let f: ConfigFile = toml::from_str(text).context("parse config")?;
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let read = |what: &str, p: &Path| -> anyhow::Result<String> {
            let path = rel(p);
            let bytes =
                std::fs::read(&path).with_context(|| format!("{what}: read {}", path.display()))?;
            String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!(
                    "{what}: {} is binary (DER?), not text: convert it to PEM (`openssl x509 \
                     -inform DER` for a certificate, `openssl pkey -inform DER` for a key)",
                    path.display()
                )
            })
        };
        let listen: SocketAddr = f
            .listen
            .parse()
            .context("listen: must be an address such as 127.0.0.1:7443")?;
        let l = &f.limits;
        // Each limit is at least 1, and at most what a real server could use: a huge value is
        // a typo, and some (channel capacities) would abort the server when first used.
        let bounded = [
            ("limits.message_bytes_max", l.message_bytes_max, 1 << 30),
            ("limits.image_bytes_max", l.image_bytes_max, 256 << 20),
            (
                "limits.images_per_request_max",
                l.images_per_request_max,
                1000,
            ),
            ("limits.queue_length_max", l.queue_length_max, 100_000_000),
            ("limits.image_writes_max", l.image_writes_max, 1_000_000),
            (
                "limits.projection_cache_bytes",
                usize::try_from(l.projection_cache_bytes).unwrap_or(usize::MAX),
                1 << 40,
            ),
            (
                "limits.pending_per_teller_max",
                l.pending_per_teller_max as usize,
                1_000_000,
            ),
            ("limits.watch_buffer", l.watch_buffer, 1_000_000),
            ("limits.attend_buffer", l.attend_buffer, 1_000_000),
            ("limits.command_buffer", l.command_buffer, 1_000_000),
            ("limits.page_size_max", l.page_size_max, 1_000_000),
            ("limits.search_scan_max", l.search_scan_max, 1_000_000_000),
            ("limits.stats_rows_max", l.stats_rows_max, 1_000_000_000),
            ("limits.fallback_age_max_days", l.fallback_age_max_days, 366),
            (
                "limits.watch_streams_per_principal_max",
                l.watch_streams_per_principal_max,
                1_000_000,
            ),
            (
                "dispatch.supervisor_tasks_max",
                f.dispatch.supervisor_tasks_max,
                1000,
            ),
        ];
        for (name, v, max) in bounded {
            if !(1..=max).contains(&v) {
                bail!("{name}: must be from 1 to {max}, found {v}");
            }
        }
        if l.images_per_request_min > l.images_per_request_max {
            bail!("limits.images_per_request_min: must be at most limits.images_per_request_max");
        }
        let images_bytes = l.images_per_request_max.saturating_mul(l.image_bytes_max);
        if l.message_bytes_max < images_bytes {
            bail!(
                "limits.message_bytes_max: must be at least limits.images_per_request_max × \
                 limits.image_bytes_max ({images_bytes}), found {}: a request with the most \
                 images allowed, each as large as allowed, would be refused as too large",
                l.message_bytes_max
            );
        }
        if !(100..=600_000).contains(&l.shutdown_grace_ms) {
            bail!("limits.shutdown_grace_ms: must be from 100 to 600000");
        }
        if !(100..=3_600_000).contains(&l.keepalive_interval_ms) {
            bail!("limits.keepalive_interval_ms: must be from 100 to 3600000");
        }
        if !(100..=600_000).contains(&l.keepalive_timeout_ms) {
            bail!("limits.keepalive_timeout_ms: must be from 100 to 600000");
        }
        if f.dispatch.review_timeout_ms < 10_000 {
            bail!("dispatch.review_timeout_ms: must be at least 10000");
        }
        let policy_path = rel(&f.policy.file);
        let policy = crate::policy::Policy::load(&policy_path)
            .with_context(|| format!("policy.file: {}", policy_path.display()))?;
        if f.ledger.segment_bytes_max < 1 << 20 {
            bail!("ledger.segment_bytes_max: must be at least 1 MiB");
        }
        if !(100..=60_000).contains(&f.ledger.checkpoint_interval_ms) {
            bail!("ledger.checkpoint_interval_ms: must be from 100 to 60000");
        }
        if !(10..=10_000_000).contains(&f.ledger.unsigned_records_max) {
            bail!("ledger.unsigned_records_max: must be from 10 to 10000000");
        }
        let origin = f.ledger.origin.trim();
        if origin.is_empty() || origin.contains(char::is_whitespace) || origin != f.ledger.origin {
            bail!("ledger.origin: must be one non-empty word without spaces");
        }
        let signer_key = read("ledger.signing_key", &f.ledger.signing_key)?;
        crate::ledger::checkpoint::parse_signer(signer_key.trim()).map_err(|e| {
            let path = rel(&f.ledger.signing_key).display().to_string();
            let text = signer_key.trim();
            let hint = if text.is_empty() {
                "the file is empty"
            } else if text.starts_with("-----BEGIN") {
                "it is a PEM key; the ledger signs with a note key"
            } else if !text.starts_with("PRIVATE+KEY+") {
                "it is a public key (the ledger's ledger.pub, or a witness's .pub), not the \
                 private one"
            } else {
                "it is damaged"
            };
            anyhow::anyhow!(
                "ledger.signing_key: {path} is not the ledger's private signing key ({hint}: \
                 {e}); expected one line PRIVATE+KEY+<origin>+<id>+<key> as `countersign pki \
                 init` writes to ledger.key"
            )
        })?;
        let mut witnesses: Vec<crate::engine::WitnessConfig> = Vec::new();
        for (i, w) in f.ledger.witnesses.iter().enumerate() {
            let endpoint = crate::witness::client::Endpoint::parse(&w.url)
                .map_err(|e| anyhow::anyhow!("ledger.witnesses[{i}].url: {e}"))?;
            let text = match w.key.strip_prefix('@') {
                Some(file) => read(&format!("ledger.witnesses[{i}].key"), Path::new(file))?,
                None => w.key.clone(),
            };
            let key =
                crate::ledger::cosignature::parse_witness_key(text.trim()).with_context(|| {
                    let hint = if text.trim_start().starts_with("PRIVATE+KEY+") {
                        ": this is a witness's PRIVATE key; give its public key (witness.pub)"
                    } else if w.key.ends_with(".pub") || w.key.ends_with(".key") {
                        ": it looks like a file name; write key = \"@FILE\" to read a file"
                    } else {
                        ""
                    };
                    format!(
                        "ledger.witnesses[{i}].key: not a witness key (name+id+base64, type \
                         0x04){hint}"
                    )
                })?;
            if witnesses.iter().any(|o| o.key.name() == key.name()) {
                bail!(
                    "ledger.witnesses[{i}].key: witness {} is listed twice",
                    key.name()
                );
            }
            witnesses.push(crate::engine::WitnessConfig { key, endpoint });
        }
        let metrics_listen = match &f.metrics {
            None => None,
            Some(m) => {
                let at: SocketAddr = m
                    .listen
                    .parse()
                    .context("metrics.listen: must be an address such as 127.0.0.1:9464")?;
                if at == listen && at.port() != 0 {
                    bail!("metrics.listen: must differ from listen");
                }
                Some(at)
            }
        };
        let log_format = match f.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("log.format: must be \"text\" or \"json\", not {other:?}"),
        };
        let storage = storage(&f, &rel)?;
        let (tls_cert_pem, tls_key_pem, client_ca_pem) = (
            read("tls.cert", &f.tls.cert)?,
            read("tls.key", &f.tls.key)?,
            read("tls.client_ca", &f.tls.client_ca)?,
        );
        check_tls(
            &tls_cert_pem,
            &tls_key_pem,
            &client_ca_pem,
            [&rel(&f.tls.cert), &rel(&f.tls.key), &rel(&f.tls.client_ca)],
        )?;
        let directory_path = rel(&f.identity.principals);
        let directory = Directory::load(&directory_path)
            .context("identity.principals: fix the file (see `countersign pki issue`)")?;
        let supervisors = std::sync::Arc::new(directory.supervisors());
        let node = match &storage {
            crate::storage::StorageConfig::Postgres(p) => p.node_id.clone(),
            crate::storage::StorageConfig::Embedded(_) => host_name(),
        };
        let directory_sha256 = directory.sha256().to_owned();
        Ok(Config {
            listen,
            data_dir: rel(&f.data_dir),
            storage,
            tls_cert_pem,
            tls_key_pem,
            client_ca_pem,
            directory,
            directory_path,
            api: ApiLimits {
                message_bytes_max: l.message_bytes_max,
                image_bytes_max: l.image_bytes_max,
                images_per_request_min: l.images_per_request_min,
                images_per_request_max: l.images_per_request_max,
                watch_streams_per_principal_max: l.watch_streams_per_principal_max,
                fallback_age_max_days: l.fallback_age_max_days as i64,
            },
            engine: EngineConfig {
                check_all_images: false,
                node,
                directory_sha256,
                policy: std::sync::Arc::new(policy),
                supervisor_tasks_max: f.dispatch.supervisor_tasks_max,
                review_timeout_ms: f.dispatch.review_timeout_ms,
                queue_length_max: l.queue_length_max,
                pending_per_teller_max: l.pending_per_teller_max,
                images_per_request_min: l.images_per_request_min,
                images_per_request_max: l.images_per_request_max,
                watch_buffer: l.watch_buffer,
                attend_buffer: l.attend_buffer,
                command_buffer: l.command_buffer,
                tick_ms: 50,
                page_size_max: l.page_size_max,
                search_scan_max: l.search_scan_max,
                stats_rows_max: l.stats_rows_max,
                supervisors,
                checkpoints: crate::engine::CheckpointConfig {
                    origin: f.ledger.origin.clone(),
                    signer_key: signer_key.trim().to_owned(),
                    interval_ms: f.ledger.checkpoint_interval_ms,
                    unsigned_records_max: f.ledger.unsigned_records_max,
                    witnesses,
                },
            },
            log_format,
            policy_path,
            metrics_listen,
            shutdown_grace_ms: l.shutdown_grace_ms,
            keepalive_interval_ms: l.keepalive_interval_ms,
            keepalive_timeout_ms: l.keepalive_timeout_ms,
        })
    }
}

/// The host's name, for a single node's `engine_started` records (Linux's; "unknown"
/// elsewhere).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The server's certificate, key and client CA, checked before anything starts, so that a
/// mistake names its file instead of surfacing as a TLS error at the first client: each file
/// holds what its setting says, and the key belongs to the certificate.
fn check_tls(cert: &str, key: &str, ca: &str, paths: [&Path; 3]) -> anyhow::Result<()> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let [cert_path, key_path, ca_path] = paths.map(|p| p.display().to_string());
    let chain = check_certificates(cert, "tls.cert", &cert_path)?;
    check_certificates(ca, "tls.client_ca", &ca_path)?;
    if key.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || key.contains("Proc-Type: 4,ENCRYPTED")
    {
        bail!(
            "tls.key: {key_path} is encrypted: give the key unencrypted (`openssl pkey -in \
             {key_path} -out server.key`) and keep it readable by the server's user only"
        );
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
        anyhow::anyhow!("tls.key: {key_path} holds no private key (expected a PEM PRIVATE KEY)")
    })?;
    rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| {
            anyhow::anyhow!(
                "tls.key: {key_path} is not the key of the certificate in {cert_path} ({e}): \
                 point tls.key and tls.cert at a matching pair"
            )
        })?;
    Ok(())
}

/// The certificates of a PEM file a setting names, with what to do when there are none.
fn check_certificates(
    text: &str,
    setting: &str,
    path: &str,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            anyhow::anyhow!(
                "{setting}: {path} is not PEM: a CERTIFICATE block is cut short or damaged \
                 (the file may have been truncated; copy it again)"
            )
        })?;
    if certs.is_empty() {
        bail!("{setting}: {path} holds no certificate (expected -----BEGIN CERTIFICATE-----)");
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with everything the sample config names (certificates, principals,
    /// policy, signing key).
    fn pki() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::tools::pki::init(dir.path()).unwrap();
        dir
    }

    const METRICS_OFF: &str = "# [metrics]\n# listen = \"127.0.0.1:9464\"\n";

    #[test]
    fn the_sample_parses_and_serves_no_metrics() {
        let dir = pki();
        assert!(
            SAMPLE.contains(METRICS_OFF),
            "the sample documents [metrics]"
        );
        let c = Config::parse(SAMPLE, dir.path()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7443".parse().unwrap());
        assert_eq!(c.metrics_listen, None);
    }

    #[test]
    fn the_metrics_section_names_the_address() {
        let dir = pki();
        let on = |listen: &str| {
            SAMPLE.replace(METRICS_OFF, &format!("[metrics]\nlisten = \"{listen}\"\n"))
        };
        let c = Config::parse(&on("127.0.0.1:9464"), dir.path()).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let c = Config::parse(&on("[::1]:0"), dir.path()).unwrap();
        assert_eq!(c.metrics_listen, Some("[::1]:0".parse().unwrap()));
        for (bad, why) in [
            (on("localhost:9464"), "metrics.listen: must be an address"),
            (
                on("127.0.0.1:7443"),
                "metrics.listen: must differ from listen",
            ),
            (
                SAMPLE.replace(METRICS_OFF, "[metrics]\n"),
                "missing field `listen`",
            ),
            (
                on("127.0.0.1:9464") + "path = \"/m\"\n",
                "unknown field `path`",
            ),
        ] {
            let e = format!("{:#}", Config::parse(&bad, dir.path()).err().unwrap());
            assert!(e.contains(why), "{e}");
        }
    }

    /// A TLS file that is empty, of the wrong kind, or a key of another certificate names its
    /// setting, its file and what to do, at start rather than at the first client.
    #[test]
    fn tls_files_are_checked_and_named() {
        let dir = pki();
        let p = dir.path();
        let ca = std::fs::read_to_string(p.join("ca.pem")).unwrap();
        let other_key = std::fs::read_to_string(p.join("teller-01.key")).unwrap();
        for (file, text, why) in [
            ("server.pem", String::new(), "tls.cert"),
            ("server.key", String::new(), "tls.key"),
            ("ca.pem", "not pem".to_owned(), "tls.client_ca"),
            ("server.key", other_key, "is not the key of the certificate"),
        ] {
            let keep = std::fs::read_to_string(p.join(file)).unwrap();
            std::fs::write(p.join(file), &text).unwrap();
            let e = format!("{:#}", Config::parse(SAMPLE, p).err().expect("refused"));
            assert!(e.contains(why) && e.contains(file), "{file}: {e}");
            std::fs::write(p.join(file), keep).unwrap();
        }
        assert!(ca.contains("BEGIN CERTIFICATE"));
        Config::parse(SAMPLE, p).unwrap();
    }

    #[test]
    fn the_storage_section_is_checked() {
        let dir = pki();
        let url = "postgresql://u@db1:5432,db2:5432/cs?target_session_attrs=read-write";
        let pg = on_postgres(SAMPLE, url, "node-1", "node-1.example:7443", 16);
        let c = Config::parse(&pg, dir.path()).unwrap();
        let crate::storage::StorageConfig::Postgres(s) = &c.storage else {
            panic!("on postgres");
        };
        assert_eq!(
            (s.url.as_str(), s.pool_size, s.node_id.as_str(), s.lease_ms),
            (url, 16, "node-1", 2000)
        );
        assert_eq!(s.tls_ca_pem, None);
        let embedded_with = |line: &str| {
            SAMPLE.replace(
                "backend = \"embedded\"\n",
                &format!("backend = \"embedded\"\n{line}\n"),
            )
        };
        for (bad, why) in [
            (
                SAMPLE.replace("backend = \"embedded\"", "backend = \"sqlite\""),
                "storage.backend: must be \"embedded\" or \"postgres\"",
            ),
            (embedded_with("pool_size = 4"), "storage.pool_size: only for"),
            (embedded_with("url = \"postgresql://x/y\""), "storage.url: only for"),
            (
                pg.replace(&format!("url = \"{url}\"\n"), ""),
                "storage.url: needed for",
            ),
            (
                pg.replace(url, "postgresql://db:notaport/cs"),
                "storage.url: not a libpq connection URL",
            ),
            (pg.replace("pool_size = 16", "pool_size = 1"), "storage.pool_size: must be from 2"),
            (pg.replace("lease_ms = 2000", "lease_ms = 100"), "cluster.lease_ms: must be from 500"),
            (
                pg.replace("node_id = \"node-1\"", "node_id = \"node 1\""),
                "cluster.node_id: must be one non-empty word",
            ),
            (
                pg.replace("advertise = \"node-1.example:7443\"", "advertise = \" \""),
                "cluster.advertise: must be the host:port",
            ),
            (
                pg.replace(
                    "[cluster]\nnode_id = \"node-1\"\nadvertise = \"node-1.example:7443\"\nlease_ms = 2000\n",
                    "",
                ),
                "cluster: needed for",
            ),
            (
                SAMPLE.replace(
                    "backend = \"embedded\"\n",
                    "backend = \"embedded\"\n\n[cluster]\nnode_id = \"n\"\n\
                     advertise = \"a:1\"\nlease_ms = 2000\n",
                ),
                "cluster: only for",
            ),
            (
                pg.replace(
                    &format!("url = \"{url}\"\n"),
                    &format!("url = \"{url}\"\ntls_ca = \"missing.pem\"\n"),
                ),
                "storage.tls_ca: read",
            ),
        ] {
            let e = format!("{:#}", Config::parse(&bad, dir.path()).err().unwrap());
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn limits_this_session_added_are_checked() {
        let dir = pki();
        let c = Config::parse(SAMPLE, dir.path()).unwrap();
        assert_eq!(c.api.images_per_request_min, 1);
        let crate::storage::StorageConfig::Embedded(storage) = &c.storage else {
            panic!("the sample is embedded");
        };
        assert_eq!(storage.image_writes_max, 256);
        assert_eq!(storage.projection_cache_bytes, 16 << 20);
        assert_eq!(c.engine.checkpoints.unsigned_records_max, 10_000);
        assert_eq!(
            (c.keepalive_interval_ms, c.keepalive_timeout_ms),
            (30_000, 10_000)
        );
        let zero = SAMPLE.replace("images_per_request_min = 1", "images_per_request_min = 0");
        assert_eq!(
            Config::parse(&zero, dir.path())
                .unwrap()
                .api
                .images_per_request_min,
            0
        );
        for (from, to, why) in [
            (
                "images_per_request_min = 1",
                "images_per_request_min = 9",
                "limits.images_per_request_min: must be at most",
            ),
            (
                "image_writes_max = 256",
                "image_writes_max = 0",
                "limits.image_writes_max: must be from 1 to 1000000, found 0",
            ),
            (
                "projection_cache_bytes = 16777216",
                "projection_cache_bytes = 0",
                "limits.projection_cache_bytes: must be from 1 to",
            ),
            (
                "unsigned_records_max = 10000",
                "unsigned_records_max = 9",
                "ledger.unsigned_records_max: must be from 10",
            ),
            (
                "keepalive_interval_ms = 30000",
                "keepalive_interval_ms = 99",
                "limits.keepalive_interval_ms: must be from 100",
            ),
            (
                "keepalive_timeout_ms = 10000",
                "keepalive_timeout_ms = 600001",
                "limits.keepalive_timeout_ms: must be from 100 to 600000",
            ),
        ] {
            assert!(SAMPLE.contains(from), "{from}");
            let bad = SAMPLE.replace(from, to);
            let e = format!("{:#}", Config::parse(&bad, dir.path()).err().unwrap());
            assert!(e.contains(why), "{e}");
        }
    }

    /// The mistakes an operator makes, each named with its setting, its file and what to do
    /// (issue 14, item 7).
    #[test]
    fn operator_mistakes_name_the_setting_and_what_to_do() {
        let dir = pki();
        let p = dir.path();
        let parse = |text: &str| format!("{:#}", Config::parse(text, p).err().expect("refused"));
        // A huge number is a typo, and some would abort the server when first used.
        let e = parse(&SAMPLE.replace(
            "command_buffer = 4096",
            "command_buffer = 18446744073709551615",
        ));
        assert!(
            e.contains("limits.command_buffer: must be from 1 to 1000000"),
            "{e}"
        );
        // A message must carry the most images allowed, each as large as allowed.
        let e = parse(&SAMPLE.replace(
            "message_bytes_max = 41943040",
            "message_bytes_max = 4194304",
        ));
        assert!(
            e.contains("limits.images_per_request_max × limits.image_bytes_max (33554432)"),
            "{e}"
        );
        // Keys of the wrong kind.
        let signing = p.join("ledger.key");
        let keep = std::fs::read_to_string(&signing).unwrap();
        for (text, why) in [
            (
                std::fs::read_to_string(p.join("ledger.pub")).unwrap(),
                "it is a public key",
            ),
            (
                std::fs::read_to_string(p.join("server.key")).unwrap(),
                "it is a PEM key",
            ),
            (String::new(), "the file is empty"),
        ] {
            std::fs::write(&signing, text).unwrap();
            let e = parse(SAMPLE);
            assert!(
                e.contains("ledger.signing_key: ") && e.contains("ledger.key") && e.contains(why),
                "{e}"
            );
            assert!(e.contains("countersign pki init"), "{e}");
        }
        std::fs::write(&signing, keep).unwrap();
        let witness = |url: &str, key: &str| {
            format!("{SAMPLE}\n[[ledger.witnesses]]\nurl = \"{url}\"\nkey = \"{key}\"\n")
        };
        let e = parse(&witness("http://127.0.0.1:99999", "@witness.pub"));
        assert!(
            e.contains("ledger.witnesses[1].url") && e.contains("from 1 to 65535"),
            "{e}"
        );
        let e = parse(&witness("http://wit ness:80", "@witness.pub"));
        assert!(e.contains("not a host name"), "{e}");
        let e = parse(&witness("http://127.0.0.1:8080", "witness.pub"));
        assert!(
            e.contains("ledger.witnesses[1].key") && e.contains("@FILE"),
            "{e}"
        );
        let e = parse(&witness("http://127.0.0.1:8080", "@witness.key"));
        assert!(e.contains("PRIVATE key"), "{e}");
        // A certificate in DER, a key that is encrypted, a PEM file cut short.
        let cert = p.join("server.pem");
        let keep = std::fs::read_to_string(&cert).unwrap();
        std::fs::write(&cert, [0x30u8, 0x82, 0xff, 0xfe, 0x80]).unwrap();
        let e = parse(SAMPLE);
        assert!(
            e.contains("tls.cert") && e.contains("binary (DER?)") && e.contains("openssl x509"),
            "{e}"
        );
        std::fs::write(&cert, &keep[..keep.len() / 2]).unwrap();
        let e = parse(SAMPLE);
        assert!(e.contains("tls.cert") && e.contains("cut short"), "{e}");
        std::fs::write(&cert, keep).unwrap();
        let key = p.join("server.key");
        let keep = std::fs::read_to_string(&key).unwrap();
        std::fs::write(
            &key,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = parse(SAMPLE);
        assert!(e.contains("tls.key") && e.contains("is encrypted"), "{e}");
        std::fs::write(&key, keep).unwrap();
        // A database URL that is not libpq's.
        let pg = |url: &str| {
            SAMPLE.replace(
                "backend = \"embedded\"",
                &format!("backend = \"postgres\"\nurl = \"{url}\"\npool_size = 4"),
            ) + "\n[cluster]\nnode_id = \"n1\"\nadvertise = \"n1:7443\"\nlease_ms = 2000\n"
        };
        let e = parse(&pg("postgresql://u@db1/cs").replace("\"n1:7443\"", "\"n1\""));
        assert!(
            e.contains("cluster.advertise: must be the host:port"),
            "{e}"
        );
        // A directory that lists nobody.
        let principals = p.join("principals.toml");
        let keep = std::fs::read_to_string(&principals).unwrap();
        std::fs::write(&principals, "principals = []\n").unwrap();
        let e = parse(SAMPLE);
        assert!(
            e.contains("principals.toml") && e.contains("lists nobody"),
            "{e}"
        );
        std::fs::write(&principals, keep).unwrap();
        let e = parse(&pg("jdbc:postgresql://db1/cs"));
        assert!(
            e.contains("storage.url") && e.contains("expected e.g. postgresql://"),
            "{e}"
        );
    }
}
