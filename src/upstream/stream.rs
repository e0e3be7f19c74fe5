//! Connecting to the app: TCP, then for an `https://` upstream the TLS handshake, both under
//! `upstreamConnectMs`. A request is written only on a stream whose handshake completed and
//! whose certificate verified; nothing goes to the app in plaintext before that.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Scheme;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::UpstreamError;
use super::limit::Slot;
use crate::settings::{Transport, Upstream};
use crate::tls::upstream::{AppTls, UpstreamTlsFailure};

/// Opens connections to one endpoint of an app.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    /// The endpoint's address.
    address: Option<SocketAddr>,
    /// `host:port` of the app, resolved at each dial when there is no `address`.
    authority: Arc<str>,
    /// TLS, for an `https://` upstream.
    tls: Option<Tls>,
    /// `upstreamConnectMs`: connect and handshake together.
    timeout: Duration,
    /// The last alert any connection of this dialer met after its handshake, and when.
    last_alert: Arc<Mutex<Option<(Instant, UpstreamTlsFailure)>>>,
}

/// How long after an alert an HTTP/2 request that fails is put down to it, when its own
/// connection recorded none: the h2 crate keeps only the text of the I/O error that carried
/// the alert.
const ALERT_BLAME_WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// HTTP/2 is spoken only where the app agreed to `h2` by ALPN.
    http2: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer for `upstream` at `address` (by its name when `None`), speaking `tls` to an
    /// `https://` one (its server name is the upstream's, whatever the address), with
    /// `timeout` for connect and handshake together.
    pub(crate) fn new(
        upstream: &Upstream,
        address: Option<SocketAddr>,
        tls: Option<AppTls>,
        timeout: Duration,
    ) -> Self {
        Self {
            address,
            authority: upstream.authority.as_str().into(),
            tls: tls.map(|tls| Tls {
                connector: TlsConnector::from(tls.config),
                server_name: tls.server_name,
                http2: upstream.transport == Transport::Http2,
            }),
            timeout,
            last_alert: Arc::default(),
        }
    }

    /// The `:scheme` of the HTTP/2 requests sent on its connections: `https` over TLS
    /// (RFC 9113 section 8.3.1).
    pub(crate) fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// The alert a connection of this dialer met within the last moment, if any: what an
    /// HTTP/2 request that failed just now is put down to.
    pub(crate) fn recent_alert(&self) -> Option<UpstreamTlsFailure> {
        let last = *self.last_alert.lock().ok()?;
        last.filter(|(at, _)| at.elapsed() < ALERT_BLAME_WINDOW)
            .map(|(_, reason)| reason)
    }

    fn alert(&self) -> Alert {
        Alert {
            connection: Arc::default(),
            dialer: self.last_alert.clone(),
        }
    }

    /// A new connection to the app, its TLS handshake (if any) complete and verified; it
    /// holds `slot` until it closes.
    pub(crate) async fn dial(&self, slot: Slot) -> Result<AppStream, UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        let connected = match self.address {
            Some(address) => tokio::time::timeout_at(deadline, TcpStream::connect(address)).await,
            None => tokio::time::timeout_at(deadline, TcpStream::connect(&*self.authority)).await,
        };
        let tcp = match connected {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(UpstreamError::Connect { source }),
            Err(_) => return Err(UpstreamError::ConnectTimeout),
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(AppStream {
                inner: Inner::Plain(tcp),
                alert: self.alert(),
                _slot: slot,
            });
        };
        let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
        let stream = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(UpstreamError::Tls {
                    reason: UpstreamTlsFailure::find(&source)
                        .unwrap_or(UpstreamTlsFailure::Protocol),
                    source: Box::new(source),
                });
            }
            Err(_) => {
                return Err(UpstreamError::Tls {
                    reason: UpstreamTlsFailure::Timeout,
                    source: "the TLS handshake did not finish within timeouts.upstreamConnectMs"
                        .into(),
                });
            }
        };
        // rustls goes on without ALPN when the app picks none; HTTP/1.1 is then the safe
        // assumption, HTTP/2 is not.
        if tls.http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(UpstreamError::Tls {
                reason: UpstreamTlsFailure::Protocol,
                source: "the app did not agree to HTTP/2 (ALPN h2); set ingress.transport to http"
                    .into(),
            });
        }
        Ok(AppStream {
            inner: Inner::Tls(Box::new(stream)),
            alert: self.alert(),
            _slot: slot,
        })
    }
}

/// A connection to the app, plain or TLS.
#[derive(Debug)]
pub(crate) struct AppStream {
    inner: Inner,
    alert: Alert,
    /// Counts the connection against `limits.maxUpstreamConnectionsPerApp` until the socket
    /// is dropped, upgraded connections (WebSocket) included.
    _slot: Slot,
}

#[derive(Debug)]
enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Remembers the first TLS failure met on a connection after its handshake (the app's alert),
/// for the request that finds the connection closed; the dialer remembers the last one too.
#[derive(Debug, Clone)]
pub(crate) struct Alert {
    connection: Arc<OnceLock<UpstreamTlsFailure>>,
    dialer: Arc<Mutex<Option<(Instant, UpstreamTlsFailure)>>>,
}

impl Alert {
    /// The failure recorded on this connection, if any.
    pub(crate) fn failure(&self) -> Option<UpstreamTlsFailure> {
        self.connection.get().copied()
    }

    fn record(&self, error: &io::Error) {
        if let Some(reason) = UpstreamTlsFailure::find(error) {
            let _ = self.connection.set(reason);
            if let Ok(mut last) = self.dialer.lock() {
                *last = Some((Instant::now(), reason));
            }
        }
    }
}

impl AppStream {
    /// What records an alert the app sends on this connection.
    pub(crate) fn alert(&self) -> Alert {
        self.alert.clone()
    }

    fn observe<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let (Poll::Ready(Err(error)), Inner::Tls(_)) = (&polled, &self.inner) {
            self.alert.record(error);
        }
        polled
    }
}

impl AsyncRead for AppStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        };
        this.observe(polled)
    }
}

impl AsyncWrite for AppStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        };
        this.observe(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        };
        this.observe(polled)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Plain(tcp) => tcp.is_write_vectored(),
            Inner::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        };
        this.observe(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
