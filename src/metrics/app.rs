//! One app's per-request series, resolved once per app so that a request only increments
//! counters (no label lookup, no allocation), and the guard that counts a connection as active.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::label::AppLabel;
use super::label::StallReason;
use crate::tls::upstream::UpstreamTlsFailure;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) app: String,
    pub(super) client_cert: &'static str,
    pub(super) code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RuleLabels {
    pub(super) app: String,
    pub(super) rule: String,
}

/// An app and a reason: the labels of stalled requests and of TLS failures with the app.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StallLabels {
    pub(super) app: String,
    pub(super) reason: &'static str,
}

/// An app and the result of a CORS preflight (`allowed` or `refused`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PreflightLabels {
    pub(super) app: String,
    pub(super) result: &'static str,
}

/// One app's request and connection series (cheap to clone: every field is a shared handle).
#[derive(Debug, Clone)]
pub(crate) struct AppMetrics {
    pub(super) app: String,
    pub(super) connections: Counter,
    pub(super) connections_active: Gauge,
    pub(super) misdirected: Counter,
    /// `certgate_handshake_failures_total{reason="ip_restricted"}`, for a connection whose
    /// address a reloaded config refuses at its next request.
    pub(super) ip_restricted: Counter,
    pub(super) authorization_denied: Family<RuleLabels, Counter>,
    pub(super) rate_limited: Family<AppLabel, Counter>,
    /// `certgate_cors_preflights_total`, `[refused, allowed]`, for an app with `corsPolicy`.
    pub(super) cors_preflights: Option<[Counter; 2]>,
    /// `certgate_stalled_requests_total`, in `StallReason::ALL` order.
    pub(super) stalled: [Counter; 2],
    /// `certgate_upstream_tls_failures_total`, in `UpstreamTlsFailure::ALL` order.
    pub(super) upstream_tls_failures: [Counter; UpstreamTlsFailure::ALL.len()],
    /// `code="200"` for `client_cert="none"` and `"verified"`: nearly every request.
    pub(super) ok: [Counter; 2],
    pub(super) requests: Family<RequestLabels, Counter>,
    pub(super) request_duration: Histogram,
}

impl AppMetrics {
    /// A handshake completed; returns a guard that keeps the connection counted as active.
    pub(crate) fn connection_opened(&self) -> ActiveConnection {
        self.connections.inc();
        self.connections_active.inc();
        ActiveConnection {
            gauge: self.connections_active.clone(),
        }
    }

    /// A request of an open connection was refused because a reload's
    /// `ipSecurityRestrictions` refuse its client address.
    pub(crate) fn ip_restricted(&self) {
        self.ip_restricted.inc();
    }

    /// A request was cut off because a body stalled.
    pub(crate) fn stalled(&self, reason: StallReason) {
        let index = match reason {
            StallReason::RequestBodyIdle => 0,
            StallReason::UpstreamIdle => 1,
        };
        self.stalled[index].inc();
    }

    /// TLS with the app failed for `reason`.
    pub(crate) fn upstream_tls_failed(&self, reason: UpstreamTlsFailure) {
        if let Some(index) = UpstreamTlsFailure::ALL.iter().position(|r| *r == reason)
            && let Some(counter) = self.upstream_tls_failures.get(index)
        {
            counter.inc();
        }
    }

    /// A request was answered (or abandoned, with the status the access log gives it).
    pub(crate) fn request_done(&self, verified: bool, code: u16, seconds: f64) {
        if code == 200 {
            self.ok[usize::from(verified)].inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    app: self.app.clone(),
                    client_cert: if verified { "verified" } else { "none" },
                    code,
                })
                .inc();
        }
        self.request_duration.observe(seconds);
        if code == 421 {
            self.misdirected.inc();
        }
    }

    /// An authorization rule refused a request.
    pub(crate) fn authorization_denied(&self, rule: &str) {
        self.authorization_denied
            .get_or_create(&RuleLabels {
                app: self.app.clone(),
                rule: rule.to_owned(),
            })
            .inc();
    }

    /// certgate answered a CORS preflight, allowing it or not.
    pub(crate) fn cors_preflight(&self, allowed: bool) {
        if let Some(counters) = &self.cors_preflights {
            counters[usize::from(allowed)].inc();
        }
    }

    /// A request was over the app's rate limit.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited
            .get_or_create(&AppLabel {
                app: self.app.clone(),
            })
            .inc();
    }
}

/// Decrements `certgate_connections_active` when the connection ends.
#[derive(Debug)]
pub(crate) struct ActiveConnection {
    pub(super) gauge: Gauge,
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
