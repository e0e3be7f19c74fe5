//! The single values of a config: addresses, durations, limits, the upstream URL, XFCC
//! fields, revocation settings and SHA-256 pins, each checked on its own.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::error::{AppError, ConfigError, MIN_REQUEST_HEADER_BYTES};
use super::file::{FileApp, FileLimits, FileRevocation, FileTimeouts, FileUpstreamDns};
use crate::settings::{
    DEFAULT_DNS_REFRESH, DEFAULT_MAX_PENDING_HANDSHAKES, HEALTH_CHECK_HEALTHY,
    HEALTH_CHECK_INTERVAL_MS, HEALTH_CHECK_PATH, HEALTH_CHECK_STATUS, HEALTH_CHECK_TIMEOUT_MS,
    HEALTH_CHECK_UNHEALTHY, HealthCheck, Limits, MIN_DNS_REFRESH_SETTING, Named, OcspMode,
    OnUnknown, RevocationPolicy, Timeouts, Transport, Upstream, UpstreamDns, XfccField, XfccFields,
};

/// Where the mTLS listener binds when the config names no `listen`.
pub(super) const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// The protocol spoken to every upstream of the app (`ingress.transport`).
pub(super) fn transport(file: &FileApp) -> Result<Transport, AppError> {
    match &file.ingress.transport {
        None => Ok(Transport::Http1),
        Some(value) => value.known().map_err(|value| {
            if value.eq_ignore_ascii_case("tcp") {
                AppError::TcpTransport {
                    value: value.to_owned(),
                }
            } else {
                AppError::UnknownTransport {
                    value: value.to_ascii_lowercase(),
                }
            }
        }),
    }
}

/// The app's `upstream` URL as written, or the one `ingress.targetPort` stands for.
pub(super) fn latest_url(file: &FileApp) -> Option<String> {
    match (&file.upstream, file.ingress.target_port) {
        (Some(upstream), _) => Some(upstream.clone()),
        (None, Some(port)) => Some(format!("http://127.0.0.1:{port}")),
        (None, None) => None,
    }
}

/// An upstream URL and the transport spoken to it; TLS is left to the loader, which reads
/// `upstreamTls` when the scheme is `https`.
pub(super) fn upstream_url(value: &str, transport: Transport) -> Result<Upstream, AppError> {
    let bad = || AppError::BadUpstream {
        value: value.to_owned(),
    };
    let uri: http::Uri = value.parse().map_err(|_| bad())?;
    let path_is_root = matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("/"));
    let (Some(scheme @ ("http" | "https")), Some(authority), true) =
        (uri.scheme_str(), uri.authority(), path_is_root)
    else {
        return Err(bad());
    };
    // Credentials would never be sent and would be printed in every log line; an explicit
    // port must be a valid, non-zero one (the `http` crate reads `:99999` as "no port").
    let explicit_port = authority.as_str() != authority.host();
    let port = match authority.port_u16() {
        Some(0) => return Err(bad()),
        Some(port) => port,
        None if explicit_port => return Err(bad()),
        None if scheme == "https" => 443,
        None => 80,
    };
    if authority.as_str().contains('@') || value.contains('#') {
        return Err(bad());
    }
    Ok(Upstream {
        authority: format!("{}:{port}", authority.host())
            .parse()
            .map_err(|_| bad())?,
        transport,
        tls: None,
    })
}

/// Whether an upstream URL (already checked by `upstream_url`) asks for TLS.
pub(super) fn is_https(value: &str) -> bool {
    value
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

pub(super) fn revocation_policy(file: &FileRevocation) -> Result<RevocationPolicy, AppError> {
    let url = |field: &'static str, value: &str| {
        let bad = || AppError::BadRevocationUrl {
            field,
            value: value.to_owned(),
        };
        let uri: http::Uri = value.parse().map_err(|_| bad())?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) if !authority.as_str().contains('@') => Ok(uri),
            _ => Err(bad()),
        }
    };
    let default = RevocationPolicy::default();
    let ocsp = match &file.ocsp {
        None => OcspMode::Off,
        Some(value) => value.known().map_err(|value| AppError::UnknownOcspMode {
            value: value.to_owned(),
        })?,
    };
    let on_unknown = match &file.on_unknown {
        None => OnUnknown::Refuse,
        Some(value) => value.known().map_err(|value| AppError::UnknownOnUnknown {
            value: value.to_owned(),
        })?,
    };
    let refresh = match file.refresh_ms {
        None => default.refresh,
        Some(ms) if ms < 1000 => return Err(AppError::RefreshTooShort),
        Some(ms) => Duration::from_millis(ms),
    };
    let max_age = match file.max_age_ms {
        None => default.max_age,
        Some(ms) if ms < 1000 => return Err(AppError::MaxAgeTooShort),
        Some(ms) => Duration::from_millis(ms),
    };
    Ok(RevocationPolicy {
        crl_urls: file
            .crl_urls
            .iter()
            .map(|value| url("clientAuth.revocation.crlUrls entry", value))
            .collect::<Result<_, _>>()?,
        crl_from_certificates: file.crl_from_certificates,
        ocsp,
        ocsp_responder: file
            .ocsp_responder
            .as_deref()
            .map(|value| url("clientAuth.revocation.ocspResponder", value))
            .transpose()?,
        on_unknown,
        refresh,
        max_age,
    })
}

pub(super) fn xfcc_fields(
    key: &'static str,
    names: Option<&[Named<XfccField>]>,
) -> Result<XfccFields, AppError> {
    let Some(names) = names else {
        return Ok(XfccFields::default());
    };
    let mut fields = XfccFields {
        cert: false,
        chain: false,
        subject: false,
        uri: false,
        dns: false,
    };
    for name in names {
        match name.known() {
            // The hash is always sent, as Envoy does.
            Ok(XfccField::Hash) => {}
            Ok(XfccField::Cert) => fields.cert = true,
            Ok(XfccField::Chain) => fields.chain = true,
            Ok(XfccField::Subject) => fields.subject = true,
            Ok(XfccField::Uri) => fields.uri = true,
            Ok(XfccField::Dns) => fields.dns = true,
            Err(value) => {
                return Err(AppError::UnknownXfccField {
                    key,
                    value: value.to_owned(),
                });
            }
        }
    }
    Ok(fields)
}

pub(super) fn address(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadAddress {
        field,
        value: value.to_owned(),
    })
}

pub(super) fn millis(
    field: &'static str,
    value: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::Zero { field }),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// `upstreamDns` (or the sidecar's `--upstream-dns-*` flags), validated; errors name the
/// keys `refresh_key` and `nameservers_key`.
pub(super) fn upstream_dns(
    file: &FileUpstreamDns,
    refresh_key: &'static str,
    nameservers_key: &'static str,
) -> Result<UpstreamDns, ConfigError> {
    let refresh = millis(refresh_key, file.refresh_ms, DEFAULT_DNS_REFRESH)?;
    if refresh < MIN_DNS_REFRESH_SETTING {
        return Err(ConfigError::DnsRefreshTooShort { key: refresh_key });
    }
    let nameservers = file
        .nameservers
        .iter()
        .map(|value| {
            let value = value.trim();
            value
                .parse::<SocketAddr>()
                .or_else(|_| value.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| ConfigError::BadNameserver {
                    key: nameservers_key,
                    value: value.to_owned(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UpstreamDns {
        refresh,
        nameservers,
    })
}

pub(super) fn timeouts(file: &FileTimeouts) -> Result<Timeouts, ConfigError> {
    let default = Timeouts::default();
    let handshake = millis("timeouts.handshakeMs", file.handshake_ms, default.handshake)?;
    // Unset, the ClientHello deadline follows a shorter handshake deadline down; set, it must
    // fit inside it.
    let client_hello = match file.client_hello_ms {
        None => default.client_hello.min(handshake),
        Some(_) => {
            let client_hello = millis("timeouts.clientHelloMs", file.client_hello_ms, handshake)?;
            if client_hello > handshake {
                return Err(ConfigError::ClientHelloLongerThanHandshake);
            }
            client_hello
        }
    };
    Ok(Timeouts {
        handshake,
        client_hello,
        request_header: millis(
            "timeouts.requestHeaderMs",
            file.request_header_ms,
            default.request_header,
        )?,
        idle: millis("timeouts.idleMs", file.idle_ms, default.idle)?,
        upstream_connect: millis(
            "timeouts.upstreamConnectMs",
            file.upstream_connect_ms,
            default.upstream_connect,
        )?,
        upstream_response: millis(
            "timeouts.upstreamResponseMs",
            file.upstream_response_ms,
            default.upstream_response,
        )?,
        request_body_idle: millis(
            "timeouts.requestBodyIdleMs",
            file.request_body_idle_ms,
            default.request_body_idle,
        )?,
        upstream_idle: millis(
            "timeouts.upstreamIdleMs",
            file.upstream_idle_ms,
            default.upstream_idle,
        )?,
        // Zero is allowed: stop accepting at once (no load balancer in front).
        drain_delay: file
            .drain_delay_ms
            .map_or(default.drain_delay, Duration::from_millis),
        shutdown_grace: millis(
            "timeouts.shutdownGraceMs",
            file.shutdown_grace_ms,
            default.shutdown_grace,
        )?,
        // Zero is allowed: what the replaced config still runs is cut at once.
        reload_grace: file
            .reload_grace_ms
            .map_or(default.reload_grace, Duration::from_millis),
    })
}

/// `maxPendingHandshakes` when it is not set: at most half of `maxConnections`, so clients
/// that never finish a handshake leave the other half to verified connections.
fn default_pending_handshakes(max_connections: usize) -> usize {
    DEFAULT_MAX_PENDING_HANDSHAKES
        .min(max_connections / 2)
        .max(1)
}

pub(super) fn limits(file: &FileLimits) -> Result<Limits, ConfigError> {
    let default = Limits::default();
    let positive = |field, value: Option<usize>, default| match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::Zero { field }),
        Some(value) => Ok(value),
    };
    let limits = Limits {
        max_connections: positive(
            "limits.maxConnections",
            file.max_connections,
            default.max_connections,
        )?,
        max_request_header_bytes: positive(
            "limits.maxRequestHeaderBytes",
            file.max_request_header_bytes,
            default.max_request_header_bytes,
        )?,
        max_xfcc_bytes: positive(
            "limits.maxXfccBytes",
            file.max_xfcc_bytes,
            default.max_xfcc_bytes,
        )?,
        max_request_headers: positive(
            "limits.maxRequestHeaders",
            file.max_request_headers,
            default.max_request_headers,
        )?,
        max_connections_per_client: match file.max_connections_per_client {
            None => None,
            Some(per_client) => Some(positive(
                "limits.maxConnectionsPerClient",
                Some(per_client),
                per_client,
            )?),
        },
        max_pending_handshakes: positive(
            "limits.maxPendingHandshakes",
            file.max_pending_handshakes,
            default_pending_handshakes(file.max_connections.unwrap_or(default.max_connections)),
        )?,
        max_upstream_connections_per_app: positive(
            "limits.maxUpstreamConnectionsPerApp",
            file.max_upstream_connections_per_app,
            default.max_upstream_connections_per_app,
        )?,
    };
    if limits.max_request_header_bytes < MIN_REQUEST_HEADER_BYTES {
        return Err(ConfigError::HeaderLimitTooSmall);
    }
    Ok(limits)
}

/// `healthCheck`, its absent keys defaulted; an error names the key (or the sidecar's flag,
/// through `keys`) that is wrong.
pub(super) fn health_check(
    file: &super::file::FileHealthCheck,
    keys: &super::error::Keys,
) -> Result<HealthCheck, AppError> {
    let wrong = |key: &'static str, value: String, problem: &'static str| AppError::HealthCheck {
        key,
        value,
        problem,
    };
    let path = file.path.as_deref().unwrap_or(HEALTH_CHECK_PATH);
    if !path.starts_with('/') {
        return Err(wrong(
            keys.health_check_path,
            format!("{path:?}"),
            "must start with /",
        ));
    }
    let path = http::uri::PathAndQuery::try_from(path).map_err(|_| {
        wrong(
            keys.health_check_path,
            format!("{path:?}"),
            "is not a valid path (and query) of a URL",
        )
    })?;
    let interval_ms = file.interval_ms.unwrap_or(HEALTH_CHECK_INTERVAL_MS);
    if !(100..=3_600_000).contains(&interval_ms) {
        return Err(wrong(
            keys.health_check_interval,
            interval_ms.to_string(),
            "must be from 100 to 3600000",
        ));
    }
    let timeout_ms = file.timeout_ms.unwrap_or(HEALTH_CHECK_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > interval_ms {
        return Err(wrong(
            "healthCheck.timeoutMs",
            timeout_ms.to_string(),
            "must be above 0 and at most intervalMs",
        ));
    }
    let threshold = |key: &'static str, value: Option<u32>, default: u32| match value {
        Some(0) => Err(wrong(key, "0".to_owned(), "must be at least 1")),
        Some(value) => Ok(value),
        None => Ok(default),
    };
    let expected = file.expected_status.unwrap_or(HEALTH_CHECK_STATUS);
    let expected_status = http::StatusCode::from_u16(expected)
        .ok()
        .filter(|status| (200..=599).contains(&status.as_u16()))
        .ok_or_else(|| {
            wrong(
                "healthCheck.expectedStatus",
                expected.to_string(),
                "must be a status from 200 to 599",
            )
        })?;
    Ok(HealthCheck {
        path,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        healthy_threshold: threshold(
            "healthCheck.healthyThreshold",
            file.healthy_threshold,
            HEALTH_CHECK_HEALTHY,
        )?,
        unhealthy_threshold: threshold(
            "healthCheck.unhealthyThreshold",
            file.unhealthy_threshold,
            HEALTH_CHECK_UNHEALTHY,
        )?,
        expected_status,
    })
}
