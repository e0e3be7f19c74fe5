//! TLS session resumption stays inside one app and one version of its trust (docs/modes.md;
//! nginx CVE-2025-23419 is the bug this prevents):
//! - a session ticket from an `ignore` app offered under a `require` app's SNI gets a full
//!   handshake (and the client certificate is verified), over TLS 1.3 and TLS 1.2;
//! - a ticket from before a trust-changing reload is not resumed;
//! - all of the above also with shared ticket keys (`sessionTickets.keyFile`), where a reload
//!   that leaves the trust alone keeps sessions resuming;
//! - `sessionResumption: false` never resumes, by ticket or by session ID.
//!
//! Each has a control case showing the same ticket does resume where it should.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;

use common::sessions::{TicketJar, resuming_client, visit};
use common::*;
use rustls::HandshakeKind;

struct Setup {
    pki: Pki,
    client: Leaf,
    gateway: Gateway,
}

/// Which ticket keys the gateway runs with.
#[derive(Clone, Copy)]
enum Keys {
    /// Made by the process, new on every reload.
    Process,
    /// Read from a shared key file.
    Shared,
}

async fn setup(keys: Keys) -> Setup {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let [require, ignore] = require_and_ignore(upstream);
    let mut config = serde_json::json!({ "apps": [require, ignore] });
    if let Keys::Shared = keys {
        dir.write("ticket-keys", format!("{}\n{}\n", key_line(1), key_line(2)));
        config["sessionTickets"] = serde_json::json!({ "keyFile": "ticket-keys" });
    }
    let gateway = Gateway::start(dir, config).await;
    Setup {
        client: pki.client("resuming client"),
        pki,
        gateway,
    }
}

/// A key file line: 32 bytes of `byte`, base64.
fn key_line(byte: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// A client of `setup`'s PKI presenting its client certificate, keeping sessions in `jar`.
fn config(setup: &Setup, jar: &Arc<TicketJar>, tls12: bool) -> Arc<rustls::ClientConfig> {
    resuming_client(&setup.pki, &setup.client, jar, tls12)
}

async fn ignore_ticket_is_not_resumed_under_require(tls12: bool, keys: Keys) {
    let setup = setup(keys).await;
    let jar = Arc::new(TicketJar::default());
    let config = config(&setup, &jar, tls12);

    visit(setup.gateway.addr, &config, "ignore.example.test").await;
    let (control, _) = visit(setup.gateway.addr, &config, "ignore.example.test").await;
    assert_eq!(
        control,
        Some(HandshakeKind::Resumed),
        "control: the ticket should resume"
    );

    let (kind, response) = visit(setup.gateway.addr, &config, "require.example.test").await;
    assert_eq!(
        kind,
        Some(HandshakeKind::Full),
        "an ignore-app session resumed under require"
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(&setup.client.hash_hex()),
        "the require app did not verify and forward the client certificate"
    );
    setup.gateway.stop().await;
}

#[tokio::test]
async fn tls13_ticket_from_ignore_app_gets_a_full_handshake_under_require_app() {
    ignore_ticket_is_not_resumed_under_require(false, Keys::Process).await;
}

#[tokio::test]
async fn tls13_ticket_from_ignore_app_gets_a_full_handshake_under_require_app_with_shared_keys() {
    ignore_ticket_is_not_resumed_under_require(false, Keys::Shared).await;
}

#[tokio::test]
async fn tls12_session_from_ignore_app_gets_a_full_handshake_under_require_app_with_shared_keys() {
    ignore_ticket_is_not_resumed_under_require(true, Keys::Shared).await;
}

#[tokio::test]
async fn tls12_session_from_ignore_app_gets_a_full_handshake_under_require_app() {
    ignore_ticket_is_not_resumed_under_require(true, Keys::Process).await;
}

#[tokio::test]
async fn ticket_from_before_a_trust_changing_reload_is_not_resumed() {
    trust_change_ends_resumption(Keys::Process).await;
}

#[tokio::test]
async fn ticket_from_before_a_trust_changing_reload_is_not_resumed_with_shared_keys() {
    trust_change_ends_resumption(Keys::Shared).await;
}

#[tokio::test]
async fn with_shared_keys_a_reload_that_keeps_the_trust_keeps_sessions_resuming() {
    let setup = setup(Keys::Shared).await;
    let jar = Arc::new(TicketJar::default());
    let config = config(&setup, &jar, false);
    visit(setup.gateway.addr, &config, "require.example.test").await;
    setup.gateway.reloader.reload().await.unwrap();
    let (kind, response) = visit(setup.gateway.addr, &config, "require.example.test").await;
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    setup.gateway.stop().await;
}

#[tokio::test]
async fn session_resumption_false_never_resumes_by_ticket_or_session_id() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("ticket-keys", format!("{}\n", key_line(1)));
    let upstream = echo_upstream().await;
    let [mut require, ignore] = require_and_ignore(upstream);
    require["sessionResumption"] = false.into();
    let json = serde_json::json!({
        "sessionTickets": { "keyFile": "ticket-keys" },
        "apps": [require, ignore],
    });
    let setup = Setup {
        client: pki.client("resuming client"),
        pki,
        gateway: Gateway::start(dir, json).await,
    };
    for tls12 in [false, true] {
        let jar = Arc::new(TicketJar::default());
        let config = config(&setup, &jar, tls12);
        for _ in 0..2 {
            let (kind, response) = visit(setup.gateway.addr, &config, "require.example.test").await;
            assert_eq!(kind, Some(HandshakeKind::Full), "tls12={tls12}");
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
        // Control: the other app, same key file, resumes.
        visit(setup.gateway.addr, &config, "ignore.example.test").await;
        let (kind, _) = visit(setup.gateway.addr, &config, "ignore.example.test").await;
        assert_eq!(kind, Some(HandshakeKind::Resumed), "tls12={tls12}");
    }
    setup.gateway.stop().await;
}

async fn trust_change_ends_resumption(keys: Keys) {
    let setup = setup(keys).await;
    let jar = Arc::new(TicketJar::default());
    let config = config(&setup, &jar, false);
    visit(setup.gateway.addr, &config, "require.example.test").await;
    let (control, _) = visit(setup.gateway.addr, &config, "require.example.test").await;
    assert_eq!(
        control,
        Some(HandshakeKind::Resumed),
        "control: the ticket should resume"
    );

    // Trust changes: one more CA in the bundle.
    let bundle = format!(
        "{}{}",
        setup.pki.client_ca.pem,
        Ca::root("new partner CA").pem
    );
    setup.gateway.dir.write("client-ca.pem", bundle);
    setup.gateway.reloader.reload().await.unwrap();

    let (kind, response) = visit(setup.gateway.addr, &config, "require.example.test").await;
    assert_eq!(
        kind,
        Some(HandshakeKind::Full),
        "a session resumed across a trust change"
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    setup.gateway.stop().await;
}
