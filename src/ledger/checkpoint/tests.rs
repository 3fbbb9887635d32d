//! Unit tests of the checkpoint formats: the Go (sumdb note) test vectors byte for byte,
//! round trips, and every malformed or tampered key, body and envelope being refused.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// Known-answer vectors from golang.org/x/mod/sumdb/note/note_test.go.
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

const ORIGIN: &str = "countersign.example/ledger";

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x6962)
}

fn keypair(name: &str) -> (Signer, Verifier) {
    let (s, v) = generate(name, &mut rng()).unwrap();
    (parse_signer(&s).unwrap(), parse_verifier(&v).unwrap())
}

fn sample() -> Checkpoint {
    Checkpoint::new(ORIGIN, 20852163, [0xa5; 32]).unwrap()
}

#[test]
fn go_verifier_key_vector() {
    let v = parse_verifier(PETER_VKEY).unwrap();
    assert_eq!(v.name(), "PeterNeumann");
    assert_eq!(v.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
    assert_eq!(v.to_text(), PETER_VKEY);
    let e = parse_verifier(ENOCH_VKEY).unwrap();
    assert_eq!(e.key_id(), [0xaf, 0x0c, 0xfe, 0x78]);
}

#[test]
fn go_signer_key_vector() {
    let s = parse_signer(PETER_SKEY).unwrap();
    assert_eq!(s.name(), "PeterNeumann");
    assert_eq!(s.to_text(), PETER_SKEY);
    assert_eq!(s.verifier().to_text(), PETER_VKEY);
}

#[test]
fn go_sign_vector_is_byte_identical() {
    let s = parse_signer(PETER_SKEY).unwrap();
    assert_eq!(s.sign_text(GO_TEXT), format!("{GO_TEXT}\n{PETER_SIG}"));
}

#[test]
fn go_open_vectors() {
    let peter = parse_verifier(PETER_VKEY).unwrap();
    let enoch = parse_verifier(ENOCH_VKEY).unwrap();
    let both = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(verify_note(&both, &peter), Ok(GO_TEXT));
    assert_eq!(verify_note(&both, &enoch), Ok(GO_TEXT));
    // Go's "invalid signature" vector: four base64 chars spliced in.
    let bad = format!("{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert_eq!(
        verify_note(&format!("{GO_TEXT}\n{bad}"), &peter),
        Err(NoteError::InvalidSignature)
    );
    // Go's malformed-message vectors.
    let bad_msgs = [
        GO_TEXT.to_owned(),
        format!("{GO_TEXT}\n"),
        format!("{GO_TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{GO_TEXT}\n{PETER_SIG}"),
        format!(
            "{GO_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
        ),
        format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
    ];
    for msg in &bad_msgs {
        assert!(verify_note(msg, &peter).is_err(), "accepted {msg:?}");
    }
    assert_eq!(
        verify_note(&format!("{GO_TEXT}\n{}", PETER_SIG.repeat(101)), &peter),
        Err(NoteError::TooManySignatures)
    );
}

#[test]
fn go_bad_key_vectors() {
    // Wrong key length and unknown algorithm, each with a consistent key id.
    assert!(
        parse_verifier(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err()
    );
    assert_eq!(
        parse_verifier("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .unwrap_err(),
        NoteError::UnsupportedAlgorithm(0x65)
    );
}

/// Go's mangling test: every proper substring and every single-byte
/// increment of a key text must be refused.
#[test]
fn mangled_key_texts_are_rejected() {
    for (good, is_signer) in [(PETER_VKEY, false), (PETER_SKEY, true)] {
        let parse = |s: &str| {
            if is_signer {
                parse_signer(s).map(|_| ())
            } else {
                parse_verifier(s).map(|_| ())
            }
        };
        let b = good.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    let s = std::str::from_utf8(&b[i..j]).unwrap();
                    assert!(parse(s).is_err(), "accepted {s:?}");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] += 1;
            let s = String::from_utf8(m).unwrap();
            assert!(parse(&s).is_err(), "accepted {s:?}");
        }
    }
    // Uppercase hex is not our canonical form.
    assert!(parse_verifier(&PETER_VKEY.replace("c74f20a3", "C74F20A3")).is_err());
}

#[test]
fn round_trip() {
    let (signer, verifier) = keypair(ORIGIN);
    assert_eq!(signer.name(), ORIGIN);
    assert_eq!(verifier.name(), ORIGIN);
    for cp in [
        sample(),
        Checkpoint::new(ORIGIN, 0, [0; 32]).unwrap(),
        Checkpoint::new(ORIGIN, u64::MAX, [0xff; 32]).unwrap(),
    ] {
        let note = signer.sign(&cp);
        assert!(note.starts_with(&cp.body()));
        assert_eq!(open(&note, &verifier, ORIGIN), Ok(cp));
    }
    assert_eq!(
        parse_verifier(&verifier.to_text()).unwrap(),
        signer.verifier()
    );
}

#[test]
fn body_format() {
    let cp = Checkpoint {
        origin: "example.com/behind-the-sofa".into(),
        size: 20852163,
        root: BASE64
            .decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
            .unwrap()
            .try_into()
            .unwrap(),
    };
    assert_eq!(
        cp.body(),
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    );
    assert_eq!(parse_checkpoint(&cp.body()), Ok(cp));
}

#[test]
fn key_text_shapes() {
    let (s, v) = generate("log.example/a", &mut rng()).unwrap();
    assert!(s.starts_with("PRIVATE+KEY+log.example/a+"));
    let verifier = parse_verifier(&v).unwrap();
    let hex = key_id_hex(&verifier.key_id());
    assert_eq!(v, format!("log.example/a+{hex}+{}", &v[v.len() - 44..]));
    assert_eq!(s.split('+').nth(3), Some(hex.as_str()));
    // Debug output of a signer never contains the seed.
    let seed_b64 = &s[s.len() - 44..];
    assert!(!format!("{:?}", parse_signer(&s).unwrap()).contains(seed_b64));
}

#[test]
fn invalid_names_and_origins() {
    for name in ["", "a b", "a+b", "a\tb", "a\nb", "a\u{2003}b", "a\u{7f}b"] {
        assert_eq!(
            generate(name, &mut rng()).unwrap_err(),
            NoteError::InvalidKeyName
        );
    }
    for origin in ["", "a\nb", "a\r", "\u{0}"] {
        assert_eq!(
            Checkpoint::new(origin, 1, [0; 32]).unwrap_err(),
            NoteError::InvalidOrigin
        );
    }
    let (signer, verifier) = keypair(ORIGIN);
    let bad = Checkpoint {
        origin: "two\nlines".into(),
        size: 1,
        root: [0; 32],
    };
    assert_eq!(signer.try_sign(&bad), Err(NoteError::InvalidOrigin));
    // The infallible `sign` cannot produce a note that opens.
    assert!(open(&signer.sign(&bad), &verifier, "two\nlines").is_err());
}

#[test]
fn weak_public_key_is_rejected() {
    // The identity point (a small-order key) encodes as 0x01 then zeros.
    let mut pk = [0u8; 32];
    pk[0] = 1;
    let id = key_id("weak", &pk);
    let mut material = vec![ALG_ED25519];
    material.extend_from_slice(&pk);
    let text = format!("weak+{}+{}", key_id_hex(&id), BASE64.encode(material));
    assert_eq!(parse_verifier(&text).unwrap_err(), NoteError::WeakKey);
}

#[test]
fn wrong_origin_and_wrong_key() {
    let (signer, verifier) = keypair(ORIGIN);
    let note = signer.sign(&sample());
    assert_eq!(
        open(&note, &verifier, "other.example/log"),
        Err(NoteError::OriginMismatch)
    );
    // A different key under the same name has a different key id, so its
    // signature is "unknown" and ignored: nothing verifies.
    let (other, _) = generate(ORIGIN, &mut StdRng::seed_from_u64(7)).unwrap();
    let other = parse_signer(&other).unwrap();
    assert_ne!(other.verifier().key_id(), verifier.key_id());
    assert_eq!(
        open(&other.sign(&sample()), &verifier, ORIGIN),
        Err(NoteError::MissingSignature)
    );
}

/// A signature line with our name and key id but from another key: the
/// (name, id) pair matches, so it must be verified, and it fails.
#[test]
fn colliding_key_id_is_verified_and_rejected() {
    let (signer, verifier) = keypair(ORIGIN);
    let (other, _) = generate(ORIGIN, &mut StdRng::seed_from_u64(9)).unwrap();
    let other = parse_signer(&other).unwrap();
    let forged = Signer {
        name: other.name.clone(),
        key_id: signer.key_id,
        key: other.key,
    };
    assert_eq!(
        open(&forged.sign(&sample()), &verifier, ORIGIN),
        Err(NoteError::InvalidSignature)
    );
}

#[test]
fn unknown_and_duplicate_signatures() {
    let (signer, verifier) = keypair(ORIGIN);
    let (witness, _) = generate("witness.example", &mut StdRng::seed_from_u64(3)).unwrap();
    let witness = parse_signer(&witness).unwrap();
    let cp = sample();
    let ours = signer.sign(&cp);
    let our_line = &ours[cp.body().len() + 1..];
    let theirs = witness.sign(&cp);
    let their_line = &theirs[cp.body().len() + 1..];
    // A non-Ed25519 cosignature of a different length is still ignored.
    let foreign = format!("{SIG_PREFIX}other.example {}\n", BASE64.encode([7u8; 72]));

    for sigs in [
        format!("{our_line}{their_line}"),
        format!("{their_line}{our_line}"),
        format!("{foreign}{our_line}{their_line}"),
    ] {
        let note = format!("{}\n{sigs}", cp.body());
        assert_eq!(open(&note, &verifier, ORIGIN), Ok(cp.clone()));
    }
    // Only unknown signatures: rejected.
    assert_eq!(
        open(&theirs, &verifier, ORIGIN),
        Err(NoteError::MissingSignature)
    );
    // Two lines for our key, even identical ones: rejected.
    let dup = format!("{}\n{our_line}{their_line}{our_line}", cp.body());
    assert_eq!(
        open(&dup, &verifier, ORIGIN),
        Err(NoteError::DuplicateSignature)
    );
    // 100 signature lines are fine, 101 are not.
    let many = format!("{}\n{}{our_line}", cp.body(), their_line.repeat(99));
    assert_eq!(open(&many, &verifier, ORIGIN), Ok(cp.clone()));
    let too_many = format!("{}\n{}{our_line}", cp.body(), their_line.repeat(100));
    assert_eq!(
        open(&too_many, &verifier, ORIGIN),
        Err(NoteError::TooManySignatures)
    );
}

/// Every single-byte change, deletion and truncation of a valid note must
/// be rejected, whether it hits the body, the separator or the signature.
#[test]
fn tampering_with_any_byte_fails() {
    let (signer, verifier) = keypair(ORIGIN);
    let note = signer.sign(&sample());
    let b = note.as_bytes();
    let mut checked = 0;
    for i in 0..b.len() {
        for delta in [1u8, 2, 0x20, 0x40, 0x80] {
            let mut m = b.to_vec();
            m[i] ^= delta;
            if let Ok(s) = std::str::from_utf8(&m) {
                assert!(open(s, &verifier, ORIGIN).is_err(), "byte {i} ^ {delta}");
                checked += 1;
            }
        }
        let mut m = b.to_vec();
        m.remove(i);
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(open(s, &verifier, ORIGIN).is_err(), "delete byte {i}");
        }
        if let Ok(s) = std::str::from_utf8(&b[..i]) {
            assert!(open(s, &verifier, ORIGIN).is_err(), "truncate at {i}");
        }
    }
    assert!(checked > 3 * b.len());
    // Appending anything after the final newline is also rejected.
    assert!(open(&format!("{note}x"), &verifier, ORIGIN).is_err());
    assert!(open(&format!("{note}\n"), &verifier, ORIGIN).is_err());
}

/// Bodies that are validly signed but are not checkpoints we accept.
#[test]
fn malformed_checkpoint_bodies() {
    let (signer, verifier) = keypair(ORIGIN);
    let root = BASE64.encode([0xa5; 32]);
    let bodies = [
        format!("{ORIGIN}\n"),
        format!("{ORIGIN}\n1\n"),
        format!("\n1\n{root}\n"),
        format!("{ORIGIN}\n01\n{root}\n"),
        format!("{ORIGIN}\n00\n{root}\n"),
        format!("{ORIGIN}\n+1\n{root}\n"),
        format!("{ORIGIN}\n-0\n{root}\n"),
        format!("{ORIGIN}\n 1\n{root}\n"),
        format!("{ORIGIN}\n\n{root}\n"),
        format!("{ORIGIN}\n1.0\n{root}\n"),
        format!("{ORIGIN}\n18446744073709551616\n{root}\n"),
        format!("{ORIGIN}\n{}\n{root}\n", "9".repeat(5000)),
        format!("{ORIGIN}\n1\n{}\n", root.trim_end_matches('=')),
        format!("{ORIGIN}\n1\n{}\n", BASE64.encode([0u8; 31])),
        format!("{ORIGIN}\n1\n{}\n", BASE64.encode([0u8; 33])),
        format!("{ORIGIN}\n1\n{}\n", root.replace('p', "-")),
        format!("{ORIGIN}\n1\n{}\n", root.replace("U=", "V=")),
        format!("{ORIGIN}\n1\n{root}\next\n"),
        format!("{ORIGIN}\n1\n"),
    ];
    for body in &bodies {
        let note = signer.sign_text(body);
        let got = open(&note, &verifier, ORIGIN);
        assert!(
            matches!(got, Err(NoteError::MalformedCheckpoint(_))),
            "{body:?}: {got:?}"
        );
    }
    // Upper bound of u64 is accepted.
    let max = signer.sign_text(&format!("{ORIGIN}\n18446744073709551615\n{root}\n"));
    assert_eq!(open(&max, &verifier, ORIGIN).map(|c| c.size), Ok(u64::MAX));
}

#[test]
fn malformed_envelopes() {
    let (signer, verifier) = keypair(ORIGIN);
    let note = signer.sign(&sample());
    let body = sample().body();
    let sig_line = &note[body.len() + 1..];
    let cases = [
        String::new(),
        "\n".into(),
        "\n\n".into(),
        body.clone(),
        format!("{body}\n"),
        format!("{body}{sig_line}"),
        note.replace('\n', "\r\n"),
        note.replacen('\n', "\r\n", 1),
        note.replace('\u{2014}', "-"),
        note.replace('\u{2014}', "--"),
        format!("{body}\n{}", sig_line.replacen(' ', "  ", 1)),
        format!("{body}\n{}", sig_line.replace('=', "")),
        format!("{body}\n{SIG_PREFIX}{ORIGIN} \n"),
        format!("{body}\n{SIG_PREFIX}{ORIGIN} AAAA\n"),
        format!("{body}\n{SIG_PREFIX}{ORIGIN} !!!!\n"),
        format!("{body}\n{sig_line}\n"),
        format!("{body}\n{sig_line}{SIG_PREFIX}\n"),
        format!("{}\n{body}\n{sig_line}", "x".repeat(MAX_NOTE_BYTES)),
    ];
    for case in &cases {
        assert!(open(case, &verifier, ORIGIN).is_err(), "accepted {case:?}");
    }
    assert_eq!(
        open(&cases[cases.len() - 1], &verifier, ORIGIN),
        Err(NoteError::NoteTooLarge)
    );
    // Our signature with the wrong length under our (name, id).
    let mut blob = verifier.key_id().to_vec();
    blob.extend_from_slice(&[0u8; 63]);
    let short = format!("{body}\n{SIG_PREFIX}{ORIGIN} {}\n", BASE64.encode(blob));
    assert_eq!(
        open(&short, &verifier, ORIGIN),
        Err(NoteError::InvalidSignature)
    );
}

#[test]
fn errors_display_lowercase() {
    let errs = [
        NoteError::InvalidKeyName,
        NoteError::MalformedKey("x"),
        NoteError::UnsupportedAlgorithm(2),
        NoteError::MissingSignature,
        NoteError::MalformedCheckpoint("x"),
    ];
    for e in errs {
        let msg = e.to_string();
        assert_eq!(msg, msg.to_lowercase());
        let _: &dyn std::error::Error = &e;
    }
    assert_eq!(
        NoteError::UnsupportedAlgorithm(2).to_string(),
        "unsupported key algorithm 0x02"
    );
}

/// Cheap in-process fuzzing: random strings and random mutations of a
/// valid note and of key texts must only ever produce errors, never
/// panics (and mutated notes must never open).
#[test]
fn random_inputs_never_panic() {
    let (signer, verifier) = keypair(ORIGIN);
    let note = signer.sign(&sample());
    let vtext = verifier.to_text();
    let (stext, _) = generate(ORIGIN, &mut rng()).unwrap();
    let mut r = StdRng::seed_from_u64(0xc0ffee);
    let alphabet: Vec<char> = "ab+/=\n\r \u{2014}0123456789\u{0}\u{ff}—é"
        .chars()
        .collect();

    for _ in 0..3000 {
        let len = r.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| r.random()).collect();
        let s = String::from_utf8_lossy(&bytes);
        assert!(open(&s, &verifier, ORIGIN).is_err());
        let _ = parse_verifier(&s);
        let _ = parse_signer(&s);
        let s: String = (0..len)
            .map(|_| alphabet[r.random_range(0..alphabet.len())])
            .collect();
        assert!(open(&s, &verifier, ORIGIN).is_err());
        let _ = parse_verifier(&s);
        let _ = parse_signer(&format!("{SIGNER_PREFIX}{s}"));
    }

    for base in [&note, &vtext, &stext] {
        for _ in 0..3000 {
            let mut m: Vec<char> = base.chars().collect();
            for _ in 0..r.random_range(1..4) {
                let i = r.random_range(0..m.len());
                let c = alphabet[r.random_range(0..alphabet.len())];
                match r.random_range(0..3) {
                    0 => m[i] = c,
                    1 => m.insert(i, c),
                    _ => {
                        m.remove(i);
                    }
                }
                if m.is_empty() {
                    break;
                }
            }
            let s: String = m.into_iter().collect();
            let opened = open(&s, &verifier, ORIGIN);
            if base == &note && s != note {
                assert!(opened.is_err(), "mutation opened: {s:?}");
            }
            let _ = parse_verifier(&s);
            let _ = parse_signer(&s);
        }
    }
}
