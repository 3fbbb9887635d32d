//! Unit tests of the development PKI: fingerprints, the demo principals, writing a PKI
//! directory and issuing client identities.

use super::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};
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
        assert!(["teller", "supervisor", "auditor", "admin", "reviewer"].contains(&p.role));
        assert_eq!(p.level.is_some(), p.role == "supervisor", "{}", p.id);
    }
    assert_eq!(DEMO_PRINCIPALS.len(), 11);
}

#[test]
fn init_writes_pki_and_principals_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/pki");
    let written = init(&dir).unwrap();

    // CA key and certificate, server certificate and key, the principals, the ledger's key
    // pair, the witness's key pair and configuration, the policy.
    assert_eq!(written.len(), 4 + 2 * DEMO_PRINCIPALS.len() + 7);
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

#[test]
fn browser_files_carry_the_certificate_its_key_and_the_ca() {
    use rustls::pki_types::pem::PemObject as _;
    let dir = tempfile::tempdir().unwrap();
    init(dir.path()).unwrap();
    let written = browser_files(dir.path(), &["sup-01"], BROWSER_FILE_PASSWORD).unwrap();
    assert_eq!(written, [dir.path().join("sup-01.p12")]);
    let bytes = std::fs::read(&written[0]).unwrap();
    let store = p12_keystore::KeyStore::from_pkcs12(
        &bytes,
        BROWSER_FILE_PASSWORD,
        p12_keystore::Pkcs12ImportPolicy::default(),
    )
    .unwrap();
    let (alias, chain) = store.private_key_chain().expect("a key and its chain");
    assert_eq!(alias, "sup-01");
    let pem = |name: &str| {
        rustls::pki_types::CertificateDer::from_pem_file(dir.path().join(name))
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let certs: Vec<Vec<u8>> = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
    assert_eq!(certs, [pem("sup-01.pem"), pem("ca.pem")]);
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(dir.path().join("sup-01.key"))
        .unwrap();
    assert_eq!(chain.key().as_der(), key.secret_pkcs8_der());
    assert!(
        p12_keystore::KeyStore::from_pkcs12(
            &bytes,
            "not the password",
            p12_keystore::Pkcs12ImportPolicy::default()
        )
        .is_err(),
        "the password is checked"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&written[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a key file: private");
    }
}
