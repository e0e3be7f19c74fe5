//! docs/headers.md "X-Forwarded-Client-Cert": the `X-Forwarded-Client-Cert` header certgate sets, checked against values
//! built here independently of certgate (SHA-256 of the DER, the harness's `pem_of`, and a
//! reference URL-encoder and XFCC parser written in this file).
//!
//! Cases:
//! - The reference encoder and parser reproduce the examples of docs/headers.md.
//! - Golden: a CA-issued client's XFCC is exactly `Hash=<hex>;Cert="<enc>";Chain="<enc>"`, in
//!   `require` and `accept`, TLS 1.2 and 1.3, HTTP/1.1 and HTTP/2, on every request of a
//!   connection.
//! - A client issued by an intermediate (app trusts the root): `Chain` holds leaf then
//!   intermediate, `Cert` only the leaf.
//! - `forwardClientCert.fields` with `Subject`, `URI`, `DNS` (listed in reverse): a CN holding
//!   `"` `;` `,` `=` `\` and a URI SAN holding `;` `=` `,` parse to exactly one element with keys
//!   Hash, Cert, Chain, Subject, URI…, DNS… in that order, and Subject is `CN=` + the RFC 4514
//!   escaped CN.
//! - Control characters in the CN or a URI SAN never reach the header value.
//! - A non-ASCII (UTF-8) CN is forwarded in `Subject` (as UTF-8 or OpenSSL's `\XX` escapes).
//! - A BMPString CN is rendered as text in `Subject` (or RFC 4514 `#` + hex of the whole DER).
//! - Forged XFCC headers (two copies, other letter cases, `_` for `-`) in `require`, `accept`
//!   and `ignore`, with and without a client certificate, over HTTP/1.1 and HTTP/2: the app sees
//!   none, or exactly the real one; a look-alike name (`…-certs`) passes untouched.
//! - The same spellings written as raw HTTP/1.1 bytes in mixed case (hyper's client would
//!   lowercase them), with and without a certificate.
//! - `limits.maxXfccBytes`: a value of exactly the limit is forwarded; one byte less: 431 with a
//!   one-line `text/plain` body, and clients without a certificate are unaffected.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use common::raw::raw_http1;
use common::*;
use http::header::{HeaderName, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::Full;
use rustls::pki_types::CertificateDer;
use sha2::Digest as _;

const XFCC: &str = "x-forwarded-client-cert";

/// Envoy's URL-encoding, written out: every byte but `A-Z a-z 0-9 * - . _` becomes `%XX`
/// with uppercase hex.
fn envoy_encode(text: &str) -> String {
    let mut out = String::new();
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'*' | b'-' | b'.' | b'_') {
            out.push(char::from(byte));
        } else {
            write!(out, "%{byte:02X}").unwrap();
        }
    }
    out
}

/// The XFCC value docs/headers.md "X-Forwarded-Client-Cert" prescribes for a chain the client sent (leaf first).
fn expected_xfcc(chain: &[CertificateDer<'_>]) -> String {
    let hash = hex(&sha2::Sha256::digest(&chain[0]));
    let cert = envoy_encode(&pem_of(&chain[0]));
    let pems: String = chain.iter().map(|c| pem_of(c)).collect();
    let chain = envoy_encode(&pems);
    format!("Hash={hash};Cert=\"{cert}\";Chain=\"{chain}\"")
}

/// An XFCC value parsed the way a careful app reads it: elements separated by `,` and pairs
/// by `;`, both outside quotes; `key=value` or `key="value"`, where `\` escapes the next
/// character inside quotes. A bare value may not hold `"` or `=`.
type Element = Vec<(String, String)>;

fn parse_xfcc(value: &str) -> Result<Vec<Element>, String> {
    let mut elements = Vec::new();
    let mut pairs = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut key = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                Some(c @ (';' | ',' | '"' | '\\')) => {
                    return Err(format!("{c:?} inside key {key:?}"));
                }
                Some(c) => key.push(c),
                None => return Err(format!("key {key:?} has no value")),
            }
        }
        let mut text = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => text.push(chars.next().ok_or("escape at the end")?),
                    Some('"') => break,
                    Some(c) => text.push(c),
                    None => return Err(format!("unterminated quote in {key}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ';' | ',' => break,
                    '"' | '=' | '\\' => return Err(format!("bare {c:?} in the value of {key}")),
                    c => text.push(c),
                }
                chars.next();
            }
        }
        pairs.push((key, text));
        match chars.next() {
            None => {
                elements.push(pairs);
                return Ok(elements);
            }
            Some(';') => {}
            Some(',') => elements.push(std::mem::take(&mut pairs)),
            Some(c) => return Err(format!("{c:?} after a quoted value")),
        }
    }
}

/// RFC 4514 section 2.4 escaping of an attribute value, written out.
fn rfc4514_escape(value: &str) -> String {
    let last = value.chars().count() - 1;
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

/// Every header the app received whose name is XFCC read loosely (any case, `_` for `-`).
fn xfcc_like(reply: &Reply) -> Vec<(String, String)> {
    echo_xfcc_like(&reply.echo())
}

fn echo_xfcc_like(echo: &serde_json::Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_owned(),
                pair[1].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(name, _)| name.to_ascii_lowercase().replace('_', "-") == XFCC)
        .collect()
}

/// The one XFCC value the app received; fails on none or several.
fn single_xfcc(reply: &Reply, label: &str) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{label}: {:?}", reply.body);
    let all = xfcc_like(reply);
    assert_eq!(all.len(), 1, "{label}: XFCC headers at the app: {all:?}");
    assert_eq!(all[0].0, XFCC, "{label}");
    all[0].1.clone()
}

/// certgate in front of the echo upstream with `apps` (built by `make`) and optional limits.
async fn gateway(
    pki: &Pki,
    files: &[(&str, &str)],
    make: impl FnOnce(SocketAddr) -> Vec<serde_json::Value>,
    limits: Option<serde_json::Value>,
) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    for (name, contents) in files {
        dir.write(name, contents);
    }
    let upstream = echo_upstream().await;
    let mut config = serde_json::json!({ "apps": make(upstream) });
    if let Some(limits) = limits {
        config["limits"] = limits;
    }
    Gateway::start(dir, config).await
}

/// An app of `mode` trusting `ca_file` (`require`/`accept`) or nothing (`ignore`).
fn app_trusting(name: &str, upstream: SocketAddr, mode: &str, ca_file: &str) -> serde_json::Value {
    let host = format!("{name}.example.test");
    let mut entry = app(name, &[host.as_str()], upstream, mode);
    if mode != "ignore" {
        entry["clientAuth"] = serde_json::json!({ "trustedCaFiles": [ca_file] });
    }
    entry
}

/// certgate with one app per mode, named after it and at `<mode>.example.test`, the
/// `require` and `accept` apps trusting the client CA.
async fn gateway_of_every_mode(pki: &Pki) -> Gateway {
    gateway(
        pki,
        &[],
        |up| {
            ["require", "accept", "ignore"]
                .map(|mode| app_trusting(mode, up, mode, "client-ca.pem"))
                .to_vec()
        },
        None,
    )
    .await
}

fn label(mode: &str, tls12: bool, http2: bool) -> String {
    format!(
        "{mode} / {} / {}",
        if tls12 { "TLS 1.2" } else { "TLS 1.3" },
        if http2 { "HTTP/2" } else { "HTTP/1.1" }
    )
}

#[test]
fn the_reference_encoder_and_parser_follow_the_spec_examples() {
    assert_eq!(
        envoy_encode("a Z/+=\n*-._~\""),
        "a%20Z%2F%2B%3D%0A*-._%7E%22"
    );
    let parsed =
        parse_xfcc(r#"Hash=ab;Cert="x%0A";Subject="CN=a\\\"b\\;c",Hash=cd;URI=u"#).unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(
        parsed[0],
        [
            ("Hash".to_owned(), "ab".to_owned()),
            ("Cert".to_owned(), "x%0A".to_owned()),
            ("Subject".to_owned(), r#"CN=a\"b\;c"#.to_owned()),
        ]
    );
    assert_eq!(parsed[1][1], ("URI".to_owned(), "u".to_owned()));
    assert!(parse_xfcc("Hash=a\"b").is_err());
    assert_eq!(rfc4514_escape("# a\"b;c,d=e\\ "), r#"\# a\"b\;c\,d=e\\\ "#);
}

#[tokio::test]
async fn xfcc_of_a_ca_issued_client_is_exactly_hash_cert_chain() {
    let pki = Pki::new();
    let client = pki.client("golden client");
    let gateway = gateway(
        &pki,
        &[],
        |up| {
            vec![
                app_trusting("require", up, "require", "client-ca.pem"),
                app_trusting("accept", up, "accept", "client-ca.pem"),
            ]
        },
        None,
    )
    .await;
    let expected = expected_xfcc(&client.chain);
    assert!(expected.starts_with(&format!(
        "Hash={};Cert=\"-----BEGIN%20CERTIFICATE-----%0A",
        client.hash_hex()
    )));
    for mode in ["require", "accept"] {
        for tls12 in [false, true] {
            for http2 in [false, true] {
                let host = format!("{mode}.example.test");
                let options = ClientOptions::new(&pki, &host)
                    .with_identity(client.identity())
                    .tls12(tls12)
                    .http2(http2);
                let label = label(mode, tls12, http2);
                // The value is per connection: every request on it carries the same one.
                let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
                for path in ["/golden", "/golden-again"] {
                    let request = conn.get(&host, path);
                    let reply = conn.send(request).await.unwrap();
                    assert_eq!(single_xfcc(&reply, &label), expected, "{label} {path}");
                }
            }
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn xfcc_chain_holds_leaf_then_intermediate_and_cert_only_the_leaf() {
    let pki = Pki::new();
    let root = Ca::root("xfcc root CA");
    let intermediate = root.intermediate("xfcc intermediate CA");
    let client = intermediate.issue(LeafSpec::client("chained client"));
    assert_eq!(client.chain.len(), 2);
    assert_eq!(client.chain[1], intermediate.der);
    let gateway = gateway(
        &pki,
        &[("root.pem", &root.pem)],
        |up| vec![app_trusting("chained", up, "require", "root.pem")],
        None,
    )
    .await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "chained.example.test")
            .with_identity(client.identity())
            .http2(http2);
        let reply = get(gateway.addr, &options, "chained.example.test", "/chain")
            .await
            .unwrap();
        let xfcc = single_xfcc(&reply, "chained");
        assert_eq!(xfcc, expected_xfcc(&client.chain), "http2={http2}");

        let pairs = &parse_xfcc(&xfcc).unwrap()[0];
        let leaf_pem = envoy_encode(&pem_of(&client.chain[0]));
        let intermediate_pem = envoy_encode(&pem_of(&intermediate.der));
        assert_eq!(pairs[1], ("Cert".to_owned(), leaf_pem.clone()));
        assert_eq!(
            pairs[2],
            ("Chain".to_owned(), format!("{leaf_pem}{intermediate_pem}"))
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn optional_fields_come_after_hash_cert_chain_and_hostile_names_stay_one_element() {
    let pki = Pki::new();
    let common_name = r#"Evil "Corp"; a=b, c\d"#;
    let uris = [
        "spiffe://example.test/ns/a;b=c,d",
        "spiffe://example.test/plain",
    ];
    let dns = ["one.example.test", "two.example.test"];
    let client = pki.client_ca.issue(LeafSpec {
        uris: uris.map(String::from).to_vec(),
        dns: dns.map(String::from).to_vec(),
        ..LeafSpec::client(common_name)
    });
    let fields = ["DNS", "URI", "Subject", "Chain", "Cert", "Hash"];
    for http2 in [false, true] {
        let (_, xfcc, pairs) =
            forwarded(&pki, client.identity(), TRUST_CLIENT_CA, &fields, http2).await;
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "Hash", "Cert", "Chain", "Subject", "URI", "URI", "DNS", "DNS"
            ],
            "{xfcc}"
        );
        assert!(
            xfcc.starts_with(&expected_xfcc(&client.chain)),
            "the first three fields differ: {xfcc}"
        );
        assert_eq!(
            pairs[3].1,
            format!("CN={}", rfc4514_escape(common_name)),
            "{xfcc}"
        );
        assert_eq!(pairs[3].1, r#"CN=Evil \"Corp\"\; a=b\, c\\d"#);
        assert_eq!([pairs[4].1.as_str(), pairs[5].1.as_str()], uris);
        assert_eq!([pairs[6].1.as_str(), pairs[7].1.as_str()], dns);
    }
}

#[tokio::test]
async fn control_characters_in_certificate_names_never_reach_the_header() {
    let pki = Pki::new();
    let client = pki.client_ca.issue(LeafSpec {
        uris: vec!["spiffe://example.test/a\r\nInjected: 1".into()],
        ..LeafSpec::client("line1\r\nline2\0end\x7f")
    });
    let fields = ["Hash", "Subject", "URI"];
    for http2 in [false, true] {
        let (reply, xfcc, pairs) =
            forwarded(&pki, client.identity(), TRUST_CLIENT_CA, &fields, http2).await;
        assert!(
            reply.upstream_header("injected").is_empty(),
            "header injected"
        );
        assert!(
            !xfcc.bytes().any(|b| b < 0x20 || b == 0x7f),
            "control byte in {xfcc:?}"
        );
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["Hash", "Subject", "URI"], "{xfcc}");
        assert!(pairs[1].1.starts_with("CN=line1"), "{xfcc}");
    }
}

/// Forged headers a client adds; hyper lowercases the names on the wire.
const FORGED: [(&str, &str); 8] = [
    ("x-forwarded-client-cert", "Hash=forged-1"),
    ("x-forwarded-client-cert", "Hash=forged-2"),
    ("X-Forwarded-Client-Cert", "Hash=forged-title"),
    ("X-FORWARDED-CLIENT-CERT", "Hash=forged-upper"),
    ("x-forwarded-client_cert", "Hash=forged-one-underscore"),
    ("X-Forwarded-Client_Cert", "Hash=forged-mixed-underscore"),
    ("x_forwarded_client_cert", "Hash=forged-underscores"),
    ("X_FORWARDED_CLIENT_CERT", "Hash=forged-upper-underscores"),
];

fn forged_request(conn: &Connection, host: &str) -> Request<Full<Bytes>> {
    let mut request = conn.get(host, "/spoof");
    for (name, value) in FORGED {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static(value),
        );
    }
    request.headers_mut().append(
        HeaderName::from_static("x-forwarded-client-certs"),
        HeaderValue::from_static("look-alike"),
    );
    request
}

#[tokio::test]
async fn forged_xfcc_headers_never_reach_the_app_in_any_mode_or_http_version() {
    let pki = Pki::new();
    let client = pki.client("real client");
    let real = expected_xfcc(&client.chain);
    let gateway = gateway_of_every_mode(&pki).await;
    let mut wrong = Vec::new();
    for mode in ["require", "accept", "ignore"] {
        // `require` refuses clients without a certificate at the handshake (tests/integration/modes.rs).
        let with_cert: &[bool] = if mode == "require" {
            &[true]
        } else {
            &[false, true]
        };
        for &cert in with_cert {
            for http2 in [false, true] {
                let host = format!("{mode}.example.test");
                let mut options = ClientOptions::new(&pki, &host).http2(http2);
                if cert {
                    options = options.with_identity(client.identity());
                }
                let label = format!("{} / cert={cert}", label(mode, false, http2));
                let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
                let request = forged_request(&conn, &host);
                let reply = conn.send(request).await.unwrap();
                assert_eq!(reply.status, StatusCode::OK, "{label}");
                // `ignore` never asks, so the client never sends its certificate.
                let expected: Vec<(String, String)> = if cert && mode != "ignore" {
                    vec![(XFCC.to_owned(), real.clone())]
                } else {
                    Vec::new()
                };
                let seen = xfcc_like(&reply);
                if seen != expected {
                    wrong.push(format!("{label}: app saw {seen:?}"));
                }
                let look_alike = reply.upstream_header("x-forwarded-client-certs");
                if look_alike != ["look-alike"] {
                    wrong.push(format!("{label}: look-alike header became {look_alike:?}"));
                }
            }
        }
    }
    gateway.stop().await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn mixed_case_and_underscore_xfcc_spellings_sent_as_raw_http1_are_removed() {
    let pki = Pki::new();
    let client = pki.client("raw client");
    let real = expected_xfcc(&client.chain);
    let gateway = gateway_of_every_mode(&pki).await;
    for (mode, cert) in [
        ("require", true),
        ("accept", true),
        ("accept", false),
        ("ignore", false),
    ] {
        let host = format!("{mode}.example.test");
        let mut options = ClientOptions::new(&pki, &host);
        if cert {
            options = options.with_identity(client.identity());
        }
        let request = format!(
            "GET /raw HTTP/1.1\r\n\
             Host: {host}\r\n\
             X-FORWARDED-CLIENT-CERT: Hash=forged-upper\r\n\
             X-Forwarded-Client_Cert: Hash=forged-mixed-underscore\r\n\
             x_Forwarded_CLIENT_cert: Hash=forged-mixed-underscores\r\n\
             X-Forwarded-Client-Cert: Hash=forged-title\r\n\
             X-Forwarded-Client-Cert: Hash=forged-title-again\r\n\
             x-forwarded-client-cert: Hash=forged-lower\r\n\
             X-Forwarded-Client-Certs: look-alike\r\n\
             Connection: close\r\n\
             \r\n"
        );
        let reply = raw_http1(gateway.addr, &options, &request).await;
        let label = format!("{mode} / cert={cert}");
        assert_eq!(
            reply.status,
            200,
            "{label}: {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let echo: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let expected: Vec<(String, String)> = if cert {
            vec![(XFCC.to_owned(), real.clone())]
        } else {
            Vec::new()
        };
        assert_eq!(echo_xfcc_like(&echo), expected, "{label}");
        let look_alike: Vec<&serde_json::Value> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0] == "x-forwarded-client-certs")
            .collect();
        assert_eq!(look_alike.len(), 1, "{label}: {look_alike:?}");
        assert!(reply.headers.iter().all(|(n, _)| n != XFCC), "{label}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn an_xfcc_longer_than_max_xfcc_bytes_gets_431_and_one_of_exactly_the_limit_passes() {
    let pki = Pki::new();
    let client = pki.client("size client");
    let expected = expected_xfcc(&client.chain);
    let length = expected.len();
    let apps = |up| vec![app_trusting("accept", up, "accept", "client-ca.pem")];

    let at_limit = gateway(
        &pki,
        &[],
        apps,
        Some(serde_json::json!({ "maxXfccBytes": length })),
    )
    .await;
    let over_limit = gateway(
        &pki,
        &[],
        apps,
        Some(serde_json::json!({ "maxXfccBytes": length - 1 })),
    )
    .await;
    for http2 in [false, true] {
        let host = "accept.example.test";
        let with_cert = ClientOptions::new(&pki, host)
            .with_identity(client.identity())
            .http2(http2);
        let without_cert = ClientOptions::new(&pki, host).http2(http2);
        let label = format!("http2={http2}");

        let reply = get(at_limit.addr, &with_cert, host, "/size").await.unwrap();
        assert_eq!(single_xfcc(&reply, &label), expected, "{label}");

        let reply = get(over_limit.addr, &with_cert, host, "/size")
            .await
            .unwrap();
        assert_certgate_error(&reply, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &label);

        let reply = get(over_limit.addr, &without_cert, host, "/size")
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{label}: no certificate");
        assert!(xfcc_like(&reply).is_empty(), "{label}");
    }
    at_limit.stop().await;
    over_limit.stop().await;
}

/// `clientAuth` trusting the client CA of `Pki::write`.
const TRUST_CLIENT_CA: &str = r#"{ "trustedCaFiles": ["client-ca.pem"] }"#;

/// What a `require` app with `clientAuth` `trust` (JSON) and forwarding `fields` receives
/// from a client presenting `identity`, over HTTP/2 or HTTP/1.1: the reply, its one XFCC
/// value, and that value's one element.
async fn forwarded(
    pki: &Pki,
    identity: Identity,
    trust: &str,
    fields: &[&str],
    http2: bool,
) -> (Reply, String, Element) {
    let gateway = gateway(
        pki,
        &[],
        |up| {
            let mut entry = app("fields", &["fields.example.test"], up, "require");
            entry["clientAuth"] = serde_json::from_str(trust).unwrap();
            entry["forwardClientCert"] = serde_json::json!({ "fields": fields });
            vec![entry]
        },
        None,
    )
    .await;
    let options = ClientOptions::new(pki, "fields.example.test")
        .with_identity(identity)
        .http2(http2);
    let reply = get(gateway.addr, &options, "fields.example.test", "/fields")
        .await
        .unwrap();
    gateway.stop().await;
    let xfcc = single_xfcc(&reply, &format!("fields {fields:?}, http2 {http2}"));
    let mut elements = parse_xfcc(&xfcc).unwrap_or_else(|e| panic!("{e}: {xfcc}"));
    assert_eq!(elements.len(), 1, "{xfcc}");
    let element = elements.remove(0);
    (reply, xfcc, element)
}

/// The `Subject` of a one-element XFCC from an app sending `Hash` and `Subject`.
async fn forwarded_subject(pki: &Pki, identity: Identity, trust: &str) -> String {
    let (_, xfcc, pairs) = forwarded(pki, identity, trust, &["Hash", "Subject"], false).await;
    assert_eq!(pairs[1].0, "Subject", "{xfcc}");
    pairs[1].1.clone()
}

#[tokio::test]
async fn a_non_ascii_common_name_is_forwarded_in_the_subject() {
    let pki = Pki::new();
    let client = pki.client("Zoë Müller");
    let subject = forwarded_subject(&pki, client.identity(), TRUST_CLIENT_CA).await;
    // RFC 4514 keeps UTF-8; OpenSSL's RFC 2253 printer (so Envoy) escapes each byte.
    assert!(
        [r"CN=Zoë Müller", r"CN=Zo\C3\AB M\C3\BCller"].contains(&subject.as_str()),
        "{subject:?}"
    );
}

#[tokio::test]
async fn a_bmp_string_common_name_is_rendered_as_its_text_in_the_subject() {
    let pki = Pki::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        rcgen::DnValue::BmpString("bmp user".try_into().unwrap()),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let cert = params.self_signed(&key).unwrap();
    let identity = Identity {
        chain: vec![cert.der().clone()],
        key: std::sync::Arc::new(rustls::pki_types::PrivateKeyDer::Pkcs8(
            key.serialize_der().into(),
        )),
    };
    let pin = hex(&sha2::Sha256::digest(cert.der()));
    let trust = serde_json::json!({ "allowedHashes": [pin] }).to_string();
    let subject = forwarded_subject(&pki, identity, &trust).await;
    // CN has a string syntax, so RFC 2253/4514 section 2.4 (and OpenSSL, so Envoy) print
    // the text; `#` + hex is only for unknown types and then covers the whole DER
    // (tag 1E, length 10, UTF-16BE).
    let whole_der = "CN=#1e100062006d007000200075007300650072";
    assert!(
        subject == "CN=bmp user" || subject == whole_der,
        "Subject {subject:?}, expected \"CN=bmp user\" (or {whole_der:?})"
    );
}
