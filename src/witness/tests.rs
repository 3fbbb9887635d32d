//! The witness's rules, tried on real trees and real state files: what it cosigns, what it
//! refuses with which status, and what it remembers across a restart.

use std::sync::Arc;

use rand::SeedableRng;

use super::*;
use crate::ledger::checkpoint::{self, Signer};
use crate::ledger::cosignature;
use crate::ledger::merkle::Tree;

const ORIGIN: &str = "bank.example/countersign";

struct Fixture {
    dir: tempfile::TempDir,
    log: Signer,
    logs: Vec<KnownLog>,
    witness_text: String,
}

impl Fixture {
    fn new() -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let (s, v) = checkpoint::generate(ORIGIN, &mut rng).unwrap();
        let (w, _) = cosignature::generate("audit.bank.example/witness", &mut rng).unwrap();
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            log: checkpoint::parse_signer(&s).unwrap(),
            logs: vec![KnownLog {
                origin: ORIGIN.into(),
                keys: vec![checkpoint::parse_verifier(&v).unwrap()],
            }],
            witness_text: w,
        }
    }

    fn open(&self) -> Result<Witness, OpenError> {
        Witness::open(
            cosignature::parse_cosigner(&self.witness_text).unwrap(),
            self.logs.clone(),
            self.dir.path(),
            Arc::new(|| 1_800_000_000),
        )
    }

    fn note(&self, tree: &Tree, size: u64) -> String {
        let cp = Checkpoint::new(ORIGIN, size, tree.root_at(size).unwrap()).unwrap();
        self.log.sign(&cp)
    }
}

fn tree(leaves: u64, salt: u8) -> Tree {
    let mut t = Tree::new();
    for i in 0..leaves {
        let salt = if i >= 5 { salt } else { 0 };
        t.push(merkle::leaf_hash(&[i as u8, salt])).unwrap();
    }
    t
}

fn add(w: &Witness, old: u64, proof: Vec<Hash>, note: String) -> Result<String, Refusal> {
    w.add_checkpoint(&AddCheckpoint { old, proof, note })
}

#[test]
fn a_log_that_grows_consistently_is_cosigned_and_remembered_across_a_restart() {
    let f = Fixture::new();
    let t = tree(20, 0);
    let w = f.open().unwrap();
    let line = add(&w, 0, vec![], f.note(&t, 7)).unwrap();
    let body = Checkpoint::new(ORIGIN, 7, t.root_at(7).unwrap())
        .unwrap()
        .body();
    assert_eq!(w.key().check_line(&body, &line).unwrap(), 1_800_000_000);
    let proof = t.consistency_proof(7, 20).unwrap();
    add(&w, 7, proof, f.note(&t, 20)).unwrap();
    // The same checkpoint again is cosigned again (a log that lost the answer retries).
    add(&w, 20, vec![], f.note(&t, 20)).unwrap();
    drop(w);
    let w = f.open().unwrap();
    assert_eq!(
        add(&w, 7, vec![], f.note(&t, 20)),
        Err(Refusal::Conflict(20))
    );
    let monitored = w.latest_note(&origin_hash(ORIGIN)).unwrap();
    assert!(monitored.starts_with(&f.note(&t, 20)));
    assert!(w.key().check(&monitored).unwrap().is_some());
}

#[test]
fn a_fork_or_a_rewrite_is_refused_as_inconsistent() {
    let f = Fixture::new();
    let honest = tree(20, 0);
    let forged = tree(20, 9); // records 5.. differ
    let w = f.open().unwrap();
    add(&w, 0, vec![], f.note(&honest, 10)).unwrap();
    // The forger's tree at the same size: 422, whatever proof comes with it.
    assert!(matches!(
        add(&w, 10, vec![], f.note(&forged, 10)),
        Err(Refusal::Inconsistent(_))
    ));
    // A larger forged tree with its own (valid for it) proof from 10.
    let proof = forged.consistency_proof(10, 20).unwrap();
    assert!(matches!(
        add(&w, 10, proof, f.note(&forged, 20)),
        Err(Refusal::Inconsistent(_))
    ));
    // A rollback to a smaller tree: 409 says what was cosigned; the log cannot prove from it.
    assert_eq!(
        add(&w, 0, vec![], f.note(&honest, 6)),
        Err(Refusal::Conflict(10))
    );
    assert!(matches!(
        add(&w, 10, vec![], f.note(&honest, 6)),
        Err(Refusal::BadRequest(_))
    ));
    // None of it moved the state.
    let proof = honest.consistency_proof(10, 20).unwrap();
    add(&w, 10, proof, f.note(&honest, 20)).unwrap();
}

#[test]
fn unknown_logs_bad_signatures_and_bad_proofs_get_the_specs_statuses() {
    let f = Fixture::new();
    let t = tree(8, 0);
    let w = f.open().unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    // Another key under the log's name: its signature is ignored, so none is trusted.
    let (other, _) = checkpoint::generate(ORIGIN, &mut rng).unwrap();
    let other = checkpoint::parse_signer(&other).unwrap();
    let cp = Checkpoint::new(ORIGIN, 8, t.root()).unwrap();
    let e = add(&w, 0, vec![], other.sign(&cp)).unwrap_err();
    assert_eq!(e.status(), 403, "{e}");
    // A note by the log's key whose body was changed after signing.
    let tampered = f.note(&t, 8).replacen("\n8\n", "\n9\n", 1);
    assert_eq!(add(&w, 0, vec![], tampered).unwrap_err().status(), 403);
    let unknown = Checkpoint::new("elsewhere.example/log", 8, t.root()).unwrap();
    assert_eq!(
        add(&w, 0, vec![], f.log.sign(&unknown)),
        Err(Refusal::UnknownLog)
    );
    assert_eq!(add(&w, 9, vec![], f.note(&t, 8)).unwrap_err().status(), 400);
    // From size 0 the proof must be empty.
    assert_eq!(
        add(&w, 0, vec![[0; 32]], f.note(&t, 8))
            .unwrap_err()
            .status(),
        422
    );
    // A checkpoint of size 0 must have the empty tree's root.
    let zero = Checkpoint::new(ORIGIN, 0, [1; 32]).unwrap();
    assert_eq!(
        add(&w, 0, vec![], f.log.sign(&zero)).unwrap_err().status(),
        422
    );
    add(&w, 0, vec![], f.note(&t, 4)).unwrap();
    let mut proof = t.consistency_proof(4, 8).unwrap();
    proof[0][0] ^= 1;
    assert_eq!(add(&w, 4, proof, f.note(&t, 8)).unwrap_err().status(), 422);
}

#[test]
fn a_state_file_changed_on_disk_stops_the_witness_from_starting() {
    let f = Fixture::new();
    let t = tree(8, 0);
    let w = f.open().unwrap();
    add(&w, 0, vec![], f.note(&t, 8)).unwrap();
    drop(w);
    let path = f.dir.path().join(state_file(ORIGIN));
    // Someone moves the witness back to an older checkpoint of the same log.
    let older = f.note(&t, 3);
    std::fs::write(&path, older).unwrap();
    let e = f.open().err().unwrap();
    assert!(
        e.to_string().contains("no cosignature by this witness"),
        "{e}"
    );
}

#[test]
fn lines_the_log_did_not_sign_are_not_stored_and_cannot_stop_a_restart() {
    let f = Fixture::new();
    let t = tree(8, 0);
    let w = f.open().unwrap();
    add(&w, 0, vec![], f.note(&t, 8)).unwrap();
    // Anyone may post the current checkpoint again, with lines of their own: one by an
    // unknown key, and one claiming the witness's own name and key id.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let (stranger, _) = checkpoint::generate("stranger", &mut rng).unwrap();
    let stranger = checkpoint::parse_signer(&stranger).unwrap();
    let cp = Checkpoint::new(ORIGIN, 8, t.root()).unwrap();
    let theirs = stranger.sign(&cp);
    let their_line = &theirs[cp.body().len() + 1..];
    let claimed = w.key().check_line(&cp.body(), "x").err();
    assert!(claimed.is_some());
    let forged_ours = format!(
        "\u{2014} audit.bank.example/witness {}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0u8; 80])
    );
    let posted = format!("{}{their_line}{forged_ours}", f.note(&t, 8));
    add(&w, 8, vec![], posted).unwrap();
    let stored = w.latest_note(&origin_hash(ORIGIN)).unwrap();
    assert!(!stored.contains("stranger"), "{stored}");
    assert_eq!(
        stored.matches("audit.bank.example/witness").count(),
        1,
        "{stored}"
    );
    drop(w);
    f.open().expect("restarts");
}
