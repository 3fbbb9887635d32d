//! What a branch terminal does in a fallback, for terminals and tests: the on-site
//! supervisor signs the canonical bytes (`ledger::onsite`, docs/fallback.md) with the private
//! key of their certificate. `countersign fallback sign` does it from a JSON description of
//! the transaction; `register_request` builds the RegisterFallback call that carries it.

use std::path::Path;

use anyhow::{Context, bail};
use rcgen::{KeyPair, SigningKey as _};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::{ApiLimits, convert, pb};
use crate::domain::{
    CustomerIdentity, FallbackReason, ImageHash, Money, PrincipalId, TellerSerial, Timestamp,
    Transaction,
};
use crate::ledger::onsite::Signed;
use crate::ledger::record::{doc_from, kind_from, verif_from};

/// Signs `message` with a private key (PEM, as `pki` writes them): ECDSA keys sign
/// DER-encoded, as X.509 does.
pub fn sign(key_pem: &str, message: &[u8]) -> anyhow::Result<Vec<u8>> {
    let key = KeyPair::from_pem(key_pem).context("parse the private key (PEM)")?;
    key.sign(message).context("sign")
}

/// A fallback as `countersign fallback sign --request` reads it (JSON); enumerations are
/// named as the ledger names them, and image files are read and hashed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackFile {
    teller: String,
    serial: String,
    code: String,
    amount_minor: i64,
    currency: String,
    account: String,
    #[serde(default)]
    counterparty: Option<String>,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
    document_type: String,
    document_number: String,
    name: String,
    #[serde(default)]
    expiry_date: Option<String>,
    verification: String,
    /// In upload order.
    images: Vec<ImageFile>,
    supervisor: String,
    decided_at_ms: i64,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageFile {
    /// "voucher", "id_front", "id_back", "photo" or "other".
    kind: String,
    /// Relative to the JSON file's directory.
    file: std::path::PathBuf,
}

/// The canonical bytes of the fallback the JSON file at `path` describes.
pub fn signed_bytes_of(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let f: FallbackFile =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut images = Vec::new();
    for (i, image) in f.images.iter().enumerate() {
        let file = base.join(&image.file);
        let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
        let kind = kind_from(&image.kind).with_context(|| format!("images[{i}].kind"))?;
        images.push((kind, ImageHash(Sha256::digest(&bytes).into())));
    }
    let Some(reason) = FallbackReason::parse(&f.reason) else {
        bail!("reason: {:?} is not a fallback reason", f.reason);
    };
    let transaction = Transaction {
        code: f.code,
        amount: Money {
            minor_units: f.amount_minor,
            currency: f.currency,
        },
        account: f.account,
        counterparty: f.counterparty.filter(|c| !c.is_empty()),
        attributes: f.attributes.into_iter().collect(),
    };
    let customer = CustomerIdentity {
        document_type: doc_from(&f.document_type).context("document_type")?,
        document_number: f.document_number,
        name: f.name,
        expiry_date: f.expiry_date.filter(|d| !d.is_empty()),
        verification: verif_from(&f.verification).context("verification")?,
    };
    Ok(Signed {
        teller: &PrincipalId::new(f.teller),
        serial: &TellerSerial::new(f.serial),
        transaction: &transaction,
        customer: &customer,
        images: &images,
        supervisor: &PrincipalId::new(f.supervisor),
        decided_at: Timestamp(f.decided_at_ms),
        reason,
    }
    .bytes())
}

/// The RegisterFallback call for a Submit's content, signed on site by `supervisor` with
/// `key_pem`, the private key of `cert_der`: what a branch terminal sends once the centre is
/// back. The bytes signed are computed from the call itself, as the centre computes them.
pub fn register_request(
    teller: &str,
    submit: pb::SubmitRequest,
    supervisor: &str,
    decided_at: Timestamp,
    reason: pb::FallbackReason,
    cert_der: &[u8],
    key_pem: &str,
) -> anyhow::Result<pb::RegisterFallbackRequest> {
    let pb::SubmitRequest {
        teller_serial,
        transaction,
        customer,
        images,
        note,
    } = submit;
    let mut req = pb::RegisterFallbackRequest {
        teller_serial,
        transaction,
        customer,
        images,
        note,
        on_site: Some(pb::OnSiteSignature {
            supervisor_id: supervisor.into(),
            decided_at: Some(convert::timestamp(decided_at)),
            reason: reason as i32,
            certificate: cert_der.to_vec(),
            // Checked for presence by the conversion below; replaced by the real one.
            signature: vec![0],
        }),
    };
    // Limits wide enough for any call a server could take: the server checks its own.
    let limits = ApiLimits {
        message_bytes_max: usize::MAX,
        image_bytes_max: usize::MAX,
        images_per_request_min: 0,
        images_per_request_max: usize::MAX,
        watch_streams_per_principal_max: 1,
        fallback_age_max_days: 366,
    };
    let input = convert::register_fallback(req.clone(), decided_at, &limits)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let message = input.signed_bytes(&PrincipalId::new(teller));
    if let Some(on_site) = req.on_site.as_mut() {
        on_site.signature = sign(key_pem, &message)?;
    }
    Ok(req)
}

/// A certificate's DER from its PEM, as `on_site.certificate` carries it.
pub fn certificate_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())
        .context("parse the certificate (PEM)")?
        .to_vec())
}
