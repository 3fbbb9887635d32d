//! The tamper-evident ledger through the audit API and the offline verifier: proofs against
//! signed checkpoints, records, search, proof bundles, and tampering caught.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use countersign::api::pb;
use countersign::ledger::checkpoint::{self, Verifier};
use countersign::ledger::merkle;
use countersign::verify::{verify_bundle, verify_data_dir};
use tonic::Code;

use crate::fixtures::submit_request;
use crate::harness::*;

fn verifier(t: &TestServer) -> Verifier {
    let text = std::fs::read_to_string(t.pki.join("ledger.pub")).unwrap();
    checkpoint::parse_verifier(text.trim()).unwrap()
}

const ORIGIN: &str = "countersign.example/ledger";

/// Runs `n` requests through approval (by sup-01) and returns their ids.
async fn approved(t: &TestServer, n: usize, serial: &str) -> Vec<String> {
    let mut sup = Console::open(t, "sup-01").await;
    let mut ids = Vec::new();
    for i in 0..n {
        let r = submit(t, "teller-01", &format!("{serial}-{i}")).await;
        let o = sup.next_offer().await;
        assert_eq!(o.request_id, r.request_id);
        sup.accept(&o).await;
        sup.decide(&o, pb::Decision::Approve, "", "ok")
            .await
            .unwrap();
        ids.push(r.request_id);
    }
    ids
}

async fn checkpoint_now(t: &TestServer) -> checkpoint::Checkpoint {
    let cp = t
        .auditor()
        .await
        .get_checkpoint(pb::GetCheckpointRequest {
            tree_size: 0,
            refresh: true,
        })
        .await
        .unwrap()
        .into_inner();
    let opened = checkpoint::open(&cp.signed_note, &verifier(t), ORIGIN)
        .expect("the note verifies with ledger.pub");
    assert_eq!(
        (opened.size, opened.root.to_vec()),
        (cp.tree_size, cp.root_hash)
    );
    opened
}

fn hashes(v: &[Vec<u8>]) -> Vec<merkle::Hash> {
    v.iter()
        .map(|h| h.as_slice().try_into().expect("32 bytes"))
        .collect()
}

async fn every_record_and_both_checkpoints_are_provable() {
    let t = TestServer::start().await;
    approved(&t, 2, "P").await;
    let first = checkpoint_now(&t).await;
    let ids = approved(&t, 3, "Q").await;
    let second = checkpoint_now(&t).await;
    assert_eq!(second.size, t.ledger_len());
    assert!(first.size < second.size);
    let mut auditor = t.auditor().await;
    for index in 0..second.size {
        let p = auditor
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                target: Some(pb::get_inclusion_proof_request::Target::RecordIndex(index)),
                tree_size: second.size,
            })
            .await
            .unwrap()
            .into_inner();
        let leaf = merkle::leaf_hash(&p.record);
        merkle::verify_inclusion(&leaf, index, second.size, &hashes(&p.proof), &second.root)
            .unwrap_or_else(|e| panic!("record {index}: {e}"));
        // The same proof must not verify for another position.
        if second.size > 1 {
            let other = (index + 1) % second.size;
            assert!(
                merkle::verify_inclusion(
                    &leaf,
                    other,
                    second.size,
                    &hashes(&p.proof),
                    &second.root
                )
                .is_err()
            );
        }
    }
    let c = auditor
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            from_tree_size: first.size,
            to_tree_size: second.size,
        })
        .await
        .unwrap()
        .into_inner();
    merkle::verify_consistency(
        first.size,
        second.size,
        &hashes(&c.proof),
        &first.root,
        &second.root,
    )
    .unwrap();
    // The earlier checkpoint can be fetched again by its size.
    let again = auditor
        .get_checkpoint(pb::GetCheckpointRequest {
            tree_size: first.size,
            refresh: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        checkpoint::open(&again.signed_note, &verifier(&t), ORIGIN).unwrap(),
        first
    );
    // A request's decision, by request id.
    let d = auditor
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            target: Some(
                pb::get_inclusion_proof_request::Target::DecisionOfRequestId(ids[1].clone()),
            ),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let v: serde_json::Value = serde_json::from_slice(&d.record).unwrap();
    assert_eq!(
        (v["request"].as_str(), v["event"]["type"].as_str()),
        (Some(ids[1].as_str()), Some("decided"))
    );
    merkle::verify_inclusion(
        &merkle::leaf_hash(&d.record),
        d.record_index,
        d.tree_size,
        &hashes(&d.proof),
        &second.root,
    )
    .unwrap();
    // Sizes beyond the tree are refused.
    assert_status(
        auditor
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                from_tree_size: 1,
                to_tree_size: second.size + 1,
            })
            .await,
        Code::OutOfRange,
        "exceeds",
    );
    assert_status(
        auditor
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                from_tree_size: 0,
                to_tree_size: 1,
            })
            .await,
        Code::InvalidArgument,
        "from_tree_size",
    );
}

async fn checkpoints_are_signed_on_their_own_while_records_arrive() {
    let t = TestServer::start().await;
    approved(&t, 1, "A").await;
    let len = t.ledger_len();
    let mut auditor = t.auditor().await;
    // Bounded wait for the signer's one-second tick; the assertion is that it happens.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let cp = auditor
            .get_checkpoint(pb::GetCheckpointRequest {
                tree_size: 0,
                refresh: false,
            })
            .await
            .unwrap()
            .into_inner();
        if cp.tree_size >= len {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint covered {len} records within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn records_come_in_pages() {
    let t =
        TestServer::start_with(&|s| s.replace("page_size_max = 1000", "page_size_max = 3")).await;
    approved(&t, 2, "R").await;
    let len = t.ledger_len();
    let mut auditor = t.auditor().await;
    let mut start = 0;
    let mut seen = Vec::new();
    while start < len {
        let page = auditor
            .get_records(pb::GetRecordsRequest { start, end: len })
            .await
            .unwrap()
            .into_inner();
        assert!(page.records.len() <= 3);
        assert!(!page.records.is_empty());
        seen.extend(page.records.iter().map(|r| r.index));
        start = page.next_start;
    }
    assert_eq!(seen, (0..len).collect::<Vec<_>>());
    // A pager asking past the ledger's end stops as the contract says: next_start reaches
    // ledger_size, and from past the end it stays put with nothing returned.
    let (mut start, end) = (0, len + 10);
    let mut pages = 0;
    loop {
        let page = auditor
            .get_records(pb::GetRecordsRequest { start, end })
            .await
            .unwrap()
            .into_inner();
        assert!(page.next_start >= start);
        start = page.next_start;
        pages += 1;
        assert!(pages < 100, "the pager does not end");
        if start >= end || start >= page.ledger_size {
            assert_eq!(page.ledger_size, len);
            break;
        }
    }
    assert_eq!(start, len);
    let past = auditor
        .get_records(pb::GetRecordsRequest {
            start: len + 5,
            end: len + 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(past.records.is_empty());
    assert_eq!((past.next_start, past.ledger_size), (len + 5, len));
}

async fn search_by_each_criterion_newest_first_with_pages() {
    let t = TestServer::start().await;
    let mut s1 = Console::open(&t, "sup-01").await;
    let mut made = Vec::new();
    for (i, (teller, code)) in [
        ("teller-01", "WDL-CASH"),
        ("teller-03", "REV-TXN"),
        ("teller-01", "REV-TXN"),
        ("teller-02", "WDL-CASH"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = t.teller(teller).await;
        let r = c
            .submit(submit_request(
                &format!("S-{i}"),
                code,
                1000 + i as i64,
                "6222020200110002",
            ))
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        let o = s1.next_offer().await;
        s1.accept(&o).await;
        let d = if i % 2 == 0 {
            pb::Decision::Approve
        } else {
            pb::Decision::Reject
        };
        s1.decide(&o, d, if i % 2 == 0 { "" } else { "LIMIT" }, "c")
            .await
            .unwrap();
        made.push(r.request_id);
        t.clock.advance_ms(1000);
    }
    let mut auditor = t.auditor().await;
    let mut search = async |q: pb::SearchRequest| -> Vec<String> {
        auditor
            .search(q)
            .await
            .unwrap()
            .into_inner()
            .requests
            .into_iter()
            .map(|r| r.request_id)
            .collect::<Vec<_>>()
    };
    let q = || pb::SearchRequest::default();
    assert_eq!(
        search(q()).await,
        [
            made[3].as_str(),
            made[2].as_str(),
            made[1].as_str(),
            made[0].as_str()
        ],
        "newest first"
    );
    assert_eq!(
        search(pb::SearchRequest {
            teller_id: "teller-01".into(),
            ..q()
        })
        .await,
        [made[2].as_str(), made[0].as_str()]
    );
    assert_eq!(
        search(pb::SearchRequest {
            branch_id: "BR-0202".into(),
            ..q()
        })
        .await,
        [made[1].as_str()]
    );
    assert_eq!(
        search(pb::SearchRequest {
            transaction_code: "REV-TXN".into(),
            ..q()
        })
        .await,
        [made[2].as_str(), made[1].as_str()]
    );
    assert_eq!(
        search(pb::SearchRequest {
            supervisor_id: "sup-01".into(),
            ..q()
        })
        .await
        .len(),
        4
    );
    assert!(
        search(pb::SearchRequest {
            supervisor_id: "sup-02".into(),
            ..q()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        search(pb::SearchRequest {
            outcome: pb::RequestState::Rejected as i32,
            ..q()
        })
        .await,
        [made[3].as_str(), made[1].as_str()]
    );
    assert_eq!(
        search(pb::SearchRequest {
            teller_id: "teller-01".into(),
            outcome: pb::RequestState::Approved as i32,
            transaction_code: "REV-TXN".into(),
            ..q()
        })
        .await,
        [made[2].as_str()]
    );
    // A time window: the second and third submissions only.
    let all = t
        .auditor()
        .await
        .search(q())
        .await
        .unwrap()
        .into_inner()
        .requests;
    let at = |id: &str| {
        all.iter()
            .find(|r| r.request_id == id)
            .unwrap()
            .submitted_at
            .unwrap()
    };
    let window = pb::SearchRequest {
        submitted_from: Some(at(&made[1])),
        submitted_until: Some(at(&made[3])),
        ..q()
    };
    assert_eq!(search(window).await, [made[2].as_str(), made[1].as_str()]);
    // Pages of two, following the token, give everything once.
    let mut auditor = t.auditor().await;
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = auditor
            .search(pb::SearchRequest {
                page_size: 2,
                page_token: token.clone(),
                ..q()
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.requests.into_iter().map(|r| r.request_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        paged,
        [
            made[3].as_str(),
            made[2].as_str(),
            made[1].as_str(),
            made[0].as_str()
        ]
    );
    assert_status(
        auditor
            .search(pb::SearchRequest {
                outcome: pb::RequestState::Queued as i32,
                ..q()
            })
            .await,
        Code::InvalidArgument,
        "outcome",
    );
    assert_status(
        auditor
            .search(pb::SearchRequest {
                page_token: "zz".into(),
                ..q()
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
}

async fn an_exported_bundle_verifies_offline_and_tampering_fails_it() {
    let t = TestServer::start().await;
    let ids = approved(&t, 2, "B").await;
    let bundle = t
        .auditor()
        .await
        .export_proof(pb::ExportProofRequest {
            request_id: ids[1].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .bundle;
    let v = verifier(&t);
    // The auditor fetches the request's images with GetImage into a folder of their own.
    let images = tempfile::tempdir().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
    let mut auditor = t.auditor().await;
    for img in listed["images"].as_array().unwrap() {
        let sha = img["sha256"].as_str().unwrap();
        let content = auditor
            .get_image(pb::GetImageRequest { sha256: sha.into() })
            .await
            .unwrap()
            .into_inner()
            .content;
        std::fs::write(images.path().join(sha), content).unwrap();
    }
    let report = verify_bundle(&bundle, &v, Some(images.path())).expect("the bundle verifies");
    assert_eq!(report.request_id, ids[1]);
    assert_eq!(report.state, countersign::domain::State::Approved);
    assert_eq!((report.records, report.images_checked), (4, 2));

    // Change one record's content (keeping valid JSON and base64): its inclusion proof fails.
    let mut json: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
    let rec = B64
        .decode(json["records"][3]["record"].as_str().unwrap())
        .unwrap();
    let forged = String::from_utf8(rec)
        .unwrap()
        .replace("\"approve\"", "\"reject\"");
    json["records"][3]["record"] = B64.encode(forged).into();
    let err = verify_bundle(&serde_json::to_vec(&json).unwrap(), &v, None).unwrap_err();
    assert!(err.contains("not in the signed tree"), "{err}");
    // Dropping a record breaks the history.
    let mut json: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
    json["records"].as_array_mut().unwrap().remove(0);
    assert!(verify_bundle(&serde_json::to_vec(&json).unwrap(), &v, None).is_err());
    // Another key does not verify the checkpoint.
    let (_, other) = checkpoint::generate("someone.else/log", &mut rand::rng()).unwrap();
    let other = checkpoint::parse_verifier(&other).unwrap();
    assert!(
        verify_bundle(&bundle, &other, None)
            .unwrap_err()
            .contains("checkpoint")
    );
    // An edited image is caught when images are given.
    let first =
        serde_json::from_slice::<serde_json::Value>(&bundle).unwrap()["images"][0]["sha256"]
            .as_str()
            .unwrap()
            .to_owned();
    let path = images.path().join(&first);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = verify_bundle(&bundle, &v, Some(images.path())).unwrap_err();
    assert!(err.contains(&first), "{err}");
}

/// Copies the data directory, applies `damage` to the copy, and returns what verify says.
fn verify_damaged(
    data: &std::path::Path,
    v: &Verifier,
    damage: impl Fn(&std::path::Path),
) -> countersign::verify::Report {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(data, copy.path());
    damage(copy.path());
    verify_data_dir(copy.path(), Some(v))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn segment(data: &std::path::Path) -> std::path::PathBuf {
    data.join("ledger").join(format!("{:020}.seg", 0))
}

/// Byte offsets of each frame in the first segment.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 16;
    while pos + 16 <= bytes.len() {
        out.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 16 + len;
    }
    out
}

async fn offline_verify_catches_every_kind_of_tampering() {
    let mut t = TestServer::start().await;
    approved(&t, 3, "V").await;
    checkpoint_now(&t).await;
    t.stop().await;
    let data = t.data_dir();
    let v = verifier(&t);
    let clean = verify_data_dir(&data, Some(&v));
    assert_eq!(clean.problem, None);
    // Four records per request, and the engine's start and stop.
    assert_eq!((clean.records, clean.requests, clean.images), (14, 3, 6));
    assert!(clean.checkpoints >= 1);

    let bytes = std::fs::read(segment(&data)).unwrap();
    let offsets = frame_offsets(&bytes);
    // One flipped byte in every record's payload, one record at a time.
    for (i, &off) in offsets.iter().enumerate() {
        let r = verify_damaged(&data, &v, |d| {
            let mut b = std::fs::read(segment(d)).unwrap();
            b[off + 20] ^= 0x20;
            std::fs::write(segment(d), b).unwrap();
        });
        let p = r
            .problem
            .unwrap_or_else(|| panic!("flip in record {i} went unnoticed"));
        assert!(p.contains(&format!("record {i}")), "record {i}: {p}");
    }
    // A record cut short in the middle of the log.
    let r = verify_damaged(&data, &v, |d| {
        let mut b = std::fs::read(segment(d)).unwrap();
        b.drain(offsets[4] + 20..offsets[4] + 30);
        std::fs::write(segment(d), b).unwrap();
    });
    assert!(r.problem.unwrap().contains("record 4"));
    // Two records swapped.
    let r = verify_damaged(&data, &v, |d| {
        let b = std::fs::read(segment(d)).unwrap();
        let (a, m, z) = (offsets[2], offsets[3], offsets[4]);
        let mut out = b[..a].to_vec();
        out.extend_from_slice(&b[m..z]);
        out.extend_from_slice(&b[a..m]);
        out.extend_from_slice(&b[z..]);
        std::fs::write(segment(d), out).unwrap();
    });
    assert!(r.problem.unwrap().contains("record 2"));
    // An edited image.
    let r = verify_damaged(&data, &v, |d| {
        // The first image's content starts after the log's 8-byte magic and a 36-byte header.
        let log = d.join("images").join("00000000.img");
        let mut b = std::fs::read(&log).unwrap();
        b[8 + 36 + 15] ^= 1;
        std::fs::write(&log, b).unwrap();
    });
    assert!(r.problem.unwrap().starts_with("image "));
    // The last record removed: the signed checkpoint still covers it.
    let r = verify_damaged(&data, &v, |d| {
        let b = std::fs::read(segment(d)).unwrap();
        std::fs::write(segment(d), &b[..*offsets.last().unwrap()]).unwrap();
    });
    assert!(r.problem.unwrap().contains("checkpoint"));
    // A torn final frame (a crash) is reported as such and is not a problem.
    let r = verify_damaged(&data, &v, |d| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(segment(d))
            .unwrap();
        std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3]).unwrap();
    });
    assert_eq!(r.problem, None);
    assert!(r.torn_tail.unwrap().contains("record 14"));

    // The command line says the same, with its exit code.
    let cli = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["ledger", "verify", "--data"])
            .arg(dir)
            .arg("--pubkey")
            .arg(t.pki.join("ledger.pub"))
            .output()
            .unwrap()
    };
    let ok = cli(&data);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("result:      OK"));
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&data, copy.path());
    let mut b = std::fs::read(segment(copy.path())).unwrap();
    b[offsets[1] + 30] ^= 1;
    std::fs::write(segment(copy.path()), b).unwrap();
    let bad = cli(copy.path());
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("PROBLEM: record 1"));
}

/// Whoever holds the disk could change records no checkpoint covers: a clean stop signs every
/// record, and a ledger whose checkpoints were deleted (so more than the configured window of
/// records are signed by nothing) is refused by the server at start and by `verify --pubkey`.
async fn records_beyond_the_unsigned_window_refuse_to_start_and_fail_verify() {
    let mut t = TestServer::start_with(&|s| {
        s.replace("unsigned_records_max = 10000", "unsigned_records_max = 10")
    })
    .await;
    for i in 0..12 {
        submit(&t, "teller-01", &format!("U-{i}")).await;
    }
    t.stop().await;
    let v = verifier(&t);
    let db = t.database.as_ref().map(|d| d.url().to_string());
    let report = crate::harness::verify_stored(&t.data_dir(), db.as_deref(), Some(&v));
    assert_eq!(report.problem, None);
    assert!(report.records >= 12);
    assert_eq!(
        report.signed, report.records,
        "a clean stop signs every record"
    );
    assert_eq!(countersign::verify::unsigned_problem(&report, 10), None);

    // The checkpoints deleted, as someone holding the disk (or the database) could.
    match &t.database {
        None => std::fs::remove_file(t.data_dir().join("ledger").join("checkpoints.log")).unwrap(),
        Some(d) => d
            .execute("ALTER TABLE checkpoints DISABLE TRIGGER USER; DELETE FROM checkpoints")
            .unwrap(),
    }
    let report = crate::harness::verify_stored(&t.data_dir(), db.as_deref(), Some(&v));
    assert_eq!((report.problem.as_deref(), report.checkpoints), (None, 0));
    let problem = countersign::verify::unsigned_problem(&report, 10).expect("refused");
    assert!(problem.contains("no checkpoint"), "{problem}");
    // The auditor's command says the same, and fails.
    let mut verify = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    verify.args(["ledger", "verify", "--unsigned-max", "10", "--pubkey"]);
    verify.arg(t.pki.join("ledger.pub"));
    match db.as_deref() {
        None => verify.arg("--data").arg(t.data_dir()),
        Some(url) => verify.args(["--database", url]),
    };
    let out = verify.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("signed:      0 of {} records", report.records))
            && text.contains("PROBLEM")
            && text.contains("no checkpoint"),
        "{text}"
    );
    let rng = Box::new(<rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(1));
    let err = match countersign::server::start(&t.config, std::sync::Arc::new(t.clock.clone()), rng)
        .await
    {
        Ok(s) => panic!(
            "a ledger signed by nothing must not open; role {:?}",
            s.role()
        ),
        Err(e) => e,
    };
    let err = format!("{err:#}");
    assert!(
        err.contains("signed by nothing") && err.contains("no checkpoint at all"),
        "{err}"
    );
}

crate::on_both_backends!(
    every_record_and_both_checkpoints_are_provable,
    checkpoints_are_signed_on_their_own_while_records_arrive,
    records_come_in_pages,
    search_by_each_criterion_newest_first_with_pages,
    an_exported_bundle_verifies_offline_and_tampering_fails_it,
    records_beyond_the_unsigned_window_refuse_to_start_and_fail_verify,
);

// Flipped bytes in segment files; the database's tables get their own tampering test below.
crate::embedded_only!(offline_verify_catches_every_kind_of_tampering,);

/// The database verifier on a copy of the test's database with `damage` applied (as the
/// owner, with the append-only triggers turned off, as only an administrator could).
fn verify_damaged_database(t: &TestServer, v: &Verifier, damage: &str) -> Option<String> {
    let copy = t.database.as_ref().unwrap().copy().unwrap();
    copy.execute(&format!(
        "ALTER TABLE ledger DISABLE TRIGGER USER; ALTER TABLE checkpoints DISABLE TRIGGER USER; {damage}"
    ))
    .unwrap();
    countersign::verify::verify_database(copy.url(), None, Some(v)).problem
}

async fn database_verify_catches_every_kind_of_tampering() {
    let mut t = TestServer::start().await;
    approved(&t, 3, "V").await;
    checkpoint_now(&t).await;
    approved(&t, 1, "W").await;
    checkpoint_now(&t).await;
    t.stop().await;
    let v = verifier(&t);
    let clean = t.verify(Some(&v));
    assert_eq!(clean.problem, None);
    // Four records per request, and the engine's start and stop.
    assert_eq!((clean.records, clean.requests, clean.images), (18, 4, 8));
    assert!(clean.checkpoints >= 2);
    let last = clean.records - 1;
    for (damage, expected) in [
        // A record's bytes changed, its stored leaf hash not.
        (
            "UPDATE ledger SET record = record || ' '::bytea WHERE idx = 5".to_string(),
            "record 5: its stored leaf hash does not match".to_string(),
        ),
        // Bytes and leaf hash changed together: the signed root no longer matches.
        (
            "UPDATE ledger SET record = record || ' '::bytea, \
             leaf_hash = sha256('\\x00'::bytea || record || ' '::bytea) WHERE idx = 5"
                .to_string(),
            // The range the change lies in: after the last checkpoint that still agrees.
            "root differs from the recomputed tree: a record from index ".to_string(),
        ),
        // A record removed from the middle, and the last one removed.
        (
            "DELETE FROM ledger WHERE idx = 4".to_string(),
            "record 4 is missing".to_string(),
        ),
        (
            format!("DELETE FROM ledger WHERE idx = {last}"),
            format!("covers {} records but the ledger holds {last}", last + 1),
        ),
        // A record as if written by a leader fenced off before.
        (
            format!("UPDATE ledger SET term = 0 WHERE idx = {last}"),
            format!("record {last} was written in term 0"),
        ),
        // A checkpoint removed from before the newest. (Removing the newest is seen only
        // against a copy held elsewhere: a witness's.)
        (
            "DELETE FROM checkpoints WHERE seq = 0".to_string(),
            "checkpoint 0 is missing".to_string(),
        ),
        // An image changed.
        (
            "UPDATE images SET bytes = bytes || '\\x00'::bytea \
             WHERE hash = (SELECT hash FROM images ORDER BY hash LIMIT 1)"
                .to_string(),
            "no longer matches its hash".to_string(),
        ),
    ] {
        let problem = verify_damaged_database(&t, &v, &damage)
            .unwrap_or_else(|| panic!("went unnoticed: {damage}"));
        assert!(problem.contains(&expected), "{damage}: {problem}");
    }
    // With the triggers on, even the owner cannot change the ledger.
    let refused = t
        .database
        .as_ref()
        .unwrap()
        .execute("DELETE FROM ledger WHERE idx = 0")
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("append-only"),
        "{refused:#}"
    );
}

// Tampering with the tables only the database has; segment files get their own test above.
crate::postgres_only!(database_verify_catches_every_kind_of_tampering);
