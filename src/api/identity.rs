//! Who is calling: the principal directory maps the SHA-256 of a client certificate (DER) to a
//! principal, and every RPC checks that principal's role before doing anything. A refusal is
//! an `AuthError`, which `status` turns into UNAUTHENTICATED or PERMISSION_DENIED.
//! `SharedDirectory` is the directory in force, which a reload (SIGHUP or
//! `AdminService.ReloadDirectory`) replaces whole, naming who was revoked.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::domain::{BranchId, Principal, PrincipalId, Role};

use super::status::AuthError;

/// The principal directory, loaded and checked at start.
#[derive(Clone, Debug)]
pub struct Directory {
    by_fingerprint: HashMap<[u8; 32], Principal>,
    /// Lowercase hex SHA-256 of the file's bytes: names this version of the directory.
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    principals: Vec<PrincipalFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalFile {
    id: String,
    name: String,
    role: String,
    branch: String,
    cert_sha256: String,
    level: Option<u8>,
    /// Supervisors: the largest amount (minor units) they may decide, per currency.
    #[serde(default)]
    ceilings: std::collections::BTreeMap<String, i64>,
    /// Supervisors: the transaction codes they may decide; absent or empty means all.
    #[serde(default)]
    codes: Vec<String>,
}

impl Directory {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read principal directory {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("principal directory {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: DirectoryFile = toml::from_str(text).context("parse principal directory")?;
        if file.principals.is_empty() {
            bail!(
                "principals: the directory lists nobody, so nobody could call (not even an admin \
                 to reload it): add [[principals]] entries (`countersign pki issue` prints them)"
            );
        }
        let mut by_fingerprint = HashMap::new();
        let mut ids: HashMap<PrincipalId, Principal> = HashMap::new();
        for (i, p) in file.principals.into_iter().enumerate() {
            let at = format!("principals[{i}] ({})", p.id);
            let id_ok = !p.id.is_empty()
                && p.id.len() <= 64
                && p.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !id_ok || p.id == "system" {
                bail!("{at}: id must be 1 to 64 of A-Z a-z 0-9 - _ . and not \"system\"");
            }
            if p.branch.trim().is_empty() {
                bail!("{at}: branch is required");
            }
            let role = match p.role.as_str() {
                "teller" => Role::Teller,
                "supervisor" => Role::Supervisor,
                "auditor" => Role::Auditor,
                "admin" => Role::Admin,
                "reviewer" => Role::Reviewer,
                other => bail!("{at}: unknown role {other:?}"),
            };
            let level = match (role, p.level) {
                (Role::Supervisor, Some(l)) if (1..=9).contains(&l) => l,
                (Role::Supervisor, _) => bail!("{at}: a supervisor needs a level from 1 to 9"),
                (_, Some(_)) => bail!("{at}: only supervisors have a level"),
                (_, None) => 0,
            };
            if role != Role::Supervisor && (!p.ceilings.is_empty() || !p.codes.is_empty()) {
                bail!("{at}: only supervisors have ceilings and codes");
            }
            for (currency, ceiling) in &p.ceilings {
                if !crate::domain::validate::CURRENCIES.contains(&currency.as_str()) {
                    bail!("{at}: ceilings.{currency}: not a supported ISO 4217 code");
                }
                if *ceiling <= 0 {
                    bail!("{at}: ceilings.{currency}: must be positive");
                }
            }
            let mut fp = [0u8; 32];
            // As `pki issue` prints it, or as openssl does (upper case, colon-separated).
            let hex_only = p.cert_sha256.replace(':', "").to_ascii_lowercase();
            hex::decode_to_slice(&hex_only, &mut fp).with_context(|| {
                format!(
                    "{at}: cert_sha256 must be the SHA-256 of the certificate's DER: 64 hex \
                     characters, colons allowed (`countersign pki issue` prints it; so does \
                     `openssl x509 -in CERT.pem -noout -fingerprint -sha256`)"
                )
            })?;
            let principal = Principal {
                id: PrincipalId::new(p.id),
                name: p.name,
                role,
                branch: BranchId::new(p.branch),
                level,
                ceilings: p.ceilings,
                codes: p.codes.into_iter().collect(),
            };
            // One principal may hold several certificates (a renewal overlaps the old one);
            // every entry of an id must then say the same about them.
            if let Some(first) = ids.get(&principal.id)
                && first != &principal
            {
                bail!("{at}: listed again with different details; entries of one id must agree");
            }
            ids.insert(principal.id.clone(), principal.clone());
            if let Some(other) = by_fingerprint.insert(fp, principal) {
                bail!(
                    "{at}: the certificate is already mapped to principal {}: one certificate \
                     names one principal",
                    other.id
                );
            }
        }
        Ok(Directory {
            by_fingerprint,
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
        })
    }

    /// The SHA-256 (hex) of the file this directory was read from.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// What `next` changes: principals it adds, those it no longer lists, and those it lists
    /// with other details or other certificates; each list sorted.
    pub fn changes(&self, next: &Directory) -> Changes {
        let certs = |d: &Directory| {
            let mut m: HashMap<PrincipalId, (Principal, std::collections::BTreeSet<[u8; 32]>)> =
                HashMap::new();
            for (fp, p) in &d.by_fingerprint {
                m.entry(p.id.clone())
                    .or_insert_with(|| (p.clone(), Default::default()))
                    .1
                    .insert(*fp);
            }
            m
        };
        let (before, after) = (certs(self), certs(next));
        let mut c = Changes::default();
        for (id, was) in &before {
            match after.get(id) {
                None => c.removed.push(id.clone()),
                Some(now) if now != was => c.changed.push(id.clone()),
                Some(_) => {}
            }
        }
        c.added = after
            .keys()
            .filter(|id| !before.contains_key(*id))
            .cloned()
            .collect();
        c.added.sort();
        c.removed.sort();
        c.changed.sort();
        c
    }

    /// The principal a certificate (DER) names, if the directory lists it.
    pub fn by_certificate(&self, der: &[u8]) -> Option<&Principal> {
        let fp: [u8; 32] = Sha256::digest(der).into();
        self.by_fingerprint.get(&fp)
    }

    /// The principal with this id, if the directory has one.
    pub fn principal(&self, id: &str) -> Option<Principal> {
        self.by_fingerprint
            .values()
            .find(|p| p.id.as_str() == id)
            .cloned()
    }

    /// The ids of every principal with `role`, sorted, each once (a principal may hold several
    /// certificates).
    pub fn ids_with_role(&self, role: Role) -> Vec<PrincipalId> {
        let ids: std::collections::BTreeSet<PrincipalId> = self
            .by_fingerprint
            .values()
            .filter(|p| p.role == role)
            .map(|p| p.id.clone())
            .collect();
        ids.into_iter().collect()
    }

    pub fn len(&self) -> usize {
        self.by_fingerprint.len()
    }

    /// Every supervisor, each once (by id), in id order.
    pub fn supervisors(&self) -> Vec<Principal> {
        let by_id: std::collections::BTreeMap<&str, &Principal> = self
            .by_fingerprint
            .values()
            .filter(|p| p.role == Role::Supervisor)
            .map(|p| (p.id.as_str(), p))
            .collect();
        by_id.into_values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }

    /// The caller's principal, if their certificate is known and their role is one of `roles`.
    /// Checked on every call against the directory in force, so a revoked certificate is
    /// refused from the reload on, on connections it opened before too.
    /// The principal and their branch are recorded on the call's span (see `api::rpc`) as soon
    /// as the certificate is known, refused or not, so that every line the call logs names
    /// who made it.
    pub fn authorize<T>(&self, req: &Request<T>, roles: &[Role]) -> Result<Principal, Status> {
        let certs = req.peer_certs().ok_or(AuthError::NoCertificate)?;
        let cert = certs.first().ok_or(AuthError::NoCertificate)?;
        let fp: [u8; 32] = Sha256::digest(cert.as_ref()).into();
        let Some(p) = self.by_fingerprint.get(&fp) else {
            tracing::warn!(cert_sha256 = %hex::encode(fp), "certificate not in the principal directory");
            return Err(AuthError::UnknownCertificate.into());
        };
        let span = tracing::Span::current();
        span.record("principal", p.id.as_str());
        span.record("branch", p.branch.as_str());
        if !roles.contains(&p.role) {
            tracing::warn!(principal = %p.id, role = ?p.role, "access denied: wrong role for this service");
            return Err(AuthError::WrongRole {
                principal: p.id.clone(),
                role: p.role,
            }
            .into());
        }
        Ok(p.clone())
    }
}

/// The directory in force, shared by every service; a reload swaps it whole. It also keeps
/// the expiry of each principal certificate seen since start, for the metrics.
#[derive(Clone, Debug)]
pub struct SharedDirectory {
    current: std::sync::Arc<std::sync::RwLock<std::sync::Arc<Directory>>>,
    /// Certificate SHA-256 -> (principal, notAfter in Unix seconds), filled on first use.
    seen: std::sync::Arc<std::sync::Mutex<SeenCertificates>>,
    /// Held through a whole reload (load, record, or undo), so that two reloads (SIGHUP and
    /// a call) cannot undo each other.
    pub(crate) reloading: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Certificate SHA-256 -> (principal, notAfter in Unix seconds).
type SeenCertificates = HashMap<[u8; 32], (PrincipalId, i64)>;

/// Principal certificates seen at most; past it, new ones are not tracked (a bound on what a
/// long-running server keeps).
const SEEN_CERTIFICATES_MAX: usize = 100_000;

/// The principals one directory changes from another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<PrincipalId>,
    pub removed: Vec<PrincipalId>,
    /// Listed in both, with other details or other certificates.
    pub changed: Vec<PrincipalId>,
}

impl Changes {
    /// Principals removed or changed: their streams end, what they held moves on.
    pub fn revoked(&self) -> Vec<PrincipalId> {
        let mut v: Vec<PrincipalId> = self.removed.iter().chain(&self.changed).cloned().collect();
        v.sort();
        v
    }
}

/// What a reload changed.
#[derive(Clone, Debug)]
pub struct Reloaded {
    pub previous_sha256: String,
    pub sha256: String,
    /// Certificates the new directory accepts.
    pub principals: usize,
    pub changes: Changes,
    /// Every supervisor of the new directory.
    pub supervisors: Vec<Principal>,
    /// The directory this reload replaced, put back if the reload cannot be recorded.
    previous: std::sync::Arc<Directory>,
    /// The directory read, in force once the reload is recorded.
    next: std::sync::Arc<Directory>,
}

impl SharedDirectory {
    pub fn new(directory: Directory) -> Self {
        SharedDirectory {
            current: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(directory))),
            seen: Default::default(),
            reloading: Default::default(),
        }
    }

    /// The directory in force now.
    pub fn current(&self) -> std::sync::Arc<Directory> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// As `Directory::authorize`, against the directory in force. The first call with each
    /// certificate reads its expiry, for the metrics and the server's daily expiry warning.
    pub fn authorize<T>(&self, req: &Request<T>, roles: &[Role]) -> Result<Principal, Status> {
        let principal = self.current().authorize(req, roles)?;
        if let Some(cert) = req.peer_certs().and_then(|c| c.first().cloned()) {
            let fp: [u8; 32] = Sha256::digest(cert.as_ref()).into();
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains_key(&fp)
                && seen.len() < SEEN_CERTIFICATES_MAX
                && let Some((_, not_after)) = crate::metrics::certificate_expiry(cert.as_ref())
            {
                seen.insert(fp, (principal.id.clone(), not_after));
            }
        }
        Ok(principal)
    }

    /// Every principal certificate seen since start, with its expiry.
    pub fn seen_certificates(&self) -> Vec<crate::metrics::CertExpiry> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.values()
            .map(|(id, not_after)| crate::metrics::CertExpiry {
                kind: "principal",
                name: id.to_string(),
                not_after: *not_after,
            })
            .collect()
    }

    /// Reads `path` and, when the whole file is valid, puts in force what it takes away (the
    /// rest follows with `commit`, or `undo` takes it all back). A file with any mistake is
    /// refused and the directory in force stays.
    pub fn reload(&self, path: &Path) -> anyhow::Result<Reloaded> {
        let next = Directory::load(path)?;
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        let changes = slot.changes(&next);
        // Until the reload is recorded, only what it takes away is in force: revocations at
        // once, additions and changed details once the ledger holds the reload (`commit`).
        let revoked = changes.revoked();
        let interim = Directory {
            by_fingerprint: slot
                .by_fingerprint
                .iter()
                .filter(|(fp, p)| {
                    next.by_fingerprint.get(*fp) == Some(*p) && !revoked.contains(&p.id)
                })
                .map(|(fp, p)| (*fp, p.clone()))
                .collect(),
            sha256: slot.sha256.clone(),
        };
        let reloaded = Reloaded {
            previous_sha256: slot.sha256.clone(),
            sha256: next.sha256.clone(),
            principals: next.len(),
            changes,
            supervisors: next.supervisors(),
            previous: slot.clone(),
            next: std::sync::Arc::new(next),
        };
        *slot = std::sync::Arc::new(interim);
        Ok(reloaded)
    }

    /// Puts the whole of a reload in force, once it is recorded (or on a standby, which
    /// records nothing).
    pub fn commit(&self, reloaded: &Reloaded) {
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        *slot = reloaded.next.clone();
    }

    /// Takes back a reload that could not be recorded: the directory it replaced is in force
    /// again.
    pub fn undo(&self, reloaded: Reloaded) {
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        *slot = reloaded.previous;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, branch: &str, fp: u8) -> String {
        format!(
            "[[principals]]\nid = \"{id}\"\nname = \"{id}\"\nrole = \"teller\"\nbranch = \
             \"{branch}\"\ncert_sha256 = \"{}\"\n",
            hex::encode([fp; 32])
        )
    }

    /// A reload takes away at once and adds only once committed (after its record), or
    /// puts everything back when undone.
    #[test]
    fn a_reload_revokes_at_once_and_adds_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("principals.toml");
        let before = [
            entry("t-keep", "B1", 1),
            entry("t-gone", "B1", 2),
            entry("t-moved", "B1", 3),
        ];
        let shared = SharedDirectory::new(Directory::parse(&before.concat()).unwrap());
        let after = [
            entry("t-keep", "B1", 1),
            entry("t-moved", "B2", 3),
            entry("t-new", "B1", 4),
        ];
        std::fs::write(&path, after.concat()).unwrap();
        let has = |s: &SharedDirectory, id: &str| s.current().principal(id).is_some();

        let reloaded = shared.reload(&path).unwrap();
        assert_eq!(reloaded.changes.added, vec![PrincipalId::new("t-new")]);
        assert_eq!(reloaded.changes.removed, vec![PrincipalId::new("t-gone")]);
        assert_eq!(reloaded.changes.changed, vec![PrincipalId::new("t-moved")]);
        // Before the record: the removed and the changed are out, the new one not yet in.
        assert!(has(&shared, "t-keep"));
        assert!(!has(&shared, "t-gone") && !has(&shared, "t-moved") && !has(&shared, "t-new"));
        shared.commit(&reloaded);
        assert!(has(&shared, "t-new") && has(&shared, "t-moved") && !has(&shared, "t-gone"));
        assert_eq!(shared.current().sha256(), reloaded.sha256);

        // Not recorded: undone whole.
        std::fs::write(&path, before.concat()).unwrap();
        let again = shared.reload(&path).unwrap();
        shared.undo(again);
        assert!(has(&shared, "t-new") && !has(&shared, "t-gone"));
        assert_eq!(shared.current().sha256(), reloaded.sha256);
    }
}
