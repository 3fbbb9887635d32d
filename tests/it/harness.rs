//! Starting servers and clients for tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use countersign::api::pb::supervisor_service_client::SupervisorServiceClient;
use countersign::api::pb::teller_service_client::TellerServiceClient;
use countersign::api::pb::{self, audit_service_client::AuditServiceClient};
use countersign::config::Config;
use countersign::engine::{Clock, ManualClock, SystemClock};
use countersign::server::Server;
use countersign::storage::postgres::scratch::ScratchDatabase;
use countersign::tools::client;
use rand::SeedableRng;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::fixtures::submit_request;

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
    pub clock: ManualClock,
    pub config: Config,
    pub server: Option<Server>,
    seed: u64,
    /// The test's own database when it runs on PostgreSQL (shared by the nodes of a cluster
    /// test); dropped after the servers.
    pub database: Option<Arc<ScratchDatabase>>,
}

/// Held by the tests that run a cluster of real server processes under load (failover,
/// database failover): one at a time, so that two of them on the machine's two cores do not
/// starve each other's leases and make the timing they test meaningless.
pub static CLUSTER_OF_PROCESSES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The storage backends every integration test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
}

tokio::task_local! {
    /// The backend of the test running in this task (set by `on_both_backends!`).
    pub static BACKEND: Backend;
}

/// The backend the current test runs on.
pub fn backend() -> Backend {
    BACKEND
        .try_with(|b| *b)
        .expect("integration tests run inside on_both_backends! (or embedded_only!)")
}

/// A database of the test's own when it runs on PostgreSQL.
pub fn scratch_database() -> Option<ScratchDatabase> {
    (backend() == Backend::Postgres)
        .then(|| ScratchDatabase::create().expect("a scratch database on the test PostgreSQL"))
}

/// The sample configuration with a port chosen by the OS and the data beside the PKI, on the
/// test's backend: in `database` when one is given.
pub fn test_config_text(
    database: Option<&ScratchDatabase>,
    edit: &dyn Fn(String) -> String,
) -> String {
    let text = countersign::config::SAMPLE
        .replace("listen = \"127.0.0.1:7443\"", "listen = \"127.0.0.1:0\"")
        .replace("data_dir = \"data\"", "data_dir = \"../data\"")
        // Tests that want a witness start one and name it (tests/it/witness.rs).
        .replace(countersign::config::SAMPLE_WITNESS, "");
    let text = match database {
        None => text,
        Some(db) => {
            countersign::config::on_postgres(&text, db.url(), "node-1", "node-1.test:7443", 8)
        }
    };
    edit(text)
}

/// The configuration of a store beside a test's PKI: in `database` when given, else in the
/// data directory `name` beside the PKI.
pub fn store_config_text(database: Option<&ScratchDatabase>, name: &str) -> String {
    test_config_text(database, &|s| {
        s.replace(
            "data_dir = \"../data\"",
            &format!("data_dir = \"../{name}\""),
        )
    })
}

/// Verifies what a test stored, offline, on its backend: the data directory, or the database.
pub fn verify_stored(
    data: &std::path::Path,
    database: Option<&str>,
    v: Option<&countersign::ledger::checkpoint::Verifier>,
) -> countersign::verify::Report {
    match database {
        None => countersign::verify::verify_data_dir(data, v),
        Some(url) => countersign::verify::verify_database(url, None, v),
    }
}

/// Every whole record a test's storage holds, in index order, read offline (the server may be
/// running: a record still being written is not read).
pub fn stored_records(data: &std::path::Path, database: Option<&str>) -> Vec<Vec<u8>> {
    use countersign::storage::embedded::frame::{Decoded, decode};
    match database {
        Some(url) => {
            let snapshot =
                countersign::storage::postgres::snapshot::Snapshot::open(url, None).unwrap();
            snapshot
                .records(0, usize::MAX >> 1)
                .unwrap()
                .into_iter()
                .map(|r| r.record)
                .collect()
        }
        None => {
            let mut names: Vec<_> = std::fs::read_dir(data.join("ledger"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect();
            names.sort();
            let mut out = Vec::new();
            for path in names {
                let bytes = std::fs::read(path).unwrap();
                let mut pos = 16;
                while let Decoded::Frame { payload, len, .. } =
                    decode(&bytes[pos..], out.len() as u64)
                {
                    out.push(payload.to_vec());
                    pos += len;
                }
            }
            out
        }
    }
}

/// Throws the audit projection away (the server stopped), as a lost disk or a dropped table
/// would: the next start must rebuild it from the ledger.
pub fn drop_projection(data: &std::path::Path, database: Option<&ScratchDatabase>) {
    match database {
        None => std::fs::remove_dir_all(data.join("projection")).unwrap(),
        Some(db) => db
            .execute(
                "DELETE FROM requests; DELETE FROM idempotency; \
                 UPDATE projection_state SET applied = 0",
            )
            .unwrap(),
    }
}

/// Declares each named `async fn` a test on every backend: `NAME::embedded` and
/// `NAME::postgres`. A name may carry the arguments of its `#[tokio::test(...)]` in braces.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident $({ $($flavor:tt)* })?),* $(,)?) => {
        $(
            mod $name {
                $crate::backend_test!(embedded, Embedded, $name $({ $($flavor)* })?);
                $crate::backend_test!(postgres, Postgres, $name $({ $($flavor)* })?);
            }
        )*
    };
}

/// Declares each named `async fn` a test on the embedded backend only, for what only that
/// backend has (its files); the reason is said where the macro is used.
#[macro_export]
macro_rules! embedded_only {
    ($($name:ident $({ $($flavor:tt)* })?),* $(,)?) => {
        $(
            mod $name {
                $crate::backend_test!(embedded, Embedded, $name $({ $($flavor)* })?);
            }
        )*
    };
}

/// Declares each named `async fn` a test on the postgres backend only, for what only the
/// database has (its tables); the reason is said where the macro is used.
#[macro_export]
macro_rules! postgres_only {
    ($($name:ident $({ $($flavor:tt)* })?),* $(,)?) => {
        $(
            mod $name {
                $crate::backend_test!(postgres, Postgres, $name $({ $($flavor)* })?);
            }
        )*
    };
}

/// The longest one integration test may take, waits for the cluster lock included: a test
/// that hangs fails with this instead of holding up the whole run (CI has 30 minutes).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs a test, failing it when it takes longer than `TEST_TIMEOUT`.
pub async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_TIMEOUT:?}: it hangs"))
}

#[macro_export]
macro_rules! backend_test {
    ($test:ident, $backend:ident, $name:ident) => {
        #[tokio::test]
        async fn $test() {
            $crate::harness::bounded($crate::harness::BACKEND
                .scope($crate::harness::Backend::$backend, super::$name()))
                .await
        }
    };
    ($test:ident, $backend:ident, $name:ident { $($flavor:tt)* }) => {
        #[tokio::test($($flavor)*)]
        async fn $test() {
            $crate::harness::bounded($crate::harness::BACKEND
                .scope($crate::harness::Backend::$backend, super::$name()))
                .await
        }
    };
}

/// The policy tests run under: level 1 and one approval for anything, unless a rule below
/// says otherwise; each rule exists for a test of that behaviour.
pub const TEST_POLICY: &str = r#"
[defaults]
level = 1
approvals = 1
independent = true
priority = 0
offer_timeout_ms = 30000
decision_deadline_ms = 86400000

[unmatched]
allow = true

[[rules]]
name = "dual"
codes = ["DUAL"]
approvals = 2

[[rules]]
name = "big"
codes = ["BIG"]
level = 2

[[rules]]
name = "urgent"
codes = ["URGENT"]
priority = 9

[[rules]]
name = "escalate-on-declines"
codes = ["ESC-DECL"]
escalate_after_declines = 2

[[rules]]
name = "escalate-at-the-top"
codes = ["ESC-TOP"]
level = 3
escalate_after_declines = 1

[[rules]]
name = "escalate-on-wait"
codes = ["ESC-WAIT"]
escalate_after_ms = 60000

[[rules]]
name = "rekey"
codes = ["REKEY"]
rekey = ["amount", "account"]
rekey_attempts = 2

[[rules]]
name = "review-all"
codes = ["REVIEWED"]
review_percent = 100

[[rules]]
name = "fallback"
codes = ["FALLBACK"]
level = 2
fallback = true

[[rules]]
name = "short-deadline"
codes = ["SHORT"]
decision_deadline_ms = 120000

[[rules]]
name = "refused-in-cny"
codes = ["NO-RULE"]
currency = "USD"
"#;

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(&|s| s).await
    }

    /// Starts a server whose configuration is the sample edited by `edit`.
    pub async fn start_with(edit: &dyn Fn(String) -> String) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = dir.path().join("pki");
        countersign::tools::pki::init(&pki).expect("pki init");
        std::fs::write(pki.join("policy.toml"), TEST_POLICY).expect("write test policy");
        let database = scratch_database().map(Arc::new);
        let config =
            Config::parse(&test_config_text(database.as_deref(), edit), &pki).expect("config");
        let clock = ManualClock::new(SystemClock.now());
        let mut t = TestServer {
            dir,
            pki,
            clock,
            config,
            server: None,
            seed: 7,
            database,
        };
        t.boot().await;
        t
    }

    pub async fn boot(&mut self) {
        let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(self.seed));
        self.seed += 1;
        let server = countersign::server::start(&self.config, Arc::new(self.clock.clone()), rng)
            .await
            .expect("start server");
        // Clients connect to the port actually bound; a restart binds a new one.
        self.server = Some(server);
    }

    /// Another node of this test's cluster: the same database and PKI (so the same signing
    /// key), its own node id and advertised address `NODE.test:7443`.
    pub async fn join(&self, node: &str) -> TestServer {
        let text = self.config_text(&|s| {
            s.replace("node_id = \"node-1\"", &format!("node_id = \"{node}\""))
                .replace(
                    "advertise = \"node-1.test:7443\"",
                    &format!("advertise = \"{node}.test:7443\""),
                )
        });
        assert!(text.contains(node), "a cluster test runs on postgres");
        let mut t = TestServer {
            dir: tempfile::tempdir().expect("temp dir"),
            pki: self.pki.clone(),
            clock: self.clock.clone(),
            config: Config::parse(&text, &self.pki).expect("config"),
            server: None,
            seed: self.seed + 1000,
            database: self.database.clone(),
        };
        t.boot().await;
        t
    }

    /// A server on the configuration `text`, whose PKI `pki` lies inside `dir`; the error when
    /// it does not start within 20 s.
    pub async fn boot_text(
        dir: tempfile::TempDir,
        pki: PathBuf,
        text: &str,
    ) -> anyhow::Result<TestServer> {
        let mut t = TestServer {
            config: Config::parse(text, &pki)?,
            dir,
            pki,
            clock: ManualClock::new(SystemClock.now()),
            server: None,
            seed: 7,
            database: None,
        };
        let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(t.seed));
        let clock = Arc::new(t.clock.clone());
        let started = countersign::server::start(&t.config, clock, rng);
        let server = tokio::time::timeout(Duration::from_secs(20), started)
            .await
            .map_err(|_| anyhow::anyhow!("the server did not start within 20 s"))??;
        t.server = Some(server);
        Ok(t)
    }

    /// A server on another store with this test's PKI (so its signing key) and clock: in
    /// `database` when given, else in the data directory `NAME` beside the PKI. Its
    /// configuration is written to `<pki>/NAME.toml` too, for the binary's tools.
    pub async fn on_store(&self, database: Option<Arc<ScratchDatabase>>, name: &str) -> TestServer {
        self.on_store_with(database, name, &|s| s).await
    }

    /// As `on_store`, with the configuration edited by `edit`.
    pub async fn on_store_with(
        &self,
        database: Option<Arc<ScratchDatabase>>,
        name: &str,
        edit: &dyn Fn(String) -> String,
    ) -> TestServer {
        let text = edit(store_config_text(database.as_deref(), name));
        std::fs::write(self.pki.join(format!("{name}.toml")), &text).expect("write config");
        let mut t = TestServer {
            dir: tempfile::tempdir().expect("temp dir"),
            pki: self.pki.clone(),
            clock: self.clock.clone(),
            config: Config::parse(&text, &self.pki).expect("config"),
            server: None,
            seed: self.seed + 1000,
            database,
        };
        t.boot().await;
        t
    }

    /// Writes this server's configuration to `<pki>/NAME.toml`, for the binary's tools.
    pub fn write_config(&self, name: &str) -> PathBuf {
        let path = self.pki.join(format!("{name}.toml"));
        std::fs::write(&path, self.config_text(&|s| s)).expect("write config");
        path
    }

    /// Whether this node leads.
    pub fn role(&self) -> countersign::api::Role {
        self.server.as_ref().expect("running").role()
    }

    /// The sample configuration on this test's backend, edited by `edit`.
    pub fn config_text(&self, edit: &dyn Fn(String) -> String) -> String {
        test_config_text(self.database.as_deref(), edit)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").addr
    }

    /// The embedded backend's data directory (on postgres, where it would be: unused).
    pub fn data_dir(&self) -> PathBuf {
        match &self.config.storage {
            countersign::storage::StorageConfig::Embedded(s) => s.data_dir.clone(),
            countersign::storage::StorageConfig::Postgres(_) => self.dir.path().join("data"),
        }
    }

    /// Stops the server cleanly and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    /// The duty manager's view of the queue (AdminService.GetQueueStatus as admin-01).
    pub async fn queue_status(&self) -> pb::GetQueueStatusResponse {
        self.admin()
            .await
            .get_queue_status(pb::GetQueueStatusRequest {})
            .await
            .expect("queue status")
            .into_inner()
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("shutdown");
        }
    }

    pub async fn teller(&self, id: &str) -> TellerServiceClient<Channel> {
        client::teller(self.addr(), &self.pki, id)
            .await
            .expect("teller client")
    }

    pub async fn supervisor(&self, id: &str) -> SupervisorServiceClient<Channel> {
        client::supervisor(self.addr(), &self.pki, id)
            .await
            .expect("supervisor client")
    }

    pub async fn auditor(&self) -> AuditServiceClient<Channel> {
        client::auditor(self.addr(), &self.pki, "audit-01")
            .await
            .expect("auditor client")
    }

    /// Verifies the stored data offline (stop the server first for a settled ledger).
    pub fn verify(
        &self,
        v: Option<&countersign::ledger::checkpoint::Verifier>,
    ) -> countersign::verify::Report {
        verify_stored(
            &self.data_dir(),
            self.database.as_deref().map(|d| d.url()),
            v,
        )
    }

    /// Every whole record stored, in index order.
    pub fn records(&self) -> Vec<Vec<u8>> {
        stored_records(&self.data_dir(), self.database.as_deref().map(|d| d.url()))
    }

    /// Throws the audit projection away; the server must be stopped.
    pub fn drop_projection(&self) {
        drop_projection(&self.data_dir(), self.database.as_deref())
    }

    /// How many ledger records are durable.
    pub fn ledger_len(&self) -> u64 {
        self.server.as_ref().expect("running").engine().ledger_len()
    }
}

/// A supervisor console: a client and its open Attend stream.
pub struct Console {
    pub id: &'static str,
    pub client: SupervisorServiceClient<Channel>,
    pub stream: Streaming<pb::AttendResponse>,
}

impl Console {
    pub async fn open(t: &TestServer, id: &'static str) -> Console {
        let mut client = t.supervisor(id).await;
        let stream = client
            .attend(pb::AttendRequest {})
            .await
            .expect("attend")
            .into_inner();
        Console { id, client, stream }
    }

    /// The next event on the stream, failing the test after 10 s.
    pub async fn next(&mut self) -> pb::attend_response::Event {
        let msg = tokio::time::timeout(Duration::from_secs(10), self.stream.message())
            .await
            .unwrap_or_else(|_| panic!("{}: no event within 10 s", self.id))
            .expect("attend stream status")
            .expect("attend stream open");
        msg.event.expect("event set")
    }

    pub async fn next_offer(&mut self) -> pb::Offer {
        match self.next().await {
            pb::attend_response::Event::Offer(o) => o,
            other => panic!("{}: expected an offer, got {other:?}", self.id),
        }
    }

    pub async fn next_review(&mut self) -> pb::ReviewResumed {
        match self.next().await {
            pb::attend_response::Event::ReviewResumed(r) => r,
            other => panic!("{}: expected a resumed review, got {other:?}", self.id),
        }
    }

    /// Asserts nothing arrives for a short while. Used only to check that something does NOT
    /// happen; the positive paths never depend on timing.
    pub async fn expect_quiet(&mut self, ms: u64) {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(ms), self.stream.message()).await
        {
            panic!("{}: expected no event, got {m:?}", self.id);
        }
    }

    pub async fn accept(&mut self, o: &pb::Offer) -> pb::AuthorizationRequest {
        self.client
            .accept(pb::AcceptRequest {
                request_id: o.request_id.clone(),
                epoch: o.epoch,
            })
            .await
            .expect("accept")
            .into_inner()
            .request
            .expect("request")
    }

    /// Declines an offer, giving no reason.
    pub async fn decline(&mut self, o: &pb::Offer) {
        self.client
            .decline(pb::DeclineRequest {
                request_id: o.request_id.clone(),
                epoch: o.epoch,
                reason: String::new(),
            })
            .await
            .expect("decline");
    }

    pub async fn decide(
        &mut self,
        o: &pb::Offer,
        decision: pb::Decision,
        reason_code: &str,
        comment: &str,
    ) -> Result<pb::AuthorizationRequest, tonic::Status> {
        self.client
            .decide(pb::DecideRequest {
                request_id: o.request_id.clone(),
                epoch: o.epoch,
                decision: decision as i32,
                reason_code: reason_code.into(),
                comment: comment.into(),
                rekeyed: None,
            })
            .await
            .map(|r| r.into_inner().request.expect("request"))
    }
}

pub fn state(r: &pb::AuthorizationRequest) -> pb::RequestState {
    pb::RequestState::try_from(r.state).expect("known state")
}

/// Asserts a call failed with `code` and that its message mentions `needle`.
pub fn assert_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} mentioning {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "status {s:?}");
            assert!(
                s.message().contains(needle),
                "message {:?} lacks {needle:?}",
                s.message()
            );
        }
    }
}

/// Submits a standard request as `teller` and returns it.
pub async fn submit(t: &TestServer, teller: &str, serial: &str) -> pb::AuthorizationRequest {
    let mut c = t.teller(teller).await;
    c.submit(submit_request(
        serial,
        "WDL-CASH",
        5_000_000,
        "6222020200112233445",
    ))
    .await
    .expect("submit")
    .into_inner()
    .request
    .expect("request")
}

/// Submits a request with this transaction code and amount (CNY minor units).
pub async fn submit_code(
    t: &TestServer,
    teller: &str,
    serial: &str,
    code: &str,
    minor_units: i64,
) -> pb::AuthorizationRequest {
    t.teller(teller)
        .await
        .submit(submit_request(
            serial,
            code,
            minor_units,
            "6222020200112233445",
        ))
        .await
        .unwrap_or_else(|s| panic!("submit {serial}: {s:?}"))
        .into_inner()
        .request
        .expect("request")
}

impl TestServer {
    pub async fn reviewer(
        &self,
        id: &str,
    ) -> countersign::api::pb::review_service_client::ReviewServiceClient<Channel> {
        countersign::api::pb::review_service_client::ReviewServiceClient::new(
            client::channel(self.addr(), &self.pki, id)
                .await
                .expect("reviewer channel"),
        )
    }

    pub async fn admin(
        &self,
    ) -> countersign::api::pb::admin_service_client::AdminServiceClient<Channel> {
        countersign::api::pb::admin_service_client::AdminServiceClient::new(
            client::channel(self.addr(), &self.pki, "admin-01")
                .await
                .expect("admin channel"),
        )
    }

    /// Every ledger record, as the auditor pages through them with GetRecords: the event and
    /// the record's JSON.
    pub async fn ledger(&self) -> Vec<(pb::LedgerEvent, serde_json::Value)> {
        ledger_of(self.auditor().await).await
    }

    /// The engine's own records (`engine_started`, `directory_loaded`, ...), in order: each
    /// record's `engine` object with the record's `actor` added.
    pub async fn engine_records(&self) -> Vec<serde_json::Value> {
        engine_records_of(self.auditor().await).await
    }

    /// The ledger records of one request, as the auditor reads them.
    pub async fn history(&self, id: &str) -> Vec<serde_json::Value> {
        self.auditor()
            .await
            .get_request(pb::GetRequestRequest {
                request_id: id.into(),
            })
            .await
            .expect("history")
            .into_inner()
            .events
            .iter()
            .map(|e| serde_json::from_slice(&e.record).expect("record is JSON"))
            .collect()
    }

    /// The event type of each of a request's records, in ledger order.
    pub async fn history_kinds(&self, id: &str) -> Vec<String> {
        self.history(id)
            .await
            .iter()
            .map(|e| {
                e["event"]["type"]
                    .as_str()
                    .expect("an event type")
                    .to_owned()
            })
            .collect()
    }
}

impl Console {
    pub async fn approve(&mut self, o: &pb::Offer) -> pb::AuthorizationRequest {
        self.accept(o).await;
        self.decide(o, pb::Decision::Approve, "", "ok")
            .await
            .expect("approve")
    }
}

/// A supervisor's line in a queue status; fails the test when they are not listed.
pub fn supervisor_state<'a>(
    status: &'a pb::GetQueueStatusResponse,
    id: &str,
) -> &'a pb::SupervisorState {
    status
        .supervisors
        .iter()
        .find(|v| v.supervisor_id == id)
        .unwrap_or_else(|| panic!("{id} is not in the queue status"))
}

/// Every ledger record, as an auditor pages through them with GetRecords: the event and the
/// record's JSON.
pub async fn ledger_of(
    mut auditor: AuditServiceClient<Channel>,
) -> Vec<(pb::LedgerEvent, serde_json::Value)> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let page = auditor
            .get_records(pb::GetRecordsRequest {
                start,
                end: u64::MAX,
            })
            .await
            .expect("records")
            .into_inner();
        for e in page.records {
            let json = serde_json::from_slice(&e.record).expect("record is JSON");
            out.push((e, json));
        }
        if page.next_start >= page.ledger_size || page.next_start == start {
            return out;
        }
        start = page.next_start;
    }
}

/// The engine's own records, in order: each record's `engine` object with the record's
/// `actor` added.
pub async fn engine_records_of(auditor: AuditServiceClient<Channel>) -> Vec<serde_json::Value> {
    ledger_of(auditor)
        .await
        .into_iter()
        .filter(|(e, _)| e.request_id.is_empty())
        .map(|(e, json)| {
            let mut event = json["engine"].clone();
            assert_eq!(
                event["type"],
                e.kind.as_str(),
                "kind names the engine event"
            );
            event["actor"] = json["actor"].clone();
            event
        })
        .collect()
}
