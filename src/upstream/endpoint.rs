//! One endpoint of an upstream group (an address the app's host resolved to): its own
//! connections (an HTTP/1.1 pool per worker, or an HTTP/2 connection per worker), the
//! requests it has in flight (what least-request compares), and its passive health: after
//! `EJECT_AFTER` failures in a row it is ejected for `EJECT_BASE` times the number of times
//! it has been ejected, at most `EJECT_MAX` (Envoy's outlier detection).
//!
//! An exchange says whether the request left certgate (`Attempt`): one that never did comes
//! back, to be sent to another endpoint. Its response body keeps it counted in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use super::body::{Lease, UPSTREAM_READ_BUFFER, UpstreamBody};
use super::error::{Attempt, UpstreamError};
use super::h2::{Dialing, H2Pools};
use super::limit::{Connections, Slot, Waited};
use super::load::{InFlight, Load};
use super::pool::{CheckIn, Pools};
use super::request_body::RequestBody;
use super::stream::{self, Dialer};
use crate::settings::{Transport, Upstream};
use crate::tls::upstream::AppTls;

/// Failures in a row (connect failures, connections reset before a response) that eject an
/// endpoint: Envoy's `consecutive_5xx` default counts 5.
pub(crate) const EJECT_AFTER: u32 = 5;
/// The first ejection's length; each further one in a row lasts this much longer.
pub(crate) const EJECT_BASE: Duration = Duration::from_secs(30);
/// The longest ejection.
pub(crate) const EJECT_MAX: Duration = Duration::from_secs(300);

/// One address of an upstream group and its connections.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// The address dialed; `None` for an endpoint that dials the upstream's host by name
    /// (its name did not resolve when the group was made).
    pub address: Option<SocketAddr>,
    /// How `address` is written in logs and labels (the upstream's `host:port` when by name).
    pub label: String,
    /// Its sticky-session cookie value (`affinity`); 0 for an app without sticky sessions.
    pub affinity: u64,
    /// Its group's name, and the group's upstream (for what a request's logs name).
    group: Arc<str>,
    upstream: Upstream,
    dialer: Dialer,
    connections: Arc<Connections>,
    connect_timeout: Duration,
    pools: Arc<Pools>,
    h2: Option<Arc<H2Pools>>,
    /// Requests sent here whose response has not ended, and whether it drains.
    load: Arc<Load>,
    /// Failures since the last success.
    failures: AtomicU32,
    /// Ejections since the last success.
    ejections: AtomicU32,
    /// Milliseconds from `epoch()` until the end of the current ejection; 0 when none.
    ejected_until: AtomicU64,
    /// Whether the active health check (`healthCheck`) took it out; never without one.
    unhealthy: AtomicBool,
    requests_total: Counter,
    failures_total: Counter,
}

/// What an endpoint of a group is made with.
#[derive(Debug, Clone)]
pub(super) struct EndpointTemplate {
    pub upstream: Upstream,
    pub tls: Option<AppTls>,
    pub connect_timeout: Duration,
    pub connections: Arc<Connections>,
    pub workers: usize,
    /// With sticky sessions, the key of the cookie's values.
    pub affinity_key: Option<[u8; 32]>,
    /// The app's `healthCheck`, probing each endpoint made from this template.
    pub health: Option<Arc<crate::settings::HealthCheck>>,
}

/// The instant ejection deadlines are counted from.
fn epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

fn now_millis() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Endpoint {
    /// An endpoint of group `group` at `address` (by the upstream's name when `None`),
    /// counted in `requests_total` and `failures_total`.
    pub(super) fn new(
        template: &EndpointTemplate,
        group: &Arc<str>,
        address: Option<SocketAddr>,
        requests_total: Counter,
        failures_total: Counter,
    ) -> Self {
        let label = address.map_or_else(
            || template.upstream.authority.to_string(),
            |address| address.to_string(),
        );
        Self {
            address,
            affinity: template
                .affinity_key
                .map_or(0, |key| super::affinity::value(&key, group, &label)),
            label,
            group: group.clone(),
            upstream: template.upstream.clone(),
            dialer: Dialer::new(
                &template.upstream,
                address,
                template.tls.clone(),
                template.connect_timeout,
            ),
            connections: template.connections.clone(),
            connect_timeout: template.connect_timeout,
            pools: Arc::new(Pools::new(template.workers, template.connections.clone())),
            h2: (template.upstream.transport == Transport::Http2)
                .then(|| Arc::new(H2Pools::new(template.workers))),
            load: Arc::default(),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            unhealthy: AtomicBool::new(false),
            requests_total,
            failures_total,
        }
    }

    /// Counts a request sent here, in flight until the returned guard drops.
    pub(crate) fn start(&self) -> InFlight {
        self.requests_total.inc();
        self.load.start()
    }

    /// Its group's name.
    pub(super) fn group(&self) -> &str {
        &self.group
    }

    /// Its group's upstream.
    pub(super) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Requests in flight here.
    pub(crate) fn in_flight(&self) -> usize {
        self.load.in_flight()
    }

    /// Whether the endpoint is ejected now: by its failures (passive) or by its health
    /// check (active).
    pub(crate) fn is_ejected(&self) -> bool {
        self.unhealthy.load(Ordering::Acquire) || self.passively_ejected()
    }

    /// Whether its failures in a row ejected it for now.
    fn passively_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && now_millis() < until
    }

    /// How long its failures in a row still keep it ejected; `None` when they do not.
    pub(super) fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Acquire);
        let now = now_millis();
        (until != 0 && now < until).then(|| Duration::from_millis(until - now))
    }

    /// Whether its health check took it out.
    pub(super) fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Acquire)
    }

    /// Sets what its health check found; whether that changed it.
    pub(super) fn set_unhealthy(&self, unhealthy: bool) -> bool {
        self.unhealthy.swap(unhealthy, Ordering::AcqRel) != unhealthy
    }

    /// What dials its connections, and the app's bound on them (for a health check).
    pub(super) fn dialer(&self) -> (&Dialer, &Connections) {
        (&self.dialer, &self.connections)
    }

    /// Whether its address left the group.
    pub(crate) fn is_draining(&self) -> bool {
        self.load.is_draining()
    }

    /// Returns once a draining endpoint's last request has ended.
    pub(super) async fn drained(&self) {
        self.load.drained().await;
    }

    /// A response header came: the failures in a row are over.
    pub(super) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A connect failure or a reset: counted; returns how long the endpoint is now ejected
    /// for, when this failure ejects it (the `EJECT_AFTER`th in a row, or any failure in a
    /// row after an ejection ended, which ejects it again for longer).
    pub(super) fn failed(&self) -> Option<Duration> {
        self.failures_total.inc();
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < EJECT_AFTER || self.passively_ejected() {
            return None;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let length = EJECT_BASE.saturating_mul(ejections).min(EJECT_MAX);
        let until = now_millis().saturating_add(u64::try_from(length.as_millis()).unwrap_or(0));
        self.ejected_until.store(until.max(1), Ordering::Release);
        Some(length)
    }

    /// Takes the endpoint out of service: no new request; its idle connections close now,
    /// those of requests in flight once their exchange ends.
    pub(super) fn drain(&self) {
        self.load.drain();
        self.close();
    }

    /// Closes its idle connections and keeps no more (a retired or draining endpoint).
    pub(super) fn close(&self) {
        self.pools.close();
        if let Some(h2) = &self.h2 {
            h2.close_all();
        }
    }

    /// Sends a request whose URI is in the form the app takes; waits for the response
    /// header (the caller bounds the wait). `in_flight` goes with the response body.
    pub(super) async fn exchange(
        &self,
        request: Request<RequestBody>,
        in_flight: InFlight,
    ) -> Result<Response<UpstreamBody>, Attempt> {
        // The rare and the large futures are boxed: every request's future is moved by hyper
        // (into its task for HTTP/2), so whatever it holds inline is copied each time.
        if let Some(h2) = &self.h2 {
            let dialing = Dialing {
                dialer: &self.dialer,
                connections: &self.connections,
                connect_timeout: self.connect_timeout,
            };
            let (response, stream) = Box::pin(dialing.exchange_h2(h2, request)).await?;
            return Ok(
                response.map(|body| UpstreamBody::new(body, Lease::Http2(stream), Some(in_flight)))
            );
        }
        let (mut sender, fresh) = match self.checkout().await {
            Some(sender) => (sender, None),
            None => match Box::pin(self.http1_connection()).await {
                Ok(dialed) => dialed,
                Err(error) => {
                    return Err(Attempt::NotSent {
                        error,
                        request: Box::new(request),
                    });
                }
            },
        };
        let (sender, response) = match sender.try_send_request(request).await {
            Ok(response) => (sender, response),
            Err(error) => match fresh {
                // The app alerted right after the handshake (a refused client certificate,
                // under TLS 1.3), whichever way hyper saw the connection end.
                Some(alert) => {
                    let error = error.into_error();
                    return Err(Attempt::Sent(match alert.failure() {
                        Some(reason) => UpstreamError::Tls {
                            reason,
                            source: Box::new(error),
                        },
                        None => UpstreamError::Http { source: error },
                    }));
                }
                None => Box::pin(self.resend(error)).await?,
            },
        };
        // A connection that switched protocols (WebSocket) is never reused.
        let reusable = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        let checkin = reusable.then(|| CheckIn {
            sender,
            pools: self.pools.clone(),
        });
        Ok(response.map(|body| UpstreamBody::new(body, Lease::Http1(checkin), Some(in_flight))))
    }

    /// After a failed send: a pooled connection the app closed while it was idle did not
    /// write the request, so it goes out again on another connection; any other failure is
    /// the request's.
    async fn resend(
        &self,
        mut error: hyper::client::conn::TrySendError<Request<RequestBody>>,
    ) -> Result<
        (
            http1::SendRequest<RequestBody>,
            Response<hyper::body::Incoming>,
        ),
        Attempt,
    > {
        let Some(request) = error.take_message() else {
            return Err(Attempt::Sent(UpstreamError::Http {
                source: error.into_error(),
            }));
        };
        let (mut sender, alert) = match self.http1_connection().await {
            Ok(dialed) => dialed,
            Err(error) => {
                return Err(Attempt::NotSent {
                    error,
                    request: Box::new(request),
                });
            }
        };
        let response = sender.send_request(request).await.map_err(|source| {
            Attempt::Sent(match alert.as_ref().and_then(stream::Alert::failure) {
                Some(reason) => UpstreamError::Tls {
                    reason,
                    source: Box::new(source),
                },
                None => UpstreamError::Http { source },
            })
        })?;
        Ok((sender, response))
    }

    /// The most recently used idle connection of this worker that is still open.
    async fn checkout(&self) -> Option<http1::SendRequest<RequestBody>> {
        loop {
            let mut sender = self.pools.take()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A new HTTP/1.1 connection and what records an alert the app sends on it, or, when
    /// every slot of the app is taken, an idle connection of this endpoint that comes back
    /// first (then without alert).
    async fn http1_connection(
        &self,
    ) -> Result<(http1::SendRequest<RequestBody>, Option<stream::Alert>), UpstreamError> {
        let slot = match self.connections.try_slot()? {
            Some(slot) => slot,
            None => {
                let deadline = Instant::now() + self.connect_timeout;
                loop {
                    let pools = &self.pools;
                    match self.connections.wait(deadline, || pools.take_any()).await? {
                        Waited::Slot(slot) => break slot,
                        Waited::Connection(mut sender) => {
                            if sender.ready().await.is_ok() {
                                return Ok((sender, None));
                            }
                        }
                    }
                }
            }
        };
        let (sender, alert) = self.connect(slot).await?;
        Ok((sender, Some(alert)))
    }

    /// A new HTTP/1.1 connection in `slot`, and what records an alert the app sends on it.
    async fn connect(
        &self,
        slot: Slot,
    ) -> Result<(http1::SendRequest<RequestBody>, stream::Alert), UpstreamError> {
        let stream = self.dialer.dial(slot).await?;
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

    #[cfg(test)]
    pub(super) fn requests_sent(&self) -> u64 {
        self.requests_total.get()
    }

    #[cfg(test)]
    pub(super) fn pools(&self) -> &Pools {
        &self.pools
    }
}
