//! Tidy tests: the rules of ARCHITECTURE.md that a machine can check, checked by reading the
//! sources as text (after rust-analyzer's xtask/tidy). This binary uses nothing but `std` and
//! does not link the crate, so it builds in seconds (cargo still builds the library first).
//!
//! Each file under `src/` is mapped to its module path (`src/engine/core.rs` is `engine::core`,
//! `src/storage/embedded/mod.rs` is `storage::embedded`, `src/main.rs` is `main`). Comments,
//! string and char literals are blanked out (keeping line numbers), then every path the code names
//! is collected and resolved: `use` trees, grouped ones expanded (`use crate::{a::{B, C}, d}`), and
//! inline paths (`crate::x::y`, `super::x`, `countersign::x` in main.rs, a child module `m::x`, or
//! a name brought in by a `use` of the same file). A first segment that is neither a module of the
//! crate, nor a `use`d name, nor a crate of Cargo.toml or `std`/`core`/`alloc` is a local item
//! (`State::Open`, `Self::new`) and is ignored. A bare `pb::` is taken to be `crate::api::pb`.
//!
//! Code inside `#[cfg(test)] mod x { ... }` counts for every rule but the layering (rule 5): a test
//! may use a tool of a higher layer (config's tests issue certificates with `tools::pki`).
//!
//! `KNOWN_VIOLATIONS` lists, exactly, any rule the tree breaks while a change is under way (it is
//! empty now): a new violation fails, and so does an entry that no longer occurs, so the list
//! only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A rule as ARCHITECTURE.md states it, and its check.
struct Rule {
    /// The number `KNOWN_VIOLATIONS` refers to it by.
    number: &'static str,
    /// The sentence exactly as it appears in ARCHITECTURE.md.
    text: &'static str,
    /// Returns the violations of one file, each as (line, the path it names).
    check: fn(&SourceFile) -> Vec<(usize, String)>,
}

/// Violations present in the tree today: (rule number, module path, named path). Each entry
/// stands for every line of that module naming that path; the tests say which lines.
const KNOWN_VIOLATIONS: &[(&str, &str, &str)] = &[];

/// Rule 1 keeps the domain a pure library of types and rules, testable and reusable without I/O.
const DOMAIN: Rule = Rule {
    number: "1",
    text: "`domain` imports nothing outside `std` and itself.",
    check: |f| {
        if f.top() != "domain" {
            return vec![];
        }
        let mut found = vec![];
        for n in &f.named {
            match n.path[0].as_str() {
                "crate" if n.path.get(1).map(String::as_str) != Some("domain") => {
                    found.push((n.line, top_of(&n.path)))
                }
                "crate" | "std" | "core" | "alloc" => {}
                external => found.push((n.line, external.to_string())),
            }
        }
        found
    },
};

/// Rule 2 keeps the wire format at the edge: a proto change touches `api`, not the engine.
const PROTOBUF: Rule = Rule {
    number: "2",
    text: "Only `api` and the tools name the generated protobuf types (`api::pb`).",
    check: |f| match f.top() {
        "api" | "tools" => vec![],
        _ => f.naming(&["crate", "api", "pb"]),
    },
};

/// Rule 3 keeps the storage engine replaceable: sled is a detail of one backend.
const SLED: Rule = Rule {
    number: "3",
    text: "Only `storage::embedded` names sled.",
    check: |f| match f.module.starts_with("storage::embedded") {
        true => vec![],
        false => f.naming(&["sled"]),
    },
};

/// Rule 4 keeps the backend behind the seam: what the engine needs is named in `storage`, and only
/// the code that opens a data directory (the server, `storage::open`, the offline verifier, the
/// command line and the tools) knows which backend it is. `config` is not among them.
const SEAM: Rule = Rule {
    number: "4",
    text: "Only the composition root (`server`, `storage::open`) and the tools name \
           `storage::embedded`; the engine sees storage only through the seam in `storage`.",
    check: |f| match f.top() {
        "server" | "storage" | "verify" | "tools" | "main" => vec![],
        _ => f.naming(&["crate", "storage", "embedded"]),
    },
};

/// Rule 5 keeps the dependency graph a stack, so each layer can be read and tested with only the
/// ones below it. Two modules of one layer (`policy`, `ledger`) may not name each other; `main`,
/// the binary, sits on the library and so may name `tools`.
const LAYERS: Rule = Rule {
    number: "5",
    text: "A lower layer never imports a higher one. From the bottom: `domain`; `metrics`; \
           `policy`, `ledger`; `storage`, `witness`; `verify`; `engine`; `api`; `config`; \
           `server`; `tools`, `main`.",
    check: |f| {
        if f.module.is_empty() {
            return vec![]; // lib.rs only declares the modules
        }
        let mine = layer(f.top());
        let mut found = vec![];
        for n in f.named.iter().filter(|n| !n.test && n.path[0] == "crate") {
            let Some(target) = n.path.get(1) else {
                continue;
            };
            let allowed = target == f.top()
                || layer(target) < mine
                || (f.top() == "main" && target == "tools");
            if !allowed {
                found.push((n.line, top_of(&n.path)));
            }
        }
        found
    },
};

/// Rule 6 makes each file say what it owns, so the code map in ARCHITECTURE.md can stay short.
const MODULE_DOCS: Rule = Rule {
    number: "6",
    text: "Every module opens with a `//!` comment saying what it owns.",
    check: |f| {
        let first = f
            .raw
            .lines()
            .enumerate()
            .find(|(_, l)| !l.trim().is_empty());
        match first {
            Some((_, l)) if l.trim_start().starts_with("//!") => vec![],
            Some((i, _)) => vec![(i + 1, "//!".to_string())],
            None => vec![(1, "//!".to_string())],
        }
    },
};

const RULES: &[&Rule] = &[&DOMAIN, &PROTOBUF, &SLED, &SEAM, &LAYERS, &MODULE_DOCS];

/// The layers of rule 5 from the bottom; modules of one layer are joined by commas.
const LAYER_ORDER: &str =
    "domain metrics policy,ledger storage,witness verify engine api config server tools,main";

fn layer(module: &str) -> usize {
    let mut layers = LAYER_ORDER.split(' ');
    match layers.position(|l| l.split(',').any(|m| m == module)) {
        Some(l) => l,
        None => panic!("module `{module}` has no layer: add it to rule 5's text and LAYER_ORDER"),
    }
}

/// One test per rule, so a failure names the rule.
macro_rules! rule_tests {
    ($($name:ident: $rule:ident),*) => { $(#[test] fn $name() { check_rule(&$rule) })* };
}
rule_tests!(domain_imports_only_std: DOMAIN, only_api_and_tools_name_protobuf: PROTOBUF,
    only_the_embedded_backend_names_sled: SLED,
    only_the_composition_root_names_the_embedded_backend: SEAM,
    lower_layers_never_import_higher_ones: LAYERS,
    every_module_opens_with_a_doc_comment: MODULE_DOCS);

// ARCHITECTURE.md gets the rules in the same commit that merges this test
#[test]
fn architecture_md_states_every_rule() {
    let doc = fs::read_to_string(root().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    // Verbatim up to line wrapping: Markdown may break a sentence across lines.
    let doc = squash(&doc);
    let missing: Vec<String> = RULES
        .iter()
        .filter(|r| !doc.contains(&squash(r.text)))
        .map(|r| format!("  rule {}: {}", r.number, r.text))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not state:\n{}",
        missing.join("\n")
    );
}

/// Every event type the golden records hold is listed where an independent verifier reads:
/// `LedgerEvent.kind` in audit.proto, and a row of the table in docs/ledger.md.
#[test]
fn every_record_type_is_documented_in_the_contract_and_docs_ledger_md() {
    let golden = fs::read_to_string(root().join("tests/golden/records.json")).expect("golden");
    let proto = squash(
        &fs::read_to_string(root().join("proto/countersign/v1/audit.proto")).expect("proto"),
    );
    let doc = fs::read_to_string(root().join("docs/ledger.md")).expect("docs/ledger.md");
    let types: BTreeSet<&str> = golden
        .split("\\\"type\\\":\\\"")
        .skip(1)
        .filter_map(|rest| rest.split("\\\"").next())
        .collect();
    assert!(types.len() >= 11, "the golden samples name {types:?}");
    for t in types {
        assert!(
            proto.contains(&format!("\"{t}\"")),
            "audit.proto's LedgerEvent.kind does not list {t}"
        );
        assert!(
            doc.contains(&format!("| `{t}` |")),
            "docs/ledger.md's table has no row for {t}"
        );
    }
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs one rule over every file; fails on a violation not in `KNOWN_VIOLATIONS`, and on a known
/// violation of this rule that no longer occurs.
fn check_rule(rule: &Rule) {
    let mut seen = BTreeSet::new();
    let mut errors = vec![];
    for f in source_files() {
        let mut found = (rule.check)(&f);
        found.dedup(); // a grouped `use` names its prefix once per leaf
        for (line, named) in found {
            let key = (rule.number, f.module_name().to_string(), named.clone());
            let known = KNOWN_VIOLATIONS
                .iter()
                .any(|&(r, m, p)| (r, m, p) == (key.0, &*key.1, &*key.2));
            if !known {
                let what = match named.as_str() {
                    "//!" => "does not open with `//!`".to_string(),
                    _ => format!("names `{named}`"),
                };
                errors.push(format!(
                    "{}:{line}: `{}` {what}, against rule {}: \"{}\"",
                    f.rel, key.1, rule.number, rule.text
                ));
            }
            seen.insert(key);
        }
    }
    for &(r, m, p) in KNOWN_VIOLATIONS.iter().filter(|v| v.0 == rule.number) {
        if !seen.contains(&(r, m.to_string(), p.to_string())) {
            errors.push(format!(
                "stale known violation: remove it: (\"{r}\", \"{m}\", \"{p}\") no longer occurs; \
                 rule {r}: \"{}\"",
                rule.text
            ));
        }
    }
    assert!(errors.is_empty(), "\n{}\n", errors.join("\n"));
}

/// One file of `src/`, and the paths it names.
struct SourceFile {
    /// The path from the repository root, for messages.
    rel: String,
    /// The module path: `engine::core`; `main` for main.rs; empty for lib.rs.
    module: String,
    /// The text as written, for rule 6.
    raw: String,
    /// Every resolved path the code names, in order.
    named: Vec<Named>,
}

/// A path named in code, resolved: it starts with `crate` or the name of an external crate.
struct Named {
    line: usize,
    path: Vec<String>,
    /// Inside a `#[cfg(test)] mod` block.
    test: bool,
}

impl SourceFile {
    fn top(&self) -> &str {
        self.module.split("::").next().unwrap_or("")
    }
    fn module_name(&self) -> &str {
        if self.module.is_empty() {
            "crate"
        } else {
            &self.module
        }
    }
    /// The lines naming `prefix` or something under it, with `prefix` as the named path.
    fn naming(&self, prefix: &[&str]) -> Vec<(usize, String)> {
        let named = self.named.iter().filter(|n| n.path.len() >= prefix.len());
        named
            .filter(|n| n.path.iter().zip(prefix).all(|(a, b)| a == b))
            .map(|n| (n.line, prefix.join("::")))
            .collect()
    }
}

fn top_of(path: &[String]) -> String {
    path[..path.len().min(2)].join("::")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, walked recursively, so moved and new files are checked too.
fn source_files() -> Vec<SourceFile> {
    let externs = external_crates();
    let mut paths = vec![];
    walk(&root().join("src"), &mut paths);
    paths.sort();
    paths.iter().map(|p| parse(p, &externs)).collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `std`, `core`, `alloc` and the dependencies in Cargo.toml, as a path names them.
fn external_crates() -> BTreeSet<String> {
    let toml = fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
    let mut names: BTreeSet<String> = ["std", "core", "alloc"].map(String::from).into();
    let mut in_deps = false;
    for line in toml.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[') {
            let section = section.trim_end_matches(']');
            in_deps = section.ends_with("dependencies");
            if let Some(name) = section.split_once("dependencies.").map(|(_, n)| n) {
                names.insert(name.replace('-', "_"));
            }
        } else if let Some((name, _)) = line.split_once('=').filter(|_| in_deps) {
            names.insert(name.trim().replace('-', "_"));
        }
    }
    names
}

fn parse(path: &Path, externs: &BTreeSet<String>) -> SourceFile {
    let raw = fs::read_to_string(path).expect("read a source file");
    let rel = path
        .strip_prefix(root())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/");
    let module = rel.trim_start_matches("src/").trim_end_matches(".rs");
    let module = if module == "lib" {
        String::new()
    } else {
        module.trim_end_matches("/mod").replace('/', "::")
    };
    let toks = lex(&raw);
    let is = |i: usize, s: &str| toks.get(i).is_some_and(|t| t.text == s);
    let base: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();

    // Pass 1: inline modules (for `self`, `super` and the test exemption), children, use trees.
    let mut scopes: Vec<(String, bool, usize)> = vec![]; // (name, is test, brace depth inside)
    let (mut depth, mut pending) = (0, None);
    let mut at = vec![]; // per token: (module path, in test code)
    let mut children = BTreeSet::new();
    for i in 0..toks.len() {
        let test = scopes.iter().any(|s| s.1);
        if is(i, "mod")
            && toks.get(i + 1).is_some_and(|t| t.ident)
            && (is(i + 2, "{") || is(i + 2, ";"))
        {
            if scopes.is_empty() {
                children.insert(toks[i + 1].text.clone());
            }
            let before: String = toks[i.saturating_sub(8)..i]
                .iter()
                .map(|t| &*t.text)
                .collect();
            let cfg_test = before.ends_with("#[cfg(test)]") || before.ends_with("#[cfg(test)]pub");
            if is(i + 2, "{") {
                pending = Some((toks[i + 1].text.clone(), cfg_test || test));
            }
        }
        if is(i, "{") {
            depth += 1;
            if let Some((name, t)) = pending.take() {
                scopes.push((name, t, depth));
            }
        }
        let mut here = base.clone();
        here.extend(scopes.iter().map(|s| s.0.clone()));
        at.push((here, test || scopes.iter().any(|s| s.1)));
        if is(i, "}") {
            if scopes.last().is_some_and(|s| s.2 == depth) {
                scopes.pop();
            }
            depth -= 1;
        }
    }

    // Pass 2: parse the paths, then resolve them; a `use` also brings its last segment in by name.
    let mut uses = vec![]; // (token index, segments, `as` name)
    let mut raw_paths = vec![]; // (token index, segments, line, is a use)
    let mut i = 0;
    while i < toks.len() {
        let (idx, after_sep) = (i, i > 0 && is(i - 1, "::"));
        if is(i, "use") && !after_sep {
            i = tree(&toks, i + 1, vec![], &mut |segs, line, alias| {
                raw_paths.push((idx, segs.clone(), line, true));
                uses.push((idx, segs, alias));
            });
        } else if toks[i].ident && !after_sep && is(i + 1, "::") {
            i = tree(&toks, i, vec![], &mut |segs, line, _| {
                raw_paths.push((idx, segs, line, false))
            });
        } else {
            i += 1;
        }
    }
    let mut scope = Scope {
        main: module == "main",
        base,
        children,
        externs,
        aliases: BTreeMap::new(),
    };
    for (idx, segs, alias) in uses {
        let name = alias.unwrap_or_else(|| segs.last().unwrap().clone());
        if let Some(path) = scope
            .resolve(&segs, &at[idx].0, true)
            .filter(|_| name != "*")
        {
            scope.aliases.insert(name, path);
        }
    }
    let named = raw_paths
        .into_iter()
        .filter_map(|(i, segs, line, use_tree)| {
            let path = scope.resolve(&segs, &at[i].0, use_tree)?;
            Some(Named {
                line,
                path,
                test: at[i].1,
            })
        })
        .collect();
    SourceFile {
        rel,
        module,
        raw,
        named,
    }
}

/// What a file's paths are resolved against.
struct Scope<'a> {
    /// The file is main.rs, where `countersign::` is the library.
    main: bool,
    /// The file's module path, as segments.
    base: Vec<String>,
    /// The modules the file declares (`mod x;`, `mod x { ... }`).
    children: BTreeSet<String>,
    externs: &'a BTreeSet<String>,
    /// The names the file's `use` items bring in, and the resolved paths they stand for.
    aliases: BTreeMap<String, Vec<String>>,
}

impl Scope<'_> {
    /// Resolves a path named at module `here` to one starting with `crate` or an external
    /// crate; None for a local item. A `use` path does not go through the aliases.
    fn resolve(&self, segs: &[String], here: &[String], use_tree: bool) -> Option<Vec<String>> {
        let first = segs[0].clone();
        let mut rest: Vec<String> = segs[1..].iter().filter(|s| *s != "self").cloned().collect();
        let mut out = vec!["crate".to_string()];
        match first.as_str() {
            "crate" if self.main => out.push("main".into()),
            "crate" => {}
            "countersign" if self.main => {}
            "self" => out.extend(here.iter().cloned()),
            "super" => {
                let ups = 1 + rest.iter().take_while(|s| *s == "super").count();
                rest.drain(..ups - 1);
                out.extend(here[..here.len().saturating_sub(ups)].iter().cloned());
            }
            _ if self.children.contains(&first) && here.len() == self.base.len() => {
                out.extend(here.iter().cloned());
                out.push(first);
            }
            _ if !use_tree && self.aliases.contains_key(&first) => {
                out = self.aliases[&first].clone()
            }
            _ if self.externs.contains(&first) => out = vec![first],
            "pb" => out.extend(["api".to_string(), "pb".to_string()]),
            _ => return None, // a local item: a type, an enum, a variant
        }
        out.extend(rest);
        Some(out)
    }
}

/// Parses a path or a use tree from token `i`, calling `leaf` for each expanded path with its line
/// and its `as` name; returns the index after it.
fn tree(
    toks: &[Tok],
    mut i: usize,
    mut prefix: Vec<String>,
    leaf: &mut dyn FnMut(Vec<String>, usize, Option<String>),
) -> usize {
    loop {
        let Some(t) = toks.get(i) else { return i };
        if t.text == "{" {
            i += 1;
            while toks.get(i).is_some_and(|t| t.text != "}") {
                i = tree(toks, i, prefix.clone(), leaf);
                if toks.get(i).is_some_and(|t| t.text == ",") {
                    i += 1;
                }
            }
            return i + 1;
        }
        if t.text == "*" || !t.ident {
            if t.text == "*" {
                prefix.push("*".into());
            }
            if !prefix.is_empty() {
                leaf(prefix, t.line, None);
            }
            return i + usize::from(t.text == "*");
        }
        prefix.push(t.text.clone());
        if toks.get(i + 1).is_some_and(|t| t.text == "::") {
            i += 2;
            continue;
        }
        let alias = toks
            .get(i + 1)
            .filter(|t| t.text == "as")
            .and_then(|_| toks.get(i + 2));
        leaf(prefix, t.line, alias.map(|a| a.text.clone()));
        return i + 1 + if alias.is_some() { 2 } else { 0 };
    }
}

/// A token of code: an identifier or number, `::`, or one punctuation character.
struct Tok {
    text: String,
    line: usize,
    ident: bool,
}

/// Splits code into tokens, skipping comments (`//`, `//!`, `///`, nested `/* */`) and string,
/// raw string and char literals, so that neither a comment nor a string can name a path.
fn lex(src: &str) -> Vec<Tok> {
    let (s, mut toks, mut line, mut i) = (src.as_bytes(), vec![], 1, 0);
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < s.len() {
        let (c, start) = (s[i], i);
        let raw = match (c, at(i + 1)) {
            (b'r', _) => 1,
            (b'b', b'r') => 2,
            _ => 0,
        };
        let hashes = s[i + raw..].iter().take_while(|&&c| c == b'#').count();
        let raw = raw > 0 && (i == 0 || !word(s[i - 1])) && at(i + raw + hashes) == b'"';
        let char_len = src
            .get(i + 1..)
            .and_then(|r| r.chars().next())
            .map_or(1, char::len_utf8);
        if c == b'/' && at(i + 1) == b'/' {
            while i < s.len() && s[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && at(i + 1) == b'*' {
            let mut depth = 0;
            while i < s.len() {
                match (s[i], at(i + 1)) {
                    (b'/', b'*') => (depth, i) = (depth + 1, i + 2),
                    (b'*', b'/') => (depth, i) = (depth - 1, i + 2),
                    _ => i += 1,
                }
                if depth == 0 {
                    break;
                }
            }
        } else if raw {
            i = s[i..].iter().position(|&c| c == b'"').unwrap() + i + 1;
            while i < s.len()
                && !(s[i] == b'"' && s[i + 1..].iter().take(hashes).all(|&c| c == b'#'))
            {
                i += 1;
            }
            i += 1 + hashes;
        } else if c == b'"' || c == b'\'' && (at(i + 1) == b'\\' || at(i + 1 + char_len) == b'\'') {
            i += 1;
            while i < s.len() && s[i] != c {
                i += if s[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if word(c) {
            while i < s.len() && word(s[i]) {
                i += 1;
            }
            let (text, ident) = (src[start..i].to_string(), !c.is_ascii_digit());
            toks.push(Tok { text, line, ident });
        } else {
            i += if c == b':' && at(i + 1) == b':' { 2 } else { 1 };
            if !c.is_ascii_whitespace() {
                toks.push(Tok {
                    text: src[start..i].to_string(),
                    line,
                    ident: false,
                });
            }
        }
        line += s[start..i.min(s.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
    }
    toks
}
