//! Blind re-keying (要素复核): for a rule that asks for it, the supervisor's copy withholds the
//! amount and the account until the decision; an approval carries them as typed from the
//! voucher; a mismatch is refused, recorded, and after the rule's attempts the request goes to
//! someone else. Rejections and returns need no re-keying.

use countersign::api::pb;
use tonic::Code;

use crate::harness::*;

crate::on_both_backends!(
    an_approval_must_retype_the_withheld_fields_and_a_mismatch_is_recorded,
    out_of_attempts_the_request_goes_to_another_supervisor,
    a_rejection_needs_no_rekeying
);

const AMOUNT: i64 = 4_567_800;
const ACCOUNT: &str = "6222020200112233445";

async fn decide_with(
    c: &mut Console,
    o: &pb::Offer,
    rekeyed: Option<pb::Rekeyed>,
) -> Result<pb::AuthorizationRequest, tonic::Status> {
    c.client
        .decide(pb::DecideRequest {
            request_id: o.request_id.clone(),
            epoch: o.epoch,
            decision: pb::Decision::Approve as i32,
            reason_code: String::new(),
            comment: "checked against the voucher".into(),
            rekeyed,
        })
        .await
        .map(|r| r.into_inner().request.expect("request"))
}

fn typed(amount: i64, account: &str) -> Option<pb::Rekeyed> {
    Some(pb::Rekeyed {
        amount_minor_units: Some(amount),
        account: Some(account.into()),
        counterparty: None,
    })
}

fn metadata(s: &tonic::Status) -> std::collections::HashMap<String, String> {
    use tonic_types::StatusExt;
    s.get_details_error_info().expect("ErrorInfo").metadata
}

async fn an_approval_must_retype_the_withheld_fields_and_a_mismatch_is_recorded() {
    let mut t = TestServer::start().await;
    let mut sup = Console::open(&t, "sup-01").await;
    let r = submit_code(&t, "teller-01", "RK-1", "REKEY", AMOUNT).await;
    // The teller sees everything and which fields are re-keyed.
    let tx = r.transaction.as_ref().unwrap();
    assert_eq!(tx.amount.as_ref().unwrap().minor_units, AMOUNT);
    assert_eq!(
        r.rekey_fields,
        vec![
            pb::RekeyField::Amount as i32,
            pb::RekeyField::Account as i32
        ]
    );
    // The supervisor's offer withholds them (the currency stays).
    let o = sup.next_offer().await;
    let offered = o.request.as_ref().unwrap().transaction.as_ref().unwrap();
    assert_eq!(offered.amount.as_ref().unwrap().minor_units, 0);
    assert_eq!(offered.amount.as_ref().unwrap().currency, "CNY");
    assert!(offered.account.is_empty());
    let accepted = sup.accept(&o).await;
    assert!(accepted.transaction.unwrap().account.is_empty());

    // An approval without the typed fields is refused and records nothing.
    let len = t.ledger_len();
    let missing = decide_with(&mut sup, &o, None).await;
    assert_status(missing, Code::InvalidArgument, "rekeyed.amount_minor_units");
    assert_eq!(t.ledger_len(), len);

    // A wrong amount: refused, recorded, one attempt left, still in review.
    let wrong = decide_with(&mut sup, &o, typed(AMOUNT / 10, ACCOUNT))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition, "{wrong:?}");
    let m = metadata(&wrong);
    assert_eq!(m["fields"], "amount");
    assert_eq!(m["attempts_left"], "1");
    // The same wrong values again (a retry whose answer was lost): the same answer, recorded
    // once.
    let again = decide_with(&mut sup, &o, typed(AMOUNT / 10, ACCOUNT))
        .await
        .unwrap_err();
    assert_eq!(metadata(&again)["attempts_left"], "1");
    let history = t.history(&r.request_id).await;
    let mismatches: Vec<&serde_json::Value> = history
        .iter()
        .filter(|e| e["event"]["type"] == "rekey_mismatched")
        .collect();
    assert_eq!(mismatches.len(), 1, "{history:?}");
    assert_eq!(mismatches[0]["event"]["typed"]["amount_minor"], AMOUNT / 10);
    assert_eq!(
        mismatches[0]["event"]["mismatched"],
        serde_json::json!(["amount"])
    );
    assert_eq!(mismatches[0]["actor"], "sup-01");

    // Typed right (the account in the groups it is printed in): approved.
    let approved = decide_with(&mut sup, &o, typed(AMOUNT, "6222 0202 0011 2233 445"))
        .await
        .unwrap();
    assert_eq!(state(&approved), pb::RequestState::Approved);
    // Decided: the supervisor's answer shows everything now.
    assert_eq!(approved.transaction.unwrap().account, ACCOUNT);
    t.stop().await;
    assert_eq!(t.verify(None).problem, None);
}

async fn out_of_attempts_the_request_goes_to_another_supervisor() {
    let mut t = TestServer::start().await;
    let mut first = Console::open(&t, "sup-01").await;
    let r = submit_code(&t, "teller-01", "RK-2", "REKEY", AMOUNT).await;
    let o = first.next_offer().await;
    first.accept(&o).await;
    let wrong = decide_with(&mut first, &o, typed(AMOUNT, "6222020200112233440"))
        .await
        .unwrap_err();
    assert_eq!(metadata(&wrong)["attempts_left"], "1");
    let last = decide_with(&mut first, &o, typed(AMOUNT + 1, ACCOUNT))
        .await
        .unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition);
    assert_eq!(metadata(&last)["attempts_left"], "0");
    assert!(last.message().contains("another supervisor"), "{last:?}");
    // Its answer lost, the last attempt retried: the same answer, nothing more recorded.
    let len = t.ledger_len();
    let retried = decide_with(&mut first, &o, typed(AMOUNT + 1, ACCOUNT))
        .await
        .unwrap_err();
    assert_eq!(retried.code(), Code::FailedPrecondition, "{retried:?}");
    assert_eq!(metadata(&retried)["attempts_left"], "0");
    assert_eq!(metadata(&retried)["fields"], "amount");
    assert_eq!(t.ledger_len(), len);
    // Back in the queue, offered to someone else, never to sup-01 again.
    let mut second = Console::open(&t, "sup-02").await;
    let moved = second.next_offer().await;
    assert_eq!(moved.request_id, r.request_id);
    assert!(moved.epoch > o.epoch);
    first.expect_quiet(300).await;
    second.accept(&moved).await;
    let approved = decide_with(&mut second, &moved, typed(AMOUNT, ACCOUNT))
        .await
        .unwrap();
    assert_eq!(state(&approved), pb::RequestState::Approved);
    assert_eq!(
        t.history_kinds(&r.request_id).await,
        [
            "submitted",
            "offered",
            "accepted",
            "rekey_mismatched",
            "rekey_mismatched",
            "offered",
            "accepted",
            "decided"
        ]
    );
    t.stop().await;
    assert_eq!(t.verify(None).problem, None);
}

async fn a_rejection_needs_no_rekeying() {
    let t = TestServer::start().await;
    let mut sup = Console::open(&t, "sup-01").await;
    submit_code(&t, "teller-01", "RK-3", "REKEY", AMOUNT).await;
    let o = sup.next_offer().await;
    sup.accept(&o).await;
    let rejected = sup
        .decide(&o, pb::Decision::Reject, "SIGNATURE", "signature differs")
        .await
        .unwrap();
    assert_eq!(state(&rejected), pb::RequestState::Rejected);
    // Decided for good, the answer shows everything.
    assert_eq!(rejected.transaction.unwrap().account, ACCOUNT);
    // A return is not final: the supervisor may be offered it again after the resubmission,
    // so the answer still withholds what they must re-key.
    submit_code(&t, "teller-01", "RK-5", "REKEY", AMOUNT).await;
    let o = sup.next_offer().await;
    sup.accept(&o).await;
    let returned = sup
        .decide(
            &o,
            pb::Decision::Return,
            "IMG_UNREADABLE",
            "rescan the voucher",
        )
        .await
        .unwrap();
    assert_eq!(state(&returned), pb::RequestState::Returned);
    let tx = returned.transaction.unwrap();
    assert!(tx.account.is_empty());
    assert_eq!(tx.amount.unwrap().minor_units, 0);
    // A request of another rule asks for nothing to be re-keyed and withholds nothing.
    let plain = submit_code(&t, "teller-01", "RK-4", "WDL-CASH", AMOUNT).await;
    assert!(plain.rekey_fields.is_empty());
    let o = sup.next_offer().await;
    let offered = o.request.unwrap().transaction.unwrap();
    assert_eq!(offered.account, ACCOUNT);
    assert_eq!(offered.amount.unwrap().minor_units, AMOUNT);
}
