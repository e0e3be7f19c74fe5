//! One app's series: every one created at zero when the app is registered (so dashboards and
//! alerts see the app before its first request), its certificate expiries set, and the handles
//! its requests increment resolved once.

use super::app::{AppMetrics, PreflightLabels, RequestLabels, RuleLabels, StallLabels};
use super::label::{AppLabel, StallReason};
use super::{AppSeries, CertificateLabels, DomainLabels, FailureLabels, Metrics};
use crate::tls::FailureReason;
use crate::tls::upstream::UpstreamTlsFailure;

impl Metrics {
    /// Creates every per-app series at zero, sets the app's certificate expiries, and
    /// returns the app's request handles.
    pub(crate) fn register_app(&self, app: &AppSeries<'_>) -> AppMetrics {
        for reason in FailureReason::ALL {
            let _ = self.handshake_failures.get_or_create(&FailureLabels {
                app: app.name.to_owned(),
                reason: reason.as_str(),
            });
        }
        let expiries = [
            (
                "server",
                app.server_chain
                    .first()
                    .and_then(|c| certificate_not_after(c)),
            ),
            (
                "client_ca",
                app.trust
                    .roots
                    .iter()
                    .filter_map(|c| certificate_not_after(c))
                    .min(),
            ),
            (
                "upstream_client",
                app.upstream_client_chain
                    .first()
                    .and_then(|c| certificate_not_after(c)),
            ),
            (
                "crl",
                app.trust
                    .crls
                    .iter()
                    .filter_map(|c| crl_next_update(c))
                    .min(),
            ),
        ];
        for (domain, leaf) in app.domain_leaves {
            if let Some(not_after) = certificate_not_after(leaf) {
                self.domain_not_after
                    .get_or_create(&DomainLabels {
                        app: app.name.to_owned(),
                        domain: domain.clone(),
                    })
                    .set(not_after);
            }
        }
        for (kind, not_after) in expiries {
            if let Some(not_after) = not_after {
                self.not_after
                    .get_or_create(&CertificateLabels {
                        app: app.name.to_owned(),
                        kind,
                    })
                    .set(not_after);
            }
        }
        // The policy series exist at zero only for apps that can increment them.
        let rules = &app.request_policy.authorization;
        let default = rules
            .default_deny
            .then_some(crate::request_policy::authorization::DEFAULT_RULE_LABEL);
        for rule in rules
            .rules
            .iter()
            .map(|rule| rule.label.as_str())
            .chain(default)
        {
            let _ = self.authorization_denied.get_or_create(&RuleLabels {
                app: app.name.to_owned(),
                rule: rule.to_owned(),
            });
        }
        if app.request_policy.rate_limit.is_some() {
            let _ = self.rate_limited.get_or_create(&AppLabel {
                app: app.name.to_owned(),
            });
        }
        self.app(app.name, app.request_policy.cors.is_some())
    }

    /// The handles of one app's per-request series, resolved once so that a request only
    /// increments counters (no label lookup, no allocation).
    fn app(&self, app: &str, cors: bool) -> AppMetrics {
        let label = AppLabel {
            app: app.to_owned(),
        };
        let ok = ["none", "verified"].map(|client_cert| {
            self.requests
                .get_or_create(&RequestLabels {
                    app: app.to_owned(),
                    client_cert,
                    code: 200,
                })
                .clone()
        });
        let stalled = StallReason::ALL.map(|reason| {
            self.stalled
                .get_or_create(&StallLabels {
                    app: app.to_owned(),
                    reason: reason.as_str(),
                })
                .clone()
        });
        let upstream_tls_failures = UpstreamTlsFailure::ALL.map(|reason| {
            self.upstream_tls_failures
                .get_or_create(&StallLabels {
                    app: app.to_owned(),
                    reason: reason.as_str(),
                })
                .clone()
        });
        let ip_restricted = self
            .handshake_failures
            .get_or_create(&FailureLabels {
                app: app.to_owned(),
                reason: FailureReason::IpRestricted.as_str(),
            })
            .clone();
        AppMetrics {
            stalled,
            ip_restricted,
            upstream_tls_failures,
            connections: self.connections.get_or_create(&label).clone(),
            connections_active: self.connections_active.get_or_create(&label).clone(),
            misdirected: self.misdirected.get_or_create(&label).clone(),
            authorization_denied: self.authorization_denied.clone(),
            rate_limited: self.rate_limited.clone(),
            // The preflight series exist at zero only for apps that answer preflights.
            cors_preflights: cors.then(|| {
                ["refused", "allowed"].map(|result| {
                    self.cors_preflights
                        .get_or_create(&PreflightLabels {
                            app: app.to_owned(),
                            result,
                        })
                        .clone()
                })
            }),
            ok,
            requests: self.requests.clone(),
            request_duration: self.request_duration.get_or_create(&label).clone(),
            app: label.app,
        }
    }
}

fn certificate_not_after(der: &[u8]) -> Option<i64> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(certificate.validity().not_after.timestamp())
}

fn crl_next_update(der: &[u8]) -> Option<i64> {
    let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
    crl.next_update().map(|time| time.timestamp())
}
