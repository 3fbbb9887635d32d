//! A strict parser of the Prometheus text exposition format 0.0.4, for the metrics tests: a
//! parser that accepted anything would let a broken scrape pass.

use std::collections::{BTreeMap, BTreeSet};

/// A sample's labels, sorted by name.
type Labels = Vec<(String, String)>;
/// A metric or family name and its labels.
type Series = (String, Labels);

/// A parsed scrape: every sample by name and sorted labels, and every family's type.
pub struct Exposition {
    samples: BTreeMap<Series, f64>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of one series; fails the test if it is absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut key: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        key.sort();
        *self
            .samples
            .get(&(name.to_owned(), key))
            .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }
}

impl Exposition {
    /// Every sample of one name, with its labels.
    pub fn samples_named(&self, name: &str) -> Vec<(Labels, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// A float as Go's strconv.ParseFloat writes it for Prometheus: a decimal number, or +Inf,
/// -Inf, NaN.
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let ok = !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    if !ok {
        return Err(format!("not a number: {s:?}"));
    }
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

/// Reads `{name="value",...}` from the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut rest = s.strip_prefix('{').expect("called at a brace");
    let mut labels: Labels = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("a label without '='")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} twice"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("label {name}: bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err(format!("label {name}: newline in value")),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("after label {name}: expected ',' or '}}'"));
        }
    }
}

/// Parses a scrape, refusing anything the text format 0.0.4 does not allow, and checks the
/// histograms: buckets in increasing `le`, cumulative, ending in +Inf equal to `_count`.
/// Stricter than the format in one way that costs our encoder nothing: every sample must
/// follow its family's TYPE line (the format lets untyped samples go without one).
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line does not end with a newline".into());
    }
    let mut samples = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    // Families whose samples have ended (a family is one contiguous group).
    let mut closed = BTreeSet::new();
    let mut current: Option<String> = None;
    // Per histogram series (family, labels without le): its buckets [(le, count)] in the
    // order given, whether it has a _sum, and its _count.
    let mut buckets: BTreeMap<Series, Vec<(f64, f64)>> = BTreeMap::new();
    let mut sums = BTreeSet::new();
    let mut counts: BTreeMap<Series, f64> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words
                        .next()
                        .ok_or_else(|| at("HELP without a name".into()))?;
                    let help = words.next().ok_or_else(|| at("HELP without text".into()))?;
                    if !valid_name(name) || !helps.insert(name.to_owned()) {
                        return Err(at("bad or repeated HELP".into()));
                    }
                    let mut c = help.chars();
                    while let Some(ch) = c.next() {
                        if ch == '\\' && !matches!(c.next(), Some('\\' | 'n')) {
                            return Err(at("bad escape in HELP".into()));
                        }
                    }
                }
                Some("TYPE") => {
                    let name = words
                        .next()
                        .ok_or_else(|| at("TYPE without a name".into()))?;
                    let kind = words
                        .next()
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    if !valid_name(name) {
                        return Err(at("bad name".into()));
                    }
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at("TYPE twice".into()));
                    }
                    if let Some(done) = current.replace(name.to_owned()) {
                        closed.insert(done);
                    }
                }
                // Any other comment is allowed and ignored.
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' ', '\t'])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        if !rest.starts_with([' ', '\t']) {
            return Err(at("no space before the value".into()));
        }
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("text after the timestamp".into()));
        }
        // The sample must belong to the family whose TYPE came last.
        let family = current
            .clone()
            .ok_or_else(|| at("a sample before any TYPE".into()))?;
        if closed.contains(&family) {
            return Err(at("a family split in two groups".into()));
        }
        let kind = types[&family].as_str();
        let suffix = name
            .strip_prefix(family.as_str())
            .ok_or_else(|| at(format!("outside its family {family}")))?;
        match (kind, suffix) {
            ("counter", "") => {
                if value.is_nan() || value < 0.0 {
                    return Err(at("a counter below zero".into()));
                }
            }
            ("gauge" | "untyped", "") => {}
            ("histogram", "_bucket") => {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .ok_or_else(|| at("a bucket without le".into()))?;
                let le = parse_value(&le.1).map_err(at)?;
                let mut rest: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                rest.sort();
                buckets
                    .entry((family.clone(), rest))
                    .or_default()
                    .push((le, value));
            }
            ("histogram", "_sum") => {
                let mut l = labels.clone();
                l.sort();
                sums.insert((family.clone(), l));
            }
            ("histogram", "_count") => {
                let mut l = labels.clone();
                l.sort();
                counts.insert((family.clone(), l), value);
            }
            _ => return Err(at(format!("not a sample of {kind} {family}"))),
        }
        let mut key = labels;
        key.sort();
        if samples.insert((name.to_owned(), key), value).is_some() {
            return Err(at("the same series twice".into()));
        }
    }
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let series: BTreeSet<_> = buckets
            .keys()
            .chain(counts.keys())
            .chain(sums.iter())
            .filter(|(f, _)| f == family)
            .cloned()
            .collect();
        if series.is_empty() {
            return Err(format!("histogram {family} has no samples"));
        }
        for key in series {
            let b = buckets
                .get(&key)
                .ok_or_else(|| format!("{key:?}: no buckets"))?;
            let count = *counts
                .get(&key)
                .ok_or_else(|| format!("{key:?}: no _count"))?;
            if !sums.contains(&key) {
                return Err(format!("{key:?}: no _sum"));
            }
            for w in b.windows(2) {
                if w[0].0 >= w[1].0 {
                    return Err(format!("{key:?}: le not increasing"));
                }
                if w[0].1 > w[1].1 {
                    return Err(format!("{key:?}: buckets not cumulative"));
                }
            }
            let last = b.last().expect("non-empty");
            if last.0 != f64::INFINITY {
                return Err(format!("{key:?}: the last bucket is not +Inf"));
            }
            if last.1 != count {
                return Err(format!("{key:?}: +Inf bucket {} != _count {count}", last.1));
            }
        }
    }
    Ok(Exposition { samples, types })
}

#[test]
fn the_metrics_parser_refuses_what_is_not_the_text_format() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    parse(ok).unwrap();
    let histogram = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                     h_sum 3.5\nh_count 2\n";
    parse(histogram).unwrap();
    let bad: Vec<String> = vec![
        "a_total 1".to_owned(),                                   // no final newline
        "a_total 1\n".to_owned(),                                 // no TYPE
        "# TYPE a_total counter\na_total{x=1} 2\n".to_owned(),    // unquoted label value
        "# TYPE a_total counter\na_total{x=\"1\" 2\n".to_owned(), // unclosed labels
        "# TYPE a_total counter\na_total two\n".to_owned(),       // not a number
        "# TYPE a_total counter\na_total -1\n".to_owned(),        // a negative counter
        "# TYPE a_total counter\na_total 1\na_total 2\n".to_owned(), // a duplicate series
        "# TYPE a_total counter\nb_total 1\n".to_owned(),         // outside its family
        "# TYPE a_total counter\n# TYPE a_total counter\n".to_owned(), // TYPE twice
        "# TYPE a_total countr\na_total 1\n".to_owned(),          // unknown type
        "# HELP a_total\n# TYPE a_total counter\na_total 1\n".to_owned(), // HELP without text
        "# TYPE 1a gauge\n1a 1\n".to_owned(),                     // bad name
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n".to_owned(),      // a label twice
        "# TYPE a gauge\na{x=\"\\q\"} 1\n".to_owned(),            // bad escape
        histogram.replace("le=\"+Inf\"} 2", "le=\"+Inf\"} 3"),    // +Inf != _count
        histogram.replace("h_bucket{le=\"1\"} 1", "h_bucket{le=\"1\"} 3"), // not cumulative
        histogram.replace("le=\"+Inf\"", "le=\"2\""),             // no +Inf bucket
        histogram.replace("h_sum 3.5\n", ""),                     // no _sum
    ];
    for bad in &bad {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
