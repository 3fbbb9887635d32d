//! Emergency on-site authorization (应急授权) and its registration afterwards: a teller
//! registers what a supervisor on site authorized while the centre could not be used, with
//! that supervisor's signature made with the key of their certificate. The centre checks the
//! signature, the certificate, the policy and the supervisor's authority, records it as a
//! request of its own kind (final at once, never offered), and counts it per branch, with
//! those authorized while the ledger shows the centre serving.

use countersign::api::pb;
use countersign::domain::Timestamp;
use countersign::engine::Clock as _;
use tonic::Code;
use tonic_types::StatusExt;

use crate::fixtures::submit_request;
use crate::harness::*;

crate::on_both_backends!(
    a_signed_fallback_is_registered_final_recorded_and_counted,
    bad_signatures_unknown_supervisors_central_rules_and_duplicates_are_refused,
    the_sign_command_signs_what_the_centre_checks
);

/// The test policy's rule that allows fallback: level 2.
const CODE: &str = "FALLBACK";

fn pki_file(t: &TestServer, name: &str) -> String {
    std::fs::read_to_string(t.pki.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// A RegisterFallback of `serial` signed on site by `supervisor` (with their own certificate
/// and key) at `decided_at`.
fn signed(
    t: &TestServer,
    teller: &str,
    serial: &str,
    code: &str,
    supervisor: &str,
    decided_at: Timestamp,
) -> pb::RegisterFallbackRequest {
    let cert =
        countersign::tools::fallback::certificate_der(&pki_file(t, &format!("{supervisor}.pem")))
            .expect("certificate");
    countersign::tools::fallback::register_request(
        teller,
        submit_request(serial, code, 2_000_000, "6222020200112233445"),
        supervisor,
        decided_at,
        pb::FallbackReason::CentreUnreachable,
        &cert,
        &pki_file(t, &format!("{supervisor}.key")),
    )
    .expect("sign")
}

async fn register(
    t: &TestServer,
    teller: &str,
    req: pb::RegisterFallbackRequest,
) -> Result<pb::RegisterFallbackResponse, tonic::Status> {
    t.teller(teller)
        .await
        .register_fallback(req)
        .await
        .map(|r| r.into_inner())
}

fn reason(s: &tonic::Status) -> String {
    s.get_details_error_info().expect("ErrorInfo").reason
}

async fn a_signed_fallback_is_registered_final_recorded_and_counted() {
    let mut t = TestServer::start().await;
    let mut console = Console::open(&t, "sup-01").await;
    // Authorized on site an hour before this server started: the ledger shows no centre.
    let before_start = Timestamp(t.clock.now().0 - 3_600_000);
    let req = signed(&t, "teller-01", "FB-1", CODE, "sup-03", before_start);
    let done = register(&t, "teller-01", req.clone())
        .await
        .expect("register");
    assert!(!done.replayed);
    let r = done.request.expect("request");
    assert_eq!(state(&r), pb::RequestState::Fallback);
    assert!(r.decision.is_none(), "no remote decision");
    assert!(r.decide_by.is_none());
    let on_site = r.on_site.as_ref().expect("on_site");
    assert_eq!(on_site.supervisor_id, "sup-03");
    assert_eq!(on_site.reason, pb::FallbackReason::CentreUnreachable as i32);
    assert_eq!(
        on_site.decided_at.as_ref().unwrap().seconds,
        before_start.0 / 1000
    );
    assert_eq!(r.policy_rule, "fallback");

    // A retry (the answer was lost) is a replay: nothing stored twice.
    let len = t.ledger_len();
    let again = register(&t, "teller-01", req).await.expect("retry");
    assert!(again.replayed);
    assert_eq!(again.request.unwrap().request_id, r.request_id);
    assert_eq!(t.ledger_len(), len);

    // Never offered to anyone.
    console.expect_quiet(300).await;

    // Its own kind of record, with the certificate and signature kept.
    // Then drawn for after-the-fact review, as every fallback is.
    let history = t.history(&r.request_id).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["event"]["type"], "review_drawn");
    assert_eq!(history[1]["event"]["reason"], "fallback");
    let event = &history[0]["event"];
    assert_eq!(event["type"], "fallback_registered");
    assert_eq!(event["on_site"]["supervisor"], "sup-03");
    assert_eq!(event["requirements"]["fallback"], true);
    assert!(event["on_site"]["signature"].as_str().unwrap().len() > 40);

    // A second, authorized a minute after the server started: while the centre served.
    t.clock.advance_ms(120_000);
    let while_up = Timestamp(t.clock.now().0 - 60_000);
    register(
        &t,
        "teller-01",
        signed(&t, "teller-01", "FB-2", CODE, "sup-03", while_up),
    )
    .await
    .expect("register while serving");

    let stats = t
        .auditor()
        .await
        .get_statistics(pb::GetStatisticsRequest::default())
        .await
        .expect("statistics")
        .into_inner();
    assert_eq!(stats.by_outcome.get("fallback"), Some(&2));
    assert!(stats.by_supervisor.is_empty(), "no one decided anything");
    assert_eq!(
        stats.fallbacks,
        vec![pb::BranchFallbacks {
            branch_id: "BR-0101".into(),
            registered: 2,
            while_serving: 1,
        }]
    );

    // Auditors find them by their outcome.
    let found = t
        .auditor()
        .await
        .search(pb::SearchRequest {
            outcome: pb::RequestState::Fallback as i32,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.requests.len(), 2);

    // It survives a restart, is read back from storage, and the ledger verifies.
    t.restart().await;
    let got = t
        .teller("teller-01")
        .await
        .get(pb::GetRequest {
            request_id: r.request_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&got), pb::RequestState::Fallback);
    assert_eq!(got.on_site.unwrap().supervisor_id, "sup-03");
    let report = t.verify(None);
    assert_eq!(report.problem, None);
}

async fn bad_signatures_unknown_supervisors_central_rules_and_duplicates_are_refused() {
    let t = TestServer::start().await;
    let at = Timestamp(t.clock.now().0 - 600_000);
    submit(&t, "teller-01", "USED-1").await;
    let len = t.ledger_len();

    // A signature over other bytes: one image changed after the supervisor signed.
    let mut req = signed(&t, "teller-01", "FB-1", CODE, "sup-03", at);
    req.images[0].content[200] ^= 1;
    let s = register(&t, "teller-01", req).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(reason(&s), "FALLBACK_SIGNATURE_INVALID");
    assert!(s.message().contains("on_site.signature"), "{s:?}");

    // Signed for another teller: the teller is in the signed bytes.
    let req = signed(&t, "teller-02", "FB-1", CODE, "sup-03", at);
    let s = register(&t, "teller-01", req).await.unwrap_err();
    assert_eq!(reason(&s), "FALLBACK_SIGNATURE_INVALID");

    // The signature is sup-03's but the call names sup-01: the certificate is not theirs.
    let mut req = signed(&t, "teller-01", "FB-1", CODE, "sup-03", at);
    req.on_site.as_mut().unwrap().supervisor_id = "sup-01".into();
    let s = register(&t, "teller-01", req).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(reason(&s), "FALLBACK_SUPERVISOR_UNKNOWN");

    // A teller's certificate and key: no supervisor.
    let req = signed(&t, "teller-01", "FB-1", CODE, "teller-02", at);
    let s = register(&t, "teller-01", req).await.unwrap_err();
    assert_eq!(reason(&s), "FALLBACK_SUPERVISOR_UNKNOWN");

    // A transaction the policy keeps central (the default rule allows no fallback).
    let req = signed(&t, "teller-01", "FB-1", "WDL-CASH", "sup-03", at);
    let s = register(&t, "teller-01", req).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert_eq!(reason(&s), "FALLBACK_NOT_ALLOWED");

    // A level-1 supervisor for a level-2 rule.
    let req = signed(&t, "teller-01", "FB-1", CODE, "sup-05", at);
    let s = register(&t, "teller-01", req).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(reason(&s), "INSUFFICIENT_AUTHORITY");

    // A serial already used by a Submit.
    let req = signed(&t, "teller-01", "USED-1", CODE, "sup-03", at);
    let s = register(&t, "teller-01", req).await.unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");

    // In the future, and older than limits.fallback_age_max_days.
    let future = Timestamp(t.clock.now().0 + 3_600_000);
    let s = register(
        &t,
        "teller-01",
        signed(&t, "teller-01", "FB-1", CODE, "sup-03", future),
    )
    .await
    .unwrap_err();
    assert_status(Err::<(), _>(s), Code::InvalidArgument, "on_site.decided_at");
    let old = Timestamp(t.clock.now().0 - 31 * 86_400_000);
    let s = register(
        &t,
        "teller-01",
        signed(&t, "teller-01", "FB-1", CODE, "sup-03", old),
    )
    .await
    .unwrap_err();
    assert_status(
        Err::<(), _>(s),
        Code::InvalidArgument,
        "fallback_age_max_days",
    );

    // A certificate over the size any real one has.
    let mut req = signed(&t, "teller-01", "FB-1", CODE, "sup-03", at);
    req.on_site.as_mut().unwrap().certificate = vec![0x30; 17 * 1024];
    let s = register(&t, "teller-01", req).await.unwrap_err();
    assert_status(
        Err::<(), _>(s),
        Code::InvalidArgument,
        "on_site.certificate",
    );

    // Not one of them stored anything.
    assert_eq!(t.ledger_len(), len);

    // The good one goes through; the same serial registered again with another signing time
    // is a duplicate, as is a Submit of it.
    register(
        &t,
        "teller-01",
        signed(&t, "teller-01", "FB-1", CODE, "sup-03", at),
    )
    .await
    .expect("register");
    let later = Timestamp(at.0 + 1000);
    let s = register(
        &t,
        "teller-01",
        signed(&t, "teller-01", "FB-1", CODE, "sup-03", later),
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    let s = t
        .teller("teller-01")
        .await
        .submit(submit_request(
            "FB-1",
            CODE,
            2_000_000,
            "6222020200112233445",
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
}

/// `countersign fallback sign` builds the documented bytes from a JSON description and signs
/// them; the centre accepts that signature.
async fn the_sign_command_signs_what_the_centre_checks() {
    let t = TestServer::start().await;
    let at = Timestamp(t.clock.now().0 - 600_000);
    let mut req = signed(&t, "teller-01", "FB-CLI", CODE, "sup-03", at);
    let dir = tempfile::tempdir().unwrap();
    let tx = req.transaction.clone().unwrap();
    let c = req.customer.clone().unwrap();
    let mut images = Vec::new();
    for (i, image) in req.images.iter().enumerate() {
        let name = format!("image-{i}.jpg");
        std::fs::write(dir.path().join(&name), &image.content).unwrap();
        let kind = match pb::ImageKind::try_from(image.kind).unwrap() {
            pb::ImageKind::Voucher => "voucher",
            pb::ImageKind::IdFront => "id_front",
            other => panic!("{other:?}"),
        };
        images.push(serde_json::json!({"kind": kind, "file": name}));
    }
    let json = serde_json::json!({
        "teller": "teller-01",
        "serial": "FB-CLI",
        "code": tx.code,
        "amount_minor": tx.amount.as_ref().unwrap().minor_units,
        "currency": tx.amount.as_ref().unwrap().currency,
        "account": tx.account,
        "attributes": tx.attributes,
        "document_type": "prc_resident_id",
        "document_number": c.document_number,
        "name": c.name,
        "expiry_date": c.expiry_date,
        "verification": "matched",
        "images": images,
        "supervisor": "sup-03",
        "decided_at_ms": at.0,
        "reason": "centre_unreachable",
    });
    let file = dir.path().join("fallback.json");
    std::fs::write(&file, json.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["fallback", "sign", "--key"])
        .arg(t.pki.join("sup-03.key"))
        .arg("--request")
        .arg(&file)
        .output()
        .expect("run countersign fallback sign");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8(out.stdout).unwrap().trim())
        .expect("base64 signature");
    req.on_site.as_mut().unwrap().signature = sig;
    let done = register(&t, "teller-01", req).await.expect("register");
    assert_eq!(
        state(done.request.as_ref().unwrap()),
        pb::RequestState::Fallback
    );
}
