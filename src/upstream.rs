//! The client for one app's upstreams: its groups (the app's `upstream`, or the `revisions`
//! `ingress.traffic` splits requests between by weight, in a smooth weighted round robin),
//! each a set of endpoints (`endpoints`: an address each, least-request between them, passive
//! health), each with pooled connections (`endpoint`): HTTP/1.1 keep-alive or HTTP/2, in
//! cleartext or over TLS (`stream.rs` connects), connect and response-header timeouts. The
//! response timeout starts once the request body has been forwarded whole: a slow upload is
//! the client's time, not the app's (as in Envoy), bounded by `requestBodyIdleMs` between the
//! client's body bytes.
//!
//! A request that never left certgate (no connection to its endpoint) is sent again to
//! another endpoint of its group, and so is an idempotent request without a body whose
//! connection was reset before any response byte, at most `retries` times in all; one that
//! may have reached the app is never sent again.
//!
//! HTTP/1.1 connections live in pools of certgate's own (`pool`): a request takes an idle
//! connection and its response gives it back once its body has been read to the end. HTTP/2
//! multiplexes the requests of a worker thread over one connection per endpoint (`h2`),
//! whatever authority each names: connections are the app's, never keyed by what the client
//! sent. Every connection, to whichever endpoint, holds a slot of
//! `limits.maxUpstreamConnectionsPerApp` (`limit`) until it closes; a reload retires the
//! client (`retire`). An upstream named by DNS is resolved in the background (`discovery`),
//! and its endpoints follow the addresses it holds.

mod affinity;
mod body;
pub(crate) mod discovery;
mod endpoint;
pub(crate) mod endpoints;
mod error;
pub(crate) mod gap;
mod h2;
mod health;
mod load;
mod limit;
mod pool;
pub(crate) mod request_body;
pub(crate) mod state;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};

pub(crate) use self::affinity::COOKIE as AFFINITY_COOKIE;
pub(crate) use self::affinity::key as affinity_key;
pub(crate) use self::body::{UPSTREAM_READ_BUFFER, UpstreamBody};
use self::endpoint::{Endpoint, EndpointTemplate};
use self::endpoints::{Addresses, EndpointSet};
pub(crate) use self::error::{Attempt, UpstreamError};
use self::limit::Connections;
use self::request_body::{CLIENT_BROKE_OFF, CLIENT_STALLED, RequestBody, TrailerFilter};
use crate::metrics::upstream::GroupMetrics;
use crate::settings::{Timeouts, Upstream};
use crate::tls::upstream::AppTls;

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

/// How many times a response's request was sent again before this response; kept in the
/// response's extensions for the access line when above 0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retried(pub u32);

/// The endpoint a request was sent to (the last one, when it was sent again), and its
/// group: what its access line and the warning of its failure name. A reference count, no
/// copy.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    endpoint: Arc<Endpoint>,
}

impl Peer {
    /// The group's name: `latest`, a revision's name, or `upstream-<n>`.
    pub(crate) fn group(&self) -> &str {
        self.endpoint.group()
    }

    /// The group's upstream, as its URL names it.
    pub(crate) fn upstream(&self) -> &Upstream {
        self.endpoint.upstream()
    }

    /// The endpoint's address (the upstream's `host:port` for one that dials the name).
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint.label
    }
}

/// What one group of a client is made of.
#[derive(Debug)]
pub(crate) struct GroupSpec<'a> {
    /// `latest`, or the revision's name.
    pub name: &'a str,
    pub upstream: &'a Upstream,
    /// TLS to an `https://` upstream.
    pub tls: Option<AppTls>,
    /// Its share of the app's requests.
    pub weight: u32,
    /// The group's address set and its later changes (`endpoints`).
    pub addresses: Addresses,
    pub metrics: GroupMetrics,
}

/// What a client's groups share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSettings<'a> {
    pub app: &'a str,
    pub timeouts: &'a Timeouts,
    /// `limits.maxUpstreamConnectionsPerApp`, for all its endpoints together.
    pub max_connections: usize,
    pub workers: usize,
    /// `retries`.
    pub retries: u32,
    /// `healthCheck`: active health checks of every endpoint of every group.
    pub health_check: Option<&'a crate::settings::HealthCheck>,
    /// With sticky sessions, the key of the cookie's values (`affinity::key`).
    pub affinity_key: Option<[u8; 32]>,
}

/// Sends requests to one app's upstreams over pooled connections.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    groups: Box<[Arc<EndpointSet>]>,
    /// The endpoint every request goes to, for an app with one group of one endpoint whose
    /// address never changes, without sticky sessions (most apps): no set to load, no
    /// choice, nothing sent again elsewhere.
    direct: Option<Arc<Endpoint>>,
    /// The order groups take requests in (smooth weighted round robin over the weights);
    /// empty with one group.
    schedule: Box<[usize]>,
    /// The position in `schedule` of the next request.
    next: AtomicUsize,
    response_timeout: Duration,
    /// `requestBodyIdleMs`.
    body_idle: Duration,
    retries: u32,
    /// Whether requests stick to the endpoint their cookie names (`affinity`).
    sticky: bool,
    /// The bound on open connections, and whether a reload retired this client.
    connections: Arc<Connections>,
    /// Once retired: the same app's client in the config that replaced this one, which sends
    /// what would need a new connection here.
    successor: std::sync::OnceLock<UpstreamClient>,
}

impl UpstreamClient {
    /// A client for `groups` (at least one) with the settings they share.
    pub(crate) fn new(groups: Vec<GroupSpec<'_>>, settings: ClientSettings<'_>) -> Self {
        let connections = Arc::new(Connections::new(settings.max_connections));
        let weights: Vec<u32> = groups.iter().map(|group| group.weight).collect();
        let health = settings.health_check.cloned().map(Arc::new);
        let groups = groups
            .into_iter()
            .map(|group| {
                let template = EndpointTemplate {
                    upstream: group.upstream.clone(),
                    tls: group.tls,
                    connect_timeout: settings.timeouts.upstream_connect,
                    connections: connections.clone(),
                    workers: settings.workers,
                    health: health.clone(),
                    affinity_key: settings.affinity_key,
                };
                EndpointSet::new(
                    settings.app,
                    group.name,
                    template,
                    group.addresses,
                    group.metrics,
                )
            })
            .collect::<Box<[Arc<EndpointSet>]>>();
        let direct = match &*groups {
            [only] if settings.affinity_key.is_none() => only.lone(),
            _ => None,
        };
        Self {
            inner: Arc::new(Inner {
                groups,
                direct,
                schedule: schedule(&weights).into_boxed_slice(),
                next: AtomicUsize::new(0),
                response_timeout: settings.timeouts.upstream_response,
                body_idle: settings.timeouts.request_body_idle,
                retries: settings.retries,
                sticky: settings.affinity_key.is_some(),
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
        for group in &self.inner.groups {
            // A group the newer config keeps has its gauges set by that config's group now.
            let kept = successor.as_ref().is_some_and(|successor| {
                successor
                    .inner
                    .groups
                    .iter()
                    .any(|next| next.name() == group.name())
            });
            group.retire(kept);
        }
        if let Some(successor) = successor {
            let _ = self.inner.successor.set(successor);
        }
        self.inner.connections.retire();
    }

    /// Sends a request whose URI is in the form the app takes (origin-form for HTTP/1.1, the
    /// client's authority for h2c); waits for the response header, at most
    /// `upstreamResponseMs` from the end of the request body. A trailer section of the
    /// request goes through `clean_trailers` first. With `group` (a label host's), the
    /// request goes to that group alone. `peer` is set to where the request goes each time
    /// it is sent (again), so that it names the last endpoint however the request ends.
    pub(crate) async fn send(
        &self,
        request: Request<Incoming>,
        clean_trailers: TrailerFilter,
        group: Option<&str>,
        peer: &mut Option<Peer>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, body) = request.into_parts();
        // With sticky sessions: the endpoint the request's cookie names, if any.
        let sticky = self
            .inner
            .sticky
            .then(|| affinity::requested(&parts.headers));
        let stick = |mut response: Response<UpstreamBody>| {
            if let Some(requested) = sticky {
                affinity::answer(&mut response, requested);
            }
            response
        };
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
        let response = self.exchange(request, group, sticky.flatten(), peer);
        tokio::pin!(response);
        if let Some(body_sent) = body_sent {
            tokio::select! {
                result = &mut response => return result.map(stick).map_err(classify),
                // Also when the body is dropped unfinished: the app answered early or failed.
                _ = body_sent => {}
            }
        }
        match tokio::time::timeout(self.inner.response_timeout, response).await {
            Ok(result) => result.map(stick).map_err(classify),
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

    /// The group the next request goes to: `named`, or by weight.
    fn group(&self, named: Option<&str>) -> &Arc<EndpointSet> {
        let groups = &self.inner.groups;
        if let Some(named) = named
            && let Some(group) = groups.iter().find(|group| group.name() == named)
        {
            return group;
        }
        let schedule = &self.inner.schedule;
        let index = if schedule.is_empty() {
            0
        } else {
            let position = self.inner.next.fetch_add(1, Ordering::Relaxed) % schedule.len();
            schedule.get(position).copied().unwrap_or(0)
        };
        // `groups` is never empty and `schedule` holds its indices only.
        groups.get(index).unwrap_or_else(|| &groups[0])
    }

    /// The endpoint of a sticky app that the cookie value `value` names, and its group: in
    /// a group's set (in group `named` for a label host) and not ejected.
    fn pinned(
        &self,
        value: u64,
        named: Option<&str>,
    ) -> Option<(&Arc<EndpointSet>, Arc<Endpoint>)> {
        self.inner
            .groups
            .iter()
            .filter(|group| named.is_none_or(|named| group.name() == named))
            .find_map(|group| {
                group
                    .current()
                    .iter()
                    .find(|endpoint| endpoint.affinity == value && !endpoint.is_ejected())
                    .map(|endpoint| (group, endpoint.clone()))
            })
    }

    /// Marks a response of a sticky app with the endpoint that answered it.
    fn served(&self, response: &mut Response<UpstreamBody>, endpoint: &Endpoint) {
        if self.inner.sticky {
            response
                .extensions_mut()
                .insert(affinity::Served(endpoint.affinity));
        }
    }

    async fn exchange(
        &self,
        request: Request<RequestBody>,
        named: Option<&str>,
        pinned: Option<u64>,
        peer: &mut Option<Peer>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if let Some(successor) = self.successor() {
            return Box::pin(successor.exchange(request, named, pinned, peer)).await;
        }
        let (group, endpoint, several) = if let Some(endpoint) = &self.inner.direct {
            let group = &self.inner.groups[0];
            if endpoint.is_ejected() {
                group.none_healthy();
            }
            (group, endpoint.clone(), false)
        } else if let Some((group, endpoint)) = pinned.and_then(|value| self.pinned(value, named)) {
            (group, endpoint, group.current().len() > 1)
        } else {
            let group = self.group(named);
            let endpoints = group.current();
            let Some(endpoint) = endpoints::pick(&endpoints, &[], || group.none_healthy()) else {
                return Err(UpstreamError::Retired);
            };
            (group, endpoint.clone(), endpoints.len() > 1)
        };
        if self.inner.retries != 0 && several {
            return Box::pin(
                self.exchange_with_retries(group, endpoint, request, named, pinned, peer),
            )
            .await;
        }
        // One endpoint (or no retries): nothing to send again elsewhere. Sent from this one
        // await whichever way the endpoint was found, so that every request's future holds
        // the endpoint's exchange inline once (2.0 KiB here, 3.9 KiB with an await per way).
        // The peer holds the endpoint from here on.
        let endpoint = &peer.insert(Peer { endpoint }).endpoint;
        let in_flight = endpoint.start();
        match endpoint.exchange(request, in_flight).await {
            Ok(mut response) => {
                endpoint.succeeded();
                self.served(&mut response, endpoint);
                Ok(response)
            }
            Err(Attempt::NotSent { error, request }) => {
                self.after_failure(group, endpoint, &error);
                match (&error, self.successor()) {
                    (UpstreamError::Retired, Some(successor)) => {
                        Box::pin(successor.exchange(*request, named, pinned, peer)).await
                    }
                    _ => Err(error),
                }
            }
            Err(Attempt::Sent(error)) => {
                self.after_failure(group, endpoint, &error);
                Err(error)
            }
        }
    }

    /// Sends `request` to `endpoint`, then, when it did not leave certgate or (idempotent and
    /// without a body) its connection was reset before a response byte, to another endpoint
    /// of `group`, at most `retries` times.
    async fn exchange_with_retries(
        &self,
        group: &Arc<EndpointSet>,
        first: Arc<Endpoint>,
        mut request: Request<RequestBody>,
        named: Option<&str>,
        pinned: Option<u64>,
        peer: &mut Option<Peer>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // What an idempotent request without a body is sent again from, once.
        let mut replay = replayable(&request).then(|| {
            let mut head = Request::new(());
            *head.method_mut() = request.method().clone();
            *head.uri_mut() = request.uri().clone();
            *head.version_mut() = request.version();
            *head.headers_mut() = request.headers().clone();
            head
        });
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        let mut endpoint = first;
        loop {
            let in_flight = endpoint.start();
            *peer = Some(Peer {
                endpoint: endpoint.clone(),
            });
            let error = match endpoint.exchange(request, in_flight).await {
                Ok(mut response) => {
                    endpoint.succeeded();
                    self.served(&mut response, &endpoint);
                    if !tried.is_empty() {
                        let retried = u32::try_from(tried.len()).unwrap_or(u32::MAX);
                        response.extensions_mut().insert(Retried(retried));
                    }
                    return Ok(response);
                }
                Err(Attempt::NotSent {
                    error,
                    request: back,
                }) => {
                    self.after_failure(group, &endpoint, &error);
                    if matches!(error, UpstreamError::Retired)
                        && let Some(successor) = self.successor()
                    {
                        return Box::pin(successor.exchange(*back, named, pinned, peer)).await;
                    }
                    if !error.is_connect_failure() {
                        return Err(error);
                    }
                    request = *back;
                    error
                }
                Err(Attempt::Sent(error)) => {
                    self.after_failure(group, &endpoint, &error);
                    match replay.take() {
                        Some(head) if error.is_reset() => {
                            request = head.map(|()| RequestBody::empty());
                            error
                        }
                        _ => return Err(error),
                    }
                }
            };
            if u32::try_from(tried.len()).unwrap_or(u32::MAX) >= self.inner.retries {
                return Err(error);
            }
            tried.push(endpoint);
            let endpoints = group.current();
            let Some(next) = endpoints::pick(&endpoints, &tried, || group.none_healthy()) else {
                return Err(error);
            };
            tracing::debug!(endpoint = %next.label, error = %error, "sending the request again to another upstream endpoint");
            endpoint = next.clone();
        }
    }

    /// Counts a connect failure or a reset against `endpoint`'s health.
    fn after_failure(&self, group: &Arc<EndpointSet>, endpoint: &Endpoint, error: &UpstreamError) {
        if error.is_connect_failure() || error.is_reset() {
            group.failed(endpoint);
        }
    }

    #[cfg(test)]
    fn first_endpoint(&self) -> Arc<Endpoint> {
        self.inner.groups[0].current()[0].clone()
    }
}

/// Whether `request` may be sent again after its connection was reset: idempotent
/// (RFC 9110 section 9.2.2) and without a body.
fn replayable(request: &Request<RequestBody>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && request.body().is_end_stream()
}

/// The order of groups for a smooth weighted round robin over `weights` (nginx's): each
/// takes its share, spread out rather than in runs; empty for a single group.
fn schedule(weights: &[u32]) -> Vec<usize> {
    if weights.len() < 2 {
        return Vec::new();
    }
    let total: i64 = weights.iter().map(|&weight| i64::from(weight)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (index, weight) in weights.iter().enumerate() {
            current[index] += i64::from(*weight);
            if current[index] > current[best] {
                best = index;
            }
        }
        current[best] -= total;
        order.push(best);
    }
    order
}
