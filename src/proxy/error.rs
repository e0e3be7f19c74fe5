//! Everything that stops a request from reaching the app, and the one status each maps to:
//! downstream faults are 4xx, upstream faults 502/504, draining, a saturated or retired
//! upstream client 503.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use super::body::ProxyBody;
use crate::ip_restrictions::IpRefusal;
use crate::metrics::label::StallReason;
use crate::tls::FailureReason;
use crate::upstream::{SendError, UpstreamError};

/// Why certgate answered a request itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("malformed request: {reason}")]
    BadRequest { reason: &'static str },
    #[error("client certificate expired during the connection")]
    CertificateExpired,
    #[error("client certificate revoked during the connection")]
    CertificateRevoked,
    #[error("client address refused by the reloaded ipSecurityRestrictions")]
    IpRestricted { refusal: IpRefusal },
    #[error("no client certificate for a path outside clientCertExclusionPaths")]
    CertificateRequired,
    #[error("denied by authorization rule {rule}")]
    Denied {
        /// The rule's label (`0`, `1`, … or `default`).
        rule: String,
        /// The one-line body naming the rule.
        body: String,
    },
    #[error("over the rate limit")]
    RateLimited { retry_after_seconds: u64 },
    #[error("request authority belongs to another app")]
    Misdirected,
    #[error("client certificate header exceeds limits.maxXfccBytes")]
    XfccTooLarge,
    #[error("client sent no request body bytes within timeouts.requestBodyIdleMs")]
    RequestBodyTimeout,
    #[error(
        "request header has more than limits.maxRequestHeaders fields or over limits.maxRequestHeaderBytes"
    )]
    HeadersTooLarge,
    #[error("upstream request failed")]
    Upstream { source: UpstreamError },
    #[error("upstream response timed out")]
    UpstreamTimeout,
    #[error("draining for shutdown")]
    Draining,
    #[error("no upstream connection came free within timeouts.upstreamConnectMs")]
    UpstreamSaturated,
    #[error("the request needed a new upstream connection after a reload")]
    UpstreamRetired,
}

impl From<SendError> for ProxyError {
    fn from(error: SendError) -> Self {
        // Who failed decides the status: a client that broke off or stalled its upload is not
        // the app's fault, though the upstream request fails with it.
        match error {
            SendError::ClientBrokeOff => Self::BadRequest {
                reason: "request body broken off by the client",
            },
            SendError::ClientStalled => Self::RequestBodyTimeout,
            SendError::Timeout => Self::UpstreamTimeout,
            SendError::Saturated => Self::UpstreamSaturated,
            SendError::Retired => Self::UpstreamRetired,
            SendError::Failed(source) => Self::Upstream { source },
        }
    }
}

impl ProxyError {
    /// The status certgate answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::CertificateExpired => StatusCode::FORBIDDEN,
            Self::CertificateRevoked => StatusCode::FORBIDDEN,
            Self::IpRestricted { .. } => StatusCode::FORBIDDEN,
            // With `rejectWith: "http"` the 496 page answers instead (proxy::admission).
            Self::CertificateRequired => StatusCode::FORBIDDEN,
            Self::Denied { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::XfccTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamSaturated => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamRetired => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A one-line `text/plain` body that reveals nothing of certgate's internals (a denial
    /// names its authorization rule instead, which the operator chose to make visible).
    fn body(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad request\n",
            Self::CertificateExpired => "client certificate expired\n",
            Self::CertificateRevoked => "client certificate revoked\n",
            Self::IpRestricted { .. } => "forbidden: client address not allowed\n",
            Self::CertificateRequired => "client certificate required\n",
            Self::Denied { .. } => "forbidden\n",
            Self::RateLimited { .. } => "too many requests\n",
            Self::Misdirected => "misdirected request: this connection cannot serve that host\n",
            Self::XfccTooLarge => "client certificate too large to forward\n",
            Self::RequestBodyTimeout => "request timeout: the request body stalled\n",
            Self::HeadersTooLarge => "request header fields too large\n",
            Self::Upstream { .. } => "bad gateway\n",
            Self::UpstreamTimeout => "gateway timeout\n",
            Self::Draining => "service unavailable: shutting down\n",
            Self::UpstreamSaturated => "service unavailable: the app is busy\n",
            Self::UpstreamRetired => "service unavailable: configuration reloaded, retry\n",
        }
    }

    /// The `outcome` logged with this error's access line, when it has one of its own.
    pub(crate) fn outcome(&self) -> Option<&'static str> {
        match self {
            Self::RequestBodyTimeout => Some(StallReason::RequestBodyIdle.as_str()),
            Self::HeadersTooLarge => Some(REQUEST_HEADER_TOO_LARGE),
            Self::UpstreamSaturated => Some(UPSTREAM_CONNECTION_LIMIT),
            Self::UpstreamRetired => Some(RELOADED),
            Self::IpRestricted { .. } => Some(FailureReason::IpRestricted.as_str()),
            Self::BadRequest { .. }
            | Self::CertificateRequired
            | Self::Denied { .. }
            | Self::RateLimited { .. }
            | Self::CertificateExpired
            | Self::CertificateRevoked
            | Self::Misdirected
            | Self::XfccTooLarge
            | Self::Upstream { .. }
            | Self::UpstreamTimeout
            | Self::Draining => None,
        }
    }

    /// The response certgate sends for this error.
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        match self {
            Self::Denied { body, .. } => text_response(status, Bytes::from(body)),
            Self::RateLimited {
                retry_after_seconds,
            } => {
                let mut response = plain_response(status, self.body());
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds));
                response
            }
            _ => plain_response(status, self.body()),
        }
    }
}

/// The `outcome` of a request refused for its header's size or field count.
pub(crate) const REQUEST_HEADER_TOO_LARGE: &str = "request_header_too_large";
/// The `outcome` of a request that found no upstream connection free within
/// `upstreamConnectMs` (`limits.maxUpstreamConnectionsPerApp`).
const UPSTREAM_CONNECTION_LIMIT: &str = "upstream_connection_limit";
/// The `outcome` of a request that needed a new upstream connection of a config a reload
/// replaced.
const RELOADED: &str = "reloaded";

/// A `text/plain` response with a static body.
pub(crate) fn plain_response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    text_response(status, Bytes::from_static(body.as_bytes()))
}

fn text_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saturated_or_retired_upstream_client_is_a_503_with_its_own_outcome() {
        let saturated = ProxyError::from(SendError::Saturated);
        assert_eq!(
            (saturated.status(), saturated.outcome()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("upstream_connection_limit")
            )
        );
        let retired = ProxyError::from(SendError::Retired);
        assert_eq!(
            (retired.status(), retired.outcome()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("reloaded"))
        );
    }
}
