//! Validates an app's request policy from the file model: exclusion paths, authorization
//! rules, `defaultDeny`, `rateLimit`, `forwardClientCert.formats` and `ingress.corsPolicy`.

use std::sync::Arc;

use http::Method;

use super::cors::{CorsError, cors_policy};
use super::file::{FileApp, FileAuthorizationRule};
use crate::request_policy::authorization::{
    Authorization, OtherMethods, Principals, Rule, UriPattern,
};
use crate::request_policy::path::{self, PrefixError};
use crate::request_policy::rate_limit::RateLimit;
use crate::request_policy::{Formats, RequestPolicy};
use crate::settings::ClientCertMode;

/// Why an app's policy was refused; `ConfigError::Policy` names the app.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{field} {value:?} is not a usable path prefix: {source}")]
    BadPrefix {
        field: String,
        value: String,
        source: PrefixError,
    },
    #[error(
        "authorization[{index}] lets no one pass: set allowedSubjects, allowedDnsSans, allowedUriSans, allowedHashes or allowAnyVerified"
    )]
    EmptyRule { index: usize },
    #[error(
        "authorization[{index}].methods is empty and so matches nothing: leave it out to match every method"
    )]
    EmptyMethods { index: usize },
    #[error("authorization[{index}].methods: {value:?} is not an HTTP method")]
    BadMethod { index: usize, value: String },
    #[error(
        "authorization[{index}].otherMethods {value:?} is not deny or next (deny: a method not in methods is refused; next: the next rules decide)"
    )]
    BadOtherMethods { index: usize, value: String },
    #[error(
        "authorization[{index}].otherMethods needs methods (without methods the rule covers every method): add methods or remove otherMethods"
    )]
    OtherMethodsWithoutMethods { index: usize },
    #[error("authorization[{index}].{field} holds an empty entry")]
    EmptyEntry { index: usize, field: &'static str },
    #[error(
        "authorization[{index}].allowedUriSans entry {value:?}: a * may only end the entry (a prefix, e.g. spiffe://corp/ops/*)"
    )]
    BadUriPattern { index: usize, value: String },
    #[error(
        "authorization[{index}].allowedHashes entry {value:?} is not a SHA-256 hash (64 hex digits)"
    )]
    BadHash { index: usize, value: String },
    #[error(
        "{key} needs client certificates, which ignore mode never asks for: remove it or pick require/accept"
    )]
    IgnoreMode { key: &'static str },
    #[error("rateLimit.requestsPerSecond must be a number greater than zero")]
    BadRate,
    #[error("rateLimit.burst must be at least 1")]
    BadBurst,
    #[error(
        "unknown forwardClientCert format {value:?} (expected envoy, rfc9440, aws-alb, azure-app-service or verdict)"
    )]
    UnknownFormat { value: String },
    #[error(transparent)]
    Cors {
        #[from]
        source: CorsError,
    },
}

/// The validated policy of one app.
pub(super) fn app_policy(
    file: &FileApp,
    mode: ClientCertMode,
) -> Result<RequestPolicy, PolicyError> {
    if mode == ClientCertMode::Ignore {
        if !file.client_cert_exclusion_paths.is_empty() {
            return Err(PolicyError::IgnoreMode {
                key: "clientCertExclusionPaths",
            });
        }
        if !file.authorization.is_empty() || file.default_deny {
            return Err(PolicyError::IgnoreMode {
                key: "authorization",
            });
        }
    }
    let exclusion_paths = file
        .client_cert_exclusion_paths
        .iter()
        .enumerate()
        .map(|(index, value)| checked_prefix(format!("clientCertExclusionPaths[{index}]"), value))
        .collect::<Result<Vec<_>, _>>()?;
    let rules = file
        .authorization
        .iter()
        .enumerate()
        .map(|(index, rule)| authorization_rule(index, rule))
        .collect::<Result<Vec<_>, _>>()?;
    let rate_limit = match &file.rate_limit {
        None => None,
        Some(limit) => {
            let rate = limit.requests_per_second;
            if !(rate.is_finite() && rate > 0.0) {
                return Err(PolicyError::BadRate);
            }
            let burst = match limit.burst {
                Some(0) => return Err(PolicyError::BadBurst),
                Some(burst) => f64::from(burst),
                None => rate.ceil().max(1.0),
            };
            Some(RateLimit {
                requests_per_second: rate,
                burst,
            })
        }
    };
    let formats = match &file.forward_client_cert.formats {
        None => Formats::default(),
        Some(names) => {
            let mut formats = Formats::NONE;
            for name in names {
                let format = name.known().map_err(|value| PolicyError::UnknownFormat {
                    value: value.to_owned(),
                })?;
                formats.enable(format);
            }
            formats
        }
    };
    Ok(RequestPolicy {
        exclusion_paths,
        authorization: Authorization {
            rules,
            default_deny: file.default_deny,
        },
        rate_limit,
        formats,
        cors: file
            .ingress
            .cors_policy
            .as_ref()
            .map(cors_policy)
            .transpose()?
            .map(Arc::new),
    })
}

fn checked_prefix(field: String, value: &str) -> Result<String, PolicyError> {
    path::prefix(value).map_err(|source| PolicyError::BadPrefix {
        field,
        value: value.to_owned(),
        source,
    })
}

fn authorization_rule(index: usize, file: &FileAuthorizationRule) -> Result<Rule, PolicyError> {
    let path_prefix = checked_prefix(
        format!("authorization[{index}].pathPrefix"),
        &file.path_prefix,
    )?;
    let (methods, other_methods) = rule_methods(index, file)?;
    let who = rule_principals(index, file)?;
    if who.is_empty() {
        return Err(PolicyError::EmptyRule { index });
    }
    Ok(Rule {
        denial: format!("forbidden by authorization rule {index} (pathPrefix {path_prefix})\n"),
        path_prefix,
        methods,
        other_methods,
        who,
        label: index.to_string(),
    })
}

/// A rule's `methods` and what `otherMethods` does with the rest.
fn rule_methods(
    index: usize,
    file: &FileAuthorizationRule,
) -> Result<(Vec<Method>, OtherMethods), PolicyError> {
    let methods = match &file.methods {
        None => Vec::new(),
        Some(names) if names.is_empty() => return Err(PolicyError::EmptyMethods { index }),
        Some(names) => names
            .iter()
            .map(|name| {
                let upper = name.trim().to_ascii_uppercase();
                Method::from_bytes(upper.as_bytes())
                    .ok()
                    .filter(|_| !upper.is_empty())
                    .ok_or_else(|| PolicyError::BadMethod {
                        index,
                        value: name.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let other_methods = match &file.other_methods {
        None => OtherMethods::Deny,
        Some(_) if file.methods.is_none() => {
            return Err(PolicyError::OtherMethodsWithoutMethods { index });
        }
        Some(value) => value
            .known()
            .map_err(|value| PolicyError::BadOtherMethods {
                index,
                value: value.to_owned(),
            })?,
    };
    Ok((methods, other_methods))
}

/// Whom a rule lets in: its allow-lists, each entry checked.
fn rule_principals(index: usize, file: &FileAuthorizationRule) -> Result<Principals, PolicyError> {
    let non_empty = |field: &'static str, values: &[String]| {
        if values.iter().any(|value| value.trim().is_empty()) {
            Err(PolicyError::EmptyEntry { index, field })
        } else {
            Ok(())
        }
    };
    non_empty("allowedSubjects", &file.allowed_subjects)?;
    non_empty("allowedDnsSans", &file.allowed_dns_sans)?;
    non_empty("allowedUriSans", &file.allowed_uri_sans)?;
    non_empty("allowedHashes", &file.allowed_hashes)?;
    let uri_sans = file
        .allowed_uri_sans
        .iter()
        .map(|value| {
            UriPattern::parse(value).ok_or_else(|| PolicyError::BadUriPattern {
                index,
                value: value.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let hashes = file
        .allowed_hashes
        .iter()
        .map(|value| {
            crate::identity::parse_sha256(value).ok_or_else(|| PolicyError::BadHash {
                index,
                value: value.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Principals {
        subjects: file.allowed_subjects.clone(),
        dns_sans: file
            .allowed_dns_sans
            .iter()
            .map(|name| crate::tls::sni::normalize(name))
            .collect(),
        uri_sans,
        hashes,
        any_verified: file.allow_any_verified,
    })
}
