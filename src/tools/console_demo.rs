//! `countersign demo --console`: a server that keeps running, with simulated tellers at two
//! branches submitting requests (real voucher pictures, amounts across the sample policy's
//! levels) at a steady pace, so a person can open the browser console as a supervisor and
//! work the queue, as the duty manager watch it, or as an auditor check what was decided.
//! Tellers resubmit what is returned to them; each keeps at most a few requests open, so an
//! unattended queue does not grow without end. Runs until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::{Rng as _, SeedableRng as _};

use crate::api::pb;
use crate::tools::{client, pki, png};

/// Requests one simulated teller keeps open at most.
const OPEN_PER_TELLER: usize = 3;

/// What a teller sends: code, amount range in yuan (the sample policy asks level 2 from
/// CNY 50,000 and two level-3 approvals from CNY 500,000), the note.
const KINDS: &[(&str, i64, i64, &str)] = &[
    ("WDL-CASH", 20_000, 180_000, "客户取现，用途：购房首付"),
    ("TRF-OUT", 60_000, 900_000, "对公转账，客户已核对收款人"),
    (
        "ACC-CLOSE",
        100,
        5_000,
        "客户申请销户，结清余额，已收回卡片",
    ),
    (
        "REV-TXN",
        1_000,
        90_000,
        "冲正：柜员录入金额错误，客户在场确认",
    ),
];

/// Names and resident ID numbers (valid GB 11643 check digits, not real people).
const CUSTOMERS: &[(&str, &str)] = &[
    ("张伟", "11010519491231002X"),
    ("王芳", "110105198001011238"),
    ("李娜", "31010419750615234X"),
    ("刘洋", "440301199003084568"),
];

pub async fn run(data: PathBuf, listen: SocketAddr, every: Duration) -> anyhow::Result<()> {
    let pki_dir = data.join("pki");
    if !pki_dir.join("ca.pem").exists() {
        pki::init_for_people(&pki_dir)?;
    }
    let server = super::demo::sample_server(&pki_dir, &listen.to_string(), "").await?;
    let addr = server.addr;
    let ledger_pub = std::fs::read_to_string(pki_dir.join("ledger.pub"))
        .context("read ledger.pub")?
        .trim()
        .to_owned();
    println!(
        "Countersign console demo: the server on {addr}, data in {}",
        data.display()
    );
    println!();
    println!(
        "Open https://localhost:{}/ in a browser that holds a principal's certificate:",
        addr.port()
    );
    println!(
        "  import {}/<id>.p12 (password \"{}\"), and trust {}/ca.pem or accept the warning.",
        pki_dir.display(),
        pki::BROWSER_FILE_PASSWORD,
        pki_dir.display()
    );
    println!("  sup-01 … sup-05: supervisors; admin-01: the duty manager; audit-01: an auditor.");
    println!("  The auditor's pinned ledger key: {ledger_pub}");
    println!();
    println!(
        "Tellers teller-01, teller-02 (BR-0101) and teller-03 (BR-0202) submit a request every \
         {:.1} s, each keeping at most {OPEN_PER_TELLER} open. Ctrl-C stops.",
        every.as_secs_f64()
    );

    let mut tellers = Vec::new();
    for (i, id) in ["teller-01", "teller-02", "teller-03"]
        .into_iter()
        .enumerate()
    {
        let ch = client::channel(addr, &pki_dir, id).await?;
        // Staggered, so the three do not submit at the same instant.
        let start = every.mul_f64(i as f64 / 3.0);
        tellers.push(tokio::spawn(teller(ch, id, every * 3, start)));
    }
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    for t in tellers {
        t.abort();
    }
    server.shutdown().await?;
    Ok(())
}

/// One teller: submits every `every` (after `start`) while fewer than `OPEN_PER_TELLER` of
/// theirs are open, watches each, and resubmits what is returned.
async fn teller(ch: tonic::transport::Channel, id: &'static str, every: Duration, start: Duration) {
    tokio::time::sleep(start).await;
    let open = Arc::new(tokio::sync::Semaphore::new(OPEN_PER_TELLER));
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let mut tick = tokio::time::interval(every);
    for n in 1u64.. {
        tick.tick().await;
        let Ok(permit) = open.clone().try_acquire_owned() else {
            continue;
        };
        let request = submission(&mut rng, id, n);
        let mut c = client::teller_on(ch.clone());
        match c.submit(request).await {
            Ok(r) => {
                let Some(r) = r.into_inner().request else {
                    continue;
                };
                tokio::spawn(follow(c, r.request_id, permit));
            }
            Err(e) => eprintln!("{id}: submit refused: {}", e.message()),
        }
    }
}

/// Watches one request to its end, resubmitting it (a rescan) when it is returned.
async fn follow(
    mut c: pb::teller_service_client::TellerServiceClient<tonic::transport::Channel>,
    request_id: String,
    _open: tokio::sync::OwnedSemaphorePermit,
) {
    let Ok(watch) = c
        .watch(pb::WatchRequest {
            request_id: request_id.clone(),
            after_version: None,
        })
        .await
    else {
        return;
    };
    let mut watch = watch.into_inner();
    while let Ok(Some(m)) = watch.message().await {
        let Some(r) = m.request else { continue };
        match pb::RequestState::try_from(r.state) {
            Ok(pb::RequestState::Returned) => {
                // The teller rescans the voucher and sends it again, after a moment.
                tokio::time::sleep(Duration::from_secs(5)).await;
                let rescan = pb::ImageUpload {
                    kind: pb::ImageKind::Voucher as i32,
                    media_type: "image/png".into(),
                    content: png::voucher(640, 400, rand::rng().random()),
                };
                let _ = c
                    .resubmit(pb::ResubmitRequest {
                        request_id: request_id.clone(),
                        images: vec![rescan],
                        remove_image_sha256: Vec::new(),
                        note: "已按要求重新扫描凭证".into(),
                    })
                    .await;
            }
            Ok(
                pb::RequestState::Approved
                | pb::RequestState::Rejected
                | pb::RequestState::Cancelled
                | pb::RequestState::Expired,
            ) => return,
            _ => {}
        }
    }
}

fn submission(rng: &mut impl rand::Rng, teller: &str, n: u64) -> pb::SubmitRequest {
    let (code, low, high, note) = KINDS[rng.random_range(0..KINDS.len())];
    let yuan = rng.random_range(low..high);
    let (name, number) = CUSTOMERS[rng.random_range(0..CUSTOMERS.len())];
    let mut r = crate::tools::workload::submit_request(
        &format!("{teller}-C{n:06}"),
        code,
        yuan * 100,
        "6222020200112233445",
    );
    if let Some(c) = r.customer.as_mut() {
        c.name = name.into();
        c.document_number = number.into();
    }
    r.note = note.into();
    r.images = vec![
        pb::ImageUpload {
            kind: pb::ImageKind::Voucher as i32,
            media_type: "image/png".into(),
            content: png::voucher(640, 400, rng.random()),
        },
        pb::ImageUpload {
            kind: pb::ImageKind::IdFront as i32,
            media_type: "image/png".into(),
            content: png::voucher(428, 270, rng.random()),
        },
    ];
    r
}
