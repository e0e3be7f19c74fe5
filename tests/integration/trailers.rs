//! Request trailers (docs/forwarding.md): they go through the stripping headers go through.
//! Every certificate header in every spelling (`x-forwarded-client-cert`, `client-cert`,
//! `x-client-verify: SUCCESS`, ALB and Azure names, `_` for `-`) and every hop-by-hop field is
//! removed from a trailer section; other trailers reach the app.
//! - HTTP/1.1 chunked trailers -> an h2c app (raw-socket, recording the decoded fields);
//! - HTTP/2 trailers -> an h2c app;
//! - HTTP/2 trailers -> an HTTP/1.1 app (raw-socket, recording every byte): nothing forged.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::raw::raw_http1;
use common::raw_h2c::{H2cRequest, raw_h2c_upstream};
use common::recording::raw_upstream;
use common::*;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

const HOST: &str = "ignore.example.test";

/// Certificate headers a client must never get to the app, in trailers as in headers.
const FORGED: [(&str, &str); 7] = [
    ("x-forwarded-client-cert", "Hash=forged"),
    ("x_forwarded_client_cert", "Hash=forged"),
    ("client-cert", ":Zm9yZ2Vk:"),
    ("client_cert_chain", ":Zm9yZ2Vk:"),
    ("x-client-verify", "SUCCESS"),
    ("x-amzn-mtls-clientcert-leaf", "forged"),
    ("x-arr-clientcert", "forged"),
];

/// certgate with one `ignore` app (no client certificate, so any certificate header the app
/// sees is forged) in front of `upstream` over `transport`.
async fn gateway(pki: &Pki, upstream: std::net::SocketAddr, transport: &str) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    let mut ignore = app("ignore", &[HOST], upstream, "ignore");
    ignore["ingress"]["transport"] = transport.into();
    Gateway::start(dir, serde_json::json!({ "apps": [ignore] })).await
}

/// Asserts that `request` carries the body and the `x-checksum` trailer, and no certificate
/// or hop-by-hop field anywhere.
fn assert_clean(request: &H2cRequest) {
    assert_eq!(request.body, b"hello", "{request:?}");
    assert_eq!(request.values("x-checksum"), ["1234"], "{request:?}");
    for (name, value) in &request.fields {
        let dashed = name.replace('_', "-");
        let forged =
            FORGED.iter().any(|(f, _)| f.replace('_', "-") == dashed) || value.contains("forged");
        let hop_by_hop = [
            "connection",
            "x-named",
            "keep-alive",
            "te",
            "proxy-authorization",
            "trailer",
        ]
        .contains(&dashed.as_str());
        assert!(!forged && !hop_by_hop, "{name}: {value} reached the app");
    }
}

#[tokio::test]
async fn http1_chunked_trailers_reach_an_h2c_app_without_certificate_or_hop_by_hop_fields() {
    let pki = Pki::new();
    let (upstream, recording) = raw_h2c_upstream().await;
    let gateway = gateway(&pki, upstream, "http2").await;
    let mut trailers = String::from("x-checksum: 1234\r\n");
    for (name, value) in FORGED {
        trailers.push_str(&format!("{name}: {value}\r\n"));
    }
    trailers.push_str(
        "connection: x-named\r\nx-named: 1\r\nkeep-alive: timeout=5\r\nte: trailers\r\n\
         proxy-authorization: Basic Zm9yZ2Vk\r\n",
    );
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\
         Trailer: x-checksum, x-forwarded-client-cert\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n0\r\n{trailers}\r\n"
    );
    let reply = raw_http1(gateway.addr, &ClientOptions::new(&pki, HOST), &request).await;
    assert_eq!(reply.status, 200, "{:?}", reply.text());
    assert_clean(&recording.single());
    gateway.stop().await;
}

#[tokio::test]
async fn http2_trailers_reach_an_h2c_app_without_certificate_fields() {
    let pki = Pki::new();
    let (upstream, recording) = raw_h2c_upstream().await;
    let gateway = gateway(&pki, upstream, "http2").await;
    let status = post_with_trailers(&gateway, &pki).await;
    assert_eq!(status, 200);
    assert_clean(&recording.single());
    gateway.stop().await;
}

#[tokio::test]
async fn http2_trailers_never_bring_certificate_fields_to_an_http1_app() {
    let pki = Pki::new();
    let (upstream, recording) = raw_upstream().await;
    let gateway = gateway(&pki, upstream, "http").await;
    let status = post_with_trailers(&gateway, &pki).await;
    assert_eq!(status, 200);
    let received = String::from_utf8(recording.bytes()).unwrap();
    assert!(received.contains("hello"), "{received}");
    let lowercase = received.to_ascii_lowercase().replace('_', "-");
    for (name, _) in FORGED {
        assert!(
            !lowercase.contains(&format!("{}:", name.replace('_', "-"))),
            "{name} reached the app: {received}"
        );
    }
    assert!(!lowercase.contains("forged"), "{received}");
    gateway.stop().await;
}

/// POSTs `hello` over HTTP/2 with trailers: `x-checksum`, every certificate header of
/// `FORGED`, and `proxy-authorization` (hop-by-hop, yet not one HTTP/2 itself refuses); the
/// response status.
async fn post_with_trailers(gateway: &Gateway, pki: &Pki) -> u16 {
    let options = ClientOptions::new(pki, HOST).http2(true);
    let tls = tls_stream(gateway.addr, &options).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut trailers = HeaderMap::new();
    trailers.append("x-checksum", HeaderValue::from_static("1234"));
    for (name, value) in FORGED {
        trailers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    trailers.append(
        "proxy-authorization",
        HeaderValue::from_static("Basic Zm9yZ2Vk"),
    );
    let body = Frames(VecDeque::from([
        Frame::data(Bytes::from_static(b"hello")),
        Frame::trailers(trailers),
    ]));
    let request = Request::post(format!("https://{HOST}/upload"))
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    response.status().as_u16()
}

/// A request body of the given frames, in order.
struct Frames(VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}
