//! A segment file of arbitrary bytes, read by the offline verifier and by `Ledger::open`.
//!
//! Input: byte 0 is the mode, the rest (at most 64 KiB) the body of
//! `<tmp>/ledger/00000000000000000000.seg`:
//! * bit 1 clear: bit 0 set prepends a valid segment header (first index 0), clear writes the
//!   rest raw;
//! * bit 1 set ("framed"): the rest is split at 0x00 bytes (JSON records never hold a raw NUL)
//!   and each piece becomes a frame with the right index and checksum after a valid header, so
//!   mutations reach record decoding and the state-machine replay instead of dying at the CRC.
//!
//! Besides "no panic", it checks that the two readers agree: when `verify_data_dir` finds no
//! problem, `Ledger::open` must open the same number of records with the same Merkle root, and
//! every record must read back.
#![no_main]

use std::path::Path;
use std::time::{Duration, Instant};

use countersign::storage::embedded::{Ledger, frame};
use countersign::verify;
use libfuzzer_sys::fuzz_target;

const MAX_INPUT: usize = 64 * 1024;

fn tempdir() -> tempfile::TempDir {
    // tmpfs keeps the fsyncs that opening does cheap.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("cs-fuzz-").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if rest.len() > MAX_INPUT {
        return;
    }
    let mut bytes = Vec::with_capacity(frame::SEGMENT_HEADER_LEN + rest.len());
    if mode & 2 == 2 {
        bytes.extend_from_slice(&frame::segment_header(0));
        for (i, payload) in rest.split(|&b| b == 0).enumerate() {
            frame::encode(i as u64, payload, &mut bytes);
        }
    } else {
        if mode & 1 == 1 {
            bytes.extend_from_slice(&frame::segment_header(0));
        }
        bytes.extend_from_slice(rest);
    }

    let tmp = tempdir();
    let ledger_dir = tmp.path().join("ledger");
    std::fs::create_dir(&ledger_dir).unwrap();
    std::fs::write(ledger_dir.join("00000000000000000000.seg"), &bytes).unwrap();

    // The verifier only reads.
    let report = verify::verify_data_dir(tmp.path(), None);

    // Opening may cut a torn tail or rewrite an all-zero header; it runs after verifying.
    match Ledger::open(&ledger_dir, 1 << 20) {
        Ok((ledger, appender, durable)) => {
            let n = ledger.len();
            assert_eq!(ledger.tree_size(), n, "tree size differs from record count");
            for i in 0..n {
                if let Err(e) = ledger.read(i) {
                    panic!("record {i} of {n} opened but does not read back: {e}");
                }
            }
            assert!(ledger.read(n).is_err());
            if report.problem.is_none() {
                assert_eq!(n, report.records, "verify and open count different records");
                assert_eq!(ledger.head().1, report.root, "verify and open disagree on the root");
            }
            // Dropping the appender stops the writer thread; wait for it so the temp dir is
            // not removed under it and threads do not pile up.
            drop(appender);
            let start = Instant::now();
            while durable.has_changed().is_ok() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "ledger writer thread did not stop after the appender was dropped"
                );
                std::thread::sleep(Duration::from_micros(50));
            }
            drop(ledger);
        }
        Err(e) => {
            assert!(
                report.problem.is_some(),
                "verify found no problem but Ledger::open failed: {e}"
            );
        }
    }
});
