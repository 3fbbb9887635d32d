//! `countersign demo`: a real server in a temporary directory, real mTLS clients, and one
//! walk through the lifecycle a branch sees every day: submit, offer to an independent
//! supervisor, return for a better scan, resubmit, approve; a second request rejected; then
//! the auditor reads the history back from the ledger.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::{RngCore, SeedableRng};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::api::pb::{self, supervisor_service_client::SupervisorServiceClient};
use crate::client;
use crate::config::Config;
use crate::engine::SystemClock;

/// A minimal JPEG header followed by `len` random bytes: enough for the image sniffer, which
/// judges the format by its magic bytes.
pub fn fake_jpeg(len: usize) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
    ];
    let mut body = vec![0u8; len];
    rand::rng().fill_bytes(&mut body);
    v.extend_from_slice(&body);
    v
}

pub async fn run(keep: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("create demo directory")?;
    let dir = keep.unwrap_or_else(|| tmp.path().to_owned());
    let pki = dir.join("pki");
    crate::pki::init(&pki)?;
    let config_text = crate::config::SAMPLE
        .replace("listen = \"127.0.0.1:7443\"", "listen = \"127.0.0.1:0\"")
        .replace("data_dir = \"data\"", "data_dir = \"../data\"")
        .replace("offer_timeout_ms = 30000", "offer_timeout_ms = 5000");
    let config = Config::parse(&config_text, &pki)?;
    let server = crate::server::start(
        &config,
        Arc::new(SystemClock),
        Box::new(rand_chacha::ChaCha20Rng::from_os_rng()),
    )
    .await?;
    let addr = server.addr;
    println!(
        "Countersign demo: server on {addr} (mutual TLS), data in {}\n",
        dir.display()
    );

    // Two supervisors sign in: one at the authorization centre, one at branch BR-0202.
    let mut sup_a = client::supervisor(addr, &pki, "sup-01").await?;
    let mut sup_b = client::supervisor(addr, &pki, "sup-04").await?;
    let offers_a = sup_a.attend(pb::AttendRequest {}).await?.into_inner();
    let offers_b = sup_b.attend(pb::AttendRequest {}).await?.into_inner();
    let mut consoles = vec![("sup-01", sup_a, offers_a), ("sup-04", sup_b, offers_b)];
    println!("sup-01 (CENTRE, level 2) and sup-04 (BR-0202, level 1) are attending");

    // A teller at BR-0101 submits a large cash withdrawal.
    let mut teller = client::teller(addr, &pki, "teller-01").await?;
    let submitted = teller
        .submit(submit_request(
            "BR0101-20261128-0001",
            "WDL-CASH",
            8_000_000,
            "6222020200112233445",
        ))
        .await?
        .into_inner();
    let request = submitted
        .request
        .context("submit answered without a request")?;
    let id = request.request_id.clone();
    println!("teller-01 (BR-0101) submitted {id}: CNY 80,000.00 cash withdrawal");
    let mut watch = teller
        .watch(pb::WatchRequest {
            request_id: id.clone(),
        })
        .await?
        .into_inner();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(Ok(w)) = watch.next().await {
            let r = w.request.unwrap_or_default();
            let state = pb::RequestState::try_from(r.state).unwrap_or_default();
            println!(
                "  [teller-01 watch] {id_short} is {}",
                state.as_str_name(),
                id_short = &r.request_id[..8]
            );
            seen.push(state);
        }
        seen
    });

    // Whoever is offered it returns it: the voucher scan is unreadable.
    let (who, offer) = next_offer(&mut consoles).await?;
    println!(
        "offered to {who} (drawn from {} eligible), epoch {}",
        offer.candidate_pool_size, offer.epoch
    );
    let console = &mut consoles
        .iter_mut()
        .find(|c| c.0 == who)
        .context("console")?
        .1;
    console
        .accept(pb::AcceptRequest {
            request_id: offer.request_id.clone(),
            epoch: offer.epoch,
        })
        .await?;
    let first_image = offer
        .request
        .as_ref()
        .and_then(|r| r.images.first())
        .context("offer without images")?;
    let image = console
        .get_offer_image(pb::GetOfferImageRequest {
            request_id: offer.request_id.clone(),
            sha256: first_image.sha256.clone(),
        })
        .await?
        .into_inner();
    println!(
        "{who} viewed the voucher ({} bytes, {})",
        image.content.len(),
        image.media_type
    );
    console
        .decide(pb::DecideRequest {
            request_id: offer.request_id.clone(),
            epoch: offer.epoch,
            decision: pb::Decision::Return as i32,
            reason_code: "IMG_UNREADABLE".into(),
            comment: "voucher signature is cut off; please rescan".into(),
        })
        .await?;
    println!("{who} returned it: IMG_UNREADABLE");

    // The teller rescans the voucher and resubmits.
    teller
        .resubmit(pb::ResubmitRequest {
            request_id: offer.request_id.clone(),
            images: vec![pb::ImageUpload {
                kind: pb::ImageKind::Voucher as i32,
                media_type: "image/jpeg".into(),
                content: fake_jpeg(48 * 1024),
            }],
            remove_image_sha256: vec![first_image.sha256.clone()],
            note: "voucher rescanned at 300 dpi".into(),
        })
        .await?;
    println!("teller-01 resubmitted with a new voucher scan");
    let (who, offer) = next_offer(&mut consoles).await?;
    let console = &mut consoles
        .iter_mut()
        .find(|c| c.0 == who)
        .context("console")?
        .1;
    console
        .accept(pb::AcceptRequest {
            request_id: offer.request_id.clone(),
            epoch: offer.epoch,
        })
        .await?;
    let decided = console
        .decide(pb::DecideRequest {
            request_id: offer.request_id.clone(),
            epoch: offer.epoch,
            decision: pb::Decision::Approve as i32,
            reason_code: String::new(),
            comment: "ID matched, signature matches the specimen".into(),
        })
        .await?
        .into_inner();
    let state = decided.request.map(|r| r.state).unwrap_or_default();
    println!(
        "{who} approved it (state {})",
        pb::RequestState::try_from(state)
            .unwrap_or_default()
            .as_str_name()
    );
    let seen = tokio::time::timeout(Duration::from_secs(5), watcher).await??;
    if seen.last() != Some(&pb::RequestState::Approved) {
        bail!("the teller's watch did not end on APPROVED: {seen:?}");
    }

    // A teller at BR-0202 asks for a reversal; sup-04 works at BR-0202, so only sup-01 may
    // take it. It is rejected.
    let mut teller3 = client::teller(addr, &pki, "teller-03").await?;
    let r2 = teller3
        .submit(submit_request(
            "BR0202-20261128-0042",
            "REV-TXN",
            1_250_000,
            "6222020200998877665",
        ))
        .await?
        .into_inner()
        .request
        .context("no request")?;
    println!(
        "\nteller-03 (BR-0202) submitted {}: reversal of CNY 12,500.00",
        r2.request_id
    );
    let (who, offer) = next_offer(&mut consoles).await?;
    println!(
        "offered to {who} (drawn from {} eligible: sup-04 is of the same branch)",
        offer.candidate_pool_size
    );
    let console = &mut consoles
        .iter_mut()
        .find(|c| c.0 == who)
        .context("console")?
        .1;
    console
        .accept(pb::AcceptRequest {
            request_id: offer.request_id.clone(),
            epoch: offer.epoch,
        })
        .await?;
    console
        .decide(pb::DecideRequest {
            request_id: offer.request_id.clone(),
            epoch: offer.epoch,
            decision: pb::Decision::Reject as i32,
            reason_code: "NO_ORIGINAL_TXN".into(),
            comment: "the original transaction was already reversed".into(),
        })
        .await?;
    println!("{who} rejected it: NO_ORIGINAL_TXN");

    // The auditor reads the first request's history straight from the ledger.
    let mut auditor = client::auditor(addr, &pki, "audit-01").await?;
    let history = auditor
        .get_request(pb::GetRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await?
        .into_inner();
    println!("\naudit-01 reads the history of {}:", request.request_id);
    for e in &history.events {
        println!("  #{:<3} {:<16} by {}", e.index, e.kind, e.actor_id);
    }
    if let Some(e) = history.events.iter().rev().find(|e| e.kind == "decided") {
        println!(
            "\nthe last decision's ledger record, exactly as stored:\n  {}",
            String::from_utf8_lossy(&e.record)
        );
    }
    drop(consoles);
    server.shutdown().await?;
    println!(
        "\ndemo finished: every step above went through gRPC with mutual TLS and is in the ledger"
    );
    Ok(())
}

async fn next_offer(
    consoles: &mut [(
        &'static str,
        SupervisorServiceClient<Channel>,
        tonic::Streaming<pb::AttendResponse>,
    )],
) -> anyhow::Result<(&'static str, pb::Offer)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (who, _, stream) in consoles.iter_mut() {
            match tokio::time::timeout(Duration::from_millis(50), stream.message()).await {
                Err(_) => continue,
                Ok(Err(status)) => return Err(status.into()),
                Ok(Ok(None)) => bail!("{who}'s Attend stream ended"),
                Ok(Ok(Some(msg))) => {
                    if let Some(pb::attend_response::Event::Offer(o)) = msg.event {
                        return Ok((who, o));
                    }
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no offer arrived within 10 s");
        }
    }
}

/// A submission with a voucher and the front of a PRC resident ID card.
pub fn submit_request(
    serial: &str,
    code: &str,
    minor_units: i64,
    account: &str,
) -> pb::SubmitRequest {
    pb::SubmitRequest {
        teller_serial: serial.into(),
        transaction: Some(pb::Transaction {
            code: code.into(),
            amount: Some(pb::Money {
                minor_units,
                currency: "CNY".into(),
            }),
            account: account.into(),
            counterparty: String::new(),
            attributes: [("channel".to_string(), "counter".to_string())]
                .into_iter()
                .collect(),
        }),
        customer: Some(pb::CustomerIdentity {
            document_type: pb::DocumentType::PrcResidentId as i32,
            document_number: "11010519491231002X".into(),
            name: "Zhao Min".into(),
            expiry_date: "2036-05-01".into(),
            verification: pb::IdVerification::Matched as i32,
        }),
        images: vec![
            pb::ImageUpload {
                kind: pb::ImageKind::Voucher as i32,
                media_type: "image/jpeg".into(),
                content: fake_jpeg(32 * 1024),
            },
            pb::ImageUpload {
                kind: pb::ImageKind::IdFront as i32,
                media_type: "image/jpeg".into(),
                content: fake_jpeg(16 * 1024),
            },
        ],
        note: "customer is a long-standing client; withdrawal for a house deposit".into(),
    }
}
