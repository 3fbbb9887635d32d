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

// A tool, not the engine: a load generator measures real elapsed time (Instant), and its bookkeeping locks are never
// poisoned unless a task already panicked, which ends the run anyway.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::api::pb::{
    self, supervisor_service_client::SupervisorServiceClient,
    teller_service_client::TellerServiceClient,
};
use crate::domain::Role;
use crate::tools::client;
use crate::tools::pki::DemoPrincipal;
use crate::tools::workload::{JPEG_HEADER, fake_jpeg, submit_request};

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
    /// Simulated tellers, one connection each.
    #[arg(long, default_value_t = 16)]
    pub tellers: usize,
    /// Simulated supervisors, one connection and Attend stream each, approving at once.
    #[arg(long, default_value_t = 64)]
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
    /// w0: no images; w1: two 64 KiB images per request.
    #[arg(long, value_enum, default_value = "w0")]
    pub workload: Workload,
    /// Dual control: two approvals by two supervisors per request.
    #[arg(long)]
    pub dual: bool,
    /// Drive a running server at this address instead of starting one (needs --pki).
    #[arg(long)]
    pub target: Option<SocketAddr>,
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
    /// Print the figures as one JSON line at the end too.
    #[arg(long)]
    pub json: bool,
}

/// Image size of workload W1.
const W1_IMAGE_BYTES: usize = 64 * 1024;
/// Under the sample policy: CNY 60,000.00 cash needs one level-2 approval, CNY 600,000.00
/// two level-3 approvals.
const SINGLE_AMOUNT: i64 = 6_000_000;
const DUAL_AMOUNT: i64 = 60_000_000;
/// How long `--fill` waits after the last submission before reading the server's memory.
const SETTLE: Duration = Duration::from_secs(10);
/// How long in-flight lifecycles may take to finish after the measured window.
const DRAIN: Duration = Duration::from_secs(30);

pub async fn run(opts: Options) -> anyhow::Result<()> {
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
    let server = match opts.target {
        Some(addr) => {
            let pki = opts
                .pki
                .clone()
                .context("--target needs --pki, the directory of the clients' certificates")?;
            let (tellers, supervisors) = principals_of(&pki)?;
            Server {
                addr,
                pki,
                child: None,
                pid: opts.server_pid,
                data: opts.server_data.clone(),
                tellers,
                supervisors,
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

/// The server under load and the principals to drive it with.
struct Server {
    addr: SocketAddr,
    pki: PathBuf,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    data: Option<PathBuf>,
    tellers: Vec<String>,
    supervisors: Vec<String>,
}

impl Server {
    fn usage(&self) -> Option<Usage> {
        self.pid.and_then(|p| Usage::of(&format!("/proc/{p}")))
    }

    fn disk_bytes(&self) -> Option<DiskBytes> {
        self.data.as_deref().map(DiskBytes::of)
    }

    /// SIGTERM, so the server flushes and exits as in production; it must exit 0.
    async fn stop(mut self) -> anyhow::Result<()> {
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
        Ok(())
    }
}

/// Writes a PKI with the bench's principals and a configuration whose limits admit the load,
/// and starts `countersign serve` on it.
async fn start_server(dir: &Path, opts: &Options) -> anyhow::Result<Server> {
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
        pki,
        pid: child.id(),
        child: Some(child),
        data: Some(dir.join("data")),
        tellers,
        supervisors,
    })
}

/// Tellers and supervisors of a PKI directory's principal directory (read and checked as the
/// server reads it) whose keys are in the directory too.
fn principals_of(pki: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
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

/// What one finished lifecycle measured, from the teller's side.
struct Sample {
    submit: Duration,
    notify: Duration,
}

/// Shared between the tellers, who note when each submission went out, and the supervisors,
/// who note when its first offer came in. Keyed by teller serial, which the offer carries;
/// sharded so that the bench itself is not the lock everything waits on.
struct OfferClock {
    shards: Vec<std::sync::Mutex<HashMap<String, Instant>>>,
    offers: std::sync::Mutex<Vec<Duration>>,
}

impl OfferClock {
    fn new() -> Self {
        Self {
            shards: (0..64)
                .map(|_| std::sync::Mutex::new(HashMap::new()))
                .collect(),
            offers: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn shard(&self, serial: &str) -> &std::sync::Mutex<HashMap<String, Instant>> {
        let h = serial
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        &self.shards[h % self.shards.len()]
    }

    fn sent(&self, serial: &str, at: Instant) {
        self.shard(serial)
            .lock()
            .unwrap()
            .insert(serial.to_owned(), at);
    }

    /// The first offer of a request (a dual-control request has two).
    fn offered(&self, serial: &str) {
        if let Some(at) = self.shard(serial).lock().unwrap().remove(serial) {
            self.offers.lock().unwrap().push(at.elapsed());
        }
    }
}

/// Counts that every task adds to.
#[derive(Default)]
struct Counters {
    finished_in_window: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
}

async fn timed(server: &Server, opts: &Options) -> anyhow::Result<()> {
    let images = Arc::new(Images::new(opts.workload));
    let offer_clock = Arc::new(OfferClock::new());
    let mut consoles = Vec::new();
    for id in &server.supervisors[..opts.supervisors] {
        let c = client::supervisor(server.addr, &server.pki, id).await?;
        consoles.push(tokio::spawn(supervise(c, offer_clock.clone())));
    }
    let mut terminals = Vec::new();
    for id in &server.tellers[..opts.tellers] {
        terminals.push(client::teller(server.addr, &server.pki, id).await?);
    }
    // Let every Attend stream register before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let counters = Arc::new(Counters::default());
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let run_id = format!("{:08x}", rand::random::<u32>());
    let disk_before = server.disk_bytes();
    let usage_before = server.usage();
    let own_before = Usage::of("/proc/self");
    let started = Instant::now();
    let window_end = started + Duration::from_secs_f64(opts.duration);
    let amount = if opts.dual {
        DUAL_AMOUNT
    } else {
        SINGLE_AMOUNT
    };
    let lifecycle = Lifecycle {
        images: images.clone(),
        amount,
        offer_clock: offer_clock.clone(),
        counters: counters.clone(),
        samples: samples.clone(),
        window_end,
    };

    let mut tasks = tokio::task::JoinSet::new();
    match opts.rate {
        None => {
            for (t, terminal) in terminals.iter().enumerate() {
                for w in 0..opts.in_flight {
                    let mut c = terminal.clone();
                    let lc = lifecycle.clone();
                    let prefix = format!("B{run_id}T{t}W{w}N");
                    tasks.spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < window_end {
                            lc.run(&mut c, format!("{prefix}{n}")).await;
                            n += 1;
                        }
                    });
                }
            }
        }
        Some(rate) => {
            if rate <= 0.0 {
                bail!("--rate must be positive");
            }
            let gap = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            let mut n = 0u64;
            while next < window_end {
                tokio::time::sleep_until(next.into()).await;
                let mut c = terminals[n as usize % terminals.len()].clone();
                let lc = lifecycle.clone();
                let serial = format!("B{run_id}N{n}");
                tasks.spawn(async move { lc.run(&mut c, serial).await });
                n += 1;
                next += gap;
            }
        }
    }
    let drained = tokio::time::timeout(
        window_end.saturating_duration_since(Instant::now()) + DRAIN,
        async { while tasks.join_next().await.is_some() {} },
    )
    .await
    .is_ok();
    let elapsed = started.elapsed();
    let usage_after = server.usage();
    let own_after = Usage::of("/proc/self");
    for c in consoles {
        c.abort();
    }
    if !drained {
        tasks.abort_all();
    }
    let disk_after = server.disk_bytes();

    let samples = std::mem::take(&mut *samples.lock().await);
    let offers = std::mem::take(&mut *offer_clock.offers.lock().unwrap());
    let lifecycles = samples.len() as u64;
    let in_window = counters.finished_in_window.load(Ordering::Relaxed);
    let report = Report {
        workload: opts.workload,
        dual: opts.dual,
        tellers: opts.tellers,
        supervisors: opts.supervisors,
        rate: opts.rate,
        duration_s: opts.duration,
        elapsed_s: elapsed.as_secs_f64(),
        lifecycles,
        errors: counters.errors.load(Ordering::Relaxed),
        refused: counters.refused.load(Ordering::Relaxed),
        unfinished: !drained,
        lifecycles_per_s: in_window as f64 / opts.duration,
        submit: Percentiles::of(samples.iter().map(|s| s.submit).collect()),
        notify: Percentiles::of(samples.iter().map(|s| s.notify).collect()),
        offer: Percentiles::of(offers),
        server: usage_before.zip(usage_after).map(|(b, a)| a.since(&b)),
        server_rss_peak_mib: usage_after.map(|u| u.rss_peak_kib as f64 / 1024.0),
        clients: own_before.zip(own_after).map(|(b, a)| a.since(&b)),
        disk: disk_before.zip(disk_after).map(|(b, a)| a.since(&b)),
    };
    report.print(opts.json);
    if lifecycles == 0 {
        bail!("no lifecycle finished");
    }
    Ok(())
}

/// One lifecycle as a teller sees it, with what every lifecycle shares.
#[derive(Clone)]
struct Lifecycle {
    images: Arc<Images>,
    amount: i64,
    offer_clock: Arc<OfferClock>,
    counters: Arc<Counters>,
    samples: Arc<Mutex<Vec<Sample>>>,
    window_end: Instant,
}

impl Lifecycle {
    async fn run(&self, c: &mut TellerServiceClient<Channel>, serial: String) {
        match self.attempt(c, &serial).await {
            Ok(sample) => {
                if Instant::now() <= self.window_end {
                    self.counters
                        .finished_in_window
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.samples.lock().await.push(sample);
            }
            Err(e) => {
                let counter = if e.is_refusal() {
                    &self.counters.refused
                } else {
                    &self.counters.errors
                };
                if counter.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("bench: {serial}: {e}");
                }
                // Do not spin on a server that refuses.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn attempt(
        &self,
        c: &mut TellerServiceClient<Channel>,
        serial: &str,
    ) -> Result<Sample, LifecycleError> {
        let mut req = submit_request(serial, "WDL-CASH", self.amount, ACCOUNT);
        req.images = self.images.for_request(serial);
        let sent = Instant::now();
        self.offer_clock.sent(serial, sent);
        let r = c.submit(req).await?.into_inner();
        let submit = sent.elapsed();
        let id = r
            .request
            .map(|r| r.request_id)
            .ok_or(LifecycleError::NoRequest)?;
        let mut watch = c
            .watch(pb::WatchRequest { request_id: id })
            .await?
            .into_inner();
        while let Some(w) = watch.message().await? {
            let state = w.request.map(|r| r.state).unwrap_or_default();
            if state == pb::RequestState::Approved as i32 {
                return Ok(Sample {
                    submit,
                    notify: sent.elapsed(),
                });
            }
            if state > pb::RequestState::Approved as i32 {
                return Err(LifecycleError::NotApproved(state));
            }
        }
        Err(LifecycleError::WatchEnded)
    }
}

/// Why a lifecycle did not end approved, as the teller saw it.
#[derive(Debug, thiserror::Error)]
enum LifecycleError {
    /// The server answered an RPC (or the Watch stream) with an error status.
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    /// Submit succeeded but its answer held no request.
    #[error("Submit answered without a request")]
    NoRequest,
    /// The request reached a final state other than Approved (the raw state number).
    #[error("ended in state {0}, not approved")]
    NotApproved(i32),
    /// The Watch stream ended before any final state.
    #[error("Watch ended before the decision")]
    WatchEnded,
}

impl LifecycleError {
    /// Whether the server refused the work for load (RESOURCE_EXHAUSTED: a full queue, too
    /// many pending), which the report counts apart from errors.
    fn is_refusal(&self) -> bool {
        matches!(self, LifecycleError::Rpc(s) if s.code() == tonic::Code::ResourceExhausted)
    }
}

const ACCOUNT: &str = "6222020200112233445";

/// The images of a workload. W1's bodies are random bytes made once per run; each request's
/// copies get the request's serial stamped over their first bytes, because the image store is
/// content-addressed and identical images on every request would be stored once and flatter
/// the figures. Stamping costs a copy, where fresh random bodies would cost the clients (who
/// share the server's two cores) more CPU than the server spends on them.
struct Images {
    bodies: Vec<(pb::ImageKind, Vec<u8>)>,
}

impl Images {
    fn new(workload: Workload) -> Images {
        let bodies = match workload {
            Workload::W0 => Vec::new(),
            Workload::W1 => vec![
                (
                    pb::ImageKind::Voucher,
                    fake_jpeg(W1_IMAGE_BYTES - JPEG_HEADER),
                ),
                (
                    pb::ImageKind::IdFront,
                    fake_jpeg(W1_IMAGE_BYTES - JPEG_HEADER),
                ),
            ],
        };
        Images { bodies }
    }

    fn for_request(&self, serial: &str) -> Vec<pb::ImageUpload> {
        self.bodies
            .iter()
            .map(|(kind, body)| {
                let mut content = body.clone();
                let stamp = &mut content[JPEG_HEADER..];
                let n = serial.len().min(stamp.len());
                stamp[..n].copy_from_slice(&serial.as_bytes()[..n]);
                pb::ImageUpload {
                    kind: *kind as i32,
                    media_type: "image/jpeg".into(),
                    content,
                }
            })
            .collect()
    }
}

/// A console that approves every offer at once.
async fn supervise(
    mut c: SupervisorServiceClient<Channel>,
    offer_clock: Arc<OfferClock>,
) -> anyhow::Result<()> {
    let mut offers = c.attend(pb::AttendRequest {}).await?.into_inner();
    while let Some(msg) = offers.message().await? {
        let Some(pb::attend_response::Event::Offer(o)) = msg.event else {
            continue;
        };
        if let Some(r) = &o.request {
            offer_clock.offered(&r.teller_serial);
        }
        if c.accept(pb::AcceptRequest {
            request_id: o.request_id.clone(),
            epoch: o.epoch,
        })
        .await
        .is_err()
        {
            continue;
        }
        // A refused decision shows as that lifecycle's error on the teller's side.
        let _ = c
            .decide(pb::DecideRequest {
                request_id: o.request_id,
                epoch: o.epoch,
                decision: pb::Decision::Approve as i32,
                reason_code: String::new(),
                comment: "checked".into(),
            })
            .await;
    }
    Ok(())
}

/// Bare RPCs: every teller connection runs `in_flight` loops of health checks.
async fn floor(server: &Server, opts: &Options) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut channels = Vec::new();
    for id in &server.tellers[..opts.tellers] {
        channels.push(client::channel(server.addr, &server.pki, id).await?);
    }
    let calls = Arc::new(AtomicU64::new(0));
    let usage_before = server.usage();
    let own_before = Usage::of("/proc/self");
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(opts.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for ch in &channels {
        for _ in 0..opts.in_flight {
            let mut h = HealthClient::new(ch.clone());
            let calls = calls.clone();
            tasks.spawn(async move {
                while Instant::now() < end {
                    if h.check(HealthCheckRequest::default()).await.is_ok() {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let n = calls.load(Ordering::Relaxed);
    let server_cpu = usage_before.zip(server.usage()).map(|(b, a)| a.since(&b));
    let client_cpu = own_before
        .zip(Usage::of("/proc/self"))
        .map(|(b, a)| a.since(&b));
    let per_call = |cpu: Option<f64>| cpu.map(|c| c / n.max(1) as f64 * 1e6);
    println!("\n| health checks | per second | server CPU per call | clients' CPU per call |");
    println!("|---|---|---|---|");
    println!(
        "| {n} | {:.0} | {} µs | {} µs |",
        n as f64 / elapsed,
        per_call(server_cpu).map_or("-".into(), |v| format!("{v:.1}")),
        per_call(client_cpu).map_or("-".into(), |v| format!("{v:.1}")),
    );
    if opts.json {
        println!(
            "{}",
            serde_json::json!({
                "calls": n,
                "calls_per_s": n as f64 / elapsed,
                "server_cpu_us_per_call": per_call(server_cpu),
                "client_cpu_us_per_call": per_call(client_cpu),
            })
        );
    }
    Ok(())
}

/// Submits `n` requests with nobody attending and reports the server's memory with all of them
/// in the queue.
async fn fill(server: &Server, opts: &Options, n: usize) -> anyhow::Result<()> {
    let mut terminals = Vec::new();
    for id in &server.tellers[..opts.tellers] {
        terminals.push(client::teller(server.addr, &server.pki, id).await?);
    }
    let run_id = format!("{:08x}", rand::random::<u32>());
    let amount = if opts.dual {
        DUAL_AMOUNT
    } else {
        SINGLE_AMOUNT
    };
    let images = Arc::new(Images::new(opts.workload));
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (t, terminal) in terminals.iter().enumerate() {
        for _ in 0..opts.in_flight {
            let mut c = terminal.clone();
            let next = next.clone();
            let failed = failed.clone();
            let run_id = run_id.clone();
            let images = images.clone();
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n as u64 {
                        break;
                    }
                    let serial = format!("F{run_id}T{t}N{i}");
                    let mut req = submit_request(&serial, "WDL-CASH", amount, ACCOUNT);
                    req.images = images.for_request(&serial);
                    if let Err(e) = c.submit(req).await
                        && failed.fetch_add(1, Ordering::Relaxed) < 3
                    {
                        eprintln!("bench: fill: {e}");
                    }
                }
            });
        }
    }
    let mut last_report = Instant::now();
    while !tasks.is_empty() {
        tokio::select! {
            _ = tasks.join_next() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        if last_report.elapsed() >= Duration::from_secs(5) && !opts.json {
            last_report = Instant::now();
            println!(
                "  ... {} of {n} submitted",
                next.load(Ordering::Relaxed).min(n as u64)
            );
        }
    }
    let elapsed = started.elapsed();
    let failed = failed.load(Ordering::Relaxed);
    let queued = n as u64 - failed;
    let usage_at_end = server.usage();
    // Allocators give freed memory back over seconds; what the queue itself holds is the
    // figure once that has happened.
    tokio::time::sleep(SETTLE).await;
    let usage = server.usage();
    let disk = server.disk_bytes();
    let rss = usage.map(|u| u.rss_kib as f64 / 1024.0);
    let rss_at_end = usage_at_end.map(|u| u.rss_kib as f64 / 1024.0);
    let peak = usage.map(|u| u.rss_peak_kib as f64 / 1024.0);
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    if !opts.json {
        println!(
            "\n| queued | refused | submit rate | server RSS now | server RSS peak | data dir |"
        );
        println!("|---|---|---|---|---|---|");
        println!(
            "| {queued} | {failed} | {:.0}/s | {} MiB | {} MiB | {} MiB |",
            queued as f64 / elapsed.as_secs_f64(),
            fmt(rss),
            fmt(peak),
            fmt(disk.map(|d| d.total() as f64 / 1048576.0)),
        );
    }
    let json = serde_json::json!({
        "queued": queued,
        "refused": failed,
        "submits_per_s": queued as f64 / elapsed.as_secs_f64(),
        "server_rss_mib": rss,
        "server_rss_at_end_mib": rss_at_end,
        "server_rss_peak_mib": peak,
        "disk_bytes": disk.map(|d| d.total()),
    });
    if opts.json {
        println!("{json}");
    }
    if failed > 0 {
        bail!("{failed} of {n} submissions were refused; the queue holds fewer than asked");
    }
    Ok(())
}

/// CPU and memory of a process, from /proc/<pid>/stat and /proc/<pid>/status.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_s: f64,
    rss_kib: u64,
    rss_peak_kib: u64,
}

impl Usage {
    fn of(proc_dir: &str) -> Option<Usage> {
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

    fn since(&self, before: &Usage) -> f64 {
        self.cpu_s - before.cpu_s
    }
}

/// Bytes under a data directory, by part.
#[derive(Debug, Clone, Copy, Default)]
struct DiskBytes {
    ledger: u64,
    images: u64,
    other: u64,
}

impl DiskBytes {
    fn of(data: &Path) -> DiskBytes {
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

    fn total(&self) -> u64 {
        self.ledger + self.images + self.other
    }

    fn since(&self, before: &DiskBytes) -> DiskBytes {
        DiskBytes {
            ledger: self.ledger.saturating_sub(before.ledger),
            images: self.images.saturating_sub(before.images),
            other: self.other.saturating_sub(before.other),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles in milliseconds.
    fn of(mut v: Vec<Duration>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1000.0
        };
        Percentiles {
            count: v.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

struct Report {
    workload: Workload,
    dual: bool,
    tellers: usize,
    supervisors: usize,
    rate: Option<f64>,
    duration_s: f64,
    elapsed_s: f64,
    lifecycles: u64,
    errors: u64,
    refused: u64,
    unfinished: bool,
    lifecycles_per_s: f64,
    submit: Percentiles,
    notify: Percentiles,
    offer: Percentiles,
    server: Option<f64>,
    server_rss_peak_mib: Option<f64>,
    clients: Option<f64>,
    disk: Option<DiskBytes>,
}

impl Report {
    fn print(&self, json: bool) {
        let per = |bytes: u64| (self.lifecycles > 0).then(|| bytes as f64 / self.lifecycles as f64);
        let disk_per = self.disk.and_then(|d| per(d.total()));
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let workload = match self.workload {
            Workload::W0 => "w0 (no images)",
            Workload::W1 => "w1 (2 x 64 KiB images)",
        };
        println!(
            "\nworkload {workload}{}, {} tellers, {} supervisors, {}, {:.0} s measured ({:.1} s with drain)",
            if self.dual { ", dual control" } else { "" },
            self.tellers,
            self.supervisors,
            self.rate.map_or("closed loop".to_string(), |r| format!(
                "open loop at {r:.0}/s"
            )),
            self.duration_s,
            self.elapsed_s,
        );
        println!(
            "\n| lifecycles | per second | errors | refused (RESOURCE_EXHAUSTED) | unfinished at the end |"
        );
        println!("|---|---|---|---|---|");
        println!(
            "| {} | {:.0} | {} | {} | {} |",
            self.lifecycles,
            self.lifecycles_per_s,
            self.errors,
            self.refused,
            if self.unfinished { "yes" } else { "none" }
        );
        println!("\n| latency (ms) | n | p50 | p90 | p99 | p99.9 | max |");
        println!("|---|---|---|---|---|---|---|");
        for (name, p) in [
            ("submit: sent to acknowledged", &self.submit),
            ("offer: submit sent to first offer", &self.offer),
            ("notify: submit sent to Watch sees approved", &self.notify),
        ] {
            println!(
                "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                p.count, p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
        println!(
            "\n| server CPU | clients' CPU | server RSS peak | disk per lifecycle (ledger / images / sled) |"
        );
        println!("|---|---|---|---|");
        println!(
            "| {} s | {} s | {} MiB | {} B ({} / {} / {}) |",
            opt(self.server, 2),
            opt(self.clients, 2),
            opt(self.server_rss_peak_mib, 1),
            opt(disk_per, 0),
            opt(self.disk.and_then(|d| per(d.ledger)), 0),
            opt(self.disk.and_then(|d| per(d.images)), 0),
            opt(self.disk.and_then(|d| per(d.other)), 0),
        );
        if json {
            let j = serde_json::json!({
                "workload": format!("{:?}", self.workload).to_lowercase(),
                "dual": self.dual,
                "lifecycles": self.lifecycles,
                "errors": self.errors,
                "lifecycles_per_s": self.lifecycles_per_s,
                "submit_p50_ms": self.submit.p50,
                "submit_p99_ms": self.submit.p99,
                "notify_p50_ms": self.notify.p50,
                "notify_p99_ms": self.notify.p99,
                "notify_p999_ms": self.notify.p999,
                "offer_p99_ms": self.offer.p99,
                "server_cpu_s": self.server,
                "server_rss_peak_mib": self.server_rss_peak_mib,
                "disk_bytes_per_lifecycle": disk_per,
            });
            println!("{j}");
        }
    }
}
