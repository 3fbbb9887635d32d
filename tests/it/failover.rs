//! Failover with the real binary: three `countersign serve` nodes on one database under teller
//! and supervisor load, the leader SIGKILLed again and again (`COUNTERSIGN_FAILOVER_ROUNDS`,
//! 3 by default). After each takeover every acknowledged submission and decision is there on
//! the new leader, and at the end the ledger verifies across every term (so no request was
//! decided twice, and the checkpoints of different leaders are consistent). Prints the
//! takeover times: from the SIGKILL to the first Submit the new leader answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::crash::{Acked, check, load};
use crate::durability::{BinaryFiles, spawn_server};
use crate::fixtures::submit_request;

/// A node's process and address, while it runs.
struct Node {
    config: PathBuf,
    /// Killed when dropped (`Spawned`), so a failed test leaves no node running.
    run: Option<(crate::durability::Spawned, std::net::SocketAddr)>,
}

impl Node {
    fn start(&mut self) {
        self.run = Some(spawn_server(&self.config));
    }

    fn addr(&self) -> Option<std::net::SocketAddr> {
        self.run.as_ref().map(|(_, a)| *a)
    }

    fn kill(&mut self) {
        if let Some((mut child, _)) = self.run.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

/// Nodes 1 to `n` of the cluster on `files`' database, not started.
fn nodes(files: &BinaryFiles, n: usize) -> Vec<Node> {
    (1..=n)
        .map(|i| Node {
            config: node_config(files, i),
            run: None,
        })
        .collect()
}

/// Writes node `n`'s configuration: the shared one with its own id, its own port.
fn node_config(files: &BinaryFiles, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(&files.config)
        .unwrap()
        .replace("node_id = \"node-1\"", &format!("node_id = \"node-{n}\""))
        .replace(
            "advertise = \"node-1.test:7443\"",
            "advertise = \"127.0.0.1:0\"",
        );
    assert!(
        text.contains(&format!("node-{n}")),
        "the nodes run on postgres"
    );
    let path = files.pki.join(format!("node-{n}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Submits until a node answers as the leader; returns which node and when.
async fn first_submit(
    nodes: &[Node],
    pki: &Path,
    serial: &str,
    acked: &Acked,
    deadline: Duration,
) -> (usize, Instant) {
    let started = Instant::now();
    loop {
        for (i, node) in nodes.iter().enumerate() {
            let Some(addr) = node.addr() else { continue };
            let Ok(mut c) = countersign::tools::client::teller(addr, pki, "teller-01").await else {
                continue;
            };
            let mut req = submit_request(serial, "WDL-CASH", 777, "6222020200110001");
            req.images.truncate(1);
            if let Ok(r) = c.submit(req).await {
                let at = Instant::now();
                let id = r.into_inner().request.unwrap().request_id;
                acked
                    .lock()
                    .unwrap()
                    .insert(id, ("teller-01".into(), serial.into(), 777, None));
                return (i, at);
            }
        }
        assert!(
            started.elapsed() < deadline,
            "no node took over within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn repeated_sigkill_of_the_leader_loses_nothing_acknowledged() {
    let _alone = crate::harness::CLUSTER_OF_PROCESSES.lock().await;
    let rounds: usize = std::env::var("COUNTERSIGN_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let files = BinaryFiles::new();
    let mut nodes = nodes(&files, 3);
    for n in &mut nodes {
        n.start();
    }
    let acked: Acked = Default::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (mut leader, _) =
        first_submit(&nodes, &files.pki, "FIRST", &acked, Duration::from_secs(30)).await;
    let mut takeovers = Vec::new();
    for round in 0..=rounds {
        let addr = nodes[leader].addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = load(
            addr,
            &files.pki,
            &["teller-02", "teller-03"],
            &["sup-02", "sup-04"],
            &format!("F{round}"),
            &acked,
            &stop,
        );
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        if round == rounds {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for l in load {
                let _ = l.await;
            }
            break;
        }
        nodes[leader].kill();
        let killed = Instant::now();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for l in load {
            let _ = l.await;
        }
        let (next, answered) = first_submit(
            &nodes,
            &files.pki,
            &format!("TAKEOVER-{round}"),
            &acked,
            Duration::from_secs(30),
        )
        .await;
        assert_ne!(next, leader, "a killed node cannot answer");
        takeovers.push(answered.duration_since(killed).as_secs_f64());
        // Everything acknowledged so far is on the new leader, before anyone attends it.
        check(
            nodes[next].addr().unwrap(),
            &files.pki,
            &acked,
            &files.data,
            files.database.as_ref().map(|d| d.url()),
        )
        .await;
        // The killed node comes back, as a standby.
        nodes[leader].start();
        leader = next;
    }
    for n in &mut nodes {
        n.kill();
    }
    let report =
        crate::harness::verify_stored(&files.data, files.database.as_ref().map(|d| d.url()), None);
    assert_eq!(
        report.problem, None,
        "the ledger verifies across every term"
    );
    let (submits, decisions) = {
        let a = acked.lock().unwrap();
        (a.len(), a.values().filter(|v| v.3.is_some()).count())
    };
    assert!(decisions > 0, "no decision was acknowledged");
    let mut sorted = takeovers.clone();
    sorted.sort_by(f64::total_cmp);
    if !sorted.is_empty() {
        eprintln!(
            "failover: {rounds} SIGKILLs of the leader, {submits} acknowledged submits and \
             {decisions} decisions all present; takeover (SIGKILL to first Submit answered) \
             p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            sorted[sorted.len() - 1]
        );
    }
}

/// Runs the binary's `tool` (with `args` after it) against three nodes, `--target` all of
/// them and `--pki`, and SIGKILLs the leader `after` its start. Returns what it printed, once
/// it exited 0; checks that the new leader wrote some of its records (so the tool was still
/// running when the leader went) and that the ledger verifies across both terms.
async fn through_a_sigkill(tool: &str, args: &[&str], after: Duration) -> String {
    let _alone = crate::harness::CLUSTER_OF_PROCESSES.lock().await;
    let files = BinaryFiles::new();
    let mut nodes = nodes(&files, 3);
    for n in &mut nodes {
        n.start();
    }
    let acked: Acked = Default::default();
    let (leader, _) =
        first_submit(&nodes, &files.pki, "FIRST", &acked, Duration::from_secs(30)).await;
    let targets: Vec<String> = nodes
        .iter()
        .map(|n| n.addr().unwrap().to_string())
        .collect();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg(tool)
        .args(args)
        .args(["--target", &targets.join(","), "--pki"])
        .arg(&files.pki)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run countersign");
    tokio::time::sleep(after).await;
    let term_before = max_term(&files);
    nodes[leader].kill();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{tool} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let decided_after = snapshot_records(&files).into_iter().any(|r| {
        r.term > term_before && String::from_utf8_lossy(&r.record).contains("\"decided\"")
    });
    assert!(
        decided_after,
        "the new leader decided none of {tool}'s requests: {stdout}"
    );
    for n in &mut nodes {
        n.kill();
    }
    let report =
        crate::harness::verify_stored(&files.data, files.database.as_ref().map(|d| d.url()), None);
    assert_eq!(report.problem, None);
    stdout
}

/// `countersign bench --target` on three nodes, the leader SIGKILLed mid-run: every client
/// finds the new leader by itself (Submit retried with its serial, Watch resumed after the
/// version it saw, consoles attending again and deciding the reviews handed back), and every
/// lifecycle the bench started ends approved.
async fn bench_follows_the_leader_through_a_sigkill() {
    let args = [
        "--tellers",
        "2",
        "--supervisors",
        "3",
        "--in-flight",
        "2",
        "--workload",
        "w1",
        "--backend",
        "postgres",
        "--duration",
        "5",
        "--json",
    ];
    let stdout = through_a_sigkill("bench", &args, Duration::from_millis(2000)).await;
    let last = stdout.lines().last().expect("bench printed nothing");
    let j: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(j["errors"], 0, "{stdout}");
    assert_eq!(j["unfinished"], false, "{stdout}");
    assert!(j["lifecycles"].as_u64().unwrap() > 0, "{stdout}");
}

/// `countersign demo --target` on three nodes, the leader SIGKILLed mid-run: its tellers and
/// consoles (returns, resubmissions, cancellations, dual control) follow the new leader, and
/// the demo exits 0 only when every request it submitted reached a final state.
async fn demo_follows_the_leader_through_a_sigkill() {
    // Enough requests that the demo is still running when the leader goes: 150 took only
    // 1.5 s on this machine, and then the kill at 1.5 s found nothing left to follow.
    through_a_sigkill("demo", &["--requests", "600"], Duration::from_millis(1500)).await;
}

fn snapshot_records(
    files: &BinaryFiles,
) -> Vec<countersign::storage::postgres::snapshot::StoredRecord> {
    let url = files.database.as_ref().expect("on postgres").url();
    countersign::storage::postgres::snapshot::Snapshot::open(url, None)
        .unwrap()
        .records(0, usize::MAX >> 1)
        .unwrap()
}

/// The highest term that wrote a record so far.
fn max_term(files: &BinaryFiles) -> u64 {
    snapshot_records(files)
        .iter()
        .map(|r| r.term)
        .max()
        .unwrap_or(0)
}

/// The lease's term as the database has it now.
async fn lease_term(files: &BinaryFiles) -> i64 {
    let url = files.database.as_ref().expect("on postgres").url();
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one("SELECT term FROM countersign_lease WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0)
}

fn signal(node: &Node, sig: &str) {
    let pid = node.run.as_ref().unwrap().0.id();
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// The leader is paused (SIGSTOP) past its lease with a Submit waiting on it; the standby takes
/// over; the old leader resumes (SIGCONT). Its Submit is refused, never acknowledged, nothing
/// of it is in the ledger, and it steps down: a standby naming the new leader. When that one
/// dies, the old leader takes over again and keeps the lease.
async fn a_leader_paused_past_its_lease_cannot_write_and_steps_down() {
    let _alone = crate::harness::CLUSTER_OF_PROCESSES.lock().await;
    let files = BinaryFiles::new();
    let mut nodes = nodes(&files, 2);
    nodes[0].start();
    let acked: Acked = Default::default();
    let (first, _) = first_submit(
        &nodes,
        &files.pki,
        "BEFORE",
        &acked,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(first, 0);
    nodes[1].start();
    let old = nodes[0].addr().unwrap();
    let mut stale_client = countersign::tools::client::teller(old, &files.pki, "teller-02")
        .await
        .unwrap();
    signal(&nodes[0], "-STOP");
    let stale = tokio::spawn(async move {
        let mut req = submit_request("STALE", "WDL-CASH", 999, "6222020200110001");
        req.images.truncate(1);
        stale_client.submit(req).await
    });
    let (next, _) = first_submit(
        &nodes[1..],
        &files.pki,
        "AFTER",
        &acked,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(next, 0, "the standby took over");
    signal(&nodes[0], "-CONT");
    let answer = tokio::time::timeout(Duration::from_secs(20), stale)
        .await
        .expect("the paused node answers once resumed")
        .unwrap();
    let refused = answer.expect_err("a Submit on a leader that lost its lease is refused");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // It steps down: a standby that names the new leader.
    let new = nodes[1].addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = countersign::tools::client::teller(old, &files.pki, "teller-02")
            .await
            .unwrap();
        let mut req = submit_request("STALE", "WDL-CASH", 999, "6222020200110001");
        req.images.truncate(1);
        let s = c
            .submit(req)
            .await
            .expect_err("the old leader takes nothing");
        let info = tonic_types::StatusExt::get_details_error_info(&s);
        if info
            .as_ref()
            .is_some_and(|i| i.metadata.get("leader") == Some(&new.to_string()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old leader never stepped down: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Having lost its lease once, the old leader leads again when the new one dies, and keeps
    // the lease: its term stays where it took it over several renewals.
    nodes[1].kill();
    let (again, _) = first_submit(
        &nodes[..1],
        &files.pki,
        "AGAIN",
        &acked,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(again, 0);
    let term = lease_term(&files).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lease_term(&files).await,
        term,
        "the node that leads again keeps its lease"
    );
    let (still, _) = first_submit(
        &nodes[..1],
        &files.pki,
        "STILL",
        &acked,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(still, 0);
    for n in &mut nodes {
        n.kill();
    }
    let records =
        crate::harness::stored_records(&files.data, files.database.as_ref().map(|d| d.url()));
    assert!(
        records
            .iter()
            .all(|r| !String::from_utf8_lossy(r).contains("\"STALE\"")),
        "nothing the paused leader took is in the ledger"
    );
    let report =
        crate::harness::verify_stored(&files.data, files.database.as_ref().map(|d| d.url()), None);
    assert_eq!(report.problem, None);
}

crate::postgres_only!(
    repeated_sigkill_of_the_leader_loses_nothing_acknowledged { flavor = "multi_thread", worker_threads = 2 },
    a_leader_paused_past_its_lease_cannot_write_and_steps_down { flavor = "multi_thread", worker_threads = 2 },
    bench_follows_the_leader_through_a_sigkill { flavor = "multi_thread", worker_threads = 2 },
    demo_follows_the_leader_through_a_sigkill { flavor = "multi_thread", worker_threads = 2 },
);
