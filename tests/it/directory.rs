//! The principal directory changed on a running server, as operations do it: a new teller
//! onboarded, a supervisor's and a teller's access revoked, a broken file refused; through
//! AdminService.ReloadDirectory and, with the real binary, SIGHUP.

use std::time::Duration;

use countersign::api::pb;
use tonic::Code;

use crate::harness::*;

crate::on_both_backends!(
    a_principal_added_to_the_directory_may_call_at_once,
    revoked_principals_lose_their_streams_and_calls_and_what_they_held_moves_on,
    a_directory_with_a_mistake_is_refused_and_the_one_in_force_stays
);

fn directory_file(t: &TestServer) -> std::path::PathBuf {
    t.pki.join("principals.toml")
}

/// The directory file without the entries of `id`.
fn without(t: &TestServer, id: &str) -> String {
    let text = std::fs::read_to_string(directory_file(t)).unwrap();
    let mut blocks = text.split("[[principals]]");
    let head = blocks.next().unwrap().to_owned();
    let kept: Vec<&str> = blocks
        .filter(|b| !b.contains(&format!("id = \"{id}\"\n")))
        .collect();
    assert!(
        kept.len() < text.matches("[[principals]]").count(),
        "{id} was listed"
    );
    format!("{head}[[principals]]{}", kept.join("[[principals]]"))
}

async fn reload(t: &TestServer) -> Result<pb::ReloadDirectoryResponse, tonic::Status> {
    t.admin()
        .await
        .reload_directory(pb::ReloadDirectoryRequest {})
        .await
        .map(|r| r.into_inner())
}

async fn a_principal_added_to_the_directory_may_call_at_once() {
    let t = TestServer::start().await;
    let fp = countersign::tools::pki::issue_client(&t.pki, "teller-99").unwrap();
    let before = t
        .teller("teller-99")
        .await
        .submit(crate::fixtures::submit_request(
            "NEW-1",
            "WDL-CASH",
            5_000_000,
            "6222020200112233445",
        ))
        .await;
    assert_status(before, Code::Unauthenticated, "");
    let mut text = std::fs::read_to_string(directory_file(&t)).unwrap();
    text.push_str(&format!(
        "\n[[principals]]\nid = \"teller-99\"\nname = \"New Teller\"\nrole = \"teller\"\n\
         branch = \"BR-0101\"\ncert_sha256 = \"{fp}\"\n"
    ));
    std::fs::write(directory_file(&t), &text).unwrap();
    let r = reload(&t).await.unwrap();
    assert_ne!(r.sha256, r.previous_sha256);
    assert!(r.revoked_principal_ids.is_empty(), "{r:?}");
    assert_eq!(r.attend_streams_ended, 0);
    let submitted = submit(&t, "teller-99", "NEW-2").await;
    assert_eq!(state(&submitted), pb::RequestState::Queued);
    // The same file again changes nothing and revokes nobody.
    let again = reload(&t).await.unwrap();
    assert_eq!(again.sha256, again.previous_sha256);
    assert!(again.revoked_principal_ids.is_empty());
}

async fn revoked_principals_lose_their_streams_and_calls_and_what_they_held_moves_on() {
    let t = TestServer::start().await;
    let mut sup1 = Console::open(&t, "sup-01").await;
    let r = submit(&t, "teller-01", "REV-1").await;
    let offer = sup1.next_offer().await;
    assert_eq!(offer.request_id, r.request_id);
    let mut sup2 = Console::open(&t, "sup-02").await;
    let mut watch = t
        .teller("teller-01")
        .await
        .watch(pb::WatchRequest {
            request_id: r.request_id.clone(),
            after_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    watch
        .message()
        .await
        .unwrap()
        .expect("the current state first");

    // sup-01 and teller-01 leave the directory (a stolen card, a transfer).
    let text = without(&t, "sup-01");
    std::fs::write(directory_file(&t), &text).unwrap();
    std::fs::write(directory_file(&t), without(&t, "teller-01")).unwrap();
    let reloaded = reload(&t).await.unwrap();
    assert_eq!(
        reloaded.revoked_principal_ids,
        vec!["sup-01".to_string(), "teller-01".to_string()]
    );
    assert_eq!(reloaded.attend_streams_ended, 1);
    assert_eq!(reloaded.watched_requests_ended, 1);

    // sup-01's stream ends, saying why; their calls are refused on the connection they hold.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match sup1.stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends");
    let status = ended.expect_err("ends with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("removed or changed"),
        "{status:?}"
    );
    let accept = sup1
        .client
        .accept(pb::AcceptRequest {
            request_id: offer.request_id.clone(),
            epoch: offer.epoch,
        })
        .await;
    assert_status(accept, Code::Unauthenticated, "");
    // The offer moves on to sup-02.
    let moved = sup2.next_offer().await;
    assert_eq!(moved.request_id, r.request_id);
    assert!(moved.epoch > offer.epoch);
    let history = t.history(&r.request_id).await;
    assert!(
        history
            .iter()
            .any(|e| e["event"]["type"] == "offer_withdrawn"
                && e["event"]["reason"] == "revoked"
                && e["event"]["supervisor"] == "sup-01"),
        "{history:?}"
    );
    // teller-01's Watch ended; a new call is refused.
    let watched = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends");
    assert!(!matches!(watched, Ok(Some(_))));
    let again = t
        .teller("teller-01")
        .await
        .submit(crate::fixtures::submit_request(
            "REV-2",
            "WDL-CASH",
            5_000_000,
            "6222020200112233445",
        ))
        .await;
    assert_status(again, Code::Unauthenticated, "");
    // The request goes on without them: sup-02 decides it.
    sup2.approve(&moved).await;
}

async fn a_directory_with_a_mistake_is_refused_and_the_one_in_force_stays() {
    let t = TestServer::start().await;
    let good = std::fs::read_to_string(directory_file(&t)).unwrap();
    std::fs::write(
        directory_file(&t),
        good.replacen("role = \"teller\"", "role = \"tellr\"", 1),
    )
    .unwrap();
    let refused = reload(&t).await;
    assert_status(refused, Code::InvalidArgument, "unknown role");
    // Nobody lost anything: teller-01 still submits.
    submit(&t, "teller-01", "STAY-1").await;
    std::fs::write(directory_file(&t), good).unwrap();
    let r = reload(&t).await.unwrap();
    assert_eq!(r.sha256, r.previous_sha256);
}

crate::on_both_backends!(sighup_reloads_the_directory_of_the_real_binary);

/// As an operator does it: add a teller to principals.toml and send the running binary SIGHUP.
async fn sighup_reloads_the_directory_of_the_real_binary() {
    use countersign::tools::client;
    let files = crate::durability::BinaryFiles::new();
    let (server, addr) = crate::durability::spawn_server(&files.config);
    let fp = countersign::tools::pki::issue_client(&files.pki, "teller-77").unwrap();
    let request =
        || crate::fixtures::submit_request("HUP-1", "WDL-CASH", 5_000_000, "6222020200112233445");
    let mut teller = client::teller(addr, &files.pki, "teller-77").await.unwrap();
    assert_status(teller.submit(request()).await, Code::Unauthenticated, "");
    let path = files.pki.join("principals.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[principals]]\nid = \"teller-77\"\nname = \"Night Teller\"\nrole = \"teller\"\n\
         branch = \"BR-0202\"\ncert_sha256 = \"{fp}\"\n"
    ));
    std::fs::write(&path, text).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // The reload is asynchronous to the signal: the call succeeds once it is in force.
    let mut last = None;
    for _ in 0..100 {
        match teller.submit(request()).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(s) => last = Some(s),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_none(), "still refused after SIGHUP: {last:?}");
    // Both reloads are in the ledger, asked by the system (the signal), not by a principal.
    let auditor = client::auditor(addr, &files.pki, "audit-01").await.unwrap();
    let records = engine_records_of(auditor).await;
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["engine_started", "policy_loaded", "directory_loaded"]
    );
    assert!(records.iter().all(|r| r["actor"].is_null()), "{records:?}");
    assert_eq!(records[2]["added"], serde_json::json!(["teller-77"]));
    drop(server);
}
