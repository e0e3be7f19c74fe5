//! docs/modes.md (routing): the app is chosen by the ClientHello's SNI, and every request's authority
//! (`Host` or `:authority`) must select that same app, or certgate answers 421 itself.
//!
//! Cases:
//! - SNI of an `ignore` app, `Host` of a `require` app on the same HTTP/1.1 connection: 421,
//!   and the `require` app's upstream never sees the request.
//! - The same over HTTP/2, with `:authority` naming the `require` app: 421, never forwarded.
//! - `Host`/`:authority` in upper case, with a trailing dot, with a `:port`, naming the
//!   connection's own app: served (200), over HTTP/1.1 and HTTP/2.
//! - The same forms naming another app: 421, never forwarded.
//! - A `Host` that names no app on a connection to a named app: 421, with or without a
//!   catch-all app (the catch-all is another app).
//! - An exact host wins over a wildcard, both for SNI and for `Host`: crossing between them
//!   on one connection is 421.
//! - No SNI with a catch-all app: served by the catch-all; a `Host` of a named app on that
//!   connection: 421.
//! - No SNI without a catch-all app: handshake refused with `unrecognized_name` (TLS 1.2, 1.3).
//! - Unknown SNI without a catch-all app: refused the same way.
//! - Unknown SNI with a catch-all app: served by the catch-all.
//! - Two `require` apps with different client CAs: a client verified under app A's SNI sending
//!   `Host` of app B (the coalescing attack): 421 over HTTP/1.1 and HTTP/2, never forwarded.
//! - SNI in upper case selects the app; another app's `Host` on it: 421.
//! - Wildcard app `*.pay.example.test`: SNI `a.pay…`, `Host` `b.pay…` on the same connection:
//!   200; `Host` `x.y.pay…` (two labels): 421.
//! - HTTP/1.1 without `Host`: 400 (hyper's client is checked to send no `Host`).
//! - HTTP/1.1 with two `Host` headers, equal or not: 400.
//! - HTTP/1.1 absolute-form target disagreeing with `Host`: 400 (agreeing: 200).
//! - HTTP/2 `:authority` and a `host` header that disagree: 400 (agreeing: 200).
//!
//! Every 400 and 421 has a one-line `text/plain` body.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::AlertDescription;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};

/// The paths an upstream has received, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 upstream that records every request's path and answers `"<name> <path>"`.
async fn recording_upstream(name: &'static str) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let addr = common::serve::serve_each(move |tcp| {
        let log = log.clone();
        async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let path = request.uri().path().to_owned();
                log.0.lock().unwrap().push(path.clone());
                async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        "{name} {path}"
                    )))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    })
    .await;
    (addr, seen)
}

/// One app of a test config.
struct AppSpec {
    name: &'static str,
    hosts: &'static [&'static str],
    mode: &'static str,
    /// The trusted CA file for `require`/`accept` apps.
    ca: &'static str,
}

const fn spec(name: &'static str, hosts: &'static [&'static str], mode: &'static str) -> AppSpec {
    AppSpec {
        name,
        hosts,
        mode,
        ca: "client-ca.pem",
    }
}

struct Routes {
    gateway: Gateway,
    /// What each app's upstream received, by app name.
    seen: HashMap<&'static str, Seen>,
}

/// Starts certgate with `apps`, each with its own recording upstream; `files` are written
/// next to the config first.
async fn start(pki: &Pki, apps: &[AppSpec], files: &[(&str, &str)]) -> Routes {
    let dir = TempDir::new();
    pki.write(&dir);
    for (name, contents) in files {
        dir.write(name, contents);
    }
    let mut seen = HashMap::new();
    let mut json = Vec::new();
    for spec in apps {
        let (upstream, log) = recording_upstream(spec.name).await;
        seen.insert(spec.name, log);
        let mut entry = app(spec.name, spec.hosts, upstream, spec.mode);
        if spec.mode != "ignore" {
            entry["clientAuth"] = serde_json::json!({ "trustedCaFiles": [spec.ca] });
        }
        json.push(entry);
    }
    let gateway = Gateway::start(dir, serde_json::json!({ "apps": json })).await;
    Routes { gateway, seen }
}

/// The usual pair: an `ignore` app and a `require` app.
const OPEN_AND_SECURE: [AppSpec; 2] = [
    spec("open", &["open.example.test"], "ignore"),
    spec("secure", &["secure.example.test"], "require"),
];

fn version(http2: bool) -> &'static str {
    if http2 { "HTTP/2" } else { "HTTP/1.1" }
}

async fn open(routes: &Routes, options: &ClientOptions) -> Connection {
    Connection::open(routes.gateway.addr, options)
        .await
        .unwrap_or_else(|f| panic!("handshake refused: {}", f.message))
}

/// Sends a GET for `authority` + `path` on `conn` and reads the whole reply.
async fn send(conn: &mut Connection, authority: &str, path: &str) -> Reply {
    let request = conn.get(authority, path);
    send_request(conn, request).await
}

async fn send_request(conn: &mut Connection, request: Request<Full<Bytes>>) -> Reply {
    let what = format!("{} {:?}", request.uri(), request.headers());
    conn.send(request)
        .await
        .unwrap_or_else(|f| panic!("no response to {what}: {}", f.message))
}

/// The reply came from the app `name`'s upstream for `path`.
fn assert_served(reply: &Reply, name: &str, path: &str, label: &str) {
    assert_eq!(
        (
            reply.status,
            String::from_utf8_lossy(&reply.body).into_owned()
        ),
        (StatusCode::OK, format!("{name} {path}")),
        "{label}: not served by {name}"
    );
}

/// What certgate must do with one request of a case.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Forwarded to the upstream of the app of this name.
    Served(&'static str),
    /// Answered 421 by certgate itself.
    Misdirected,
}

use Outcome::{Misdirected, Served};

/// Opens one connection with `options` and sends, in order, a GET per step (`authority`,
/// `path`, what certgate must do with it); each assertion names the HTTP version, the
/// authority and the path.
async fn assert_steps(routes: &Routes, options: &ClientOptions, steps: &[(&str, &str, Outcome)]) {
    let mut conn = open(routes, options).await;
    for &(authority, path, outcome) in steps {
        let reply = send(&mut conn, authority, path).await;
        let label = format!("{} {authority}{path}", version(options.http2));
        match outcome {
            Served(name) => assert_served(&reply, name, path, &label),
            Misdirected => assert_certgate_error(&reply, StatusCode::MISDIRECTED_REQUEST, &label),
        }
    }
}

/// On a connection made for the `open` (ignore) app, a request whose `Host` (HTTP/1.1) or
/// `:authority` (HTTP/2) names the `secure` (require) app, between two requests for `open`, gets 421
/// and never reaches `secure`; the connection keeps serving `open`.
async fn assert_require_app_on_ignore_connection_gets_421(http2: bool) {
    let pki = Pki::new();
    let routes = start(&pki, &OPEN_AND_SECURE, &[]).await;
    let options = ClientOptions::new(&pki, "open.example.test").http2(http2);
    let steps = [
        ("open.example.test", "/before", Served("open")),
        ("secure.example.test", "/secret", Misdirected),
        ("open.example.test", "/after", Served("open")),
    ];
    assert_steps(&routes, &options, &steps).await;

    assert_eq!(routes.seen["secure"].paths(), Vec::<String>::new());
    assert_eq!(routes.seen["open"].paths(), ["/before", "/after"]);
}

#[tokio::test]
async fn host_of_a_require_app_on_a_connection_made_for_an_ignore_app_gets_421_over_http1() {
    assert_require_app_on_ignore_connection_gets_421(false).await;
}

#[tokio::test]
async fn authority_of_a_require_app_on_an_http2_connection_made_for_an_ignore_app_gets_421() {
    assert_require_app_on_ignore_connection_gets_421(true).await;
}

/// Upper case, trailing dot, port, and all three at once.
const OPEN_FORMS: [&str; 5] = [
    "OPEN.EXAMPLE.TEST",
    "open.example.test.",
    "open.example.test:443",
    "open.example.test:8443",
    "Open.Example.TEST.:8443",
];

const SECURE_FORMS: [&str; 5] = [
    "SECURE.EXAMPLE.TEST",
    "secure.example.test.",
    "secure.example.test:443",
    "secure.example.test:8443",
    "Secure.Example.TEST.:8443",
];

#[tokio::test]
async fn host_in_upper_case_with_trailing_dot_or_port_naming_the_own_app_is_served() {
    let pki = Pki::new();
    let routes = start(&pki, &OPEN_AND_SECURE, &[]).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "open.example.test").http2(http2);
        let paths: Vec<String> = (0..OPEN_FORMS.len()).map(|i| format!("/form{i}")).collect();
        let steps: Vec<_> = OPEN_FORMS
            .iter()
            .zip(&paths)
            .map(|(form, path)| (*form, path.as_str(), Served("open")))
            .collect();
        assert_steps(&routes, &options, &steps).await;
    }
    assert_eq!(routes.seen["open"].paths().len(), 2 * OPEN_FORMS.len());
}

#[tokio::test]
async fn host_in_upper_case_with_trailing_dot_or_port_naming_another_app_gets_421() {
    let pki = Pki::new();
    let routes = start(&pki, &OPEN_AND_SECURE, &[]).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "open.example.test").http2(http2);
        let steps = SECURE_FORMS.map(|form| (form, "/secret", Misdirected));
        assert_steps(&routes, &options, &steps).await;
    }
    assert_eq!(routes.seen["secure"].paths(), Vec::<String>::new());
    assert_eq!(routes.seen["open"].paths(), Vec::<String>::new());
}

#[tokio::test]
async fn host_naming_no_app_on_a_connection_to_a_named_app_gets_421() {
    let pki = Pki::new();
    let routes = start(&pki, &OPEN_AND_SECURE, &[]).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "open.example.test").http2(http2);
        assert_steps(
            &routes,
            &options,
            &[("nowhere.example.test", "/", Misdirected)],
        )
        .await;
    }
    assert_eq!(routes.seen["open"].paths(), Vec::<String>::new());
}

const WITH_CATCH_ALL: [AppSpec; 2] = [
    spec("fallback", &[], "ignore"),
    spec("secure", &["secure.example.test"], "require"),
];

#[tokio::test]
async fn without_sni_the_catch_all_app_serves_and_a_named_apps_host_gets_421() {
    let pki = Pki::new();
    let routes = start(&pki, &WITH_CATCH_ALL, &[]).await;
    for http2 in [false, true] {
        let mut options = ClientOptions::new(&pki, "unused").http2(http2);
        options.sni = None;
        let steps = [
            ("localhost", "/localhost", Served("fallback")),
            (
                "anything.example.test:8443",
                "/anything",
                Served("fallback"),
            ),
            ("secure.example.test", "/secret", Misdirected),
        ];
        assert_steps(&routes, &options, &steps).await;
    }
    assert_eq!(routes.seen["secure"].paths(), Vec::<String>::new());
    assert_eq!(
        routes.seen["fallback"].paths(),
        ["/localhost", "/anything", "/localhost", "/anything"]
    );
}

/// Asserts that handshakes sending `sni` (`None`: no SNI) to a gateway without a catch-all
/// app are refused with `unrecognized_name`, over TLS 1.3 and TLS 1.2.
async fn assert_refused_with_unrecognized_name(sni: Option<&str>) {
    let pki = Pki::new();
    let routes = start(&pki, &OPEN_AND_SECURE, &[]).await;
    for tls12 in [false, true] {
        let mut options = ClientOptions::new(&pki, "unused").tls12(tls12);
        options.sni = sni.map(str::to_owned);
        let failure = Connection::open(routes.gateway.addr, &options)
            .await
            .err()
            .unwrap_or_else(|| panic!("tls12={tls12}: handshake with SNI {sni:?} accepted"));
        assert_eq!(
            failure.alert,
            Some(AlertDescription::UnrecognisedName),
            "tls12={tls12}: {}",
            failure.message
        );
    }
}

#[tokio::test]
async fn without_sni_and_without_a_catch_all_the_handshake_is_refused_with_unrecognized_name() {
    assert_refused_with_unrecognized_name(None).await;
}

#[tokio::test]
async fn unknown_sni_without_a_catch_all_is_refused_with_unrecognized_name() {
    assert_refused_with_unrecognized_name(Some("unknown.example.test")).await;
}

#[tokio::test]
async fn unknown_sni_with_a_catch_all_is_served_by_the_catch_all() {
    let pki = Pki::new();
    let routes = start(&pki, &WITH_CATCH_ALL, &[]).await;
    let options = ClientOptions::new(&pki, "unknown.example.test");
    let mut conn = open(&routes, &options).await;
    let reply = send(&mut conn, "unknown.example.test", "/unknown").await;
    assert_served(&reply, "fallback", "/unknown", "unknown SNI");
}

#[tokio::test]
async fn a_client_verified_for_one_require_app_cannot_reach_another_require_app_by_host() {
    let pki = Pki::new();
    let ca_a = Ca::root("app A clients");
    let ca_b = Ca::root("app B clients");
    let client_a = ca_a.issue(LeafSpec::client("client of A"));
    let apps = [
        AppSpec {
            ca: "ca-a.pem",
            ..spec("app-a", &["a.example.test"], "require")
        },
        AppSpec {
            ca: "ca-b.pem",
            ..spec("app-b", &["b.example.test"], "require")
        },
    ];
    let routes = start(
        &pki,
        &apps,
        &[("ca-a.pem", &ca_a.pem), ("ca-b.pem", &ca_b.pem)],
    )
    .await;

    // The attack only means something if B refuses A's client on its own SNI.
    let direct = ClientOptions::new(&pki, "b.example.test").with_identity(client_a.identity());
    let refused = get(routes.gateway.addr, &direct, "b.example.test", "/direct").await;
    assert!(refused.is_err(), "app B accepted a client of CA A");

    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "a.example.test")
            .with_identity(client_a.identity())
            .http2(http2);
        let steps = [
            ("a.example.test", "/own", Served("app-a")),
            ("b.example.test", "/secret", Misdirected),
        ];
        assert_steps(&routes, &options, &steps).await;
    }
    assert_eq!(routes.seen["app-b"].paths(), Vec::<String>::new());
    assert_eq!(routes.seen["app-a"].paths(), ["/own", "/own"]);
}

#[tokio::test]
async fn another_name_under_the_same_wildcard_is_served_on_the_same_connection() {
    let pki = Pki::new();
    let routes = start(&pki, &[spec("pay", &["*.pay.example.test"], "ignore")], &[]).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "a.pay.example.test").http2(http2);
        let steps = [
            ("b.pay.example.test", "/b", Served("pay")),
            ("B.Pay.Example.Test.:443", "/b2", Served("pay")),
        ];
        assert_steps(&routes, &options, &steps).await;
    }
}

#[tokio::test]
async fn a_name_two_labels_below_the_wildcard_gets_421() {
    let pki = Pki::new();
    let routes = start(&pki, &[spec("pay", &["*.pay.example.test"], "ignore")], &[]).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "a.pay.example.test").http2(http2);
        let steps = [
            ("x.y.pay.example.test", "/deep", Misdirected),
            ("pay.example.test", "/bare", Misdirected),
        ];
        assert_steps(&routes, &options, &steps).await;
    }
    assert_eq!(routes.seen["pay"].paths(), Vec::<String>::new());
}

/// The request head hyper's HTTP/1.1 client writes for `request`, captured on a plain socket.
async fn http1_wire_head(request: Request<Full<Bytes>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let _ = sender.send_request(request).await;
    });
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "hyper closed before finishing the head");
        head.extend_from_slice(&buf[..n]);
    }
    drop(socket);
    let _ = client.await;
    String::from_utf8(head).unwrap()
}

/// Lines of a captured head whose header name is `name` (any case).
fn head_lines<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// Sends `GET target` with one `Host` header per entry of `hosts` to certgate over HTTP/1.1
/// (to the `open` app), after checking that hyper writes exactly that request line and those
/// Host lines.
async fn http1_hyper_case(target: &str, hosts: &[&str]) -> (Reply, Routes) {
    let make = || {
        let mut request = Request::get(target);
        for host in hosts {
            request = request.header("host", *host);
        }
        request.body(Full::new(Bytes::new())).unwrap()
    };
    let head = http1_wire_head(make()).await;
    let request_line = format!("GET {target} HTTP/1.1");
    assert_eq!(
        head.split("\r\n").next(),
        Some(request_line.as_str()),
        "{head}"
    );
    let host_lines: Vec<String> = hosts.iter().map(|host| format!("host: {host}")).collect();
    assert_eq!(
        head_lines(&head, "host"),
        host_lines,
        "hyper wrote {head:?}"
    );

    let pki = Pki::new();
    let routes = start(&pki, &OPEN_AND_SECURE, &[]).await;
    let options = ClientOptions::new(&pki, "open.example.test");
    let mut conn = open(&routes, &options).await;
    let reply = send_request(&mut conn, make()).await;
    (reply, routes)
}

/// [`http1_hyper_case`] for a request certgate must answer 400 itself: no app sees it.
async fn assert_http1_gets_400(target: &str, hosts: &[&str], label: &str) {
    let (reply, routes) = http1_hyper_case(target, hosts).await;
    assert_certgate_error(&reply, StatusCode::BAD_REQUEST, label);
    for app in ["open", "secure"] {
        assert_eq!(
            routes.seen[app].paths(),
            Vec::<String>::new(),
            "{label}: {app}"
        );
    }
}

#[tokio::test]
async fn an_http1_request_without_host_gets_400() {
    assert_http1_gets_400("/nohost", &[], "no Host").await;
}

#[tokio::test]
async fn an_http1_request_with_two_different_host_headers_gets_400() {
    let hosts = ["open.example.test", "secure.example.test"];
    assert_http1_gets_400("/twohosts", &hosts, "two Host headers").await;
}

#[tokio::test]
async fn an_http1_request_with_two_identical_host_headers_gets_400() {
    let hosts = ["open.example.test", "open.example.test"];
    assert_http1_gets_400("/twohosts", &hosts, "two equal Host headers").await;
}

#[tokio::test]
async fn an_http1_absolute_form_target_disagreeing_with_host_gets_400() {
    let target = "https://secure.example.test/absolute";
    assert_http1_gets_400(target, &["open.example.test"], "absolute-form vs Host").await;
}

#[tokio::test]
async fn an_http1_absolute_form_target_agreeing_with_host_is_served() {
    let target = "https://open.example.test/absolute";
    let (reply, _routes) = http1_hyper_case(target, &["open.example.test"]).await;
    assert_served(
        &reply,
        "open",
        "/absolute",
        "absolute-form agreeing with Host",
    );
}

/// An HTTP/2 request with `:authority` from the URI and a separate `host` header.
fn h2_with_host(authority: &str, host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://{authority}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn an_http2_host_header_disagreeing_with_authority_gets_400() {
    let pki = Pki::new();
    let routes = start(&pki, &OPEN_AND_SECURE, &[]).await;
    let options = ClientOptions::new(&pki, "open.example.test").http2(true);
    let mut conn = open(&routes, &options).await;

    // Agreeing: served, which also shows hyper sends the `host` header along.
    let agree = h2_with_host("open.example.test", "open.example.test", "/agree");
    let reply = send_request(&mut conn, agree).await;
    assert_served(&reply, "open", "/agree", ":authority = host");

    for (authority, host) in [
        ("open.example.test", "secure.example.test"),
        ("secure.example.test", "open.example.test"),
        ("open.example.test", "other.example.test"),
    ] {
        let request = h2_with_host(authority, host, "/disagree");
        let reply = send_request(&mut conn, request).await;
        let label = format!(":authority {authority} vs host {host}");
        assert_certgate_error(&reply, StatusCode::BAD_REQUEST, &label);
    }
    assert_eq!(routes.seen["open"].paths(), ["/agree"]);
    assert_eq!(routes.seen["secure"].paths(), Vec::<String>::new());
}

#[tokio::test]
async fn sni_in_upper_case_selects_the_app_by_its_lowercase_host() {
    let pki = Pki::new();
    let routes = start(&pki, &OPEN_AND_SECURE, &[]).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "OPEN.Example.TEST").http2(http2);
        let steps = [
            ("open.example.test", "/upper-sni", Served("open")),
            ("secure.example.test", "/secret", Misdirected),
        ];
        assert_steps(&routes, &options, &steps).await;
    }
    assert_eq!(routes.seen["secure"].paths(), Vec::<String>::new());
}

#[tokio::test]
async fn host_naming_no_app_on_a_named_apps_connection_gets_421_even_with_a_catch_all() {
    let pki = Pki::new();
    let apps = [
        spec("fallback", &[], "ignore"),
        spec("open", &["open.example.test"], "ignore"),
    ];
    let routes = start(&pki, &apps, &[]).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "open.example.test").http2(http2);
        let steps = [
            ("nowhere.example.test", "/nowhere", Misdirected),
            ("open.example.test", "/open", Served("open")),
        ];
        assert_steps(&routes, &options, &steps).await;
    }
    assert_eq!(routes.seen["fallback"].paths(), Vec::<String>::new());
}

#[tokio::test]
async fn an_exact_host_wins_over_a_wildcard_in_both_sni_and_host() {
    let pki = Pki::new();
    let apps = [
        spec("exact", &["a.pay.example.test"], "ignore"),
        spec("wild", &["*.pay.example.test"], "ignore"),
    ];
    let routes = start(&pki, &apps, &[]).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "a.pay.example.test").http2(http2);
        let steps = [
            ("A.pay.example.test.", "/exact", Served("exact")),
            ("b.pay.example.test", "/wild", Misdirected),
        ];
        assert_steps(&routes, &options, &steps).await;

        let options = ClientOptions::new(&pki, "b.pay.example.test").http2(http2);
        let steps = [
            ("c.pay.example.test", "/wild", Served("wild")),
            ("a.pay.example.test", "/exact", Misdirected),
        ];
        assert_steps(&routes, &options, &steps).await;
    }
    assert_eq!(routes.seen["exact"].paths(), ["/exact", "/exact"]);
    assert_eq!(routes.seen["wild"].paths(), ["/wild", "/wild"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_server_name_is_logged_with_what_to_do() {
    let pki = Pki::new();
    let (dir, config) = common::apps::ignore_app_config(&pki, serde_json::json!({})).await;
    let (mut child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    for (sni, says) in [
        (
            None,
            "the client sent no server name (SNI), as when it connects by IP address",
        ),
        (
            Some("unknown.example.test"),
            "no app lists this name in its hosts and there is no app without hosts",
        ),
    ] {
        let mut options = ClientOptions::new(&pki, "unused");
        options.sni = sni.map(str::to_owned);
        assert!(Connection::open(serving.listen(), &options).await.is_err());
        let lines = child.wait_for_line(process::Stream::Stderr, |line| {
            line.contains("\"failure\":\"unknown_sni\"")
        });
        let line = lines.last().unwrap();
        assert!(line.contains(says), "SNI {sni:?}: {line}");
    }
}
