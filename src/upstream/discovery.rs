//! Endpoints from DNS: for an upstream whose host is a DNS name, a background task resolves
//! it (A and AAAA, with hickory-resolver, through /etc/resolv.conf and /etc/hosts or the
//! `upstreamDns.nameservers`) and publishes the addresses it resolves to on a watch channel.
//!
//! The interface: `Discovery::subscribe` hands out a `watch::Receiver<Arc<[SocketAddr]>>`,
//! the upstream's address set, sorted, without duplicates, each with the upstream's port. One
//! address is one endpoint. The set is empty until the first resolution ends; the task
//! publishes after that first attempt whether or not it found addresses (so a receiver
//! that has seen no change yet knows the name was never resolved: `settled`), and
//! from then on only when the set changes. A failed or empty resolution keeps the last good
//! set, logs once per streak of failures and counts
//! `certgate_upstream_dns_failures_total{app,group}`.
//!
//! The name is resolved again after the answer's TTL, within
//! `min(MIN_DNS_REFRESH, refreshMs)..=refreshMs` (`refreshMs` when the answer gives no TTL),
//! and after a failure from one second, doubling, up to `refreshMs`. A generation of apps
//! waits for each new name's first answer before it serves, at most `upstreamConnectMs`
//! (`settled`); a name that does not resolve holds it up no longer: until it does, its group's
//! endpoint dials the name with the system's resolver (`upstream::endpoints`). A reload starts
//! the next generation's task from the set this one holds, so a reload while DNS fails keeps
//! the last good set; the task ends when its generation is retired (`stop`) or dropped.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::metrics::UpstreamDnsMetrics;
use crate::settings::UpstreamDns;

/// An upstream's address set.
pub(crate) type Addresses = Arc<[SocketAddr]>;

/// The resolution of one upstream name in one config generation.
#[derive(Debug)]
pub(crate) struct Discovery {
    /// The name, as written in the upstream URL.
    name: Arc<str>,
    port: u16,
    addresses: watch::Receiver<Addresses>,
    task: Mutex<Task>,
}

#[derive(Debug)]
enum Task {
    /// Made, not started: the channel's sending end waits for `start`.
    Ready(watch::Sender<Addresses>),
    Running(AbortHandle),
    Stopped,
}

impl Discovery {
    /// The resolution of `name` for an upstream on `port`; nothing runs before `start`.
    pub(crate) fn new(name: &str, port: u16) -> Self {
        let (sender, addresses) = watch::channel(Addresses::from([]));
        Self {
            name: name.into(),
            port,
            addresses,
            task: Mutex::new(Task::Ready(sender)),
        }
    }

    /// The upstream's address set, as it changes (see the module's doc).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Addresses> {
        self.addresses.clone()
    }

    /// The set the name resolves to now.
    pub(crate) fn current(&self) -> Addresses {
        self.addresses.borrow().clone()
    }

    /// Starts resolving in the background on the caller's runtime, for `app`'s `group`, with
    /// `settings`;
    /// `seed` (the set the same upstream of the generation this one replaces holds) is
    /// published at once, so that the reload keeps it if DNS fails now. Once only.
    pub(crate) fn start(
        &self,
        app: &str,
        group: &str,
        settings: &UpstreamDns,
        metrics: UpstreamDnsMetrics,
        seed: Option<Addresses>,
    ) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        let Task::Ready(sender) = std::mem::replace(&mut *task, Task::Stopped) else {
            return;
        };
        if let Some(seed) = seed.filter(|seed| !seed.is_empty()) {
            metrics
                .addresses
                .set(i64::try_from(seed.len()).unwrap_or(i64::MAX));
            sender.send_replace(seed);
        }
        let resolution = Resolution {
            app: app.into(),
            group: group.into(),
            name: self.name.clone(),
            port: self.port,
            settings: settings.clone(),
            metrics,
            sender,
        };
        *task = Task::Running(tokio::spawn(resolution.run()).abort_handle());
    }

    /// Stops resolving (the generation was retired); the last set stays readable.
    pub(crate) fn stop(&self) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Task::Running(handle) = std::mem::replace(&mut *task, Task::Stopped) {
            handle.abort();
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits, at most until `deadline`, for the first resolution of the set `addresses` follows
/// to end; returns the set then (empty when the name did not resolve). A generation of apps
/// waits for it before it serves, so its first requests find the name's addresses.
pub(crate) async fn settled(
    addresses: &watch::Receiver<Addresses>,
    deadline: Instant,
) -> Addresses {
    let mut addresses = addresses.clone();
    // A receiver made with the channel sees a change once anything was published: the first
    // attempt always publishes. Closed: the task ended; what it published last is the set.
    if matches!(addresses.has_changed(), Ok(false)) {
        let _ = tokio::time::timeout_at(deadline, addresses.changed()).await;
    }
    addresses.borrow().clone()
}

/// The background task's state.
struct Resolution {
    app: Arc<str>,
    group: Arc<str>,
    name: Arc<str>,
    port: u16,
    settings: UpstreamDns,
    metrics: UpstreamDnsMetrics,
    sender: watch::Sender<Addresses>,
}

/// Why a resolution found no usable address.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("cannot set up the resolver (/etc/resolv.conf; or set upstreamDns.nameservers)")]
    Setup {
        source: hickory_resolver::net::NetError,
    },
    #[error("the lookup failed")]
    Lookup {
        source: hickory_resolver::net::NetError,
    },
    #[error("the name has no A or AAAA record")]
    NoAddresses,
}

impl Resolution {
    async fn run(self) {
        let mut resolver = None;
        let mut failures: u32 = 0;
        let mut first = true;
        loop {
            self.metrics.resolutions.inc();
            let wait = match self.resolve(&mut resolver).await {
                Ok((addresses, ttl)) => {
                    if failures > 0 {
                        tracing::info!(
                            app = %self.app,
                            group = %self.group,
                            upstream = %self.name,
                            addresses = addresses.len(),
                            failures,
                            "upstream name resolves again"
                        );
                    }
                    failures = 0;
                    self.publish(addresses, first);
                    self.settings.next_refresh(ttl)
                }
                Err(error) => {
                    self.metrics.failures.inc();
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        tracing::warn!(
                            app = %self.app,
                            group = %self.group,
                            upstream = %self.name,
                            kept = self.sender.borrow().len(),
                            error = %crate::error_chain(&error),
                            "cannot resolve the upstream name, keeping the addresses it had"
                        );
                    }
                    if first {
                        // Settles a set that is still the empty one, or the reload's seed.
                        self.sender.send_modify(|_| {});
                    }
                    self.settings.retry_after(failures)
                }
            };
            first = false;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Every receiver is gone: the generation was dropped.
                () = self.sender.closed() => return,
            }
        }
    }

    /// The name's addresses, sorted and deduplicated, with how long the answer is valid.
    async fn resolve(
        &self,
        resolver: &mut Option<TokioResolver>,
    ) -> Result<(Addresses, Option<Duration>), ResolveError> {
        let resolver = match resolver {
            Some(resolver) => resolver,
            None => resolver.insert(
                build_resolver(&self.settings).map_err(|source| ResolveError::Setup { source })?,
            ),
        };
        // Each round asks the nameservers (or /etc/hosts): an answer cached by the resolver
        // would hide a change for the whole TTL even when refreshMs is shorter.
        resolver.clear_cache();
        let lookup = resolver
            .lookup_ip(&*self.name)
            .await
            .map_err(|source| ResolveError::Lookup { source })?;
        let ttl = lookup
            .valid_until()
            .checked_duration_since(std::time::Instant::now());
        let addresses = socket_addresses(lookup.iter(), self.port);
        if addresses.is_empty() {
            return Err(ResolveError::NoAddresses);
        }
        Ok((addresses, ttl))
    }

    /// Publishes `addresses` if they differ from the set held (always after the first
    /// attempt), and logs the change.
    fn publish(&self, addresses: Addresses, first: bool) {
        self.metrics
            .addresses
            .set(i64::try_from(addresses.len()).unwrap_or(i64::MAX));
        let mut previous = None;
        self.sender.send_if_modified(|current| {
            if *current == addresses {
                return first;
            }
            previous = Some(std::mem::replace(current, addresses.clone()));
            true
        });
        if let Some(previous) = previous {
            tracing::info!(
                app = %self.app,
                group = %self.group,
                upstream = %self.name,
                addresses = %list(&addresses),
                previous = %list(&previous),
                "upstream addresses changed"
            );
        }
    }
}

/// A resolver from /etc/resolv.conf (search domains, ndots, timeouts) and /etc/hosts, asking
/// `settings.nameservers` instead of the system's when there are any.
fn build_resolver(
    settings: &UpstreamDns,
) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if settings.nameservers.is_empty() {
        TokioResolver::builder(provider)?
    } else {
        let (system, options) = match hickory_resolver::system_conf::read_system_conf() {
            Ok((config, options)) => (Some(config), options),
            Err(_) => (None, ResolverOpts::default()),
        };
        let name_servers = settings
            .nameservers
            .iter()
            .map(|server| nameserver(*server))
            .collect();
        let config = match system {
            Some(system) => ResolverConfig::from_parts(
                system.domain().cloned(),
                system.search().to_vec(),
                name_servers,
            ),
            None => ResolverConfig::from_parts(None, Vec::new(), name_servers),
        };
        let mut builder = TokioResolver::builder_with_config(config, provider);
        *builder.options_mut() = options;
        builder
    };
    builder.options_mut().cache_size = 0;
    builder.build()
}

/// A nameserver asked over UDP, and over TCP for a truncated answer.
fn nameserver(address: SocketAddr) -> NameServerConfig {
    let connection = |protocol| {
        let mut connection = ConnectionConfig::new(protocol);
        connection.port = address.port();
        connection
    };
    NameServerConfig::new(
        address.ip(),
        true,
        vec![
            connection(ProtocolConfig::Udp),
            connection(ProtocolConfig::Tcp),
        ],
    )
}

/// `ips` with `port`, sorted (IPv4 first), without duplicates.
fn socket_addresses(ips: impl Iterator<Item = IpAddr>, port: u16) -> Addresses {
    let mut addresses: Vec<SocketAddr> = ips.map(|ip| SocketAddr::new(ip, port)).collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses.into()
}

/// `addresses` comma-separated, for a log line.
fn list(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_sorted_deduplicated_and_take_the_upstream_port() {
        let ips = ["10.0.0.3", "::1", "10.0.0.1", "10.0.0.3"].map(|ip| ip.parse().unwrap());
        let addresses = socket_addresses(ips.into_iter(), 8080);
        let expected: Vec<SocketAddr> = ["10.0.0.1:8080", "10.0.0.3:8080", "[::1]:8080"]
            .map(|address| address.parse().unwrap())
            .into();
        assert_eq!(&*addresses, expected.as_slice());
    }

    #[test]
    fn the_refresh_follows_the_ttl_within_its_bounds() {
        let settings = UpstreamDns::default();
        assert_eq!(settings.next_refresh(None), Duration::from_secs(5));
        assert_eq!(
            settings.next_refresh(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            settings.next_refresh(Some(Duration::ZERO)),
            Duration::from_secs(1)
        );
        assert_eq!(
            settings.next_refresh(Some(Duration::from_secs(300))),
            Duration::from_secs(5)
        );
        let fast = UpstreamDns {
            refresh: Duration::from_millis(200),
            ..UpstreamDns::default()
        };
        assert_eq!(
            fast.next_refresh(Some(Duration::ZERO)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn a_failing_name_is_retried_sooner_first_then_every_refresh() {
        let settings = UpstreamDns::default();
        let waits: Vec<u64> = (1..=5)
            .map(|failures| settings.retry_after(failures).as_millis() as u64)
            .collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 5_000, 5_000]);
    }

    #[tokio::test]
    async fn a_request_before_the_first_answer_waits_for_it() {
        let discovery = Discovery::new("app.internal", 8080);
        let receiver = discovery.subscribe();
        let Task::Ready(sender) =
            std::mem::replace(&mut *discovery.task.lock().unwrap(), Task::Stopped)
        else {
            unreachable!()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let waiting = tokio::spawn(async move { settled(&receiver, deadline).await });
        tokio::task::yield_now().await;
        let address: SocketAddr = "127.0.0.2:8080".parse().unwrap();
        sender.send_replace(Addresses::from([address]));
        assert_eq!(&*waiting.await.unwrap(), [address].as_slice());
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_that_never_resolved_is_given_up_at_the_deadline() {
        let discovery = Discovery::new("app.internal", 8080);
        let deadline = Instant::now() + Duration::from_secs(5);
        let addresses = settled(&discovery.subscribe(), deadline).await;
        assert!(addresses.is_empty());
        assert!(Instant::now() >= deadline);
    }
}
