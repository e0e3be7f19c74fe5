//! `certgate demo` end to end: the real binary in a temporary working directory, driven with the
//! real `curl` through the commands it prints, then stopped with SIGINT.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{TempDir, tools};
use process::{Child, Stream};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

const CREATED: &str = "Created a development PKI";
const READY: &str = "Press Ctrl-C";

/// Starts `certgate demo --listen 127.0.0.1:0` in `dir` and reads its stdout up to the
/// "Press Ctrl-C" line.
fn start_demo(dir: &Path) -> (Child, Vec<String>) {
    let mut demo = Child::spawn(&["demo", "--listen", "127.0.0.1:0"], dir, &[]);
    let tour = demo.wait_for_line(Stream::Stdout, |line| line.contains(READY));
    (demo, tour)
}

/// Ctrl-C, then a clean exit.
fn stop_demo(mut demo: Child) {
    demo.signal("INT");
    let status = demo.wait_exit();
    assert!(
        status.success(),
        "demo exited with {status} after SIGINT; output:\n{}",
        demo.transcript()
    );
}

/// What a printed curl command presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Presents {
    Nothing,
    Pem,
    P12,
    Untrusted,
    ForgedXfcc,
}

/// One printed curl command: which app it targets and what it presents.
#[derive(Debug)]
struct Printed {
    app: String,
    port: u16,
    presents: Presents,
    command: String,
}

fn parse_tour(lines: &[String]) -> Vec<Printed> {
    lines
        .iter()
        .filter(|line| line.starts_with("curl "))
        .map(|command| {
            let url = command
                .split_whitespace()
                .find(|word| word.starts_with("https://"))
                .unwrap_or_else(|| panic!("no URL in {command:?}"));
            let authority = url["https://".len()..].split('/').next().unwrap();
            let (host, port) = authority.rsplit_once(':').unwrap();
            let app = host
                .strip_suffix(".localhost")
                .unwrap_or_else(|| panic!("not a demo host: {url}"));
            let presents = if command.contains("X-Forwarded-Client-Cert") {
                Presents::ForgedXfcc
            } else if command.contains("untrusted-client") {
                Presents::Untrusted
            } else if command.contains("--cert-type P12") {
                Presents::P12
            } else if command.contains("client.pem") {
                Presents::Pem
            } else {
                Presents::Nothing
            };
            Printed {
                app: app.to_owned(),
                port: port.parse().unwrap(),
                presents,
                command: command.clone(),
            }
        })
        .collect()
}

/// The result of one curl run.
#[derive(Debug)]
#[allow(dead_code, reason = "command and stderr are shown in failure messages")]
struct Curl {
    command: String,
    exit: Option<i32>,
    /// `%{http_code}`: 0 when no response arrived.
    status: u16,
    body: String,
    stderr: String,
}

impl Curl {
    fn echo(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "{self:#?}");
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not echo JSON ({e}): {self:#?}"))
    }

    /// The single XFCC value the echo app received, if any.
    fn xfcc(&self) -> Option<String> {
        match &self.echo()["headers"]["x-forwarded-client-cert"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(value) => Some(value.clone()),
            other => panic!("several XFCC headers reached the app: {other} ({self:#?})"),
        }
    }

    fn assert_refused(&self) {
        assert!(
            self.exit != Some(0) && self.status == 0,
            "expected the handshake to be refused: {self:#?}"
        );
    }
}

/// Runs a printed curl command (a shell command line, as a user would paste it) in `dir`,
/// adding only quiet output, a time bound, the status code and any `--resolve` options.
fn curl(dir: &Path, command: &str, resolve: &str) -> Curl {
    let rest = command
        .strip_prefix("curl ")
        .unwrap_or_else(|| panic!("not a curl command: {command:?}"));
    let line = format!("curl -sS --max-time 60 -w '\\n%{{http_code}}' {resolve}{rest}");
    let output = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    Curl {
        command: line,
        exit: output.status.code(),
        status: status.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `--resolve` options for the demo hosts, when this curl does not resolve `*.localhost` itself
/// (exit code 6, "could not resolve host").
fn resolve_options(dir: &Path, probe: &str, port: u16) -> String {
    if curl(dir, probe, "").exit != Some(6) {
        return String::new();
    }
    eprintln!("this curl does not resolve *.localhost itself; using --resolve");
    ["require", "accept", "ignore"]
        .iter()
        .map(|app| format!("--resolve {app}.localhost:{port}:127.0.0.1 "))
        .collect()
}

/// SHA-256 (lowercase hex) of the first certificate in a PEM file.
fn leaf_hash(pem_file: &Path) -> String {
    let leaf = CertificateDer::pem_file_iter(pem_file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    Sha256::digest(&leaf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn assert_forwards_dev_client(reply: &Curl, hash: &str) {
    let xfcc = reply
        .xfcc()
        .unwrap_or_else(|| panic!("no XFCC reached the app: {reply:#?}"));
    assert!(
        xfcc.starts_with(&format!("Hash={hash};")),
        "XFCC hash is not the SHA-256 of certs/client.pem: {xfcc}"
    );
    assert!(
        xfcc.contains(";Cert=\"-----BEGIN%20CERTIFICATE-----%0A"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains(";Chain=\"-----BEGIN%20CERTIFICATE-----%0A"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains(";URI=spiffe://certgate.localhost/dev-client"),
        "{xfcc}"
    );
}

#[test]
fn demo_tour_works_with_curl_and_stops_on_sigint() {
    if !tools::curl() {
        return;
    }
    let dir = TempDir::new();
    let (demo, tour) = start_demo(dir.path());

    // The PKI was made in the working directory.
    assert!(
        tour.iter().any(|line| line.starts_with(CREATED)),
        "no {CREATED:?} line in:\n{}",
        tour.join("\n")
    );
    for (name, _) in certgate::pki::FILES {
        assert!(
            dir.path().join("certs").join(name).is_file(),
            "certs/{name} was not written"
        );
    }

    // The printed commands cover every mode, with the real port.
    let printed = parse_tour(&tour);
    let port = printed.first().expect("no curl commands printed").port;
    assert_ne!(port, 0);
    assert!(
        printed.iter().all(|p| p.port == port),
        "commands print different ports: {printed:#?}"
    );
    let mut by_case = BTreeMap::new();
    for p in &printed {
        by_case.insert((p.app.as_str(), p.presents), p.command.as_str());
    }
    let expected = [
        ("require", Presents::Pem),
        ("require", Presents::P12),
        ("require", Presents::Nothing),
        ("require", Presents::Untrusted),
        ("accept", Presents::Nothing),
        ("accept", Presents::Pem),
        ("ignore", Presents::Pem),
        ("ignore", Presents::ForgedXfcc),
    ];
    for case in expected {
        assert!(
            by_case.contains_key(&case),
            "the tour prints no command for {case:?}:\n{}",
            tour.join("\n")
        );
    }

    let cwd = dir.path();
    let resolve = resolve_options(cwd, by_case[&("accept", Presents::Nothing)], port);
    let run = |app: &str, presents: Presents| curl(cwd, by_case[&(app, presents)], &resolve);
    let hash = leaf_hash(&cwd.join("certs/client.pem"));

    // require: a trusted certificate, PEM or PKCS#12, is forwarded.
    for presents in [Presents::Pem, Presents::P12] {
        let reply = run("require", presents);
        assert_forwards_dev_client(&reply, &hash);
        let echo = reply.echo();
        assert_eq!(echo["method"], "GET");
        assert_eq!(echo["path"], "/hello");
    }
    // require: no certificate, or one from an unknown CA, fails the handshake.
    run("require", Presents::Nothing).assert_refused();
    run("require", Presents::Untrusted).assert_refused();

    // accept: served without a certificate (no XFCC), and with one (XFCC).
    let reply = run("accept", Presents::Nothing);
    assert_eq!(reply.xfcc(), None, "{reply:#?}");
    assert_forwards_dev_client(&run("accept", Presents::Pem), &hash);

    // ignore: a certificate on the command line is never asked for, so never forwarded.
    let reply = run("ignore", Presents::Pem);
    assert_eq!(reply.xfcc(), None, "{reply:#?}");

    // A forged XFCC never reaches the app.
    let reply = run("ignore", Presents::ForgedXfcc);
    assert_eq!(reply.xfcc(), None, "{reply:#?}");
    assert!(!reply.body.contains("forged"), "{reply:#?}");

    // The P12 form on the other apps, and other refused certificates, written the same way.
    let url = |app: &str| format!("https://{app}.localhost:{port}/hello");
    let p12 = "--cacert certs/ca.pem --cert-type P12 --cert certs/client.p12:\"$(cat certs/client.p12.password)\"";
    assert_forwards_dev_client(
        &curl(cwd, &format!("curl {p12} {}", url("accept")), &resolve),
        &hash,
    );
    let reply = curl(cwd, &format!("curl {p12} {}", url("ignore")), &resolve);
    assert_eq!(reply.xfcc(), None, "{reply:#?}");
    curl(
        cwd,
        &format!(
            "curl --cacert certs/ca.pem --cert certs/untrusted-client.pem --key certs/untrusted-client.key {}",
            url("accept")
        ),
        &resolve,
    )
    .assert_refused();
    curl(
        cwd,
        &format!(
            "curl --cacert certs/ca.pem --cert certs/self-signed-client.pem --key certs/self-signed-client.key {}",
            url("require")
        ),
        &resolve,
    )
    .assert_refused();

    stop_demo(demo);
}

#[test]
fn a_second_demo_reuses_the_existing_certs() {
    let dir = TempDir::new();
    let certs = dir.path().join("certs");

    let (demo, tour) = start_demo(dir.path());
    assert!(
        tour.iter().any(|line| line.starts_with(CREATED)),
        "{}",
        tour.join("\n")
    );
    stop_demo(demo);
    let before: Vec<Vec<u8>> = certgate::pki::FILES
        .iter()
        .map(|(name, _)| std::fs::read(certs.join(name)).unwrap())
        .collect();

    let (demo, tour) = start_demo(dir.path());
    assert!(
        !tour.iter().any(|line| line.starts_with(CREATED)),
        "the second run made a new PKI:\n{}",
        tour.join("\n")
    );
    // Without curl (outside CI) only the second demo's start is checked.
    if tools::curl() {
        let printed = parse_tour(&tour);
        let command = printed
            .iter()
            .find(|p| p.app == "require" && p.presents == Presents::Pem)
            .expect("a require + PEM command");
        let resolve = resolve_options(dir.path(), &command.command, command.port);
        let reply = curl(dir.path(), &command.command, &resolve);
        assert_forwards_dev_client(&reply, &leaf_hash(&certs.join("client.pem")));
    }
    stop_demo(demo);

    let after: Vec<Vec<u8>> = certgate::pki::FILES
        .iter()
        .map(|(name, _)| std::fs::read(certs.join(name)).unwrap())
        .collect();
    assert!(before == after, "the second demo changed files in certs/");
}

/// The printed `explain` line of a demo started in `dir` with `env`, after running it there
/// with `sh` (with the same `env`): what it started with, and explain's exit code.
fn run_printed_explain(dir: &Path, env: &[(&str, &str)]) -> (String, Option<i32>) {
    let mut demo = Child::spawn(&["demo", "--listen", "127.0.0.1:0"], dir, env);
    let tour = demo.wait_for_line(Stream::Stdout, |line| line.contains(READY));
    stop_demo(demo);
    let line = tour
        .iter()
        .find(|line| line.contains(" explain --client-ca "))
        .unwrap_or_else(|| panic!("no explain command in:\n{}", tour.join("\n")))
        .clone();
    let mut sh = Command::new("sh");
    sh.args(["-c", &line]).current_dir(dir);
    for (name, value) in env {
        sh.env(name, value);
    }
    let output = sh.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("unknown_issuer"),
        "{line}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let program = line.split(" explain ").next().unwrap().to_owned();
    (program, output.status.code())
}

#[test]
fn the_demo_prints_certgate_commands_that_run_from_where_it_was_started() {
    // Not on PATH (as after `cargo run --release -- demo`): the binary's own path, which runs.
    let dir = TempDir::new();
    let (program, code) = run_printed_explain(dir.path(), &[]);
    assert_eq!(
        program,
        process::BIN,
        "the binary is not below the test folder"
    );
    assert_eq!(code, Some(1), "explain refuses the untrusted client");

    // On PATH (after `cargo install`): plain `certgate`.
    let dir = TempDir::new();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(process::BIN, bin.join("certgate")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let (program, code) = run_printed_explain(dir.path(), &[("PATH", &path)]);
    assert_eq!(program, "certgate");
    assert_eq!(code, Some(1));
}
