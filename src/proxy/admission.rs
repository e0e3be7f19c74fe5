//! Whether a request may reach the app (docs/policy.md "Paths without a certificate", "Authorization",
//! "Rate limiting"): what depends on the client is worked out once per connection
//! (`Admission::new`); per request only the path is normalized and looked up, and only
//! on apps that configure a path policy.

use std::net::IpAddr;

use http::{Request, Response};

use super::body::ProxyBody;
use super::client::VerifiedClient;
use super::error::ProxyError;
use super::refuse::RefusalPage;
use crate::apps::App;
use crate::identity::ClientIdentity;
use crate::request_policy::authorization::{
    Client, DEFAULT_DENIAL, DEFAULT_RULE_LABEL, Decision, Grants,
};
use crate::request_policy::path;
use crate::request_policy::rate_limit::{Key, retry_after_seconds};
use crate::settings::ClientCertMode;
use crate::settings::RejectWith;
use crate::tls::client_policy::Refusal;

/// What a connection's client means to its app's policy, computed at the handshake.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Whether a certificate passed the app's policy on this connection.
    verified: bool,
    /// Which authorization rules this client passes.
    grants: Grants,
    /// The bucket this client draws from.
    rate_key: Key,
    /// With `rejectWith: "http"`, the 496 page for a request outside the exclusion paths of a
    /// `require` app that came without a certificate.
    certificate_required: Option<RefusalPage>,
}

/// What becomes of a request that passed the authority check.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and moved, never stored; boxing would allocate"
)]
pub(crate) enum Admitted {
    /// Forward it, with the normalized target (path and query) when it differs from the
    /// request's.
    Forward(Option<String>),
    /// certgate answers it itself (the 496 page of `rejectWith: "http"`).
    Answer(Response<ProxyBody>),
}

impl Admission {
    /// Evaluates the app's policy for a connection's client once.
    pub(crate) fn new(app: &App, client: Option<&VerifiedClient>, address: IpAddr) -> Self {
        let policy = &app.config.request_policy;
        let identity = client.map(|client| &client.identity);
        let grants = policy.authorization.grants(identity.map(|id| Client {
            hash: &id.hash_bytes,
            vouched_for: id.trust.is_vouched_for(),
            subject: &id.names.subject,
            dns_sans: &id.names.dns,
            uri_sans: &id.names.uris,
        }));
        Self {
            verified: identity.is_some(),
            grants,
            rate_key: rate_key(identity, address),
            certificate_required: (identity.is_none()
                && app.config.mode == ClientCertMode::Require
                && app.config.reject_with == RejectWith::Http
                && !policy.exclusion_paths.is_empty())
            .then(|| RefusalPage::new(Refusal::no_certificate())),
        }
    }

    /// Checks a request against the app's policy.
    pub(crate) fn admit<B>(&self, app: &App, request: &Request<B>) -> Result<Admitted, ProxyError> {
        let policy = &app.config.request_policy;
        let (method, uri) = (request.method(), request.uri());
        let mut rewritten = None;
        if policy.inspects_path() {
            let normalized = path::normalize(uri.path()).map_err(|_| ProxyError::BadRequest {
                reason: "path cannot be normalized",
            })?;
            if !policy.is_excluded(&normalized.matched) {
                if app.config.mode == ClientCertMode::Require && !self.verified {
                    return match &self.certificate_required {
                        Some(page) => Ok(Admitted::Answer(page.respond(request))),
                        None => Err(ProxyError::CertificateRequired),
                    };
                }
                match policy
                    .authorization
                    .decide(&self.grants, method, &normalized.matched)
                {
                    Decision::Allow => {}
                    Decision::Deny(Some(rule)) => {
                        return Err(ProxyError::Denied {
                            rule: rule.label.clone(),
                            body: rule.denial.clone(),
                        });
                    }
                    Decision::Deny(None) => {
                        return Err(ProxyError::Denied {
                            rule: DEFAULT_RULE_LABEL.to_owned(),
                            body: DEFAULT_DENIAL.to_owned(),
                        });
                    }
                }
            }
            if normalized.forward != uri.path() {
                let mut target = normalized.forward;
                if let Some(query) = uri.query() {
                    target.push('?');
                    target.push_str(query);
                }
                rewritten = Some(target);
            }
        }
        if let Some(limiter) = &app.rate_limiter {
            limiter
                .check(self.rate_key)
                .map_err(|wait| ProxyError::RateLimited {
                    retry_after_seconds: retry_after_seconds(wait),
                })?;
        }
        Ok(Admitted::Forward(rewritten))
    }
}

/// The bucket a client draws from: its certificate's when a CA or a pin vouches for it, its
/// address otherwise (no certificate, or one only `allowUntrusted` admitted: anyone can make a
/// fresh one for every request).
fn rate_key(identity: Option<&ClientIdentity>, address: IpAddr) -> Key {
    match identity {
        Some(id) if id.trust.is_vouched_for() => Key::Certificate(id.hash_bytes),
        _ => Key::address(address),
    }
}
