//! Validates `ingress.corsPolicy` (docs/cors.md): origins as `scheme://host[:port]` or `*`,
//! methods and header names as tokens, no credentials for every origin; the response header
//! values are made here, once per load.

use http::{HeaderName, HeaderValue, Method};

use super::checks::{Finding, Severity};
use super::file::FileCorsPolicy;
use crate::request_policy::cors::{CorsPolicy, CorsValues, Listed, Origins};

/// Why `ingress.corsPolicy` was refused; the app is named by the caller.
#[derive(Debug, thiserror::Error)]
pub enum CorsError {
    #[error(
        "ingress.corsPolicy.allowedOrigins is empty, so no page could call the app: list the origins (e.g. https://portal.example.com) or \"*\", or remove corsPolicy"
    )]
    NoOrigins,
    #[error(
        "ingress.corsPolicy.allowedOrigins entry {value:?} is not an origin: write scheme://host[:port] with no path and no trailing slash (e.g. https://portal.example.com), or \"*\""
    )]
    BadOrigin { value: String },
    #[error(
        "ingress.corsPolicy.allowedOrigins entry {value:?}: an origin is matched exactly, patterns are not supported; list each origin, or use \"*\""
    )]
    OriginPattern { value: String },
    #[error(
        "ingress.corsPolicy.allowCredentials is true with \"*\" in allowedOrigins: browsers refuse a credentialed answer to any origin; list the origins that may send credentials"
    )]
    CredentialsWithAnyOrigin,
    #[error("ingress.corsPolicy.allowedMethods entry {value:?} is not an HTTP method")]
    BadMethod { value: String },
    #[error("ingress.corsPolicy.{key} entry {value:?} is not a header name")]
    BadHeader { key: &'static str, value: String },
    #[error(
        "ingress.corsPolicy.maxAge {value} is negative: give the seconds a browser may cache a preflight's answer (0: not at all), or leave it out"
    )]
    NegativeMaxAge { value: i64 },
}

/// The validated policy, with its header values made.
pub(super) fn cors_policy(file: &FileCorsPolicy) -> Result<CorsPolicy, CorsError> {
    let origins = origins(file.allowed_origins.as_deref().unwrap_or_default())?;
    let credentials = file.allow_credentials.unwrap_or(false);
    if credentials && origins == Origins::Any {
        return Err(CorsError::CredentialsWithAnyOrigin);
    }
    let methods = listed(file.allowed_methods.as_deref(), |value| {
        let upper = value.to_ascii_uppercase();
        Method::from_bytes(upper.as_bytes())
            .ok()
            .filter(|_| !upper.is_empty())
            .map(|_| upper)
            .ok_or_else(|| CorsError::BadMethod {
                value: value.to_owned(),
            })
    })?;
    let headers = listed(file.allowed_headers.as_deref(), |value| {
        header_name("allowedHeaders", value)
    })?;
    let expose = listed(file.expose_headers.as_deref(), |value| {
        header_name("exposeHeaders", value)
    })?;
    let max_age = match file.max_age {
        None => None,
        Some(value) => Some(u64::try_from(value).map_err(|_| CorsError::NegativeMaxAge { value })?),
    };
    let values = CorsValues {
        allow_methods: joined(&methods),
        allow_headers: joined(&headers),
        expose_headers: match &expose {
            Listed::Any => Some(HeaderValue::from_static("*")),
            Listed::Only(_) => joined(&expose),
        },
        max_age: max_age.map(HeaderValue::from),
    };
    Ok(CorsPolicy {
        origins,
        methods,
        headers,
        expose,
        max_age,
        credentials,
        values,
    })
}

/// What `certgate check` warns about in a policy that loads but does not do what it says.
pub(super) fn findings(app: &str, policy: &CorsPolicy) -> Vec<Finding> {
    let mut findings = Vec::new();
    if policy.credentials && policy.expose == Listed::Any {
        findings.push(Finding {
            severity: Severity::Warning,
            app: app.to_owned(),
            message: "ingress.corsPolicy.exposeHeaders \"*\" exposes nothing to credentialed \
                      requests (browsers read it as a header named *, since allowCredentials is \
                      true): list the headers the page's script reads"
                .to_owned(),
        });
    }
    if policy.methods == Listed::Only(Vec::new()) {
        findings.push(Finding {
            severity: Severity::Warning,
            app: app.to_owned(),
            message: "ingress.corsPolicy.allowedMethods is empty: every preflight is refused, \
                      so pages can only make requests that need none (GET, HEAD, POST with \
                      plain headers); list the methods, or \"*\""
                .to_owned(),
        });
    }
    findings
}

fn origins(values: &[String]) -> Result<Origins, CorsError> {
    if values.is_empty() {
        return Err(CorsError::NoOrigins);
    }
    if values.iter().any(|value| value.trim() == "*") {
        return Ok(Origins::Any);
    }
    let mut exact = Vec::with_capacity(values.len());
    for value in values {
        let origin = origin(value)?;
        if !exact.contains(&origin) {
            exact.push(origin);
        }
    }
    Ok(Origins::Exact(exact))
}

/// An origin as browsers serialize it (RFC 6454 section 6.1): lower case, the scheme's
/// default port left out.
fn origin(value: &str) -> Result<String, CorsError> {
    let bad = || CorsError::BadOrigin {
        value: value.to_owned(),
    };
    let lower = value.trim().to_ascii_lowercase();
    if lower.contains('*') {
        return Err(CorsError::OriginPattern {
            value: value.to_owned(),
        });
    }
    let (scheme, authority) = lower.split_once("://").ok_or_else(bad)?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok
        || authority.is_empty()
        || authority
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_ascii_whitespace())
    {
        return Err(bad());
    }
    let parsed: http::uri::Authority = authority.parse().map_err(|_| bad())?;
    let explicit_port = parsed.as_str() != parsed.host();
    let port = match parsed.port_u16() {
        Some(0) => return Err(bad()),
        Some(port) => Some(port),
        // The `http` crate reads an out-of-range port as none.
        None if explicit_port => return Err(bad()),
        None => None,
    };
    let host = parsed.host();
    if host.is_empty() || host.ends_with('.') {
        return Err(bad());
    }
    let default_port = match scheme {
        "https" | "wss" => Some(443),
        "http" | "ws" => Some(80),
        _ => None,
    };
    Ok(match port {
        Some(port) if Some(port) != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

fn header_name(key: &'static str, value: &str) -> Result<String, CorsError> {
    HeaderName::from_bytes(value.trim().as_bytes())
        .map(|name| name.as_str().to_owned())
        .map_err(|_| CorsError::BadHeader {
            key,
            value: value.to_owned(),
        })
}

/// A list that may hold `*`; each other entry through `entry`, duplicates dropped.
fn listed(
    values: Option<&[String]>,
    entry: impl Fn(&str) -> Result<String, CorsError>,
) -> Result<Listed, CorsError> {
    let values = values.unwrap_or_default();
    if values.iter().any(|value| value.trim() == "*") {
        return Ok(Listed::Any);
    }
    let mut entries = Vec::with_capacity(values.len());
    for value in values {
        let entry = entry(value)?;
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    Ok(Listed::Only(entries))
}

/// A non-empty list joined as one header value.
fn joined(listed: &Listed) -> Option<HeaderValue> {
    match listed {
        Listed::Only(entries) if !entries.is_empty() => {
            // Tokens joined by ", " are a valid header value.
            HeaderValue::from_str(&entries.join(", ")).ok()
        }
        Listed::Only(_) | Listed::Any => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn file(origins: &[&str]) -> FileCorsPolicy {
        FileCorsPolicy {
            allowed_origins: Some(origins.iter().map(|o| (*o).to_owned()).collect()),
            ..FileCorsPolicy::default()
        }
    }

    #[test]
    fn origins_are_read_as_browsers_send_them() {
        let policy = cors_policy(&file(&[
            "HTTPS://Portal.Example.com:443",
            "http://localhost:3000",
            "http://[::1]:80",
        ]))
        .unwrap();
        assert_eq!(
            policy.origins,
            Origins::Exact(vec![
                "https://portal.example.com".to_owned(),
                "http://localhost:3000".to_owned(),
                "http://[::1]".to_owned(),
            ])
        );
    }

    #[test]
    fn an_origin_with_a_path_or_a_pattern_is_refused() {
        for bad in [
            "https://portal.example.com/",
            "portal.example.com",
            "https://",
            "https://user@portal.example.com",
            "https://portal.example.com:99999",
            "null",
        ] {
            assert!(
                matches!(cors_policy(&file(&[bad])), Err(CorsError::BadOrigin { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            cors_policy(&file(&["https://*.example.com"])),
            Err(CorsError::OriginPattern { .. })
        ));
    }

    #[test]
    fn credentials_with_any_origin_are_refused() {
        let mut policy = file(&["*"]);
        policy.allow_credentials = Some(true);
        assert!(matches!(
            cors_policy(&policy),
            Err(CorsError::CredentialsWithAnyOrigin)
        ));
    }

    #[test]
    fn header_values_are_made_at_load() {
        let policy = cors_policy(&FileCorsPolicy {
            allowed_origins: Some(vec!["https://a.example".to_owned()]),
            allowed_methods: Some(vec!["get".to_owned(), "POST".to_owned(), "GET".to_owned()]),
            allowed_headers: Some(vec!["Content-Type".to_owned(), "X-Trace".to_owned()]),
            expose_headers: Some(vec!["X-Request-Id".to_owned()]),
            max_age: Some(600),
            allow_credentials: Some(true),
        })
        .unwrap();
        let values = &policy.values;
        assert_eq!(values.allow_methods.as_ref().unwrap(), "GET, POST");
        assert_eq!(
            values.allow_headers.as_ref().unwrap(),
            "content-type, x-trace"
        );
        assert_eq!(values.expose_headers.as_ref().unwrap(), "x-request-id");
        assert_eq!(values.max_age.as_ref().unwrap(), "600");
    }

    #[test]
    fn a_negative_max_age_or_a_bad_name_is_refused() {
        let mut policy = file(&["*"]);
        policy.max_age = Some(-1);
        assert!(matches!(
            cors_policy(&policy),
            Err(CorsError::NegativeMaxAge { value: -1 })
        ));
        let mut policy = file(&["*"]);
        policy.allowed_headers = Some(vec!["bad header".to_owned()]);
        assert!(matches!(
            cors_policy(&policy),
            Err(CorsError::BadHeader { .. })
        ));
        let mut policy = file(&["*"]);
        policy.allowed_methods = Some(vec!["GE T".to_owned()]);
        assert!(matches!(
            cors_policy(&policy),
            Err(CorsError::BadMethod { .. })
        ));
    }
}
