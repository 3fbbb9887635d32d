//! Ledger benchmarks (issue: tamper-evident ledger). Prints figures; asserts nothing about time.
//!
//! `cargo bench --bench ledger` runs, in a temporary directory on this machine's disk:
//! 1. appending 300-byte records through the appender, group commit and fdatasync included,
//!    with the Merkle tree updated on the way (records/s);
//! 2. `ledger verify` over a data directory of realistic records (requests of four records);
//! 3. inclusion proofs in a tree of 10,000,000 leaves (µs per proof).
//!
//! `BENCH_SCALE=0.1` shrinks every size for a quick run.

// Benchmarks and tests time real elapsed time; only the engine keeps its clock reads in
// `engine::clock` (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use countersign::domain::*;
use countersign::ledger::{merkle, record};
use countersign::storage::embedded::{DurableState, Ledger};

fn scale(n: u64) -> u64 {
    let s: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64) * s).max(1.0) as u64
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!("| benchmark | size | time | rate |");
    println!("|---|---|---|---|");
    append(dir.path(), scale(1_000_000)).await;
    verify(dir.path(), scale(1_000_000)).await;
    proofs(scale(10_000_000));
}

async fn wait(durable: &mut countersign::storage::embedded::Durable, n: u64) {
    durable
        .wait_for(|s| matches!(s, DurableState::Count(c) if *c >= n))
        .await
        .unwrap();
}

async fn append(base: &std::path::Path, n: u64) {
    let (_ledger, mut app, mut durable) = Ledger::open(&base.join("append"), 64 << 20).unwrap();
    let payload = vec![b'x'; 300];
    let t = Instant::now();
    let mut sent = 0;
    while sent < n {
        // The engine hands the writer whatever it appended while the last batch was syncing;
        // here, batches of up to 4096 records, flushed while earlier ones are still in flight.
        let batch = 4096.min(n - sent);
        for _ in 0..batch {
            app.append(payload.clone());
        }
        app.flush().unwrap();
        sent += batch;
    }
    wait(&mut durable, n).await;
    let s = t.elapsed().as_secs_f64();
    println!(
        "| append 300 B records, group commit + fdatasync + Merkle | {n} | {s:.2} s | {:.0} records/s |",
        n as f64 / s
    );
}

fn submission(i: u64, images: &[ImageRef]) -> Submission {
    Submission {
        serial: TellerSerial::new(format!("S{i}")),
        transaction: Transaction {
            code: "WDL-CASH".into(),
            amount: Money {
                minor_units: 100_000 + i as i64,
                currency: "CNY".into(),
            },
            account: "6222020200112233445".into(),
            counterparty: None,
            attributes: Default::default(),
        },
        customer: CustomerIdentity {
            document_type: DocumentType::PrcResidentId,
            document_number: "11010519491231002X".into(),
            name: "Zhao Min".into(),
            expiry_date: Some("2036-05-01".into()),
            verification: IdVerification::Matched,
        },
        images: images.to_vec(),
        note: "bench".into(),
    }
}

async fn verify(base: &std::path::Path, n: u64) {
    let data = base.join("verify");
    let store = countersign::storage::embedded::ImageStore::open(&data.join("images"), 16).unwrap();
    let mut images: Vec<ImageRef> = Vec::new();
    for b in [
        b"\xff\xd8\xff voucher".as_slice(),
        b"\xff\xd8\xff id front".as_slice(),
    ] {
        images.push(ImageRef {
            kind: ImageKind::Voucher,
            media_type: MediaType::Jpeg,
            hash: store.put(b.to_vec()).await.unwrap(),
            size: b.len() as u64,
        });
    }
    let (_ledger, mut app, mut durable) = Ledger::open(&data.join("ledger"), 64 << 20).unwrap();
    let mut written = 0;
    let mut bytes = 0u64;
    let mut i = 0u64;
    while written < n {
        let id = RequestId::from_random((i as u128).to_le_bytes());
        let sup = PrincipalId::new("sup-01");
        let events = [
            Event::Submitted {
                teller: PrincipalId::new("teller-01"),
                branch: BranchId::new("BR-0101"),
                submission: submission(i, &images),
                requirements: Requirements {
                    rule: "cash-withdrawal-cny-large".into(),
                    policy_sha256: "0".repeat(64),
                    level: 2,
                    approvals: 1,
                    independent: true,
                    priority: 2,
                    offer_timeout_ms: 30_000,
                    decision_deadline_ms: 3_600_000,
                    escalate_after_ms: Some(900_000),
                    escalate_after_declines: Some(3),
                    rekey: Vec::new(),
                    rekey_attempts: 0,
                    fallback: false,
                    review_percent: 0,
                },
            },
            Event::Offered {
                supervisor: sup.clone(),
                epoch: 1,
                pool_size: 3,
                accept_by: Timestamp(2),
            },
            Event::Accepted {
                supervisor: sup.clone(),
                epoch: 1,
            },
            Event::Decided {
                supervisor: sup.clone(),
                epoch: 1,
                verdict: Verdict {
                    decision: Decision::Approve,
                    reason_code: String::new(),
                    comment: "ok".into(),
                },
            },
        ];
        for e in events {
            let r = Record {
                request: id.clone(),
                at: Timestamp(1_795_800_000_000 + i as i64),
                actor: Actor::System,
                event: e,
            };
            let b = record::encode(&r);
            bytes += b.len() as u64;
            app.append(b);
            written += 1;
        }
        if i.is_multiple_of(1024) {
            app.flush().unwrap();
        }
        i += 1;
    }
    app.flush().unwrap();
    wait(&mut durable, written).await;
    drop((_ledger, app, durable));
    let t = Instant::now();
    let report = countersign::verify::verify_data_dir(&data, None);
    let s = t.elapsed().as_secs_f64();
    assert_eq!(report.problem, None);
    assert_eq!(report.records, written);
    println!(
        "| ledger verify (frames, CRC, state machine, tree, images), {} B/record avg | {written} | {s:.2} s | {:.0} records/s |",
        bytes / written,
        written as f64 / s
    );
}

fn proofs(n: u64) {
    let mut tree = merkle::Tree::new();
    let t = Instant::now();
    for i in 0..n {
        tree.push(merkle::leaf_hash(&i.to_le_bytes())).unwrap();
    }
    let build = t.elapsed().as_secs_f64();
    println!(
        "| build tree (leaf hash + push) | {n} | {build:.2} s | {:.0} leaves/s |",
        n as f64 / build
    );
    let root = tree.root();
    let count = 100_000u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let t = Instant::now();
    let mut total = 0;
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = tree.inclusion_proof(x % n, n).unwrap();
        total += p.len();
    }
    let per = t.elapsed().as_secs_f64() / count as f64 * 1e6;
    println!(
        "| inclusion proof at full size ({} hashes avg) | {n} | {per:.2} µs/proof | {:.0} proofs/s |",
        total as u64 / count,
        1e6 / per
    );
    // Check a sample so the numbers above are for proofs that verify.
    let i = n / 3;
    let p = tree.inclusion_proof(i, n).unwrap();
    merkle::verify_inclusion(&merkle::leaf_hash(&i.to_le_bytes()), i, n, &p, &root).unwrap();
    let t = Instant::now();
    for k in 0..count {
        let a = 1 + (k * 7919) % (n - 1);
        tree.consistency_proof(a, n).unwrap();
    }
    let per = t.elapsed().as_secs_f64() / count as f64 * 1e6;
    println!("| consistency proof to full size | {n} | {per:.2} µs/proof | |");
}
