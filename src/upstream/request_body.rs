//! The client's request body on its way to the app: it says when it has been read whole (so
//! `upstreamResponseMs` starts then), whether the client broke it off, cuts it off after
//! `requestBodyIdleMs` without a byte, and cleans its trailers as the request's headers are
//! cleaned.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::gap::GapClock;

/// Cleans a trailer section in place and says how many fields it removed; the proxy's
/// header rules, handed down so that this stage need not know them.
pub(crate) type TrailerFilter = fn(&mut HeaderMap) -> usize;

/// `RequestBody::client_failed`: the client did not fail.
pub(super) const CLIENT_OK: u8 = 0;
/// The client broke its body off (a reset, a closed connection, a malformed chunk).
pub(super) const CLIENT_BROKE_OFF: u8 = 1;
/// The client sent no body bytes for `requestBodyIdleMs`.
pub(super) const CLIENT_STALLED: u8 = 2;

/// The downstream request body on its way upstream; reports when it has been read to its end,
/// whether the client broke it off, and cuts it off after `requestBodyIdleMs` without a byte.
#[derive(Debug)]
pub(crate) struct RequestBody {
    /// The client's body; `None` for the empty body a request sent again carries.
    inner: Option<Incoming>,
    sent: Option<oneshot::Sender<()>>,
    pub(super) client_failed: Arc<AtomicU8>,
    clock: GapClock,
    /// Made on the first wait for the client: requests without a body never need it. Boxed
    /// because hyper's client needs an `Unpin` body.
    timer: Option<Pin<Box<Sleep>>>,
    /// Run on the trailer frame, if one comes.
    clean_trailers: TrailerFilter,
}

/// Why a request body did not reach the app whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    #[error("request body broken off by the client")]
    Client { source: hyper::Error },
    #[error("client sent no request body bytes within timeouts.requestBodyIdleMs")]
    Stalled,
}

impl RequestBody {
    /// The body, and a receiver that fires when it has been read whole; `None` for an empty
    /// body (e.g. a GET), which is complete from the start and may never be polled.
    pub(super) fn new(
        inner: Incoming,
        idle: Duration,
        clean_trailers: TrailerFilter,
    ) -> (Self, Option<oneshot::Receiver<()>>) {
        let client_failed = Arc::new(AtomicU8::new(CLIENT_OK));
        let clock = GapClock::new(idle);
        if inner.is_end_stream() {
            let body = Self {
                inner: Some(inner),
                sent: None,
                client_failed,
                clock,
                timer: None,
                clean_trailers,
            };
            return (body, None);
        }
        let (sent, receiver) = oneshot::channel();
        let body = Self {
            inner: Some(inner),
            sent: Some(sent),
            client_failed,
            clock,
            timer: None,
            clean_trailers,
        };
        (body, Some(receiver))
    }

    /// An empty body: what an idempotent request without one is sent again with.
    pub(super) fn empty() -> Self {
        Self {
            inner: None,
            sent: None,
            client_failed: Arc::new(AtomicU8::new(CLIENT_OK)),
            clock: GapClock::new(Duration::ZERO),
            timer: None,
            clean_trailers: |_| 0,
        }
    }

    fn report_if_done(&mut self) {
        if self.is_end_stream() {
            self.report_sent();
        }
    }

    fn report_sent(&mut self) {
        if let Some(sent) = self.sent.take() {
            let _ = sent.send(());
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Err(source))) => {
                this.client_failed
                    .store(CLIENT_BROKE_OFF, Ordering::Relaxed);
                this.report_sent();
                Poll::Ready(Some(Err(RequestBodyError::Client { source })))
            }
            Poll::Ready(None) => {
                this.report_sent();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(mut frame))) => {
                // Only a trailer frame pays for this: a data frame is one enum check.
                if let Some(trailers) = frame.trailers_mut() {
                    let removed = (this.clean_trailers)(trailers);
                    if removed > 0 {
                        tracing::debug!(removed, "removed certificate and hop-by-hop trailers");
                    }
                }
                this.clock.frame();
                this.report_if_done();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
                if !this.clock.waiting(timer.as_mut(), cx) {
                    return Poll::Pending;
                }
                this.client_failed.store(CLIENT_STALLED, Ordering::Relaxed);
                this.report_sent();
                Poll::Ready(Some(Err(RequestBodyError::Stalled)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}
