//! A `require` app with `clientAuth.revocation` settings in front of an app, and what the
//! revocation tests ask of it: whether a client is served, refusals counted by reason, the
//! CRL refresh that publishes a revocation, and `openssl ocsp` responders for a CA.

use std::net::SocketAddr;
use std::time::Duration;

use super::polling::{scrape_until, until_async};
use super::revocation::{Answer, HttpFixture, OpensslOcsp, fresh_crl, index_line};
use super::tools;
use super::{
    Ca, ClientOptions, Connection, Gateway, Leaf, Pki, TempDir, app, echo_upstream, metric, scrape,
};

pub const HOST: &str = "require.example.test";

/// A `require` app for `HOST` trusting the test client CA, with `revocation`, in front of an
/// echo app, and an admin listener.
pub async fn gateway(pki: &Pki, revocation: serde_json::Value) -> Gateway {
    gateway_before(pki, revocation, echo_upstream().await).await
}

/// Like `gateway`, in front of `upstream`.
pub async fn gateway_before(
    pki: &Pki,
    revocation: serde_json::Value,
    upstream: SocketAddr,
) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    log_revocation();
    Gateway::start(dir, config(upstream, revocation)).await
}

/// Shows what certgate's revocation module logs (CRL fetch and refresh failures) in a failed
/// test's output. The subscriber is the whole test process's and other tests' gateways run in
/// it: it takes nothing else, so their access lines and refusals are not formatted, whichever
/// test installs it first.
fn log_revocation() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "certgate::revocation=trace",
        ))
        .try_init();
}

pub fn config(upstream: SocketAddr, revocation: serde_json::Value) -> serde_json::Value {
    let mut app = app("require", &[HOST], upstream, "require");
    app["clientAuth"] = serde_json::json!({
        "trustedCaFiles": ["client-ca.pem"],
        "revocation": revocation,
    });
    serde_json::json!({ "admin": "127.0.0.1:0", "apps": [app] })
}

/// Loads the config `gateway` would serve; the error chain when it is refused.
pub async fn try_load(dir: &TempDir, revocation: serde_json::Value) -> Result<(), String> {
    let config = config("127.0.0.1:9".parse().unwrap(), revocation);
    let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    certgate::LoadedConfig::load(&path)
        .await
        .map(|_| ())
        .map_err(|error| certgate::error_chain(&error))
}

/// The error chain of a config with `revocation` that must be refused.
pub async fn refused_config(pki: &Pki, revocation: serde_json::Value) -> String {
    let dir = TempDir::new();
    pki.write(&dir);
    try_load(&dir, revocation.clone())
        .await
        .err()
        .unwrap_or_else(|| panic!("a config with {revocation} was accepted"))
}

pub fn options(pki: &Pki, leaf: &Leaf) -> ClientOptions {
    ClientOptions::new(pki, HOST).with_identity(leaf.identity())
}

/// Whether a request from `options` reaches the app.
pub async fn served(gateway: &Gateway, options: &ClientOptions) -> bool {
    let Ok(mut connection) = Connection::open(gateway.addr, options).await else {
        return false;
    };
    let request = connection.get(HOST, "/");
    match connection.send(request).await {
        Ok(reply) => {
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            true
        }
        Err(_) => false,
    }
}

pub async fn refusals(gateway: &Gateway, reason: &str) -> f64 {
    let text = scrape(gateway.admin.unwrap()).await;
    metric(
        &text,
        &format!(r#"certgate_handshake_failures_total{{app="require",reason="{reason}"}}"#),
    )
}

pub async fn assert_refused(gateway: &Gateway, options: &ClientOptions, reason: &str) {
    let before = refusals(gateway, reason).await;
    assert!(!served(gateway, options).await, "a request reached the app");
    // The refusal is counted by the connection's task a moment after the client sees it.
    let series = format!(r#"certgate_handshake_failures_total{{app="require",reason="{reason}"}}"#);
    let text = super::polling::scrape_until(
        gateway.admin.unwrap(),
        100,
        std::time::Duration::from_millis(20),
        |text| metric(text, &series) > before,
    )
    .await;
    assert_eq!(
        metric(&text, &series),
        before + 1.0,
        "not refused as {reason}"
    );
}

pub async fn wait_for_metric(gateway: &Gateway, series: &str, at_least: f64) {
    let admin = gateway.admin.unwrap();
    let text = scrape_until(admin, 300, Duration::from_millis(50), |text| {
        metric(text, series) >= at_least
    })
    .await;
    assert!(
        metric(&text, series) >= at_least,
        "{series} never reached {at_least}"
    );
}

/// A CRL server for `ca` listing `revoked`.
pub fn crl_server(ca: &Ca, revoked: &[&rcgen::SerialNumber]) -> HttpFixture {
    HttpFixture::start(Answer::Body(fresh_crl(ca, revoked)))
}

/// A CRL server for the client CA listing nothing yet, and settings that fetch it every second.
pub fn refreshed_crl(pki: &Pki) -> (HttpFixture, serde_json::Value) {
    let crls = crl_server(&pki.client_ca, &[]);
    let settings = serde_json::json!({ "crlUrls": [crls.url("ca.crl")], "refreshMs": 1000 });
    (crls, settings)
}

/// Publishes a CRL of the client CA listing `client` and waits until certgate fetched it.
pub async fn publish_revocation(gateway: &Gateway, crls: &HttpFixture, pki: &Pki, client: &Leaf) {
    let good_fetches = r#"certgate_crl_fetches_total{app="require",outcome="good"}"#;
    let before = metric(&scrape(gateway.admin.unwrap()).await, good_fetches);
    crls.set(Answer::Body(fresh_crl(&pki.client_ca, &[&client.serial])));
    wait_for_metric(gateway, good_fetches, before + 1.0).await;
}

/// Sends requests on `connection` until one fails; panics if it keeps serving.
pub async fn wait_until_closed(connection: &mut Connection) {
    let closed = until_async(100, Duration::from_millis(50), async || {
        let request = connection.get(HOST, "/");
        match connection.send(request).await {
            Err(_) => true,
            Ok(reply) if reply.status == 403 => false,
            Ok(reply) => {
                assert_eq!(reply.status, 200, "{:?}", reply.body);
                false
            }
        }
    })
    .await;
    assert!(closed, "the connection kept serving a revoked certificate");
}

/// An `openssl ocsp` responder and the folder of its files.
pub struct Responder {
    _dir: TempDir,
    pub ocsp: OpensslOcsp,
}

/// `openssl ocsp` for the client CA, signing with the CA itself, over `entries`; `None`
/// (outside CI) when openssl is missing.
pub fn responder(pki: &Pki, entries: &[(&Leaf, &str, bool)], extra: &[&str]) -> Option<Responder> {
    let index: String = entries
        .iter()
        .map(|(leaf, name, revoked)| index_line(leaf.der(), name, *revoked))
        .collect();
    openssl_responder(&pki.client_ca, None, &index, extra)
}

/// `openssl ocsp` answering for `ca` over `index`, signing with `signer` (PEM certificate
/// and key) or else with the CA itself.
pub fn openssl_responder(
    ca: &Ca,
    signer: Option<(String, String)>,
    index: &str,
    extra: &[&str],
) -> Option<Responder> {
    if !tools::openssl() {
        return None;
    }
    let dir = TempDir::new();
    dir.write("ca.pem", &ca.pem);
    let (signer, key) = signer.unwrap_or_else(|| (ca.pem.clone(), ca.key.serialize_pem()));
    dir.write("signer.pem", signer);
    dir.write("signer.key", key);
    dir.write("index.txt", index);
    let ocsp = OpensslOcsp::start(dir.path(), "ca.pem", "signer.pem", "signer.key", extra);
    Some(Responder { _dir: dir, ocsp })
}
