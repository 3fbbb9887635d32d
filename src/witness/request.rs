//! The add-checkpoint request body of C2SP tlog-witness: an `old <size>` line, up to 63 lines
//! of base64 consistency-proof hashes, an empty line, then the signed checkpoint note. The
//! same module writes it for the log's side, so the two cannot disagree.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::ledger::merkle::Hash;

/// The most consistency-proof lines a request may carry (the spec's cap: a proof in a tree of
/// 2^63 leaves has fewer).
pub const PROOF_LINES_MAX: usize = 63;

/// A parsed add-checkpoint request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the log believes this witness cosigned last (0: none).
    pub old: u64,
    /// The consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The checkpoint note with the log's signature(s).
    pub note: String,
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old);
        for h in &self.proof {
            body.push_str(&BASE64.encode(h));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note);
        body
    }
}

/// Parses a request body; the error says what is wrong with it (a 400).
pub fn parse_add_checkpoint(body: &[u8]) -> Result<AddCheckpoint, String> {
    let body = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    // The header ends at the first empty line; the note after it has an empty line of its own.
    let (header, note) = body
        .split_once("\n\n")
        .ok_or("no empty line after the old size and proof")?;
    let mut lines = header.split('\n');
    let old = lines
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .ok_or("the first line must be `old <size>`")?;
    let old = decimal(old).ok_or("the old size must be decimal without leading zeros")?;
    let mut proof = Vec::new();
    for line in lines {
        if proof.len() == PROOF_LINES_MAX {
            return Err(format!("more than {PROOF_LINES_MAX} proof lines"));
        }
        let hash: Hash = BASE64
            .decode(line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("a proof line is not a base64 SHA-256 hash")?;
        proof.push(hash);
    }
    Ok(AddCheckpoint {
        old,
        proof,
        note: note.to_owned(),
    })
}

/// ASCII decimal with no sign and no leading zeros (except "0").
fn decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_example_parses_and_round_trips() {
        let body = "old 20852014\n\
            PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
            jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
            5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
            /6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
            \n\
            example.com/behind-the-sofa\n\
            20852163\n\
            CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
            \n\
            \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
        let req = parse_add_checkpoint(body.as_bytes()).unwrap();
        assert_eq!(req.old, 20852014);
        assert_eq!(req.proof.len(), 4);
        assert!(
            req.note
                .starts_with("example.com/behind-the-sofa\n20852163\n")
        );
        assert_eq!(req.to_body(), body);
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        let note = "o\n1\nAAAA\n\n\u{2014} o AAAA\n";
        for (body, why) in [
            (format!("old 01\n\n{note}"), "leading zeros"),
            (format!("old -1\n\n{note}"), "decimal"),
            (format!("size 1\n\n{note}"), "old <size>"),
            (format!("old 1\nnot-base64!\n\n{note}"), "base64"),
            (format!("old 1\nAAAA\n\n{note}"), "SHA-256"),
            ("old 1\n".to_owned(), "empty line"),
        ] {
            let e = parse_add_checkpoint(body.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{body:?}: {e}");
        }
        let many = format!(
            "old 1\n{}\n{note}",
            format!("{}\n", BASE64.encode([0u8; 32])).repeat(64)
        );
        assert!(
            parse_add_checkpoint(many.as_bytes())
                .unwrap_err()
                .contains("63")
        );
        assert!(parse_add_checkpoint(&[0xff, b'\n', b'\n']).is_err());
    }
}
