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
/// head office and two branches, one auditor and one admin.
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
];

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const PRINCIPALS_FILE: &str = "principals.toml";
const LEDGER_KEY: &str = "ledger.key";
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
/// (SANs: DNS localhost and IP 127.0.0.1 and ::1), and for each principal <id>.pem and
/// <id>.key, plus principals.toml. Key files are written with mode 0600 (unix).
/// Returns the paths written, in the order written; ca.pem comes last.
pub fn init(out: &Path) -> Result<Vec<PathBuf>> {
    init_with(out, DEMO_PRINCIPALS)
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
/// writing <id>.pem/<id>.key, and returns the hex SHA-256 fingerprint of the new
/// certificate's DER. Refuses to replace an existing <id>.pem or <id>.key: remove them
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

#[derive(Clone, Copy)]
enum Existing {
    Replace,
    Refuse,
}

fn write_file(
    path: &Path,
    contents: &str,
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
    file.write_all(contents.as_bytes())?;
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
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{
        Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig,
    };
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    fn read(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join(name)).unwrap()
    }

    fn principals(dir: &Path) -> Vec<toml::Table> {
        let table: toml::Table = toml::from_str(&read(dir, PRINCIPALS_FILE)).unwrap();
        table["principals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_table().unwrap().clone())
            .collect()
    }

    #[test]
    fn fingerprint_is_sha256_of_first_certificate_der() {
        let key = KeyPair::generate().unwrap();
        let first = CertificateParams::default().self_signed(&key).unwrap();
        let second = client_params("x").unwrap().self_signed(&key).unwrap();
        let want = hex::encode(Sha256::digest(first.der()));
        // A key block first and a second certificate after must not change the answer.
        let pem = format!("{}{}{}", key.serialize_pem(), first.pem(), second.pem());
        assert_eq!(fingerprint_pem(&pem).unwrap(), want);
        assert_eq!(want.len(), 64);
        assert!(want.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));

        assert!(fingerprint_pem(&key.serialize_pem()).is_err());
        assert!(fingerprint_pem("").is_err());
        let truncated = &first.pem()[..first.pem().len() - 30];
        assert!(fingerprint_pem(truncated).is_err());
    }

    #[test]
    fn demo_principals_are_consistent() {
        let mut seen = std::collections::HashSet::new();
        for p in DEMO_PRINCIPALS {
            assert!(seen.insert(p.id), "duplicate id {}", p.id);
            validate_id(p.id).unwrap();
            assert!(["teller", "supervisor", "auditor", "admin"].contains(&p.role));
            assert_eq!(p.level.is_some(), p.role == "supervisor", "{}", p.id);
        }
        assert_eq!(DEMO_PRINCIPALS.len(), 10);
    }

    #[test]
    fn init_writes_pki_and_principals_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/pki");
        let written = init(&dir).unwrap();

        assert_eq!(written.len(), 4 + 2 * DEMO_PRINCIPALS.len() + 4);
        assert_eq!(written.last().unwrap(), &dir.join(CA_CERT));
        for path in &written {
            assert!(path.is_file(), "{}", path.display());
        }
        for name in [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, PRINCIPALS_FILE] {
            assert!(written.contains(&dir.join(name)), "{name}");
        }

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in &written {
                let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
                if path.extension().is_some_and(|e| e == "key") {
                    assert_eq!(mode, 0o600, "{}", path.display());
                } else {
                    assert_eq!(mode & 0o077 & !0o044, 0, "{}", path.display());
                }
            }
        }

        let text = read(&dir, PRINCIPALS_FILE);
        assert!(text.starts_with("# principals.toml: GENERATED FOR DEVELOPMENT"));
        assert!(text.contains("[[principals]]\nid = \"teller-01\"\nname = \"Li Na\""));
        let entries = principals(&dir);
        assert_eq!(entries.len(), DEMO_PRINCIPALS.len());
        for (entry, p) in entries.iter().zip(DEMO_PRINCIPALS) {
            assert_eq!(entry["id"].as_str().unwrap(), p.id);
            assert_eq!(entry["name"].as_str().unwrap(), p.name);
            assert_eq!(entry["role"].as_str().unwrap(), p.role);
            assert_eq!(entry["branch"].as_str().unwrap(), p.branch);
            let level = entry.get("level").map(|l| l.as_integer().unwrap());
            assert_eq!(level, p.level.map(i64::from), "{}", p.id);
            let keys: Vec<_> = entry.keys().map(String::as_str).collect();
            let mut want = vec!["id", "name", "role", "branch", "cert_sha256"];
            if p.level.is_some() {
                want.extend(["level", "ceilings"]);
            }
            assert_eq!(keys.len(), want.len(), "{}", p.id);
            let fingerprint = fingerprint_pem(&read(&dir, &format!("{}.pem", p.id))).unwrap();
            assert_eq!(entry["cert_sha256"].as_str().unwrap(), fingerprint);
        }
        // The server's own directory parser accepts what was written.
        let d = crate::api::Directory::load(&dir.join(PRINCIPALS_FILE)).unwrap();
        assert_eq!(d.len(), DEMO_PRINCIPALS.len());
        crate::policy::Policy::load(&dir.join(POLICY_FILE)).unwrap();
    }

    #[test]
    fn init_refuses_existing_ca() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(CA_CERT), "real ca").unwrap();
        let err = init(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err:#}");
        assert_eq!(read(tmp.path(), CA_CERT), "real ca");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);

        // A completed init counts as existing too.
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path()).unwrap();
        let ca = read(tmp.path(), CA_CERT);
        assert!(init(tmp.path()).is_err());
        assert_eq!(read(tmp.path(), CA_CERT), ca);
    }

    #[test]
    fn issue_client_writes_new_identity_and_refuses_bad_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(dir).unwrap();

        let fingerprint = issue_client(dir, "teller-99").unwrap();
        assert_eq!(
            fingerprint,
            fingerprint_pem(&read(dir, "teller-99.pem")).unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("teller-99.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let before = read(dir, "teller-99.pem");
        assert!(issue_client(dir, "teller-99").is_err());
        assert!(issue_client(dir, "teller-01").is_err());
        assert_eq!(read(dir, "teller-99.pem"), before);

        for bad in [
            "",
            "ca",
            "SERVER",
            "principals",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a b",
        ] {
            assert!(issue_client(dir, bad).is_err(), "{bad:?}");
        }
        assert_eq!(read(dir, CA_CERT).matches("BEGIN CERTIFICATE").count(), 1);

        // A CA key that does not match ca.pem is caught before anything is signed.
        let other = tempfile::tempdir().unwrap();
        init(other.path()).unwrap();
        fs::copy(other.path().join(CA_KEY), dir.join(CA_KEY)).unwrap();
        let err = issue_client(dir, "teller-98").unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err:#}");
        assert!(!dir.join("teller-98.key").exists());

        assert!(issue_client(other.path().join("missing").as_path(), "x").is_err());
    }

    /// Serves tonic-health over mutual TLS on loopback, recording the fingerprint of
    /// each client certificate the server saw. Returns the port and the recording.
    async fn serve(dir: &Path) -> (u16, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                read(dir, SERVER_CERT),
                read(dir, SERVER_KEY),
            ))
            .client_ca_root(Certificate::from_pem(read(dir, CA_CERT)));
        let (_reporter, health) = tonic_health::server::health_reporter();
        let health = tonic::service::interceptor::InterceptedService::new(
            health,
            move |req: tonic::Request<()>| {
                let certs = req.peer_certs().expect("mutual tls peer certificates");
                let leaf = certs.first().expect("client leaf certificate");
                record
                    .lock()
                    .unwrap()
                    .push(hex::encode(Sha256::digest(leaf.as_ref())));
                Ok(req)
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(health);
        tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        (port, seen)
    }

    async fn check(
        url: String,
        ca: &str,
        identity: Option<Identity>,
        domain: Option<&str>,
    ) -> Result<()> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        if let Some(domain) = domain {
            tls = tls.domain_name(domain);
        }
        let channel = Channel::from_shared(url)?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await?;
        Ok(())
    }

    fn identity(dir: &Path, id: &str) -> Identity {
        Identity::from_pem(
            read(dir, &format!("{id}.pem")),
            read(dir, &format!("{id}.key")),
        )
    }

    #[tokio::test]
    async fn certificates_work_for_mutual_tls() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(dir).unwrap();
        let extra = issue_client(dir, "teller-04").unwrap();
        let (port, seen) = serve(dir).await;
        let ca = read(dir, CA_CERT);
        let directory: HashMap<String, String> = principals(dir)
            .iter()
            .map(|e| {
                let fp = e["cert_sha256"].as_str().unwrap().to_string();
                (fp, e["id"].as_str().unwrap().to_string())
            })
            .collect();

        // The server name is checked against the SANs: both the DNS and IPv4 ones.
        let localhost = format!("https://localhost:{port}");
        check(
            localhost.clone(),
            &ca,
            Some(identity(dir, "teller-01")),
            None,
        )
        .await
        .unwrap();
        let ip = format!("https://127.0.0.1:{port}");
        check(ip.clone(), &ca, Some(identity(dir, "sup-02")), None)
            .await
            .unwrap();
        check(
            ip.clone(),
            &ca,
            Some(identity(dir, "teller-04")),
            Some("localhost"),
        )
        .await
        .unwrap();

        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 3);
            assert_eq!(directory[&seen[0]], "teller-01");
            assert_eq!(directory[&seen[1]], "sup-02");
            assert_eq!(seen[2], extra);
        }

        // No client certificate: the server refuses.
        assert!(check(ip.clone(), &ca, None, None).await.is_err());
        // A client certificate from another CA: the server refuses.
        let other = tempfile::tempdir().unwrap();
        init(other.path()).unwrap();
        let stranger = identity(other.path(), "teller-01");
        assert!(check(ip.clone(), &ca, Some(stranger), None).await.is_err());
        // A name the server certificate does not carry: the client refuses.
        let wrong_name = Some("countersign.example");
        let teller = identity(dir, "teller-01");
        assert!(check(ip, &ca, Some(teller), wrong_name).await.is_err());
        // The server's own certificate is not a client certificate (ServerAuth only).
        let server_as_client = Identity::from_pem(read(dir, SERVER_CERT), read(dir, SERVER_KEY));
        assert!(
            check(localhost, &ca, Some(server_as_client), None)
                .await
                .is_err()
        );
        assert_eq!(seen.lock().unwrap().len(), 3);
    }
}
