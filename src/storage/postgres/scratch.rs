//! Scratch databases for tests and benchmarks: each gets a database of its own on a real
//! PostgreSQL server, created empty and dropped afterwards. The server is the one
//! `COUNTERSIGN_TEST_PG` names (a libpq URL of a role that may create databases), by default
//! the local one on 127.0.0.1:5432 as user postgres.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server scratch databases are made on.
pub fn admin_url() -> String {
    std::env::var("COUNTERSIGN_TEST_PG")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

/// A database made for one test or run, dropped (with any connections left) when this is.
pub struct ScratchDatabase {
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates an empty database with a name no other test uses.
    pub fn create() -> anyhow::Result<ScratchDatabase> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "countersign_scratch_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        admin(format!("CREATE DATABASE {name}"))?;
        let url = url_of(&admin_url(), &name);
        Ok(ScratchDatabase { name, url })
    }

    /// A libpq URL of the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new database copied from this one. Connections still open to this one (a stopped
    /// server's, closing) are ended first: PostgreSQL copies only a database nobody uses.
    pub fn copy(&self) -> anyhow::Result<ScratchDatabase> {
        let copy = ScratchDatabase::create()?;
        admin(format!("DROP DATABASE {}", copy.name))?;
        // A stopped server's last connection may still be closing (or a listener reconnecting
        // until its runtime ends): end them and try again, a few times.
        let mut tries = 0;
        loop {
            admin(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ))?;
            match admin(format!(
                "CREATE DATABASE {} TEMPLATE {}",
                copy.name, self.name
            )) {
                Ok(()) => return Ok(copy),
                Err(e) if tries < 20 && format!("{e:#}").contains("being accessed") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs SQL statements in this database as the admin role (a test's tampering, say).
    pub fn execute(&self, sql: &str) -> anyhow::Result<()> {
        execute_at(&self.url, sql)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if let Err(e) = admin(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            eprintln!("could not drop scratch database {}: {e:#}", self.name);
        }
    }
}

/// A URL with another database name: hosts, user and options kept as given.
fn url_of(base: &str, name: &str) -> String {
    let (path, query) = match base.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (base, String::new()),
    };
    let authority_start = path.find("://").map_or(0, |i| i + 3);
    let hosts = match path[authority_start..].find('/') {
        Some(i) => &path[..authority_start + i],
        None => path,
    };
    format!("{hosts}/{name}{query}")
}

/// Runs one statement as the admin role in the admin database.
fn admin(sql: String) -> anyhow::Result<()> {
    execute_at(&admin_url(), &sql)
}

/// Runs SQL at `url` on a thread of its own, so that it may be called from anywhere (inside
/// a runtime or not).
pub fn execute_at(url: &str, sql: &str) -> anyhow::Result<()> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| {
                anyhow::anyhow!(
                    "connect to PostgreSQL at {url} (start it, or set COUNTERSIGN_TEST_PG): {e}"
                )
            })?;
            let conn = tokio::spawn(connection);
            client.batch_execute(&sql).await?;
            drop(client);
            let _ = conn.await;
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the admin thread panicked"))?
}
