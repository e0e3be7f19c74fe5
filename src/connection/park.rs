//! Parking: an HTTP/1.1 keep-alive connection that goes quiet gives hyper's buffers back.
//!
//! hyper keeps an HTTP/1.1 connection's read buffer (8–16 KiB) and its response-head buffer
//! (8 KiB) for as long as the connection lives. Once a connection has served HTTP/1.1 and had
//! no request in flight for [`park_after`], its hyper session is ended: hyper reads the end of
//! input from [`SessionIo`] (the TLS stream is neither closed nor shut down) and drops its
//! state, and the stream comes back through a channel. The parked connection then waits for
//! the client's next byte holding nothing but its TLS state; that byte starts a new session.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::proxy::context::ConnectionContext;
use crate::settings::Timeouts;

/// How long an HTTP/1.1 connection has no request in flight before it parks.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// How long an HTTP/1.1 connection has no request in flight before it parks: a second, or
/// sooner with a short `requestHeaderMs`, since hyper times out a quiet session's next header
/// from the end of the last request, while a parked connection counts from its first byte.
pub(super) fn park_after(timeouts: &Timeouts) -> Duration {
    PARK_AFTER.min(timeouts.request_header / 2)
}

/// The TLS stream a connection is served on.
pub(super) type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// The TLS stream as one hyper session sees it: the byte that woke a parked connection comes
/// first, and reads end once the connection parks. Dropped after parking, it hands the stream
/// back.
#[derive(Debug)]
pub(super) struct SessionIo {
    /// `None` only once handed back, in `drop`.
    stream: Option<Tls>,
    /// The byte that woke the parked connection, not yet given to hyper.
    first: Option<u8>,
    context: Arc<ConnectionContext>,
    /// Whether everything hyper wrote has been flushed: a session with a response still on its
    /// way does not park.
    flushed: bool,
    /// Set once hyper was told the input ended because the connection parks.
    parked: bool,
    /// [`ConnectionContext::requests_ended`] when hyper last got bytes: while it has not moved
    /// on, those bytes may be the start of a request, and the session does not park.
    read_at: Option<u64>,
    handback: Option<oneshot::Sender<Tls>>,
}

impl SessionIo {
    /// A session on `stream`, starting with `first` when the connection was parked; the
    /// stream comes back on the returned receiver if the session ends by parking.
    pub(super) fn new(
        stream: Tls,
        first: Option<u8>,
        context: Arc<ConnectionContext>,
    ) -> (Self, oneshot::Receiver<Tls>) {
        context.unpark();
        let (handback, returned) = oneshot::channel();
        let io = Self {
            stream: Some(stream),
            first,
            read_at: first.map(|_| context.requests_ended()),
            context,
            flushed: true,
            parked: false,
            handback: Some(handback),
        };
        (io, returned)
    }

    /// Whether hyper may hold part of a request: it got bytes and no request has ended since.
    /// Parking then would lose them, so the session waits for the request (or for hyper's
    /// header timeout). A pipelined request that arrived with the end of the one before it is
    /// not seen here.
    fn mid_request(&self) -> bool {
        self.read_at == Some(self.context.requests_ended())
    }

    fn stream(&mut self) -> io::Result<Pin<&mut Tls>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl AsyncRead for SessionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(byte) = this.first.take() {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        if this.parked || (this.flushed && this.context.parks_now() && !this.mid_request()) {
            // The end of input, to hyper: an idle session then ends without error.
            this.parked = true;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = this.stream()?.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.read_at = Some(this.context.requests_ended());
        }
        read
    }
}

impl AsyncWrite for SessionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flushed = false;
        this.stream()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flushed = false;
        this.stream()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = this.stream()?.poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            this.flushed = true;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // The connection stays open; only the session ends.
            return Poll::Ready(Ok(()));
        }
        this.stream()?.poll_shutdown(cx)
    }
}

impl Drop for SessionIo {
    fn drop(&mut self) {
        if !self.parked {
            return;
        }
        if let (Some(stream), Some(handback)) = (self.stream.take(), self.handback.take()) {
            // The receiver is gone only when the connection's task is, which closes the stream.
            let _ = handback.send(stream);
        }
    }
}

/// The parked connection's next byte, or `None` once the client closed it. Cancel-safe: no
/// byte is lost when another event wins.
pub(super) async fn next_byte(stream: &mut Tls) -> io::Result<Option<u8>> {
    let mut byte = [0_u8; 1];
    let read = stream.read(&mut byte).await?;
    Ok((read == 1).then_some(byte[0]))
}
