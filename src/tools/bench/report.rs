//! The figures of a timed run: latency percentiles, and the report printed as Markdown tables
//! and, with `--json`, as one JSON line.

use std::time::Duration;

use super::Workload;
use super::server::DiskBytes;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Percentiles {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles in milliseconds.
    pub(super) fn of(mut v: Vec<Duration>) -> Percentiles {
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

pub(super) struct Report {
    /// The storage backend of the server bench started; `None` with --target (bench cannot
    /// tell what the target runs on).
    pub(super) backend: Option<super::Backend>,
    pub(super) workload: Workload,
    pub(super) dual: bool,
    pub(super) tellers: usize,
    pub(super) supervisors: usize,
    pub(super) rate: Option<f64>,
    pub(super) duration_s: f64,
    pub(super) elapsed_s: f64,
    pub(super) lifecycles: u64,
    pub(super) errors: u64,
    pub(super) refused: u64,
    pub(super) unfinished: bool,
    pub(super) lifecycles_per_s: f64,
    pub(super) submit: Percentiles,
    pub(super) notify: Percentiles,
    pub(super) offer: Percentiles,
    pub(super) server: Option<f64>,
    pub(super) server_rss_peak_mib: Option<f64>,
    pub(super) clients: Option<f64>,
    /// The local PostgreSQL's CPU seconds over the run (`--backend postgres`).
    pub(super) database: Option<f64>,
    pub(super) disk: Option<DiskBytes>,
}

impl Report {
    pub(super) fn print(&self, json: bool) {
        let per = |bytes: u64| (self.lifecycles > 0).then(|| bytes as f64 / self.lifecycles as f64);
        let disk_per = self.disk.and_then(|d| per(d.total()));
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let workload = match self.workload {
            Workload::W0 => "w0 (no images)",
            Workload::W1 => "w1 (2 x 64 KiB images)",
        };
        println!(
            "\nworkload {workload}{} on {}, {} tellers, {} supervisors, {}, {:.0} s measured ({:.1} s with drain)",
            if self.dual { ", dual control" } else { "" },
            match self.backend {
                Some(super::Backend::Embedded) => "embedded storage",
                Some(super::Backend::Postgres) => "PostgreSQL on this machine",
                None => "the target server",
            },
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
            "\n| server CPU | clients' CPU | PostgreSQL's CPU | server RSS peak | disk per lifecycle (ledger / images / sled) |"
        );
        println!("|---|---|---|---|---|");
        println!(
            "| {} s | {} s | {} s | {} MiB | {} B ({} / {} / {}) |",
            opt(self.server, 2),
            opt(self.clients, 2),
            opt(self.database, 2),
            opt(self.server_rss_peak_mib, 1),
            opt(disk_per, 0),
            opt(self.disk.and_then(|d| per(d.ledger)), 0),
            opt(self.disk.and_then(|d| per(d.images)), 0),
            opt(self.disk.and_then(|d| per(d.other)), 0),
        );
        if json {
            let j = serde_json::json!({
                "workload": format!("{:?}", self.workload).to_lowercase(),
                "backend": self.backend.map(|b| format!("{b:?}").to_lowercase()),
                "dual": self.dual,
                "tellers": self.tellers,
                "supervisors": self.supervisors,
                "lifecycles": self.lifecycles,
                "errors": self.errors,
                "refused": self.refused,
                "unfinished": self.unfinished,
                "lifecycles_per_s": self.lifecycles_per_s,
                "submit_p50_ms": self.submit.p50,
                "submit_p99_ms": self.submit.p99,
                "notify_p50_ms": self.notify.p50,
                "notify_p99_ms": self.notify.p99,
                "notify_p999_ms": self.notify.p999,
                "offer_p99_ms": self.offer.p99,
                "server_cpu_s": self.server,
                "clients_cpu_s": self.clients,
                "database_cpu_s": self.database,
                "server_rss_peak_mib": self.server_rss_peak_mib,
                "disk_bytes_per_lifecycle": disk_per,
            });
            println!("{j}");
        }
    }
}
