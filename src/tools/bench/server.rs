//! The server under load: starting `countersign serve` as a child process on a fresh PKI and
//! data directory (or naming one already running), stopping it, and reading its CPU, memory
//! and disk use from /proc and its data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncBufReadExt;

use super::Options;
use crate::domain::Role;
use crate::tools::pki::DemoPrincipal;

/// The server under load and the principals to drive it with.
pub(super) struct Server {
    /// The node that led when the run started.
    pub(super) addr: SocketAddr,
    /// Every node the clients may fail over to (the one server, when bench started it).
    pub(super) targets: Vec<SocketAddr>,
    pub(super) pki: PathBuf,
    pub(super) child: Option<tokio::process::Child>,
    pub(super) pid: Option<u32>,
    pub(super) data: Option<PathBuf>,
    pub(super) tellers: Vec<String>,
    pub(super) supervisors: Vec<String>,
    /// The run's own database, with `--backend postgres`; dropped after the server stops.
    pub(super) database: Option<crate::storage::postgres::scratch::ScratchDatabase>,
}

impl Server {
    pub(super) fn usage(&self) -> Option<Usage> {
        self.pid.and_then(|p| Usage::of(&format!("/proc/{p}")))
    }

    /// The CPU seconds of this machine's PostgreSQL so far, with `--backend postgres` (bench's
    /// own database is on the server bench found on loopback); `None` otherwise.
    pub(super) fn database_cpu(&self) -> Option<f64> {
        self.database.as_ref().and_then(|_| postgres_cpu_s())
    }

    pub(super) fn disk_bytes(&self) -> Option<DiskBytes> {
        self.data.as_deref().map(DiskBytes::of)
    }

    /// SIGTERM, so the server flushes and exits as in production; it must exit 0.
    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            // kill(1) rather than kill(2): the library forbids unsafe code.
            let sent = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .context("run kill -TERM")?;
            if !sent.success() {
                bail!("kill -TERM {pid} failed: {sent}");
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .context("the server did not exit within 30 s of SIGTERM")??;
        if !status.success() {
            bail!("the server exited with {status} after SIGTERM");
        }
        // Only now that nobody is connected to it.
        drop(self.database.take());
        Ok(())
    }
}

/// Writes a PKI with the bench's principals and a configuration whose limits admit the load,
/// and starts `countersign serve` on it.
pub(super) async fn start_server(dir: &Path, opts: &Options) -> anyhow::Result<Server> {
    let pki = dir.join("pki");
    let tellers: Vec<String> = (1..=opts.tellers.max(1))
        .map(|i| format!("teller-{i:04}"))
        .collect();
    let supervisors: Vec<String> = (1..=opts.supervisors.max(1))
        .map(|i| format!("sup-{i:04}"))
        .collect();
    // Tellers at eight branches; supervisors at head office, level 3, so every one is
    // independent of every teller and may approve both workloads.
    let branches: Vec<String> = (0..tellers.len())
        .map(|i| format!("BR-{:04}", 101 + i % 8))
        .collect();
    let mut principals: Vec<DemoPrincipal<'_>> = tellers
        .iter()
        .zip(&branches)
        .map(|(id, branch)| DemoPrincipal {
            id,
            name: "Bench Teller",
            role: "teller",
            branch,
            level: None,
        })
        .collect();
    principals.extend(supervisors.iter().map(|id| DemoPrincipal {
        id,
        name: "Bench Supervisor",
        role: "supervisor",
        branch: "CENTRE",
        level: Some(3),
    }));
    crate::tools::pki::init_with(&pki, &principals)?;
    let queue = opts.fill.unwrap_or(0).max(100_000);
    // Filling, tellers share one counter and the fastest take more: let any one take it all.
    let per_teller = match opts.fill {
        Some(_) => queue,
        None => queue.div_ceil(tellers.len()).max(opts.in_flight * 2),
    };
    let config = crate::config::SAMPLE
        .replace("listen = \"127.0.0.1:7443\"", "listen = \"127.0.0.1:0\"")
        .replace("data_dir = \"data\"", "data_dir = \"../data\"")
        // Measured without a witness: cosigning is a call a second, off the engine's path.
        .replace(crate::config::SAMPLE_WITNESS, "")
        .replace("images_per_request_min = 1", "images_per_request_min = 0")
        .replace(
            "queue_length_max = 100000",
            &format!("queue_length_max = {queue}"),
        )
        .replace(
            "pending_per_teller_max = 20",
            &format!("pending_per_teller_max = {per_teller}"),
        )
        .replace(
            "watch_streams_per_principal_max = 50",
            &format!("watch_streams_per_principal_max = {}", per_teller.max(50)),
        );
    let database = match opts.backend {
        super::Backend::Embedded => None,
        super::Backend::Postgres => Some(
            crate::storage::postgres::scratch::ScratchDatabase::create()
                .context("make the run's database")?,
        ),
    };
    let config = match &database {
        None => config,
        Some(db) => crate::config::on_postgres(&config, db.url(), "bench", "127.0.0.1:0", 16),
    };
    let config_path = pki.join("countersign.toml");
    std::fs::write(&config_path, config).context("write bench config")?;

    let exe = std::env::current_exe().context("find the countersign binary")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start countersign serve")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(a) = line.strip_prefix("countersign listening on ") {
                return Ok(a.trim().parse::<SocketAddr>()?);
            }
        }
        bail!("the server exited before listening")
    })
    .await
    .context("the server did not start within 60 s")??;
    // Keep draining its stdout so the pipe never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        addr,
        targets: vec![addr],
        pki,
        pid: child.id(),
        child: Some(child),
        data: database.is_none().then(|| dir.join("data")),
        tellers,
        supervisors,
        database,
    })
}

/// Tellers and supervisors of a PKI directory's principal directory (read and checked as the
/// server reads it) whose keys are in the directory too.
pub(super) fn principals_of(pki: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let directory = crate::api::identity::Directory::load(&pki.join("principals.toml"))?;
    let of = |role| {
        directory
            .ids_with_role(role)
            .into_iter()
            .map(|id| id.as_str().to_owned())
            .filter(|id| pki.join(format!("{id}.key")).exists())
            .collect::<Vec<_>>()
    };
    Ok((of(Role::Teller), of(Role::Supervisor)))
}

/// CPU and memory of a process, from /proc/<pid>/stat and /proc/<pid>/status.
#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    cpu_s: f64,
    pub(super) rss_kib: u64,
    pub(super) rss_peak_kib: u64,
}

impl Usage {
    pub(super) fn of(proc_dir: &str) -> Option<Usage> {
        let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5), counted in USER_HZ, which the
        // kernel fixes at 100 for user space on every architecture Rust targets here.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(format!("{proc_dir}/status")).ok()?;
        let kib = |key: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Usage {
            cpu_s: ticks as f64 / 100.0,
            rss_kib: kib("VmRSS:")?,
            rss_peak_kib: kib("VmHWM:")?,
        })
    }

    pub(super) fn since(&self, before: &Usage) -> f64 {
        self.cpu_s - before.cpu_s
    }
}

/// CPU seconds of every process named `postgres` on this machine, with what their exited
/// children used (a backend that ended is counted in the postmaster's). Every database of that
/// server is in it, not only bench's; `None` when there is no such process.
fn postgres_cpu_s() -> Option<f64> {
    let mut ticks = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != "postgres" {
            continue;
        }
        // utime, stime, cutime and cstime: fields 14 to 17 of stat(5), in USER_HZ (100).
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        for i in 11..=14 {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
        found = true;
    }
    found.then(|| ticks as f64 / 100.0)
}

/// Bytes under a data directory, by part.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DiskBytes {
    pub(super) ledger: u64,
    pub(super) images: u64,
    pub(super) other: u64,
}

impl DiskBytes {
    pub(super) fn of(data: &Path) -> DiskBytes {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        let ledger = walk(&data.join("ledger"));
        let images = walk(&data.join("images"));
        DiskBytes {
            ledger,
            images,
            other: walk(data) - ledger - images,
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.ledger + self.images + self.other
    }

    pub(super) fn since(&self, before: &DiskBytes) -> DiskBytes {
        DiskBytes {
            ledger: self.ledger.saturating_sub(before.ledger),
            images: self.images.saturating_sub(before.images),
            other: self.other.saturating_sub(before.other),
        }
    }
}
