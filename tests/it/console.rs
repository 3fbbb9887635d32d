//! The browser console, end to end: the real server, Debian's headless Chromium presenting real
//! principals' client certificates, the console's own files as the server embeds them, and
//! tellers over gRPC beside it. tests/console/driver.mjs drives the browser (Playwright) on
//! commands from here, so each scenario reads in one place.
//!
//! Needs Chromium (`/usr/bin/chromium`, or the binary `COUNTERSIGN_CHROMIUM` names) and
//! Node.js with npm on PATH, and the npm registry once: the pinned playwright-core of
//! tests/console/package-lock.json is installed under target/tmp, named by the lock file's
//! hash, and reused by every later run. Screenshots of each screen go to
//! target/tmp/console-screenshots (docs/console.md shows copies of them).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use countersign::api::pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::fixtures::submit_request;
use crate::harness::{Console, TestServer, backend, state};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const LOCK: &str = include_str!("../console/package-lock.json");

/// The browser, driven over the driver's stdin and stdout.
struct Browser {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    async fn start(t: &TestServer) -> Browser {
        let dir = tokio::task::spawn_blocking(installed).await.expect("npm");
        let shots = screenshots();
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("driver.mjs"))
            .env("BASE_URL", format!("https://127.0.0.1:{}", t.addr().port()))
            .env("PKI_DIR", &t.pki)
            .env("SCREENSHOT_DIR", &shots)
            .env(
                "CHROMIUM",
                std::env::var_os("COUNTERSIGN_CHROMIUM")
                    .unwrap_or_else(|| "/usr/bin/chromium".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node with the browser driver (is Node.js installed?)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Browser {
            _child: child,
            stdin,
            stdout,
        }
    }

    /// Sends a command; the driver's answer, or its error.
    async fn call(&mut self, cmd: Value) -> Result<Value, String> {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the driver");
        let reply = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the driver did not answer {cmd} within 60 s"))
            .expect("read the driver")
            .unwrap_or_else(|| panic!("the driver ended (on {cmd}); its stderr is above"));
        let reply: Value = serde_json::from_str(&reply).expect("the driver answers JSON");
        if reply["ok"] == json!(true) {
            Ok(reply["value"].clone())
        } else {
            Err(reply["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    /// Sends a command that must succeed; on failure, fails the test with what the page logged.
    async fn ok(&mut self, cmd: Value) -> Value {
        match self.call(cmd.clone()).await {
            Ok(v) => v,
            Err(e) => {
                let page = cmd["page"].clone();
                let logs = self.call(json!({"op": "logs", "page": page})).await;
                // What the page showed when it failed, for whoever reads the failure.
                let file = format!("{}-failure-{}.png", backend_name(), std::process::id());
                let shot = self
                    .call(json!({"op": "screenshot", "page": page, "file": file}))
                    .await;
                panic!("browser: {cmd} failed: {e}\npage logs: {logs:?}\nscreenshot: {shot:?}")
            }
        }
    }

    async fn open(&mut self, page: &str, principal: &str) -> Value {
        self.ok(json!({"op": "open", "page": page, "principal": principal}))
            .await
    }

    async fn click(&mut self, page: &str, testid: &str) {
        self.ok(json!({"op": "click", "page": page, "selector": tid(testid)}))
            .await;
    }

    async fn press(&mut self, page: &str, key: &str) {
        self.ok(json!({"op": "press", "page": page, "key": key}))
            .await;
    }

    /// The text of the first visible element with this test id, once there is one.
    async fn text(&mut self, page: &str, testid: &str) -> String {
        let v = self
            .ok(json!({"op": "text", "page": page, "selector": tid(testid)}))
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the element with this test id says `needle`.
    async fn wait_text(&mut self, page: &str, testid: &str, needle: &str) -> String {
        let v = self
            .ok(json!({"op": "waitText", "page": page, "selector": tid(testid), "needle": needle}))
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn gone(&mut self, page: &str, testid: &str) {
        self.ok(json!({"op": "gone", "page": page, "selector": tid(testid)}))
            .await;
    }

    async fn screenshot(&mut self, page: &str, name: &str) {
        let file = format!("{}-{name}.png", backend_name());
        self.ok(json!({"op": "screenshot", "page": page, "file": file}))
            .await;
    }

    /// Fails the test when the page logged an error (a CSP violation, an exception).
    async fn no_page_errors(&mut self, page: &str) {
        let logs = self.ok(json!({"op": "logs", "page": page})).await;
        let errors: Vec<&Value> = logs
            .as_array()
            .expect("logs")
            .iter()
            .filter(|l| {
                let l = l.as_str().unwrap_or_default();
                l.starts_with("error") || l.starts_with("pageerror")
            })
            .collect();
        assert!(errors.is_empty(), "the page logged errors: {errors:?}");
    }
}

fn tid(testid: &str) -> String {
    format!("[data-testid=\"{testid}\"]")
}

fn backend_name() -> &'static str {
    match backend() {
        crate::harness::Backend::Embedded => "embedded",
        crate::harness::Backend::Postgres => "postgres",
    }
}

/// Where screenshots go.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// The driver's directory with playwright-core installed (`npm ci` of the pinned lock file,
/// once, under a file lock: both backends' tests want it at once).
fn installed() -> PathBuf {
    let key = Sha256::digest(LOCK);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join(format!("console-driver-{}", hex::encode(&key[..8])));
    std::fs::create_dir_all(tmp).expect("target/tmp");
    let lock = File::create(tmp.join("console-driver.lock")).expect("driver lock file");
    lock.lock().expect("lock the driver dir");
    let done = dir.join("installed");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("driver dir");
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(Path::new(ROOT).join("tests/console").join(f), dir.join(f))
                .expect("copy the driver's package files");
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .output()
            .expect("run npm (is Node.js with npm installed?)");
        assert!(
            out.status.success(),
            "npm ci failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&done, "").expect("mark installed");
    }
    // The driver itself is copied every time, so an edit to it is what runs.
    std::fs::copy(
        Path::new(ROOT).join("tests/console/driver.mjs"),
        dir.join("driver.mjs"),
    )
    .expect("copy the driver");
    dir
}

/// A submission whose images are real pictures (a browser must be able to show them).
fn with_pictures(serial: &str, code: &str, minor_units: i64) -> pb::SubmitRequest {
    let mut r = submit_request(serial, code, minor_units, "6222020200112233445");
    let seed = u64::from_le_bytes(Sha256::digest(serial)[..8].try_into().unwrap());
    r.images = vec![
        pb::ImageUpload {
            kind: pb::ImageKind::Voucher as i32,
            media_type: "image/png".into(),
            content: countersign::tools::png::voucher(480, 300, seed),
        },
        pb::ImageUpload {
            kind: pb::ImageKind::IdFront as i32,
            media_type: "image/png".into(),
            content: countersign::tools::png::voucher(320, 200, seed + 1),
        },
    ];
    r
}

async fn submit_pictures(t: &TestServer, serial: &str, code: &str) -> pb::AuthorizationRequest {
    t.teller("teller-01")
        .await
        .submit(with_pictures(serial, code, 5_000_000))
        .await
        .unwrap_or_else(|s| panic!("submit {serial}: {s:?}"))
        .into_inner()
        .request
        .expect("request")
}

/// sup-01 attends in the browser, teller-01 submits with pictures and watches, and sup-01
/// accepts the offer: the request's review is on the supervisor's screen.
async fn in_review(
    t: &TestServer,
    b: &mut Browser,
    serial: &str,
    code: &str,
) -> (
    pb::AuthorizationRequest,
    tonic::Streaming<pb::WatchResponse>,
) {
    b.open("sup", "sup-01").await;
    b.click("sup", "attend").await;
    let r = submit_pictures(t, serial, code).await;
    let w = watch(t, &r.request_id).await;
    b.click("sup", "accept").await;
    (r, w)
}

/// The teller's Watch on a request, past its current state.
async fn watch(t: &TestServer, id: &str) -> tonic::Streaming<pb::WatchResponse> {
    let mut w = t
        .teller("teller-01")
        .await
        .watch(pb::WatchRequest {
            request_id: id.into(),
            after_version: None,
        })
        .await
        .expect("watch")
        .into_inner();
    w.message()
        .await
        .expect("watch")
        .expect("the current state first");
    w
}

/// The next state the teller's Watch reports.
async fn next_state(w: &mut tonic::Streaming<pb::WatchResponse>) -> pb::AuthorizationRequest {
    let m = tokio::time::timeout(Duration::from_secs(20), w.message())
        .await
        .expect("a change within 20 s")
        .expect("watch")
        .expect("watch open");
    m.request.expect("request")
}

/// Watches until the request reaches a final or returned state.
async fn settled(w: &mut tonic::Streaming<pb::WatchResponse>) -> pb::AuthorizationRequest {
    loop {
        let r = next_state(w).await;
        if !matches!(
            state(&r),
            pb::RequestState::Queued | pb::RequestState::Offered | pb::RequestState::InReview
        ) {
            return r;
        }
    }
}

/// The supervisor attends from the console, accepts the offer with the keyboard, sees the
/// request with its images, and approves; the teller's Watch sees the approval. The browser
/// presents the PKCS#12 file `pki init` writes for people to import.
async fn a_supervisor_approves_from_the_console_and_the_teller_sees_it() {
    let t = TestServer::start().await;
    let password = countersign::tools::pki::BROWSER_FILE_PASSWORD;
    countersign::tools::pki::browser_files(&t.pki, &["sup-01"], password).expect("sup-01.p12");
    let mut b = Browser::start(&t).await;
    let opened = b
        .ok(json!({"op": "open", "page": "sup", "principal": "sup-01", "passphrase": password}))
        .await;
    assert_eq!(opened["status"], json!(200));
    let csp = opened["csp"].as_str().unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "a strict CSP: {csp}"
    );
    // The files answer GET and HEAD (with the body's length) and nothing else, over HTTP/1.1
    // too (Playwright's API requests use it; tonic-web alone answered them 400).
    let head = b
        .ok(json!({"op": "fetch", "page": "sup", "path": "/console/app.js", "method": "HEAD"}))
        .await;
    assert_eq!(head["status"], json!(200), "{head}");
    let length: usize = head["headers"]["content-length"]
        .as_str()
        .and_then(|l| l.parse().ok())
        .expect("a content-length");
    assert!(length > 10_000, "the script's length, not 0: {length}");
    let post = b
        .ok(json!({"op": "fetch", "page": "sup", "path": "/", "method": "POST"}))
        .await;
    assert_eq!(post["status"], json!(405));
    assert_eq!(post["headers"]["allow"], json!("GET, HEAD"));
    let who = b.text("sup", "who").await;
    assert!(who.contains("sup-01") && who.contains("授权主管"), "{who}");
    b.screenshot("sup", "supervisor-idle").await;
    b.click("sup", "attend").await;
    b.wait_text("sup", "connection", "已连接").await;

    let r = submit_pictures(&t, "CON-1", "WDL-CASH").await;
    let mut w = watch(&t, &r.request_id).await;
    let offer = b.text("sup", "offer").await;
    assert!(offer.contains("WDL-CASH"), "{offer}");
    // 5,000,000 fen as a bank writes it.
    assert!(offer.contains("50,000.00"), "the amount in yuan: {offer}");
    b.screenshot("sup", "supervisor-offer").await;

    b.press("sup", "a").await;
    let review = b.text("sup", "review").await;
    assert!(
        review.contains("Zhao Min") && review.contains("6222020200112233445"),
        "{review}"
    );
    assert!(
        review.contains("核查一致"),
        "the ID check's result: {review}"
    );
    assert_eq!(b.text("sup", "approval-of").await, "第 1 次授权，共需 1 次");
    let widths = b
        .ok(json!({"op": "imagesLoaded", "page": "sup", "selector": "img[data-testid=image]"}))
        .await;
    assert_eq!(widths, json!([480]), "the voucher, decoded by the browser");
    b.click("sup", "side-by-side").await;
    let widths = b
        .ok(json!({"op": "imagesLoaded", "page": "sup", "selector": "img[data-testid=image]"}))
        .await;
    assert_eq!(widths, json!([480, 320]), "both images side by side");
    b.screenshot("sup", "supervisor-review").await;
    // Zoom and rotate act on the images shown.
    b.click("sup", "zoom-in").await;
    b.press("sup", "o").await;
    let transforms = b
        .ok(json!({"op": "attrs", "page": "sup", "selector": "img[data-testid=image]", "attr": "style"}))
        .await;
    assert_eq!(
        transforms,
        json!([
            "transform: scale(1.25) rotate(90deg);",
            "transform: scale(1.25) rotate(90deg);"
        ])
    );

    b.press("sup", "y").await;
    b.wait_text("sup", "notices", &format!("已同意 {}", r.request_id))
        .await;
    assert_eq!(state(&settled(&mut w).await), pb::RequestState::Approved);
    b.gone("sup", "review").await;
    b.wait_text("sup", "presence", "等待任务").await;
    b.no_page_errors("sup").await;
}

/// In English: the language switch is remembered by the browser; labels, the amount and the
/// dates follow it.
async fn the_console_speaks_english_when_asked() {
    let t = TestServer::start().await;
    let mut b = Browser::start(&t).await;
    b.ok(json!({"op": "open", "page": "sup", "principal": "sup-01", "lang": "en"}))
        .await;
    let who = b.text("sup", "who").await;
    assert!(
        who.contains("Supervisor") && who.contains("Level 3"),
        "{who}"
    );
    assert_eq!(b.text("sup", "attend").await, "Attend");
    b.click("sup", "attend").await;
    b.wait_text("sup", "connection", "Connected").await;
    submit_pictures(&t, "CON-9", "WDL-CASH").await;
    let offer = b.text("sup", "offer").await;
    assert!(
        offer.contains("New authorization request") && offer.contains("CN¥50,000.00"),
        "{offer}"
    );
    b.screenshot("sup", "supervisor-offer-en").await;
    // Back to Chinese, after leaving (the switch reloads the page, which would end the
    // Attend stream, so while attending it asks to leave first).
    b.click("sup", "leave").await;
    b.click("sup", "lang").await;
    b.wait_text("sup", "who", "授权主管").await;
    b.no_page_errors("sup").await;
}

/// Blind re-keying: the amount and account are withheld from the supervisor, who types them
/// from the voucher; a wrong amount is refused and recorded with an attempt left, and the
/// review stays; the right one approves.
async fn a_supervisor_types_the_withheld_fields_from_the_voucher() {
    let t = TestServer::start().await;
    let mut b = Browser::start(&t).await;
    // The test policy's "rekey" rule asks for the amount and the account, two attempts.
    let (r, mut w) = in_review(&t, &mut b, "CON-11", "REKEY").await;
    assert_eq!(b.text("sup", "amount").await, "（请按凭证影像录入）");
    let review = b.text("sup", "review").await;
    assert!(
        !review.contains("6222020200112233445"),
        "the account is withheld: {review}"
    );
    let fill = |selector: &str, value: &str| json!({"op": "fill", "page": "sup", "selector": tid(selector), "value": value});
    b.ok(fill("rekey-amount", "50000.01")).await;
    b.ok(fill("rekey-account", "6222 0202 0011 2233 445")).await;
    b.click("sup", "approve").await;
    b.wait_text("sup", "notices", "还可再录入 1 次").await;
    b.text("sup", "review").await;
    b.screenshot("sup", "supervisor-rekey").await;
    b.ok(fill("rekey-amount", "50,000.00")).await;
    b.click("sup", "approve").await;
    let done = settled(&mut w).await;
    assert_eq!(state(&done), pb::RequestState::Approved);
    let kinds = t.history_kinds(&r.request_id).await;
    assert!(
        kinds.contains(&"rekey_mismatched".to_string()),
        "the mistake is recorded: {kinds:?}"
    );
    b.no_page_errors("sup").await;
}

/// An offer left unanswered lapses: the console says so and drops it, and the request is
/// offered to another supervisor.
async fn an_offer_not_accepted_in_time_moves_on() {
    let t = TestServer::start().await;
    let mut b = Browser::start(&t).await;
    b.open("sup", "sup-01").await;
    b.click("sup", "attend").await;
    b.wait_text("sup", "connection", "已连接").await;
    let r = submit_pictures(&t, "CON-2", "WDL-CASH").await;
    b.text("sup", "offer").await;
    // sup-02 attends over gRPC only now, so the first offer was sup-01's.
    let mut other = Console::open(&t, "sup-02").await;
    t.clock.advance_ms(30_001);
    b.wait_text("sup", "notices", "超时未接受").await;
    b.gone("sup", "offer").await;
    let offer = other.next_offer().await;
    assert_eq!(
        offer.request_id, r.request_id,
        "offered to the other supervisor"
    );
    b.no_page_errors("sup").await;
}

/// Reject with a reason code and a comment, from the dialog; the teller sees both.
async fn a_supervisor_rejects_with_a_reason() {
    let t = TestServer::start().await;
    let mut b = Browser::start(&t).await;
    let (_, mut w) = in_review(&t, &mut b, "CON-3", "WDL-CASH").await;
    b.text("sup", "review").await;
    b.press("sup", "r").await;
    b.ok(json!({"op": "select", "page": "sup", "selector": tid("reason-code"), "value": "ID_MISMATCH"}))
        .await;
    b.ok(json!({"op": "fill", "page": "sup", "selector": tid("comment"), "value": "证件照片与客户本人不符"}))
        .await;
    b.screenshot("sup", "supervisor-reject").await;
    b.click("sup", "confirm").await;
    let done = settled(&mut w).await;
    assert_eq!(state(&done), pb::RequestState::Rejected);
    let decision = done.decision.expect("decision");
    assert_eq!(decision.reason_code, "ID_MISMATCH");
    assert_eq!(decision.comment, "证件照片与客户本人不符");
    assert_eq!(decision.supervisor_id, "sup-01");
    b.no_page_errors("sup").await;
}

/// Return for more with a note; the teller resubmits; the next offer shows the earlier return.
async fn a_return_and_the_tellers_resubmission() {
    let t = TestServer::start().await;
    let mut b = Browser::start(&t).await;
    let (r, mut w) = in_review(&t, &mut b, "CON-4", "WDL-CASH").await;
    b.text("sup", "review").await;
    b.press("sup", "t").await;
    b.ok(json!({"op": "select", "page": "sup", "selector": tid("reason-code"), "value": "IMAGE_UNCLEAR"}))
        .await;
    b.ok(json!({"op": "fill", "page": "sup", "selector": tid("comment"), "value": "凭证影像模糊，请重新扫描"}))
        .await;
    b.click("sup", "confirm").await;
    let returned = settled(&mut w).await;
    assert_eq!(state(&returned), pb::RequestState::Returned);

    t.teller("teller-01")
        .await
        .resubmit(pb::ResubmitRequest {
            request_id: r.request_id.clone(),
            images: vec![],
            remove_image_sha256: vec![],
            note: "已重新扫描凭证".into(),
        })
        .await
        .expect("resubmit");
    b.click("sup", "accept").await;
    let review = b.text("sup", "review").await;
    assert!(
        review.contains("IMAGE_UNCLEAR") && review.contains("凭证影像模糊，请重新扫描"),
        "the earlier return: {review}"
    );
    assert!(
        review.contains("已重新扫描凭证"),
        "the teller's answer: {review}"
    );
    b.ok(json!({"op": "imagesLoaded", "page": "sup", "selector": "img[data-testid=image]"}))
        .await;
    b.screenshot("sup", "supervisor-resubmitted").await;
    b.press("sup", "y").await;
    assert_eq!(state(&settled(&mut w).await), pb::RequestState::Approved);
    b.no_page_errors("sup").await;
}

/// A teller's certificate opens no supervisor screen: the page says the role may not use the
/// console, and the supervisor's calls are refused by the server whatever a page would try.
async fn a_tellers_certificate_cannot_open_the_supervisor_screen() {
    let t = TestServer::start().await;
    let mut b = Browser::start(&t).await;
    b.open("teller", "teller-01").await;
    let refused = b.text("teller", "refused").await;
    assert!(refused.contains("柜员"), "{refused}");
    let attend = b
        .ok(json!({"op": "count", "page": "teller", "selector": tid("attend")}))
        .await;
    assert_eq!(attend, json!(0), "no attend button for a teller");
    b.screenshot("teller", "teller-refused").await;
    // The same over gRPC: the role decides, not the page.
    let mut sup = t.supervisor("teller-01").await;
    let attend = sup.attend(pb::AttendRequest {}).await;
    assert_eq!(
        attend.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
}

/// The Attend stream drops (the server restarts on the same address); the console says so,
/// opens it again on its own, and the next offer arrives.
async fn a_dropped_connection_is_reopened_and_said_so() {
    let mut t = TestServer::start().await;
    // Restarts keep the port, so the page's origin stays the server's.
    t.config.listen = t.addr();
    let mut b = Browser::start(&t).await;
    b.open("sup", "sup-01").await;
    b.click("sup", "attend").await;
    b.wait_text("sup", "connection", "已连接").await;
    t.restart().await;
    b.wait_text("sup", "connection", "连接中断").await;
    b.wait_text("sup", "connection", "已连接").await;
    let r = submit_pictures(&t, "CON-5", "WDL-CASH").await;
    let offer = b.text("sup", "offer").await;
    assert!(offer.contains("WDL-CASH"), "{offer}");
    let _ = r;
    b.no_page_errors("sup").await;
}

/// The duty manager sees the queue and who attends, pauses a supervisor (offers to them stop,
/// their console says who paused them) and resumes them (the waiting request is offered).
async fn the_duty_manager_pauses_a_supervisor_and_offers_stop() {
    let t = TestServer::start().await;
    let mut b = Browser::start(&t).await;
    b.open("sup", "sup-01").await;
    b.click("sup", "attend").await;
    b.wait_text("sup", "connection", "已连接").await;
    b.open("admin", "admin-01").await;
    b.wait_text("admin", "state-sup-01", "在线").await;
    let hash = b.text("admin", "policy-sha256").await;
    let policy = t
        .admin()
        .await
        .get_policy(pb::GetPolicyRequest {})
        .await
        .expect("policy")
        .into_inner();
    assert_eq!(hash, policy.sha256, "the policy in force, by its hash");

    b.click("admin", "pause-sup-01").await;
    b.wait_text("admin", "state-sup-01", "暂停").await;
    b.wait_text("sup", "presence", "已暂停").await;
    b.wait_text("sup", "notices", "admin-01").await;
    let r = submit_pictures(&t, "CON-6", "WDL-CASH").await;
    // The queue as of after the submission: had sup-01 been offered it, it would say so.
    let q = t.queue_status().await;
    assert_eq!(
        (q.queued, q.offered),
        (1, 0),
        "nothing offered to a paused supervisor"
    );
    b.wait_text("admin", "queued", "1").await;
    assert_eq!(
        b.ok(json!({"op": "count", "page": "sup", "selector": tid("offer")}))
            .await,
        json!(0)
    );
    b.screenshot("admin", "duty-manager").await;

    b.click("admin", "resume-sup-01").await;
    let offer = b.text("sup", "offer").await;
    assert!(offer.contains("WDL-CASH"), "{offer}");
    let recorded: Vec<Value> = t
        .engine_records()
        .await
        .into_iter()
        .filter(|e| e["type"] == "supervisor_paused")
        .map(|e| e["paused"].clone())
        .collect();
    assert_eq!(recorded, [json!(true), json!(false)], "both recorded");
    let _ = r;
    b.no_page_errors("sup").await;
    b.no_page_errors("admin").await;
}

/// The auditor finds a decided request, reads its timeline and images, and verifies it in the
/// browser against the pinned ledger key; a bundle with one record changed is refused at the
/// inclusion proof.
async fn an_auditor_finds_and_verifies_a_request_and_a_tampered_bundle_is_refused() {
    use base64::Engine as _;
    let t = TestServer::start().await;
    let mut sup = Console::open(&t, "sup-01").await;
    let r = submit_pictures(&t, "CON-7", "WDL-CASH").await;
    let offer = sup.next_offer().await;
    sup.approve(&offer).await;

    let mut b = Browser::start(&t).await;
    b.open("audit", "audit-01").await;
    b.ok(json!({"op": "fill", "page": "audit", "selector": tid("q-teller"), "value": "teller-01"}))
        .await;
    b.ok(json!({"op": "select", "page": "audit", "selector": tid("q-outcome"), "value": "4"}))
        .await;
    b.click("audit", "search").await;
    b.click("audit", &format!("row-{}", r.request_id)).await;
    let timeline = b.text("audit", "timeline").await;
    for kind in ["submitted", "offered", "accepted", "decided"] {
        assert!(
            timeline.contains(kind),
            "{kind} in the timeline: {timeline}"
        );
    }
    assert_eq!(b.text("audit", "detail-state").await, "已同意");
    let widths = b
        .ok(json!({"op": "imagesLoaded", "page": "audit", "selector": "img[data-testid=audit-image]", "count": 2}))
        .await;
    assert_eq!(
        widths.as_array().map(Vec::len),
        Some(2),
        "both images: {widths}"
    );

    let key = std::fs::read_to_string(t.pki.join("ledger.pub")).expect("ledger.pub");
    b.ok(json!({"op": "fill", "page": "audit", "selector": tid("pubkey"), "value": key.trim()}))
        .await;
    b.click("audit", "verify").await;
    let verdict = b.wait_text("audit", "verdict", "验证").await;
    assert!(verdict.contains("验证通过"), "{verdict}");
    b.screenshot("audit", "auditor-verified").await;

    // The same bundle with the customer's name changed in the first record.
    let bundle = t
        .auditor()
        .await
        .export_proof(pb::ExportProofRequest {
            request_id: r.request_id.clone(),
        })
        .await
        .expect("export")
        .into_inner()
        .bundle;
    let mut doc: Value = serde_json::from_slice(&bundle).expect("bundle JSON");
    let b64 = base64::engine::general_purpose::STANDARD;
    let first = doc["records"][0]["record"]
        .as_str()
        .expect("record")
        .to_owned();
    let text = String::from_utf8(b64.decode(first).expect("base64")).expect("UTF-8");
    assert!(text.contains("Zhao Min"));
    doc["records"][0]["record"] = json!(b64.encode(text.replace("Zhao Min", "Zhao Mun")));
    let tampered = b64.encode(serde_json::to_vec(&doc).expect("JSON"));
    b.ok(json!({"op": "upload", "page": "audit", "selector": tid("bundle-file"), "file": "tampered.json", "base64": tampered}))
        .await;
    let verdict = b.wait_text("audit", "verdict", "未通过").await;
    assert!(verdict.contains("验证未通过"), "{verdict}");
    let steps = b.text("audit", "steps").await;
    assert!(
        steps.contains("✓ 检查点签名") && steps.contains("✗ 记录包含证明"),
        "the signature holds, the changed record's proof fails: {steps}"
    );
    b.screenshot("audit", "auditor-tampered").await;
    // Whole parts changed rather than bytes: each fails at its own step.
    let untouched: Value = serde_json::from_slice(&bundle).expect("bundle JSON");
    type Change<'a> = &'a dyn Fn(&mut Value);
    let variants: [(&str, Change); 3] = [
        ("✗ 证明文件属于本请求", &|d| {
            d["request_id"] = json!("0123456789abcdef0123456789abcdef")
        }),
        ("✗ 记录属于本请求且顺序正确", &|d| {
            d["records"].as_array_mut().expect("records").remove(0);
        }),
        ("✗ 影像清单与记录所列一致", &|d| {
            d["images"].as_array_mut().expect("images").pop();
        }),
    ];
    for (i, (step, change)) in variants.iter().enumerate() {
        let mut d = untouched.clone();
        change(&mut d);
        let file = b64.encode(serde_json::to_vec(&d).expect("JSON"));
        b.ok(json!({"op": "upload", "page": "audit", "selector": tid("bundle-file"), "file": format!("variant-{i}.json"), "base64": file}))
            .await;
        b.wait_text("audit", "verdict", "未通过").await;
        let steps = b.text("audit", "steps").await;
        assert!(steps.contains(step), "{step} in: {steps}");
    }
    // And the untouched bundle, loaded as a file, passes: the failure above is the change.
    b.ok(json!({"op": "upload", "page": "audit", "selector": tid("bundle-file"), "file": "bundle.json", "base64": b64.encode(&bundle)}))
        .await;
    b.wait_text("audit", "verdict", "验证通过").await;
    b.no_page_errors("audit").await;
}

/// The day's statistics as charts: the counts by outcome, the volume by hour (whose bars add
/// up to the day's submissions), the times by hour, and the rejection and return rates by
/// branch.
async fn the_days_statistics_are_drawn() {
    let t = TestServer::start().await;
    let mut sup = Console::open(&t, "sup-01").await;
    for (serial, decision) in [
        ("ST-1", pb::Decision::Approve),
        ("ST-2", pb::Decision::Approve),
        ("ST-3", pb::Decision::Reject),
        ("ST-4", pb::Decision::Return),
    ] {
        submit_pictures(&t, serial, "WDL-CASH").await;
        let offer = sup.next_offer().await;
        sup.accept(&offer).await;
        sup.decide(&offer, decision, "NO_GOOD", "as decided")
            .await
            .expect("decide");
    }
    let mut b = Browser::start(&t).await;
    b.open("audit", "audit-01").await;
    b.click("audit", "tab_stats").await;
    b.wait_text("audit", "stat-requests", "4").await;
    assert_eq!(b.text("audit", "stat-approved").await, "2");
    assert_eq!(b.text("audit", "stat-rejected").await, "1");
    assert_eq!(b.text("audit", "stat-returned").await, "1");
    let values = b
        .ok(json!({"op": "attrs", "page": "audit", "selector": "[data-testid=chart-volume] rect", "attr": "data-value"}))
        .await;
    let values: Vec<u64> = values
        .as_array()
        .expect("bars")
        .iter()
        .map(|v| v.as_str().and_then(|s| s.parse().ok()).expect("a count"))
        .collect();
    assert_eq!(values.len(), 24, "a bar per hour");
    assert_eq!(values.iter().sum::<u64>(), 4, "the hours add up to the day");
    let rejection = b
        .ok(json!({"op": "attrs", "page": "audit", "selector": "[data-testid=chart-rejection] rect", "attr": "data-value"}))
        .await;
    assert_eq!(
        rejection,
        json!(["0.3333333333333333"]),
        "one branch, 1 of 3 rejected"
    );
    let returns = b
        .ok(json!({"op": "attrs", "page": "audit", "selector": "[data-testid=chart-return] rect", "attr": "data-value"}))
        .await;
    assert_eq!(returns, json!(["0.25"]), "1 of the branch's 4 returned");
    b.screenshot("audit", "statistics").await;
    b.no_page_errors("audit").await;
}

/// The reviewer opens the queue of requests drawn for after-the-fact review, reads one, and
/// flags it with what was found; the finding is recorded.
async fn a_reviewer_flags_a_drawn_approval() {
    let t = TestServer::start().await;
    let mut sup = Console::open(&t, "sup-01").await;
    // The test policy's "review-all" rule draws every approval of code REVIEWED.
    let r = submit_pictures(&t, "CON-8", "REVIEWED").await;
    let offer = sup.next_offer().await;
    sup.approve(&offer).await;

    let mut b = Browser::start(&t).await;
    b.open("review", "review-01").await;
    b.click("review", &format!("review-row-{}", r.request_id))
        .await;
    b.wait_text("review", "finding", "同意的交易按比例随机抽中")
        .await;
    b.ok(json!({"op": "fill", "page": "review", "selector": tid("finding-comment"), "value": "凭证金额与系统金额不一致"}))
        .await;
    b.screenshot("review", "reviewer").await;
    b.click("review", "flag-review").await;
    let finding = b.wait_text("review", "finding", "已标记问题").await;
    assert!(finding.contains("review-01"), "{finding}");
    let flagged = t
        .reviewer("review-01")
        .await
        .list_reviews(pb::ListReviewsRequest {
            status: pb::ReviewStatus::Flagged as i32,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(flagged.requests.len(), 1);
    assert_eq!(flagged.requests[0].request_id, r.request_id);
    let history = t.history(&r.request_id).await;
    let reviewed = history
        .iter()
        .find(|e| e["event"]["type"] == "reviewed")
        .expect("a reviewed record");
    assert_eq!(reviewed["actor"], "review-01");
    assert_eq!(reviewed["event"]["comment"], "凭证金额与系统金额不一致");
    b.no_page_errors("review").await;
}

/// On a standby, a supervisor's console says where the leader is, and an auditor's works
/// (audit reads are served there).
async fn a_standby_sends_supervisors_to_the_leader_and_serves_auditors() {
    let one = TestServer::start().await;
    let mut sup = Console::open(&one, "sup-01").await;
    let r = submit_pictures(&one, "CON-10", "WDL-CASH").await;
    let offer = sup.next_offer().await;
    sup.approve(&offer).await;
    let two = one.join("node-2").await;
    let mut b = Browser::start(&two).await;
    b.open("sup", "sup-01").await;
    b.wait_text("sup", "standby", "node-1.test:7443").await;
    assert_eq!(
        b.ok(json!({"op": "count", "page": "sup", "selector": tid("attend")}))
            .await,
        json!(0)
    );
    b.open("audit", "audit-01").await;
    b.click("audit", "search").await;
    b.click("audit", &format!("row-{}", r.request_id)).await;
    assert_eq!(b.text("audit", "detail-state").await, "已同意");
    b.no_page_errors("sup").await;
    b.no_page_errors("audit").await;
}

// Only the postgres backend has standbys.
crate::postgres_only!(a_standby_sends_supervisors_to_the_leader_and_serves_auditors);

/// `demo --console` keeps a server with simulated tellers: it writes each principal's PKCS#12
/// file, and requests arrive in the queue for a person to work, with real pictures.
async fn the_console_demo_keeps_tellers_submitting() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args([
            "demo",
            "--console",
            "--listen",
            "127.0.0.1:0",
            "--every-ms",
            "200",
            "--data",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run countersign demo --console");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr: std::net::SocketAddr = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the demo starts within 60 s")
            .expect("read")
            .expect("the demo printed where it serves");
        if let Some(rest) = line.strip_prefix("Countersign console demo: the server on ") {
            break rest.split(',').next().unwrap().parse().expect("an address");
        }
    };
    let pki = dir.path().join("pki");
    for id in ["sup-01", "admin-01", "audit-01"] {
        assert!(pki.join(format!("{id}.p12")).exists(), "{id}.p12 written");
    }
    let mut sup = countersign::tools::client::supervisor(addr, &pki, "sup-01")
        .await
        .expect("supervisor");
    let mut offers = sup
        .attend(pb::AttendRequest {})
        .await
        .expect("attend")
        .into_inner();
    let offer = loop {
        let m = tokio::time::timeout(Duration::from_secs(30), offers.message())
            .await
            .expect("an offer within 30 s")
            .expect("attend")
            .expect("open");
        if let Some(pb::attend_response::Event::Offer(o)) = m.event {
            break o;
        }
    };
    let r = offer.request.expect("request");
    let image = sup
        .get_offer_image(pb::GetOfferImageRequest {
            request_id: offer.request_id.clone(),
            sha256: r.images[0].sha256.clone(),
        })
        .await
        .expect("image")
        .into_inner();
    assert_eq!(image.media_type, "image/png");
    assert!(image.content.starts_with(b"\x89PNG"), "a real picture");
    child.kill().await.expect("stop the demo");
}

// The console demo runs the embedded backend, as `cargo run -- demo` does.
crate::embedded_only!(the_console_demo_keeps_tellers_submitting);

crate::on_both_backends!(
    a_supervisor_types_the_withheld_fields_from_the_voucher,
    the_console_speaks_english_when_asked,
    a_reviewer_flags_a_drawn_approval,
    the_days_statistics_are_drawn,
    an_auditor_finds_and_verifies_a_request_and_a_tampered_bundle_is_refused,
    the_duty_manager_pauses_a_supervisor_and_offers_stop,
    a_supervisor_approves_from_the_console_and_the_teller_sees_it,
    an_offer_not_accepted_in_time_moves_on,
    a_supervisor_rejects_with_a_reason,
    a_return_and_the_tellers_resubmission,
    a_tellers_certificate_cannot_open_the_supervisor_screen,
    a_dropped_connection_is_reopened_and_said_so,
);
