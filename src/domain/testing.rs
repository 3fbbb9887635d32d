//! Builders of domain values for unit tests elsewhere in the crate (test builds only).

use super::*;

/// A queued request of teller "teller" at branch B1 needing `level`, submitted at record 0.
pub(crate) fn request(id: &RequestId, level: u8) -> Request {
    Request::submitted(
        id.clone(),
        0,
        Timestamp(0),
        PrincipalId::new("teller"),
        BranchId::new("B1"),
        Submission {
            serial: TellerSerial::new(format!("S-{id}")),
            transaction: Transaction {
                code: "WDL".into(),
                amount: Money {
                    minor_units: 100,
                    currency: "CNY".into(),
                },
                account: "6222".into(),
                counterparty: None,
                attributes: Vec::new(),
            },
            customer: CustomerIdentity {
                document_type: DocumentType::Passport,
                document_number: "E1234567".into(),
                name: "N".into(),
                expiry_date: None,
                verification: IdVerification::Matched,
            },
            images: Vec::new(),
            note: String::new(),
        },
        Requirements {
            rule: "r".into(),
            policy_sha256: "00".into(),
            level,
            approvals: 1,
            independent: true,
            priority: 0,
            offer_timeout_ms: 1000,
            decision_deadline_ms: 100_000,
            escalate_after_ms: None,
            escalate_after_declines: None,
            rekey: Vec::new(),
            rekey_attempts: 0,
            fallback: false,
            review_percent: 0,
        },
    )
}
