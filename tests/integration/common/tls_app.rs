//! An app that speaks TLS, for the tests of TLS to the app: a rustls + hyper server on
//! 127.0.0.1 presenting a certificate from its own CA, optionally requiring a client
//! certificate, that records what it saw of each connection; and the same app in cleartext.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use sha2::Digest;
use tokio::io::AsyncReadExt as _;

use super::serve::serve_each;
use super::{Ca, Leaf, LeafSpec, hex};

/// What a test app saw of one connection.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub sni: Option<String>,
    /// SHA-256 of the client certificate certgate presented, hex.
    pub client_hash: Option<String>,
}

/// A rustls + hyper app on 127.0.0.1 presenting `leaf`, requiring a client certificate from
/// `client_ca` when given; it answers `<HTTP version> <client certificate hash or none>`, and
/// the request's scheme (HTTP/2's `:scheme`) in `x-scheme`.
pub struct TlsApp {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TlsApp {
    pub async fn start(leaf: &Leaf, client_ca: Option<&Ca>) -> Self {
        Self::start_with_versions(leaf, client_ca, rustls::DEFAULT_VERSIONS).await
    }

    pub async fn start_with_versions(
        leaf: &Leaf,
        client_ca: Option<&Ca>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der.clone()).unwrap();
                builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap(),
                )
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(leaf.chain.clone(), leaf.key_der())
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let addr = serve_each(move |tcp| {
            let acceptor = acceptor.clone();
            let seen = recorded.clone();
            async move {
                let tls = match acceptor.accept(tcp).into_fallible().await {
                    Ok(tls) => tls,
                    // Read what certgate still sends until it closes, so the alert reaches it
                    // rather than a reset.
                    Err((_, mut tcp)) => {
                        let mut sink = Vec::new();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            tcp.read_to_end(&mut sink),
                        )
                        .await;
                        return;
                    }
                };
                let (_, connection) = tls.get_ref();
                let record = Seen {
                    sni: connection.server_name().map(str::to_owned),
                    client_hash: connection
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| hex(&sha2::Sha256::digest(leaf))),
                };
                seen.lock().unwrap().push(record.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let hash = record.client_hash.clone().unwrap_or_else(|| "none".into());
                    async move { Ok::<_, std::convert::Infallible>(answer(&request, &hash)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        })
        .await;
        Self { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The app of [`TlsApp`] without TLS, on 127.0.0.1 (HTTP/1.1 and h2c): it answers
/// `<HTTP version> cleartext`, and the request's scheme in `x-scheme`.
pub async fn cleartext_app() -> SocketAddr {
    serve_each(|tcp| async move {
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            Ok::<_, std::convert::Infallible>(answer(&request, "cleartext"))
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), service)
            .await;
    })
    .await
}

/// What the apps answer: `<HTTP version> <hash>`, and the request's scheme (HTTP/2's
/// `:scheme`, `none` over HTTP/1.1) in `x-scheme`.
fn answer(request: &Request<Incoming>, hash: &str) -> Response<Full<Bytes>> {
    let body = format!("{:?} {hash}", request.version());
    let scheme = request.uri().scheme_str().unwrap_or("none").to_owned();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert("x-scheme", scheme.parse().unwrap());
    response
}

/// The app's own CA and a certificate from it for `127.0.0.1`, `localhost` and
/// `*.example.test`.
pub fn app_pki() -> (Ca, Leaf) {
    let ca = Ca::root("certgate test app CA");
    let leaf = ca.issue(LeafSpec::server());
    (ca, leaf)
}
