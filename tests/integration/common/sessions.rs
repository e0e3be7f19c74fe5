//! TLS session helpers: a client session store that keeps every ticket and offers them oldest
//! first under any server name (what a client, or an attacker replaying a ticket, can do),
//! clients that keep their sessions there (with or without a client certificate), and
//! one-request visits that report whether the handshake resumed and what came back, a refused
//! handshake or connection included. A rustls client resumes a session only with the server
//! verifier and certificate resolver that made it, so a test offers an old session by reusing
//! its `ClientConfig`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::HandshakeKind;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Leaf, Pki, failure};

/// Keeps every TLS 1.3 ticket and the last TLS 1.2 session; offers them under any name.
#[derive(Debug, Default)]
pub struct TicketJar {
    tls13: Mutex<VecDeque<Tls13ClientSessionValue>>,
    tls12: Mutex<Option<Tls12ClientSessionValue>>,
}

impl TicketJar {
    /// TLS 1.3 tickets held.
    pub fn tickets(&self) -> usize {
        self.tls13.lock().unwrap().len()
    }
}

impl ClientSessionStore for TicketJar {
    fn set_kx_hint(&self, _: ServerName<'static>, _: rustls::NamedGroup) {}
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        None
    }
    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        *self.tls12.lock().unwrap() = Some(value);
    }
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.tls12.lock().unwrap().clone()
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {}
    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.tls13.lock().unwrap().push_back(value);
    }
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.tls13.lock().unwrap().pop_front()
    }
}

/// A client that trusts `pki`'s server CA, presents `client` and keeps sessions in `jar`.
pub fn resuming_client(
    pki: &Pki,
    client: &Leaf,
    jar: &Arc<TicketJar>,
    tls12: bool,
) -> Arc<rustls::ClientConfig> {
    resuming_client_presenting(pki, Some(client), jar, tls12)
}

/// As `resuming_client`, presenting `client` when there is one and no certificate otherwise.
pub fn resuming_client_presenting(
    pki: &Pki,
    client: Option<&Leaf>,
    jar: &Arc<TicketJar>,
    tls12: bool,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.server_ca.der.clone()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some(client) => builder
            .with_client_auth_cert(client.chain.clone(), client.key_der())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::store(jar.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Connects to `addr` with `sni`, sends one request (which also collects the server's
/// tickets) and returns how the handshake went and the response text.
pub async fn visit(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    sni: &str,
) -> (Option<HandshakeKind>, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind();
    let request = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    (kind, String::from_utf8_lossy(&response).into_owned())
}

/// How one visit of `try_visit` went.
#[derive(Debug)]
pub struct Visit {
    /// How the handshake went, when the client's side of it completed.
    pub kind: Option<HandshakeKind>,
    pub outcome: Outcome,
}

/// What a visit got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No response: the handshake failed or the connection was closed before one. `alert` is
    /// the TLS alert that came, if any (none when the server closed with close_notify).
    Refused {
        alert: Option<rustls::AlertDescription>,
    },
    /// A response with this status and body.
    Answered { status: u16, body: String },
}

/// As `visit`, for `path`, and without assuming the handshake or the request succeeds.
pub async fn try_visit(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    sni: &str,
    path: &str,
) -> Visit {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connected = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await;
    let mut tls = match connected {
        Ok(tls) => tls,
        Err(error) => {
            return Visit {
                kind: None,
                outcome: Outcome::Refused {
                    alert: failure(&error).alert,
                },
            };
        }
    };
    let kind = tls.get_ref().1.handshake_kind();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    // In TLS 1.3 the client's side of the handshake ends before the server has judged the
    // certificate: a refusal shows up on the write or the read.
    let written = tls.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let read = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let outcome = match text.split(' ').nth(1).and_then(|code| code.parse().ok()) {
        Some(status) if text.starts_with("HTTP/1.1 ") => Outcome::Answered {
            status,
            body: text
                .split_once("\r\n\r\n")
                .map_or("", |(_, body)| body)
                .to_owned(),
        },
        _ => {
            assert!(text.is_empty(), "not an HTTP/1.1 response: {text:?}");
            let error = read.err().or(written.err());
            Outcome::Refused {
                alert: error.and_then(|error| failure(&error).alert),
            }
        }
    };
    Visit { kind, outcome }
}
