//! What a Prometheus user expects of any process, read at each scrape: CPU time, memory, open
//! files (the standard `process_*` series, from /proc), free bytes of the filesystem holding
//! the data directory, and seconds until each certificate the server knows of expires.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// A certificate whose expiry is watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertExpiry {
    /// What it is: "server", "client_ca" or "principal".
    pub kind: &'static str,
    /// Which one: the principal's id, or the certificate's subject for the others.
    pub name: String,
    /// Its notAfter, in Unix seconds.
    pub not_after: i64,
}

/// Where the host series come from.
#[derive(Clone)]
pub struct Host {
    /// The embedded backend's data directory; `None` on PostgreSQL (the database's disk is
    /// the database's to watch).
    pub data_dir: Option<PathBuf>,
    /// The certificates known now.
    pub certificates: Arc<dyn Fn() -> Vec<CertExpiry> + Send + Sync>,
    /// The time now, in Unix seconds (the engine's clock).
    pub now: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// The collector registered for `Host`.
#[derive(Debug)]
pub(super) struct HostCollector(pub(super) Host);

/// What /proc says of this process.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    open_fds: i64,
    max_fds: i64,
    start_time_seconds: f64,
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(p) = read_process() {
            counter(
                &mut encoder,
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                p.cpu_seconds,
            )?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size",
                p.resident_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size",
                p.virtual_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                p.open_fds,
            )?;
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds,
            )?;
            let start = ConstGauge::new(p.start_time_seconds);
            let m = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch",
                None,
                start.metric_type(),
            )?;
            start.encode(m)?;
        }
        if let Some(dir) = &self.0.data_dir
            && let Ok(fs) = rustix::fs::statvfs(dir.as_path())
        {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            gauge(
                &mut encoder,
                "countersign_data_dir_free_bytes",
                "Bytes free for the server on the filesystem holding the data directory",
                i64::try_from(free).unwrap_or(i64::MAX),
            )?;
        }
        let certs = (self.0.certificates)();
        if !certs.is_empty() {
            let now = (self.0.now)();
            let mut m = encoder.encode_descriptor(
                "countersign_certificate_expiry_seconds",
                "Seconds until each certificate the server knows of expires (negative: expired)",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            for c in &certs {
                let labels = [("certificate", c.kind), ("name", c.name.as_str())];
                let family = m.encode_family(&labels)?;
                ConstGauge::new(c.not_after - now).encode(family)?;
            }
        }
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let m = encoder.encode_descriptor(name, help, unit, c.metric_type())?;
    c.encode(m)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// Reads /proc/self (Linux); `None` elsewhere or when it cannot be read.
fn read_process() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    parse_process(
        &stat,
        &statm,
        &limits,
        &boot,
        open_fds,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as i64,
    )
}

/// The fields of /proc/self/stat after the command name (which may hold spaces), from the
/// state on: utime is the 12th of these (field 14 of the file), stime the 13th, starttime the
/// 20th and vsize the 21st.
fn parse_process(
    stat: &str,
    statm: &str,
    limits: &str,
    proc_stat: &str,
    open_fds: i64,
    ticks: u64,
    page: i64,
) -> Option<ProcessStats> {
    let after_name = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let ticks = ticks.max(1) as f64;
    let (utime, stime, start, vsize) = (num(11)?, num(12)?, num(19)?, num(20)?);
    let resident_pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let btime: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        resident_bytes: resident_pages * page,
        virtual_bytes: i64::try_from(vsize).unwrap_or(i64::MAX),
        open_fds,
        max_fds,
        start_time_seconds: btime + start as f64 / ticks,
    })
}

/// A certificate's subject and notAfter (Unix seconds), from its DER bytes.
pub fn certificate_expiry(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut subject = String::new();
    let _ = write!(subject, "{}", cert.subject());
    Some((subject, cert.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse_into_the_standard_series() {
        let stat = "4242 (count ersign) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 \
                    12 0 100000 987654321 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                    1 0 0 0 0 0";
        let statm = "241127 3000 1200 300 0 60000 0";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let p = parse_process(
            stat,
            statm,
            limits,
            "cpu 1 2\nbtime 1700000000\n",
            12,
            100,
            4096,
        )
        .expect("parses");
        assert_eq!(
            p,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 3000 * 4096,
                virtual_bytes: 987654321,
                open_fds: 12,
                max_fds: 1024,
                start_time_seconds: 1_700_001_000.0,
            }
        );
        // This process's own files parse too.
        assert!(read_process().is_some_and(|p| p.open_fds > 0 && p.resident_bytes > 0));
    }
}
