//! TLS to the database: a PostgreSQL of the test's own (initdb in a temporary directory, a
//! loopback port, run as the postgres user) that takes TLS connections only (`hostnossl …
//! reject`), with a certificate the test PKI's CA signed. A node with `storage.tls_ca` and
//! `sslmode=require` serves a lifecycle on it; a node that trusts another CA is refused, and so
//! is one that does not use TLS.

use std::process::Command;

use countersign::api::pb;

use crate::database_failover::{append, as_postgres, free_port, pg_bin};
use crate::harness::*;

/// A PostgreSQL server that accepts TLS only, stopped when dropped.
struct TlsOnlyServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsOnlyServer {
    /// Its certificate and key are the PKI's server pair (SAN 127.0.0.1).
    fn start(pki: &std::path::Path) -> TlsOnlyServer {
        let dir = tempfile::tempdir().unwrap();
        let chown = |path: &std::path::Path| {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success());
        };
        chown(dir.path());
        let data = dir.path().join("data");
        let port = free_port();
        as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "--auth=trust",
                "-U",
                "postgres",
            ],
        );
        for (from, to) in [("server.pem", "server.crt"), ("server.key", "server.key")] {
            std::fs::copy(pki.join(from), data.join(to)).unwrap();
        }
        chown(&data);
        let status = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status()
            .unwrap();
        assert!(status.success());
        append(
            &data.join("postgresql.conf"),
            &format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                dir.path().display()
            ),
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostnossl all all 127.0.0.1/32 reject\n\
             hostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let log = dir.path().join("server.log");
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        TlsOnlyServer { dir, port }
    }
}

impl Drop for TlsOnlyServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A node's configuration on `url`, trusting the CA certificates in `tls_ca` (a path relative
/// to the PKI directory) when given.
fn config(url: &str, tls_ca: Option<&str>) -> String {
    let text = countersign::config::on_postgres(
        &test_config_text(None, &|s| s),
        url,
        "node-1",
        "node-1.test:7443",
        4,
    );
    match tls_ca {
        Some(ca) => text.replace(
            "pool_size = 4\n",
            &format!("pool_size = 4\ntls_ca = \"{ca}\"\n"),
        ),
        None => text,
    }
}

async fn a_node_reaches_the_database_over_tls_only_with_the_right_ca() {
    let _alone = CLUSTER_OF_PROCESSES.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    countersign::tools::pki::init(&pki).unwrap();
    std::fs::write(pki.join("policy.toml"), TEST_POLICY).unwrap();
    let db = TlsOnlyServer::start(&pki);
    let url = |mode: &str| {
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode={mode}",
            db.port
        )
    };
    // Without TLS the database refuses the node.
    let plain = TestServer::boot_text(
        tempfile::tempdir().unwrap(),
        pki.clone(),
        &config(&url("disable"), None),
    )
    .await;
    let plain = plain.err().expect("a node without TLS was let in");
    assert!(
        format!("{plain:#}").contains("pg_hba.conf rejects"),
        "{plain:#}"
    );
    // With TLS but trusting another CA, the node refuses the database.
    let other = dir.path().join("other");
    countersign::tools::pki::init(&other).unwrap();
    std::fs::copy(other.join("ca.pem"), pki.join("other-ca.pem")).unwrap();
    let wrong = TestServer::boot_text(
        tempfile::tempdir().unwrap(),
        pki.clone(),
        &config(&url("require"), Some("other-ca.pem")),
    )
    .await;
    let refused = wrong
        .err()
        .expect("a database signed by an untrusted CA was trusted");
    assert!(
        format!("{refused:#}")
            .to_lowercase()
            .contains("certificate"),
        "{refused:#}"
    );
    // With the CA that signed the database's certificate, a whole lifecycle.
    let t = TestServer::boot_text(
        tempfile::tempdir().unwrap(),
        pki.clone(),
        &config(&url("require"), Some("ca.pem")),
    )
    .await
    .expect("a node over TLS");
    let r = submit(&t, "teller-01", "TLS-1").await;
    let mut sup = Console::open(&t, "sup-01").await;
    let o = sup.next_offer().await;
    assert_eq!(o.request_id, r.request_id);
    let decided = sup.approve(&o).await;
    assert_eq!(state(&decided), pb::RequestState::Approved);
}

crate::postgres_only!(a_node_reaches_the_database_over_tls_only_with_the_right_ca,);
