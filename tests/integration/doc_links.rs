//! Every link of the README and docs/ leads somewhere, so a moved section cannot leave a dead
//! reference behind:
//! - a relative link names a file or folder that exists, and its `#anchor` a heading of that
//!   Markdown page, by GitHub's rule (lowercase, punctuation removed, spaces to `-`, a heading
//!   repeated on one page `-1`, `-2`, …); links and headings inside code are not links;
//! - every page in docs/ is listed in the README's map ("## Documentation");
//! - a missing file, a missing anchor, a link out of the repository and an unlisted page are
//!   each reported with the file and line (checked on pages made up for it).
//!
//! Checked: README.md, docs/*.md and, where they exist, certs/README.md, bench/README.md and
//! config/kubernetes/README.md. External links (`http://`, `https://`, `mailto:`) are not
//! fetched.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The heading under which the README lists every page of docs/.
const MAP: &str = "## Documentation";

/// The pages whose links are checked, by path from the repository root.
fn pages() -> BTreeMap<String, String> {
    let mut names = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(Path::new(REPO).join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| format!("docs/{}", path.file_name().unwrap().to_str().unwrap()))
        .collect();
    docs.sort();
    names.extend(docs);
    let mut pages = BTreeMap::new();
    for name in names {
        let text = std::fs::read_to_string(Path::new(REPO).join(&name)).unwrap();
        pages.insert(name, text);
    }
    for name in [
        "certs/README.md",
        "bench/README.md",
        "config/kubernetes/README.md",
    ] {
        if let Ok(text) = std::fs::read_to_string(Path::new(REPO).join(name)) {
            pages.insert(name.to_owned(), text);
        }
    }
    pages
}

/// What checking a set of pages found.
#[derive(Debug)]
struct Report {
    /// Relative links looked at (external ones not counted).
    links: usize,
    /// One line per problem: `file:line: link: what is wrong`.
    problems: Vec<String>,
}

/// Checks every relative link of `pages` (path from the repository root to text) and the
/// README's map; `exists` says whether a path from the repository root is a file or folder.
fn check(pages: &BTreeMap<String, String>, exists: &dyn Fn(&str) -> bool) -> Report {
    let anchors: HashMap<&str, Vec<String>> = pages
        .iter()
        .map(|(name, text)| (name.as_str(), anchors(text)))
        .collect();
    let mut report = Report {
        links: 0,
        problems: Vec::new(),
    };
    for (name, text) in pages {
        for (line, link) in links(text) {
            if ["http://", "https://", "mailto:"]
                .iter()
                .any(|scheme| link.starts_with(scheme))
            {
                continue;
            }
            report.links += 1;
            let mut problem = |what: String| {
                report
                    .problems
                    .push(format!("{name}:{line}: {link}: {what}"));
            };
            let (path, anchor) = match link.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                name.clone()
            } else {
                match resolve(name, path) {
                    Some(target) => target,
                    None => {
                        problem("points outside the repository".to_owned());
                        continue;
                    }
                }
            };
            if !pages.contains_key(&target) && !exists(&target) {
                problem(format!("no file {target}"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            match anchors.get(target.as_str()) {
                None => problem(format!(
                    "an anchor into {target}, which is not checked here"
                )),
                Some(known) if !known.iter().any(|known| known == anchor) => {
                    problem(format!("{target} has no heading with the anchor #{anchor}"));
                }
                Some(_) => {}
            }
        }
    }
    let map = pages
        .get("README.md")
        .map_or("", |readme| section(readme, MAP));
    for name in pages.keys().filter(|name| name.starts_with("docs/")) {
        if !map.contains(&format!("]({name})")) && !map.contains(&format!("]({name}#")) {
            report.problems.push(format!(
                "README.md: {name} is not linked from the map under {MAP:?}"
            ));
        }
    }
    report
}

/// The text under `heading` up to the next heading of the same level, or "" without it.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let Some(start) = text.find(&format!("\n{heading}\n")) else {
        return "";
    };
    let body = &text[start + heading.len() + 2..];
    let level = heading.split(' ').next().unwrap();
    let end = body.find(&format!("\n{level} ")).unwrap_or(body.len());
    &body[..end]
}

/// `link` followed from the page `from`, as a path from the repository root; `None` when it
/// climbs out of the repository. A leading `/` starts at the root, as on GitHub.
fn resolve(from: &str, link: &str) -> Option<String> {
    let mut parts: Vec<&str> = if link.starts_with('/') {
        Vec::new()
    } else {
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        parts
    };
    for part in link.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// The lines of `text` outside fenced code blocks, numbered from 1; fenced lines are `None`.
fn outside_fences(text: &str) -> Vec<Option<&str>> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return None;
            }
            (!fenced).then_some(line)
        })
        .collect()
}

/// The anchors of `text`'s headings, in order, repeated ones numbered as GitHub does.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for line in outside_fences(text).into_iter().flatten() {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        let Some(heading) = line[hashes..].strip_prefix(' ') else {
            continue;
        };
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let anchor = anchor(heading);
        let count = seen.entry(anchor.clone()).or_default();
        out.push(match *count {
            0 => anchor.clone(),
            n => format!("{anchor}-{n}"),
        });
        *count += 1;
    }
    out
}

/// GitHub's anchor for a heading: its text lowercased, every character but letters, digits,
/// `-`, `_` and spaces removed, spaces turned into `-`. A link's target is not part of the text.
fn anchor(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading.trim();
    while let Some(start) = rest.find("](") {
        text.push_str(&rest[..start]);
        rest = rest[start..].split_once(')').map_or("", |(_, after)| after);
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The target of every inline link of `text` (`[text](target)`, images too) outside code,
/// with its line number.
fn links(text: &str) -> Vec<(usize, String)> {
    let prose: Vec<&str> = outside_fences(text)
        .into_iter()
        .map(|line| line.unwrap_or(""))
        .collect();
    let prose = without_code_spans(&prose.join("\n"));
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = prose[from..].find("](") {
        let start = from + found + 2;
        let Some(length) = prose[start..].find(')') else {
            break;
        };
        let target = prose[start..start + length].trim();
        let target = target.split_whitespace().next().unwrap_or("");
        let target = target.trim_start_matches('<').trim_end_matches('>');
        let line = prose[..start].matches('\n').count() + 1;
        out.push((line, target.to_owned()));
        from = start + length;
    }
    out
}

/// `text` with every inline code span (a run of backticks to the next run of as many, within
/// one paragraph) turned into spaces, newlines kept.
fn without_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let mut at = 0;
    while at < chars.len() {
        if chars[at] != '`' {
            at += 1;
            continue;
        }
        let run = chars[at..].iter().take_while(|&&c| c == '`').count();
        let mut close = None;
        let mut probe = at + run;
        while probe < chars.len() {
            if chars[probe] == '\n' && chars.get(probe + 1) == Some(&'\n') {
                break;
            }
            if chars[probe] == '`' {
                let length = chars[probe..].iter().take_while(|&&c| c == '`').count();
                if length == run {
                    close = Some(probe + length);
                    break;
                }
                probe += length;
            } else {
                probe += 1;
            }
        }
        match close {
            Some(end) => {
                for c in &mut out[at..end] {
                    if *c != '\n' {
                        *c = ' ';
                    }
                }
                at = end;
            }
            None => at += run,
        }
    }
    out.into_iter().collect()
}

#[test]
fn every_link_of_the_readme_and_docs_resolves_and_every_page_is_in_the_map() {
    let pages = pages();
    let docs = pages
        .keys()
        .filter(|name| name.starts_with("docs/"))
        .count();
    assert!(docs >= 10, "only {docs} pages in docs/: {:?}", pages.keys());
    let report = check(&pages, &|path| Path::new(REPO).join(path).exists());
    assert!(
        report.problems.is_empty(),
        "{} broken link(s):\n{}",
        report.problems.len(),
        report.problems.join("\n")
    );
    assert!(report.links >= 50, "only {} links checked", report.links);
}

#[test]
fn anchors_follow_githubs_rule() {
    for (heading, expected) in [
        (
            "Sidecar: one app, flags or environment",
            "sidecar-one-app-flags-or-environment",
        ),
        (
            "A worked example with `openssl ocsp`",
            "a-worked-example-with-openssl-ocsp",
        ),
        (
            "PROXY protocol: the client's address through the balancer",
            "proxy-protocol-the-clients-address-through-the-balancer",
        ),
        (
            "Why was my certificate refused?",
            "why-was-my-certificate-refused",
        ),
        ("X-Forwarded-Client-Cert", "x-forwarded-client-cert"),
        ("`certgate_requests_total`", "certgate_requests_total"),
        (
            "See [Reload](operations.md#reload) first",
            "see-reload-first",
        ),
    ] {
        assert_eq!(anchor(heading), expected, "{heading:?}");
    }
    assert_eq!(
        anchors("# Title\n\n## Notes\n\n```sh\n# not a heading\n```\n\n## Notes\n#nospace\n"),
        ["title", "notes", "notes-1"]
    );
}

#[test]
fn a_broken_link_anchor_or_map_is_reported_with_its_file_and_line() {
    let pages = BTreeMap::from([
        (
            "README.md".to_owned(),
            "# certgate\n\n## Documentation\n\n- [Modes](docs/modes.md)\n- [Gone](docs/gone.md)\n"
                .to_owned(),
        ),
        (
            "docs/modes.md".to_owned(),
            [
                "# What each mode does",
                "",
                "## Routing",
                "",
                "## Routing",
                "",
                "Fine: [again](#routing-1), [home](../README.md#documentation), [image](../Dockerfile),",
                "[the web](https://example.com/#nowhere) and `[code](nowhere.md)`.",
                "Broken: [a heading](#no-such-heading), [a file](missing.md),",
                "[an anchor elsewhere](../README.md#routing), [outside](../../etc/passwd).",
                "",
                "```sh",
                "[fenced](nowhere.md)",
                "```",
            ]
            .join("\n"),
        ),
        ("docs/orphan.md".to_owned(), "# Orphan\n".to_owned()),
    ]);
    let report = check(&pages, &|path| path == "Dockerfile");
    assert_eq!(
        report.problems,
        [
            "README.md:6: docs/gone.md: no file docs/gone.md",
            "docs/modes.md:9: #no-such-heading: docs/modes.md has no heading with the anchor #no-such-heading",
            "docs/modes.md:9: missing.md: no file docs/missing.md",
            "docs/modes.md:10: ../README.md#routing: README.md has no heading with the anchor #routing",
            "docs/modes.md:10: ../../etc/passwd: points outside the repository",
            "README.md: docs/orphan.md is not linked from the map under \"## Documentation\"",
        ]
    );
    assert_eq!(report.links, 9);
}
