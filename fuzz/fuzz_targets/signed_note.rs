//! Signed-note parsing (`ledger::checkpoint`) on arbitrary text: `open`, `parse_verifier`,
//! `parse_signer`, plus a sign/open round trip of checkpoints built from the input.
#![no_main]

use std::sync::LazyLock;

use countersign::ledger::checkpoint::{self, Checkpoint, Signer, Verifier};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

/// Must match `gen_seeds` so the seed notes verify.
pub const KEY_NAME: &str = "countersign-fuzz";
pub const ORIGIN: &str = "countersign.example/ledger";
const SEED: u64 = 0x00C0_FFEE;

static KEYS: LazyLock<(Signer, Verifier)> = LazyLock::new(|| {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(SEED);
    let (s, v) = checkpoint::generate(KEY_NAME, &mut rng).expect("generate");
    (
        checkpoint::parse_signer(&s).expect("own signer text"),
        checkpoint::parse_verifier(&v).expect("own verifier text"),
    )
});

fuzz_target!(|data: &[u8]| {
    let (signer, verifier) = &*KEYS;
    let text = String::from_utf8_lossy(data);

    let first_line = text.split('\n').next().unwrap_or_default();
    for origin in [ORIGIN, first_line] {
        if let Ok(cp) = checkpoint::open(&text, verifier, origin) {
            assert_eq!(cp.origin, origin);
            // The signed text is exactly the checkpoint body.
            assert!(
                text.starts_with(&cp.body()),
                "opened checkpoint's body is not the note's text"
            );
            let again = checkpoint::open(&signer.sign(&cp), verifier, origin)
                .expect("re-signed checkpoint must open");
            assert_eq!(again, cp);
        }
    }

    if let Ok(v) = checkpoint::parse_verifier(&text) {
        let t = v.to_text();
        assert_eq!(t, text, "verifier key text is not canonical");
        assert_eq!(checkpoint::parse_verifier(&t).as_ref(), Ok(&v));
    }
    if let Ok(s) = checkpoint::parse_signer(&text) {
        let v = s.verifier();
        assert_eq!(checkpoint::parse_verifier(&v.to_text()).as_ref(), Ok(&v));
    }

    // Round trip: any checkpoint `Checkpoint::new` accepts, signed, must open to itself.
    if data.len() >= 40 {
        let size = u64::from_le_bytes(data[..8].try_into().unwrap());
        let root: [u8; 32] = data[8..40].try_into().unwrap();
        let origin = String::from_utf8_lossy(&data[40..]).into_owned();
        if let Ok(cp) = Checkpoint::new(origin, size, root) {
            let note = signer.try_sign(&cp).expect("valid origin signs");
            match checkpoint::open(&note, verifier, &cp.origin) {
                Ok(got) => assert_eq!(got, cp),
                Err(e) => panic!("a checkpoint we signed does not open: {e}\n{note:?}"),
            }
        }
    }
});
