//! `countersign bench` as a user runs it: the real binary starts the real server as its child,
//! drives it over gRPC with mutual TLS, and prints figures. A smoke test: it checks that the
//! load generator works end to end and reports every figure, never how fast anything is.

use std::process::Command;

const KEYS: &[&str] = &[
    "lifecycles_per_s",
    "submit_p50_ms",
    "submit_p99_ms",
    "notify_p50_ms",
    "notify_p99_ms",
    "notify_p999_ms",
    "offer_p99_ms",
    "server_cpu_s",
    "server_rss_peak_mib",
    "disk_bytes_per_lifecycle",
];

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args([
            "bench",
            "--duration",
            "2",
            "--tellers",
            "2",
            "--in-flight",
            "2",
        ])
        .args(["--supervisors", "4", "--json"])
        .args(args)
        .output()
        .expect("run countersign bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("bench printed nothing");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

async fn bench_runs_both_workloads_and_reports_every_figure() {
    for args in [
        &["--workload", "w0"][..],
        &["--workload", "w1", "--dual"][..],
    ] {
        let j = tokio::task::spawn_blocking(move || bench(args))
            .await
            .unwrap();
        for key in KEYS {
            let v = j[key].as_f64();
            assert!(
                v.is_some_and(|v| v.is_finite() && v > 0.0),
                "{args:?}: {key} is {:?} in {j}",
                j[key]
            );
        }
        assert!(j["lifecycles"].as_u64().unwrap() > 0, "{j}");
        assert_eq!(j["errors"].as_u64(), Some(0), "{j}");
        // Percentiles are ordered, and a request is never seen approved before it was offered.
        let ms = |k: &str| j[k].as_f64().unwrap();
        assert!(ms("submit_p50_ms") <= ms("submit_p99_ms"), "{j}");
        assert!(ms("notify_p50_ms") <= ms("notify_p99_ms"), "{j}");
        assert!(ms("notify_p99_ms") <= ms("notify_p999_ms"), "{j}");
        // W1 stores two 64 KiB images per request.
        if args.contains(&"w1") {
            assert!(ms("disk_bytes_per_lifecycle") > 2.0 * 65536.0, "{j}");
        }
    }
}

/// `bench --target` against a server `pki init` made, with nothing but the address and the
/// PKI: it takes every teller and supervisor there and a workload the sample config accepts.
async fn bench_drives_a_running_server_with_its_defaults() {
    let t = crate::harness::TestServer::start().await;
    let addr = t.addr().to_string();
    let pki = t.pki.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args([
                "bench",
                "--target",
                &addr,
                "--pki",
                &pki,
                "--duration",
                "1",
                "--json",
            ])
            .output()
            .expect("run countersign bench")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(j["lifecycles"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["errors"].as_u64(), Some(0), "{j}");
    assert_eq!(j["workload"], "w1", "{j}");
    assert_eq!(j["backend"], serde_json::Value::Null, "{j}");
    // pki init's demo principals: 3 tellers, 5 supervisors (of whom the bench uses all).
    assert_eq!(
        (j["tellers"].as_u64(), j["supervisors"].as_u64()),
        (Some(3), Some(5)),
        "{j}"
    );
    assert!(stdout.contains("on the target server"), "{stdout}");
}

crate::on_both_backends!(
    bench_runs_both_workloads_and_reports_every_figure { flavor = "multi_thread" },
    bench_drives_a_running_server_with_its_defaults { flavor = "multi_thread" },
);
