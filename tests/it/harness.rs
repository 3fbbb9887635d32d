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
}

/// The sample configuration with a port chosen by the OS and the data beside the PKI.
pub fn test_config_text(edit: &dyn Fn(String) -> String) -> String {
    edit(
        countersign::config::SAMPLE
            .replace("listen = \"127.0.0.1:7443\"", "listen = \"127.0.0.1:0\"")
            .replace("data_dir = \"data\"", "data_dir = \"../data\""),
    )
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
name = "escalate-on-wait"
codes = ["ESC-WAIT"]
escalate_after_ms = 60000

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
        let config = Config::parse(&test_config_text(edit), &pki).expect("config");
        let clock = ManualClock::new(SystemClock.now());
        let mut t = TestServer {
            dir,
            pki,
            clock,
            config,
            server: None,
            seed: 7,
        };
        t.boot().await;
        t
    }

    async fn boot(&mut self) {
        let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(self.seed));
        self.seed += 1;
        let server = countersign::server::start(&self.config, Arc::new(self.clock.clone()), rng)
            .await
            .expect("start server");
        // Clients connect to the port actually bound; a restart binds a new one.
        self.server = Some(server);
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").addr
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server cleanly and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
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

    /// How many ledger records are durable.
    pub fn ledger_len(&self) -> u64 {
        self.server.as_ref().expect("running").engine.ledger_len()
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
    pub async fn admin(
        &self,
    ) -> countersign::api::pb::admin_service_client::AdminServiceClient<Channel> {
        countersign::api::pb::admin_service_client::AdminServiceClient::new(
            client::channel(self.addr(), &self.pki, "admin-01")
                .await
                .expect("admin channel"),
        )
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
}

impl Console {
    pub async fn approve(&mut self, o: &pb::Offer) -> pb::AuthorizationRequest {
        self.accept(o).await;
        self.decide(o, pb::Decision::Approve, "", "ok")
            .await
            .expect("approve")
    }
}
