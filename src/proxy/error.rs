//! Everything that stops a request from reaching the app, and the one status each maps to:
//! downstream faults are 4xx, upstream faults 502/504, draining 503.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use super::ProxyBody;

/// Why certgate answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {reason}")]
    BadRequest { reason: &'static str },
    #[error("client certificate expired during the connection")]
    CertificateExpired,
    #[error("request authority belongs to another app")]
    Misdirected,
    #[error("client certificate header exceeds limits.maxXfccBytes")]
    XfccTooLarge,
    #[error("upstream request failed")]
    Upstream {
        source: super::upstream::UpstreamError,
    },
    #[error("upstream response timed out")]
    UpstreamTimeout,
    #[error("draining for shutdown")]
    Draining,
}

impl ProxyError {
    /// The status certgate answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::CertificateExpired => StatusCode::FORBIDDEN,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::XfccTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A one-line `text/plain` body that reveals nothing of certgate's internals.
    fn body(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad request\n",
            Self::CertificateExpired => "client certificate expired\n",
            Self::Misdirected => "misdirected request: this connection cannot serve that host\n",
            Self::XfccTooLarge => "client certificate too large to forward\n",
            Self::Upstream { .. } => "bad gateway\n",
            Self::UpstreamTimeout => "gateway timeout\n",
            Self::Draining => "service unavailable: shutting down\n",
        }
    }

    /// The response certgate sends for this error.
    pub fn into_response(self) -> Response<ProxyBody> {
        plain_response(self.status(), self.body())
    }
}

/// A `text/plain` response with a static body.
pub fn plain_response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
