//! The module graph under `src/`: no import cycle between top-level modules, none between the
//! sibling submodules of one module, and no module but the wiring imports `config` (stages own
//! their settings types; `config` only fills them in). Owns a small reader of Rust source that
//! finds `crate::`, `super::`, `self::` and `recwatch::` paths, `use` groups across lines
//! included, with comments, strings and char literals ignored. Never compiles or runs anything
//! from `src/`: it reads the text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules that wire stages together, and so may import `config`. `bin:` names are
/// modules of the `recwatch` binary (`src/main.rs` and the modules it declares).
const WIRING: &[&str] = &["config", "daemon", "pipeline", "bin:main", "bin:cli"];

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = ModuleGraph::read(&src_dir());
    // The reader sees the edges everybody knows are there (it is not silently empty).
    for (from, to) in [("daemon", "config"), ("pipeline", "detect"), ("config", "alerting"), ("bin:cli", "config")] {
        assert!(graph.top.contains_key(&(from.into(), to.into())), "{from} → {to} not seen: {:?}", graph.top.keys());
    }
    if let Some(cycle) = find_cycle(&graph.top) {
        panic!("import cycle between top-level modules under src/:\n{}", describe_cycle(&cycle, &graph.top));
    }
}

#[test]
fn no_import_cycle_between_sibling_submodules() {
    let graph = ModuleGraph::read(&src_dir());
    assert!(graph.sub.get("detect").is_some_and(|e| e.contains_key(&("worker".into(), "rule".into()))));
    for (parent, edges) in &graph.sub {
        if let Some(cycle) = find_cycle(edges) {
            panic!("import cycle between the submodules of src/{parent}/:\n{}", describe_cycle(&cycle, edges));
        }
    }
}

#[test]
fn only_the_wiring_imports_config() {
    let graph = ModuleGraph::read(&src_dir());
    let offenders = config_importers(&graph);
    assert!(offenders.is_empty(), "modules outside the wiring {WIRING:?} import config:\n{}", offenders.join("\n"));
}

#[test]
fn a_planted_cycle_and_a_stage_importing_config_are_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files: &[(&str, &str)] = &[
        ("lib.rs", "pub mod alpha;\npub mod beta;\npub mod config;\n"),
        ("main.rs", "mod cli;\nfn main() { cli::run() }\n"),
        ("cli.rs", "use recwatch::config::Config;\npub fn run() {}\n"),
        ("config.rs", "pub struct Config;\n"),
        // A multi-line use group, with the path a comment or a string mentions ignored.
        (
            "alpha.rs",
            "// crate::beta::Nothing in a comment\nuse crate::{\n    config::Config,\n    beta::{self, gamma::G as H},\n};\nconst S: &str = \"crate::beta::X\";\nfn f<'a>(c: char) -> bool { c == '\\'' }\n",
        ),
        ("beta/mod.rs", "pub mod gamma;\npub mod delta;\n"),
        ("beta/gamma.rs", "use super::delta::D;\npub struct G;\n"),
        // super::super reaches the crate root; a sibling through `super::`.
        ("beta/delta.rs", "pub struct D;\nfn x() { let _ = super::super::alpha::f; let _ = super::gamma::G; }\n"),
    ];
    for (path, text) in files {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let graph = ModuleGraph::read(&src);
    let top: Vec<(&str, &str)> = graph.top.keys().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(top, [("alpha", "beta"), ("alpha", "config"), ("beta", "alpha"), ("bin:cli", "config")]);
    assert_eq!(graph.top[&("alpha".into(), "beta".into())], "src/alpha.rs:4: crate::beta::self");
    let cycle = find_cycle(&graph.top).expect("alpha ↔ beta is a cycle");
    let text = describe_cycle(&cycle, &graph.top);
    assert!(text.starts_with("alpha → beta → alpha"), "{text}");
    assert!(text.contains("beta → alpha at src/beta/delta.rs:2: super::super::alpha::f"), "{text}");
    let sub = find_cycle(&graph.sub["beta"]).expect("gamma ↔ delta is a cycle");
    assert_eq!(describe_cycle(&sub, &graph.sub["beta"]).lines().next(), Some("delta → gamma → delta"));
    let offenders = config_importers(&graph);
    assert_eq!(offenders, ["alpha imports config at src/alpha.rs:3: crate::config::Config"]);
}

#[test]
fn comments_strings_chars_and_lifetimes_are_not_paths() {
    let text = "/* crate::a /* nested crate::b */ crate::c */ let s = r#\"crate::d \"# ; let b = b\"crate::e\";\n\
                let c = '\"'; let l: &'static str = x; // crate::f\ncrate::g::h(r#type, '\\u{1F600}', b'x');";
    let paths: Vec<Vec<String>> = use_paths(&tokens(text)).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, [["crate", "g", "h"]]);
    let (_, line) = use_paths(&tokens(text))[0];
    assert_eq!(line, 3);
}

// ---------------------------------------------------------------------------------------------
// Reading the graph

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// (from, to) → where the first reference was seen (`src/x.rs:12: crate::y::Z`).
type Edges = BTreeMap<(String, String), String>;

struct ModuleGraph {
    /// Between top-level modules (`bin:` prefixed for the binary's).
    top: Edges,
    /// Per top-level module of the library: between its direct submodules (siblings); the
    /// parent's own file (`mod.rs`) is not a node, as it declares and re-exports children.
    sub: BTreeMap<String, Edges>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Krate {
    Lib,
    Bin,
}

struct SourceFile {
    path: PathBuf,
    krate: Krate,
    /// Module path of the file (`src/alerting/sender.rs` → `[alerting, sender]`).
    module: Vec<String>,
}

impl ModuleGraph {
    fn read(src: &Path) -> ModuleGraph {
        let root = src.parent().unwrap();
        let mut rs = Vec::new();
        walk(src, &mut rs);
        assert!(!rs.is_empty(), "no .rs file under {}", src.display());
        let bin_mods: BTreeSet<String> = match std::fs::read_to_string(src.join("main.rs")) {
            Ok(text) => declared_mods(&tokens(&text)),
            Err(_) => BTreeSet::new(),
        };
        let files: Vec<SourceFile> = rs
            .into_iter()
            .map(|path| {
                let rel = path.strip_prefix(src).unwrap();
                let mut module: Vec<String> =
                    rel.with_extension("").iter().map(|c| c.to_string_lossy().into_owned()).collect();
                if module.last().is_some_and(|m| m == "mod") {
                    module.pop();
                }
                let krate = if module == ["main"] || module.first().is_some_and(|m| bin_mods.contains(m)) {
                    Krate::Bin
                } else {
                    Krate::Lib
                };
                if module == ["main"] || module == ["lib"] {
                    module.clear();
                }
                SourceFile { path, krate, module }
            })
            .collect();
        // Module paths that exist as files, per crate: what a reference may point at.
        let known: BTreeSet<(Krate, Vec<String>)> =
            files.iter().flat_map(|f| (1..=f.module.len().min(2)).map(|n| (f.krate, f.module[..n].to_vec()))).collect();
        let node = |krate: Krate, top: &str| match krate {
            Krate::Lib => top.to_string(),
            Krate::Bin => format!("bin:{top}"),
        };

        let mut graph = ModuleGraph { top: Edges::new(), sub: BTreeMap::new() };
        for file in &files {
            let text = std::fs::read_to_string(&file.path).unwrap();
            let toks = tokens(&text);
            let shown = file.path.strip_prefix(root).unwrap_or(&file.path).display().to_string();
            let from_top = match (file.module.first(), file.krate) {
                (Some(m), krate) => node(krate, m),
                (None, Krate::Lib) => "lib".to_string(),
                (None, Krate::Bin) => "bin:main".to_string(),
            };
            for (path, line, inline) in paths_in_modules(&toks) {
                let mut here = file.module.clone();
                here.extend(inline);
                let Some((krate, target)) = resolve(file.krate, &here, &path) else { continue };
                let Some(first) = target.first() else { continue };
                if !known.contains(&(krate, vec![first.clone()])) {
                    continue; // an item of the crate root, not a module
                }
                let at = format!("{shown}:{line}: {}", path.join("::"));
                let to_top = node(krate, first);
                if to_top != from_top {
                    graph.top.entry((from_top.clone(), to_top)).or_insert_with(|| at.clone());
                }
                let sibling = file.krate == Krate::Lib
                    && krate == Krate::Lib
                    && file.module.len() >= 2
                    && target.len() >= 2
                    && file.module[0] == target[0]
                    && file.module[1] != target[1]
                    && known.contains(&(Krate::Lib, target[..2].to_vec()));
                if sibling {
                    graph
                        .sub
                        .entry(target[0].clone())
                        .or_default()
                        .entry((file.module[1].clone(), target[1].clone()))
                        .or_insert(at);
                }
            }
        }
        graph
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `path` (as written, starting with `crate`, `$crate`, `super`, `self` or `recwatch`) seen
/// from module `here` of `krate`: the crate it points into and the absolute module path,
/// without a trailing `self` or `*`. None when it climbs above the crate root.
fn resolve(krate: Krate, here: &[String], path: &[String]) -> Option<(Krate, Vec<String>)> {
    let (target_krate, mut abs, rest) = match path[0].as_str() {
        "crate" => (krate, Vec::new(), &path[1..]),
        "recwatch" => (Krate::Lib, Vec::new(), &path[1..]),
        "self" => (krate, here.to_vec(), &path[1..]),
        "super" => {
            let mut abs = here.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                abs.pop()?;
                rest = &rest[1..];
            }
            (krate, abs, rest)
        }
        _ => return None,
    };
    abs.extend(rest.iter().filter(|s| *s != "self" && *s != "*").cloned());
    Some((target_krate, abs))
}

/// Modules that import `config` without being wiring, with where.
fn config_importers(graph: &ModuleGraph) -> Vec<String> {
    graph
        .top
        .iter()
        .filter(|((from, to), _)| to == "config" && !WIRING.contains(&from.as_str()))
        .map(|((from, _), at)| format!("{from} imports config at {at}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Cycles

/// One cycle of the graph (first node repeated at the end), if there is any.
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(n, Mark::Open);
        stack.push(n);
        for &m in next.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            match marks.get(m) {
                Some(Mark::Open) => {
                    let start = stack.iter().position(|&s| s == m).unwrap();
                    let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(m.to_string());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(m, next, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for &n in next.keys() {
        if !marks.contains_key(n) {
            if let Some(c) = visit(n, &next, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// `a → b → a`, then one line per edge saying where it comes from.
fn describe_cycle(cycle: &[String], edges: &Edges) -> String {
    let mut s = cycle.join(" → ");
    for pair in cycle.windows(2) {
        let at = &edges[&(pair[0].clone(), pair[1].clone())];
        s += &format!("\n  {} → {} at {at}", pair[0], pair[1]);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Reading Rust source

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other,
}

/// The tokens that matter for paths, with their 1-based lines; comments, string, byte-string,
/// raw-string and char literals are skipped, lifetimes are not mistaken for chars.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && peek(&c, i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && peek(&c, i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && peek(&c, i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && peek(&c, i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1, &mut line);
        } else if ch == '\'' {
            if peek(&c, i + 1) == '\\' {
                // An escaped char literal: up to the closing quote.
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if peek(&c, i + 2) == '\'' {
                i += 3; // 'x'
            } else {
                i += 1; // a lifetime or label: its name is read as an identifier next
                out.push((Tok::Other, line));
            }
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = c.get(i).copied().unwrap_or('\0');
            let raw_string = matches!(word.as_str(), "r" | "br" | "cr") && (next == '"' || next == '#') && {
                let mut j = i;
                while c.get(j) == Some(&'#') {
                    j += 1;
                }
                c.get(j) == Some(&'"')
            };
            if raw_string {
                let mut hashes = 0;
                while c.get(i) == Some(&'#') {
                    hashes += 1;
                    i += 1;
                }
                i += 1; // the opening quote
                while i < c.len() {
                    if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                        i += 1 + hashes;
                        break;
                    }
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            } else if matches!(word.as_str(), "b" | "c") && next == '"' {
                i = skip_string(&c, i + 1, &mut line);
            } else if word == "b" && next == '\'' {
                i += 1;
                while i < c.len() && c[i] != '\'' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            } else if word == "r" && next == '#' && c.get(i + 1).is_some_and(|&ch| ident_start(ch)) {
                let start = i + 1;
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                out.push((Tok::Ident(c[start..i].iter().collect()), line));
            } else {
                out.push((Tok::Ident(word), line));
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push((Tok::Other, line));
        } else {
            let tok = match ch {
                ':' if peek(&c, i + 1) == ':' => {
                    i += 1;
                    Tok::PathSep
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                '*' => Tok::Star,
                _ => Tok::Other,
            };
            out.push((tok, line));
            i += 1;
        }
    }
    out
}

/// The char at `i`, NUL past the end.
fn peek(c: &[char], i: usize) -> char {
    c.get(i).copied().unwrap_or('\0')
}

/// Past the closing quote of a string whose body starts at `i`.
fn skip_string(c: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
        }
        *line += usize::from(c.get(i) == Some(&'\n'));
        i += 1;
    }
    i + 1
}

/// `mod name;` declarations (file modules) of a file.
fn declared_mods(toks: &[(Tok, usize)]) -> BTreeSet<String> {
    toks.windows(3)
        .filter_map(|w| match (&w[0].0, &w[1].0, &w[2].0) {
            (Tok::Ident(m), Tok::Ident(name), Tok::Semi) if m == "mod" => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn is_path_start(word: &str) -> bool {
    matches!(word, "crate" | "super" | "self" | "recwatch")
}

/// Every path starting at `crate`, `super`, `self` or `recwatch` (a `use` group expands to
/// one path per leaf), with its line.
fn use_paths(toks: &[(Tok, usize)]) -> Vec<(Vec<String>, usize)> {
    paths_in_modules(toks).into_iter().map(|(p, line, _)| (p, line)).collect()
}

/// [`use_paths`], each with the inline modules (`mod tests { … }`) it is written in.
fn paths_in_modules(toks: &[(Tok, usize)]) -> Vec<(Vec<String>, usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new(); // (name, brace depth inside it)
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Ident(m) if m == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Open, _))) = (toks.get(i + 1), toks.get(i + 2)) {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                    continue;
                }
                i += 1;
            }
            Tok::Ident(word)
                if is_path_start(word)
                    && toks.get(i + 1).is_some_and(|t| t.0 == Tok::PathSep)
                    && (i == 0 || toks[i - 1].0 != Tok::PathSep) =>
            {
                let mut trees = Vec::new();
                i = tree(toks, i, Vec::new(), &mut trees);
                let modules: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                out.extend(trees.into_iter().map(|(p, line)| (p, line, modules.clone())));
            }
            Tok::Open => {
                depth += 1;
                i += 1;
            }
            Tok::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Reads one path tree at `i` (`a::b`, `a::{b, c::{d, e as f}}`, `a::*`) under `prefix`;
/// pushes one path per leaf, with the line of its last segment, and returns the index after it.
fn tree(toks: &[(Tok, usize)], mut i: usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, usize)>) -> usize {
    let mut path = prefix;
    let mut line = toks.get(i).map_or(0, |t| t.1);
    loop {
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                line = toks[i].1;
                i += 1;
            }
            Some(Tok::Star) => {
                out.push((path, line));
                return i + 1;
            }
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.0) {
                        None => return i,
                        Some(Tok::Close) => return i + 1,
                        Some(Tok::Comma) => i += 1,
                        Some(Tok::Ident(a)) if a == "as" => i += 2,
                        Some(_) => {
                            let before = i;
                            i = tree(toks, i, path.clone(), out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                if !path.is_empty() {
                    out.push((path, line));
                }
                return i;
            }
        }
        if toks.get(i).is_some_and(|t| t.0 == Tok::PathSep) {
            i += 1;
        } else {
            out.push((path, line));
            return i;
        }
    }
}
