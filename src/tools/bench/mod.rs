//! `countersign bench`: a load generator. It starts the real server as a child process (the
//! same binary, `serve`) on a fresh data directory, or drives one already running
//! (`--target`), with N tellers and M supervisors over real gRPC with mutual TLS. Each teller
//! is one connection, as a branch terminal is; each supervisor is one connection with an
//! Attend stream and approves every offer at once. A lifecycle is Submit, Watch until the
//! final state, and on the supervisor's side Offer, Accept and Decide (twice with `--dual`).
//!
//! Closed loop by default (every teller keeps `--in-flight` lifecycles going, as fast as the
//! server answers); open loop with `--rate R`, where lifecycles start on a fixed schedule
//! whether or not earlier ones have finished, so a slow server shows as latency rather than
//! as a politely lower rate. Latencies are taken by the clients; CPU and peak RSS are read from
//! the server process's /proc entries, so the clients' own work (they share the machine) is
//! reported apart.
//!
//! Requests are built from `tools::workload`, as the demo's are. A lifecycle that fails says
//! why in `LifecycleError`: the server's status, or what the client itself found wrong; this
//! client never makes a gRPC status of its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};

use load::{fill, floor, timed};
use server::{Server, principals_of, start_server};

mod lifecycle;
mod load;
mod report;
mod server;

/// What each request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// No images.
    W0,
    /// Two 64 KiB images (JPEG header, random body) per request.
    W1,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Simulated tellers, one connection each [default: 16; with --target, every teller the
    /// PKI has].
    #[arg(long = "tellers")]
    pub tellers_wanted: Option<usize>,
    /// Simulated supervisors, one connection and Attend stream each, approving at once
    /// [default: 64; with --target, every supervisor the PKI has].
    #[arg(long = "supervisors")]
    pub supervisors_wanted: Option<usize>,
    /// The tellers and supervisors of the run, settled by `run` from the above.
    #[arg(skip)]
    pub tellers: usize,
    #[arg(skip)]
    pub supervisors: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Start this many lifecycles per second (open loop) instead of as many as the server
    /// takes.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Lifecycles each teller keeps going at once (closed loop).
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// w0: no images; w1: two 64 KiB images per request [default: w0; with --target, w1,
    /// which a server that asks for voucher images (as the sample does) accepts].
    #[arg(long = "workload", value_enum)]
    pub workload_wanted: Option<Workload>,
    /// The workload of the run, settled by `run`.
    #[arg(skip = Workload::W0)]
    pub workload: Workload,
    /// Dual control: two approvals by two supervisors per request.
    #[arg(long)]
    pub dual: bool,
    /// Drive a running server at this address instead of starting one (needs --pki). Several
    /// addresses, comma-separated (a cluster's nodes): the one that leads is driven, and when
    /// it is lost every client finds the new leader and carries on.
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<SocketAddr>,
    /// With --target: the PKI directory whose principals.toml names the tellers and
    /// supervisors to use, with their certificates.
    #[arg(long)]
    pub pki: Option<PathBuf>,
    /// With --target: the server's process id, to report its CPU and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// With --target: the server's data directory, to report disk use.
    #[arg(long)]
    pub server_data: Option<PathBuf>,
    /// Instead of a timed run, submit this many requests with no supervisor attending and
    /// report the server's memory with all of them queued.
    #[arg(long)]
    pub fill: Option<usize>,
    /// Instead of lifecycles, time bare RPCs (grpc.health.v1 Check) over the same
    /// connections: the cost of the transport alone on this machine.
    #[arg(long)]
    pub floor: bool,
    /// The storage backend of the server bench starts: postgres runs it in a database made for
    /// the run (and dropped after) on the server COUNTERSIGN_TEST_PG names (by default
    /// postgresql://postgres@127.0.0.1:5432/postgres).
    #[arg(long, value_enum, default_value = "embedded")]
    pub backend: Backend,
    /// Seconds a client keeps looking for a leader after a call found it gone (UNAVAILABLE)
    /// before the lifecycle counts as an error.
    #[arg(long, default_value_t = 30.0)]
    pub leader_wait: f64,
    /// Print the figures as one JSON line at the end too.
    #[arg(long)]
    pub json: bool,
}

/// Where the server bench starts keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Embedded,
    Postgres,
}

pub async fn run(mut opts: Options) -> anyhow::Result<()> {
    let targeted = !opts.target.is_empty();
    opts.workload =
        opts.workload_wanted
            .unwrap_or(if targeted { Workload::W1 } else { Workload::W0 });
    if !targeted {
        opts.tellers = opts.tellers_wanted.unwrap_or(16);
        opts.supervisors = opts.supervisors_wanted.unwrap_or(64);
    }
    if let Some(pki) = opts.pki.as_ref().filter(|_| targeted) {
        let (tellers, supervisors) = principals_of(pki)?;
        opts.tellers = opts.tellers_wanted.unwrap_or(tellers.len());
        opts.supervisors = opts.supervisors_wanted.unwrap_or(supervisors.len());
    }
    if opts.tellers == 0 {
        bail!("--tellers must be at least 1");
    }
    if opts.fill.is_none() && opts.supervisors == 0 {
        bail!("--supervisors must be at least 1");
    }
    if opts.dual && opts.supervisors < 2 && opts.fill.is_none() {
        bail!("--dual needs at least 2 supervisors");
    }
    let tmp = tempfile::tempdir().context("create bench directory")?;
    let server = match opts.target.first() {
        Some(&first) => {
            let pki = opts
                .pki
                .clone()
                .context("--target needs --pki, the directory of the clients' certificates")?;
            let (tellers, supervisors) = principals_of(&pki)?;
            let addr = match opts.target.len() {
                1 => first,
                _ => {
                    // Health needs only a certificate the server's CA signed: a teller's.
                    let who = tellers.first().context("the PKI names no teller")?;
                    crate::tools::client::leader(
                        &opts.target,
                        &pki,
                        who,
                        std::time::Duration::from_secs(30),
                    )
                    .await?
                }
            };
            Server {
                addr,
                targets: opts.target.clone(),
                pki,
                child: None,
                pid: opts.server_pid,
                data: opts.server_data.clone(),
                tellers,
                supervisors,
                database: None,
            }
        }
        None => start_server(tmp.path(), &opts).await?,
    };
    if server.tellers.len() < opts.tellers || server.supervisors.len() < opts.supervisors {
        bail!(
            "the PKI has {} tellers and {} supervisors; asked for {} and {}",
            server.tellers.len(),
            server.supervisors.len(),
            opts.tellers,
            opts.supervisors
        );
    }
    let result = match (opts.fill, opts.floor) {
        (Some(n), _) => fill(&server, &opts, n).await,
        (None, true) => floor(&server, &opts).await,
        (None, false) => timed(&server, &opts).await,
    };
    server.stop().await?;
    result
}
