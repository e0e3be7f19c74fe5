//! The benchmark of docs/performance.md is runnable as documented, without running it (it
//! installs packages and takes minutes; no timing is ever asserted):
//! - `bench/run.sh` is valid bash and prints its usage;
//! - every `bench/run.sh` command in docs/performance.md uses only options the script accepts,
//!   and every option of the script is in its option table.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn script() -> PathBuf {
    Path::new(REPO).join("bench/run.sh")
}

/// The options the script's argument loop accepts (`--name)` case labels).
fn script_options() -> Vec<String> {
    let text = std::fs::read_to_string(script()).unwrap();
    let mut options: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter_map(|line| line.split_once(')').map(|(label, _)| label))
        .flat_map(|label| label.split('|'))
        .filter(|label| label.starts_with("--") && !label.contains(' '))
        .map(str::to_owned)
        .collect();
    options.sort();
    options.dedup();
    options
}

/// docs/performance.md, the benchmark's page.
fn performance_section() -> String {
    std::fs::read_to_string(Path::new(REPO).join("docs/performance.md")).unwrap()
}

#[test]
fn the_benchmark_script_is_valid_bash_and_prints_its_usage() {
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(script())
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash -n bench/run.sh: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let help = Command::new("bash")
        .arg(script())
        .arg("--help")
        .output()
        .unwrap();
    let usage = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "bench/run.sh --help failed");
    assert!(
        usage.contains("bench/run.sh [--rounds N]"),
        "unexpected usage: {usage}"
    );
}

#[test]
fn the_readme_documents_exactly_the_options_of_the_benchmark_script() {
    let options = script_options();
    assert!(
        options.contains(&"--rounds".to_owned()),
        "no options found in bench/run.sh: {options:?}"
    );
    let section = performance_section();
    for line in section
        .lines()
        .filter(|line| line.starts_with("bench/run.sh"))
    {
        for word in line.split('#').next().unwrap().split_whitespace() {
            if word.starts_with("--") {
                assert!(
                    options.iter().any(|option| option == word),
                    "docs/performance.md runs bench/run.sh with {word}, which the script does not accept"
                );
            }
        }
    }
    for option in options.iter().filter(|option| *option != "--help") {
        assert!(
            section.contains(&format!("`{option}")),
            "docs/performance.md does not document {option}"
        );
    }
}
