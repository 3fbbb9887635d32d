//! Signed tree-head checkpoints for the Countersign ledger.
//!
//! This module owns the wire formats that let anyone outside the engine check
//! what the ledger committed to:
//!
//! * the checkpoint body of [c2sp.org/tlog-checkpoint] (origin, tree size,
//!   base64 RFC 6962 root hash);
//! * the [c2sp.org/signed-note] envelope around it, with Ed25519 signatures
//!   (signature type `0x01`);
//! * the text encodings of signer and verifier keys used by Go's
//!   `golang.org/x/mod/sumdb/note` package, so keys and notes are
//!   byte-compatible with the Go ecosystem (witnesses, `tlog` tooling).
//!
//! Verification is deliberately stricter than the reference implementation
//! where the spec leaves room: Ed25519 is checked with `verify_strict`
//! (rejecting small-order keys and non-canonical encodings), base64 must be
//! canonical, a note may carry only one signature line for the key being
//! checked, and checkpoint extension lines are rejected because we never emit
//! them (so the signed text is always exactly [`Checkpoint::body`]).
//!
//! The parsers are meant to face untrusted input: every failure is a
//! [`NoteError`], never a panic.
//!
//! [c2sp.org/tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
//! [c2sp.org/signed-note]: https://c2sp.org/signed-note

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// An RFC 6962 Merkle tree hash (SHA-256).
pub type Hash = [u8; 32];

/// Signature type byte for Ed25519 in signed-note key IDs and key texts.
const ALG_ED25519: u8 = 0x01;

/// Signature line prefix: U+2014 EM DASH followed by a space.
pub(super) const SIG_PREFIX: &str = "\u{2014} ";

/// Prefix of Go's private-key text.
pub(super) const SIGNER_PREFIX: &str = "PRIVATE+KEY+";

/// Notes larger than this are rejected before any parsing. Checkpoints are a
/// few hundred bytes; the cap leaves room for many (even post-quantum)
/// cosignatures while bounding the work an attacker can make us do.
const MAX_NOTE_BYTES: usize = 1 << 20;

/// Same cap as Go's `note.Open`; the spec requires accepting at least 16.
const MAX_SIGNATURES: usize = 100;

/// Length of the key ID prefix in a signature.
pub(super) const KEY_ID_LEN: usize = 4;

/// Errors from parsing keys and opening notes. Messages are lowercase and
/// never echo untrusted input, so they are safe to log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoteError {
    /// Key names must be non-empty, without whitespace, control characters or '+'.
    #[error("invalid key name")]
    InvalidKeyName,
    /// Origins must be a non-empty single line without control characters.
    #[error("invalid checkpoint origin")]
    InvalidOrigin,
    /// A signer or verifier key text does not have the expected shape.
    #[error("malformed key text: {0}")]
    MalformedKey(&'static str),
    /// The key text names a signature algorithm other than Ed25519.
    #[error("unsupported key algorithm {0:#04x}")]
    UnsupportedAlgorithm(u8),
    /// The key ID in a key text does not match its name and public key.
    #[error("key id does not match key name and public key")]
    KeyIdMismatch,
    /// The public key is a small-order point; no signature by it can be trusted.
    #[error("weak ed25519 public key")]
    WeakKey,
    /// The note exceeds the size limit.
    #[error("note too large")]
    NoteTooLarge,
    /// The note has more signature lines than we accept.
    #[error("too many signatures")]
    TooManySignatures,
    /// The signed-note envelope is syntactically invalid.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// A signature line claims our key but does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// More than one signature line claims our key.
    #[error("duplicate signature for verifier key")]
    DuplicateSignature,
    /// No signature line was made by the verifier key.
    #[error("note has no signature from verifier key")]
    MissingSignature,
    /// The signed body is not a checkpoint we accept.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// The checkpoint is for a different log.
    #[error("checkpoint origin does not match")]
    OriginMismatch,
}

/// A log tree head: the log identity, its size and its RFC 6962 root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// Builds a checkpoint, rejecting origins that would make the body
    /// unparseable. Prefer this over a struct literal for untrusted origins.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, NoteError> {
        let origin = origin.into();
        validate_origin(&origin)?;
        Ok(Self { origin, size, root })
    }

    /// The checkpoint note text: origin, decimal size and base64 root, each
    /// newline-terminated. This is exactly the byte string that is signed.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        )
    }
}

/// Checks origin syntax: non-empty, one line, no control characters (the
/// signed-note format forbids them anywhere in a note).
fn validate_origin(origin: &str) -> Result<(), NoteError> {
    if origin.is_empty() || origin.chars().any(char::is_control) {
        return Err(NoteError::InvalidOrigin);
    }
    Ok(())
}

/// Checks key name syntax per c2sp.org/signed-note: non-empty, no Unicode
/// whitespace, no '+'. Control characters are also refused because a name
/// containing one could only produce notes that every verifier rejects.
pub(super) fn validate_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        return Err(NoteError::InvalidKeyName);
    }
    Ok(())
}

/// Key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4], as the spec
/// recommends for Ed25519 and as Go computes it.
fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    key_id_of(name, ALG_ED25519, public_key)
}

/// Key ID = SHA-256(name || 0x0A || signature type || public key)[:4]: signed-note's
/// recommended form, for every signature type (0x01 notes, 0x04 cosignatures).
pub(super) fn key_id_of(name: &str, alg: u8, public_key: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', alg])
        .chain_update(public_key)
        .finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

/// Renders a key ID the way key texts carry it: 8 lowercase hex digits.
pub(super) fn key_id_hex(id: &[u8; KEY_ID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses exactly 8 lowercase hex digits. Only the canonical form we (and
/// Go) emit is accepted, so one key has exactly one text.
fn parse_key_id_hex(s: &str) -> Result<[u8; KEY_ID_LEN], NoteError> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * KEY_ID_LEN {
        return Err(NoteError::MalformedKey("key id must be 8 hex digits"));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(NoteError::MalformedKey(
            "key id must be lowercase hex digits",
        )),
    };
    let mut id = [0u8; KEY_ID_LEN];
    for (out, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
        *out = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(id)
}

/// The parts of a key text after syntax checks.
pub(super) struct KeyText<'a> {
    pub(super) name: &'a str,
    pub(super) key_id: [u8; KEY_ID_LEN],
    /// Zeroizing because for signer texts these bytes are the private seed.
    pub(super) key: Zeroizing<[u8; 32]>,
}

/// Splits `<name>+<hex id>+<base64 key>` and decodes the key as
/// `0x01 || 32 bytes`. The base64 part may itself contain '+', so only the
/// first two '+' are separators (names cannot contain '+').
fn split_key_text(text: &str) -> Result<KeyText<'_>, NoteError> {
    split_key_text_of(text, ALG_ED25519)
}

/// As `split_key_text`, for keys of signature type `want`.
pub(super) fn split_key_text_of(text: &str, want: u8) -> Result<KeyText<'_>, NoteError> {
    let (name, rest) = text
        .split_once('+')
        .ok_or(NoteError::MalformedKey("missing key id"))?;
    let (id_hex, key_b64) = rest
        .split_once('+')
        .ok_or(NoteError::MalformedKey("missing key material"))?;
    validate_key_name(name)?;
    let id = parse_key_id_hex(id_hex)?;
    // Zeroizing because for signer texts these bytes are the private seed.
    let raw = Zeroizing::new(
        BASE64
            .decode(key_b64)
            .map_err(|_| NoteError::MalformedKey("key material is not base64"))?,
    );
    let (&alg, key) = raw
        .split_first()
        .ok_or(NoteError::MalformedKey("empty key material"))?;
    if alg != want {
        return Err(NoteError::UnsupportedAlgorithm(alg));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    if key.len() != out.len() {
        return Err(NoteError::MalformedKey("ed25519 key must be 32 bytes"));
    }
    out.copy_from_slice(key);
    Ok(KeyText {
        name,
        key_id: id,
        key: out,
    })
}

/// A public key that can check checkpoints, with its note name and key ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: [u8; KEY_ID_LEN],
    key: VerifyingKey,
}

impl Verifier {
    /// Builds a verifier, refusing small-order public keys up front:
    /// `verify_strict` would reject every signature by them anyway, and a
    /// clear error at configuration time beats a silent "never verifies".
    fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        validate_key_name(name)?;
        if key.is_weak() {
            return Err(NoteError::WeakKey);
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, key.as_bytes()),
            key,
        })
    }

    /// The key name that appears on signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID (big-endian, as on the wire).
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The verifier key text: `<name>+<8 hex key id>+<base64(0x01 || public key)>`.
    pub fn to_text(&self) -> String {
        let mut material = Vec::with_capacity(33);
        material.push(ALG_ED25519);
        material.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            key_id_hex(&self.key_id),
            BASE64.encode(material)
        )
    }

    /// Checks one decoded signature (key ID stripped) over `text`.
    fn verify(&self, text: &[u8], sig: &[u8]) -> Result<(), NoteError> {
        let sig =
            ed25519_dalek::Signature::from_slice(sig).map_err(|_| NoteError::InvalidSignature)?;
        self.key
            .verify_strict(text, &sig)
            .map_err(|_| NoteError::InvalidSignature)
    }
}

/// A private key that signs checkpoints under a note key name.
pub struct Signer {
    name: String,
    key_id: [u8; KEY_ID_LEN],
    key: SigningKey,
}

impl fmt::Debug for Signer {
    // Hand-written so that the private key can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &key_id_hex(&self.key_id))
            .finish_non_exhaustive()
    }
}

impl Signer {
    fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        validate_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// The key name that appears on signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public verifier.
    pub fn verifier(&self) -> Verifier {
        // Built directly rather than via `Verifier::new`: the name was
        // validated when this signer was made, and a key derived from a
        // seed is never small-order.
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The signer key text in Go's format:
    /// `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || seed)>`.
    fn to_text(&self) -> String {
        let mut material = Zeroizing::new(Vec::with_capacity(33));
        material.push(ALG_ED25519);
        material.extend_from_slice(self.key.as_bytes());
        format!(
            "{SIGNER_PREFIX}{}+{}+{}",
            self.name,
            key_id_hex(&self.key_id),
            BASE64.encode(material.as_slice())
        )
    }

    /// Signs `cp` and returns the complete signed note text.
    ///
    /// The origin is not re-validated here (the signature is infallible by
    /// design); an origin with a newline or control character yields a note
    /// that [`open`] rejects. Use [`Checkpoint::new`] or [`Signer::try_sign`]
    /// when the origin is not a trusted constant.
    pub fn sign(&self, cp: &Checkpoint) -> String {
        self.sign_text(&cp.body())
    }

    /// Like [`Signer::sign`], but refuses a checkpoint whose origin is invalid.
    pub fn try_sign(&self, cp: &Checkpoint) -> Result<String, NoteError> {
        validate_origin(&cp.origin)?;
        Ok(self.sign(cp))
    }

    /// Signs an arbitrary note text (must end in '\n'); kept private so the
    /// only thing this key ever signs in production is a checkpoint body.
    fn sign_text(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(KEY_ID_LEN + 64);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&sig.to_bytes());
        format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(blob)
        )
    }
}

/// Generates a fresh Ed25519 key pair named `name` and returns
/// `(signer text, verifier text)`. `rng` must be a cryptographic RNG
/// (`rand::CryptoRng` implies `rand::RngCore`), e.g. `rand::rngs::OsRng`.
pub fn generate(name: &str, rng: &mut impl rand::CryptoRng) -> Result<(String, String), NoteError> {
    // The seed is drawn with rand 0.9 and handed to dalek as bytes, which
    // avoids pulling in dalek's rand_core 0.6 integration.
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut_slice());
    let signer = Signer::from_seed(name, &seed)?;
    Ok((signer.to_text(), signer.verifier().to_text()))
}

/// Parses a signer key text as produced by [`generate`] or Go's
/// `note.GenerateKey`, checking that the key ID matches the derived public key.
pub fn parse_signer(text: &str) -> Result<Signer, NoteError> {
    let rest = text
        .strip_prefix(SIGNER_PREFIX)
        .ok_or(NoteError::MalformedKey("missing PRIVATE+KEY+ prefix"))?;
    let parts = split_key_text(rest)?;
    let signer = Signer::from_seed(parts.name, &parts.key)?;
    if signer.key_id != parts.key_id {
        return Err(NoteError::KeyIdMismatch);
    }
    Ok(signer)
}

/// Parses a verifier key text, checking that the key ID matches the key.
pub fn parse_verifier(text: &str) -> Result<Verifier, NoteError> {
    let parts = split_key_text(text)?;
    let key = VerifyingKey::from_bytes(&parts.key)
        .map_err(|_| NoteError::MalformedKey("not a valid ed25519 public key"))?;
    let verifier = Verifier::new(parts.name, key)?;
    if verifier.key_id != parts.key_id {
        return Err(NoteError::KeyIdMismatch);
    }
    Ok(verifier)
}

/// Verifies a signed checkpoint note: exactly one valid signature by
/// `verifier` is required (signatures by unknown keys are ignored, as the
/// spec says), the body must parse as a checkpoint whose origin equals
/// `origin`; size must be decimal without leading zeros (except "0"); root
/// must be 32 bytes of std base64.
pub fn open(note: &str, verifier: &Verifier, origin: &str) -> Result<Checkpoint, NoteError> {
    let text = verify_note(note, verifier)?;
    let cp = parse_checkpoint(text)?;
    if cp.origin != origin {
        return Err(NoteError::OriginMismatch);
    }
    Ok(cp)
}

/// Verifies `note` with `verifier` like [`open`], but for any log that follows the spec: the
/// checkpoint may carry extension lines (which this server never writes). Returns the
/// checkpoint's origin, size and root, and the whole signed text (extension lines included),
/// which is what a witness cosigns.
pub fn open_any<'a>(
    note: &'a str,
    verifier: &Verifier,
) -> Result<(Checkpoint, &'a str), NoteError> {
    let text = verify_note(note, verifier)?;
    let body = text
        .strip_suffix('\n')
        .ok_or(NoteError::MalformedCheckpoint(
            "body must end with a newline",
        ))?;
    let mut lines = body.split('\n');
    let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(NoteError::MalformedCheckpoint("fewer than three lines"));
    };
    if lines.any(str::is_empty) {
        return Err(NoteError::MalformedCheckpoint("empty extension line"));
    }
    validate_origin(origin).map_err(|_| NoteError::MalformedCheckpoint("invalid origin"))?;
    let cp = Checkpoint {
        origin: origin.to_owned(),
        size: parse_tree_size(size)?,
        root: parse_root(root)?,
    };
    Ok((cp, text))
}

/// Reads a checkpoint's origin, size and root without checking any signature: for tools that
/// compare roots (offline verification without a key, copying a store) and trust the note
/// for nothing else.
pub fn parse_unverified(note: &str) -> Option<Checkpoint> {
    let mut lines = note.lines();
    let origin = lines.next()?;
    let size = lines.next()?.parse().ok()?;
    let root: Hash = BASE64.decode(lines.next()?).ok()?.try_into().ok()?;
    Checkpoint::new(origin, size, root).ok()
}

/// The key name and key id a signature line claims, if it is a well-formed line.
pub fn parse_sig_line_owner(line: &str) -> Option<(&str, [u8; 4])> {
    parse_sig_line(line).ok().map(|s| (s.name, s.key_id))
}

/// One syntactically valid signature line.
pub(super) struct SigLine<'a> {
    pub(super) name: &'a str,
    pub(super) key_id: [u8; KEY_ID_LEN],
    /// The signature bytes after the key ID.
    pub(super) sig: Vec<u8>,
}

pub(super) fn parse_sig_line(line: &str) -> Result<SigLine<'_>, NoteError> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(NoteError::MalformedNote(
            "signature line must start with em dash",
        ))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(NoteError::MalformedNote("signature line has no signature"))?;
    validate_key_name(name)
        .map_err(|_| NoteError::MalformedNote("invalid key name on signature line"))?;
    // The STANDARD engine requires canonical padding and zero trailing bits,
    // so each signature has exactly one accepted encoding.
    let mut sig = BASE64
        .decode(b64)
        .map_err(|_| NoteError::MalformedNote("signature is not base64"))?;
    // Go requires at least one signature byte after the key ID.
    if sig.len() <= KEY_ID_LEN {
        return Err(NoteError::MalformedNote("signature too short"));
    }
    let mut key_id = [0u8; KEY_ID_LEN];
    key_id.copy_from_slice(&sig[..KEY_ID_LEN]);
    sig.drain(..KEY_ID_LEN);
    Ok(SigLine { name, key_id, sig })
}

/// Splits a signed note into its text (with its final newline) and its signature lines,
/// each checked for shape: the envelope rules every reader of a note shares.
pub(super) fn split_note(note: &str) -> Result<(&str, Vec<SigLine<'_>>), NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::NoteTooLarge);
    }
    // `&str` already guarantees UTF-8; the format also bans control
    // characters other than '\n' (this is what rejects CRLF).
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::MalformedNote("control character in note"));
    }
    // The text ends at the *last* blank line; the text itself may contain
    // blank lines (a checkpoint cannot, which parse_checkpoint enforces).
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::MalformedNote("no blank line before signatures"))?;
    let text = &note[..=split];
    let sigs = &note[split + 2..];
    let sigs = sigs.strip_suffix('\n').ok_or(NoteError::MalformedNote(
        "signatures must end with a newline",
    ))?;
    if sigs.is_empty() {
        return Err(NoteError::MalformedNote("no signature lines"));
    }
    // Enforce the line cap before doing any per-line work.
    if sigs.split('\n').nth(MAX_SIGNATURES).is_some() {
        return Err(NoteError::TooManySignatures);
    }
    // Every line must be well-formed, even from keys we ignore, so a
    // note is either valid as a whole or rejected (matches Go).
    let lines = sigs
        .split('\n')
        .map(parse_sig_line)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((text, lines))
}

/// Checks the signed-note envelope and our signature, returning the signed
/// text (including its final newline). Nothing in the text is interpreted
/// until the signature has verified, as the spec requires.
fn verify_note<'a>(note: &'a str, verifier: &Verifier) -> Result<&'a str, NoteError> {
    let (text, lines) = split_note(note)?;
    let mut ours: Option<SigLine<'_>> = None;
    for sig in lines {
        // Only the (name, key id) pair identifies our key; a line sharing
        // just one of them is someone else's and MUST be ignored.
        if sig.name != verifier.name || sig.key_id != verifier.key_id {
            continue;
        }
        // Go skips repeats of a known key; we refuse them, because an
        // honest signer (ours included) never emits two lines per key and a
        // note should have one unambiguous reading.
        if ours.is_some() {
            return Err(NoteError::DuplicateSignature);
        }
        ours = Some(sig);
    }
    let ours = ours.ok_or(NoteError::MissingSignature)?;
    verifier.verify(text.as_bytes(), &ours.sig)?;
    Ok(text)
}

/// Parses a checkpoint body (trusted only after signature verification).
pub(super) fn parse_checkpoint(text: &str) -> Result<Checkpoint, NoteError> {
    let body = text
        .strip_suffix('\n')
        .ok_or(NoteError::MalformedCheckpoint(
            "body must end with a newline",
        ))?;
    let mut lines = body.split('\n');
    let origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or(NoteError::MalformedCheckpoint("missing origin"))?;
    let size = lines
        .next()
        .ok_or(NoteError::MalformedCheckpoint("missing tree size"))?;
    let root = lines
        .next()
        .ok_or(NoteError::MalformedCheckpoint("missing root hash"))?;
    // Extension lines are legal in the spec but we never sign them; refusing
    // them keeps `open(n).body()` equal to the signed text, byte for byte.
    if lines.next().is_some() {
        return Err(NoteError::MalformedCheckpoint("unexpected extension lines"));
    }
    validate_origin(origin).map_err(|_| NoteError::MalformedCheckpoint("invalid origin"))?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size: parse_tree_size(size)?,
        root: parse_root(root)?,
    })
}

/// ASCII decimal, no sign, no leading zeros except "0" itself, fits in u64.
fn parse_tree_size(s: &str) -> Result<u64, NoteError> {
    // Checked by hand because `u64::from_str` accepts a leading '+'.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NoteError::MalformedCheckpoint("tree size is not decimal"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(NoteError::MalformedCheckpoint(
            "tree size has leading zeros",
        ));
    }
    s.parse::<u64>()
        .map_err(|_| NoteError::MalformedCheckpoint("tree size out of range"))
}

fn parse_root(s: &str) -> Result<Hash, NoteError> {
    // 32 bytes are always 44 base64 characters; checking first also bounds
    // the decode work.
    if s.len() != 44 {
        return Err(NoteError::MalformedCheckpoint("root hash has wrong length"));
    }
    let bytes = BASE64
        .decode(s)
        .map_err(|_| NoteError::MalformedCheckpoint("root hash is not base64"))?;
    bytes
        .try_into()
        .map_err(|_| NoteError::MalformedCheckpoint("root hash is not 32 bytes"))
}

#[cfg(test)]
mod tests;
