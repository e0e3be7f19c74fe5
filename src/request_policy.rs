//! Per-app request policy, validated: paths served without a certificate, authorization rules,
//! the rate limit, the certificate header formats and the cross-origin policy. Below everything but `settings`: the
//! config loader builds these types, the listener and the proxy read them.

pub(crate) mod authorization;
pub(crate) mod cors;
pub(crate) mod path;
pub(crate) mod rate_limit;

use std::sync::Arc;

use self::authorization::{Authorization, OtherMethods};
use self::cors::CorsPolicy;
use self::rate_limit::RateLimit;
use crate::settings::ByName;

/// What an app decides per request beyond the TLS layer.
#[derive(Debug, Clone, Default)]
pub struct RequestPolicy {
    /// Normalized prefixes served with or without a certificate (`clientCertExclusionPaths`).
    pub exclusion_paths: Vec<String>,
    /// Authorization rules and `defaultDeny`.
    pub authorization: Authorization,
    /// Requests per client identity, when limited.
    pub rate_limit: Option<RateLimit>,
    /// Which certificate headers are sent upstream.
    pub formats: Formats,
    /// `ingress.corsPolicy`, when set.
    pub cors: Option<Arc<CorsPolicy>>,
}

impl RequestPolicy {
    /// Whether requests' paths must be normalized and matched (costs nothing otherwise).
    pub fn inspects_path(&self) -> bool {
        !self.exclusion_paths.is_empty() || self.authorization.is_configured()
    }

    /// What `certgate check` prints of the policy: empty for an app that configures none.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.exclusion_paths.is_empty() {
            parts.push(format!(
                "exclusion-paths={}",
                self.exclusion_paths.join(",")
            ));
        }
        if self.authorization.is_configured() {
            // Rules that pass unlisted methods on are named: they are the exception.
            let passing_on: Vec<&str> = self
                .authorization
                .rules
                .iter()
                .filter(|rule| rule.other_methods == OtherMethods::Next)
                .map(|rule| rule.label.as_str())
                .collect();
            let passing_on = if passing_on.is_empty() {
                String::new()
            } else {
                format!(" (otherMethods next: {})", passing_on.join(","))
            };
            parts.push(format!(
                "authorization={} rules{passing_on}, default {}",
                self.authorization.rules.len(),
                if self.authorization.default_deny {
                    "deny"
                } else {
                    "allow"
                }
            ));
        }
        if let Some(limit) = &self.rate_limit {
            parts.push(format!(
                "rate-limit={}/s burst {}",
                limit.requests_per_second, limit.burst
            ));
        }
        if self.formats != Formats::default() {
            let names = [
                (self.formats.envoy, "envoy"),
                (self.formats.rfc9440, "rfc9440"),
                (self.formats.aws_alb, "aws-alb"),
                (self.formats.azure_app_service, "azure-app-service"),
                (self.formats.verdict, "verdict"),
            ];
            let on: Vec<&str> = names
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| *n)
                .collect();
            parts.push(format!("formats={}", on.join(",")));
        }
        if let Some(cors) = &self.cors {
            parts.push(format!("cors={}", cors.describe()));
        }
        parts.iter().map(|part| format!(" {part}")).collect()
    }

    /// Whether a normalized path (`matched` form) is under an exclusion path.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.exclusion_paths
            .iter()
            .any(|prefix| path::under(path, prefix))
    }
}

/// `forwardClientCert.formats`: the header sets sent to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    /// `envoy`: `X-Forwarded-Client-Cert`.
    pub envoy: bool,
    /// `rfc9440`: `Client-Cert` and `Client-Cert-Chain`.
    pub rfc9440: bool,
    /// `aws-alb`: ALB's `X-Amzn-Mtls-Clientcert-*` verify-mode headers.
    pub aws_alb: bool,
    /// `azure-app-service`: `X-ARR-ClientCert`.
    pub azure_app_service: bool,
    /// `verdict`: `X-Client-Verify: SUCCESS` or `NONE`.
    pub verdict: bool,
}

impl Default for Formats {
    fn default() -> Self {
        Self {
            envoy: true,
            rfc9440: false,
            aws_alb: false,
            azure_app_service: false,
            verdict: false,
        }
    }
}

impl Formats {
    /// No format at all (the starting point when `formats` is given).
    pub const NONE: Self = Self {
        envoy: false,
        rfc9440: false,
        aws_alb: false,
        azure_app_service: false,
        verdict: false,
    };

    /// Turns on `format`.
    pub fn enable(&mut self, format: Format) {
        match format {
            Format::Envoy => self.envoy = true,
            Format::Rfc9440 => self.rfc9440 = true,
            Format::AwsAlb => self.aws_alb = true,
            Format::AzureAppService => self.azure_app_service = true,
            Format::Verdict => self.verdict = true,
        }
    }
}

/// One name of `forwardClientCert.formats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `envoy`.
    Envoy,
    /// `rfc9440`.
    Rfc9440,
    /// `aws-alb`.
    AwsAlb,
    /// `azure-app-service`.
    AzureAppService,
    /// `verdict`.
    Verdict,
}

impl ByName for Format {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("envoy", Self::Envoy),
        ("rfc9440", Self::Rfc9440),
        ("aws-alb", Self::AwsAlb),
        ("azure-app-service", Self::AzureAppService),
        ("verdict", Self::Verdict),
    ];
}
