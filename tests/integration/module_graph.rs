//! The library's files import each other without a cycle: every `crate::`, `super::`, `self::`
//! and child-module path in `src/` (outside `#[cfg(test)]` modules, inside macro calls too),
//! read with `syn`, is resolved to the file that defines it, and any strongly connected group
//! of files, or of top-level modules, fails the test, naming the imports that tie it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// The library's source files: each one's module path (`["proxy", "xfcc"]` for
/// `src/proxy/xfcc.rs`, empty for `src/lib.rs`) and text, by name (`src/proxy/xfcc.rs`).
struct Crate {
    files: BTreeMap<String, (Vec<String>, String)>,
}

impl Crate {
    /// Every `.rs` file under `src`, but the binary's `main.rs`.
    fn read(src: &Path) -> Self {
        let mut files = Vec::new();
        let mut folders = vec![src.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).expect("read src") {
                let path = entry.expect("folder entry").path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let relative = path.strip_prefix(src).expect("under src");
                    let name = relative.to_string_lossy().into_owned();
                    if name != "main.rs" {
                        files.push((name, std::fs::read_to_string(&path).expect("read source")));
                    }
                }
            }
        }
        Self::new(files)
    }

    /// `files` as (path under `src/`, text).
    fn new(files: impl IntoIterator<Item = (String, String)>) -> Self {
        let files = files
            .into_iter()
            .map(|(name, text)| {
                let mut module: Vec<String> = name
                    .trim_end_matches(".rs")
                    .split('/')
                    .map(str::to_owned)
                    .collect();
                if module == ["lib"] || module.last().is_some_and(|last| last == "mod") {
                    module.pop();
                }
                (format!("src/{name}"), (module, text))
            })
            .collect();
        Self { files }
    }

    /// The file that defines the longest prefix of `path` that is a file of its own.
    fn file_of(&self, path: &[String]) -> Option<&str> {
        (0..=path.len()).rev().find_map(|n| {
            self.files
                .iter()
                .find(|(_, (module, _))| module.as_slice() == &path[..n])
                .map(|(file, _)| file.as_str())
        })
    }

    /// The files each file imports from, other than `lib.rs` (the root that declares every
    /// module), with the paths that import them; `lib.rs`'s own imports are left out.
    fn edges(&self) -> BTreeMap<&str, BTreeMap<&str, BTreeSet<String>>> {
        let mut edges: BTreeMap<&str, BTreeMap<&str, BTreeSet<String>>> = BTreeMap::new();
        for (file, (module, text)) in &self.files {
            let entry = edges.entry(file.as_str()).or_default();
            if module.is_empty() {
                continue;
            }
            for path in self.imports(module, text) {
                let Some(target) = self.file_of(&path) else {
                    continue;
                };
                if target != file && !self.files[target].0.is_empty() {
                    entry.entry(target).or_default().insert(path.join("::"));
                }
            }
        }
        edges
    }

    /// Every path in `text` (the file of `module`) that names a module of this crate, made
    /// absolute.
    fn imports(&self, module: &[String], text: &str) -> Vec<Vec<String>> {
        let syntax = syn::parse_file(text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", module.join("/")));
        let mut reader = Imports {
            krate: self,
            module: module.to_vec(),
            found: Vec::new(),
        };
        reader.visit_file(&syntax);
        reader.found
    }

    /// The names of `module`'s child modules that have a file of their own.
    fn children(&self, module: &[String]) -> BTreeSet<&str> {
        self.files
            .values()
            .filter(|(m, _)| m.len() == module.len() + 1 && m.starts_with(module))
            .filter_map(|(m, _)| m.last().map(String::as_str))
            .collect()
    }
}

/// Gathers the paths that start at `crate`, `super`, `self` or a child module, as absolute
/// module paths.
struct Imports<'a> {
    krate: &'a Crate,
    /// The module being read: the file's, then any inline module inside it.
    module: Vec<String>,
    found: Vec<Vec<String>>,
}

impl Imports<'_> {
    /// Records `path` when its first segment makes it one of this crate's.
    fn record(&mut self, path: Vec<String>) {
        let Some(first) = path.first() else {
            return;
        };
        let local = matches!(first.as_str(), "crate" | "super" | "self")
            || self.krate.children(&self.module).contains(first.as_str());
        if !local || path.len() < 2 {
            return;
        }
        let mut absolute = if first == "crate" {
            Vec::new()
        } else {
            self.module.clone()
        };
        for segment in path {
            match segment.as_str() {
                "crate" | "self" => {}
                "super" => {
                    absolute.pop();
                }
                _ => absolute.push(segment),
            }
        }
        self.found.push(absolute);
    }

    /// Every full path a `use` tree names, below `prefix`.
    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(&path.tree, prefix);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                self.record(extend(prefix, &name.ident));
            }
            syn::UseTree::Rename(rename) => {
                self.record(extend(prefix, &rename.ident));
            }
            syn::UseTree::Glob(_) => self.record(prefix.clone()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(tree, prefix);
                }
            }
        }
    }

    /// Paths inside a macro call's tokens, which `syn` leaves unparsed: `a::b::c` sequences.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let path_sep = |at: usize| {
            matches!((tokens.get(at), tokens.get(at + 1)),
                (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                    if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
        };
        let mut at = 0;
        while at < tokens.len() {
            match &tokens[at] {
                TokenTree::Group(group) => {
                    self.tokens(group.stream());
                    at += 1;
                }
                TokenTree::Ident(ident) if at < 2 || !path_sep(at - 2) => {
                    let mut path = vec![ident.to_string()];
                    at += 1;
                    while path_sep(at) {
                        let Some(TokenTree::Ident(next)) = tokens.get(at + 2) else {
                            break;
                        };
                        path.push(next.to_string());
                        at += 3;
                    }
                    self.record(path);
                }
                _ => at += 1,
            }
        }
    }
}

fn extend(prefix: &[String], ident: &syn::Ident) -> Vec<String> {
    let mut path = prefix.to_vec();
    path.push(ident.to_string());
    path
}

/// Whether `attrs` hold `#[cfg(test)]`.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // Test modules are not part of the build graph.
        if test_only(&item.attrs) {
            return;
        }
        self.module.push(item.ident.to_string());
        visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, &mut Vec::new());
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.record(segments);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

/// Tarjan's strongly connected components with more than one node.
fn cycles<'a>(edges: &BTreeMap<&'a str, BTreeMap<&'a str, BTreeSet<String>>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeMap<&'a str, BTreeSet<String>>>,
        state: &mut State<'a>,
    ) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        for &next in edges.get(node).into_iter().flat_map(BTreeMap::keys) {
            if !state.index.contains_key(next) {
                visit(next, edges, state);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.stack.contains(&next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let at = state.stack.iter().rposition(|&n| n == node).unwrap_or(0);
            let mut group = state.stack.split_off(at);
            if group.len() > 1 {
                group.sort_unstable();
                state.found.push(group);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for &node in edges.keys() {
        if !state.index.contains_key(node) {
            visit(node, edges, &mut state);
        }
    }
    state.found
}

/// Each cycle with the imports that tie it; empty when there is none.
fn report(edges: &BTreeMap<&str, BTreeMap<&str, BTreeSet<String>>>) -> String {
    let mut report = String::new();
    for group in cycles(edges) {
        report.push_str(&format!("\ncycle of {}:\n", group.len()));
        for from in &group {
            for (to, names) in &edges[from] {
                if group.contains(to) {
                    report.push_str(&format!("  {from} -> {to}: {names:?}\n"));
                }
            }
        }
    }
    report
}

/// The top-level module a file belongs to: `src/proxy.rs` and everything under `src/proxy/`
/// are `proxy`.
fn folder_of(file: &str) -> &str {
    let relative = file.strip_prefix("src/").unwrap_or(file);
    let first = relative.split('/').next().unwrap_or(relative);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The file edges folded into edges between top-level modules, each import named by its file.
fn folder_edges<'a>(
    edges: &BTreeMap<&'a str, BTreeMap<&'a str, BTreeSet<String>>>,
) -> BTreeMap<&'a str, BTreeMap<&'a str, BTreeSet<String>>> {
    let mut folders: BTreeMap<&str, BTreeMap<&str, BTreeSet<String>>> = BTreeMap::new();
    for (&file, targets) in edges {
        let from = folder_of(file);
        let entry = folders.entry(from).or_default();
        for (&target, names) in targets {
            let to = folder_of(target);
            if to != from {
                let named = names.iter().map(|name| format!("{file}: {name}"));
                entry.entry(to).or_default().extend(named);
            }
        }
    }
    folders
}

fn library() -> Crate {
    Crate::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn the_library_modules_import_each_other_without_a_cycle() {
    let krate = library();
    let edges = krate.edges();
    assert!(
        edges.values().map(BTreeMap::len).sum::<usize>() > 50,
        "the import reader found too few imports: {edges:#?}"
    );
    let report = report(&edges);
    assert!(
        report.is_empty(),
        "imports between src/ files form cycles; break each by moving the shared type down:{report}"
    );
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let krate = library();
    let folders = folder_edges(&krate.edges());
    assert!(folders.len() > 10, "too few top-level modules: {folders:?}");
    let report = report(&folders);
    assert!(
        report.is_empty(),
        "top-level modules of src/ import each other; move what they share into the lower one:{report}"
    );
}

/// A small crate with a cycle between files (`a` and `b`, one import in a macro call), one
/// between top-level modules only (`x/inner.rs` and `y.rs`), and one that only a test module
/// would close (`c` and `d`): the first two are found, the last is not.
#[test]
fn a_cycle_is_found_and_test_modules_are_left_out() {
    let krate = Crate::new(
        [
            ("lib.rs", "mod a; mod b; mod c; mod d; mod x; mod y;"),
            ("a.rs", "use crate::b::{Bee as _, self};\npub struct A;"),
            (
                "b.rs",
                "pub struct Bee;\nfn f() { let _ = format!(\"{:?}\", super::a::A); }",
            ),
            ("c.rs", "pub fn c() { crate::d::d(); }"),
            (
                "d.rs",
                "pub fn d() {}\n#[cfg(test)]\nmod tests { use crate::c::c; }",
            ),
            ("x.rs", "mod inner;\npub struct X;"),
            ("x/inner.rs", "pub fn i() { crate::y::y() }"),
            (
                "y.rs",
                "pub fn y() { let _ = \"crate::a::A\"; }\nmod z { use crate::x::X; }",
            ),
        ]
        .map(|(name, text)| (name.to_owned(), text.to_owned())),
    );
    let edges = krate.edges();
    assert!(edges["src/c.rs"].contains_key("src/d.rs"));
    assert!(edges["src/d.rs"].is_empty(), "{edges:?}");
    assert_eq!(cycles(&edges), [vec!["src/a.rs", "src/b.rs"]]);
    assert_eq!(
        edges["src/b.rs"]["src/a.rs"],
        BTreeSet::from(["a::A".to_owned()])
    );
    assert_eq!(
        cycles(&folder_edges(&edges)),
        [vec!["a", "b"], vec!["x", "y"]]
    );
    assert!(report(&edges).contains("src/a.rs -> src/b.rs: {\"b\", \"b::Bee\"}"));
}
