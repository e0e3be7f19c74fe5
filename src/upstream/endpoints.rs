//! The endpoints of one upstream group: one per address its host resolves to, each with
//! its own connections, and the choice between them, least-request with two random choices
//! (Envoy's default, tower's p2c) among those not ejected.
//!
//! The address set comes from a `tokio::sync::watch::Receiver<Arc<[SocketAddr]>>` per group
//! (`addresses`): at start it holds what the system resolver answered when the config was
//! loaded (`resolve`; an IP literal is itself) and never changes. A source that re-resolves
//! the name keeps the sender and sends each new set; the group follows it through
//! `EndpointSet::update`:
//! - an address new to the set becomes an endpoint at once;
//! - an address gone from it drains: it gets no new request, its idle connections close now,
//!   the connections of its requests in flight close when their exchange ends, and it leaves
//!   `certgate_upstream_endpoints{state="draining"}` when the last one has;
//! - an address kept keeps its endpoint, connections and health;
//! - an empty set leaves one endpoint that dials the host by name at each connection (what
//!   a name that did not resolve at start gets too), so the group is never empty.
//!
//! The group stops following its receiver when its client retires (a reload replaced its
//! config): a source hands each generation's groups receivers of their own
//! (`LoadedGroup::addresses`, in the order of the app's `groups`).
//!
//! Each change is logged (`upstream endpoints changed`, with the addresses added and removed).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::endpoint::{Endpoint, EndpointTemplate};
use crate::metrics::upstream::{GroupMetrics, STATES};
use crate::settings::Upstream;

/// The address set of a group, as a source sends it.
pub(crate) type Addresses = watch::Receiver<Arc<[SocketAddr]>>;

/// The endpoints of one group and the endpoints draining out of it.
#[derive(Debug)]
pub(crate) struct EndpointSet {
    /// The app's name, for logs.
    app: Arc<str>,
    /// The group's name, for logs.
    group: Arc<str>,
    template: EndpointTemplate,
    /// The endpoints requests go to; never empty.
    active: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Endpoints whose address left the set, until their last request ends.
    draining: Mutex<Vec<Arc<Endpoint>>>,
    metrics: GroupMetrics,
    /// Set once the client retired: its gauges belong to the newer config.
    retired: std::sync::atomic::AtomicBool,
    /// Stops following the address source once the client retired.
    stop: Arc<tokio::sync::Notify>,
    /// Whether the address set is the one it started with for good (its source is gone).
    fixed: bool,
}

/// The address of an upstream named by an IP literal; none for one named by DNS, which its
/// discovery resolves (`super::discovery`): until it answers, the group dials the name.
pub(crate) fn literal(upstream: &Upstream) -> Vec<SocketAddr> {
    if upstream.dns_name().is_some() {
        return Vec::new();
    }
    let host = upstream.authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<std::net::IpAddr>()
        .map(|ip| vec![SocketAddr::new(ip, upstream.port())])
        .unwrap_or_default()
}

/// A receiver that holds `addresses` for good: the set resolved at start.
pub(crate) fn fixed(addresses: Vec<SocketAddr>) -> Addresses {
    let (_, receiver) = watch::channel(Arc::from(addresses));
    receiver
}

impl EndpointSet {
    /// The endpoints of `addresses`' current set, following its changes while the set lives.
    pub(super) fn new(
        app: &str,
        group: &str,
        template: EndpointTemplate,
        mut addresses: Addresses,
        metrics: GroupMetrics,
    ) -> Arc<Self> {
        // A closed source (an IP literal, a name resolved once) sends no later set.
        let fixed = addresses.has_changed().is_err();
        let set = Arc::new(Self {
            app: app.into(),
            group: group.into(),
            template,
            active: ArcSwap::from_pointee(Vec::new()),
            draining: Mutex::new(Vec::new()),
            metrics,
            retired: std::sync::atomic::AtomicBool::new(false),
            stop: Arc::default(),
            fixed,
        });
        let first = addresses.borrow_and_update().clone();
        let endpoints = set.endpoints_for(&first, &[]);
        set.active.store(Arc::new(endpoints));
        set.refresh_gauges();
        if !fixed && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(follow(Arc::downgrade(&set), addresses, set.stop.clone()));
        }
        set
    }

    /// The group's only endpoint, when it has one and always will (its address set never
    /// changes): requests go straight to it, with no set to load and no choice to make.
    pub(super) fn lone(&self) -> Option<Arc<Endpoint>> {
        if !self.fixed {
            return None;
        }
        match self.current().as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        }
    }

    /// The group's name.
    pub(super) fn name(&self) -> &str {
        &self.group
    }

    /// The endpoints requests go to now.
    pub(super) fn current(&self) -> arc_swap::Guard<Arc<Vec<Arc<Endpoint>>>> {
        self.active.load()
    }

    /// The endpoints whose address left the set and whose last request has not ended.
    pub(super) fn draining_now(&self) -> Vec<Arc<Endpoint>> {
        self.draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the address set: new addresses become endpoints, removed ones drain, kept
    /// ones stay as they are; an empty set leaves one endpoint dialing the host by name.
    pub(crate) fn update(self: &Arc<Self>, addresses: &[SocketAddr]) {
        let old = self.active.load_full();
        let endpoints = self.endpoints_for(addresses, &old);
        let removed: Vec<Arc<Endpoint>> = old
            .iter()
            .filter(|endpoint| !endpoints.iter().any(|kept| Arc::ptr_eq(kept, endpoint)))
            .cloned()
            .collect();
        let added: Vec<&str> = endpoints
            .iter()
            .filter(|endpoint| !old.iter().any(|kept| Arc::ptr_eq(kept, endpoint)))
            .map(|endpoint| endpoint.label.as_str())
            .collect();
        if removed.is_empty() && added.is_empty() {
            return;
        }
        tracing::info!(
            app = %self.app,
            group = %self.group,
            added = %added.join(","),
            removed = %removed.iter().map(|endpoint| endpoint.label.as_str()).collect::<Vec<_>>().join(","),
            "upstream endpoints changed"
        );
        self.active.store(Arc::new(endpoints));
        for endpoint in removed {
            endpoint.drain();
            if endpoint.in_flight() == 0 {
                continue;
            }
            self.draining
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(endpoint.clone());
            tokio::spawn(drained(Arc::downgrade(self), endpoint));
        }
        self.refresh_gauges();
    }

    /// Says that `endpoint` failed; ejects it when that makes enough failures in a row.
    pub(super) fn failed(self: &Arc<Self>, endpoint: &Endpoint) {
        let Some(length) = endpoint.failed() else {
            return;
        };
        tracing::warn!(
            app = %self.app,
            group = %self.group,
            endpoint = %endpoint.label,
            seconds = length.as_secs(),
            "upstream endpoint ejected after failures in a row"
        );
        self.refresh_gauges();
        let set = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            if let Some(set) = set.upgrade() {
                set.refresh_gauges();
            }
        });
    }

    /// Counts a request sent while every endpoint was ejected.
    pub(super) fn none_healthy(&self) {
        self.metrics.no_healthy.inc();
    }

    /// Closes every endpoint's idle connections; the gauges are the newer config's now
    /// (or zero, when the app is gone: `keep_gauges` false).
    pub(super) fn retire(&self, keep_gauges: bool) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Release);
        // A permit is kept when the follower is not waiting yet.
        self.stop.notify_one();
        for endpoint in self.active.load().iter() {
            endpoint.close();
        }
        if !keep_gauges {
            for gauge in &self.metrics.states {
                gauge.set(0);
            }
        }
    }

    /// The endpoints for `addresses`, reusing those of `old` whose address is kept.
    fn endpoints_for(
        self: &Arc<Self>,
        addresses: &[SocketAddr],
        old: &[Arc<Endpoint>],
    ) -> Vec<Arc<Endpoint>> {
        let wanted: Vec<Option<SocketAddr>> = if addresses.is_empty() {
            vec![None]
        } else {
            addresses.iter().copied().map(Some).collect()
        };
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::with_capacity(wanted.len());
        for address in wanted {
            if endpoints.iter().any(|endpoint| endpoint.address == address) {
                continue;
            }
            let endpoint = match old.iter().find(|endpoint| endpoint.address == address) {
                Some(kept) => kept.clone(),
                None => {
                    let label = address.map_or_else(
                        || self.template.upstream.authority.to_string(),
                        |address| address.to_string(),
                    );
                    let (requests, failures) = self.metrics.endpoint(&label);
                    let endpoint = Arc::new(Endpoint::new(
                        &self.template,
                        &self.group,
                        address,
                        requests,
                        failures,
                    ));
                    if let Some(check) = &self.template.health {
                        let set: Weak<dyn super::health::Watcher> = Arc::downgrade(self) as _;
                        super::health::start(
                            set,
                            &endpoint,
                            &self.template.upstream,
                            check,
                            self.metrics.health_checks(&label),
                        );
                    }
                    endpoint
                }
            };
            endpoints.push(endpoint);
        }
        endpoints
    }

    /// Sets `certgate_upstream_endpoints` from the endpoints' states now.
    fn refresh_gauges(&self) {
        if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let active = self.active.load();
        let ejected = active
            .iter()
            .filter(|endpoint| endpoint.is_ejected())
            .count();
        let draining = self
            .draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let counts = [active.len() - ejected, ejected, draining];
        for ((gauge, count), _) in self.metrics.states.iter().zip(counts).zip(STATES) {
            set(gauge, count);
        }
    }
}

impl super::health::Watcher for EndpointSet {
    fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Acquire)
    }

    fn health_changed(&self, endpoint: &Endpoint, failure: Option<&str>) {
        match failure {
            Some(reason) => tracing::warn!(
                app = %self.app,
                group = %self.group,
                endpoint = %endpoint.label,
                reason = %reason,
                "upstream endpoint unhealthy: its health checks failed"
            ),
            None => tracing::info!(
                app = %self.app,
                group = %self.group,
                endpoint = %endpoint.label,
                "upstream endpoint healthy again: its health checks passed"
            ),
        }
        self.refresh_gauges();
    }
}

fn set(gauge: &Gauge, count: usize) {
    gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// Follows a source's address sets until the source ends or the client retires.
async fn follow(set: Weak<EndpointSet>, mut addresses: Addresses, stop: Arc<tokio::sync::Notify>) {
    loop {
        tokio::select! {
            changed = addresses.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = stop.notified() => return,
        }
        let Some(set) = set.upgrade() else {
            return;
        };
        let current = addresses.borrow_and_update().clone();
        set.update(&current);
    }
}

/// Waits for a draining endpoint's last request, then lets it go.
async fn drained(set: Weak<EndpointSet>, endpoint: Arc<Endpoint>) {
    endpoint.drained().await;
    let Some(set) = set.upgrade() else {
        return;
    };
    set.draining
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|draining| !Arc::ptr_eq(draining, &endpoint));
    tracing::info!(app = %set.app, group = %set.group, endpoint = %endpoint.label, "upstream endpoint drained");
    set.refresh_gauges();
}

/// Least-request with two random choices among `endpoints` not in `tried`: those not
/// ejected when any is, else all of them (`none_healthy` says so). `None` when every
/// endpoint was tried.
pub(super) fn pick<'a>(
    endpoints: &'a [Arc<Endpoint>],
    tried: &[Arc<Endpoint>],
    none_healthy: impl FnOnce(),
) -> Option<&'a Arc<Endpoint>> {
    if let [only] = endpoints {
        if !tried.is_empty() && tried.iter().any(|endpoint| Arc::ptr_eq(endpoint, only)) {
            return None;
        }
        if only.is_ejected() {
            none_healthy();
        }
        return Some(only);
    }
    let untried = |endpoint: &&Arc<Endpoint>| !tried.iter().any(|t| Arc::ptr_eq(t, endpoint));
    let healthy = |endpoint: &&Arc<Endpoint>| untried(endpoint) && !endpoint.is_ejected();
    let mut count = endpoints.iter().filter(healthy).count();
    let eligible: &dyn Fn(&&Arc<Endpoint>) -> bool = if count > 0 {
        &healthy
    } else {
        count = endpoints.iter().filter(untried).count();
        if count == 0 {
            return None;
        }
        none_healthy();
        &untried
    };
    let nth = |n: usize| endpoints.iter().filter(eligible).nth(n);
    if count == 1 {
        return nth(0);
    }
    let first = random_below(count);
    let mut second = random_below(count - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (nth(first)?, nth(second)?);
    Some(if b.in_flight() < a.in_flight() { b } else { a })
}

/// A random number below `bound` (> 0), from a per-thread xorshift generator seeded by the
/// standard library's random hasher keys: good enough to spread requests, and no lock.
pub(super) fn random_below(bound: usize) -> usize {
    use std::cell::Cell;
    use std::hash::{BuildHasher as _, RandomState};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
    }
    let next = STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    });
    // `bound` fits in u64, and the remainder is below it.
    usize::try_from(next % u64::try_from(bound).unwrap_or(u64::MAX)).unwrap_or(0)
}
