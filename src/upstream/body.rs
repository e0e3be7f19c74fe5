//! An upstream response body, holding what the response holds of its connection (an
//! HTTP/1.1 connection to give back to its pool, an HTTP/2 stream counted open) and of its
//! endpoint (the request counted in flight there).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h2;
use super::load::InFlight;
use super::pool::CheckIn;

/// The most an upstream HTTP/1.1 connection buffers: the app's response header must fit, and
/// a response body is read in chunks of at most this size, so a downstream client that stops
/// reading holds at most about twice this per request (docs/operations.md "Memory under attack").
pub(crate) const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

/// An upstream response body; an HTTP/1.1 connection goes back to the pool once it has been
/// read to its end (a body dropped before that closes the connection instead), an HTTP/2
/// stream counts as open until the body is dropped.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Incoming,
    checkin: Option<CheckIn>,
    _stream: Option<h2::Stream>,
    /// Counts the request in flight at its endpoint until the body is dropped.
    _in_flight: Option<InFlight>,
}

/// What a response holds of its connection.
pub(super) enum Lease {
    Http1(Option<CheckIn>),
    Http2(h2::Stream),
}

impl UpstreamBody {
    pub(super) fn new(inner: Incoming, lease: Lease, in_flight: Option<InFlight>) -> Self {
        let (checkin, stream) = match lease {
            Lease::Http1(checkin) => (checkin, None),
            Lease::Http2(stream) => (None, Some(stream)),
        };
        let mut body = Self {
            inner,
            checkin,
            _stream: stream,
            _in_flight: in_flight,
        };
        // An empty body (204, 304, a HEAD) may never be polled.
        body.give_back_if_done();
        body
    }

    fn give_back_if_done(&mut self) {
        if self.inner.is_end_stream()
            && let Some(checkin) = self.checkin.take()
        {
            checkin.give_back();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(checkin) = this.checkin.take() {
                    checkin.give_back();
                }
            }
            Poll::Ready(Some(Ok(_))) => this.give_back_if_done(),
            // A broken body leaves a connection nobody should reuse.
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
