//! Bad input and limits at the boundary: a clear status naming the field, and nothing stored.

use countersign::api::pb;
use tonic::Code;

use crate::fixtures::{fake_jpeg, submit_request};
use crate::harness::*;

type Edit = fn(&mut pb::SubmitRequest);

async fn bad_submissions_are_refused_with_the_field_named() {
    let t = TestServer::start().await;
    let mut teller = t.teller("teller-01").await;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("empty serial", |r| r.teller_serial.clear(), "teller_serial"),
        (
            "serial with space",
            |r| r.teller_serial = "A 1".into(),
            "teller_serial",
        ),
        (
            "serial too long",
            |r| r.teller_serial = "A".repeat(65),
            "teller_serial",
        ),
        ("no transaction", |r| r.transaction = None, "transaction"),
        (
            "no amount",
            |r| r.transaction.as_mut().unwrap().amount = None,
            "transaction.amount",
        ),
        (
            "zero amount",
            |r| money(r).minor_units = 0,
            "transaction.amount.minor_units",
        ),
        (
            "negative amount",
            |r| money(r).minor_units = -5,
            "transaction.amount.minor_units",
        ),
        (
            "huge amount",
            |r| money(r).minor_units = i64::MAX,
            "transaction.amount.minor_units",
        ),
        (
            "unknown currency",
            |r| money(r).currency = "XXX".into(),
            "transaction.amount.currency",
        ),
        (
            "lower-case currency",
            |r| money(r).currency = "cny".into(),
            "transaction.amount.currency",
        ),
        (
            "empty code",
            |r| r.transaction.as_mut().unwrap().code.clear(),
            "transaction.code",
        ),
        (
            "empty account",
            |r| r.transaction.as_mut().unwrap().account.clear(),
            "transaction.account",
        ),
        (
            "control char in account",
            |r| r.transaction.as_mut().unwrap().account = "12\u{0}3".into(),
            "transaction.account",
        ),
        ("no customer", |r| r.customer = None, "customer"),
        (
            "unspecified document",
            |r| r.customer.as_mut().unwrap().document_type = 0,
            "customer.document_type",
        ),
        (
            "unknown document enum",
            |r| r.customer.as_mut().unwrap().document_type = 99,
            "customer.document_type",
        ),
        (
            "bad ID check digit",
            |r| r.customer.as_mut().unwrap().document_number = "110105194912310021".into(),
            "customer.document_number",
        ),
        (
            "short ID",
            |r| r.customer.as_mut().unwrap().document_number = "1101051949".into(),
            "customer.document_number",
        ),
        (
            "expired document",
            |r| r.customer.as_mut().unwrap().expiry_date = "2001-01-01".into(),
            "customer.expiry_date",
        ),
        (
            "bad expiry date",
            |r| r.customer.as_mut().unwrap().expiry_date = "2030-02-30".into(),
            "customer.expiry_date",
        ),
        (
            "empty name",
            |r| r.customer.as_mut().unwrap().name.clear(),
            "customer.name",
        ),
        (
            "unspecified verification",
            |r| r.customer.as_mut().unwrap().verification = 0,
            "customer.verification",
        ),
        ("no images", |r| r.images.clear(), "images"),
        (
            "too many images",
            |r| {
                let i = r.images[0].clone();
                r.images = vec![i; 9];
            },
            "images",
        ),
        (
            "empty image",
            |r| r.images[0].content.clear(),
            "images[0].content",
        ),
        (
            "image over the limit",
            |r| r.images[0].content = fake_jpeg(4 * 1024 * 1024),
            "images[0].content",
        ),
        (
            "declared PNG, content JPEG",
            |r| r.images[1].media_type = "image/png".into(),
            "images[1].media_type",
        ),
        (
            "unknown media type",
            |r| r.images[0].media_type = "image/gif".into(),
            "images[0].media_type",
        ),
        (
            "unknown format",
            |r| r.images[0].content = b"GIF89a....".to_vec(),
            "images[0].content",
        ),
        (
            "unspecified image kind",
            |r| r.images[0].kind = 0,
            "images[0].kind",
        ),
        ("note too long", |r| r.note = "x".repeat(2001), "note"),
        (
            "control char in note",
            |r| r.note = "bell\u{7}".into(),
            "note",
        ),
        (
            "code too long",
            |r| r.transaction.as_mut().unwrap().code = "C".repeat(129),
            "transaction.code",
        ),
        (
            "control char in counterparty",
            |r| r.transaction.as_mut().unwrap().counterparty = "62220202\u{1b}".into(),
            "transaction.counterparty",
        ),
        (
            "too many attributes",
            |r| {
                r.transaction.as_mut().unwrap().attributes =
                    (0..33).map(|i| (format!("k{i}"), "v".into())).collect()
            },
            "transaction.attributes",
        ),
        (
            "empty attribute key",
            |r| {
                r.transaction
                    .as_mut()
                    .unwrap()
                    .attributes
                    .insert(String::new(), "v".into());
            },
            "transaction.attributes",
        ),
        (
            "long attribute value",
            |r| {
                r.transaction
                    .as_mut()
                    .unwrap()
                    .attributes
                    .insert("k".into(), "v".repeat(129));
            },
            "transaction.attributes[\"k\"]",
        ),
        (
            "right-to-left override in the customer's name",
            |r| r.customer.as_mut().unwrap().name = "Zhao\u{202e}niM".into(),
            "customer.name",
        ),
        (
            "first-strong isolate in the note",
            |r| r.note = "pay \u{2067}100\u{2069}".into(),
            "note",
        ),
        (
            "zero-width space in an attribute value",
            |r| {
                r.transaction
                    .as_mut()
                    .unwrap()
                    .attributes
                    .insert("purpose".into(), "rent\u{200b}".into());
            },
            "transaction.attributes[\"purpose\"]",
        ),
        (
            "letters in the account",
            |r| r.transaction.as_mut().unwrap().account = "6222ABCD0011".into(),
            "transaction.account",
        ),
        (
            "spaces in the counterparty account",
            |r| r.transaction.as_mut().unwrap().counterparty = "6222 0202 0011".into(),
            "transaction.counterparty",
        ),
        (
            "passport number with spaces",
            |r| {
                let c = r.customer.as_mut().unwrap();
                c.document_type = pb::DocumentType::Passport as i32;
                c.document_number = "E 123 456".into();
            },
            "customer.document_number",
        ),
        (
            "ID with an impossible birth date",
            |r| r.customer.as_mut().unwrap().document_number = "110105194902300023".into(),
            "customer.document_number",
        ),
        (
            "name too long",
            |r| r.customer.as_mut().unwrap().name = "N".repeat(129),
            "customer.name",
        ),
        (
            "unknown image kind enum",
            |r| r.images[0].kind = 42,
            "images[0].kind",
        ),
        (
            "declared PDF, content JPEG",
            |r| r.images[0].media_type = "application/pdf".into(),
            "images[0].media_type",
        ),
    ];
    let len = t.ledger_len();
    let count = cases.len();
    for (name, edit, field) in cases {
        let mut req = submit_request("BAD-1", "WDL-CASH", 5_000_000, "6222020200112233445");
        edit(&mut req);
        match teller.submit(req).await {
            Ok(r) => panic!("{name}: accepted {r:?}"),
            Err(s) => {
                assert_eq!(s.code(), Code::InvalidArgument, "{name}: {s:?}");
                assert!(
                    s.message().starts_with(&format!("{field}:")),
                    "{name}: message {:?} should name {field}",
                    s.message()
                );
                use tonic_types::StatusExt;
                let details = s
                    .get_details_bad_request()
                    .unwrap_or_else(|| panic!("{name}: no BadRequest detail"));
                assert_eq!(details.field_violations.len(), 1, "{name}");
                assert_eq!(details.field_violations[0].field, field, "{name}");
            }
        }
    }
    assert_eq!(t.ledger_len(), len, "no refused submission stored anything");
    assert!(count >= 40, "{count} cases");
    // The same serial is still free: nothing half-stored claimed it.
    let ok = teller
        .submit(submit_request(
            "BAD-1",
            "WDL-CASH",
            5_000_000,
            "6222020200112233445",
        ))
        .await
        .unwrap();
    assert!(!ok.into_inner().replayed);
}

fn money(r: &mut pb::SubmitRequest) -> &mut pb::Money {
    r.transaction.as_mut().unwrap().amount.as_mut().unwrap()
}

async fn pending_per_teller_and_queue_length_are_enforced() {
    let t = TestServer::start_with(&|s| {
        s.replace("pending_per_teller_max = 20", "pending_per_teller_max = 2")
            .replace("queue_length_max = 100000", "queue_length_max = 3")
    })
    .await;
    submit(&t, "teller-01", "L-1").await;
    submit(&t, "teller-01", "L-2").await;
    let mut t1 = t.teller("teller-01").await;
    let len = t.ledger_len();
    assert_status(
        t1.submit(submit_request("L-3", "WDL-CASH", 100, "6222020200110002"))
            .await,
        Code::ResourceExhausted,
        "the teller has 2 undecided requests",
    );
    // Another teller is not affected by teller-01's limit...
    submit(&t, "teller-02", "L-4").await;
    // ...but the queue is now full for everyone.
    assert_status(
        t.teller("teller-03")
            .await
            .submit(submit_request("L-5", "WDL-CASH", 100, "6222020200110002"))
            .await,
        Code::ResourceExhausted,
        "the queue holds 3",
    );
    assert_eq!(t.ledger_len(), len + 1);
    // Deciding one frees room.
    let mut s = Console::open(&t, "sup-02").await;
    let o = s.next_offer().await;
    s.accept(&o).await;
    s.decide(&o, pb::Decision::Approve, "", "").await.unwrap();
    submit(&t, "teller-03", "L-5").await;
}

/// What the gRPC library refuses before our code runs carries an ErrorInfo too: a method that
/// does not exist (a client from another contract) and bytes that do not decode as the method's
/// message.
async fn library_refusals_carry_a_reason() {
    let t = TestServer::start().await;
    let ch = countersign::tools::client::channel(t.addr(), &t.pki, "teller-01")
        .await
        .unwrap();
    let call = |path: &'static str| {
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        async move {
            grpc.ready().await.unwrap();
            // An AcceptRequest's field 2 is a varint where SubmitRequest has a message.
            grpc.unary::<pb::AcceptRequest, pb::AcceptResponse, _>(
                tonic::Request::new(pb::AcceptRequest {
                    request_id: "x".into(),
                    epoch: 7,
                }),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err()
        }
    };
    let len = t.ledger_len();
    for (path, code, reason) in [
        (
            "/countersign.v1.TellerService/Nope",
            Code::Unimplemented,
            "UNKNOWN_METHOD",
        ),
        (
            "/countersign.v1.TellerService/Submit",
            Code::Internal,
            "MALFORMED_MESSAGE",
        ),
    ] {
        let s = call(path).await;
        assert_eq!(s.code(), code, "{path}: {s:?}");
        let info = tonic_types::StatusExt::get_details_error_info(&s).expect("an ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            (reason, "countersign.v1"),
            "{path}"
        );
    }
    assert_eq!(t.ledger_len(), len);
}

async fn an_oversized_message_is_refused() {
    let t = TestServer::start_with(&|s| {
        s.replace("message_bytes_max = 41943040", "message_bytes_max = 65536")
            .replace("image_bytes_max = 4194304", "image_bytes_max = 65536")
            .replace("images_per_request_max = 8", "images_per_request_max = 1")
    })
    .await;
    let mut teller = t.teller("teller-01").await;
    let mut req = submit_request("BIG-1", "WDL-CASH", 100, "6222020200110002");
    req.images[0].content = fake_jpeg(70_000);
    let len = t.ledger_len();
    let s = teller.submit(req).await.unwrap_err();
    // RESOURCE_EXHAUSTED, as gRPC's status table has it, with the size and the limit.
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("65536"), "{s:?}");
    assert_eq!(t.ledger_len(), len);
}

async fn watch_streams_per_teller_are_limited_and_freed_on_close() {
    let t = TestServer::start_with(&|s| {
        s.replace(
            "watch_streams_per_principal_max = 50",
            "watch_streams_per_principal_max = 2",
        )
    })
    .await;
    let r = submit(&t, "teller-01", "W-1").await;
    let mut c = t.teller("teller-01").await;
    let w = || pb::WatchRequest {
        request_id: r.request_id.clone(),
        after_version: None,
    };
    let a = c.watch(w()).await.unwrap().into_inner();
    let _b = c.watch(w()).await.unwrap().into_inner();
    assert_status(c.watch(w()).await, Code::ResourceExhausted, "Watch streams");
    // Another teller is not affected.
    let r2 = submit(&t, "teller-02", "W-2").await;
    t.teller("teller-02")
        .await
        .watch(pb::WatchRequest {
            request_id: r2.request_id,
            after_version: None,
        })
        .await
        .unwrap();
    // Closing one frees its slot (the server notices the reset stream).
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match c.watch(w()).await {
            Ok(_) => break,
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

crate::on_both_backends!(
    bad_submissions_are_refused_with_the_field_named,
    pending_per_teller_and_queue_length_are_enforced,
    an_oversized_message_is_refused,
    library_refusals_carry_a_reason,
    watch_streams_per_teller_are_limited_and_freed_on_close,
);
