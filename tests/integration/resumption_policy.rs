//! A TLS session made under one policy never carries its verdict into a stricter one
//! (docs/modes.md, docs/replicas.md "Shared session tickets"). For each change below, over TLS 1.3 and
//! TLS 1.2, with process ticket keys (new on every reload) and with shared ones
//! (`sessionTickets.keyFile`): a session is made under the old config and shown to resume
//! there (with shared keys, across a reload that changes nothing, too); after a reload with
//! the change, the same session no longer resumes (the ticket keys follow the policy), it is
//! refused exactly as a fresh client is under the new policy (same alert, or same 495/496
//! page), and no request reaches the app. Then a client the new policy admits is forwarded, so
//! "nothing reached the app" is not read off a broken recorder.
//! - mode `accept` → `require`: a client without a certificate;
//! - mode `ignore` → `require`: a client without a certificate;
//! - trust: the client's CA replaced by another one;
//! - CRL: the `crlFiles` CRL now lists the client;
//! - pins: the pin of a self-signed client removed;
//! - allow-lists: `allowedSubjects` no longer lists the client;
//! - exemptions: `clientCertExclusionPaths` removed: the certificate-less session served on
//!   `/public` does not reach `/secret` (refused at the handshake with `rejectWith: "tls"`,
//!   496 with `"http"`);
//! - `rejectWith` `http` → `tls`: a self-signed client that got the 495 page;
//! - `allowUntrusted` true → false: a self-signed client.
//!
//! And the judging of a resumed session itself, the second line of defence, which the cases
//! above never reach because their sessions no longer resume: a client certificate that
//! expires after its session was made (the ticket keys unchanged) still resumes, over TLS 1.3
//! and TLS 1.2, and is then refused (the connection closed with `rejectWith: "tls"`, 495 with
//! `"http"`, as a fresh client is), nothing is forwarded, and each refusal is counted in
//! `certgate_handshake_failures_total`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::recording::{Recording, recording_upstream};
use common::sessions::{Outcome, TicketJar, Visit, resuming_client_presenting, try_visit};
use common::*;
use rustls::HandshakeKind;
use serde_json::{Value, json};
use time::OffsetDateTime;

const HOST: &str = "require.example.test";

/// Which ticket keys the gateway runs with.
#[derive(Clone, Copy, Debug)]
enum Keys {
    /// Made by the process, new on every reload.
    Process,
    /// Read from a shared key file, kept across reloads.
    Shared,
}

/// A change to the app that tightens its handshake.
#[derive(Clone, Copy, Debug)]
enum Change {
    AcceptToRequire,
    IgnoreToRequire,
    CaReplaced,
    ClientRevoked,
    PinRemoved,
    SubjectNoLongerAllowed,
    ExemptionRemoved { reject_with: &'static str },
    RejectWithHttpToTls,
    AllowUntrustedOff,
}

/// Who visits, before and after the change.
enum Visitor {
    NoCertificate,
    FromClientCa,
    SelfSigned,
}

/// What a visit must get.
#[derive(Debug)]
enum Expect {
    /// 200 from the app, for the path visited.
    Forwarded,
    /// certgate's own refusal page with this status, naming this reason.
    Page(u16, &'static str),
    /// No response: the handshake failed or the connection was closed.
    Refused,
}

/// What the cases are made of.
struct World {
    pki: Pki,
    /// The certificate the visitor presents, if any.
    presented: Option<Leaf>,
    /// A CA nobody trusts before the change.
    other_ca: Ca,
}

impl Change {
    fn visitor(self) -> Visitor {
        match self {
            Self::AcceptToRequire | Self::IgnoreToRequire | Self::ExemptionRemoved { .. } => {
                Visitor::NoCertificate
            }
            Self::CaReplaced | Self::ClientRevoked | Self::SubjectNoLongerAllowed => {
                Visitor::FromClientCa
            }
            Self::PinRemoved | Self::RejectWithHttpToTls | Self::AllowUntrustedOff => {
                Visitor::SelfSigned
            }
        }
    }

    /// The app before the change: `app` trusts the client CA in `require` mode, and this
    /// adjusts it.
    fn before(self, app: &mut Value, world: &World, dir: &TempDir) {
        match self {
            Self::AcceptToRequire => app["ingress"]["clientCertificateMode"] = "accept".into(),
            Self::IgnoreToRequire => {
                app["ingress"]["clientCertificateMode"] = "ignore".into();
                app.as_object_mut().unwrap().remove("clientAuth");
            }
            Self::CaReplaced => {}
            Self::ClientRevoked => {
                let crl = world.pki.client_ca.crl(&[], in_a_day());
                dir.write("client-ca.crl", crl);
                app["clientAuth"]["crlFiles"] = json!(["client-ca.crl"]);
            }
            Self::PinRemoved => {
                let pin = world.presented.as_ref().unwrap().hash_hex();
                app["clientAuth"]["allowedHashes"] = json!([pin]);
            }
            Self::SubjectNoLongerAllowed => {
                app["clientAuth"]["allowedSubjects"] = json!(["CN=alice"]);
            }
            Self::ExemptionRemoved { reject_with } => {
                app["clientCertExclusionPaths"] = json!(["/public"]);
                app["rejectWith"] = reject_with.into();
            }
            Self::RejectWithHttpToTls => app["rejectWith"] = "http".into(),
            Self::AllowUntrustedOff => app["clientAuth"]["allowUntrusted"] = true.into(),
        }
    }

    /// The app after the change.
    fn after(self, app: &mut Value, world: &World, dir: &TempDir) {
        match self {
            Self::AcceptToRequire => app["ingress"]["clientCertificateMode"] = "require".into(),
            Self::IgnoreToRequire => {
                app["ingress"]["clientCertificateMode"] = "require".into();
                app["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
            }
            Self::CaReplaced => {
                dir.write("other-ca.pem", &world.other_ca.pem);
                app["clientAuth"]["trustedCaFiles"] = json!(["other-ca.pem"]);
            }
            Self::ClientRevoked => {
                let alice = world.presented.as_ref().unwrap();
                let crl = world.pki.client_ca.crl(&[alice], in_a_day());
                dir.write("client-ca.crl", crl);
            }
            Self::PinRemoved => app["clientAuth"]["allowedHashes"] = json!([]),
            Self::SubjectNoLongerAllowed => {
                app["clientAuth"]["allowedSubjects"] = json!(["CN=bob"]);
            }
            Self::ExemptionRemoved { .. } => {
                app.as_object_mut()
                    .unwrap()
                    .remove("clientCertExclusionPaths");
            }
            Self::RejectWithHttpToTls => app["rejectWith"] = "tls".into(),
            Self::AllowUntrustedOff => app["clientAuth"]["allowUntrusted"] = false.into(),
        }
    }

    /// The path the session is made on.
    fn path_before(self) -> &'static str {
        match self {
            Self::ExemptionRemoved { .. } => "/public",
            _ => "/",
        }
    }

    /// What the visitor gets before the change.
    fn before_gets(self) -> Expect {
        match self {
            Self::RejectWithHttpToTls => Expect::Page(495, "unknown_issuer"),
            _ => Expect::Forwarded,
        }
    }

    /// What the visitor gets on `/secret` after the change, as a fresh client.
    fn after_gets(self) -> Expect {
        match self {
            Self::ExemptionRemoved {
                reject_with: "http",
            } => Expect::Page(496, "no_certificate"),
            _ => Expect::Refused,
        }
    }

    /// A client the new policy admits.
    fn admitted_after(self, world: &World) -> Leaf {
        match self {
            Self::CaReplaced => world.other_ca.issue(LeafSpec::client("bob")),
            _ => world.pki.client("bob"),
        }
    }
}

#[tokio::test]
async fn a_session_without_a_certificate_is_refused_after_accept_becomes_require() {
    every_version_and_key_source(Change::AcceptToRequire).await;
}

#[tokio::test]
async fn a_session_without_a_certificate_is_refused_after_ignore_becomes_require() {
    every_version_and_key_source(Change::IgnoreToRequire).await;
}

#[tokio::test]
async fn a_session_is_refused_after_its_ca_is_replaced() {
    every_version_and_key_source(Change::CaReplaced).await;
}

#[tokio::test]
async fn a_session_is_refused_after_the_crl_lists_its_certificate() {
    every_version_and_key_source(Change::ClientRevoked).await;
}

#[tokio::test]
async fn a_self_signed_session_is_refused_after_its_pin_is_removed() {
    every_version_and_key_source(Change::PinRemoved).await;
}

#[tokio::test]
async fn a_session_is_refused_after_allowed_subjects_no_longer_list_it() {
    every_version_and_key_source(Change::SubjectNoLongerAllowed).await;
}

#[tokio::test]
async fn a_session_without_a_certificate_does_not_reach_secret_after_the_exemption_is_removed() {
    every_version_and_key_source(Change::ExemptionRemoved { reject_with: "tls" }).await;
}

#[tokio::test]
async fn a_session_without_a_certificate_gets_496_on_secret_after_the_exemption_is_removed() {
    every_version_and_key_source(Change::ExemptionRemoved {
        reject_with: "http",
    })
    .await;
}

#[tokio::test]
async fn a_self_signed_session_that_got_495_is_refused_after_reject_with_becomes_tls() {
    every_version_and_key_source(Change::RejectWithHttpToTls).await;
}

#[tokio::test]
async fn a_self_signed_session_is_refused_after_allow_untrusted_is_turned_off() {
    every_version_and_key_source(Change::AllowUntrustedOff).await;
}

#[tokio::test]
async fn a_resumed_session_whose_certificate_expired_is_closed_with_reject_with_tls() {
    expired_since_the_session_was_made("tls").await;
}

#[tokio::test]
async fn a_resumed_session_whose_certificate_expired_gets_495_with_reject_with_http() {
    expired_since_the_session_was_made("http").await;
}

async fn every_version_and_key_source(change: Change) {
    for tls12 in [false, true] {
        for keys in [Keys::Process, Keys::Shared] {
            session_from_before_the_change_is_refused(change, tls12, keys).await;
        }
    }
}

async fn session_from_before_the_change_is_refused(change: Change, tls12: bool, keys: Keys) {
    let version = if tls12 { "TLS 1.2" } else { "TLS 1.3" };
    let label = format!("{change:?}, {version}, {keys:?} keys");
    let pki = Pki::new();
    let presented = match change.visitor() {
        Visitor::NoCertificate => None,
        Visitor::FromClientCa => Some(pki.client("alice")),
        Visitor::SelfSigned => Some(Leaf::self_signed(LeafSpec::client("self-signed alice"))),
    };
    let dir = TempDir::new();
    let world = World {
        presented,
        other_ca: Ca::root("another client CA"),
        pki,
    };
    world.pki.write(&dir);
    if let Keys::Shared = keys {
        dir.write("ticket-keys", format!("{}\n", key_line(7)));
    }
    let (upstream, recording) = recording_upstream().await;
    let mut app = require_app(upstream);
    change.before(&mut app, &world, &dir);
    let gateway = Gateway::start(dir, config(&app, keys)).await;
    let jar = Arc::new(TicketJar::default());
    let client = resuming_client_presenting(&world.pki, world.presented.as_ref(), &jar, tls12);

    let path = change.path_before();
    let first = try_visit(gateway.addr, &client, HOST, path).await;
    expect(
        &first,
        &change.before_gets(),
        path,
        &format!("{label}, before"),
    );
    let control = try_visit(gateway.addr, &client, HOST, path).await;
    assert_eq!(
        control.kind,
        Some(HandshakeKind::Resumed),
        "{label}: control: the session should resume before the change"
    );
    expect(
        &control,
        &change.before_gets(),
        path,
        &format!("{label}, control"),
    );
    if let Keys::Shared = keys {
        // Control: with shared keys a reload that changes nothing keeps the session, so what
        // ends it below is the change, not the reload.
        reload(&gateway, config(&app, keys)).await;
        let kept = try_visit(gateway.addr, &client, HOST, path).await;
        assert_eq!(
            kept.kind,
            Some(HandshakeKind::Resumed),
            "{label}: control: the session should survive a reload without the change"
        );
        expect(
            &kept,
            &change.before_gets(),
            path,
            &format!("{label}, kept"),
        );
    }

    change.after(&mut app, &world, &gateway.dir);
    reload(&gateway, config(&app, keys)).await;
    let forwarded = recording.bytes().len();

    let resumed = try_visit(gateway.addr, &client, HOST, "/secret").await;
    let fresh_jar = Arc::new(TicketJar::default());
    let fresh = resuming_client_presenting(&world.pki, world.presented.as_ref(), &fresh_jar, tls12);
    let fresh = try_visit(gateway.addr, &fresh, HOST, "/secret").await;
    expect(
        &fresh,
        &change.after_gets(),
        "/secret",
        &format!("{label}, a fresh client"),
    );
    expect(
        &resumed,
        &change.after_gets(),
        "/secret",
        &format!("{label}, the old session"),
    );
    // Ticket keys follow the policy (process keys are new on every reload, shared ones are
    // derived from its fingerprint): the old session gets a full handshake.
    assert_ne!(
        resumed.kind,
        Some(HandshakeKind::Resumed),
        "{label}: the old session resumed after the change"
    );
    assert_eq!(
        resumed.outcome, fresh.outcome,
        "{label}: the old session and a fresh client were answered differently"
    );
    assert_nothing_forwarded(&recording, forwarded, &label);

    // The new policy does admit someone, and the recorder sees it.
    let bob = change.admitted_after(&world);
    let bob_jar = Arc::new(TicketJar::default());
    let bob = resuming_client_presenting(&world.pki, Some(&bob), &bob_jar, tls12);
    let welcome = try_visit(gateway.addr, &bob, HOST, "/welcome").await;
    expect(
        &welcome,
        &Expect::Forwarded,
        "/welcome",
        &format!("{label}, bob"),
    );
    assert!(
        recording.bytes().len() > forwarded,
        "{label}: the recorder missed bob's request"
    );
    gateway.stop().await;
}

/// A client certificate valid for a few seconds: its session is made and resumed while it is
/// valid, then resumed again after it expired. Nothing in the app's config changes, so the
/// session's ticket still decrypts: only the judging of resumed sessions refuses it.
async fn expired_since_the_session_was_made(reject_with: &str) {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let (upstream, recording) = recording_upstream().await;
    let mut app = require_app(upstream);
    app["rejectWith"] = reject_with.into();
    let mut config = config(&app, Keys::Process);
    config["admin"] = "127.0.0.1:0".into();
    let gateway = Gateway::start(dir, config).await;

    // X.509 times have whole seconds, and webpki calls a certificate expired once the
    // current second is past `notAfter`.
    let not_after = (OffsetDateTime::now_utc() + time::Duration::seconds(3))
        .replace_nanosecond(0)
        .unwrap();
    let short_lived = pki.client_ca.issue(LeafSpec {
        not_after,
        ..LeafSpec::client("short-lived")
    });
    let mut clients = Vec::new();
    for tls12 in [false, true] {
        let label = if tls12 { "TLS 1.2" } else { "TLS 1.3" };
        let jar = Arc::new(TicketJar::default());
        let client = resuming_client_presenting(&pki, Some(&short_lived), &jar, tls12);
        let first = try_visit(gateway.addr, &client, HOST, "/").await;
        expect(&first, &Expect::Forwarded, "/", &format!("{label}, valid"));
        let control = try_visit(gateway.addr, &client, HOST, "/").await;
        assert_eq!(
            control.kind,
            Some(HandshakeKind::Resumed),
            "{label}: control"
        );
        expect(
            &control,
            &Expect::Forwarded,
            "/",
            &format!("{label}, control"),
        );
        clients.push((label, client));
    }
    assert!(
        OffsetDateTime::now_utc() < not_after,
        "the sessions were made too slowly to be made while the certificate was valid"
    );

    let expired = not_after + time::Duration::seconds(1);
    let wait = expired - OffsetDateTime::now_utc() + time::Duration::milliseconds(100);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let forwarded = recording.bytes().len();
    let refused = match reject_with {
        "http" => Expect::Page(495, "expired"),
        _ => Expect::Refused,
    };
    for (label, client) in &clients {
        let resumed = try_visit(gateway.addr, client, HOST, "/secret").await;
        assert_eq!(
            resumed.kind,
            Some(HandshakeKind::Resumed),
            "{label}: the expired session must resume for this test to mean anything"
        );
        expect(&resumed, &refused, "/secret", &format!("{label}, resumed"));
        if reject_with == "tls" {
            // Refused after the resumed handshake: closed with close_notify, no response.
            assert_eq!(resumed.outcome, Outcome::Refused { alert: None }, "{label}");
        }
        let tls12 = *label == "TLS 1.2";
        let fresh_jar = Arc::new(TicketJar::default());
        let fresh = resuming_client_presenting(&pki, Some(&short_lived), &fresh_jar, tls12);
        let fresh = try_visit(gateway.addr, &fresh, HOST, "/secret").await;
        expect(&fresh, &refused, "/secret", &format!("{label}, fresh"));
    }
    assert_nothing_forwarded(&recording, forwarded, reject_with);
    let metrics = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &metrics,
            r#"certgate_handshake_failures_total{app="require",reason="expired"}"#
        ),
        4.0,
        "two resumed sessions and two fresh handshakes refused"
    );
    gateway.stop().await;
}

/// A `require` app at `HOST` trusting the client CA of `Pki::write`.
fn require_app(upstream: std::net::SocketAddr) -> Value {
    let mut require = app("require", &[HOST], upstream, "require");
    require["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    require
}

/// The whole config file for `app`, as `Gateway::start` writes it.
fn config(app: &Value, keys: Keys) -> Value {
    let mut config = json!({
        "listen": "127.0.0.1:0",
        "timeouts": { "drainDelayMs": 0 },
        "apps": [app],
    });
    if let Keys::Shared = keys {
        config["sessionTickets"] = json!({ "keyFile": "ticket-keys" });
    }
    config
}

/// Rewrites the gateway's config file and reloads it, as SIGHUP does.
async fn reload(gateway: &Gateway, config: Value) {
    gateway
        .dir
        .write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    gateway
        .reloader
        .reload()
        .await
        .unwrap_or_else(|e| panic!("reload refused: {}", certgate::error_chain(&e)));
}

/// A key file line: 32 bytes of `byte`, base64.
fn key_line(byte: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn in_a_day() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(1)
}

fn expect(visit: &Visit, expected: &Expect, path: &str, label: &str) {
    match (expected, &visit.outcome) {
        (Expect::Forwarded, Outcome::Answered { status: 200, body }) => {
            assert_eq!(body, &format!("upstream saw {path}"), "{label}");
        }
        (Expect::Page(status, reason), Outcome::Answered { status: got, body }) => {
            assert_eq!(got, status, "{label}: {body}");
            assert!(body.contains(reason), "{label}: {body}");
        }
        (Expect::Refused, Outcome::Refused { .. }) => {}
        (expected, _) => panic!("{label}: expected {expected:?}, got {visit:?}"),
    }
}

fn assert_nothing_forwarded(recording: &Recording, before: usize, label: &str) {
    let bytes = recording.bytes();
    assert_eq!(
        bytes.len(),
        before,
        "{label}: a request reached the app: {:?}",
        String::from_utf8_lossy(&bytes[before.min(bytes.len())..])
    );
}
