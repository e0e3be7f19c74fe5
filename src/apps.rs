//! The running set of apps built from a loaded config (one generation, `build.rs`): the host
//! matcher, each app's config, rustls config, checker, upstream client and metric handles, and
//! the timeouts and limits they are served with. A connection is served under the generation
//! it was accepted under; a reload builds the next one and retires this one: its connections
//! finish what is in flight and close, its upstream clients dial no more and the resolution
//! of its upstream names stops (docs/operations.md "Reload").

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use self::build::LoadedConfig;
use crate::config::{AppConfig, FileDigests};
use crate::ip_restrictions::IpRestrictions;
use crate::metrics::app::AppMetrics;
use crate::metrics::{AppSeries, Metrics};
use crate::proxy_protocol::ProxyProtocol;
use crate::request_policy::rate_limit::{MAX_KEYS, RateLimiter};
use crate::revocation::{Memory, Revocation};
use crate::settings::{Limits, Timeouts, UpstreamDns, UpstreamVerify};
use crate::tls::client_policy::ClientPolicy;
use crate::tls::sni::HostMatcher;
use crate::upstream::discovery::Discovery;
use crate::upstream::state::{AppUpstreams, GroupState, Upstreams};
use crate::upstream::{ClientSettings, GroupSpec, UpstreamClient};

pub(crate) mod build;

/// Every app and the matcher that picks one by name.
#[derive(Debug)]
pub(crate) struct Apps {
    apps: Vec<Arc<App>>,
    matcher: HostMatcher,
    /// Timeouts of this config.
    pub timeouts: Timeouts,
    /// Limits of this config (`maxConnections` only changes on restart).
    pub limits: Limits,
    /// Whether each request gets an access line.
    pub access_log: bool,
    /// The PROXY protocol check new connections go through, when enabled.
    pub proxy_protocol: Option<Arc<ProxyProtocol>>,
    /// Counts the configs served since start: 0 for the first, one more with each reload.
    pub generation: u64,
    /// The files this config was read from, with the SHA-256 of each as read, so that the
    /// next reload can name the files that changed.
    pub files: FileDigests,
    /// How upstream host names are resolved.
    upstream_dns: UpstreamDns,
    /// Raised once a reload replaced this generation.
    retired: AtomicBool,
    /// Connections of this generation past their handshake.
    open: AtomicUsize,
}

/// One app as served.
#[derive(Debug)]
pub(crate) struct App {
    /// Position in `Apps`; two apps are the same app when their indices match.
    pub index: usize,
    /// The validated app config.
    pub config: Arc<AppConfig>,
    /// The policy presented certificates are judged by (`None` in `ignore` mode).
    pub policy: Option<Arc<ClientPolicy>>,
    /// This app's own rustls config: its verifier, session cache and ticket keys.
    pub tls: Arc<rustls::ServerConfig>,
    /// With `ipSecurityRestrictions` and `rejectWith: "http"`: the config a refused address
    /// completes its handshake with (no CertificateRequest, no resumption), to get 403.
    pub ip_refused_tls: Option<Arc<rustls::ServerConfig>>,
    /// Once a reload replaced this generation: the `ipSecurityRestrictions` of the same app
    /// in the newest one (`None` inside: it has none), which the last request of an open
    /// connection is judged by.
    pub successor_ip_restrictions: OnceLock<Option<Arc<IpRestrictions>>>,
    /// Its revocation checker or `crlFiles` watcher, when configured.
    pub revocation: Option<Arc<Revocation>>,
    /// The pooled client for this app's upstream.
    pub upstream: UpstreamClient,
    /// For each upstream group named by DNS, in the order of `config.groups`: the
    /// resolution of that name, whose addresses are the group's endpoints.
    pub discoveries: Vec<Option<Discovery>>,
    /// This app's metric handles.
    pub metrics: AppMetrics,
    /// The app's token buckets when it has a `rateLimit` (a reload starts them afresh).
    pub rate_limiter: Option<RateLimiter>,
}

impl Apps {
    /// Builds generation `generation` of the served apps, from `loaded`, for `workers` worker
    /// threads; their metric series exist (at zero) from here on.
    pub(crate) fn new(
        loaded: &LoadedConfig,
        metrics: &Metrics,
        workers: usize,
        generation: u64,
    ) -> Self {
        let config = &loaded.config;
        let apps = loaded
            .apps
            .iter()
            .enumerate()
            .map(|(index, live)| {
                let app = &live.config;
                let discoveries: Vec<Option<Discovery>> = app
                    .groups
                    .iter()
                    .map(|group| {
                        let upstream = &group.upstream;
                        upstream
                            .dns_name()
                            .map(|name| Discovery::new(name, upstream.port()))
                    })
                    .collect();
                Arc::new(App {
                    index,
                    config: app.clone(),
                    policy: live.policy.clone(),
                    tls: live.tls.clone(),
                    ip_refused_tls: live.ip_refused_tls.clone(),
                    successor_ip_restrictions: OnceLock::new(),
                    revocation: live.revocation.clone(),
                    upstream: UpstreamClient::new(
                        app.groups
                            .iter()
                            .zip(&live.groups)
                            .zip(&discoveries)
                            .map(|((group, loaded), discovery)| GroupSpec {
                                name: &group.name,
                                upstream: &group.upstream,
                                tls: loaded.tls.clone(),
                                weight: group.weight,
                                addresses: discovery
                                    .as_ref()
                                    .map_or_else(|| loaded.addresses.clone(), Discovery::subscribe),
                                metrics: metrics.upstream_group(&app.name, &group.name),
                            })
                            .collect(),
                        ClientSettings {
                            app: &app.name,
                            timeouts: &config.timeouts,
                            max_connections: config.limits.max_upstream_connections_per_app,
                            workers,
                            retries: app.retries,
                            health_check: app.health_check.as_ref(),
                            affinity_key: app.sticky_sessions.then(|| {
                                crate::upstream::affinity_key(app.server_key.secret_der())
                            }),
                        },
                    ),
                    discoveries,
                    metrics: metrics.register_app(&AppSeries {
                        name: &app.name,
                        server_chain: &app.server_chain,
                        upstream_client_chain: app
                            .upstream
                            .tls
                            .as_ref()
                            .map_or(&[], |tls| tls.client_chain()),
                        trust: &app.trust,
                        domain_leaves: &domain_leaves(app),
                        request_policy: &app.request_policy,
                    }),
                    rate_limiter: app
                        .request_policy
                        .rate_limit
                        .map(|limit| RateLimiter::new(limit, MAX_KEYS)),
                })
            })
            .collect();
        let matcher = HostMatcher::new(config.apps.iter().map(|app| app.hosts.as_slice()));
        Self {
            apps,
            matcher,
            timeouts: config.timeouts,
            limits: config.limits,
            access_log: config.access_log,
            proxy_protocol: config.proxy_protocol.clone(),
            generation,
            files: config.file_digests.clone(),
            upstream_dns: config.upstream_dns.clone(),
            retired: AtomicBool::new(false),
            open: AtomicUsize::new(0),
        }
    }

    /// Whether a reload replaced this generation: one atomic load, read by every request.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Marks this generation replaced by `newest`: its upstream clients dial no more and close
    /// their idle connections; what its open connections still send goes through the same
    /// app's client in `newest` (with the upstream settings now in force) when the app is
    /// there and speaks the same protocol to its upstream. Returns how many of its connections
    /// are open (each is told to close through the server's close signal).
    pub(crate) fn retire(&self, newest: &Apps) -> usize {
        // Set before the flag, so a request that sees this generation retired finds them.
        // Set once: a generation is retired once. An app the newest config drops keeps the
        // restrictions its connections were admitted under.
        for app in &self.apps {
            let _ = app
                .successor_ip_restrictions
                .set(match newest.named(&app.config.name) {
                    Some(next) => next.config.ip_restrictions.clone(),
                    None => app.config.ip_restrictions.clone(),
                });
        }
        self.retired.store(true, Ordering::Release);
        for app in &self.apps {
            let successor = newest
                .named(&app.config.name)
                .filter(|next| next.config.upstream.transport == app.config.upstream.transport)
                .map(|next| next.upstream.clone());
            app.upstream.retire(successor);
            for discovery in app.discoveries.iter().flatten() {
                discovery.stop();
            }
        }
        self.open.load(Ordering::Acquire)
    }

    /// Waits, at most until `deadline`, for the first answer for each upstream name of this
    /// generation (at once for a name a reload seeded with the addresses it had), so that its
    /// first requests go to the name's addresses.
    pub(crate) async fn settle_names(&self, deadline: tokio::time::Instant) {
        for discovery in self
            .apps
            .iter()
            .flat_map(|app| app.discoveries.iter().flatten())
        {
            crate::upstream::discovery::settled(&discovery.subscribe(), deadline).await;
        }
    }

    /// Counts a connection of this generation as open, until `closed`.
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// A connection counted by `opened` has closed.
    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// The configs of the apps, in config order.
    pub(crate) fn configs(&self) -> impl Iterator<Item = &AppConfig> {
        self.apps.iter().map(|app| app.config.as_ref())
    }

    /// Every app's upstream groups and their endpoints as they are now (`GET /upstreams`).
    pub(crate) fn upstreams(&self) -> Upstreams {
        let apps = self
            .apps
            .iter()
            .map(|app| AppUpstreams {
                name: app.config.name.clone(),
                groups: app
                    .config
                    .groups
                    .iter()
                    .zip(app.upstream.endpoint_states())
                    .map(|(group, endpoints)| GroupState {
                        name: group.name.clone(),
                        weight: group.weight,
                        upstream: group.upstream.to_string(),
                        endpoints,
                    })
                    .collect(),
            })
            .collect();
        Upstreams {
            generation: self.generation,
            apps,
        }
    }

    /// The app called `name`, if this generation has one.
    pub(crate) fn named(&self, name: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|app| app.config.name == name)
    }

    /// Starts serving these apps: warns about apps whose upstream certificate is not
    /// verified, joins each app's revocation to the server's `memory` of what revocation
    /// learned (shared by every generation), attaches its metrics and starts its CRL refresh
    /// in the background (the first time for a loaded config; its tasks end when the config
    /// is dropped), and starts resolving upstream names, each from the addresses the same
    /// app's same upstream has in `previous` (the generation this one replaces), if any; the
    /// series of a name `previous` resolved and this one does not are removed.
    pub(crate) fn start(&self, metrics: &Metrics, memory: &Arc<Memory>, previous: Option<&Apps>) {
        if let Some(previous) = previous {
            self.remove_names_gone(previous, metrics);
        }
        let epoch = memory.next_epoch();
        for app in &self.apps {
            let config = &app.config;
            for (group, discovery) in config.groups.iter().zip(&app.discoveries) {
                let Some(discovery) = discovery else {
                    continue;
                };
                let seed = previous
                    .and_then(|previous| previous.named(&config.name))
                    .and_then(|before| {
                        let index = before.config.groups.iter().position(|earlier| {
                            earlier.name == group.name
                                && earlier.upstream.authority == group.upstream.authority
                        })?;
                        before.discoveries.get(index)?.as_ref()
                    })
                    .map(Discovery::current);
                discovery.start(
                    &config.name,
                    &group.name,
                    &self.upstream_dns,
                    metrics.upstream_dns(&config.name, &group.name),
                    seed,
                );
            }
            if config
                .upstream
                .tls
                .as_ref()
                .is_some_and(|tls| matches!(tls.verify, UpstreamVerify::Skip))
            {
                tracing::warn!(
                    app = %config.name,
                    upstream = %config.upstream,
                    "upstreamTls.insecureSkipVerify is on: the app's certificate is not verified"
                );
            }
            if let Some(revocation) = &app.revocation {
                revocation.start(memory, epoch, || metrics.revocation(&config.name));
            }
        }
    }

    /// Removes the DNS series of each group whose host `previous` resolved and this
    /// generation does not: its upstream is an IP address now, or the group or its app is
    /// gone.
    fn remove_names_gone(&self, previous: &Apps, metrics: &Metrics) {
        for before in &previous.apps {
            let app = &before.config.name;
            let resolved_before = before
                .config
                .groups
                .iter()
                .zip(&before.discoveries)
                .filter(|(_, discovery)| discovery.is_some());
            for (group, _) in resolved_before {
                let still_resolved = self.named(app).is_some_and(|now| {
                    now.config
                        .groups
                        .iter()
                        .zip(&now.discoveries)
                        .any(|(next, discovery)| next.name == group.name && discovery.is_some())
                });
                if !still_resolved {
                    metrics.remove_upstream_dns(app, &group.name);
                }
            }
        }
    }

    /// The app for a normalized name (SNI or request host), or for no name.
    pub(crate) fn resolve(&self, name: Option<&str>) -> Option<Arc<App>> {
        self.resolve_index(name)
            .and_then(|index| self.apps.get(index))
            .cloned()
    }

    /// Like `resolve`, returning only the app's index.
    pub(crate) fn resolve_index(&self, name: Option<&str>) -> Option<usize> {
        self.matcher.resolve(name)
    }
}

/// The apps new connections are served under; a reload swaps the whole set at once.
pub(crate) type LiveApps = Arc<arc_swap::ArcSwap<Apps>>;

/// The leaf certificate served for each of the app's custom domains with one of its own.
fn domain_leaves(app: &AppConfig) -> Vec<(String, rustls_pki_types::CertificateDer<'static>)> {
    app.custom_domains
        .iter()
        .filter_map(|domain| {
            let (_, keyed) = domain.certificate.as_ref()?;
            Some((domain.host.to_string(), keyed.chain.first()?.clone()))
        })
        .collect()
}
