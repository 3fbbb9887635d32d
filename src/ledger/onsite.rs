//! On-site authorizations registered after a fallback: the bytes a supervisor signs on site,
//! and the check of that signature with the key of their certificate. The format is the
//! contract between the centre and every branch terminal (docs/fallback.md); the signature is
//! kept in the ledger with the certificate, so anyone can check it again later.
//!
//! The signed bytes are lines, each `<name> <value length in bytes> <value>\n`: lengths make
//! the format unambiguous without escaping whatever a value holds. The first line is
//! `countersign-fallback 2 v1`; then, in this order: teller, serial, code, amount (minor units
//! as decimal digits), currency, account, counterparty (empty when none), one `attribute`
//! line per transaction attribute in key order (value `<key length> <key><value>`),
//! document_type, document_number, name, expiry_date (empty when none), verification, one
//! `image` line per image in upload order (`<kind> <sha256 hex>`), supervisor, decided_at_ms,
//! reason. Enumerations are written as the ledger writes them.

use ring::signature::{self, UnparsedPublicKey};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::domain::{
    CustomerIdentity, FallbackReason, ImageHash, ImageKind, PrincipalId, TellerSerial, Timestamp,
    Transaction,
};

use super::record::{doc_name, kind_name, verif_name};

/// What the on-site supervisor signs: everything the registration asserts except the
/// teller's note.
pub struct Signed<'a> {
    pub teller: &'a PrincipalId,
    pub serial: &'a TellerSerial,
    pub transaction: &'a Transaction,
    pub customer: &'a CustomerIdentity,
    pub images: &'a [(ImageKind, ImageHash)],
    pub supervisor: &'a PrincipalId,
    pub decided_at: Timestamp,
    pub reason: FallbackReason,
}

/// The first line's value: a new layout gets a new version, never a changed meaning.
const VERSION: &str = "v1";

impl Signed<'_> {
    /// The canonical bytes the signature covers.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let mut line = |name: &str, value: &str| {
            out.extend_from_slice(format!("{name} {} {value}\n", value.len()).as_bytes());
        };
        let t = self.transaction;
        let c = self.customer;
        line("countersign-fallback", VERSION);
        line("teller", self.teller.as_str());
        line("serial", self.serial.as_str());
        line("code", &t.code);
        line("amount", &t.amount.minor_units.to_string());
        line("currency", &t.amount.currency);
        line("account", &t.account);
        line("counterparty", t.counterparty.as_deref().unwrap_or(""));
        for (key, value) in &t.attributes {
            // The key's length first, so that no key and value can be read as another pair.
            line("attribute", &format!("{} {key}{value}", key.len()));
        }
        line("document_type", doc_name(c.document_type));
        line("document_number", &c.document_number);
        line("name", &c.name);
        line("expiry_date", c.expiry_date.as_deref().unwrap_or(""));
        line("verification", verif_name(c.verification));
        for (kind, hash) in self.images {
            line("image", &format!("{} {}", kind_name(*kind), hash.to_hex()));
        }
        line("supervisor", self.supervisor.as_str());
        line("decided_at_ms", &self.decided_at.0.to_string());
        line("reason", self.reason.as_str());
        out
    }
}

/// Why an on-site signature does not check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the certificate does not parse as X.509 DER")]
    Certificate,
    #[error(
        "the certificate's key is of a kind not accepted for on-site signatures (accepted: \
         ECDSA P-256 or P-384, Ed25519, RSA of 2048 bits or more)"
    )]
    KeyKind,
    #[error("the signature does not verify with the certificate's key over the signed bytes")]
    Mismatch,
}

/// A certificate's validity period, in Unix milliseconds.
pub fn validity(certificate: &[u8]) -> Result<(Timestamp, Timestamp), SignatureError> {
    let (_, cert) =
        X509Certificate::from_der(certificate).map_err(|_| SignatureError::Certificate)?;
    let v = cert.validity();
    Ok((
        Timestamp(v.not_before.timestamp().saturating_mul(1000)),
        Timestamp(v.not_after.timestamp().saturating_mul(1000)),
    ))
}

/// Checks `sig` over `message` with the public key of `certificate` (DER). The algorithm
/// follows from the key: ECDSA with SHA-256 (P-256) or SHA-384 (P-384), DER-encoded as X.509
/// writes it; Ed25519; RSA PKCS #1 v1.5 with SHA-256.
pub fn verify(certificate: &[u8], message: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
    let (_, cert) =
        X509Certificate::from_der(certificate).map_err(|_| SignatureError::Certificate)?;
    let spki = cert.public_key();
    let key = spki.subject_public_key.data.as_ref();
    let oid = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let alg: &dyn signature::VerificationAlgorithm = match (oid.as_str(), curve.as_deref()) {
        // id-ecPublicKey with prime256v1 / secp384r1.
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => &signature::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => &signature::ECDSA_P384_SHA384_ASN1,
        // id-Ed25519.
        ("1.3.101.112", _) => &signature::ED25519,
        // rsaEncryption.
        ("1.2.840.113549.1.1.1", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        _ => return Err(SignatureError::KeyKind),
    };
    UnparsedPublicKey::new(alg, key)
        .verify(message, sig)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DocumentType, IdVerification, Money};

    /// The example of docs/fallback.md, byte for byte: the format is a contract with every
    /// branch terminal, so a change to it must fail here (and be a new version).
    #[test]
    fn the_signed_bytes_are_as_documented() {
        let transaction = Transaction {
            code: "WDL-CASH".into(),
            amount: Money {
                minor_units: 2_000_000,
                currency: "CNY".into(),
            },
            account: "6222020200112233445".into(),
            counterparty: None,
            attributes: vec![("channel".into(), "counter".into())],
        };
        let customer = CustomerIdentity {
            document_type: DocumentType::PrcResidentId,
            document_number: "11010519491231002X".into(),
            name: "赵敏".into(),
            expiry_date: Some("2036-05-01".into()),
            verification: IdVerification::Matched,
        };
        let images = [(ImageKind::Voucher, ImageHash([0xab; 32]))];
        let bytes = Signed {
            teller: &PrincipalId::new("teller-01"),
            serial: &TellerSerial::new("FB-0001"),
            transaction: &transaction,
            customer: &customer,
            images: &images,
            supervisor: &PrincipalId::new("sup-03"),
            decided_at: Timestamp(1_796_000_000_000),
            reason: FallbackReason::CentreUnreachable,
        }
        .bytes();
        let expected = "countersign-fallback 2 v1\n\
            teller 9 teller-01\n\
            serial 7 FB-0001\n\
            code 8 WDL-CASH\n\
            amount 7 2000000\n\
            currency 3 CNY\n\
            account 19 6222020200112233445\n\
            counterparty 0 \n\
            attribute 16 7 channelcounter\n\
            document_type 15 prc_resident_id\n\
            document_number 18 11010519491231002X\n\
            name 6 赵敏\n\
            expiry_date 10 2036-05-01\n\
            verification 7 matched\n\
            image 72 voucher abababababababababababababababababababababababababababababababab\n\
            supervisor 6 sup-03\n\
            decided_at_ms 13 1796000000000\n\
            reason 18 centre_unreachable\n";
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }

    #[test]
    fn a_signature_checks_only_over_its_own_bytes_and_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sup-03".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        use rcgen::SigningKey as _;
        let sig = key.sign(b"message").unwrap();
        assert_eq!(verify(cert.der(), b"message", &sig), Ok(()));
        assert_eq!(
            verify(cert.der(), b"messagf", &sig),
            Err(SignatureError::Mismatch)
        );
        let other = rcgen::KeyPair::generate().unwrap();
        let other_sig = other.sign(b"message").unwrap();
        assert_eq!(
            verify(cert.der(), b"message", &other_sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"not a certificate", b"message", &sig),
            Err(SignatureError::Certificate)
        );
        let (from, until) = validity(cert.der()).unwrap();
        assert!(from < until);
    }
}
