//! The pooled client for one app's upstream: HTTP/1.1 keep-alive or HTTP/2, in cleartext or
//! over TLS (`stream.rs` connects), connect and response-header timeouts. The response timeout
//! starts once the request body has been forwarded whole: a slow upload is the client's time,
//! not the app's (as in Envoy), bounded by `requestBodyIdleMs` between the client's body bytes.
//!
//! HTTP/1.1 connections live in pools of certgate's own (`pool`): a request takes an idle
//! connection and its response gives it back once its body has been read to the end. HTTP/2
//! multiplexes the requests of a worker thread over one connection (`h2`), whatever authority
//! each names: connections are the app's, never keyed by what the client sent. Every
//! connection holds a slot of `limits.maxUpstreamConnectionsPerApp` (`limit`) until it
//! closes; a reload retires the client (`retire`). An upstream named by DNS is dialed at the
//! addresses its discovery (`discovery`) holds now, and connections to an address that left
//! the set are not reused.

pub(crate) mod discovery;
mod error;
pub(crate) mod gap;
mod h2;
mod limit;
mod pool;
pub(crate) mod request_body;
mod stream;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use self::discovery::{Addresses, Membership};
pub(crate) use self::error::UpstreamError;
use self::h2::{Dialing, H2Pools};
use self::limit::{Connections, Slot, Waited};
use self::pool::{CheckIn, Http1, Pools};
use self::request_body::{CLIENT_BROKE_OFF, CLIENT_STALLED, RequestBody, TrailerFilter};
use self::stream::Dialer;
use crate::settings::{Timeouts, Transport, Upstream};
use crate::tls::upstream::AppTls;

/// The most an upstream HTTP/1.1 connection buffers: the app's response header must fit, and
/// a response body is read in chunks of at most this size, so a downstream client that stops
/// reading holds at most about twice this per request (docs/operations.md "Memory under attack").
pub(crate) const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

/// How sending a request ended without a response; `ProxyError` maps each to its status.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The client broke off its request body.
    ClientBrokeOff,
    /// The client sent no request-body bytes for `requestBodyIdleMs`.
    ClientStalled,
    /// The app's response header did not come within `upstreamResponseMs`.
    Timeout,
    /// No connection to the app came free within `upstreamConnectMs`
    /// (`limits.maxUpstreamConnectionsPerApp`).
    Saturated,
    /// The request needed a new connection of a client a reload retired.
    Retired,
    /// The exchange with the app failed.
    Failed(UpstreamError),
}

/// Sends requests to one upstream over pooled connections.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Connects to the app, with TLS for an `https://` upstream.
    dialer: Dialer,
    /// `upstreamConnectMs`: also how long a request waits for a connection slot.
    connect_timeout: Duration,
    response_timeout: Duration,
    /// `requestBodyIdleMs`.
    body_idle: Duration,
    /// The bound on open connections, and whether a reload retired this client.
    connections: Arc<Connections>,
    /// HTTP/1.1: idle connections, one pool per worker thread, so a connection is used by the
    /// thread whose runtime drives it.
    pools: Arc<Pools>,
    /// HTTP/2 (h2c, or h2 over TLS): a connection per worker thread, shared by its requests
    /// whatever authority they name.
    h2: Option<Arc<H2Pools>>,
    /// Once retired: the same app's client in the config that replaced this one, which sends
    /// what would need a new connection here.
    successor: std::sync::OnceLock<UpstreamClient>,
}

impl UpstreamClient {
    /// A client for `upstream` (speaking `tls` to an `https://` one) with the configured
    /// timeouts and at most `max_connections` connections open; `addresses` are those its
    /// DNS name resolves to, for an upstream named by one.
    pub(crate) fn new(
        upstream: &Upstream,
        tls: Option<AppTls>,
        timeouts: &Timeouts,
        max_connections: usize,
        workers: usize,
        addresses: Option<tokio::sync::watch::Receiver<Addresses>>,
    ) -> Self {
        let connections = Arc::new(Connections::new(max_connections));
        let membership = Membership::new(addresses.clone());
        Self {
            inner: Arc::new(Inner {
                dialer: Dialer::new(upstream, tls, timeouts.upstream_connect, addresses),
                connect_timeout: timeouts.upstream_connect,
                response_timeout: timeouts.upstream_response,
                body_idle: timeouts.request_body_idle,
                pools: Arc::new(Pools::new(workers, connections.clone(), membership.clone())),
                h2: (upstream.transport == Transport::Http2)
                    .then(|| Arc::new(H2Pools::new(workers, membership))),
                connections,
                successor: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Retires the client (its config generation was replaced): it never dials again; a
    /// request that needs a new connection goes to `successor` (the same app's client in the
    /// newer config, speaking the same protocol), or fails at once without one. Its idle
    /// HTTP/1.1 connections close now, its HTTP/2 connections once their open streams end,
    /// and the connections of requests in flight close when their exchange is over instead
    /// of going back to a pool.
    pub(crate) fn retire(&self, successor: Option<UpstreamClient>) {
        if let Some(successor) = successor {
            let _ = self.inner.successor.set(successor);
        }
        self.inner.connections.retire();
        self.inner.pools.close_idle();
        if let Some(h2) = &self.inner.h2 {
            h2.close_all();
        }
    }

    /// Sends a request whose URI is in the form the app takes (origin-form for HTTP/1.1, the
    /// client's authority for h2c); waits for the response header, at most
    /// `upstreamResponseMs` from the end of the request body. A trailer section of the
    /// request goes through `clean_trailers` first.
    pub(crate) async fn send(
        &self,
        request: Request<Incoming>,
        clean_trailers: TrailerFilter,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, body) = request.into_parts();
        let (body, body_sent) = RequestBody::new(body, self.inner.body_idle, clean_trailers);
        let client_failed = body.client_failed.clone();
        // Who failed decides the status: a client that broke off or stalled its upload is not
        // the app's fault, though the upstream request fails with it (and the upstream
        // connection, its request unfinished, is closed rather than reused).
        let classify =
            |source: UpstreamError| match (source.cause(), client_failed.load(Ordering::Relaxed)) {
                (UpstreamError::Saturated, _) => SendError::Saturated,
                (UpstreamError::Retired, _) => SendError::Retired,
                (_, CLIENT_BROKE_OFF) => SendError::ClientBrokeOff,
                (_, CLIENT_STALLED) => SendError::ClientStalled,
                _ => SendError::Failed(source),
            };
        let request = Request::from_parts(parts, body);
        let response = self.exchange(request);
        tokio::pin!(response);
        if let Some(body_sent) = body_sent {
            tokio::select! {
                result = &mut response => return result.map_err(classify),
                // Also when the body is dropped unfinished: the app answered early or failed.
                _ = body_sent => {}
            }
        }
        match tokio::time::timeout(self.inner.response_timeout, response).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(SendError::Timeout),
        }
    }

    /// The client that sends this one's requests once a reload retired it.
    fn successor(&self) -> Option<&UpstreamClient> {
        self.inner
            .connections
            .is_retired()
            .then(|| self.inner.successor.get())
            .flatten()
    }

    async fn exchange(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // The rare and the large futures are boxed: every request's future is moved by hyper
        // (into its task for HTTP/2), so whatever it holds inline is copied each time.
        if let Some(successor) = self.successor() {
            return Box::pin(successor.exchange(request)).await;
        }
        if let Some(h2) = &self.inner.h2 {
            let dialing = Dialing {
                dialer: &self.inner.dialer,
                connections: &self.inner.connections,
                connect_timeout: self.inner.connect_timeout,
            };
            let (response, stream) = Box::pin(dialing.exchange_h2(h2, request)).await?;
            return Ok(response.map(|body| UpstreamBody::new(body, Lease::Http2(stream))));
        }
        let (mut connection, fresh) = match self.checkout().await {
            Some(connection) => (connection, None),
            None => match Box::pin(self.http1_connection()).await {
                Ok(dialed) => dialed,
                // Retired while this request waited for a connection.
                Err(UpstreamError::Retired) => match self.successor() {
                    Some(successor) => return Box::pin(successor.exchange(request)).await,
                    None => return Err(UpstreamError::Retired),
                },
                Err(error) => return Err(error),
            },
        };
        let (connection, response) = match connection.sender.try_send_request(request).await {
            Ok(response) => (connection, response),
            Err(error) => match fresh {
                // The app alerted right after the handshake (a refused client certificate,
                // under TLS 1.3), whichever way hyper saw the connection end.
                Some(alert) => {
                    let error = error.into_error();
                    return Err(match alert.failure() {
                        Some(reason) => UpstreamError::Tls {
                            reason,
                            source: Box::new(error),
                        },
                        None => UpstreamError::Http { source: error },
                    });
                }
                None => Box::pin(self.resend(error)).await?,
            },
        };
        // A connection that switched protocols (WebSocket) is never reused.
        let reusable = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        let checkin = reusable.then(|| CheckIn {
            connection,
            pools: self.inner.pools.clone(),
        });
        Ok(response.map(|body| UpstreamBody::new(body, Lease::Http1(checkin))))
    }

    /// After a failed send: a pooled connection the app closed while it was idle did not
    /// write the request, so it goes out again on another connection; any other failure is
    /// the request's.
    async fn resend(
        &self,
        mut error: hyper::client::conn::TrySendError<Request<RequestBody>>,
    ) -> Result<(Http1, Response<Incoming>), UpstreamError> {
        let Some(request) = error.take_message() else {
            return Err(UpstreamError::Http {
                source: error.into_error(),
            });
        };
        let (mut connection, alert) = self.http1_connection().await?;
        let response =
            connection
                .sender
                .send_request(request)
                .await
                .map_err(
                    |source| match alert.as_ref().and_then(stream::Alert::failure) {
                        Some(reason) => UpstreamError::Tls {
                            reason,
                            source: Box::new(source),
                        },
                        None => UpstreamError::Http { source },
                    },
                )?;
        Ok((connection, response))
    }

    /// The most recently used idle connection of this worker that is still open.
    async fn checkout(&self) -> Option<Http1> {
        loop {
            let mut connection = self.inner.pools.take()?;
            if connection.sender.ready().await.is_ok() {
                return Some(connection);
            }
        }
    }

    /// A new HTTP/1.1 connection and what records an alert the app sends on it, or, when
    /// every slot is taken, an idle connection that comes back first (then without alert).
    async fn http1_connection(&self) -> Result<(Http1, Option<stream::Alert>), UpstreamError> {
        let slot = match self.inner.connections.try_slot()? {
            Some(slot) => slot,
            None => {
                let deadline = Instant::now() + self.inner.connect_timeout;
                loop {
                    let pools = &self.inner.pools;
                    match self
                        .inner
                        .connections
                        .wait(deadline, || pools.take_any())
                        .await?
                    {
                        Waited::Slot(slot) => break slot,
                        Waited::Connection(mut connection) => {
                            if connection.sender.ready().await.is_ok() {
                                return Ok((connection, None));
                            }
                        }
                    }
                }
            }
        };
        let (connection, alert) = self.connect(slot).await?;
        Ok((connection, Some(alert)))
    }

    /// A new HTTP/1.1 connection in `slot`, and what records an alert the app sends on it.
    async fn connect(&self, slot: Slot) -> Result<(Http1, stream::Alert), UpstreamError> {
        let stream = self.inner.dialer.dial(slot).await?;
        let alert = stream.alert();
        let peer = stream.peer();
        let (mut sender, connection) = http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUFFER)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Http { source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(error = %error, "upstream connection closed with an error");
            }
        });
        sender
            .ready()
            .await
            .map_err(|source| UpstreamError::Http { source })?;
        Ok((Http1 { sender, peer }, alert))
    }
}

/// An upstream response body; an HTTP/1.1 connection goes back to the pool once it has been
/// read to its end (a body dropped before that closes the connection instead), an HTTP/2
/// stream counts as open until the body is dropped.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Incoming,
    checkin: Option<CheckIn>,
    _stream: Option<h2::Stream>,
}

/// What a response holds of its connection.
enum Lease {
    Http1(Option<CheckIn>),
    Http2(h2::Stream),
}

impl UpstreamBody {
    fn new(inner: Incoming, lease: Lease) -> Self {
        let (checkin, stream) = match lease {
            Lease::Http1(checkin) => (checkin, None),
            Lease::Http2(stream) => (None, Some(stream)),
        };
        let mut body = Self {
            inner,
            checkin,
            _stream: stream,
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
