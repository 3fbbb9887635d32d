//! Field rules for what clients send, as pure functions. Each failure names the field, so the
//! API can answer INVALID_ARGUMENT saying exactly what to fix.

use super::types::{CustomerIdentity, DocumentType, Money, Timestamp, Transaction};

/// A field that breaks a rule: the path of the field as the client named it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Longest free text (notes, comments) in characters.
pub const TEXT_CHARS_MAX: usize = 2000;
/// Longest short string (codes, accounts, names, attribute keys and values) in characters.
pub const SHORT_CHARS_MAX: usize = 128;
/// Most free attributes on one transaction.
pub const ATTRIBUTES_MAX: usize = 32;

/// Whether a character would not show as itself to the supervisor or auditor who reads it:
/// Unicode's format characters (general category Cf, Unicode 15: soft hyphen, the Arabic and
/// Syriac marks, zero-width spaces and joiners, bidi embeddings, overrides and isolates, word
/// joiner and invisible operators, BOM, interlinear annotation, tags), line and paragraph
/// separators, spaces that look like U+0020 but are not (no-break, en, em, thin, narrow,
/// medium mathematical; U+3000, the ideographic space CJK input types, stays allowed), and the
/// blank fillers and joiners that render as nothing (U+034F, U+115F, U+1160, U+3164, U+FFA0).
/// `"Zhao\u{202E}niM"` shows as "ZhaoMin" reversed: what is stored would not be what is seen.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
            | '\u{2028}'..='\u{2029}'
            | '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{3164}'
            | '\u{FFA0}'
    )
}

/// Checks a string's length, that it holds no control characters (newlines and tabs allowed
/// when `multiline`) and nothing invisible (`is_invisible`). `required` refuses the empty or
/// blank string.
pub fn text(
    field: &str,
    s: &str,
    max: usize,
    required: bool,
    multiline: bool,
) -> Result<(), FieldError> {
    if required && s.trim().is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if s.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if s.chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\r' || c == '\t')))
    {
        return Err(FieldError::new(field, "contains control characters"));
    }
    if let Some(c) = s.chars().find(|c| is_invisible(*c)) {
        return Err(FieldError::new(
            field,
            format!(
                "contains U+{:04X}, a character that does not show as itself (format, bidi \
                 or invisible space characters are refused)",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Account numbers: 8 to 32 ASCII digits, as Chinese banks number personal (16 to 19) and
/// corporate (up to 25) accounts; no letters, spaces or separators, so one account is always
/// written one way and audit search finds it.
pub fn account(field: &str, s: &str) -> Result<(), FieldError> {
    if (8..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(FieldError::new(field, "must be 8 to 32 digits 0-9"))
    }
}

/// A teller serial: 1 to 64 of A-Z a-z 0-9 - _ .
pub fn teller_serial(field: &str, s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
        ))
    }
}

/// A reason code: 1 to 32 of A-Z 0-9 _.
pub fn reason_code(field: &str, s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be 1 to 32 characters of A-Z, 0-9 and '_'",
        ))
    }
}

/// ISO 4217 codes the engine accepts. A short, explicit list: a bank adds currencies on purpose.
pub const CURRENCIES: &[&str] = &[
    "AUD", "CAD", "CHF", "CNY", "EUR", "GBP", "HKD", "JPY", "KRW", "MOP", "NZD", "SGD", "THB",
    "TWD", "USD",
];

pub fn money(field: &str, m: &Money) -> Result<(), FieldError> {
    if m.minor_units <= 0 {
        return Err(FieldError::new(
            format!("{field}.minor_units"),
            "must be positive",
        ));
    }
    // Above 10^15 minor units no teller transaction is plausible, and sums stay far from overflow.
    if m.minor_units > 1_000_000_000_000_000 {
        return Err(FieldError::new(
            format!("{field}.minor_units"),
            "is out of range",
        ));
    }
    if !CURRENCIES.contains(&m.currency.as_str()) {
        return Err(FieldError::new(
            format!("{field}.currency"),
            "is not a supported ISO 4217 code",
        ));
    }
    Ok(())
}

pub fn transaction(t: &Transaction) -> Result<(), FieldError> {
    text("transaction.code", &t.code, SHORT_CHARS_MAX, true, false)?;
    money("transaction.amount", &t.amount)?;
    account("transaction.account", &t.account)?;
    if let Some(c) = &t.counterparty {
        account("transaction.counterparty", c)?;
    }
    if t.attributes.len() > ATTRIBUTES_MAX {
        return Err(FieldError::new(
            "transaction.attributes",
            format!("has more than {ATTRIBUTES_MAX} entries"),
        ));
    }
    for (k, v) in &t.attributes {
        // A bad key cannot name its entry, so it is reported on the map, quoted (escaped where
        // it would not print); a value is reported on its entry, as AIP-193 writes map paths.
        text("transaction.attributes", k, SHORT_CHARS_MAX, true, false).map_err(|e| {
            FieldError::new("transaction.attributes", format!("key {k:?} {}", e.reason))
        })?;
        text(
            &format!("transaction.attributes[{k:?}]"),
            v,
            SHORT_CHARS_MAX,
            false,
            false,
        )?;
    }
    Ok(())
}

/// Checks the customer's identity data; `now` judges the expiry date.
pub fn customer(c: &CustomerIdentity, now: Timestamp) -> Result<(), FieldError> {
    text("customer.name", &c.name, SHORT_CHARS_MAX, true, false)?;
    text(
        "customer.document_number",
        &c.document_number,
        64,
        true,
        false,
    )?;
    let today = days_from_unix_ms(now.0);
    if let Some(expiry) = &c.expiry_date {
        let days = parse_date(expiry)
            .ok_or_else(|| FieldError::new("customer.expiry_date", "must be a date YYYY-MM-DD"))?;
        if days < today {
            return Err(FieldError::new(
                "customer.expiry_date",
                "the document has expired",
            ));
        }
    }
    match c.document_type {
        DocumentType::PrcResidentId => {
            prc_resident_id("customer.document_number", &c.document_number, today)
        }
        DocumentType::Passport
        | DocumentType::HkMacaoPermit
        | DocumentType::TaiwanPermit
        | DocumentType::ForeignPermanentResident => {
            let n = &c.document_number;
            let ok = (5..=20).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric());
            if ok {
                Ok(())
            } else {
                Err(FieldError::new(
                    "customer.document_number",
                    "must be 5 to 20 letters or digits",
                ))
            }
        }
        DocumentType::Other => Ok(()),
    }
}

/// The PRC resident identity card number (GB 11643-1999): 17 digits, then a check character
/// (0-9 or X) computed with ISO 7064 MOD 11-2; digits 7 to 14 are the birth date.
pub fn prc_resident_id(field: &str, n: &str, today_days: i64) -> Result<(), FieldError> {
    let b = n.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return Err(FieldError::new(
            field,
            "must be 17 digits and a check character",
        ));
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize];
    if b[17].to_ascii_uppercase() != check {
        return Err(FieldError::new(
            field,
            "check digit does not match (GB 11643)",
        ));
    }
    let birth = std::str::from_utf8(&b[6..14])
        .ok()
        .and_then(|s| parse_date(&format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..])));
    match birth {
        Some(d) if d <= today_days && d >= days_from_civil(1900, 1, 1) => Ok(()),
        _ => Err(FieldError::new(field, "holds no valid birth date")),
    }
}

/// Days since 1970-01-01 of a "YYYY-MM-DD" date, checking the day exists.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..].parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

pub fn days_from_unix_ms(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days_from_civil: proleptic Gregorian date to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert!(parse_date("2024-02-29").is_some());
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2023-13-01"), None);
        assert_eq!(parse_date("2023-1-01"), None);
    }

    #[test]
    fn prc_id_check_digit() {
        let today = parse_date("2026-11-28").unwrap();
        // The GB 11643 worked example number.
        assert!(prc_resident_id("f", "11010519491231002X", today).is_ok());
        assert!(prc_resident_id("f", "110105194912310021", today).is_err());
        assert!(prc_resident_id("f", "11010519491231002", today).is_err());
        // A correct check digit over an impossible birth date (Feb 30).
        let digits = *b"11010519490230002";
        let sum: u32 = digits
            .iter()
            .zip([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
            .map(|(d, w)| u32::from(d - b'0') * w)
            .sum();
        let check = b"10X98765432"[(sum % 11) as usize];
        let mut n = String::from_utf8(digits.to_vec()).unwrap();
        n.push(check as char);
        assert_eq!(
            prc_resident_id("f", &n, today).unwrap_err().reason,
            "holds no valid birth date"
        );
    }

    #[test]
    fn text_rules() {
        assert!(text("f", "ok", 5, true, false).is_ok());
        assert!(text("f", "", 5, true, false).is_err());
        assert!(text("f", "toolong", 5, true, false).is_err());
        assert!(text("f", "a\u{7}", 5, false, false).is_err());
        assert!(text("f", "a\nb", 5, false, true).is_ok());
        // What a reader would not see as stored: bidi overrides and isolates, zero-width and
        // look-alike spaces, BOM, tags; in single- and multi-line text alike.
        for bad in [
            "Zhao\u{202E}niM",
            "a\u{2067}b",
            "a\u{200B}b",
            "a\u{200D}b",
            "\u{FEFF}ab",
            "a\u{00A0}b",
            "a\u{2028}b",
            "a\u{E0041}",
            "a\u{00AD}b",
        ] {
            let e = text("note", bad, 50, false, true).unwrap_err();
            assert_eq!(e.field, "note");
            assert!(e.reason.contains("U+"), "{bad:?}: {}", e.reason);
        }
        // Ordinary CJK text, its full-width space and a middle dot in a name are kept.
        assert!(text("f", "赵\u{3000}敏·阿依古丽 (Ali)", 50, true, false).is_ok());
    }

    #[test]
    fn invisible_covers_unicode_format_characters() {
        // Every character Unicode 15 puts in general category Cf, by its ranges.
        let cf = [
            (0xAD, 0xAD),
            (0x600, 0x605),
            (0x61C, 0x61C),
            (0x6DD, 0x6DD),
            (0x70F, 0x70F),
            (0x890, 0x891),
            (0x8E2, 0x8E2),
            (0x180E, 0x180E),
            (0x200B, 0x200F),
            (0x202A, 0x202E),
            (0x2060, 0x2064),
            (0x2066, 0x206F),
            (0xFEFF, 0xFEFF),
            (0xFFF9, 0xFFFB),
            (0x110BD, 0x110BD),
            (0x110CD, 0x110CD),
            (0x13430, 0x1343F),
            (0x1BCA0, 0x1BCA3),
            (0x1D173, 0x1D17A),
            (0xE0001, 0xE0001),
            (0xE0020, 0xE007F),
        ];
        for (lo, hi) in cf {
            for cp in lo..=hi {
                let c = char::from_u32(cp).unwrap();
                assert!(is_invisible(c), "U+{cp:04X}");
            }
        }
        for c in ['a', ' ', '\u{3000}', '·', '赵', 'é', '\u{0301}'] {
            assert!(!is_invisible(c), "{c:?}");
        }
    }

    #[test]
    fn accounts_are_digits() {
        assert!(account("a", "6222020200112233445").is_ok());
        assert!(account("a", "12345678").is_ok());
        for bad in [
            "6222ABCD0011",
            "1234567",
            "6222 0202 0011 2233",
            "６２２２０２０２",
            "",
        ] {
            assert_eq!(account("a", bad).unwrap_err().field, "a", "{bad:?}");
        }
        assert!(teller_serial("f", "T-2026.11_28").is_ok());
        assert!(teller_serial("f", "bad serial").is_err());
    }
}
