//! Revocation metrics (docs/revocation.md): CRL fetches and OCSP lookups by outcome, OCSP
//! latency, the thisUpdate and nextUpdate of each CRL source, and unknown statuses let through.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::label::AppLabel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    app: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    app: String,
    source: String,
}

type UnixGauge = Gauge<i64, AtomicI64>;

/// The revocation metric families, registered once with the server's registry.
#[derive(Debug, Clone)]
pub(crate) struct Families {
    crl_fetches: Family<OutcomeLabels, Counter>,
    ocsp_lookups: Family<OutcomeLabels, Counter>,
    ocsp_duration: Family<AppLabel, Histogram, fn() -> Histogram>,
    crl_this_update: Family<SourceLabels, UnixGauge>,
    crl_next_update: Family<SourceLabels, UnixGauge>,
    unknown_allowed: Family<AppLabel, Counter>,
}

/// CRL fetch outcomes.
pub(crate) const FETCH_OUTCOMES: [&str; 2] = ["good", "error"];
/// OCSP lookup outcomes.
pub(crate) const OCSP_OUTCOMES: [&str; 5] = ["good", "revoked", "unknown", "error", "cache_hit"];

fn ocsp_histogram() -> Histogram {
    // 1 ms to ~8 s: past the lookup timeout.
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Families {
    /// Registers the families.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let families = Self {
            crl_fetches: Family::default(),
            ocsp_lookups: Family::default(),
            ocsp_duration: Family::new_with_constructor(ocsp_histogram),
            crl_this_update: Family::default(),
            crl_next_update: Family::default(),
            unknown_allowed: Family::default(),
        };
        registry.register(
            "crl_fetches",
            "CRL fetches over HTTP by outcome (good: fetched, parsed and current)",
            families.crl_fetches.clone(),
        );
        registry.register(
            "ocsp_lookups",
            "OCSP lookups by outcome (good, revoked, unknown, error, cache_hit)",
            families.ocsp_lookups.clone(),
        );
        registry.register(
            "ocsp_duration_seconds",
            "Time an OCSP responder took to answer",
            families.ocsp_duration.clone(),
        );
        registry.register(
            "crl_this_update_seconds",
            "thisUpdate (Unix time) of the newest CRL held from each source",
            families.crl_this_update.clone(),
        );
        registry.register(
            "crl_next_update_seconds",
            "nextUpdate (Unix time) of the newest CRL held from each source",
            families.crl_next_update.clone(),
        );
        registry.register(
            "revocation_unknown_allowed",
            "Connections let through with an unknown revocation status (onUnknown: allow)",
            families.unknown_allowed.clone(),
        );
        families
    }

    /// The handles of one app, every outcome at zero; `crl_not_after` is the app's
    /// `certgate_certificate_not_after_seconds{kind="crl"}`.
    pub(crate) fn for_app(&self, app: &str, crl_not_after: UnixGauge) -> RevocationMetrics {
        for outcome in FETCH_OUTCOMES {
            let _ = self.crl_fetches.get_or_create(&OutcomeLabels {
                app: app.to_owned(),
                outcome,
            });
        }
        for outcome in OCSP_OUTCOMES {
            let _ = self.ocsp_lookups.get_or_create(&OutcomeLabels {
                app: app.to_owned(),
                outcome,
            });
        }
        let label = AppLabel {
            app: app.to_owned(),
        };
        RevocationMetrics {
            app: app.to_owned(),
            ocsp_duration: self.ocsp_duration.get_or_create(&label).clone(),
            unknown_allowed: self.unknown_allowed.get_or_create(&label).clone(),
            families: self.clone(),
            crl_not_after,
        }
    }
}

/// One app's revocation metrics.
#[derive(Debug, Clone)]
pub struct RevocationMetrics {
    app: String,
    families: Families,
    ocsp_duration: Histogram,
    unknown_allowed: Counter,
    crl_not_after: UnixGauge,
}

impl RevocationMetrics {
    /// A CRL fetch ended.
    pub fn crl_fetched(&self, good: bool) {
        self.families
            .crl_fetches
            .get_or_create(&OutcomeLabels {
                app: self.app.clone(),
                outcome: if good { "good" } else { "error" },
            })
            .inc();
    }

    /// The CRL now held from `source`.
    pub fn crl_held(&self, source: &str, this_update: i64, next_update: Option<i64>) {
        let labels = SourceLabels {
            app: self.app.clone(),
            source: source.to_owned(),
        };
        self.families
            .crl_this_update
            .get_or_create(&labels)
            .set(this_update);
        if let Some(next) = next_update {
            self.families
                .crl_next_update
                .get_or_create(&labels)
                .set(next);
        }
    }

    /// The earliest nextUpdate of the app's CRLs.
    pub fn crl_not_after(&self, next_update: i64) {
        self.crl_not_after.set(next_update);
    }

    /// An OCSP lookup ended with `outcome` (one of `OCSP_OUTCOMES`).
    pub fn ocsp(&self, outcome: &'static str) {
        self.families
            .ocsp_lookups
            .get_or_create(&OutcomeLabels {
                app: self.app.clone(),
                outcome,
            })
            .inc();
    }

    /// How long a responder took.
    pub fn ocsp_duration(&self, seconds: f64) {
        self.ocsp_duration.observe(seconds);
    }

    /// A connection with an unknown status was let through.
    pub fn unknown_allowed(&self) {
        self.unknown_allowed.inc();
    }
}
