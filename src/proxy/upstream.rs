//! The pooled client for one app's upstream: HTTP/1.1 keep-alive or h2c, connect and
//! response-header timeouts. The response timeout starts once the request body has been
//! forwarded whole: a slow upload is the client's time, not the app's (as in Envoy).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use super::error::ProxyError;
use crate::config::{Timeouts, Transport, Upstream};

/// How long an unused pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Sends requests to one upstream over pooled connections.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, RequestBody>,
    response_timeout: Duration,
}

impl UpstreamClient {
    /// A client for `upstream` with the configured timeouts.
    pub fn new(upstream: &Upstream, timeouts: &Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.upstream_connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(upstream.transport == Transport::Http2)
            .build(connector);
        Self {
            client,
            response_timeout: timeouts.upstream_response,
        }
    }

    /// Sends a request whose URI already names the upstream; waits for the response header,
    /// at most `upstreamResponseMs` from the end of the request body.
    pub async fn send(&self, request: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        let (parts, body) = request.into_parts();
        let (body, body_sent) = RequestBody::new(body);
        let client_failed = body.client_failed.clone();
        // Who failed decides the status: a client that broke off its upload is not the app's
        // fault, though the upstream request fails with it.
        let classify = |source| {
            if client_failed.load(Ordering::Relaxed) {
                ProxyError::BadRequest {
                    reason: "request body broken off by the client",
                }
            } else {
                ProxyError::Upstream { source }
            }
        };
        let response = self.client.request(Request::from_parts(parts, body));
        tokio::pin!(response);
        tokio::select! {
            result = &mut response => return result.map_err(classify),
            // Also when the body is dropped unfinished: the app answered early or failed.
            _ = body_sent => {}
        }
        match tokio::time::timeout(self.response_timeout, response).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(ProxyError::UpstreamTimeout),
        }
    }
}

/// The downstream request body on its way upstream; reports when it has been read to its end,
/// and whether the client broke it off.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    sent: Option<oneshot::Sender<()>>,
    client_failed: Arc<AtomicBool>,
}

impl RequestBody {
    fn new(inner: Incoming) -> (Self, oneshot::Receiver<()>) {
        let (sent, receiver) = oneshot::channel();
        let mut body = Self {
            inner,
            sent: Some(sent),
            client_failed: Arc::new(AtomicBool::new(false)),
        };
        // An empty body (e.g. a GET) may never be polled.
        body.report_if_done();
        (body, receiver)
    }

    fn report_if_done(&mut self) {
        if self.inner.is_end_stream() {
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => {
                this.client_failed.store(true, Ordering::Relaxed);
                this.report_sent();
            }
            Poll::Ready(None) => this.report_sent(),
            Poll::Ready(Some(Ok(_))) => this.report_if_done(),
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
