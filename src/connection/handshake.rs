//! Reads the ClientHello, picks the app by SNI, judges the client address by the app's
//! `ipSecurityRestrictions`, and completes the handshake with that app's rustls config, all
//! under one deadline (and the ClientHello under a shorter one). Every refusal carries a
//! `FailureReason`.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, StartHandshake};

use crate::apps::{App, Apps};
use crate::ip_restrictions::IpRefusal;
use crate::tls::FailureReason;
use crate::tls::client_policy::{self, Refusal, TrustSource};
use crate::tls::sni::normalize;

/// A completed handshake: the stream and the app it belongs to.
#[derive(Debug)]
pub(crate) struct Completed<IO> {
    /// The TLS stream, ready for HTTP.
    pub stream: TlsStream<IO>,
    /// The app chosen by SNI.
    pub app: Arc<App>,
    /// The normalized SNI, when the client sent one.
    pub sni: Option<String>,
    /// What admitted the client's certificate, when the verifier passed one (not on a
    /// resumed session: rustls resumes without asking the verifier).
    pub trust: Option<TrustSource>,
    /// With `rejectWith: "http"`, why the app's `ipSecurityRestrictions` refused the client
    /// (the handshake then asked for no certificate, and every request gets 403).
    pub ip_refusal: Option<IpRefusal>,
}

/// Why a connection did not complete its handshake.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The client closed the connection before sending a ClientHello (e.g. a TCP probe).
    #[error("connection closed before the ClientHello")]
    Closed,
    /// The deadline passed.
    #[error("handshake timed out")]
    Timeout {
        sni: Option<String>,
        app: Option<Arc<App>>,
    },
    /// The ClientHello named no app and there is no catch-all app.
    #[error("no app serves this server name")]
    UnknownSni { sni: Option<String> },
    /// The ClientHello could not be read.
    #[error("malformed ClientHello")]
    ClientHello { source: io::Error },
    /// The client spoke plain HTTP to the TLS port; it was answered 400.
    #[error("plain HTTP sent to the TLS port")]
    PlainHttp,
    /// The app's `ipSecurityRestrictions` refused the client's address (with an
    /// `access_denied` alert), before any certificate was asked for.
    #[error("the client address is not allowed to reach this app")]
    IpRestricted {
        sni: Option<String>,
        app: Arc<App>,
        refusal: IpRefusal,
    },
    /// The handshake with the chosen app failed.
    #[error("handshake failed")]
    Handshake {
        sni: Option<String>,
        app: Arc<App>,
        reason: FailureReason,
        /// The policy's refusal (reason, detail, the presented leaf), when it refused.
        refusal: Option<Box<Refusal>>,
        source: io::Error,
    },
}

impl HandshakeError {
    /// The failure reason for logs and metrics; `None` for an ordinary close.
    pub(crate) fn reason(&self) -> Option<FailureReason> {
        match self {
            Self::Closed => None,
            Self::Timeout { .. } => Some(FailureReason::Timeout),
            Self::UnknownSni { .. } => Some(FailureReason::UnknownSni),
            Self::IpRestricted { .. } => Some(FailureReason::IpRestricted),
            Self::ClientHello { .. } | Self::PlainHttp => Some(FailureReason::Protocol),
            Self::Handshake { reason, .. } => Some(*reason),
        }
    }

    /// The app chosen before the failure, if one was.
    pub(crate) fn app(&self) -> Option<&Arc<App>> {
        match self {
            Self::Timeout { app, .. } => app.as_ref(),
            Self::Handshake { app, .. } | Self::IpRestricted { app, .. } => Some(app),
            Self::Closed | Self::UnknownSni { .. } | Self::ClientHello { .. } | Self::PlainHttp => {
                None
            }
        }
    }

    /// The policy's refusal of a presented certificate, when that is why the handshake failed.
    pub(crate) fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Handshake { refusal, .. } => refusal.as_deref(),
            _ => None,
        }
    }

    /// What the log line's `detail` says: the policy's refusal, or for a server name no app
    /// serves, what to do about it.
    pub(crate) fn detail(&self) -> &str {
        match self {
            Self::Handshake {
                refusal: Some(refusal),
                ..
            } => &refusal.detail,
            Self::IpRestricted { refusal, .. } => &refusal.detail,
            Self::UnknownSni { sni: None } => NO_SNI_HINT,
            Self::UnknownSni { sni: Some(_) } => UNKNOWN_SNI_HINT,
            _ => "",
        }
    }

    /// The SNI the client sent, if it got that far.
    pub(crate) fn sni(&self) -> Option<&str> {
        match self {
            Self::Timeout { sni, .. }
            | Self::UnknownSni { sni }
            | Self::Handshake { sni, .. }
            | Self::IpRestricted { sni, .. } => sni.as_deref(),
            Self::Closed | Self::ClientHello { .. } | Self::PlainHttp => None,
        }
    }
}

/// Why a ClientHello without a server name found no app, and what to do.
const NO_SNI_HINT: &str = "the client sent no server name (SNI), as when it connects by IP address; connect by a name one of the apps' hosts lists, or serve such clients with an app without hosts (the catch-all)";
/// What to do about a server name no app serves.
const UNKNOWN_SNI_HINT: &str = "no app lists this name in its hosts and there is no app without hosts (the catch-all); add the name to an app's hosts";

/// A fatal `unrecognized_name` alert (RFC 8446 section 6.2), as a plaintext TLS record.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];
/// A fatal `access_denied` alert (RFC 8446 section 6.2: "a valid certificate or PSK was
/// received, but when access control was applied, the sender decided not to proceed"), as a
/// plaintext TLS record.
const ACCESS_DENIED_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

/// How long a refused client gets to read our alert before the socket is dropped.
const LINGER: Duration = Duration::from_millis(500);

/// Closes after a refusal so the alert arrives: send FIN, then read (and discard) what the
/// client already sent, because closing a socket with unread data sends a TCP reset that can
/// overtake the alert (TLS 1.3 clients write their request before they see it).
async fn linger_close<IO>(mut io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let _ = io.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut budget: usize = 64 * 1024;
        while budget > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// A transport whose first bytes can be looked at without consuming them.
pub(crate) trait Peek {
    /// Reads into `buf` without removing the bytes from the stream.
    fn peek<'a>(&'a self, buf: &'a mut [u8])
    -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

impl Peek for tokio::net::TcpStream {
    fn peek<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        tokio::net::TcpStream::peek(self, buf)
    }
}

/// The answer to plain HTTP on the TLS port, as nginx gives it ("The plain HTTP request was
/// sent to HTTPS port"), instead of TLS alert bytes a browser or curl cannot show.
const PLAIN_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 69\r\n\
Connection: close\r\n\
\r\n\
this port speaks HTTPS (TLS): use an https:// URL instead of http://\n";

/// Runs the whole server handshake for one connection from `client_ip`.
pub(crate) async fn complete<IO>(
    io: IO,
    apps: &Apps,
    client_ip: IpAddr,
    deadline: Duration,
) -> Result<Completed<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Peek + Unpin,
{
    let mut sni = None;
    let mut app = None;
    let handshake = handshake(io, apps, client_ip, &mut sni, &mut app);
    match tokio::time::timeout(deadline, handshake).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout { sni, app }),
    }
}

async fn handshake<IO>(
    io: IO,
    apps: &Apps,
    client_ip: IpAddr,
    sni_out: &mut Option<String>,
    app_out: &mut Option<Arc<App>>,
) -> Result<Completed<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Peek + Unpin,
{
    let start = client_hello(io, apps.timeouts.client_hello).await?;
    let sni = start.client_hello().server_name().map(normalize);
    *sni_out = sni.clone();
    let Some(app) = apps.resolve(sni.as_deref()) else {
        let mut io = start.io;
        // Best effort: the client is refused whether or not the alert arrives.
        let _ = io.write_all(&UNRECOGNIZED_NAME_ALERT).await;
        linger_close(io).await;
        return Err(HandshakeError::UnknownSni { sni });
    };
    *app_out = Some(app.clone());
    // The client's address decides before any certificate is asked for: one lookup in the
    // table built at load (docs/config.md "IP restrictions").
    let ip_refusal = app
        .config
        .ip_restrictions
        .as_ref()
        .and_then(|restrictions| restrictions.judge(client_ip).err());
    let (tls, ip_refusal) = match (ip_refusal, &app.ip_refused_tls) {
        (None, _) => (app.tls.clone(), None),
        // `rejectWith: "http"`: finished without a CertificateRequest, to answer 403.
        (Some(refusal), Some(tls)) => (tls.clone(), Some(refusal)),
        (Some(refusal), None) => {
            let mut io = start.io;
            // Best effort: the client is refused whether or not the alert arrives.
            let _ = io.write_all(&ACCESS_DENIED_ALERT).await;
            linger_close(io).await;
            return Err(HandshakeError::IpRestricted { sni, app, refusal });
        }
    };
    let (result, watched) = client_policy::watch(start.into_stream(tls).into_fallible()).await;
    match result {
        Ok(stream) => Ok(Completed {
            stream,
            app,
            sni,
            trust: watched.trust,
            ip_refusal,
        }),
        Err((source, io)) => {
            linger_close(io).await;
            Err(refused(source, watched.refusal, sni, app))
        }
    }
}

/// Reads the ClientHello within `timeout`, which is shorter than the handshake's: a client
/// that connects and sends nothing gives its slot back sooner (docs/operations.md "Limits under
/// attack"). A client that speaks plain HTTP is answered so, and refused.
async fn client_hello<IO>(io: IO, timeout: Duration) -> Result<StartHandshake<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Peek + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = |_| HandshakeError::Timeout {
        sni: None,
        app: None,
    };
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout_at(deadline, io.peek(&mut first))
        .await
        .map_err(timed_out)?;
    match peeked {
        Ok(0) => return Err(HandshakeError::Closed),
        // A TLS connection starts with a handshake record (RFC 8446 section 5.1, type 22); an
        // HTTP request starts with a method in capital letters.
        Ok(_) if first[0].is_ascii_uppercase() => {
            let mut io = io;
            // Best effort: the client is refused whether or not the answer arrives.
            let _ = io.write_all(PLAIN_HTTP_RESPONSE).await;
            linger_close(io).await;
            return Err(HandshakeError::PlainHttp);
        }
        Ok(_) => {}
        Err(source) => return Err(HandshakeError::ClientHello { source }),
    }
    let client_hello = LazyConfigAcceptor::new(Acceptor::default(), io);
    tokio::time::timeout_at(deadline, client_hello)
        .await
        .map_err(timed_out)?
        .map_err(|source| match source.kind() {
            io::ErrorKind::UnexpectedEof => HandshakeError::Closed,
            _ => HandshakeError::ClientHello { source },
        })
}

/// The error of a handshake that failed with `source`, with the refusal the verifier
/// recorded (or, without one, the missing certificate rustls refused).
fn refused(
    source: io::Error,
    refusal: Option<Box<Refusal>>,
    sni: Option<String>,
    app: Arc<App>,
) -> HandshakeError {
    let reason = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or(FailureReason::Protocol, FailureReason::of);
    let refusal = match refusal {
        Some(refusal) => Some(refusal),
        None if reason == FailureReason::NoCertificate => Some(Box::new(Refusal::no_certificate())),
        None => None,
    };
    HandshakeError::Handshake {
        sni,
        app,
        reason: refusal.as_ref().map_or(reason, |refusal| refusal.reason),
        refusal,
        source,
    }
}
