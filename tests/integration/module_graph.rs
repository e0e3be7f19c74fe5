//! The library's files import each other without a cycle: read every `crate::`, `super::` and
//! child-module path in `src/` (outside `#[cfg(test)]` modules), resolve each to the file that
//! defines it, and fail on any strongly connected group of files, naming the imports that tie it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Other,
}

/// Source text without comments, string and char literals.
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let rest = |n: usize| chars.get(i + n).copied();
        match chars[i] {
            '/' if rest(1) == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if rest(1) == Some('*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            'r' if rest(1) == Some('#')
                || (rest(1) == Some('"') && !ident_char(prev(&chars, i))) =>
            {
                let mut hashes = 0;
                let mut j = i + 1;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                let closing: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                while j < chars.len()
                    && !chars[j..].iter().collect::<String>().starts_with(&closing)
                {
                    j += 1;
                }
                i = j + closing.len();
                out.push_str("\"\"");
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' if rest(2) == Some('\'') || (rest(1) == Some('\\') && rest(3) == Some('\'')) => {
                // A char literal; lifetimes ('a) are left alone.
                i += if rest(1) == Some('\\') { 4 } else { 3 };
                out.push_str("' '");
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn prev(chars: &[char], i: usize) -> char {
    if i == 0 { ' ' } else { chars[i - 1] }
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Removes `#[cfg(test)] mod name { ... }` blocks: test modules are not part of the build graph.
fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let mut trimmed = after.trim_start();
        // Further attributes (`#[allow(...)]`) may stand between the cfg and the module.
        while trimmed.starts_with("#[") {
            let end = trimmed.find(']').map_or(trimmed.len(), |i| i + 1);
            trimmed = trimmed[end..].trim_start();
        }
        if !(trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ")) {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let Some(open) = after.find('{') else {
            rest = after;
            continue;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if ident_char(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        out.push(match c {
            ':' if chars.get(i + 1) == Some(&':') => {
                i += 1;
                Token::PathSep
            }
            '{' => Token::Open,
            '}' => Token::Close,
            ',' => Token::Comma,
            '*' => Token::Star,
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            _ => Token::Other,
        });
        i += 1;
    }
    out
}

/// Parses the path tree that starts at `tokens[at]` (an identifier followed by `::`) and pushes
/// every full path it names; returns the index after it.
fn path_tree(
    tokens: &[Token],
    mut at: usize,
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(at) {
            Some(Token::Ident(name)) if name == "as" => {
                // `use a::B as C`: the alias names nothing new.
                out.push(path);
                return at + 2;
            }
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                at += 1;
            }
            Some(Token::Open) => {
                at += 1;
                loop {
                    match tokens.get(at) {
                        Some(Token::Close) => return at + 1,
                        Some(Token::Comma) => at += 1,
                        Some(_) => at = path_tree(tokens, at, &path, out),
                        None => return at,
                    }
                }
            }
            Some(Token::Star) => {
                out.push(path);
                return at + 1;
            }
            _ => {
                out.push(path);
                return at;
            }
        }
        if tokens.get(at) != Some(&Token::PathSep) {
            out.push(path);
            return at;
        }
        at += 1;
    }
}

struct Crate {
    root: PathBuf,
    /// Module path of each file, e.g. `["proxy", "xfcc"]` for `src/proxy/xfcc.rs`.
    files: BTreeMap<PathBuf, Vec<String>>,
}

impl Crate {
    fn read(root: &Path) -> Crate {
        let mut files = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let relative = path
                        .strip_prefix(root)
                        .expect("under src")
                        .with_extension("");
                    let mut module: Vec<String> = relative
                        .iter()
                        .map(|s| s.to_string_lossy().into_owned())
                        .collect();
                    match module.last().map(String::as_str) {
                        Some("main") if module.len() == 1 => continue,
                        Some("lib") if module.len() == 1 => module.clear(),
                        Some("mod") => {
                            module.pop();
                        }
                        _ => {}
                    }
                    files.insert(path, module);
                }
            }
        }
        Crate {
            root: root.to_path_buf(),
            files,
        }
    }

    /// The file that defines the longest prefix of `module` that is a file of its own.
    fn file_of(&self, module: &[String]) -> Option<&PathBuf> {
        (0..=module.len()).rev().find_map(|n| {
            self.files
                .iter()
                .find(|(_, m)| m.as_slice() == &module[..n])
                .map(|(f, _)| f)
        })
    }

    /// Every import of `file`, as (module path, name imported).
    fn imports(&self, file: &Path, module: &[String]) -> Vec<Vec<String>> {
        let source = std::fs::read_to_string(file).expect("read source");
        let code = without_test_modules(&strip(&source));
        let tokens = tokens(&code);
        let children: BTreeSet<&str> = self
            .files
            .values()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .filter_map(|m| m.last().map(String::as_str))
            .collect();
        let mut paths = Vec::new();
        let mut at = 0;
        while at < tokens.len() {
            let starts_path = matches!(&tokens[at], Token::Ident(name)
                if (name == "crate" || name == "super" || name == "self" || children.contains(name.as_str())))
                && tokens.get(at + 1) == Some(&Token::PathSep)
                && (at == 0 || tokens[at - 1] != Token::PathSep);
            if !starts_path {
                at += 1;
                continue;
            }
            let mut found = Vec::new();
            at = path_tree(&tokens, at, &[], &mut found);
            for path in found {
                paths.push(self.absolute(module, &path));
            }
        }
        paths
    }

    fn absolute(&self, module: &[String], path: &[String]) -> Vec<String> {
        let mut out = match path.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            _ => module.to_vec(),
        };
        for (i, segment) in path.iter().enumerate() {
            match segment.as_str() {
                "crate" if i == 0 => {}
                "self" => {}
                "super" => {
                    out.pop();
                }
                _ => out.push(segment.clone()),
            }
        }
        out
    }

    fn name(&self, file: &Path) -> String {
        file.strip_prefix(self.root.parent().unwrap_or(&self.root))
            .unwrap_or(file)
            .display()
            .to_string()
    }
}

/// Tarjan's strongly connected components, larger than one file.
fn cycles(edges: &BTreeMap<&PathBuf, BTreeMap<&PathBuf, BTreeSet<String>>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(
        node: &'a PathBuf,
        edges: &BTreeMap<&'a PathBuf, BTreeMap<&'a PathBuf, BTreeSet<String>>>,
        state: &mut State<'a>,
    ) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        for next in edges.get(node).into_iter().flat_map(|e| e.keys()) {
            if !state.index.contains_key(next) {
                visit(next, edges, state);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut group = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                group.push(top.clone());
                if top == node {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                state.found.push(group);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node) {
            visit(node, edges, &mut state);
        }
    }
    state.found
}

#[test]
fn the_library_modules_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::read(&src);
    let mut edges: BTreeMap<&PathBuf, BTreeMap<&PathBuf, BTreeSet<String>>> = BTreeMap::new();
    for (file, module) in &krate.files {
        let entry = edges.entry(file).or_default();
        if module.is_empty() {
            // lib.rs declares every module and re-exports a few; it is the root, not a peer.
            continue;
        }
        for path in krate.imports(file, module) {
            let Some(target) = krate.file_of(&path) else {
                continue;
            };
            if target != file && !krate.files[target].is_empty() {
                entry.entry(target).or_default().insert(path.join("::"));
            }
        }
    }
    assert!(
        edges.values().map(BTreeMap::len).sum::<usize>() > 50,
        "the import reader found too few imports: {edges:#?}"
    );
    let found = cycles(&edges);
    let mut report = String::new();
    for group in &found {
        report.push_str(&format!("\ncycle of {} files:\n", group.len()));
        for from in group {
            for (to, names) in &edges[from] {
                if group.contains(to) {
                    let names: Vec<&String> = names.iter().collect();
                    report.push_str(&format!(
                        "  {} -> {}: {:?}\n",
                        krate.name(from),
                        krate.name(to),
                        names
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "imports between src/ files form cycles; break each by moving the shared type down:{report}"
    );
}

/// The top-level module a file belongs to: `src/proxy.rs` and everything under `src/proxy/`
/// are `proxy`.
fn folder_of(krate: &Crate, file: &Path) -> PathBuf {
    let name = krate.name(file);
    let relative = name.strip_prefix("src/").unwrap_or(&name);
    let first = relative.split('/').next().unwrap_or(relative);
    PathBuf::from(first.strip_suffix(".rs").unwrap_or(first))
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::read(&src);
    let folders: BTreeSet<PathBuf> = krate
        .files
        .iter()
        .filter(|(_, module)| !module.is_empty())
        .map(|(file, _)| folder_of(&krate, file))
        .collect();
    let mut links: BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>> = BTreeMap::new();
    for (file, module) in &krate.files {
        if module.is_empty() {
            continue;
        }
        let from = folder_of(&krate, file);
        for path in krate.imports(file, module) {
            let Some(target) = krate.file_of(&path) else {
                continue;
            };
            let to = folder_of(&krate, target);
            if krate.files[target].is_empty() || to == from {
                continue;
            }
            links
                .entry(from.clone())
                .or_default()
                .entry(to)
                .or_default()
                .insert(format!("{}: {}", krate.name(file), path.join("::")));
        }
    }
    assert!(folders.len() > 10, "too few top-level modules: {folders:?}");
    let edges: BTreeMap<&PathBuf, BTreeMap<&PathBuf, BTreeSet<String>>> = folders
        .iter()
        .map(|folder| {
            let out = links
                .get(folder)
                .into_iter()
                .flatten()
                .filter_map(|(to, names)| Some((folders.get(to)?, names.clone())))
                .collect();
            (folder, out)
        })
        .collect();
    let found = cycles(&edges);
    let mut report = String::new();
    for group in &found {
        report.push_str(&format!("\ncycle of {} modules:\n", group.len()));
        for from in group {
            for (to, names) in &edges[from] {
                if group.contains(to) {
                    report.push_str(&format!(
                        "  {} -> {}: {:?}\n",
                        from.display(),
                        to.display(),
                        names
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "top-level modules of src/ import each other; move what they share into the lower one:{report}"
    );
}

#[test]
fn the_import_reader_sees_use_trees_super_paths_and_child_modules() {
    let code = strip(
        "use crate::a::{b::{C, D}, e}; // crate::comment::X\nlet s = \"crate::string::Y\"; super::f::g(); child::h();",
    );
    let toks = tokens(&code);
    let mut found = Vec::new();
    let mut at = 0;
    while at < toks.len() {
        if matches!(&toks[at], Token::Ident(n) if n == "crate" || n == "super" || n == "child")
            && toks.get(at + 1) == Some(&Token::PathSep)
        {
            at = path_tree(&toks, at, &[], &mut found);
        } else {
            at += 1;
        }
    }
    let found: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "crate::a::b::C",
            "crate::a::b::D",
            "crate::a::e",
            "super::f::g",
            "child::h"
        ]
    );
    let stripped = without_test_modules(
        "fn a() {}\n#[cfg(test)]\nmod tests { use super::*; fn b() { {} } }\nfn c() {}",
    );
    assert_eq!(stripped, "fn a() {}\n\nfn c() {}");
    let stripped = without_test_modules(
        "#[cfg(test)]\n#[allow(x, reason = \"y\")]\nmod tests { use super::*; }\nfn c() {}",
    );
    assert_eq!(stripped, "\nfn c() {}");
}
