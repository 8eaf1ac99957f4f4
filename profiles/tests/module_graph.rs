//! Data flows one way through this crate (cluster file → validated cluster →
//! platform selection → rendered node, with secrets an input of rendering), so
//! the graph of which module names which must have no circles. This test reads
//! every module under `src/`, collects the modules each one reaches through
//! `use crate::…`/`use super::…`/`use <child>::…` and through paths written in
//! code (`crate::a::b()`, `super::x::Y`, `child::f()`), and names every circle.
//!
//! `mod x;` declarations are structure, not dependencies: a parent may declare
//! a child that imports it. Code under `#[cfg(test)]` is left out, since tests
//! drive the whole pipeline and are no part of its flow.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// A module path inside the crate: `[]` is the crate root.
type Module = Vec<String>;

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Identifiers, `::` and single punctuation of Rust source, with line numbers;
/// comments, string and character literals and lifetimes dropped.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
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
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                line += usize::from(at(i) == '\n');
                i += 1;
            }
            i += 1;
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // '\n', '\'', '\u{..}'
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime: the identifier after it is skipped too.
                i += 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_string = matches!(word.as_str(), "r" | "br" | "cr")
                && (at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '"' | '#')));
            if raw_string {
                let mut hashes = 0;
                while at(i) == '#' {
                    hashes += 1;
                    i += 1;
                }
                i += 1;
                loop {
                    if i >= c.len() {
                        break;
                    }
                    if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                        i += 1 + hashes;
                        break;
                    }
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            } else if matches!(word.as_str(), "b" | "c") && matches!(at(i), '"' | '\'') {
                // b"…", b'…': the literal is lexed next round.
            } else {
                out.push((Tok::Ident(word), line));
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// One `use` tree flattened into its paths (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn use_paths(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                i += 1;
            }
            Some(Tok::PathSep) => i += 1,
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    i = use_paths(toks, i, path.clone(), out);
                    match toks.get(i).map(|t| &t.0) {
                        Some(Tok::Punct(',')) => i += 1,
                        Some(Tok::Punct('}')) => return i + 1,
                        _ => return i,
                    }
                    if let Some(Tok::Punct('}')) = toks.get(i).map(|t| &t.0) {
                        return i + 1;
                    }
                }
            }
            Some(Tok::Punct('*')) => i += 1,
            _ => {
                // `x as y`: the path is `x`.
                if path.len() >= 2 && path[path.len() - 2] == "as" {
                    path.truncate(path.len() - 2);
                }
                if !path.is_empty() {
                    out.push(path);
                }
                return i;
            }
        }
    }
}

/// The file module a path written in `module` (inside `inline` inline
/// modules of its file) names, if it names one of this crate's.
fn resolve(
    module: &Module,
    inline: usize,
    children: &BTreeSet<String>,
    path: &[String],
    modules: &BTreeSet<Module>,
) -> Option<Module> {
    let first = path.first()?;
    let mut full: Module = match first.as_str() {
        "crate" => path[1..].to_vec(),
        "self" => module.iter().chain(&path[1..]).cloned().collect(),
        "super" => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            let up = supers.saturating_sub(inline);
            if up > module.len() {
                return None;
            }
            let base = &module[..module.len() - up];
            base.iter().chain(&path[supers..]).cloned().collect()
        }
        c if children.contains(c) && inline == 0 => module.iter().chain(path).cloned().collect(),
        _ => return None,
    };
    while !modules.contains(&full) {
        full.pop()?;
    }
    Some(full)
}

#[derive(Debug, Default)]
struct Graph {
    /// module → module it names → first place it does so.
    edges: BTreeMap<Module, BTreeMap<Module, String>>,
}

/// The module graph of the crate whose sources are `files` (path relative to
/// `src/`, text).
fn graph(files: &[(PathBuf, String)]) -> Graph {
    let module_of = |p: &Path| -> Module {
        let mut m: Module = p
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
            m.pop();
        }
        m
    };
    let modules: BTreeSet<Module> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut g = Graph::default();
    for (file, text) in files {
        let module = module_of(file);
        let toks = lex(text);
        // Child modules this file declares (`mod x;`), outside test code.
        let mut children = BTreeSet::new();
        for w in toks.windows(3) {
            if let [
                (Tok::Ident(m), _),
                (Tok::Ident(name), _),
                (Tok::Punct(';'), _),
            ] = w
                && m == "mod"
            {
                children.insert(name.clone());
            }
        }
        let mut refs: Vec<(Vec<String>, usize, usize)> = Vec::new(); // path, line, inline depth
        let mut depth = 0usize;
        let mut inline: Vec<usize> = Vec::new(); // brace depth inside each inline module
        let mut i = 0;
        let tok = |i: usize| toks.get(i).map(|t| &t.0);
        let is = |i: usize, w: &str| matches!(tok(i), Some(Tok::Ident(x)) if x == w);
        while i < toks.len() {
            // `#[cfg(test)]`: skip the item it applies to.
            if tok(i) == Some(&Tok::Punct('#'))
                && tok(i + 1) == Some(&Tok::Punct('['))
                && is(i + 2, "cfg")
                && tok(i + 3) == Some(&Tok::Punct('('))
                && is(i + 4, "test")
                && tok(i + 5) == Some(&Tok::Punct(')'))
            {
                i += 7;
                let mut d = 0;
                while i < toks.len() {
                    match tok(i) {
                        Some(Tok::Punct('{')) => d += 1,
                        Some(Tok::Punct('}')) => {
                            d -= 1;
                            if d == 0 {
                                i += 1;
                                break;
                            }
                        }
                        Some(Tok::Punct(';')) if d == 0 => {
                            i += 1;
                            break;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                continue;
            }
            match tok(i) {
                Some(Tok::Punct('{')) => {
                    depth += 1;
                    i += 1;
                }
                Some(Tok::Punct('}')) => {
                    if inline.last() == Some(&depth) {
                        inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                Some(Tok::Ident(w)) if w == "mod" && tok(i + 2) == Some(&Tok::Punct('{')) => {
                    depth += 1;
                    inline.push(depth);
                    i += 3;
                }
                Some(Tok::Ident(w)) if w == "use" => {
                    let line = toks[i].1;
                    let mut paths = Vec::new();
                    let mut j = i + 1;
                    if tok(j) == Some(&Tok::PathSep) {
                        j += 1; // `use ::std::…`: an extern crate
                        while j < toks.len() && tok(j) != Some(&Tok::Punct(';')) {
                            j += 1;
                        }
                    } else {
                        j = use_paths(&toks, j, Vec::new(), &mut paths);
                    }
                    refs.extend(paths.into_iter().map(|p| (p, line, inline.len())));
                    i = j;
                }
                Some(Tok::Ident(w)) if tok(i + 1) == Some(&Tok::PathSep) => {
                    let line = toks[i].1;
                    let preceded = i > 0 && tok(i - 1) == Some(&Tok::PathSep);
                    let mut path = vec![w.clone()];
                    let mut j = i + 1;
                    while tok(j) == Some(&Tok::PathSep) {
                        match tok(j + 1) {
                            Some(Tok::Ident(n)) => {
                                path.push(n.clone());
                                j += 2;
                            }
                            _ => break,
                        }
                    }
                    if !preceded {
                        refs.push((path, line, inline.len()));
                    }
                    i = j;
                }
                _ => i += 1,
            }
        }
        for (path, line, depth) in refs {
            if let Some(to) = resolve(&module, depth, &children, &path, &modules)
                && to != module
            {
                g.edges
                    .entry(module.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("src/{}:{line}", file.display()));
            }
        }
        g.edges.entry(module).or_default();
    }
    g
}

/// Every circle of the graph: for each import that lies on one, the shortest
/// circle through it, written `a -> b (where a names b) -> … -> a`.
fn circles(g: &Graph) -> Vec<String> {
    let next = |m: &Module| g.edges.get(m).into_iter().flat_map(BTreeMap::keys);
    // Shortest way from `from` to `to`, as the modules after `from`.
    let way = |from: &Module, to: &Module| -> Option<Vec<Module>> {
        let mut prev: BTreeMap<Module, Module> = BTreeMap::new();
        let mut queue = VecDeque::from([from.clone()]);
        while let Some(x) = queue.pop_front() {
            if &x == to {
                let mut out = vec![x.clone()];
                let mut at = x;
                while let Some(p) = prev.get(&at).filter(|p| *p != from) {
                    out.push(p.clone());
                    at = p.clone();
                }
                out.reverse();
                return Some(out);
            }
            for n in next(&x) {
                if n != from && !prev.contains_key(n) {
                    prev.insert(n.clone(), x.clone());
                    queue.push_back(n.clone());
                }
            }
        }
        None
    };
    let mut found: BTreeSet<Vec<Module>> = BTreeSet::new();
    for (from, tos) in &g.edges {
        for to in tos.keys() {
            let Some(back) = way(to, from) else { continue };
            let mut cycle = vec![from.clone(), to.clone()];
            if to != from {
                cycle.extend(back);
            }
            cycle.pop();
            // One spelling per circle: start at its least module.
            let start = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap_or(0);
            cycle.rotate_left(start);
            found.insert(cycle);
        }
    }
    found
        .into_iter()
        .map(|mut cycle| {
            cycle.push(cycle[0].clone());
            let mut text = show(&cycle[0]);
            for w in cycle.windows(2) {
                text.push_str(&format!(" -> {} ({})", show(&w[1]), g.edges[&w[0]][&w[1]]));
            }
            text
        })
        .collect()
}

fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p.strip_prefix(root).unwrap().to_path_buf(), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn m(path: &str) -> Module {
    if path == "crate" {
        return Vec::new();
    }
    path.split("::").map(str::to_string).collect()
}

#[test]
fn profiles_modules_import_each_other_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&sources(&src));
    // The reader sees the imports it must: a parser that found nothing would
    // find no circle either.
    for (from, to) in [
        ("render", "secrets"),
        ("render", "cluster"),
        ("platform::manifests", "secrets"),
        ("platform::manifests", "platform::catalog"),
        ("cluster", "platform"),
    ] {
        assert!(
            g.edges
                .get(&m(from))
                .is_some_and(|e| e.contains_key(&m(to))),
            "the module graph lost the edge {from} -> {to}: {:#?}",
            g.edges
        );
    }
    let found = circles(&g);
    assert!(
        found.is_empty(),
        "profiles/src has import circles; data must flow one way (cluster file -> validated cluster -> platform selection -> rendered node). \
         Move the shared type to the module that owns the concept, or pass the value in:\n  {}",
        found.join("\n  ")
    );
}

/// The checker itself finds circles through `use super::`, `use crate::`,
/// paths in code and a parent's own child modules, and ignores comments,
/// strings and test code.
#[test]
fn the_checker_finds_circles_of_every_kind() {
    let files = |list: &[(&str, &str)]| -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    };
    let circle_free = files(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::{self, X};\n// crate::lib\n"),
        (
            "b.rs",
            "const S: &str = \"crate::a::x\";\n#[cfg(test)]\nmod tests { use crate::a::Y; }\n",
        ),
    ]);
    assert_eq!(circles(&graph(&circle_free)), Vec::<String>::new());

    let via_code = files(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::X;\n"),
        ("b.rs", "fn f() { crate::a::g(); }\n"),
    ]);
    let found = circles(&graph(&via_code));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found, ["a -> b (src/a.rs:1) -> a (src/b.rs:1)"]);

    let parent_child = files(&[
        ("lib.rs", "pub mod p;\n"),
        ("p/mod.rs", "mod c;\npub use c::Thing;\npub struct S;\n"),
        ("p/c.rs", "use super::{S, other};\n"),
    ]);
    let found = circles(&graph(&parent_child));
    assert_eq!(found, ["p -> p::c (src/p/mod.rs:2) -> p (src/p/c.rs:1)"]);

    let three = files(&[
        (
            "lib.rs",
            "pub const K: u8 = 1; pub use x::T;\nmod x; mod y; mod z;\n",
        ),
        ("x.rs", "pub struct T; use crate::y;\n"),
        ("y.rs", "fn f() -> u8 { super::z::g() }\n"),
        ("z.rs", "pub fn g() -> u8 { crate::K }\n"),
    ]);
    let found = circles(&graph(&three));
    assert_eq!(
        found,
        ["crate -> x (src/lib.rs:1) -> y (src/x.rs:1) -> z (src/y.rs:1) -> crate (src/z.rs:1)"]
    );
}
