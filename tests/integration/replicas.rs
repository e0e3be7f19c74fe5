//! Replicas sharing one session ticket key file (docs/replicas.md), each a real
//! `certgate run` process:
//! - a session made on one replica resumes on the other, over TLS 1.3 and TLS 1.2;
//! - after a rotation (a new key prepended) old tickets still resume, until their key is
//!   dropped from the file;
//! - a ticket from one app never resumes under another app of the other replica;
//! - `certgate pki ticket-keys` writes a key file that refuses to be overwritten;
//! - the local rotation example of docs/replicas.md runs as written.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use common::sessions::{TicketJar, resuming_client, visit};
use common::*;
use process::{Child, Stream};
use rustls::HandshakeKind;

/// Two `certgate run` processes serving one config with a shared key file.
struct Replicas {
    pki: Pki,
    client: Leaf,
    dir: TempDir,
    first: Child,
    second: Child,
    addrs: [SocketAddr; 2],
}

async fn replicas() -> Replicas {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let written = Command::new(process::BIN)
        .args(["pki", "ticket-keys", "ticket-keys"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(written.status.success(), "{written:?}");
    let upstream = echo_upstream().await;
    let [require, ignore] = require_and_ignore(upstream);
    // Same trust as `require`, another name: only the name tells their tickets apart.
    let mut partners = app("partners", &["partners.example.test"], upstream, "require");
    partners["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    let config = serde_json::json!({
        "listen": "127.0.0.1:0",
        "sessionTickets": { "keyFile": "ticket-keys" },
        "timeouts": { "drainDelayMs": 0 },
        "apps": [require, ignore, partners],
    });
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let mut first = spawn(&dir);
    let mut second = spawn(&dir);
    let addrs = [
        first.wait_serving().listen(),
        second.wait_serving().listen(),
    ];
    Replicas {
        client: pki.client("roaming client"),
        pki,
        dir,
        first,
        second,
        addrs,
    }
}

fn spawn(dir: &TempDir) -> Child {
    Child::spawn(
        &["--log-format", "json", "run", "--config", "certgate.json"],
        dir.path(),
        &[],
    )
}

/// Waits for the reload that a change of the key file starts by itself (one per change: the
/// watcher compares the files' metadata before reloading).
fn reloaded(child: &mut Child) {
    let lines = child.wait_for_line(Stream::Stderr, |line| {
        line.contains("configuration reloaded") || line.contains("reload failed")
    });
    let last = lines.last().unwrap();
    assert!(last.contains("configuration reloaded"), "{last}");
}

/// Replaces the key file by a rename, as a Secret update or an atomic writer does.
fn write_keys(dir: &TempDir, text: &str) {
    dir.write("ticket-keys.new", text);
    std::fs::rename(
        dir.path().join("ticket-keys.new"),
        dir.path().join("ticket-keys"),
    )
    .unwrap();
}

async fn session_resumes_on_the_other_replica(tls12: bool) {
    let replicas = replicas().await;
    let jar = Arc::new(TicketJar::default());
    let config = resuming_client(&replicas.pki, &replicas.client, &jar, tls12);
    let sni = "require.example.test";

    let (kind, response) = visit(replicas.addrs[0], &config, sni).await;
    assert_eq!(kind, Some(HandshakeKind::Full));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let (kind, response) = visit(replicas.addrs[1], &config, sni).await;
    assert_eq!(
        kind,
        Some(HandshakeKind::Resumed),
        "a session from the first replica did not resume on the second"
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The resumed session still carries the verified client certificate.
    assert!(response.contains(&replicas.client.hash_hex()), "{response}");
    drop(replicas.second);
    drop(replicas.first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_session_from_one_replica_resumes_on_another() {
    session_resumes_on_the_other_replica(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_session_from_one_replica_resumes_on_another() {
    session_resumes_on_the_other_replica(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_tickets_resume_after_rotation_until_their_key_is_dropped() {
    let mut replicas = replicas().await;
    let jar = Arc::new(TicketJar::default());
    let config = resuming_client(&replicas.pki, &replicas.client, &jar, false);
    let sni = "require.example.test";
    visit(replicas.addrs[0], &config, sni).await;
    let old_tickets = jar.tickets();
    assert!(old_tickets >= 2, "expected two tickets, got {old_tickets}");

    // Rotate: a new key first (it encrypts from now on), the old one still decrypts.
    let rotated = Command::new(process::BIN)
        .args(["pki", "ticket-keys", "--rotate", "ticket-keys"])
        .current_dir(replicas.dir.path())
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    let keys = std::fs::read_to_string(replicas.dir.path().join("ticket-keys")).unwrap();
    let key_lines: Vec<&str> = keys.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(key_lines.len(), 2, "{keys}");
    reloaded(&mut replicas.first);
    reloaded(&mut replicas.second);

    let (kind, _) = visit(replicas.addrs[1], &config, sni).await;
    assert_eq!(
        kind,
        Some(HandshakeKind::Resumed),
        "a ticket under the previous key did not resume after rotation"
    );

    // Drop the old key: only the new one stays.
    write_keys(&replicas.dir, &format!("{}\n", key_lines[0]));
    reloaded(&mut replicas.first);
    reloaded(&mut replicas.second);
    // The jar offers the oldest tickets first: the rest of those made under the dropped key.
    for _ in 1..old_tickets {
        let (kind, response) = visit(replicas.addrs[1], &config, sni).await;
        assert_eq!(
            kind,
            Some(HandshakeKind::Full),
            "a ticket resumed after its key was dropped"
        );
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    // Tickets made under the new key resume on either replica.
    let (kind, _) = visit(replicas.addrs[0], &config, sni).await;
    assert_eq!(kind, Some(HandshakeKind::Resumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_one_app_never_resumes_under_another_app_of_another_replica() {
    let replicas = replicas().await;
    let jar = Arc::new(TicketJar::default());
    let config = resuming_client(&replicas.pki, &replicas.client, &jar, false);

    visit(replicas.addrs[0], &config, "require.example.test").await;
    let (kind, response) = visit(replicas.addrs[1], &config, "partners.example.test").await;
    assert_eq!(
        kind,
        Some(HandshakeKind::Full),
        "a require-app ticket resumed under partners"
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    visit(replicas.addrs[0], &config, "ignore.example.test").await;
    let (kind, response) = visit(replicas.addrs[1], &config, "require.example.test").await;
    assert_eq!(
        kind,
        Some(HandshakeKind::Full),
        "an ignore-app ticket resumed under require"
    );
    assert!(
        response.contains(&replicas.client.hash_hex()),
        "the require app did not verify the client certificate: {response}"
    );
}

#[test]
fn pki_ticket_keys_writes_a_private_key_file_and_refuses_to_overwrite_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new();
    let run = |args: &[&str]| {
        Command::new(process::BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let written = run(&["pki", "ticket-keys", "keys"]);
    assert!(written.status.success(), "{written:?}");
    let path = dir.path().join("keys");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read_to_string(&path).unwrap();

    let again = run(&["pki", "ticket-keys", "keys"]);
    assert_eq!(again.status.code(), Some(64), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);

    let forced = run(&["pki", "ticket-keys", "--force", "keys"]);
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(std::fs::read_to_string(&path).unwrap(), first);

    let missing = run(&["pki", "ticket-keys", "--rotate", "absent"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("absent"));
}

#[test]
fn readme_local_rotation_example_runs() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/replicas.md")).unwrap();
    let section = readme
        .split("# Running many replicas")
        .nth(1)
        .expect("a Running many replicas section");
    let block = section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .find(|block| block.contains("--rotate ticket-keys") && !block.contains("kubectl"))
        .expect("the local rotation example");
    let dir = TempDir::new();
    let bin_dir = std::path::Path::new(process::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("sh")
        .args(["-e", "-c", block])
        .current_dir(dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{block}\n{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().last(),
        Some("2")
    );
    let keys = std::fs::read(dir.path().join("ticket-keys")).unwrap();
    assert_eq!(certgate::TicketKeys::parse(&keys).unwrap().len(), 2);
}
