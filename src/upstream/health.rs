//! Active health checks (`healthCheck`): a task per endpoint sends `GET path` every
//! `interval` on a connection of its own (the endpoint's transport: HTTP/1.1, h2c, or TLS
//! with the group's config), closed after the answer. A probe succeeds when the status is
//! `expectedStatus` within `timeout` (connection included). `unhealthyThreshold` failures in
//! a row take the endpoint out of the balancing (`Endpoint::is_ejected`, shown as `ejected`),
//! `healthyThreshold` successes in a row bring it back; each change is logged. An endpoint
//! starts healthy. Its first probe goes out at a random point of the first interval (HAProxy
//! spreads its servers' first checks over the interval too) and each later one an interval
//! after the one before, give or take `JITTER_PERCENT` (as HAProxy's `spread-checks` and
//! Envoy's `interval_jitter_percent` vary theirs): the endpoints of an app, made together at
//! start or by a reload, are neither probed all at once nor kept in step.
//!
//! The task ends when its endpoint leaves its group (drains or is dropped) or the group's
//! client retires. A probe that finds every connection slot of the app taken is skipped:
//! it counts neither way.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use rand::rngs::SmallRng;
use rand::{Rng, RngExt as _, SeedableRng as _};
use tokio::time::Instant;

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
    // A generator of its own, seeded from the thread's: the task moves between threads.
    let mut schedule = Schedule::new(check.interval, SmallRng::from_rng(&mut rand::rng()));
    let mut next = Instant::now() + schedule.first_wait();
    loop {
        // A probe that took longer than the wait is followed by the next one at once.
        tokio::time::sleep_until(next).await;
        next = Instant::now() + schedule.next_wait();
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
        let request =
            probe_request(upstream, check.path.as_str()).map_err(|error| error.to_string())?;
        let response = if upstream.transport == Transport::Http2 {
            let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|error| error.to_string())?;
            tokio::spawn(connection);
            sender.send_request(request).await
        } else {
            let (mut sender, connection) = http1::handshake(io)
                .await
                .map_err(|error| error.to_string())?;
            tokio::spawn(connection);
            sender.send_request(request).await
        };
        let status = response.map_err(|error| error.to_string())?.status();
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

/// The probe of `upstream`: `GET path` with the upstream's authority (in the URI for
/// HTTP/2, in `Host` on a connection closed after the answer for HTTP/1.1).
fn probe_request(upstream: &Upstream, path: &str) -> Result<Request<Empty<Bytes>>, http::Error> {
    let request = if upstream.transport == Transport::Http2 {
        let scheme = if upstream.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Request::get(format!("{scheme}://{}{path}", upstream.authority))
    } else {
        Request::get(path)
            .header(http::header::HOST, upstream.authority.as_str())
            .header(http::header::CONNECTION, "close")
    };
    request
        .header(http::header::USER_AGENT, USER_AGENT)
        .body(Empty::new())
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

/// How much the wait between two probes of an endpoint varies either way, in percent of
/// `intervalMs`.
const JITTER_PERCENT: u64 = 10;

/// When an endpoint's probes go out, from a random source of its own.
struct Schedule<R> {
    interval: Duration,
    random: R,
}

impl<R: Rng> Schedule<R> {
    fn new(interval: Duration, random: R) -> Self {
        Self { interval, random }
    }

    /// The wait before the first probe: anything from none to one interval.
    fn first_wait(&mut self) -> Duration {
        Duration::from_nanos(self.random.random_range(0..=nanos(self.interval)))
    }

    /// The wait from one probe to the next: the interval, give or take `JITTER_PERCENT`.
    fn next_wait(&mut self) -> Duration {
        let interval = nanos(self.interval);
        let spread = interval / 100 * JITTER_PERCENT;
        Duration::from_nanos(
            self.random
                .random_range(interval - spread..=interval.saturating_add(spread)),
        )
    }
}

/// `duration` in nanoseconds (`intervalMs` is at most an hour: it fits).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use rand::SeedableRng as _;
    use rand::rngs::SmallRng;

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);

    /// The schedule of an endpoint whose random source starts from `seed`.
    fn schedule(seed: u64) -> Schedule<SmallRng> {
        Schedule::new(INTERVAL, SmallRng::seed_from_u64(seed))
    }

    #[test]
    fn first_probes_spread_over_the_first_interval() {
        // A hundred endpoints, each with a source of its own as each check task has.
        let firsts: Vec<Duration> = (0..100).map(|seed| schedule(seed).first_wait()).collect();
        assert!(firsts.iter().all(|first| *first <= INTERVAL), "{firsts:?}");
        for tenth in 0..10 {
            let tenths = INTERVAL / 10 * tenth..INTERVAL / 10 * (tenth + 1);
            assert!(
                firsts.iter().any(|first| tenths.contains(first)),
                "no first probe in {tenths:?}: {firsts:?}"
            );
        }
    }

    #[test]
    fn later_probes_are_an_interval_apart_give_or_take_ten_percent() {
        let mut schedule = schedule(7);
        let waits: Vec<Duration> = (0..1000).map(|_| schedule.next_wait()).collect();
        let (shortest, longest) = (INTERVAL * 9 / 10, INTERVAL * 11 / 10);
        assert!(
            waits.iter().all(|wait| (shortest..=longest).contains(wait)),
            "{waits:?}"
        );
        // Both ways, nearly to the bounds: the endpoints do not stay in step.
        let min = waits.iter().min().unwrap();
        let max = waits.iter().max().unwrap();
        assert!(*min < INTERVAL * 91 / 100, "{min:?}");
        assert!(*max > INTERVAL * 109 / 100, "{max:?}");
    }

    #[test]
    fn the_shortest_interval_keeps_its_bounds() {
        let interval = Duration::from_millis(100);
        let mut schedule = Schedule::new(interval, SmallRng::seed_from_u64(1));
        assert!(schedule.first_wait() <= interval);
        for _ in 0..100 {
            let wait = schedule.next_wait();
            assert!(
                (Duration::from_millis(90)..=Duration::from_millis(110)).contains(&wait),
                "{wait:?}"
            );
        }
    }
}
