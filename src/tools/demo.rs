//! `countersign demo`: a real server in a temporary directory (or `--data`), or a running
//! cluster (`--target`), and real mTLS clients: simulated tellers submit, watch, resubmit
//! returned requests and cancel a few; simulated supervisors accept, view the voucher and
//! decide. Every client follows the leader (`client::Cluster`): a call that finds it gone is
//! retried on the new one, a Watch resumes after the version it saw, a console attends again
//! and decides the reviews handed back. It shows progress, a summary table with latency
//! percentiles, one request's history from the ledger, and (on its own server) an offline
//! ledger check; it exits non-zero if any request is left unfinished.

// A tool, not the engine: the demo times its run in real elapsed time (Instant), and its bookkeeping locks are never
// poisoned unless a task already panicked, which ends the run anyway.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::SeedableRng;
use tonic::transport::Channel;

use crate::api::pb::{self, supervisor_service_client::SupervisorServiceClient};
use crate::config::Config;
use crate::engine::SystemClock;
use crate::tools::client;
use crate::tools::workload::{fake_jpeg, submit_request};

/// What happened to one simulated request, as its teller saw it.
struct Outcome {
    state: pb::RequestState,
    returned: bool,
    /// Submit sent to first IN_REVIEW seen.
    wait: Option<Duration>,
    /// First IN_REVIEW seen to the final state seen.
    decision: Option<Duration>,
}

/// Where the demo runs.
pub enum Target {
    /// A server of its own, in this directory (a temporary one when `None`).
    Own(Option<PathBuf>),
    /// A running cluster's nodes, with the PKI directory of the demo principals.
    Cluster {
        addrs: Vec<SocketAddr>,
        pki: PathBuf,
    },
}

/// Starts the witness `pki init` configured (witness.toml), on a port of the OS's choosing;
/// none for a directory made before witnesses existed.
async fn start_witness(pki: &std::path::Path) -> anyhow::Result<Option<crate::witness::Running>> {
    let path = pki.join(crate::tools::pki::WITNESS_CONFIG);
    if !path.exists() {
        return Ok(None);
    }
    let c = crate::witness::config::load(&path)?;
    let clock = Arc::new(|| {
        use crate::engine::Clock as _;
        (SystemClock.now().0 / 1000).max(0) as u64
    });
    let w = tokio::task::spawn_blocking(move || {
        crate::witness::Witness::open(c.cosigner, c.logs, &c.state_dir, clock)
    })
    .await??;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the demo witness")?;
    Ok(Some(crate::witness::serve(Arc::new(w), listener)?))
}

/// Signs a checkpoint of everything and waits (up to 10 s) for the witness to cosign it;
/// returns the size cosigned.
async fn await_cosigned(auditor: &client::Cluster) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refresh = true;
    loop {
        let r = auditor
            .call(|ch| async move {
                client::auditor_on(ch)
                    .get_checkpoint(pb::GetCheckpointRequest {
                        tree_size: 0,
                        refresh,
                    })
                    .await
            })
            .await?
            .into_inner();
        refresh = false;
        if let Some(w) = r.witnesses.first()
            && w.cosigned_tree_size >= r.tree_size
        {
            return Ok(w.cosigned_tree_size);
        }
        if Instant::now() > deadline {
            let why = r
                .witnesses
                .first()
                .map(|w| w.error.clone())
                .unwrap_or_default();
            bail!("the witness did not cosign the last checkpoint within 10 s: {why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo's keys, as an auditor would pin them: the ledger's and the witness's.
fn demo_trust(pki: &std::path::Path) -> anyhow::Result<crate::verify::Trust> {
    let read = |name: &str| {
        std::fs::read_to_string(pki.join(name))
            .with_context(|| format!("read {}", pki.join(name).display()))
    };
    let pubkey = crate::ledger::checkpoint::parse_verifier(read("ledger.pub")?.trim())?;
    let witnesses = match read("witness.pub") {
        Ok(text) => vec![crate::ledger::cosignature::parse_witness_key(text.trim())?],
        Err(_) => Vec::new(),
    };
    Ok(crate::verify::Trust {
        pubkey: Some(pubkey),
        witnesses_required: witnesses.len(),
        witnesses,
        kept: Vec::new(),
        // The sample configuration's origin, which the demo's server signs with.
        origin: Some("countersign.example/ledger".into()),
    })
}

/// Starts a server on the sample configuration with the PKI in `pki`, its data in `data`
/// beside it, listening at `listen`, with `witnesses` as its `[[ledger.witnesses]]` section.
pub(crate) async fn sample_server(
    pki: &std::path::Path,
    listen: &str,
    witnesses: &str,
) -> anyhow::Result<crate::server::Server> {
    let config_text = crate::config::SAMPLE
        .replace(
            "listen = \"127.0.0.1:7443\"",
            &format!("listen = \"{listen}\""),
        )
        .replace("data_dir = \"data\"", "data_dir = \"../data\"")
        .replace(crate::config::SAMPLE_WITNESS, witnesses);
    let config = Config::parse(&config_text, pki)?;
    crate::server::start(
        &config,
        Arc::new(SystemClock),
        Box::new(rand_chacha::ChaCha20Rng::from_os_rng()),
    )
    .await
}

/// How long a client keeps looking for a leader after a call found it gone.
const LEADER_WAIT: Duration = Duration::from_secs(30);

pub async fn run(requests: usize, target: Target) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("create demo directory")?;
    let (server, addrs, pki, dir) = match target {
        Target::Own(data) => {
            let dir = data.unwrap_or_else(|| tmp.path().to_owned());
            let pki = dir.join("pki");
            if !pki.join("ca.pem").exists() {
                crate::tools::pki::init(&pki)?;
            }
            // The witness a party other than the centre would run, here in the same process.
            let witness = start_witness(&pki).await?;
            let witness_section = match &witness {
                Some(w) => format!(
                    "[[ledger.witnesses]]\nurl = \"http://{}\"\nkey = \"@witness.pub\"\n",
                    w.addr
                ),
                None => String::new(),
            };
            let server = sample_server(&pki, "127.0.0.1:0", &witness_section).await?;
            let addr = server.addr;
            println!(
                "Countersign demo: server on {addr} (gRPC, mutual TLS), data in {}",
                dir.display()
            );
            if let Some(w) = &witness {
                println!("A witness on http://{} cosigns each checkpoint.", w.addr);
            }
            (Some((server, witness)), vec![addr], pki, Some(dir))
        }
        Target::Cluster { addrs, pki } => {
            println!(
                "Countersign demo: the cluster of {addrs:?} (gRPC, mutual TLS); every client \
                 follows its leader"
            );
            (None, addrs, pki, None)
        }
    };
    let cluster = |id: &str| client::Cluster::new(&addrs, &pki, id, LEADER_WAIT);
    println!(
        "4 supervisors attend; 3 tellers at 2 branches submit {requests} requests with 2 images each,"
    );
    println!(
        "under the sample policy.toml: level 2 from CNY 50,000; two level-3 approvals from CNY 500,000."
    );
    println!(
        "Supervisors approve most, reject some, return some for a rescan; tellers cancel a few.\n"
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vouchers = Arc::new(Vouchers::default());
    let mut supervisors = Vec::new();
    for id in ["sup-01", "sup-02", "sup-03", "sup-04"] {
        let c = cluster(id);
        c.channel().await?;
        supervisors.push(tokio::spawn(supervise(c, stop.clone(), vouchers.clone())));
    }
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tellers = Vec::new();
    let per = |i: usize| requests / 3 + usize::from(i < requests % 3);
    for (i, id) in ["teller-01", "teller-02", "teller-03"]
        .into_iter()
        .enumerate()
    {
        let c = cluster(id);
        c.channel().await?;
        tellers.push(tokio::spawn(tell(
            c,
            id,
            per(i),
            done.clone(),
            vouchers.clone(),
        )));
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                println!(
                    "  ... {} of {requests} requests finished",
                    done.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        })
    };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for t in tellers {
        match tokio::time::timeout(Duration::from_secs(300), t).await {
            Ok(Ok(Ok(o))) => outcomes.extend(o),
            Ok(Ok(Err(e))) => failures.push(format!("{e:#}")),
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("a teller did not finish within 300 s".into()),
        }
    }
    progress.abort();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let elapsed = started.elapsed();
    for s in supervisors {
        s.abort();
    }

    // The auditor's view of one request that was returned and resubmitted.
    let auditor = cluster("audit-01");
    let approved = auditor
        .call(|ch| async move {
            client::auditor_on(ch)
                .search(pb::SearchRequest {
                    outcome: pb::RequestState::Approved as i32,
                    page_size: 200,
                    ..Default::default()
                })
                .await
        })
        .await?
        .into_inner()
        .requests;
    for s in approved {
        let history = auditor
            .call(|ch| {
                let request_id = s.request_id.clone();
                async move {
                    client::auditor_on(ch)
                        .get_request(pb::GetRequestRequest { request_id })
                        .await
                }
            })
            .await?
            .into_inner();
        if !history.events.iter().any(|e| e.kind == "resubmitted") {
            continue;
        }
        println!(
            "\nThe ledger's history of {} (returned, resubmitted, then approved):",
            s.request_id
        );
        for e in &history.events {
            println!("  #{:<5} {:<16} by {}", e.index, e.kind, e.actor_id);
        }
        break;
    }
    let refused = branch_fallback(&cluster("teller-03"), &pki).await?;
    review_all(&cluster("review-01")).await?;
    let controls = controls_summary(&cluster("audit-01"), &refused).await?;
    let witnessed = match &server {
        Some((_, Some(_))) => Some(await_cosigned(&auditor).await?),
        _ => None,
    };
    if let Some((server, witness)) = server {
        server.shutdown().await?;
        if let Some(w) = witness {
            w.stop().await;
        }
    }

    summarize(&outcomes, requests, elapsed, &vouchers);
    println!("{controls}");
    let problem = match dir {
        Some(dir) => {
            let trust = demo_trust(&pki)?;
            let report = crate::verify::verify_data_dir_with(&dir.join("data"), &trust);
            let problem = report.problem.clone().or_else(|| {
                crate::verify::unsigned_problem(&report, crate::verify::UNSIGNED_RECORDS_MAX)
                    .or_else(|| {
                        crate::verify::uncosigned_problem(
                            &report,
                            &trust,
                            crate::verify::UNSIGNED_RECORDS_MAX,
                        )
                    })
            });
            if let Some(w) = witnessed {
                println!("\nThe witness cosigned the checkpoint of size {w}.");
            }
            println!(
                "ledger verify --pubkey ledger.pub --witness witness.pub: {} records, {} signed \
                 checkpoints, {} cosignatures; {} records witnessed; root {}: {}",
                report.records,
                report.checkpoints,
                report.cosignatures,
                report.cosigned,
                hex::encode(report.root),
                problem.as_deref().unwrap_or("OK")
            );
            problem
        }
        None => {
            println!(
                "\nverify the cluster's ledger with: countersign ledger verify --database URL"
            );
            None
        }
    };
    let unfinished = requests - outcomes.iter().filter(|o| final_state(o.state)).count();
    if !failures.is_empty() || unfinished > 0 || problem.is_some() {
        for f in &failures {
            println!("failure: {f}");
        }
        bail!("{unfinished} requests were left unfinished");
    }
    Ok(())
}

fn final_state(s: pb::RequestState) -> bool {
    matches!(
        s,
        pb::RequestState::Approved
            | pb::RequestState::Rejected
            | pb::RequestState::Cancelled
            | pb::RequestState::Expired
    )
}

fn summarize(outcomes: &[Outcome], requests: usize, elapsed: Duration, vouchers: &Vouchers) {
    let count = |s: pb::RequestState| outcomes.iter().filter(|o| o.state == s).count();
    let pct = |mut v: Vec<Duration>, q: f64| -> String {
        if v.is_empty() {
            return "-".into();
        }
        v.sort();
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        format!("{:.1} ms", v[i].as_secs_f64() * 1000.0)
    };
    let waits: Vec<Duration> = outcomes.iter().filter_map(|o| o.wait).collect();
    let decisions: Vec<Duration> = outcomes.iter().filter_map(|o| o.decision).collect();
    println!(
        "\n| requests | approved | rejected | returned and resubmitted | cancelled | unfinished | time |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {requests} | {} | {} | {} | {} | {} | {:.1} s |",
        count(pb::RequestState::Approved),
        count(pb::RequestState::Rejected),
        outcomes.iter().filter(|o| o.returned).count(),
        count(pb::RequestState::Cancelled),
        requests - outcomes.iter().filter(|o| final_state(o.state)).count(),
        elapsed.as_secs_f64()
    );
    println!("\n| latency (teller's view) | p50 | p90 | p99 |");
    println!("|---|---|---|---|");
    println!(
        "| wait: submit to in review | {} | {} | {} |",
        pct(waits.clone(), 0.5),
        pct(waits.clone(), 0.9),
        pct(waits, 0.99)
    );
    println!(
        "| decision: in review to decided | {} | {} | {} |",
        pct(decisions.clone(), 0.5),
        pct(decisions.clone(), 0.9),
        pct(decisions, 0.99)
    );
    let load = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "\nBlind re-keying (CNY 500,000 and up): {} approvals typed the amount and account from \
         the voucher; {} typing mistakes were refused and recorded (rekey_mismatched).",
        load(&vouchers.rekeyed),
        load(&vouchers.mistakes)
    );
}

/// What each voucher says, by request id: the simulated supervisors read the amount and the
/// account off it when the policy asks them to re-key, since their copy of the request
/// withholds them.
#[derive(Default)]
struct Vouchers {
    by_request: std::sync::Mutex<std::collections::HashMap<String, (i64, String)>>,
    /// Approvals that carried re-keyed fields.
    rekeyed: std::sync::atomic::AtomicUsize,
    /// Re-keyings refused as mismatched.
    mistakes: std::sync::atomic::AtomicUsize,
}

impl Vouchers {
    fn put(&self, request_id: &str, amount: i64, account: &str) {
        let mut m = self.by_request.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(request_id.to_owned(), (amount, account.to_owned()));
    }

    /// The voucher of a request, waiting a little for its teller to file it (the offer can
    /// arrive before the teller has read the Submit answer).
    async fn read(&self, request_id: &str) -> Option<(i64, String)> {
        for _ in 0..100 {
            if let Some(v) = self
                .by_request
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(request_id)
            {
                return Some(v.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// A supervisor console: takes every offer, looks at the voucher, and decides. When its
/// leader is gone it attends the new one, which first hands back the reviews it held.
/// Branch BR-0202 lost the centre for a while: its level-2 supervisor sup-04 authorized two
/// large cash withdrawals on site, one before this run's server started and one while it was
/// serving, and teller-03 registers both, signed with sup-04's key; a third, of an amount the
/// policy keeps central, is refused. Returns the refusals' messages.
async fn branch_fallback(
    teller: &client::Cluster,
    pki: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let read = |name: &str| {
        std::fs::read_to_string(pki.join(name)).with_context(|| format!("read {name}"))
    };
    let cert = crate::tools::fallback::certificate_der(&read("sup-04.pem")?)?;
    let key = read("sup-04.key")?;
    let now = crate::engine::Clock::now(&SystemClock).0;
    let run = now.to_string();
    let mut refused = Vec::new();
    for (n, (amount, ago_ms)) in [
        (12_000_000, 2 * 3_600_000),
        // Now: this run's server is serving.
        (8_000_000, 0),
        (80_000_000, 60_000),
    ]
    .into_iter()
    .enumerate()
    {
        let submit = submit_request(
            &format!("FB-{run}-{n}"),
            "WDL-CASH",
            amount,
            "6222020200112233445",
        );
        let req = crate::tools::fallback::register_request(
            "teller-03",
            submit,
            "sup-04",
            crate::domain::Timestamp(now - ago_ms),
            pb::FallbackReason::CentreUnreachable,
            &cert,
            &key,
        )?;
        let r = teller
            .call(|ch| {
                let req = req.clone();
                async move { client::teller_on(ch).register_fallback(req).await }
            })
            .await;
        match r {
            Ok(_) => {}
            Err(client::CallError::Rpc(s)) if s.code() == tonic::Code::FailedPrecondition => {
                refused.push(s.message().to_owned());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(refused)
}

/// The rulebook controls' lines of the summary, from one read of the auditor's statistics.
async fn controls_summary(auditor: &client::Cluster, refused: &[String]) -> anyhow::Result<String> {
    let stats = auditor
        .call(|ch| async move {
            client::auditor_on(ch)
                .get_statistics(pb::GetStatisticsRequest::default())
                .await
        })
        .await?
        .into_inner();
    let lines: Vec<String> = stats
        .fallbacks
        .iter()
        .map(|f| {
            format!(
                "{} registered {}, of which {} authorized while the centre was serving",
                f.branch_id, f.registered, f.while_serving
            )
        })
        .collect();
    let r = stats.reviews.unwrap_or_default();
    Ok(format!(
        "\nOn-site fallback (应急授权): {}; {} refused ({}).\n\
         After-the-fact review (事后监督, sample policy: 5% of approvals, 20% from CNY 500,000, \
         every fallback): {} drawn; review-01 reviewed {}, flagged {} (by branch {:?}).",
        lines.join("; "),
        refused.len(),
        refused.join("; "),
        r.drawn,
        r.reviewed,
        r.flagged,
        r.flagged_by_branch
            .iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    ))
}

/// The reviewer works through the after-the-fact review queue: sampled approvals are
/// confirmed, every fallback flagged for the branch to explain.
async fn review_all(reviewer: &client::Cluster) -> anyhow::Result<()> {
    let mut pending = Vec::new();
    let mut page_token = String::new();
    loop {
        let token = page_token.clone();
        let page = reviewer
            .call(|ch| {
                let page_token = token.clone();
                async move {
                    client::reviewer_on(ch)
                        .list_reviews(pb::ListReviewsRequest {
                            page_token,
                            ..Default::default()
                        })
                        .await
                }
            })
            .await?
            .into_inner();
        pending.extend(page.requests);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    for r in &pending {
        let (outcome, comment) = if r.state == pb::RequestState::Fallback as i32 {
            (
                pb::ReviewOutcome::Flagged,
                "authorized on site: the branch to explain why the centre was not used",
            )
        } else {
            (pb::ReviewOutcome::Confirmed, "")
        };
        let req = pb::ReviewRequest {
            request_id: r.request_id.clone(),
            outcome: outcome as i32,
            comment: comment.into(),
        };
        reviewer
            .call(|ch| {
                let req = req.clone();
                async move { client::reviewer_on(ch).review(req).await }
            })
            .await?;
    }
    Ok(())
}

async fn supervise(
    c: client::Cluster,
    stop: Arc<std::sync::atomic::AtomicBool>,
    vouchers: Arc<Vouchers>,
) -> anyhow::Result<()> {
    let mut since = tokio::time::Instant::now();
    loop {
        let (number, ch) = c.channel().await?;
        let failed = match console(client::supervisor_on(ch), &stop, &vouchers).await {
            Ok(()) => return Ok(()),
            Err(s) => s,
        };
        c.failed(number, failed, since).await?;
        since = tokio::time::Instant::now();
    }
}

/// One Attend stream, until it ends or the demo stops (`Ok`), or the leader is gone.
async fn console(
    mut c: SupervisorServiceClient<Channel>,
    stop: &std::sync::atomic::AtomicBool,
    vouchers: &Vouchers,
) -> Result<(), tonic::Status> {
    let gone = |s: tonic::Status| client::leader_gone(&s).then_some(s);
    let mut offers = c.attend(pb::AttendRequest {}).await?.into_inner();
    while let Some(msg) = offers.message().await? {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let (request_id, epoch, request) = match msg.event {
            Some(pb::attend_response::Event::Offer(o)) => {
                let accepted = c
                    .accept(pb::AcceptRequest {
                        request_id: o.request_id.clone(),
                        epoch: o.epoch,
                    })
                    .await;
                if let Err(s) = accepted {
                    // Withdrawn meanwhile (nothing to decide), or the leader is gone.
                    match gone(s) {
                        Some(s) => return Err(s),
                        None => continue,
                    }
                }
                (o.request_id, o.epoch, o.request.unwrap_or_default())
            }
            Some(pb::attend_response::Event::ReviewResumed(r)) => {
                (r.request_id, r.epoch, r.request.unwrap_or_default())
            }
            _ => continue,
        };
        if let Some(img) = request.images.first()
            && let Err(s) = c
                .get_offer_image(pb::GetOfferImageRequest {
                    request_id: request_id.clone(),
                    sha256: img.sha256.clone(),
                })
                .await
            && let Some(s) = gone(s)
        {
            return Err(s);
        }
        let roll: u32 = rand::random_range(0..100);
        let (decision, code, comment) = match roll {
            0..10 if request.returns.is_empty() => (
                pb::Decision::Return,
                "IMG_UNREADABLE",
                "voucher scan is blurred; rescan",
            ),
            10..18 => (
                pb::Decision::Reject,
                "ID_MISMATCH",
                "signature does not match the specimen",
            ),
            _ => (pb::Decision::Approve, "", "checked"),
        };
        // Where the policy asks, an approval types the amount and account from the voucher;
        // one in five is mistyped first, refused, and typed again.
        let mut rekeyed = None;
        if decision == pb::Decision::Approve
            && !request.rekey_fields.is_empty()
            && let Some((amount, account)) = vouchers.read(&request_id).await
        {
            vouchers
                .rekeyed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let typed = |amount| {
                Some(pb::Rekeyed {
                    amount_minor_units: Some(amount),
                    account: Some(account.clone()),
                    counterparty: None,
                })
            };
            if rand::random_range(0..5) == 0 {
                let mistyped = c
                    .decide(pb::DecideRequest {
                        request_id: request_id.clone(),
                        epoch,
                        decision: decision as i32,
                        reason_code: String::new(),
                        comment: comment.into(),
                        rekeyed: typed(amount / 10),
                    })
                    .await;
                match mistyped {
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                        vouchers
                            .mistakes
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(s) => {
                        if let Some(s) = gone(s) {
                            return Err(s);
                        }
                    }
                    Ok(_) => {}
                }
            }
            rekeyed = typed(amount);
        }
        let decided = c
            .decide(pb::DecideRequest {
                request_id,
                epoch,
                decision: decision as i32,
                reason_code: code.into(),
                comment: comment.into(),
                rekeyed,
            })
            .await;
        if let Err(s) = decided
            && let Some(s) = gone(s)
        {
            return Err(s);
        }
    }
    Ok(())
}
/// A teller: submits `n` requests, at most four open at once, follows each with Watch,
/// resubmits returned ones and cancels about one in twenty-five.
async fn tell(
    c: client::Cluster,
    id: &'static str,
    n: usize,
    done: Arc<std::sync::atomic::AtomicUsize>,
    vouchers: Arc<Vouchers>,
) -> anyhow::Result<Vec<Outcome>> {
    let gate = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let c = c.clone();
        let done = done.clone();
        let vouchers = vouchers.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let out = follow(&c, &format!("{id}-{i:05}"), i, &vouchers).await?;
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            anyhow::Ok(out)
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await??);
    }
    Ok(outcomes)
}

/// One request from the teller's side: submitted (retried with its serial on a new leader),
/// watched to its final state (resumed after the version seen), resubmitted when returned.
async fn follow(
    c: &client::Cluster,
    serial: &str,
    i: usize,
    vouchers: &Vouchers,
) -> anyhow::Result<Outcome> {
    let sent = Instant::now();
    // Under the sample policy CNY 50,000.00 and up needs a level-2 supervisor, and one
    // request in eight is CNY 600,000.00, which needs two level-3 approvals.
    let amount = if i % 8 == 7 {
        60_000_000
    } else {
        5_000_000 + 1_000 * i as i64
    };
    // Built once: a retry must send the same content (the images are random) to be taken
    // as the same submission.
    let submission = submit_request(serial, "WDL-CASH", amount, "6222020200112233445");
    let r = c
        .call(|ch| {
            let req = submission.clone();
            async move { client::teller_on(ch).submit(req).await }
        })
        .await?
        .into_inner()
        .request
        .context("no request")?;
    let request_id = r.request_id.clone();
    vouchers.put(&request_id, amount, "6222020200112233445");
    if rand::random_range(0..25) == 0 {
        // A retry after a lost answer finds it cancelled already: FAILED_PRECONDITION.
        let _ = c
            .call(|ch| {
                let request_id = request_id.clone();
                async move {
                    client::teller_on(ch)
                        .cancel(pb::CancelRequest {
                            request_id,
                            reason: "customer left".into(),
                        })
                        .await
                }
            })
            .await;
    }
    let mut out = Outcome {
        state: pb::RequestState::Queued,
        returned: false,
        wait: None,
        decision: None,
    };
    let mut in_review = None;
    let mut watch = c.watch(&request_id);
    while let Some(w) = watch.next().await? {
        let state = pb::RequestState::try_from(w.state).unwrap_or_default();
        out.state = state;
        match state {
            pb::RequestState::InReview if in_review.is_none() => {
                in_review = Some(Instant::now());
                out.wait = Some(sent.elapsed());
            }
            pb::RequestState::Returned => {
                out.returned = true;
                resubmit(c, &request_id, &r.images[0].sha256).await?;
            }
            s if final_state(s) => {
                out.decision = in_review.map(|t| t.elapsed());
                return Ok(out);
            }
            _ => {}
        }
    }
    bail!("the Watch of {request_id} ended before a final state")
}

/// Sends a returned request back with its voucher rescanned. A retry whose first attempt went
/// through (its answer lost with the leader) is refused FAILED_PRECONDITION: it is not
/// RETURNED any more, which is what was wanted.
async fn resubmit(c: &client::Cluster, request_id: &str, old: &str) -> anyhow::Result<()> {
    let rescan = pb::ResubmitRequest {
        request_id: request_id.to_owned(),
        images: vec![pb::ImageUpload {
            kind: pb::ImageKind::Voucher as i32,
            media_type: "image/jpeg".into(),
            content: fake_jpeg(32 * 1024),
        }],
        remove_image_sha256: vec![old.to_owned()],
        note: "voucher rescanned".into(),
    };
    let sent = c
        .call(|ch| {
            let req = rescan.clone();
            async move { client::teller_on(ch).resubmit(req).await }
        })
        .await;
    match sent {
        Err(client::CallError::Rpc(s)) if s.code() == tonic::Code::FailedPrecondition => Ok(()),
        r => r.map(|_| ()).map_err(Into::into),
    }
}
