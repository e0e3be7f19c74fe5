//! Active health checks (`healthCheck`): a task per endpoint sends `GET path` every
//! `interval` on a connection of its own (the endpoint's transport: HTTP/1.1, h2c, or TLS
//! with the group's config), closed after the answer. A probe succeeds when the status is
//! `expectedStatus` within `timeout` (connection included). `unhealthyThreshold` failures in
//! a row take the endpoint out of the balancing (`Endpoint::is_ejected`, shown as `ejected`),
//! `healthyThreshold` successes in a row bring it back; each change is logged. An endpoint
//! starts healthy, and its first probe goes out at once.
//!
//! The task ends when its endpoint leaves its group (drains or is dropped) or the group's
//! client retires. A probe that finds every connection slot of the app taken is skipped:
//! it counts neither way.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;

use super::endpoint::Endpoint;
use crate::settings::{HealthCheck, Transport, Upstream};

/// What a health check tells about its endpoint: the endpoint's group.
pub(super) trait Watcher: Send + Sync {
    /// Whether the group's client retired: the check ends.
    fn is_retired(&self) -> bool;
    /// The check took `endpoint` out (`Some` reason) or brought it back (`None`).
    fn health_changed(&self, endpoint: &Endpoint, failure: Option<&str>);
}

/// What one probe found.
enum Outcome {
    Healthy,
    Unhealthy(String),
    /// No connection slot was free: nothing was learnt.
    Skipped,
}

/// Probes `endpoint` of `set` every `check.interval` until it leaves the set or the set's
/// client retires; `counters` count successes and failures.
async fn run(
    set: Weak<dyn Watcher>,
    endpoint: Weak<Endpoint>,
    upstream: Upstream,
    check: Arc<HealthCheck>,
    counters: [Counter; 2],
) {
    let mut successes = 0u32;
    let mut failures = 0u32;
    let mut interval = tokio::time::interval(check.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
        if endpoint.is_draining() || set.upgrade().is_none_or(|set| set.is_retired()) {
            return;
        }
        match probe(&endpoint, &upstream, &check).await {
            Outcome::Skipped => continue,
            Outcome::Healthy => {
                counters[0].inc();
                failures = 0;
                successes = successes.saturating_add(1);
                if endpoint.is_unhealthy()
                    && successes >= check.healthy_threshold
                    && endpoint.set_unhealthy(false)
                    && let Some(set) = set.upgrade()
                {
                    set.health_changed(&endpoint, None);
                }
            }
            Outcome::Unhealthy(reason) => {
                counters[1].inc();
                successes = 0;
                failures = failures.saturating_add(1);
                tracing::debug!(endpoint = %endpoint.label, reason = %reason, "upstream health check failed");
                if !endpoint.is_unhealthy()
                    && failures >= check.unhealthy_threshold
                    && endpoint.set_unhealthy(true)
                    && let Some(set) = set.upgrade()
                {
                    set.health_changed(&endpoint, Some(&reason));
                }
            }
        }
    }
}

/// One probe of `endpoint`.
async fn probe(endpoint: &Endpoint, upstream: &Upstream, check: &HealthCheck) -> Outcome {
    let (dialer, connections) = endpoint.dialer();
    let Ok(Some(slot)) = connections.try_slot() else {
        return Outcome::Skipped;
    };
    let exchange = async {
        let stream = dialer.dial(slot).await.map_err(|error| error.to_string())?;
        let io = TokioIo::new(stream);
        let status = if upstream.transport == Transport::Http2 {
            let scheme = if upstream.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let request = Request::get(format!("{scheme}://{}{}", upstream.authority, check.path))
                .header(http::header::USER_AGENT, USER_AGENT)
                .body(Empty::<Bytes>::new())
                .map_err(|error| error.to_string())?;
            let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|error| error.to_string())?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .map_err(|error| error.to_string())?
                .status()
        } else {
            let request = Request::get(check.path.as_str())
                .header(http::header::HOST, upstream.authority.as_str())
                .header(http::header::USER_AGENT, USER_AGENT)
                .header(http::header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|error| error.to_string())?;
            let (mut sender, connection) = http1::handshake(io)
                .await
                .map_err(|error| error.to_string())?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .map_err(|error| error.to_string())?
                .status()
        };
        if status == check.expected_status {
            Ok(())
        } else {
            Err(format!("answered {}", status.as_u16()))
        }
    };
    match tokio::time::timeout(check.timeout, exchange).await {
        Ok(Ok(())) => Outcome::Healthy,
        Ok(Err(reason)) => Outcome::Unhealthy(reason),
        Err(_) => Outcome::Unhealthy("no answer within healthCheck.timeoutMs".to_owned()),
    }
}

/// The `User-Agent` of a probe, so that the app can tell it from a client's request.
const USER_AGENT: &str = "certgate-health-check";

/// Starts the health check `check` of `endpoint` of `upstream`'s group `set`, when a
/// runtime runs.
pub(super) fn start(
    set: Weak<dyn Watcher>,
    endpoint: &Arc<Endpoint>,
    upstream: &Upstream,
    check: &Arc<HealthCheck>,
    counters: [Counter; 2],
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(run(
        set,
        Arc::downgrade(endpoint),
        upstream.clone(),
        check.clone(),
        counters,
    ));
}
