//! The pooled client for one app's upstream: HTTP/1.1 keep-alive or HTTP/2, in cleartext or
//! over TLS (`stream.rs` connects), connect and response-header timeouts. The response timeout
//! starts once the request body has been forwarded whole: a slow upload is the client's time,
//! not the app's (as in Envoy), bounded by `requestBodyIdleMs` between the client's body bytes.
//!
//! HTTP/1.1 connections live in pools of certgate's own (`pool`): a request takes an idle
//! connection and its response gives it back once its body has been read to the end. HTTP/2
//! multiplexes over hyper-util's client, whose request URIs name the client's authority (it
//! becomes `:authority`) while every connection goes to the app.

mod error;
pub(crate) mod gap;
mod pool;
pub(crate) mod request_body;
mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

pub(crate) use self::error::UpstreamError;
use self::pool::{CheckIn, Pools};
use self::request_body::{CLIENT_BROKE_OFF, CLIENT_STALLED, RequestBody, TrailerFilter};
use self::stream::{AppStream, Dialer};
use crate::settings::{Timeouts, Transport, Upstream};

/// How long an unused HTTP/2 connection is kept.
const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The most an upstream HTTP/1.1 connection buffers: the app's response header must fit, and
/// a response body is read in chunks of at most this size, so a downstream client that stops
/// reading holds at most about twice this per request (README "Memory under attack").
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
    response_timeout: Duration,
    /// `requestBodyIdleMs`.
    body_idle: Duration,
    /// HTTP/1.1: idle connections, one pool per worker thread, so a connection is used by the
    /// thread whose runtime drives it.
    pools: Arc<Pools>,
    /// HTTP/2 (h2c, or h2 over TLS): hyper-util's client, which shares one connection between
    /// the requests for one authority.
    h2c: Option<Client<AppConnector, RequestBody>>,
}

impl UpstreamClient {
    /// A client for `upstream` with the configured timeouts.
    pub(crate) fn new(upstream: &Upstream, timeouts: &Timeouts, workers: usize) -> Self {
        let dialer = Dialer::new(upstream, timeouts.upstream_connect);
        let h2c = (upstream.transport == Transport::Http2).then(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(H2_IDLE_TIMEOUT)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http2_only(true)
                .build(AppConnector {
                    dialer: dialer.clone(),
                })
        });
        Self {
            inner: Arc::new(Inner {
                dialer,
                response_timeout: timeouts.upstream_response,
                body_idle: timeouts.request_body_idle,
                pools: Arc::new(Pools::new(workers)),
                h2c,
            }),
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
        let classify = |source| match client_failed.load(Ordering::Relaxed) {
            CLIENT_BROKE_OFF => SendError::ClientBrokeOff,
            CLIENT_STALLED => SendError::ClientStalled,
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

    async fn exchange(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // The rare and the large futures are boxed: every request's future is moved by hyper
        // (into its task for HTTP/2), so whatever it holds inline is copied each time.
        if let Some(h2c) = &self.inner.h2c {
            let response = Box::pin(h2c.request(request)).await.map_err(|source| {
                match self.inner.dialer.recent_alert() {
                    Some(reason) => UpstreamError::Tls {
                        reason,
                        source: Box::new(source),
                    },
                    None => UpstreamError::H2c { source },
                }
            })?;
            return Ok(response.map(|body| UpstreamBody::new(body, None)));
        }
        let (mut sender, fresh) = match self.checkout().await {
            Some(sender) => (sender, None),
            None => {
                let (sender, alert) = Box::pin(self.connect()).await?;
                (sender, Some(alert))
            }
        };
        let (sender, response) = match sender.try_send_request(request).await {
            Ok(response) => (sender, response),
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
            sender,
            pools: self.inner.pools.clone(),
        });
        Ok(response.map(|body| UpstreamBody::new(body, checkin)))
    }

    /// After a failed send: a pooled connection the app closed while it was idle did not
    /// write the request, so it goes out again on a new connection; any other failure is the
    /// request's.
    async fn resend(
        &self,
        mut error: hyper::client::conn::TrySendError<Request<RequestBody>>,
    ) -> Result<(http1::SendRequest<RequestBody>, Response<Incoming>), UpstreamError> {
        let Some(request) = error.take_message() else {
            return Err(UpstreamError::Http {
                source: error.into_error(),
            });
        };
        let (mut sender, alert) = self.connect().await?;
        let response =
            sender
                .send_request(request)
                .await
                .map_err(|source| match alert.failure() {
                    Some(reason) => UpstreamError::Tls {
                        reason,
                        source: Box::new(source),
                    },
                    None => UpstreamError::Http { source },
                })?;
        Ok((sender, response))
    }

    /// The most recently used idle connection that is still open.
    async fn checkout(&self) -> Option<http1::SendRequest<RequestBody>> {
        loop {
            let mut sender = self.inner.pools.take()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A new HTTP/1.1 connection, and what records an alert the app sends on it.
    async fn connect(
        &self,
    ) -> Result<(http1::SendRequest<RequestBody>, stream::Alert), UpstreamError> {
        let stream = self.inner.dialer.dial().await?;
        let alert = stream.alert();
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
        Ok((sender, alert))
    }
}

/// Connects HTTP/2 requests to the app (h2c, or h2 over TLS), whatever authority their URI
/// names.
#[derive(Debug, Clone)]
struct AppConnector {
    dialer: Dialer,
}

impl tower_service::Service<Uri> for AppConnector {
    type Response = TokioIo<AppStream>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move { dialer.dial().await.map(TokioIo::new) })
    }
}

/// A connection lent to one response: back to the pool when its body has been read whole.
/// An upstream response body; the connection goes back to the pool once it has been read to
/// its end (a body dropped before that closes the connection instead).
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Incoming,
    checkin: Option<CheckIn>,
}

impl UpstreamBody {
    fn new(inner: Incoming, checkin: Option<CheckIn>) -> Self {
        let mut body = Self { inner, checkin };
        // An empty body (204, 304, a HEAD) may never be polled.
        body.give_back_if_done();
        body
    }

    fn give_back_if_done(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(checkin) = self.checkin.take() {
                checkin.give_back();
            }
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
