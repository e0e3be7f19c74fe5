//! The pooled client for one app's upstream: HTTP/1.1 keep-alive or h2c, connect and
//! response-header timeouts.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::ProxyError;
use crate::config::{Timeouts, Transport, Upstream};

/// How long an unused pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Sends requests to one upstream over pooled connections.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, Incoming>,
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

    /// Sends a request whose URI already names the upstream; waits for the response header.
    pub async fn send(&self, request: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => Err(ProxyError::Upstream { source }),
            Err(_) => Err(ProxyError::UpstreamTimeout),
        }
    }
}
