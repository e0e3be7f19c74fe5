//! docs/cors.md: `ingress.corsPolicy`, driven with the real `curl` (a missing `curl` fails each
//! test when `CI` is set, and skips it with a message otherwise), with what the app receives
//! read from upstreams that record every byte:
//! - a preflight from an allowed origin for an allowed method and headers gets 204 with
//!   `Access-Control-Allow-Origin` (the origin), `-Allow-Methods`, `-Allow-Headers`,
//!   `-Max-Age`, `-Allow-Credentials` and `Vary: Origin`, over HTTP/1.1 and HTTP/2, and never
//!   reaches the app;
//! - a preflight from another origin, for another method or with another header gets 204 with
//!   none of them, and never reaches the app either;
//! - a request from an allowed origin is forwarded (its `Origin` too) and its answer gets
//!   `-Allow-Origin`, `-Allow-Credentials`, `-Expose-Headers` and `Vary: Origin`; from another
//!   origin, or without one, only `Vary: Origin`;
//! - `*`: every response says `Access-Control-Allow-Origin: *`, replacing the app's own, and the
//!   app's `Vary` is kept as it is; a preflight names the method and headers asked for;
//! - a listed origin: `Origin` joins the app's `Vary` once, certgate's values replace the app's
//!   for an allowed origin, and the app's own CORS headers pass for another (as Envoy does);
//! - an app without `corsPolicy` forwards preflights to the app, as before;
//! - preflights meet the certificate: a `require` app answers them only on a connection with a
//!   certificate (the handshake demands one); with `clientCertExclusionPaths` a preflight
//!   without a certificate is answered on any path, while the request itself gets 403 (with
//!   the CORS headers, so the page can read it) and never reaches the app; authorization
//!   rules refuse the request, never its preflight;
//! - `certgate_cors_preflights_total{app,result}` counts them, at zero before any;
//! - a reload applies a changed policy;
//! - the example app of docs/cors.md loads, with its policy;
//! - `check` prints the policy, refuses `allowCredentials` with a `*` origin and an origin with
//!   a path, and warns about `exposeHeaders: ["*"]` with credentials; `explain` shows it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use common::recording::{Recording, raw_upstream};
use common::serve::serve_each;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use process::cli::{assert_says, certgate, exited};
use serde_json::{Value, json};

const PORTAL: &str = "https://portal.example.test";
const EVIL: &str = "https://evil.example.test";

/// The policy of the `api` app: one origin, credentials.
fn api_policy() -> Value {
    json!({
        "allowedOrigins": [PORTAL],
        "allowedMethods": ["GET", "POST", "PUT"],
        "allowedHeaders": ["Content-Type", "X-Trace"],
        "exposeHeaders": ["X-Request-Id"],
        "maxAge": 600,
        "allowCredentials": true
    })
}

/// An app that sets its own `Vary` and CORS headers on every answer.
async fn vary_app() -> SocketAddr {
    serve_each(|tcp| async move {
        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
            Ok::<_, hyper::Error>(
                Response::builder()
                    .header("vary", "Accept-Encoding")
                    .header(
                        "access-control-allow-origin",
                        "https://app-set.example.test",
                    )
                    .header("access-control-expose-headers", "x-app")
                    .body(Full::new(Bytes::from_static(b"vary")))
                    .unwrap(),
            )
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), service)
            .await;
    })
    .await
}

/// certgate with the apps of the cases, the app behind `api` recording every byte, and the
/// PEM files curl needs.
struct Setup {
    gateway: Gateway,
    recording: Recording,
    plain_recording: Recording,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Setup {
    async fn start() -> Self {
        let pki = Pki::new();
        let dir = TempDir::new();
        pki.write(&dir);
        let client = pki.client("browser user");
        let ca_file = dir.write("server-ca.pem", &pki.server_ca.pem);
        let cert_file = dir.write("client.pem", &client.pem);
        let key_file = dir.write("client.key", client.key.serialize_pem());
        let (raw, recording) = raw_upstream().await;
        let (plain_raw, plain_recording) = raw_upstream().await;
        let vary = vary_app().await;
        let trusted = json!({ "trustedCaFiles": ["client-ca.pem"] });
        let mut api = app("api", &["api.example.test"], raw, "accept");
        api["clientAuth"] = trusted.clone();
        api["ingress"]["corsPolicy"] = api_policy();
        let mut open = app("open", &["open.example.test"], vary, "ignore");
        open["ingress"]["corsPolicy"] =
            json!({ "allowedOrigins": ["*"], "allowedMethods": ["*"], "allowedHeaders": ["*"] });
        let mut listed = app("listed", &["listed.example.test"], vary, "ignore");
        listed["ingress"]["corsPolicy"] =
            json!({ "allowedOrigins": [PORTAL], "allowedMethods": ["GET"], "exposeHeaders": null });
        let plain = app("plain", &["plain.example.test"], plain_raw, "ignore");
        let mut locked = app("locked", &["locked.example.test"], raw, "require");
        locked["clientAuth"] = trusted.clone();
        locked["ingress"]["corsPolicy"] = api_policy();
        let mut excluded = app("excluded", &["excluded.example.test"], raw, "require");
        excluded["clientAuth"] = trusted.clone();
        excluded["ingress"]["corsPolicy"] = api_policy();
        excluded["clientCertExclusionPaths"] = json!(["/public"]);
        let mut guarded = app("guarded", &["guarded.example.test"], raw, "accept");
        guarded["clientAuth"] = trusted;
        guarded["ingress"]["corsPolicy"] = api_policy();
        guarded["authorization"] =
            json!([{ "pathPrefix": "/", "allowedSubjects": ["CN=someone else"] }]);
        let gateway = Gateway::start(
            dir,
            json!({
                "admin": "127.0.0.1:0",
                "apps": [api, open, listed, plain, locked, excluded, guarded]
            }),
        )
        .await;
        Self {
            gateway,
            recording,
            plain_recording,
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// Runs curl: `method` on `https://host/path` with `headers`, with the client certificate
    /// when `certificate`, over HTTP/2 when `http2`.
    async fn curl(
        &self,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        certificate: bool,
        http2: bool,
    ) -> Option<Answer> {
        let port = self.gateway.addr.port();
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--max-time", "20", "--include"])
            .arg(if http2 { "--http2" } else { "--http1.1" })
            .arg("--cacert")
            .arg(&self.ca_file)
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .args(["--request", method]);
        if certificate {
            command
                .arg("--cert")
                .arg(&self.cert_file)
                .arg("--key")
                .arg(&self.key_file);
        }
        for (name, value) in headers {
            command.arg("--header").arg(format!("{name}: {value}"));
        }
        command.arg(format!("https://{host}:{port}{path}"));
        let output = tokio::task::spawn_blocking(move || command.output().expect("run curl"))
            .await
            .unwrap();
        output
            .status
            .success()
            .then(|| Answer::parse(&output.stdout))
    }

    /// A preflight from `origin` for `method` with `request_headers`, without a certificate.
    async fn preflight(
        &self,
        host: &str,
        origin: &str,
        method: &str,
        request_headers: Option<&str>,
    ) -> Answer {
        let mut headers = vec![
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
        ];
        if let Some(requested) = request_headers {
            headers.push(("Access-Control-Request-Headers", requested));
        }
        self.curl(host, "OPTIONS", "/things", &headers, false, false)
            .await
            .expect("curl preflight")
    }

    /// `GET /things` with `origin`, without a certificate.
    async fn get(&self, host: &str, origin: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        self.curl(host, "GET", "/things", &headers, false, false)
            .await
            .expect("curl GET")
    }

    /// What the `api` app (and `locked`, `excluded`, `guarded`) received so far.
    fn received(&self) -> String {
        String::from_utf8_lossy(&self.recording.bytes()).into_owned()
    }
}

/// A response as curl printed it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn parse(stdout: &[u8]) -> Self {
        let text = String::from_utf8_lossy(stdout);
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// Every value of header `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> Option<&str> {
        let values = self.all(name);
        assert!(values.len() <= 1, "{name} more than once: {self:?}");
        values.first().copied()
    }

    /// No `Access-Control-*` header at all.
    fn has_no_cors_headers(&self) -> bool {
        !self
            .headers
            .iter()
            .any(|(name, _)| name.starts_with("access-control-"))
    }
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_by_certgate_alone() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    for http2 in [false, true] {
        let headers = [
            ("Origin", PORTAL),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-type,x-trace"),
        ];
        let answer = setup
            .curl(
                "api.example.test",
                "OPTIONS",
                "/things",
                &headers,
                false,
                http2,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 204, "{answer:?}");
        assert_eq!(answer.one("access-control-allow-origin"), Some(PORTAL));
        assert_eq!(
            answer.one("access-control-allow-methods"),
            Some("GET, POST, PUT")
        );
        assert_eq!(
            answer.one("access-control-allow-headers"),
            Some("content-type, x-trace")
        );
        assert_eq!(answer.one("access-control-max-age"), Some("600"));
        assert_eq!(answer.one("access-control-allow-credentials"), Some("true"));
        assert_eq!(answer.one("vary"), Some("Origin"));
        assert_eq!(answer.one("access-control-expose-headers"), None);
        assert!(answer.body.is_empty(), "{answer:?}");
    }
    assert_eq!(setup.recording.connections(), 0, "{}", setup.received());
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_preflight_for_another_origin_method_or_header_gets_no_allow_headers() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    for (origin, method, headers) in [
        (EVIL, "PUT", None),
        ("https://portal.example.test:8443", "GET", None),
        ("http://portal.example.test", "GET", None),
        (PORTAL, "DELETE", None),
        (PORTAL, "put", None),
        (PORTAL, "PUT", Some("content-type, authorization")),
    ] {
        let answer = setup
            .preflight("api.example.test", origin, method, headers)
            .await;
        let label = format!("{origin} {method} {headers:?}");
        assert_eq!(answer.status, 204, "{label}: {answer:?}");
        assert!(answer.has_no_cors_headers(), "{label}: {answer:?}");
        assert_eq!(answer.one("vary"), Some("Origin"), "{label}");
    }
    assert_eq!(setup.recording.connections(), 0, "{}", setup.received());
    setup.gateway.stop().await;
}

#[tokio::test]
async fn only_an_allowed_origin_may_read_the_apps_answer() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let allowed = setup.get("api.example.test", Some(PORTAL)).await;
    assert_eq!((allowed.status, allowed.body.as_str()), (200, "ok"));
    assert_eq!(allowed.one("access-control-allow-origin"), Some(PORTAL));
    assert_eq!(
        allowed.one("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        allowed.one("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(allowed.one("vary"), Some("Origin"));
    assert!(
        setup.received().contains(&format!("origin: {PORTAL}\r\n")),
        "the app gets the Origin: {}",
        setup.received()
    );
    for origin in [Some(EVIL), None] {
        let answer = setup.get("api.example.test", origin).await;
        assert_eq!(answer.status, 200, "{origin:?}");
        assert!(answer.has_no_cors_headers(), "{origin:?}: {answer:?}");
        assert_eq!(answer.one("vary"), Some("Origin"), "{origin:?}");
    }
    // A plain OPTIONS with an Origin is no preflight: it goes to the app.
    let options = setup
        .curl(
            "api.example.test",
            "OPTIONS",
            "/things",
            &[("Origin", PORTAL)],
            false,
            false,
        )
        .await
        .unwrap();
    assert_eq!(options.status, 200);
    assert_eq!(options.one("access-control-allow-origin"), Some(PORTAL));
    assert!(setup.received().contains("OPTIONS /things HTTP/1.1\r\n"));
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_star_origin_answers_every_origin_alike() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    for origin in [Some(EVIL), None] {
        let answer = setup.get("open.example.test", origin).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "vary"));
        assert_eq!(
            answer.one("access-control-allow-origin"),
            Some("*"),
            "{origin:?}"
        );
        // Nothing depends on the Origin: the app's Vary stays as it is, and its own expose
        // list passes (the policy sets none).
        assert_eq!(answer.one("vary"), Some("Accept-Encoding"), "{origin:?}");
        assert_eq!(answer.one("access-control-expose-headers"), Some("x-app"));
        assert_eq!(answer.one("access-control-allow-credentials"), None);
    }
    let answer = setup
        .preflight(
            "open.example.test",
            EVIL,
            "PATCH",
            Some("authorization,x-any"),
        )
        .await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.one("access-control-allow-origin"), Some("*"));
    assert_eq!(answer.one("access-control-allow-methods"), Some("PATCH"));
    assert_eq!(
        answer.one("access-control-allow-headers"),
        Some("authorization,x-any")
    );
    assert_eq!(answer.one("access-control-max-age"), None);
    assert_eq!(answer.one("access-control-allow-credentials"), None);
    assert_eq!(answer.one("vary"), None);
    setup.gateway.stop().await;
}

#[tokio::test]
async fn origin_joins_the_apps_vary_and_replaces_its_allow_origin_for_allowed_origins() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let allowed = setup.get("listed.example.test", Some(PORTAL)).await;
    assert_eq!(allowed.one("vary"), Some("Accept-Encoding, Origin"));
    assert_eq!(allowed.one("access-control-allow-origin"), Some(PORTAL));
    assert_eq!(allowed.one("access-control-expose-headers"), Some("x-app"));
    assert_eq!(allowed.one("access-control-allow-credentials"), None);
    // Another origin: the app's answer is left as the app made it, but for the Vary.
    let other = setup.get("listed.example.test", Some(EVIL)).await;
    assert_eq!(other.one("vary"), Some("Accept-Encoding, Origin"));
    assert_eq!(
        other.one("access-control-allow-origin"),
        Some("https://app-set.example.test")
    );
    setup.gateway.stop().await;
}

#[tokio::test]
async fn an_app_without_cors_policy_forwards_preflights_as_before() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let answer = setup
        .preflight("plain.example.test", PORTAL, "PUT", None)
        .await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
    assert!(answer.has_no_cors_headers(), "{answer:?}");
    assert_eq!(answer.one("vary"), None);
    let received = String::from_utf8_lossy(&setup.plain_recording.bytes()).into_owned();
    assert!(
        received.starts_with("OPTIONS /things HTTP/1.1\r\n"),
        "{received}"
    );
    assert!(received.contains("access-control-request-method: PUT\r\n"));
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_require_app_answers_preflights_only_where_the_handshake_lets_them_in() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let headers = [("Origin", PORTAL), ("Access-Control-Request-Method", "PUT")];
    // The handshake demands a certificate: a preflight without one (Firefox, Safari) never
    // gets an answer; with one (Chromium sends it) certgate answers it.
    let without = setup
        .curl(
            "locked.example.test",
            "OPTIONS",
            "/x",
            &headers,
            false,
            false,
        )
        .await;
    assert!(without.is_none(), "{without:?}");
    let with = setup
        .curl(
            "locked.example.test",
            "OPTIONS",
            "/x",
            &headers,
            true,
            false,
        )
        .await
        .unwrap();
    assert_eq!(with.status, 204);
    assert_eq!(with.one("access-control-allow-origin"), Some(PORTAL));
    // With clientCertExclusionPaths the handshake asks without demanding: a preflight on any
    // path is answered without a certificate, the request itself is refused by certgate,
    // which the page can read.
    let preflight = setup
        .curl(
            "excluded.example.test",
            "OPTIONS",
            "/private",
            &headers,
            false,
            false,
        )
        .await
        .unwrap();
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.one("access-control-allow-origin"), Some(PORTAL));
    let refused = setup.get("excluded.example.test", Some(PORTAL)).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.one("access-control-allow-origin"), Some(PORTAL));
    assert_eq!(refused.one("vary"), Some("Origin"));
    assert_eq!(setup.recording.connections(), 0, "{}", setup.received());
    setup.gateway.stop().await;
}

#[tokio::test]
async fn authorization_refuses_the_request_and_never_its_preflight() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let preflight = setup
        .preflight("guarded.example.test", PORTAL, "POST", Some("content-type"))
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.one("access-control-allow-origin"), Some(PORTAL));
    let request = setup
        .curl(
            "guarded.example.test",
            "POST",
            "/things",
            &[("Origin", PORTAL)],
            true,
            false,
        )
        .await
        .unwrap();
    assert_eq!(request.status, 403, "{request:?}");
    assert!(request.body.contains("authorization rule 0"), "{request:?}");
    assert_eq!(request.one("access-control-allow-origin"), Some(PORTAL));
    assert_eq!(setup.recording.connections(), 0, "{}", setup.received());
    setup.gateway.stop().await;
}

#[tokio::test]
async fn preflights_are_counted_by_result() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let admin = setup.gateway.admin.unwrap();
    let before = scrape(admin).await;
    for result in ["allowed", "refused"] {
        let series = format!("certgate_cors_preflights_total{{app=\"api\",result=\"{result}\"}}");
        assert_eq!(metric(&before, &series), 0.0, "{series}");
    }
    assert!(
        !before.contains("certgate_cors_preflights_total{app=\"plain\""),
        "only apps with a corsPolicy have the series"
    );
    setup
        .preflight("api.example.test", PORTAL, "GET", None)
        .await;
    setup
        .preflight("api.example.test", PORTAL, "GET", None)
        .await;
    setup.preflight("api.example.test", EVIL, "GET", None).await;
    let after = scrape(admin).await;
    assert_eq!(
        metric(
            &after,
            "certgate_cors_preflights_total{app=\"api\",result=\"allowed\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &after,
            "certgate_cors_preflights_total{app=\"api\",result=\"refused\"}"
        ),
        1.0
    );
    assert!(
        after.contains("certgate_requests_total{app=\"api\",client_cert=\"none\",code=\"204\"} 3")
    );
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_reload_applies_a_changed_policy() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let before = setup.preflight("api.example.test", EVIL, "GET", None).await;
    assert!(before.has_no_cors_headers());
    let path = setup.gateway.dir.path().join("certgate.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["apps"][0]["ingress"]["corsPolicy"]["allowedOrigins"] = json!([PORTAL, EVIL]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    setup.gateway.reloader.reload().await.unwrap();
    let after = setup.preflight("api.example.test", EVIL, "GET", None).await;
    assert_eq!(after.one("access-control-allow-origin"), Some(EVIL));
    setup.gateway.stop().await;
}

/// Writes a config of one `accept` app with `cors` as its `corsPolicy` and runs `check`.
fn check_cors(cors: Value) -> std::process::Output {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut api = app(
        "api",
        &["api.example.test"],
        "127.0.0.1:8080".parse().unwrap(),
        "accept",
    );
    api["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    api["ingress"]["corsPolicy"] = cors;
    let config = json!({ "listen": "127.0.0.1:8443", "apps": [api] });
    let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    certgate(
        &["check", "--config", path.to_str().unwrap()],
        dir.path(),
        &[],
    )
}

#[test]
fn check_prints_the_policy_on_the_apps_line() {
    let (stdout, stderr) = exited(&check_cors(api_policy()), 0);
    assert_says(
        &stdout,
        &[
            "cors=origins https://portal.example.test, methods GET,POST,PUT, headers content-type,x-trace, expose x-request-id, max-age 600s, credentials yes",
        ],
        &[],
    );
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn credentials_with_a_star_origin_are_a_config_error() {
    let (_, stderr) = exited(
        &check_cors(json!({ "allowedOrigins": ["*"], "allowCredentials": true })),
        64,
    );
    assert_says(
        &stderr,
        &[
            "app \"api\"",
            "ingress.corsPolicy.allowCredentials is true with \"*\" in allowedOrigins",
            "list the origins that may send credentials",
        ],
        &[],
    );
}

#[test]
fn an_origin_with_a_path_is_a_config_error_that_shows_the_form() {
    let (_, stderr) = exited(
        &check_cors(json!({ "allowedOrigins": ["https://portal.example.test/"] })),
        64,
    );
    assert_says(
        &stderr,
        &[
            "\"https://portal.example.test/\" is not an origin",
            "scheme://host[:port]",
        ],
        &[],
    );
}

#[test]
fn expose_headers_star_with_credentials_is_a_warning() {
    let (_, stderr) = exited(
        &check_cors(json!({
            "allowedOrigins": [PORTAL], "allowedMethods": ["GET"],
            "exposeHeaders": ["*"], "allowCredentials": true
        })),
        0,
    );
    assert_says(
        &stderr,
        &["warning: app \"api\": ingress.corsPolicy.exposeHeaders \"*\" exposes nothing"],
        &[],
    );
}

#[test]
fn explain_shows_the_policy_and_who_gets_preflights_answered() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = "127.0.0.1:9".parse().unwrap();
    let mut locked = app("locked", &["locked.example.test"], upstream, "require");
    locked["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    locked["ingress"]["corsPolicy"] = api_policy();
    let config = json!({ "listen": "127.0.0.1:0", "apps": [locked] });
    let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    let cert = dir.write("alice.pem", pki.client("alice").chain_pem());
    let output = Command::new(process::BIN)
        .args([
            "explain",
            "--config",
            path.to_str().unwrap(),
            "--app",
            "locked",
        ])
        .args(["--format", "json", cert.to_str().unwrap()])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let cors = &json["cors"];
    assert_eq!(cors["allowed_origins"], PORTAL, "{json:#}");
    assert_eq!(cors["allowed_methods"], "GET,POST,PUT");
    assert_eq!(cors["max_age"], 600);
    assert_eq!(cors["allow_credentials"], true);
    assert!(
        cors["preflights"]
            .as_str()
            .unwrap()
            .contains("demands a certificate at the handshake"),
        "{json:#}"
    );
    let text = Command::new(process::BIN)
        .args([
            "explain",
            "--config",
            path.to_str().unwrap(),
            "--app",
            "locked",
        ])
        .arg(cert.to_str().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert_says(
        &text,
        &[
            "cors (ingress.corsPolicy)",
            "origins:     https://portal.example.test",
        ],
        &[],
    );
}

#[test]
fn the_documented_example_loads_with_its_policy() {
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cors.md"));
    let start = doc.find("```json\n").unwrap() + "```json\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let example: Value = serde_json::from_str(&doc[start..end]).unwrap();
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let config = json!({ "apps": [example] });
    let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    let config = load_config(&path).unwrap_or_else(|e| panic!("{}", certgate::error_chain(&e)));
    let described = config.apps[0].request_policy.describe();
    assert!(
        described.contains(
            "cors=origins https://portal.example.com, methods GET,POST,PUT, headers content-type,x-trace, expose x-request-id, max-age 600s, credentials yes"
        ),
        "{described}"
    );
}
