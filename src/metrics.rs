//! Prometheus metrics (docs/operations.md "Metrics"). Every series an operator alerts on exists at zero
//! from the start, so a rate or an absence alert works before the first failure.

pub(crate) mod app;
pub(crate) mod label;
mod register;
pub(crate) mod revocation;
pub(crate) mod upstream;

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use self::app::{PreflightLabels, RequestLabels, RuleLabels, StallLabels};
use self::label::AppLabel;
use self::upstream::GroupLabels;
use crate::proxy_protocol::ProxyHeaderFailure;
use crate::request_policy::RequestPolicy;
use crate::settings::Trust;
use crate::tls::FailureReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    app: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What the plain-HTTP listener did with a request (`certgate_http_listener_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlainOutcome {
    /// Answered `301` to HTTPS.
    Redirected,
    /// Forwarded to an `allowInsecure` app.
    Served,
    /// No app serves the host: `404`.
    UnknownHost,
    /// No host, several, or one that is not a host name: `400`.
    BadRequest,
    /// The app's `ipSecurityRestrictions` refuse the client's address: `403`.
    IpRestricted,
    /// A request head over the limits, refused by hyper before any app: `431`.
    HeaderTooLarge,
}

impl PlainOutcome {
    const ALL: [Self; 6] = [
        Self::Redirected,
        Self::Served,
        Self::UnknownHost,
        Self::BadRequest,
        Self::IpRestricted,
        Self::HeaderTooLarge,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Redirected => "redirected",
            Self::Served => "served",
            Self::UnknownHost => "unknown_host",
            Self::BadRequest => "bad_request",
            Self::IpRestricted => "ip_restricted",
            Self::HeaderTooLarge => "request_header_too_large",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// Which accept-time limit refused a connection (docs/operations.md "Limits under attack").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionLimit {
    /// `limits.maxConnections`.
    MaxConnections,
    /// `limits.maxConnectionsPerClient`.
    PerClient,
    /// `limits.maxPendingHandshakes`.
    PendingHandshakes,
}

impl ConnectionLimit {
    const ALL: [Self; 3] = [
        Self::MaxConnections,
        Self::PerClient,
        Self::PendingHandshakes,
    ];

    /// The config key, as the `limit` label and in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "maxConnections",
            Self::PerClient => "maxConnectionsPerClient",
            Self::PendingHandshakes => "maxPendingHandshakes",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    app: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    app: String,
    domain: String,
}

/// The handles of the `certgate_upstream_dns_*` series of an app's upstream group.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamDnsMetrics {
    /// `certgate_upstream_dns_resolutions_total`.
    pub resolutions: Counter,
    /// `certgate_upstream_dns_failures_total`.
    pub failures: Counter,
    /// `certgate_upstream_dns_addresses`.
    pub addresses: Gauge,
}

/// All of certgate's metrics and the registry that exposes them.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    connections: Family<AppLabel, Counter>,
    connections_active: Family<AppLabel, Gauge>,
    connections_refused: Counter,
    connections_refused_by_limit: Family<LimitLabels, Counter>,
    stalled: Family<StallLabels, Counter>,
    upstream_tls_failures: Family<StallLabels, Counter>,
    handshake_failures: Family<FailureLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<AppLabel, Histogram, fn() -> Histogram>,
    misdirected: Family<AppLabel, Counter>,
    authorization_denied: Family<RuleLabels, Counter>,
    rate_limited: Family<AppLabel, Counter>,
    cors_preflights: Family<PreflightLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    reload_closed: Counter,
    not_after: Family<CertificateLabels, Gauge<i64, AtomicI64>>,
    domain_not_after: Family<DomainLabels, Gauge<i64, AtomicI64>>,
    revocation: self::revocation::Families,
    proxy_protocol_refusals: Family<ReasonLabel, Counter>,
    upstream_dns_resolutions: Family<GroupLabels, Counter>,
    upstream_dns_failures: Family<GroupLabels, Counter>,
    upstream_dns_addresses: Family<GroupLabels, Gauge>,
    worker_connections: Family<WorkerLabel, Gauge>,
    /// `certgate_http_listener_requests_total`, in `PlainOutcome::ALL` order.
    http_listener_requests: [Counter; PlainOutcome::ALL.len()],
    upstream: self::upstream::Families,
    /// Set from the log thread's count whenever the metrics are read.
    log_lines_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A metric (or family) made and registered under `name`, described by `help`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// A request-duration histogram: 1 ms to ~33 s.
fn request_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// What an app's series are made from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppSeries<'a> {
    /// The app's name, its `app` label.
    pub name: &'a str,
    /// The server certificate chain, leaf first.
    pub server_chain: &'a [rustls_pki_types::CertificateDer<'static>],
    /// The client certificate chain certgate presents to an `https://` app, leaf first
    /// (empty when none).
    pub upstream_client_chain: &'a [rustls_pki_types::CertificateDer<'static>],
    /// The trusted CAs and CRLs whose expiry is exported.
    pub trust: &'a Trust,
    /// The leaf certificate served for each custom domain with a certificate of its own.
    pub domain_leaves: &'a [(String, rustls_pki_types::CertificateDer<'static>)],
    /// The rules and rate limit whose series exist at zero.
    pub request_policy: &'a RequestPolicy,
}

impl Metrics {
    /// Registers every metric family.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("certgate");
        let r = &mut registry;
        let metrics = Self {
            connections: registered(
                r,
                "connections",
                "Connections that completed the TLS handshake",
            ),
            connections_active: registered(
                r,
                "connections_active",
                "Open connections past the handshake",
            ),
            connections_refused: registered(
                r,
                "connections_refused",
                "Connections closed at accept because a connection limit was reached",
            ),
            connections_refused_by_limit: registered(
                r,
                "connections_refused_by_limit",
                "Connections closed at accept, by the limit that refused them",
            ),
            stalled: registered(
                r,
                "stalled_requests",
                "Requests cut off because the client's request body or the app's response body stalled",
            ),
            upstream_tls_failures: registered(
                r,
                "upstream_tls_failures",
                "Requests answered 502 because TLS with the app failed, by reason",
            ),
            handshake_failures: registered(r, "handshake_failures", "Refused handshakes by reason"),
            requests: registered(
                r,
                "requests",
                "Requests answered, by client certificate and status code",
            ),
            request_duration: {
                let family = Family::<AppLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                    request_duration_histogram,
                );
                r.register(
                    "request_duration_seconds",
                    "Time from request to response header, by app",
                    family.clone(),
                );
                family
            },
            misdirected: registered(
                r,
                "misdirected_requests",
                "Requests answered 421 because their authority belongs to another app",
            ),
            authorization_denied: registered(
                r,
                "authorization_denied",
                "Requests answered 403 by an authorization rule (rule = its index, or default)",
            ),
            rate_limited: registered(
                r,
                "rate_limited_requests",
                "Requests answered 429 over the app's rateLimit",
            ),
            cors_preflights: registered(
                r,
                "cors_preflights",
                "CORS preflights certgate answered itself, by result (allowed, refused)",
            ),
            reloads: registered(r, "reloads", "Configuration reloads by result"),
            reload_closed: registered(
                r,
                "reload_closed_connections",
                "Open connections told to close because a reload replaced the configuration they were opened under",
            ),
            not_after: registered(
                r,
                "certificate_not_after_seconds",
                "Earliest expiry (Unix time) of an app's server certificate, client CAs, CRL nextUpdate, or the client certificate certgate presents to it",
            ),
            domain_not_after: registered(
                r,
                "custom_domain_not_after_seconds",
                "Expiry (Unix time) of the certificate an app serves for a custom domain of its own",
            ),
            revocation: self::revocation::Families::register(r),
            proxy_protocol_refusals: registered(
                r,
                "proxy_protocol_refusals",
                "Connections refused before the handshake for a missing or bad PROXY protocol header, or an untrusted source",
            ),
            upstream_dns_resolutions: registered(
                r,
                "upstream_dns_resolutions",
                "Resolutions of the host name of an app's upstream group, failed or not",
            ),
            upstream_dns_failures: registered(
                r,
                "upstream_dns_failures",
                "Resolutions of the host name of an app's upstream group that failed or found no address (the last good addresses are kept)",
            ),
            upstream_dns_addresses: registered(
                r,
                "upstream_dns_addresses",
                "Addresses the host name of an app's upstream group resolves to now",
            ),
            log_lines_dropped: registered(
                r,
                "log_lines_dropped",
                "Log lines dropped because the log output did not keep up",
            ),
            worker_connections: registered(
                r,
                "worker_connections",
                "Open connections each worker thread serves, from accept to close",
            ),
            http_listener_requests: {
                let family: Family<OutcomeLabel, Counter> = registered(
                    r,
                    "http_listener_requests",
                    "Requests on the plain-HTTP listener (listenHttp), by what was done with them",
                );
                PlainOutcome::ALL.map(|outcome| {
                    family
                        .get_or_create(&OutcomeLabel {
                            outcome: outcome.as_str(),
                        })
                        .clone()
                })
            },
            upstream: {
                let families = self::upstream::Families::default();
                r.register(
                    "upstream_endpoints",
                    "Endpoints of each upstream group, by state (healthy, ejected, draining)",
                    families.endpoints.clone(),
                );
                r.register(
                    "upstream_endpoint_requests",
                    "Requests sent to each upstream endpoint, retries included",
                    families.requests.clone(),
                );
                r.register(
                    "upstream_endpoint_failures",
                    "Connect failures and connections reset before a response, by upstream endpoint",
                    families.failures.clone(),
                );
                r.register(
                    "upstream_no_healthy_endpoint_requests",
                    "Requests sent while every endpoint of their upstream group was ejected",
                    families.no_healthy.clone(),
                );
                r.register(
                    "upstream_health_checks",
                    "Active health checks of each upstream endpoint, by result (success, failure)",
                    families.health_checks.clone(),
                );
                families
            },
            registry,
        };
        metrics.start_at_zero();
        metrics
    }

    /// The series that exist before anything happens, at zero, so that a dashboard or alert
    /// sees them from the start.
    fn start_at_zero(&self) {
        for limit in ConnectionLimit::ALL {
            let _ = self
                .connections_refused_by_limit
                .get_or_create(&LimitLabels {
                    limit: limit.as_str(),
                });
        }
        for result in ["success", "error"] {
            let _ = self.reloads.get_or_create(&ReloadLabels { result });
        }
        for reason in ProxyHeaderFailure::ALL {
            let _ = self.proxy_protocol_refusals.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        // Refusals that happen before an app is chosen carry an empty app label.
        for reason in [
            FailureReason::UnknownSni,
            FailureReason::Timeout,
            FailureReason::Protocol,
        ] {
            let _ = self.handshake_failures.get_or_create(&FailureLabels {
                app: String::new(),
                reason: reason.as_str(),
            });
        }
    }

    /// The open-connection gauge of worker thread `index`.
    pub(crate) fn worker_connections(&self, index: usize) -> Gauge {
        self.worker_connections
            .get_or_create(&WorkerLabel { worker: index })
            .clone()
    }

    /// The revocation metric handles of an app (docs/revocation.md).
    pub(crate) fn revocation(&self, app: &str) -> self::revocation::RevocationMetrics {
        let crl_not_after = self
            .not_after
            .get_or_create(&CertificateLabels {
                app: app.to_owned(),
                kind: "crl",
            })
            .clone();
        self.revocation.for_app(app, crl_not_after)
    }

    /// The series of the resolution of the host name of group `group` of app `app`, at zero
    /// until it runs.
    pub(crate) fn upstream_dns(&self, app: &str, group: &str) -> UpstreamDnsMetrics {
        let labels = GroupLabels::new(app, group);
        UpstreamDnsMetrics {
            resolutions: self.upstream_dns_resolutions.get_or_create(&labels).clone(),
            failures: self.upstream_dns_failures.get_or_create(&labels).clone(),
            addresses: self.upstream_dns_addresses.get_or_create(&labels).clone(),
        }
    }

    /// Removes the series of the resolution of group `group` of app `app`, whose host is no
    /// longer resolved (now an IP address, or the group is gone): no address count of it
    /// stays behind. A task still holding its handles counts into nothing.
    pub(crate) fn remove_upstream_dns(&self, app: &str, group: &str) {
        let labels = GroupLabels::new(app, group);
        self.upstream_dns_resolutions.remove(&labels);
        self.upstream_dns_failures.remove(&labels);
        self.upstream_dns_addresses.remove(&labels);
    }

    /// The upstream handles of group `group` of app `app`, its series at zero.
    pub(crate) fn upstream_group(&self, app: &str, group: &str) -> self::upstream::GroupMetrics {
        self.upstream.group(app, group)
    }

    /// A connection was refused before its handshake by the PROXY protocol check.
    pub(crate) fn proxy_protocol_refused(&self, reason: ProxyHeaderFailure) {
        self.proxy_protocol_refusals
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The plain-HTTP listener did `outcome` with a request.
    pub(crate) fn plain_request(&self, outcome: PlainOutcome) {
        let index = match outcome {
            PlainOutcome::Redirected => 0,
            PlainOutcome::Served => 1,
            PlainOutcome::UnknownHost => 2,
            PlainOutcome::BadRequest => 3,
            PlainOutcome::IpRestricted => 4,
            PlainOutcome::HeaderTooLarge => 5,
        };
        if let Some(counter) = self.http_listener_requests.get(index) {
            counter.inc();
        }
    }

    /// A connection was closed at accept because `limit` was reached.
    pub(crate) fn connection_refused_by(&self, limit: ConnectionLimit) {
        self.connections_refused.inc();
        self.connections_refused_by_limit
            .get_or_create(&LimitLabels {
                limit: limit.as_str(),
            })
            .inc();
    }

    /// A handshake was refused.
    pub(crate) fn handshake_failed(&self, app: &str, reason: FailureReason) {
        self.handshake_failures
            .get_or_create(&FailureLabels {
                app: app.to_owned(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A reload finished.
    pub(crate) fn reloaded(&self, success: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: if success { "success" } else { "error" },
            })
            .inc();
    }

    /// A reload told `connections` open connections of the replaced config to close.
    pub(crate) fn reload_closed(&self, connections: usize) {
        self.reload_closed
            .inc_by(u64::try_from(connections).unwrap_or(u64::MAX));
    }

    /// The whole registry in the Prometheus/OpenMetrics text format.
    pub(crate) fn encode(&self) -> String {
        self.log_lines_dropped
            .inner()
            .store(crate::log_queue::dropped_lines(), Ordering::Relaxed);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
