//! Mutual TLS identity and role checks at every service.

use countersign::api::pb;
use countersign::api::pb::audit_service_client::AuditServiceClient;
use countersign::api::pb::supervisor_service_client::SupervisorServiceClient;
use countersign::api::pb::teller_service_client::TellerServiceClient;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::fixtures::submit_request;
use crate::harness::*;

async fn each_role_is_confined_to_its_service() {
    let t = TestServer::start().await;
    let as_supervisor = |id: &'static str| {
        let t = &t;
        async move {
            SupervisorServiceClient::new(
                countersign::tools::client::channel(t.addr(), &t.pki, id)
                    .await
                    .unwrap(),
            )
        }
    };
    let as_teller = |id: &'static str| {
        let t = &t;
        async move {
            TellerServiceClient::new(
                countersign::tools::client::channel(t.addr(), &t.pki, id)
                    .await
                    .unwrap(),
            )
        }
    };
    let as_auditor = |id: &'static str| {
        let t = &t;
        async move {
            AuditServiceClient::new(
                countersign::tools::client::channel(t.addr(), &t.pki, id)
                    .await
                    .unwrap(),
            )
        }
    };
    let len = t.ledger_len();
    assert_status(
        as_supervisor("teller-01")
            .await
            .attend(pb::AttendRequest {})
            .await,
        Code::PermissionDenied,
        "teller-01",
    );
    assert_status(
        as_teller("sup-01")
            .await
            .submit(submit_request("S-1", "WDL-CASH", 100, "6222020200110002"))
            .await,
        Code::PermissionDenied,
        "sup-01",
    );
    assert_status(
        as_teller("audit-01")
            .await
            .submit(submit_request("S-1", "WDL-CASH", 100, "6222020200110002"))
            .await,
        Code::PermissionDenied,
        "audit-01",
    );
    assert_status(
        as_auditor("teller-01")
            .await
            .get_image(pb::GetImageRequest {
                sha256: "0".repeat(64),
            })
            .await,
        Code::PermissionDenied,
        "teller-01",
    );
    assert_status(
        as_auditor("sup-02")
            .await
            .get_image(pb::GetImageRequest {
                sha256: "0".repeat(64),
            })
            .await,
        Code::PermissionDenied,
        "sup-02",
    );
    // The admin may read the audit API.
    assert_status(
        as_auditor("admin-01")
            .await
            .get_image(pb::GetImageRequest {
                sha256: "0".repeat(64),
            })
            .await,
        Code::NotFound,
        "",
    );
    assert_eq!(t.ledger_len(), len, "refused calls store nothing");
}

async fn a_certificate_not_in_the_directory_gets_nothing() {
    let t = TestServer::start().await;
    // Signed by the same CA, so TLS accepts it, but nobody put it in the directory.
    countersign::tools::pki::issue_client(&t.pki, "mallory").unwrap();
    let mut c = t.teller("mallory").await;
    assert_status(
        c.submit(submit_request("M-1", "WDL-CASH", 100, "6222020200110002"))
            .await,
        Code::Unauthenticated,
        "not in the principal directory",
    );
}

async fn a_client_without_a_certificate_cannot_connect() {
    let t = TestServer::start().await;
    let ca = std::fs::read_to_string(t.pki.join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://{}", t.addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    // Either the handshake or the first call must fail; nothing may succeed.
    let outcome = match endpoint.connect().await {
        Err(_) => None,
        Ok(ch) => Some(
            TellerServiceClient::new(ch)
                .get(pb::GetRequest {
                    request_id: "0".repeat(32),
                })
                .await,
        ),
    };
    if let Some(r) = outcome {
        assert!(
            r.is_err(),
            "a call without a client certificate succeeded: {r:?}"
        );
    }
    // The same server and CA with a client certificate gets through (to NOT_FOUND), so the
    // failure above is the missing certificate, not a broken setup.
    let mut ok = t.teller("teller-01").await;
    assert_status(
        ok.get(pb::GetRequest {
            request_id: "0".repeat(32),
        })
        .await,
        Code::NotFound,
        "",
    );
}

async fn a_teller_sees_only_their_own_requests() {
    let t = TestServer::start().await;
    let r = submit(&t, "teller-01", "BR0101-0100").await;
    let mut other = t.teller("teller-02").await;
    let id = r.request_id.clone();
    assert_status(
        other
            .get(pb::GetRequest {
                request_id: id.clone(),
            })
            .await,
        Code::NotFound,
        "",
    );
    assert_status(
        other
            .watch(pb::WatchRequest {
                request_id: id.clone(),
                after_version: None,
            })
            .await,
        Code::NotFound,
        "",
    );
    assert_status(
        other
            .cancel(pb::CancelRequest {
                request_id: id.clone(),
                reason: String::new(),
            })
            .await,
        Code::NotFound,
        "",
    );
    // A supervisor may only fetch images of requests they hold: "not your offer", with the
    // same code and reason as on Accept or Decide.
    let mut sup = t.supervisor("sup-01").await;
    let refused = sup
        .get_offer_image(pb::GetOfferImageRequest {
            request_id: id,
            sha256: r.images[0].sha256.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let info = tonic_types::StatusExt::get_details_error_info(&refused).expect("an ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("NOT_OFFERED_TO_YOU", "countersign.v1")
    );
}

/// Enrolling someone: `pki issue` prints the whole principal entry (and where the files went);
/// pasted into principals.toml it loads, with the fingerprint as printed or as openssl prints
/// it (upper case, colon-separated), and the new principal is served after a restart.
async fn an_issued_principal_is_enrolled_by_pasting_what_pki_issue_prints() {
    let mut t = TestServer::start().await;
    let issue = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["pki", "issue", "--dir"])
            .arg(&t.pki)
            .args(args)
            .output()
            .unwrap()
    };
    let refused = issue(&["--id", "sup-10", "--role", "supervisor"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--level"));
    assert!(!t.pki.join("sup-10.pem").exists(), "nothing issued");
    let sup = issue(&[
        "--id",
        "sup-09",
        "--role",
        "supervisor",
        "--branch",
        "BR-0909",
        "--level",
        "2",
    ]);
    assert!(sup.status.success(), "{sup:?}");
    let sup = String::from_utf8(sup.stdout).unwrap();
    assert!(
        sup.contains("sup-09.pem") && sup.contains("level = 2"),
        "{sup}"
    );
    let teller = issue(&["--id", "teller-09", "--branch", "BR-0909"]);
    assert!(teller.status.success(), "{teller:?}");
    let teller = String::from_utf8(teller.stdout).unwrap();
    let fp = teller
        .lines()
        .find_map(|l| l.strip_prefix("cert_sha256 = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let openssl: Vec<String> = fp
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let teller = teller.replace(&fp, &openssl.join(":"));
    let directory = t.pki.join("principals.toml");
    let mut text = std::fs::read_to_string(&directory).unwrap();
    text.push_str(&format!("\n{sup}\n{teller}"));
    std::fs::write(&directory, text).unwrap();
    t.stop().await;
    t.config = countersign::config::Config::parse(&t.config_text(&|s| s), &t.pki).unwrap();
    t.boot().await;
    submit(&t, "teller-09", "BR0909-0001").await;
    let mut c = Console::open(&t, "sup-09").await;
    c.expect_quiet(200).await;
    let status = t.queue_status().await;
    let s = status
        .supervisors
        .iter()
        .find(|v| v.supervisor_id == "sup-09")
        .expect("sup-09 attends");
    assert_eq!((s.level, s.branch_id.as_str()), (2, "BR-0909"));
}

async fn reflection_and_health_work_for_standard_tools() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let t = TestServer::start().await;
    let ch = countersign::tools::client::channel(t.addr(), &t.pki, "audit-01")
        .await
        .unwrap();
    let mut r = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("{resp:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for s in [
        "countersign.v1.TellerService",
        "countersign.v1.SupervisorService",
        "countersign.v1.AuditService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&s), "{s} missing from {names:?}");
    }
    // The same through v1alpha, which grpcurl before 1.9 and grpcio's client speak.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let resp = ServerReflectionClient::new(ch.clone())
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect("v1alpha reflection is served")
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("{resp:?}")
        };
        let alpha: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(alpha.contains(&"countersign.v1.TellerService"), "{alpha:?}");
    }
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    for s in [
        "countersign.v1.TellerService",
        "countersign.v1.SupervisorService",
        "countersign.v1.AuditService",
    ] {
        let st = h
            .check(tonic_health::pb::HealthCheckRequest { service: s.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            st.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{s}"
        );
    }
}

crate::on_both_backends!(
    each_role_is_confined_to_its_service,
    a_certificate_not_in_the_directory_gets_nothing,
    a_client_without_a_certificate_cannot_connect,
    a_teller_sees_only_their_own_requests,
    reflection_and_health_work_for_standard_tools,
    an_issued_principal_is_enrolled_by_pasting_what_pki_issue_prints,
);
