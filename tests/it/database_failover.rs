//! Losing the database primary: the test runs a PostgreSQL primary and a streaming standby of
//! its own (initdb and pg_basebackup in a temporary directory, loopback ports, run as the
//! postgres user), with `synchronous_standby_names` naming the standby, and one node whose URL
//! lists both with `target_session_attrs=read-write`. Under load it SIGKILLs the primary and
//! promotes the standby; the node carries on through the multi-host URL, and every call that
//! was acknowledged, before the kill or after, is found.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crash::{Acked, check, load};
use crate::durability::{BinaryFiles, spawn_server};

/// Where Debian keeps the server's programs.
pub(crate) fn pg_bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL's programs");
    let mut dirs: Vec<PathBuf> = versions.map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs.last().unwrap().join("bin").join(name)
}

/// Runs a PostgreSQL program as the postgres user.
pub(crate) fn as_postgres(program: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin(program))
        .args(args)
        .output()
        .expect("run as postgres");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free loopback port (bound and let go: the server binds it a moment later).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    dir: tempfile::TempDir,
    primary: u16,
    standby: u16,
}

impl Cluster {
    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self, name: &str) {
        let log = self.data(&format!("{name}.log"));
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data(name).to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    fn postmaster_pid(&self, name: &str) -> String {
        let pid = std::fs::read_to_string(self.data(name).join("postmaster.pid")).unwrap();
        pid.lines().next().unwrap().to_string()
    }

    /// A primary and a synchronous streaming standby.
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let c = Cluster {
            dir,
            primary: free_port(),
            standby: free_port(),
        };
        let primary = c.data("primary");
        as_postgres(
            "initdb",
            &[
                "-D",
                primary.to_str().unwrap(),
                "--auth=trust",
                "-U",
                "postgres",
            ],
        );
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 4\nsynchronous_commit = on\n\
             synchronous_standby_names = 'standby1'\nfsync = on\n",
            c.primary,
            c.dir.path().display()
        );
        append(&primary.join("postgresql.conf"), &conf);
        append(
            &primary.join("pg_hba.conf"),
            "host replication postgres 127.0.0.1/32 trust\n",
        );
        c.start("primary");
        let standby = c.data("standby");
        as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &c.primary.to_string(),
                "-U",
                "postgres",
                "-D",
                standby.to_str().unwrap(),
                "-X",
                "stream",
                "-R",
            ],
        );
        // After pg_basebackup -R's own primary_conninfo in postgresql.auto.conf, which would
        // otherwise win: the standby must connect under the name synchronous_standby_names has.
        // Once promoted it has no standby of its own to wait for (a failover manager sets this
        // as it promotes; until a new standby joins, commits are local).
        append(
            &standby.join("postgresql.auto.conf"),
            &format!(
                "port = {}\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby1'\n\
                 synchronous_standby_names = ''\n",
                c.standby, c.primary
            ),
        );
        c.start("standby");
        c
    }

    fn url(&self) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
            self.primary, self.standby
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for name in ["primary", "standby"] {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_bin("pg_ctl"))
                .args([
                    "-D",
                    self.data(name).to_str().unwrap(),
                    "-m",
                    "immediate",
                    "stop",
                ])
                .output();
        }
    }
}

pub(crate) fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn losing_the_database_primary_loses_nothing_acknowledged() {
    let _alone = crate::harness::CLUSTER_OF_PROCESSES.lock().await;
    let cluster = Cluster::new();
    let files = BinaryFiles::new();
    let text = std::fs::read_to_string(&files.config).unwrap();
    let url_line = text
        .lines()
        .find(|l| l.starts_with("url = "))
        .expect("a postgres config")
        .to_string();
    std::fs::write(
        &files.config,
        text.replace(&url_line, &format!("url = \"{}\"", cluster.url())),
    )
    .unwrap();
    let (mut child, addr) = spawn_server(&files.config);
    let acked: Acked = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |round: usize, stop: &Arc<std::sync::atomic::AtomicBool>| {
        load(
            addr,
            &files.pki,
            &["teller-01", "teller-02"],
            &["sup-02"],
            &format!("D{round}"),
            &acked,
            stop,
        )
    };
    let before = load(0, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The primary dies mid-load; the failover manager's part is played by pg_ctl promote.
    let killed = Command::new("kill")
        .args(["-KILL", &cluster.postmaster_pid("primary")])
        .status()
        .unwrap();
    assert!(killed.success());
    as_postgres(
        "pg_ctl",
        &[
            "-D",
            cluster.data("standby").to_str().unwrap(),
            "-w",
            "promote",
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in before {
        let _ = t.await;
    }
    let (submits_before, decisions_before) = {
        let a = acked.lock().unwrap();
        (a.len(), a.values().filter(|v| v.3.is_some()).count())
    };
    assert!(
        submits_before > 0 && decisions_before > 0,
        "too little load before the kill"
    );
    // The node writes again through the promoted standby, without a restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let n = acked.lock().unwrap().len();
        let again = load(1, &stop);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in again {
            let _ = t.await;
        }
        if acked.lock().unwrap().len() > n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never wrote again after the promotion; its log:\n{}",
            std::fs::read_to_string(files.config.with_extension("log")).unwrap_or_default()
        );
    }
    // Everything acknowledged, before the kill and after, is in the promoted database.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, addr) = spawn_server(&files.config);
    let promoted = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres",
        cluster.standby
    );
    check(addr, &files.pki, &acked, &files.data, Some(&promoted)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let report = countersign::verify::verify_database(&promoted, None, None);
    assert_eq!(report.problem, None);
    eprintln!(
        "database failover: {submits_before} submits and {decisions_before} decisions \
         acknowledged before the primary was killed, {} submits in all, every one found",
        acked.lock().unwrap().len()
    );
}

crate::postgres_only!(
    losing_the_database_primary_loses_nothing_acknowledged { flavor = "multi_thread", worker_threads = 2 },
);
