//! Reads the ClientHello, picks the app by SNI, and completes the handshake with that app's
//! rustls config, all under one deadline. Every refusal carries a `FailureReason`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::FailureReason;
use super::sni::normalize;
use crate::apps::{App, Apps};

/// A completed handshake: the stream and the app it belongs to.
#[derive(Debug)]
pub struct Accepted<IO> {
    /// The TLS stream, ready for HTTP.
    pub stream: TlsStream<IO>,
    /// The app chosen by SNI.
    pub app: Arc<App>,
    /// The normalized SNI, when the client sent one.
    pub sni: Option<String>,
}

/// Why a connection did not complete its handshake.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
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
    /// The handshake with the chosen app failed.
    #[error("handshake failed")]
    Handshake {
        sni: Option<String>,
        app: Arc<App>,
        reason: FailureReason,
        source: io::Error,
    },
}

impl AcceptError {
    /// The failure reason for logs and metrics; `None` for an ordinary close.
    pub fn reason(&self) -> Option<FailureReason> {
        match self {
            Self::Closed => None,
            Self::Timeout { .. } => Some(FailureReason::Timeout),
            Self::UnknownSni { .. } => Some(FailureReason::UnknownSni),
            Self::ClientHello { .. } => Some(FailureReason::Protocol),
            Self::Handshake { reason, .. } => Some(*reason),
        }
    }

    /// The app chosen before the failure, if one was.
    pub fn app(&self) -> Option<&Arc<App>> {
        match self {
            Self::Timeout { app, .. } => app.as_ref(),
            Self::Handshake { app, .. } => Some(app),
            Self::Closed | Self::UnknownSni { .. } | Self::ClientHello { .. } => None,
        }
    }

    /// The SNI the client sent, if it got that far.
    pub fn sni(&self) -> Option<&str> {
        match self {
            Self::Timeout { sni, .. } | Self::UnknownSni { sni } | Self::Handshake { sni, .. } => {
                sni.as_deref()
            }
            Self::Closed | Self::ClientHello { .. } => None,
        }
    }
}

/// A fatal `unrecognized_name` alert (RFC 8446 section 6.2), as a plaintext TLS record.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

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

/// Runs the whole server handshake for one connection.
pub async fn accept<IO>(
    io: IO,
    apps: &Apps,
    deadline: Duration,
) -> Result<Accepted<IO>, AcceptError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut sni = None;
    let mut app = None;
    let handshake = handshake(io, apps, &mut sni, &mut app);
    match tokio::time::timeout(deadline, handshake).await {
        Ok(result) => result,
        Err(_) => Err(AcceptError::Timeout { sni, app }),
    }
}

async fn handshake<IO>(
    io: IO,
    apps: &Apps,
    sni_out: &mut Option<String>,
    app_out: &mut Option<Arc<App>>,
) -> Result<Accepted<IO>, AcceptError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(Acceptor::default(), io)
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::UnexpectedEof => AcceptError::Closed,
            _ => AcceptError::ClientHello { source },
        })?;
    let sni = start.client_hello().server_name().map(normalize);
    *sni_out = sni.clone();
    let Some(app) = apps.resolve(sni.as_deref()) else {
        let mut io = start.io;
        // Best effort: the client is refused whether or not the alert arrives.
        let _ = io.write_all(&UNRECOGNIZED_NAME_ALERT).await;
        linger_close(io).await;
        return Err(AcceptError::UnknownSni { sni });
    };
    *app_out = Some(app.clone());
    match start
        .into_stream(app.config.tls.clone())
        .into_fallible()
        .await
    {
        Ok(stream) => Ok(Accepted { stream, app, sni }),
        Err((source, io)) => {
            linger_close(io).await;
            let reason = source
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map_or(FailureReason::Protocol, FailureReason::of);
            Err(AcceptError::Handshake {
                sni,
                app,
                reason,
                source,
            })
        }
    }
}
