//! Bounds on a stalled body once its request is under way: the longest gap between bytes the
//! app sends (`upstreamIdleMs`) on the response body, and between bytes the client sends
//! (`requestBodyIdleMs`) on the request body. Only time spent waiting for the other side
//! counts: a body that is not asked for more (backpressure) is not stalled. Upgraded
//! connections have their own rule: `idleMs` without a byte either way.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::activity::InFlight;
use crate::upstream::gap::GapClock;
use crate::upstream::{Peer, UpstreamBody};

/// A body cut off because its sender went quiet.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StallError {
    #[error("upstream sent no response body bytes within timeouts.upstreamIdleMs")]
    UpstreamIdle,
    #[error("upstream response body failed")]
    Upstream { source: hyper::Error },
}

pin_project_lite::pin_project! {
    /// The app's response body on its way downstream, cut off after `upstreamIdleMs` without
    /// a byte from the app. The error makes hyper reset the HTTP/2 stream or close the
    /// HTTP/1.1 connection, and dropping the unfinished upstream body closes the upstream
    /// connection instead of returning it to the pool. The timer lives inline: no allocation
    /// per response.
    #[derive(Debug)]
    pub(crate) struct ResponseBody {
        inner: UpstreamBody,
        #[pin]
        timer: Sleep,
        clock: GapClock,
        report: Option<StallReport>,
        // Keeps the request in flight until the body has been sent (and so dropped).
        in_flight: Option<InFlight>,
    }
}

/// Where a stalled response is counted and logged: its connection, whose app counts it.
pub(crate) trait StallObserver: std::fmt::Debug + Send + Sync {
    /// The app, at `peer` (the upstream group and endpoint the request went to), sent no
    /// response-body bytes for `upstreamIdleMs`.
    fn upstream_stalled(&self, peer: Option<&Peer>);
}

/// What the log line and the counter of a stalled response need (no allocation to make).
#[derive(Debug)]
pub(crate) struct StallReport {
    /// The request's connection: its client, and its app's name and metric handles (a
    /// reference count of the connection's worker alone, not the app's, which every worker's
    /// requests would write).
    pub observer: std::sync::Arc<dyn StallObserver>,
    /// The upstream group and endpoint the response comes from.
    pub peer: Option<Peer>,
}

impl ResponseBody {
    /// Wraps the app's response body; `report` is used once, if it stalls.
    pub(crate) fn new(inner: UpstreamBody, limit: Duration, report: StallReport) -> Self {
        Self {
            inner,
            timer: tokio::time::sleep_until(Instant::now() + limit),
            clock: GapClock::new(limit),
            report: Some(report),
            in_flight: None,
        }
    }

    /// Keeps `in_flight` until the body has been sent or abandoned.
    #[must_use]
    pub(crate) fn in_flight(mut self, in_flight: Option<InFlight>) -> Self {
        self.in_flight = in_flight;
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = StallError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StallError>>> {
        let this = self.project();
        match Pin::new(this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.clock.frame();
                Poll::Ready(
                    frame.map(|frame| frame.map_err(|source| StallError::Upstream { source })),
                )
            }
            Poll::Pending => {
                if !this.clock.waiting(this.timer, cx) {
                    return Poll::Pending;
                }
                if let Some(report) = this.report.take() {
                    report.observer.upstream_stalled(report.peer.as_ref());
                }
                Poll::Ready(Some(Err(StallError::UpstreamIdle)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Pipes an upgraded (WebSocket) connection both ways until either side closes, or until no
/// byte has moved either way for `idle` (`timeouts.idleMs`: a quiet WebSocket is an idle
/// connection, as nginx's `proxy_read_timeout` treats it).
pub(crate) async fn pipe<D, U>(
    downstream: &mut D,
    upstream: &mut U,
    idle: Duration,
) -> io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = PipeActivity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let mut downstream = Metered {
        io: downstream,
        activity: &activity,
    };
    let mut upstream = Metered {
        io: upstream,
        activity: &activity,
    };
    let copy = tokio::io::copy_bidirectional(&mut downstream, &mut upstream);
    tokio::pin!(copy);
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            result = &mut copy => return result.map(|_| ()),
            () = &mut timer => {
                let deadline = activity.last() + idle;
                if deadline <= Instant::now() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "upgraded connection idle"));
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// When a byte last moved through a pipe, in milliseconds after `started`.
struct PipeActivity {
    started: Instant,
    last_ms: AtomicU64,
}

impl PipeActivity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// One side of a pipe that records every byte it reads as activity.
struct Metered<'a, T> {
    io: &'a mut T,
    activity: &'a PipeActivity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}
