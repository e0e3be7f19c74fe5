//! The runnable snippets of the README and docs/ run, so they cannot rot:
//! - the demo commands under the README's "Try it in one minute" are exactly the ones
//!   `certgate demo` prints (tests/integration/demo.rs runs those with curl), and each refusal names both
//!   the TLS alert and certgate's reason;
//! - the `certgate explain` walk-through under the README's "Why was my certificate refused?"
//!   prints what the README shows, against a fresh `pki init`;
//! - the config reference example of docs/config.md loads;
//! - the `certgate check` output docs/config.md shows for `config/ingress.json` is what check
//!   prints: refused with the demo's PKI, passed once the walk-through's `pki init --host`
//!   line has issued the server certificate for the example's hosts;
//! - the Python XFCC reader of docs/headers.md reads a real header certgate sent (python3 +
//!   `cryptography`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::path::Path;
use std::process::Command;

use common::stdin::output_with_stdin;
use common::{ClientOptions, Gateway, Pki, TempDir, app, tools};

/// A page of the documentation: its path and its text.
type Page = (&'static str, &'static str);

const README: Page = (
    "README.md",
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")),
);
const CONFIG: Page = (
    "docs/config.md",
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md")),
);
const HEADERS: Page = (
    "docs/headers.md",
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/headers.md")),
);

/// The text of the section of `page` under `heading`, up to the next heading of the same level.
fn section((name, text): Page, heading: &str) -> &'static str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} in {name}"));
    let level = heading.split(' ').next().unwrap();
    let body = &text[start + heading.len() + 2..];
    let end = body.find(&format!("\n{level} ")).unwrap_or(body.len());
    &body[..end]
}

/// The fenced blocks of `language` in `text`.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("an unterminated code block");
        out.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn the_demo_commands_in_the_readme_are_the_ones_the_demo_prints() {
    let tour = certgate::demo::tour(8443, Path::new("certs"), "certgate");
    let printed: Vec<&str> = tour.lines().collect();
    let mut checked = 0;
    for block in blocks(section(README, "## Try it in one minute"), "sh") {
        for line in block.lines().filter(|line| !line.trim().is_empty()) {
            assert!(
                printed.contains(&line),
                "README line {line:?} is not printed by the demo:\n{tour}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} lines checked");
    for (alert, reason) in [
        ("certificate required", "failure=no_certificate"),
        ("unknown ca", "failure=unknown_issuer"),
    ] {
        assert!(
            printed
                .iter()
                .any(|line| line.contains(alert) && line.contains(reason)),
            "the demo does not name both {alert:?} and {reason:?}:\n{tour}"
        );
    }
}

#[test]
fn the_explain_walkthrough_prints_what_the_readme_shows() {
    let dir = TempDir::new();
    certgate::pki::init(&dir.path().join("certs"), false).unwrap();
    let why = section(README, "## Why was my certificate refused?");
    let command = blocks(why, "sh").into_iter().next().unwrap();
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(&words[..2], ["certgate", "explain"], "{command}");
    let output = Command::new(process::BIN)
        .args(&words[1..])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let shown = blocks(why, "text").into_iter().next().unwrap();
    for line in shown.lines() {
        assert!(
            stdout.lines().any(|printed| printed == line),
            "README line {line:?} is not in explain's output:\n{stdout}"
        );
    }
}

#[test]
fn the_config_reference_example_loads() {
    let dir = TempDir::new();
    certgate::pki::init(&dir.path().join("certs"), false).unwrap();
    let json = blocks(section(CONFIG, "## Config reference"), "json")
        .into_iter()
        .next()
        .unwrap();
    let path = dir.write("certgate.json", json);
    let config =
        common::load_config(&path).unwrap_or_else(|e| panic!("{}", certgate::error_chain(&e)));
    assert_eq!(config.apps.len(), 1);
    assert_eq!(config.apps[0].name, "payments");
}

/// Runs `line` (a command of the docs, starting with `certgate`) with `sh` in `dir`, the
/// binary under test first on PATH; panics unless it exits 0.
fn run_documented(line: &str, dir: &Path) {
    let bin = Path::new(process::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("sh")
        .args(["-c", line])
        .env("PATH", path)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{line}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_check_output_shown_is_what_check_prints_for_the_ingress_example() {
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    certgate::pki::init(&certs, false).unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let ingress = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ingress.json");
    std::fs::copy(&ingress, dir.path().join("config/ingress.json")).unwrap();
    let check = || {
        Command::new(process::BIN)
            .args(["check", "--config", "config/ingress.json"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // With the dev PKI, check names the hosts its server certificate does not cover.
    let output = check();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("host payments.example.com is not covered"),
        "{stderr}"
    );
    // The walk-through's own `pki init`, after the demo made the PKI: it keeps it and issues
    // the server certificate again for the example's hosts.
    let walk_through = blocks(CONFIG.1, "sh").into_iter().next().unwrap();
    let init = walk_through
        .lines()
        .find(|line| line.starts_with("certgate pki init certs --host"))
        .expect("docs/config.md's walk-through names the hosts for pki init");
    run_documented(init, dir.path());
    let output = check();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = blocks(section(CONFIG, "## Checking a config"), "text")
        .into_iter()
        .next()
        .unwrap();
    let expected: Vec<&str> = shown.lines().skip(1).collect();
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(expected.len(), printed.len(), "{stdout}");
    for (readme, line) in expected.iter().zip(&printed) {
        let stable = readme.split("server-cert-expires=").next().unwrap();
        assert!(
            line.starts_with(stable),
            "docs/config.md {readme:?}\nprinted {line:?}"
        );
    }
}

#[tokio::test]
async fn the_python_xfcc_reader_reads_a_header_certgate_sent() {
    if !tools::available("python3", "--version", "apt-get install python3") {
        return;
    }
    let has_cryptography = Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_cryptography {
        tools::missing(
            "python3's `cryptography`, for the Python snippet of docs/headers.md",
            "pip install cryptography",
        );
        return;
    }
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = common::echo_upstream().await;
    let mut require = app("require", &["require.example.test"], upstream, "require");
    require["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    let gateway = Gateway::start(dir, serde_json::json!({ "apps": [require] })).await;
    let alice = pki.client("alice");
    let options = ClientOptions::new(&pki, "require.example.test").with_identity(alice.identity());
    let reply = common::get(gateway.addr, &options, "require.example.test", "/")
        .await
        .unwrap();
    let xfcc = reply.xfcc().unwrap();
    gateway.stop().await;

    let snippet = blocks(section(HEADERS, "## X-Forwarded-Client-Cert"), "python")
        .into_iter()
        .next()
        .unwrap();
    let program = format!(
        "{snippet}\nimport sys\ncert = client_certificate(sys.stdin.read())\nprint(cert.subject.rfc4514_string())\n"
    );
    let output = output_with_stdin(
        Command::new("python3").args(["-c", &program]),
        xfcc.as_bytes(),
    );
    assert!(
        output.status.success(),
        "the Python of docs/headers.md failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "CN=alice");
}
