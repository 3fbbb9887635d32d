//! Witness cosignatures: C2SP tlog-cosignature's `cosignature/v1` with Ed25519 (signature
//! type 0x04). A witness signs "as of this time, the largest consistent tree I have seen for
//! this origin has this root"; the signed message is
//!
//! ```text
//! cosignature/v1\n
//! time <unix seconds, decimal>\n
//! <the checkpoint's note text: origin, size, root, each newline-terminated>
//! ```
//!
//! and the note signature line is `— <name> base64(key id[4] || timestamp[8, big-endian] ||
//! signature[64])`, the key id being SHA-256(name || 0x0A || 0x04 || public key)[:4]. The
//! type byte keeps a witness key from ever being mistaken for a log key (0x01), so a
//! cosignature can never pass as the log's own signature or the other way round.
//!
//! Key texts follow signed-note's verifier-key form with type 0x04 (`name+id+base64(0x04 ||
//! key)`); the private text mirrors Go's (`PRIVATE+KEY+name+id+base64(0x04 || seed)`).
//! The spec also defines ML-DSA-44 cosignatures (type 0x06); this module speaks Ed25519 only.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use super::checkpoint::{
    Checkpoint, KEY_ID_LEN, NoteError, SIG_PREFIX, SIGNER_PREFIX, key_id_hex, key_id_of,
    split_key_text_of, split_note, validate_key_name,
};

/// Signature type byte of timestamped Ed25519 cosignatures (c2sp.org/signed-note).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Bytes of a decoded cosignature after its key id: timestamp and Ed25519 signature.
const SIGNATURE_LEN: usize = 8 + 64;

/// The message a witness signs for `body` (a checkpoint's note text) at `time`.
pub fn message(body: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{body}")
}

/// A witness's public key: checks its cosignatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    key_id: [u8; KEY_ID_LEN],
    key: VerifyingKey,
}

impl WitnessKey {
    /// The name on the witness's signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key text: `<name>+<8 hex key id>+<base64(0x04 || public key)>`.
    pub fn to_text(&self) -> String {
        let mut material = Vec::with_capacity(33);
        material.push(ALG_COSIGNATURE_V1);
        material.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            key_id_hex(&self.key_id),
            BASE64.encode(material)
        )
    }

    /// This witness's cosignature among the signature lines of `note` (a checkpoint note
    /// with its signatures, extension lines allowed): `Ok(Some(time))` when one verifies (the
    /// latest time when the witness cosigned the same tree more than once), `Ok(None)` when
    /// the note carries none by this key, an error when a line claims this key and fails (the
    /// spec's "a signature from a known key that fails: reject the whole note").
    pub fn check(&self, note: &str) -> Result<Option<u64>, NoteError> {
        let (text, lines) = split_note(note)?;
        let mut found: Option<u64> = None;
        for line in lines {
            if line.name != self.name || line.key_id != self.key_id {
                continue;
            }
            let time = self.verify(text, &line.sig)?;
            found = Some(found.map_or(time, |t| t.max(time)));
        }
        Ok(found)
    }

    /// Whether a signature line names this key (its name and key id), whether or not it
    /// verifies.
    pub fn owns_line(&self, line: &str) -> bool {
        let line = line.strip_suffix('\n').unwrap_or(line);
        super::checkpoint::parse_sig_line(line)
            .is_ok_and(|s| s.name == self.name && s.key_id == self.key_id)
    }

    /// Checks one signature line (`— name base64…`, with or without its newline) over the
    /// checkpoint note text `body`; returns the cosignature's time.
    pub fn check_line(&self, body: &str, line: &str) -> Result<u64, NoteError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let sig = super::checkpoint::parse_sig_line(line)?;
        if sig.name != self.name || sig.key_id != self.key_id {
            return Err(NoteError::MissingSignature);
        }
        self.verify(body, &sig.sig)
    }

    /// Verifies `timestamp || signature` over the cosigned message of `body`.
    fn verify(&self, body: &str, sig: &[u8]) -> Result<u64, NoteError> {
        if sig.len() != SIGNATURE_LEN {
            return Err(NoteError::InvalidSignature);
        }
        let (time, sig) = sig.split_at(8);
        let time = u64::from_be_bytes(time.try_into().map_err(|_| NoteError::InvalidSignature)?);
        // The spec caps timestamps at 2^63 - 1.
        if time > i64::MAX as u64 {
            return Err(NoteError::InvalidSignature);
        }
        let sig =
            ed25519_dalek::Signature::from_slice(sig).map_err(|_| NoteError::InvalidSignature)?;
        self.key
            .verify_strict(message(body, time).as_bytes(), &sig)
            .map_err(|_| NoteError::InvalidSignature)?;
        Ok(time)
    }
}

/// A witness's private key: cosigns checkpoints.
pub struct Cosigner {
    name: String,
    key_id: [u8; KEY_ID_LEN],
    key: SigningKey,
}

impl fmt::Debug for Cosigner {
    // Hand-written so that the private key can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .field("key_id", &key_id_hex(&self.key_id))
            .finish_non_exhaustive()
    }
}

impl Cosigner {
    fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        validate_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Cosigner {
            name: name.to_owned(),
            key_id: key_id_of(name, ALG_COSIGNATURE_V1, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// The name on this witness's signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn key(&self) -> WitnessKey {
        WitnessKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The signature line (newline-terminated) cosigning `cp` at `time` (unix seconds).
    pub fn cosign(&self, cp: &Checkpoint, time: u64) -> String {
        self.cosign_text(&cp.body(), time)
    }

    /// The signature line cosigning a checkpoint's whole note text `text` (extension lines
    /// included, as the spec requires) at `time`.
    pub fn cosign_text(&self, text: &str, time: u64) -> String {
        let sig = self.key.sign(message(text, time).as_bytes());
        let mut blob = Vec::with_capacity(KEY_ID_LEN + SIGNATURE_LEN);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&time.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(blob))
    }

    fn to_text(&self) -> String {
        let mut material = Zeroizing::new(Vec::with_capacity(33));
        material.push(ALG_COSIGNATURE_V1);
        material.extend_from_slice(self.key.as_bytes());
        format!(
            "{SIGNER_PREFIX}{}+{}+{}",
            self.name,
            key_id_hex(&self.key_id),
            BASE64.encode(material.as_slice())
        )
    }
}

/// Generates a witness key pair named `name`: `(private text, public text)`.
pub fn generate(name: &str, rng: &mut impl rand::CryptoRng) -> Result<(String, String), NoteError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut_slice());
    let c = Cosigner::from_seed(name, &seed)?;
    Ok((c.to_text(), c.key().to_text()))
}

/// Parses a witness's private key text, checking its key id.
pub fn parse_cosigner(text: &str) -> Result<Cosigner, NoteError> {
    let rest = text
        .strip_prefix(SIGNER_PREFIX)
        .ok_or(NoteError::MalformedKey("missing PRIVATE+KEY+ prefix"))?;
    let parts = split_key_text_of(rest, ALG_COSIGNATURE_V1)?;
    let c = Cosigner::from_seed(parts.name, &parts.key)?;
    if c.key_id != parts.key_id {
        return Err(NoteError::KeyIdMismatch);
    }
    Ok(c)
}

/// Parses a witness's public key text (type 0x04), checking its key id.
pub fn parse_witness_key(text: &str) -> Result<WitnessKey, NoteError> {
    let parts = split_key_text_of(text, ALG_COSIGNATURE_V1)?;
    let key = VerifyingKey::from_bytes(&parts.key)
        .map_err(|_| NoteError::MalformedKey("not a valid ed25519 public key"))?;
    validate_key_name(parts.name)?;
    if key.is_weak() {
        return Err(NoteError::WeakKey);
    }
    let w = WitnessKey {
        name: parts.name.to_owned(),
        key_id: key_id_of(parts.name, ALG_COSIGNATURE_V1, key.as_bytes()),
        key,
    };
    if w.key_id != parts.key_id {
        return Err(NoteError::KeyIdMismatch);
    }
    Ok(w)
}

/// The witnesses among `keys` whose cosignatures on `note` verify, with their times. A line
/// that claims one of `keys` and does not verify is an error: someone altered the note or
/// the tree it names.
pub fn cosigners(note: &str, keys: &[WitnessKey]) -> Result<Vec<(String, u64)>, NoteError> {
    let mut found = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        // A key given twice is one witness, not two.
        if keys[..i].contains(k) {
            continue;
        }
        if let Some(time) = k.check(note)? {
            found.push((k.name.clone(), time));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::checkpoint;
    use rand::SeedableRng;

    fn pair(name: &str, seed: u64) -> (Cosigner, WitnessKey) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let (private, public) = generate(name, &mut rng).unwrap();
        (
            parse_cosigner(&private).unwrap(),
            parse_witness_key(&public).unwrap(),
        )
    }

    fn log_note() -> (Checkpoint, String, checkpoint::Verifier) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let (s, v) = checkpoint::generate("bank.example/log", &mut rng).unwrap();
        let signer = checkpoint::parse_signer(&s).unwrap();
        let cp = Checkpoint::new("bank.example/log", 20, [7; 32]).unwrap();
        let note = signer.sign(&cp);
        (cp, note, checkpoint::parse_verifier(&v).unwrap())
    }

    /// The example cosignature of c2sp.org/tlog-cosignature: its key id, its timestamp and
    /// its length decode as the spec says (the key itself is not published with it).
    #[test]
    fn the_specs_example_line_has_the_specified_shape() {
        let line = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5\
                    OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
        let sig = checkpoint::parse_sig_line(line).unwrap();
        assert_eq!(sig.key_id, [0x8d, 0x66, 0xcf, 0x3f]);
        assert_eq!(sig.sig.len(), SIGNATURE_LEN);
        assert_eq!(
            u64::from_be_bytes(sig.sig[..8].try_into().unwrap()),
            1679315147
        );
    }

    #[test]
    fn a_cosignature_verifies_and_carries_its_time() {
        let (cosigner, key) = pair("audit.bank.example/w1", 1);
        let (cp, note, log) = log_note();
        let line = cosigner.cosign(&cp, 1_700_000_000);
        let cosigned = format!("{note}{line}");
        assert_eq!(key.check(&cosigned).unwrap(), Some(1_700_000_000));
        assert_eq!(key.check_line(&cp.body(), &line).unwrap(), 1_700_000_000);
        // The log's own signature still opens the note: unknown lines are ignored.
        assert_eq!(checkpoint::open(&cosigned, &log, &cp.origin).unwrap(), cp);
        // The message is the one the spec gives.
        assert_eq!(
            message(&cp.body(), 5),
            format!("cosignature/v1\ntime 5\n{}", cp.body())
        );
    }

    #[test]
    fn a_cosignature_over_another_tree_or_time_fails() {
        let (cosigner, key) = pair("w", 2);
        let (cp, note, _) = log_note();
        let line = cosigner.cosign(&cp, 10);
        let other = Checkpoint::new(cp.origin.clone(), 21, cp.root).unwrap();
        assert_eq!(
            key.check_line(&other.body(), &line),
            Err(NoteError::InvalidSignature)
        );
        // Moving the timestamp breaks the signature.
        let cosigned = format!("{note}{line}");
        let (_, lines) = split_note(&cosigned).unwrap();
        let mut blob = key.key_id.to_vec();
        blob.extend_from_slice(&11u64.to_be_bytes());
        blob.extend_from_slice(&lines[1].sig[8..]);
        let forged = format!("{note}{SIG_PREFIX}w {}\n", BASE64.encode(blob));
        assert_eq!(key.check(&forged), Err(NoteError::InvalidSignature));
    }

    #[test]
    fn a_tree_cosigned_twice_by_one_witness_reads_as_its_latest_time() {
        let (cosigner, key) = pair("w", 6);
        let (cp, note, _) = log_note();
        let twice = format!(
            "{note}{}{}",
            cosigner.cosign(&cp, 5),
            cosigner.cosign(&cp, 9)
        );
        assert_eq!(key.check(&twice).unwrap(), Some(9));
        assert_eq!(
            cosigners(&twice, &[key.clone(), key.clone()])
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn another_witness_or_the_log_key_is_not_this_witness() {
        let (a, _) = pair("w", 3);
        let (_, b) = pair("w", 4);
        let (cp, note, _) = log_note();
        let cosigned = format!("{note}{}", a.cosign(&cp, 1));
        // Same name, other key: another key id, so the line is someone else's.
        assert_eq!(b.check(&cosigned).unwrap(), None);
        assert!(cosigners(&cosigned, &[b]).unwrap().is_empty());
    }

    #[test]
    fn key_texts_round_trip_and_refuse_the_log_type() {
        let (c, k) = pair("w.example", 5);
        assert_eq!(parse_witness_key(&k.to_text()).unwrap(), k);
        assert_eq!(parse_cosigner(&c.to_text()).unwrap().key(), k);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let (_, log_key) = checkpoint::generate("w.example", &mut rng).unwrap();
        assert_eq!(
            parse_witness_key(&log_key),
            Err(NoteError::UnsupportedAlgorithm(0x01))
        );
        assert!(format!("{c:?}").contains("w.example"));
        assert!(!format!("{c:?}").contains(&c.to_text()));
    }
}
