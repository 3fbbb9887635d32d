//! The three kinds of run: timed lifecycles (closed or open loop), the transport floor (bare
//! health checks) and `--fill` (a queue of unattended requests), each driving the server over
//! its connections and printing what it measured.

// A tool, not the engine: a load generator measures real elapsed time (Instant), and its bookkeeping locks are never
// poisoned unless a task already panicked, which ends the run anyway.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::Mutex;

use super::Options;
use super::lifecycle::{ACCOUNT, Counters, Images, Lifecycle, OfferClock, Sample, supervise};
use super::report::{Percentiles, Report};
use super::server::{Server, Usage};
use crate::tools::client;
use crate::tools::workload::submit_request_with;

/// Under the sample policy: CNY 60,000.00 cash needs one level-2 approval, CNY 600,000.00
/// two level-3 approvals.
const SINGLE_AMOUNT: i64 = 6_000_000;
const DUAL_AMOUNT: i64 = 60_000_000;
/// How long `--fill` waits after the last submission before reading the server's memory.
const SETTLE: Duration = Duration::from_secs(10);
/// How long in-flight lifecycles may take to finish after the measured window.
const DRAIN: Duration = Duration::from_secs(30);

pub(super) async fn timed(server: &Server, opts: &Options) -> anyhow::Result<()> {
    let images = Arc::new(Images::new(opts.workload));
    let offer_clock = Arc::new(OfferClock::new());
    let mut consoles = Vec::new();
    // Each principal follows the cluster's leader (a server of its own, without --target).
    let cluster = |id: &str| {
        client::Cluster::new(
            &server.targets,
            &server.pki,
            id,
            Duration::from_secs_f64(opts.leader_wait),
        )
    };
    // The consoles type what the voucher says where the policy asks for re-keying (the
    // sample policy does from CNY 500,000): every request of a run has the same amount.
    let voucher = if opts.dual {
        DUAL_AMOUNT
    } else {
        SINGLE_AMOUNT
    };
    for id in &server.supervisors[..opts.supervisors] {
        let c = cluster(id);
        c.channel().await?;
        consoles.push(tokio::spawn(supervise(c, offer_clock.clone(), voucher)));
    }
    let mut terminals = Vec::new();
    for id in &server.tellers[..opts.tellers] {
        let c = cluster(id);
        c.channel().await?;
        terminals.push(c);
    }
    // Let every Attend stream register before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let counters = Arc::new(Counters::default());
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let run_id = format!("{:08x}", rand::random::<u32>());
    let disk_before = server.disk_bytes();
    let usage_before = server.usage();
    let own_before = Usage::of("/proc/self");
    let database_before = server.database_cpu();
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
                    let c = terminal.clone();
                    let lc = lifecycle.clone();
                    let prefix = format!("B{run_id}T{t}W{w}N");
                    tasks.spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < window_end {
                            lc.run(&c, format!("{prefix}{n}")).await;
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
                let c = terminals[n as usize % terminals.len()].clone();
                let lc = lifecycle.clone();
                let serial = format!("B{run_id}N{n}");
                tasks.spawn(async move { lc.run(&c, serial).await });
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
    let database_after = server.database_cpu();
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
        backend: opts.target.is_empty().then_some(opts.backend),
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
        database: database_before
            .zip(database_after)
            .map(|(b, a)| ((a - b) * 100.0).round() / 100.0),
        disk: disk_before.zip(disk_after).map(|(b, a)| a.since(&b)),
    };
    report.print(opts.json);
    if lifecycles == 0 {
        bail!("no lifecycle finished");
    }
    Ok(())
}

/// Bare RPCs: every teller connection runs `in_flight` loops of health checks.
pub(super) async fn floor(server: &Server, opts: &Options) -> anyhow::Result<()> {
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
pub(super) async fn fill(server: &Server, opts: &Options, n: usize) -> anyhow::Result<()> {
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
                    let req = submit_request_with(
                        &serial,
                        "WDL-CASH",
                        amount,
                        ACCOUNT,
                        images.for_request(&serial),
                    );
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
