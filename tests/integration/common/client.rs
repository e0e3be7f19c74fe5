//! A rustls + hyper client that can present any certificate, SNI, TLS version and HTTP
//! version, the reply it reads, and why a request got no reply (the TLS alert, if any).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, RootCertStore};
use tokio::net::TcpStream;

use super::Pki;

/// A client certificate chain and key to present.
#[derive(Clone)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

/// How the test client connects.
#[derive(Clone)]
pub struct ClientOptions {
    pub roots: Arc<RootCertStore>,
    pub identity: Option<Identity>,
    /// The SNI to send; `None` sends no SNI (and verifies the server as `localhost`).
    pub sni: Option<String>,
    pub tls12: bool,
    pub http2: bool,
}

impl ClientOptions {
    pub fn new(pki: &Pki, sni: &str) -> Self {
        let mut roots = RootCertStore::empty();
        roots.add(pki.server_ca.der.clone()).unwrap();
        Self {
            roots: Arc::new(roots),
            identity: None,
            sni: Some(sni.to_owned()),
            tls12: false,
            http2: false,
        }
    }

    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    pub fn tls12(mut self, tls12: bool) -> Self {
        self.tls12 = tls12;
        self
    }

    pub fn http2(mut self, http2: bool) -> Self {
        self.http2 = http2;
        self
    }

    pub fn tls_config(&self) -> rustls::ClientConfig {
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        config.enable_sni = self.sni.is_some();
        config
    }
}

/// Why a request did not get a response.
#[derive(Debug)]
pub struct Failure {
    /// The TLS alert the server sent, when one arrived.
    pub alert: Option<AlertDescription>,
    pub message: String,
    /// The connection was closed (or the stream refused) before any response byte: a
    /// client may send an idempotent request again on a new connection (RFC 9112 section
    /// 9.3.1, RFC 9113 section 8.7).
    unanswered: bool,
}

impl Failure {
    /// Whether the request went unanswered because its connection closed or refused it.
    pub fn closed_unanswered(&self) -> bool {
        self.unanswered
    }
}

pub fn failure(error: &(dyn std::error::Error + 'static)) -> Failure {
    let mut alert = None;
    let mut unanswered = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            unanswered |= hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed();
        }
        if let Some(rustls::Error::AlertReceived(a)) = e.downcast_ref::<rustls::Error>() {
            alert = Some(*a);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(rustls::Error::AlertReceived(a)) =
                io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            alert = Some(*a);
        }
        source = e.source();
    }
    let message = certgate::error_chain(error);
    // The h2 crate keeps only the text of the I/O error that carried the alert.
    let alert = alert.or_else(|| {
        let name = message.split("received fatal alert: ").nth(1)?;
        let name: String = name
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        ALERTS.iter().copied().find(|a| format!("{a:?}") == name)
    });
    // HTTP/2: a stream refused, or left out by GOAWAY's last stream ID, was not processed
    // (RFC 9113 sections 6.8 and 8.7).
    unanswered |= message.contains("refused stream")
        || message.contains("REFUSED_STREAM")
        || message.contains("connection error received: not a result of an error");
    Failure {
        alert,
        message,
        unanswered,
    }
}

const ALERTS: [AlertDescription; 9] = [
    AlertDescription::CertificateRequired,
    AlertDescription::HandshakeFailure,
    AlertDescription::UnknownCA,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateRevoked,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::AccessDenied,
    AlertDescription::BadCertificate,
    AlertDescription::UnrecognisedName,
];

pub enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One client connection to certgate.
pub struct Connection {
    pub sender: Sender,
    pub http2: bool,
}

/// Every value of header `name` in the echo upstream's JSON `echo`, in the order received.
pub fn echo_header(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in the echo JSON: {echo}"))
        .iter()
        .filter(|pair| pair[0].as_str() == Some(name))
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

/// A response, body read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The echo upstream's JSON.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not echo JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Every value of a header as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        echo_header(&self.echo(), name)
    }

    /// The single XFCC the upstream received, if any (panics on more than one).
    pub fn xfcc(&self) -> Option<String> {
        let all = self.upstream_header("x-forwarded-client-cert");
        assert!(
            all.len() <= 1,
            "several XFCC headers reached the app: {all:?}"
        );
        all.into_iter().next()
    }
}

impl Connection {
    /// Whether the connection can still carry a request (certgate has not closed it).
    pub fn is_open(&self) -> bool {
        match &self.sender {
            Sender::Http1(sender) => !sender.is_closed(),
            Sender::Http2(sender) => !sender.is_closed(),
        }
    }

    pub async fn open(addr: SocketAddr, options: &ClientOptions) -> Result<Self, Failure> {
        Self::over(tls_stream(addr, options).await?, options).await
    }

    /// The HTTP connection (HTTP/2 or HTTP/1.1, as `options` say) over an established TLS
    /// stream.
    pub async fn over(
        tls: tokio_rustls::client::TlsStream<TcpStream>,
        options: &ClientOptions,
    ) -> Result<Self, Failure> {
        let io = TokioIo::new(tls);
        let sender = if options.http2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| failure(&e))?;
            tokio::spawn(conn);
            Sender::Http2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| failure(&e))?;
            tokio::spawn(conn.with_upgrades());
            Sender::Http1(sender)
        };
        Ok(Self {
            sender,
            http2: options.http2,
        })
    }

    /// A GET for `authority` + `path` in this connection's HTTP version's form.
    pub fn get(&self, authority: &str, path: &str) -> Request<Full<Bytes>> {
        self.request(http::Method::GET, authority, path, Bytes::new())
    }

    pub fn request(
        &self,
        method: http::Method,
        authority: &str,
        path: &str,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let builder = Request::builder().method(method);
        let builder = if self.http2 {
            builder.uri(format!("https://{authority}{path}"))
        } else {
            builder.uri(path).header(http::header::HOST, authority)
        };
        builder.body(Full::new(body)).unwrap()
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, Failure> {
        let response = self.send_raw(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| failure(&e))?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn send_raw(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Failure> {
        let result = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.map_err(|e| failure(&e))?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender.ready().await.map_err(|e| failure(&e))?;
                sender.send_request(request).await
            }
        };
        result.map_err(|e| failure(&e))
    }
}

/// Opens a connection and sends one GET for `host` + `path`.
pub async fn get(
    addr: SocketAddr,
    options: &ClientOptions,
    host: &str,
    path: &str,
) -> Result<Reply, Failure> {
    let mut conn = Connection::open(addr, options).await?;
    let request = conn.get(host, path);
    conn.send(request).await
}

/// A TLS stream to certgate with `options` (ALPN, SNI, version, identity): for raw requests
/// hyper's client cannot write, or for tests that drive hyper themselves.
pub async fn tls_stream(
    addr: SocketAddr,
    options: &ClientOptions,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(options.tls_config()));
    let name =
        ServerName::try_from(options.sni.clone().unwrap_or_else(|| "localhost".into())).unwrap();
    connector.connect(name, tcp).await.map_err(|e| failure(&e))
}

/// Asserts that certgate answered `reply` itself with `status`: a `text/plain` body of one
/// non-empty line (docs/forwarding.md).
pub fn assert_certgate_error(reply: &Reply, status: StatusCode, label: &str) {
    assert_eq!(reply.status, status, "{label}: body {:?}", reply.body);
    let content_type = reply
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "{label}: content-type {content_type:?}"
    );
    let body = String::from_utf8_lossy(&reply.body);
    let line = body.strip_suffix('\n').unwrap_or(&body);
    assert!(
        !line.trim().is_empty() && !line.contains(['\n', '\r']),
        "{label}: body is not one line: {body:?}"
    );
}
