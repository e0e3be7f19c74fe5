//! The mTLS client every measurement uses: rustls with the client certificate, hyper's
//! HTTP/1.1 or HTTP/2 connection on top, one small GET per request.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{HandshakeKind, RootCertStore};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::{Error, TargetArgs};

/// The HTTP version a client speaks (offered by ALPN, and required back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Connects to one target with one TLS configuration.
pub(crate) struct Client {
    config: Arc<rustls::ClientConfig>,
    resume: bool,
    connector: TlsConnector,
    addr: std::net::SocketAddr,
    server_name: ServerName<'static>,
    protocol: Protocol,
    uri: Uri,
    host: http::HeaderValue,
}

/// An open connection ready for requests; dropping it closes the connection.
pub(crate) struct Connection {
    sender: Sender,
    /// Drives the connection; only the first handle of an HTTP/2 connection holds it.
    task: Option<JoinHandle<()>>,
}

enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    /// A client for `target`; with `resume`, its connections share one session cache so later
    /// handshakes resume, otherwise every handshake is full.
    pub(crate) fn new(
        target: &TargetArgs,
        protocol: Protocol,
        resume: bool,
    ) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&target.ca)
            .map_err(|e| format!("cannot read the CA file {}: {e}", target.ca.display()))?
        {
            let cert =
                cert.map_err(|e| format!("bad certificate in {}: {e}", target.ca.display()))?;
            roots.add(cert)?;
        }
        let chain = CertificateDer::pem_file_iter(&target.cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| {
                format!(
                    "cannot read the client certificate {}: {e}",
                    target.cert.display()
                )
            })?;
        let key = PrivateKeyDer::from_pem_file(&target.key)
            .map_err(|e| format!("cannot read the client key {}: {e}", target.key.display()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = match protocol {
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
            Protocol::Http2 => vec![b"h2".to_vec()],
        };
        if !resume {
            config.resumption = Resumption::disabled();
        }
        let server_name = ServerName::try_from(target.server_name.clone())
            .map_err(|e| format!("bad --server-name {}: {e}", target.server_name))?;
        let uri = match protocol {
            // HTTP/1.1 sends origin-form and a Host header; HTTP/2 needs the authority in the URI.
            Protocol::Http1 => Uri::from_static("/"),
            Protocol::Http2 => Uri::try_from(format!("https://{}/", target.server_name))?,
        };
        let config = Arc::new(config);
        Ok(Self {
            connector: TlsConnector::from(config.clone()),
            config,
            resume,
            addr: target.addr,
            server_name,
            protocol,
            uri,
            host: http::HeaderValue::try_from(target.server_name.as_str())?,
        })
    }

    /// The same client with a session cache of its own, as a separate client process has; a
    /// client without resumption stays without.
    pub(crate) fn with_own_sessions(&self) -> Self {
        let mut config = (*self.config).clone();
        if self.resume {
            config.resumption = Resumption::in_memory_sessions(16);
        }
        let config = Arc::new(config);
        Self {
            connector: TlsConnector::from(config.clone()),
            config,
            resume: self.resume,
            addr: self.addr,
            server_name: self.server_name.clone(),
            protocol: self.protocol,
            uri: self.uri.clone(),
            host: self.host.clone(),
        }
    }

    /// A TCP connection and a finished TLS handshake; says whether the session was resumed.
    pub(crate) async fn handshake(&self) -> Result<(TlsStream<TcpStream>, bool), Error> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake with {} failed: {e}", self.addr))?;
        let (_, session) = tls.get_ref();
        let resumed = session.handshake_kind() == Some(HandshakeKind::Resumed);
        let alpn_h2 = session.alpn_protocol() == Some(b"h2");
        if alpn_h2 != (self.protocol == Protocol::Http2) {
            return Err(format!(
                "{} did not negotiate the offered protocol {:?} by ALPN",
                self.addr, self.protocol
            )
            .into());
        }
        Ok((tls, resumed))
    }

    /// A connection ready for requests, and whether its TLS session was resumed.
    pub(crate) async fn connect(&self) -> Result<(Connection, bool), Error> {
        let (tls, resumed) = self.handshake().await?;
        let io = TokioIo::new(tls);
        let connection = match self.protocol {
            Protocol::Http1 => {
                let (sender, connection) = http1::handshake(io).await?;
                Connection {
                    sender: Sender::Http1(sender),
                    task: Some(tokio::spawn(async move {
                        let _ = connection.await;
                    })),
                }
            }
            Protocol::Http2 => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
                Connection {
                    sender: Sender::Http2(sender),
                    task: Some(tokio::spawn(async move {
                        let _ = connection.await;
                    })),
                }
            }
        };
        Ok((connection, resumed))
    }

    /// The request every measurement sends.
    fn request(&self) -> Result<Request<Empty<Bytes>>, Error> {
        let mut request = Request::get(self.uri.clone());
        if self.protocol == Protocol::Http1 {
            request = request.header(http::header::HOST, self.host.clone());
        }
        Ok(request.body(Empty::new())?)
    }

    /// Sends one request on `connection` and reads the whole response; anything but 200 is an
    /// error.
    pub(crate) async fn send(&self, connection: &mut Connection) -> Result<(), Error> {
        let request = self.request()?;
        let response = match &mut connection.sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        response.into_body().collect().await?;
        if status != StatusCode::OK {
            return Err(format!("{} answered {status}", self.addr).into());
        }
        Ok(())
    }
}

impl Connection {
    /// Another handle on the same HTTP/2 connection (a stream of its own per request); `None`
    /// for HTTP/1.1, which has one request in flight per connection.
    pub(crate) fn stream(&self) -> Option<Self> {
        match &self.sender {
            Sender::Http1(_) => None,
            Sender::Http2(sender) => Some(Self {
                sender: Sender::Http2(sender.clone()),
                task: None,
            }),
        }
    }

    pub(crate) fn is_http1(&self) -> bool {
        matches!(self.sender, Sender::Http1(_))
    }

    /// Closes the connection (HTTP/1.1 closes once its sender is gone and it is idle) and waits
    /// for that.
    pub(crate) async fn close(self) {
        let Self { sender, task } = self;
        drop(sender);
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
