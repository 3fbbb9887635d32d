//! Development PKI: the demo certificate authority, the server identity and the
//! demo principals' client certificates, plus the `principals.toml` that maps each
//! client certificate's SHA-256 fingerprint to its principal.
//!
//! This module owns everything a development or test deployment needs for mutual
//! TLS and nothing a real bank would use: keys are generated and stored unencrypted
//! on disk. It refuses to write over an existing CA so that pointing it at a real
//! PKI directory by mistake cannot destroy it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, date_time_ymd,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// One principal the demo PKI issues a certificate for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoPrincipal<'a> {
    /// Stable identifier; also the certificate CN and the file stem of its cert and key.
    pub id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// One of "teller", "supervisor", "auditor", "admin".
    pub role: &'a str,
    /// Branch code the principal belongs to ("CENTRE" for head office).
    pub branch: &'a str,
    /// Approval level; supervisors only.
    pub level: Option<u8>,
}

/// The demo principals: three tellers, four supervisors of two levels spread over
/// head office and two branches, one auditor, one admin and one reviewer.
pub const DEMO_PRINCIPALS: &[DemoPrincipal<'static>] = &[
    DemoPrincipal {
        id: "teller-01",
        name: "Li Na",
        role: "teller",
        branch: "BR-0101",
        level: None,
    },
    DemoPrincipal {
        id: "teller-02",
        name: "Wang Fang",
        role: "teller",
        branch: "BR-0101",
        level: None,
    },
    DemoPrincipal {
        id: "teller-03",
        name: "Zhang Wei",
        role: "teller",
        branch: "BR-0202",
        level: None,
    },
    DemoPrincipal {
        id: "sup-01",
        name: "Chen Jianguo",
        role: "supervisor",
        branch: "CENTRE",
        level: Some(3),
    },
    DemoPrincipal {
        id: "sup-02",
        name: "Liu Yang",
        role: "supervisor",
        branch: "CENTRE",
        level: Some(3),
    },
    DemoPrincipal {
        id: "sup-03",
        name: "Zhao Min",
        role: "supervisor",
        branch: "BR-0101",
        level: Some(2),
    },
    DemoPrincipal {
        id: "sup-04",
        name: "Huang Lei",
        role: "supervisor",
        branch: "BR-0202",
        level: Some(2),
    },
    DemoPrincipal {
        id: "sup-05",
        name: "Sun Li",
        role: "supervisor",
        branch: "CENTRE",
        level: Some(1),
    },
    DemoPrincipal {
        id: "audit-01",
        name: "Zhou Xiaohong",
        role: "auditor",
        branch: "AUDIT",
        level: None,
    },
    DemoPrincipal {
        id: "admin-01",
        name: "Wu Qiang",
        role: "admin",
        branch: "CENTRE",
        level: None,
    },
    DemoPrincipal {
        id: "review-01",
        name: "Zheng Lihua",
        role: "reviewer",
        branch: "AUDIT",
        level: None,
    },
];

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const PRINCIPALS_FILE: &str = "principals.toml";
const LEDGER_KEY: &str = "ledger.key";
/// The demo witness's key name, key files and configuration.
pub const WITNESS_KEY_NAME: &str = "audit.countersign.example/witness";
const WITNESS_KEY: &str = "witness.key";
const WITNESS_PUB: &str = "witness.pub";
pub const WITNESS_CONFIG: &str = "witness.toml";
const POLICY_FILE: &str = "policy.toml";
const LEDGER_PUB: &str = "ledger.pub";
/// The key name in checkpoint signature lines.
const LEDGER_KEY_NAME: &str = "countersign.example/ledger";

const ORGANIZATION: &str = "Countersign development";
const CA_COMMON_NAME: &str = "Countersign Development CA";
const SERVER_COMMON_NAME: &str = "countersign-server";
/// Loopback only: the development server is never meant to be reached from elsewhere.
const SERVER_SANS: &[&str] = &["localhost", "127.0.0.1", "::1"];

const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);

const PRINCIPALS_HEADER: &str = "\
# principals.toml: GENERATED FOR DEVELOPMENT by Countersign's demo PKI generator.
#
# Maps client certificates to principals. Each [[principals]] entry names its
# certificate by cert_sha256, the lowercase hex SHA-256 of the certificate's DER
# bytes, so a caller is whoever holds the key of the certificate with that
# fingerprint. `level` is present for supervisors only.
#
# The certificates and keys beside this file are demo credentials with
# unencrypted keys: never use them outside development and tests.

";

/// Serialized shape of one `[[principals]]` entry; field order is the file's order.
#[derive(Serialize)]
struct PrincipalEntry<'a> {
    id: &'a str,
    name: &'a str,
    role: &'a str,
    branch: &'a str,
    cert_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<u8>,
    /// Supervisors: the largest amount (minor units) they may decide per currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    ceilings: Option<std::collections::BTreeMap<&'static str, i64>>,
}

/// Demo ceilings by level: CNY 100,000.00 / 10,000,000.00 / 1,000,000,000.00 and a tenth of
/// that in USD, so each level can decide what the sample policy gives it.
fn demo_ceilings(level: u8) -> std::collections::BTreeMap<&'static str, i64> {
    let cny = 10_000_000i64 * 100i64.pow(u32::from(level.saturating_sub(1)));
    [("CNY", cny), ("USD", cny / 10)].into_iter().collect()
}

#[derive(Serialize)]
struct PrincipalsFile<'a> {
    principals: Vec<PrincipalEntry<'a>>,
}

/// Creates in `out` (created if missing; refuse with an error if it already contains
/// ca.pem, so a real PKI is never overwritten): ca.pem, ca.key, server.pem, server.key
/// (SANs: DNS localhost and IP 127.0.0.1 and ::1), and for each principal `<id>.pem` and
/// `<id>.key`, plus principals.toml. Key files are written with mode 0600 (unix).
/// Returns the paths written, in the order written; ca.pem comes last.
pub fn init(out: &Path) -> Result<Vec<PathBuf>> {
    init_with(out, DEMO_PRINCIPALS)
}

/// As [`init`], and each demo principal's PKCS#12 file for a browser ([`browser_files`],
/// with [`BROWSER_FILE_PASSWORD`]): what `pki init` and `demo --console` write for people.
pub fn init_for_people(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = init(out)?;
    let ids: Vec<&str> = DEMO_PRINCIPALS.iter().map(|p| p.id).collect();
    written.extend(browser_files(out, &ids, BROWSER_FILE_PASSWORD)?);
    Ok(written)
}

/// As [`init`], with the given principals instead of the demo ones (the load generator
/// issues many tellers and supervisors this way).
pub fn init_with(out: &Path, principals: &[DemoPrincipal<'_>]) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(out).with_context(|| format!("create pki directory {}", out.display()))?;
    let ca_cert_path = out.join(CA_CERT);
    let ca_exists = ca_cert_path
        .try_exists()
        .with_context(|| format!("check for existing ca {}", ca_cert_path.display()))?;
    ensure!(
        !ca_exists,
        "{} already exists: refusing to overwrite an existing PKI",
        ca_cert_path.display()
    );

    let ca_key = KeyPair::generate().context("generate ca key")?;
    let ca = CertifiedIssuer::self_signed(ca_params()?, ca_key).context("self-sign ca")?;

    let mut written = Vec::new();
    let mut emit = |name: &str, contents: &str, secrecy: Secrecy, what: &str| -> Result<()> {
        let path = out.join(name);
        write_file(&path, contents, secrecy, Existing::Replace)
            .with_context(|| format!("write {what} {}", path.display()))?;
        written.push(path);
        Ok(())
    };

    emit(
        CA_KEY,
        &ca.key().serialize_pem(),
        Secrecy::Private,
        "ca key",
    )?;

    let server = issue_leaf(server_params()?, &ca).context("issue server certificate")?;
    emit(
        SERVER_CERT,
        &server.cert_pem,
        Secrecy::Public,
        "server certificate",
    )?;
    emit(SERVER_KEY, &server.key_pem, Secrecy::Private, "server key")?;

    let mut entries = Vec::with_capacity(principals.len());
    for principal in principals {
        let issued = issue_leaf(client_params(principal.id)?, &ca)
            .with_context(|| format!("issue client certificate for {}", principal.id))?;
        emit(
            &format!("{}.pem", principal.id),
            &issued.cert_pem,
            Secrecy::Public,
            "client certificate",
        )?;
        emit(
            &format!("{}.key", principal.id),
            &issued.key_pem,
            Secrecy::Private,
            "client key",
        )?;
        entries.push(PrincipalEntry {
            id: principal.id,
            name: principal.name,
            role: principal.role,
            branch: principal.branch,
            cert_sha256: issued.fingerprint,
            level: principal.level,
            ceilings: principal.level.map(demo_ceilings),
        });
    }

    let body = toml::to_string(&PrincipalsFile {
        principals: entries,
    })
    .context("serialize principals")?;
    emit(
        PRINCIPALS_FILE,
        &format!("{PRINCIPALS_HEADER}{body}"),
        Secrecy::Public,
        "principals file",
    )?;

    // The ledger's checkpoint signing key, and the verifier key auditors are given.
    let (signer, verifier) = crate::ledger::checkpoint::generate(LEDGER_KEY_NAME, &mut rand::rng())
        .context("generate ledger signing key")?;
    emit(
        LEDGER_KEY,
        &format!("{signer}\n"),
        Secrecy::Private,
        "ledger signing key",
    )?;
    emit(
        LEDGER_PUB,
        &format!("{verifier}\n"),
        Secrecy::Public,
        "ledger verifier key",
    )?;

    // A witness for the demo and a first try: in a bank, internal audit or the regulator
    // makes its own key and runs it (docs/ledger.md).
    let (witness_key, witness_pub) =
        crate::ledger::cosignature::generate(WITNESS_KEY_NAME, &mut rand::rng())
            .context("generate witness key")?;
    emit(
        WITNESS_KEY,
        &format!("{witness_key}\n"),
        Secrecy::Private,
        "witness key",
    )?;
    emit(
        WITNESS_PUB,
        &format!("{witness_pub}\n"),
        Secrecy::Public,
        "witness public key",
    )?;
    emit(
        WITNESS_CONFIG,
        crate::witness::config::SAMPLE,
        Secrecy::Public,
        "witness configuration",
    )?;

    emit(
        POLICY_FILE,
        crate::policy::SAMPLE,
        Secrecy::Public,
        "sample policy",
    )?;

    // ca.pem is the "this directory holds a PKI" marker that the guard above checks,
    // so it is written last: a run that failed halfway can simply be run again.
    emit(CA_CERT, &ca.pem(), Secrecy::Public, "ca certificate")?;
    Ok(written)
}

/// Issues one more client certificate signed by the CA in `dir` (reads ca.pem + ca.key),
/// writing `<id>.pem/<id>.key`, and returns the hex SHA-256 fingerprint of the new
/// certificate's DER. Refuses to replace an existing `<id>.pem` or `<id>.key`: remove them
/// first to re-issue.
pub fn issue_client(dir: &Path, id: &str) -> Result<String> {
    validate_id(id)?;

    let ca_cert_path = dir.join(CA_CERT);
    let ca_pem = fs::read_to_string(&ca_cert_path)
        .with_context(|| format!("read ca certificate {}", ca_cert_path.display()))?;
    let ca_key_path = dir.join(CA_KEY);
    let ca_key_pem = fs::read_to_string(&ca_key_path)
        .with_context(|| format!("read ca key {}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parse ca key")?;

    // A key that does not belong to ca.pem would sign certificates that chain to
    // nothing, which only shows up later as a handshake failure; catch it here. The
    // DER of a certificate embeds its SubjectPublicKeyInfo verbatim.
    let ca_der = first_certificate_der(&ca_pem).context("decode ca certificate")?;
    let ca_spki = ca_key.subject_public_key_info();
    ensure!(
        ca_der
            .windows(ca_spki.len())
            .any(|w| w == ca_spki.as_slice()),
        "{} does not belong to {}",
        ca_key_path.display(),
        ca_cert_path.display()
    );

    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("parse ca certificate")?;
    ensure!(
        issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign),
        "{} is not allowed to sign certificates",
        ca_cert_path.display()
    );

    let issued = issue_leaf(client_params(id)?, &issuer)
        .with_context(|| format!("issue client certificate for {id}"))?;
    let cert_path = dir.join(format!("{id}.pem"));
    let key_path = dir.join(format!("{id}.key"));
    // Key first: if it already exists nothing has been written yet.
    write_file(
        &key_path,
        &issued.key_pem,
        Secrecy::Private,
        Existing::Refuse,
    )
    .with_context(|| format!("write client key {}", key_path.display()))?;
    write_file(
        &cert_path,
        &issued.cert_pem,
        Secrecy::Public,
        Existing::Refuse,
    )
    .with_context(|| format!("write client certificate {}", cert_path.display()))?;
    Ok(issued.fingerprint)
}

/// Hex (lowercase) SHA-256 of the first certificate in a PEM file's DER bytes: this is
/// how the principal directory names a certificate.
pub fn fingerprint_pem(pem: &str) -> Result<String> {
    let der = first_certificate_der(pem)?;
    Ok(hex::encode(Sha256::digest(&der)))
}

/// The password of the PKCS#12 files `pki init` writes for browsers. A development PKI's: its
/// PEM keys lie unencrypted beside them, so the password protects nothing they do not; it is
/// there because browsers and keychains ask for one.
pub const BROWSER_FILE_PASSWORD: &str = "countersign";

/// Writes `<id>.p12` beside each principal's `<id>.pem` and `<id>.key` in `dir`: the
/// certificate, its key and the CA, as PKCS#12 (PBES2 with AES-256 and PBKDF2-HMAC-SHA-256,
/// an HMAC-SHA-256 MAC), which a person imports into a browser to open the console. Returns
/// the paths written.
pub fn browser_files(dir: &Path, ids: &[&str], password: &str) -> Result<Vec<PathBuf>> {
    use rustls::pki_types::pem::PemObject as _;
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = dir.join(name);
        fs::read(&path).with_context(|| format!("read {}", path.display()))
    };
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(&read(CA_CERT)?)
        .context("ca.pem: not a PEM certificate")?;
    let ca = p12_keystore::Certificate::from_der(ca.as_ref()).context("ca.pem: not X.509")?;
    let mut written = Vec::with_capacity(ids.len());
    for id in ids {
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(&read(&format!("{id}.pem"))?)
            .with_context(|| format!("{id}.pem: not a PEM certificate"))?;
        let key =
            rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(&read(&format!("{id}.key"))?)
                .with_context(|| format!("{id}.key: not a PKCS#8 PEM key"))?;
        let leaf = p12_keystore::Certificate::from_der(cert.as_ref())
            .with_context(|| format!("{id}.pem: not X.509"))?;
        let key = p12_keystore::PrivateKey::from_der(key.secret_pkcs8_der())
            .with_context(|| format!("{id}.key: not a private key"))?;
        let local_key_id = Sha256::digest(cert.as_ref())[..20].to_vec();
        let chain = p12_keystore::PrivateKeyChain::new(local_key_id, key, [leaf, ca.clone()]);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry(id, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let bytes = store
            .writer(password)
            .write()
            .with_context(|| format!("encode {id}.p12"))?;
        let path = dir.join(format!("{id}.p12"));
        write_file(&path, &bytes, Secrecy::Private, Existing::Replace)
            .with_context(|| format!("write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A freshly issued leaf certificate and its key.
struct Issued {
    cert_pem: String,
    key_pem: String,
    fingerprint: String,
}

fn issue_leaf(params: CertificateParams, issuer: &Issuer<'_, KeyPair>) -> Result<Issued> {
    let key = KeyPair::generate().context("generate key")?;
    let cert = params.signed_by(&key, issuer).context("sign certificate")?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        fingerprint: hex::encode(Sha256::digest(cert.der())),
    })
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_COMMON_NAME);
    // Path length 0: the CA signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params)?;
    Ok(params)
}

fn server_params() -> Result<CertificateParams> {
    let sans: Vec<String> = SERVER_SANS.iter().map(|s| s.to_string()).collect();
    // CertificateParams::new turns entries that parse as IP addresses into IP SANs.
    let mut params = CertificateParams::new(sans).context("build server subject alt names")?;
    leaf_params(
        &mut params,
        SERVER_COMMON_NAME,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    Ok(params)
}

fn client_params(id: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    leaf_params(&mut params, id, ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(params)
}

fn leaf_params(
    params: &mut CertificateParams,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<()> {
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    // ECDSA keys only sign; they cannot encipher, so no KeyEncipherment.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    // rcgen leaves this off by default; it helps tools pick the issuer if the CA is
    // ever rolled over.
    params.use_authority_key_identifier_extension = true;
    set_validity(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(DnType::CommonName, common_name);
    name
}

/// Valid from a day ago, to tolerate clock skew between the machines of a demo,
/// until two years from now.
fn set_validity(params: &mut CertificateParams) -> Result<()> {
    // rcgen neither re-exports `time` nor enables its clock, so "now" is built from
    // the epoch helper plus std's clock.
    // Certificate validity is wall-clock time at issue, outside the engine's domain.
    #[allow(clippy::disallowed_methods)]
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("read system clock")?;
    let now = date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - ONE_DAY;
    // 29 February has no counterpart two years on; 730 days is close enough then.
    params.not_after = now
        .replace_year(now.year() + 2)
        .unwrap_or(now + 730 * ONE_DAY);
    Ok(())
}

/// Ids become file names and the certificate CN, so keep them to a safe alphabet and
/// away from the names of the PKI's own files.
fn validate_id(id: &str) -> Result<()> {
    ensure!(
        !id.is_empty() && id.len() <= 64,
        "principal id must be 1 to 64 characters"
    );
    ensure!(
        id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "principal id {id:?} must start with a letter or digit and contain only letters, digits, '-' and '_'"
    );
    let reserved = ["ca", "server", "principals"];
    ensure!(
        !reserved.iter().any(|r| r.eq_ignore_ascii_case(id)),
        "principal id {id:?} is reserved for the PKI's own files"
    );
    Ok(())
}

#[derive(Clone, Copy)]
enum Secrecy {
    Public,
    Private,
}

/// Writes a private key file readable by its owner only, refusing to replace one.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    write_file(path, contents, Secrecy::Private, Existing::Refuse)
        .with_context(|| format!("write {}", path.display()))
}

#[derive(Clone, Copy)]
enum Existing {
    Replace,
    Refuse,
}

fn write_file(
    path: &Path,
    contents: impl AsRef<[u8]>,
    secrecy: Secrecy,
    existing: Existing,
) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    match existing {
        Existing::Replace => options.create(true).truncate(true),
        Existing::Refuse => options.create_new(true),
    };
    #[cfg(unix)]
    if let Secrecy::Private = secrecy {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600 from the start, so the key is never readable by others.
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if let Secrecy::Private = secrecy {
        use std::os::unix::fs::PermissionsExt;
        // `mode` only applies to new files; a replaced file would keep its old mode.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = secrecy;
    file.write_all(contents.as_ref())?;
    file.sync_all()
}

/// DER bytes of the first CERTIFICATE block in `pem`, skipping any other blocks
/// (keys, chains' later certificates).
fn first_certificate_der(pem: &str) -> Result<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN).context("find certificate in pem")? + BEGIN.len();
    let len = pem[start..]
        .find(END)
        .context("find end of certificate in pem")?;
    let der = decode_base64(&pem[start..start + len]).context("decode certificate base64")?;
    // Every certificate is a DER SEQUENCE; anything else means a mangled file.
    ensure!(
        der.first() == Some(&0x30),
        "certificate in pem is not a DER sequence"
    );
    Ok(der)
}

/// Standard base64 with line breaks removed, as PEM bodies are.
fn decode_base64(text: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(compact)?)
}

#[cfg(test)]
mod tests;
