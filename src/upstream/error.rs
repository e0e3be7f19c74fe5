//! Why a request to the app failed on certgate's side of the exchange: connecting, TLS, or
//! HTTP; and which TLS failure, if any, it was.

use std::io;
use std::sync::Arc;

use hyper::Request;

use super::request_body::RequestBody;
use crate::tls::upstream::UpstreamTlsFailure;

/// Why a request to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect to the upstream")]
    Connect { source: io::Error },
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("TLS with the upstream failed ({reason})")]
    Tls {
        reason: UpstreamTlsFailure,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("HTTP exchange with the upstream failed")]
    Http { source: hyper::Error },
    #[error("HTTP/2 exchange with the upstream failed")]
    H2c { source: hyper::Error },
    /// The one dial that the requests waiting for an HTTP/2 connection shared failed.
    #[error(transparent)]
    Shared(Arc<UpstreamError>),
    #[error(
        "no upstream connection came free within timeouts.upstreamConnectMs (limits.maxUpstreamConnectionsPerApp)"
    )]
    Saturated,
    #[error("the upstream client was retired by a reload")]
    Retired,
}

impl UpstreamError {
    /// The error itself, or the one a shared dial failed with.
    pub(crate) fn cause(&self) -> &Self {
        match self {
            Self::Shared(source) => source.cause(),
            other => other,
        }
    }

    /// Whether no connection to the endpoint could be opened (refused, unreachable, timed
    /// out): the request did not reach it, and it counts against the endpoint's health.
    pub(crate) fn is_connect_failure(&self) -> bool {
        matches!(self.cause(), Self::Connect { .. } | Self::ConnectTimeout)
    }

    /// Whether the connection was reset or closed before a response came: counts against
    /// the endpoint's health, and an idempotent request without a body may go again.
    pub(crate) fn is_reset(&self) -> bool {
        match self.cause() {
            Self::Http { source } | Self::H2c { source } => {
                if source.is_incomplete_message() {
                    return true;
                }
                let mut next = std::error::Error::source(source);
                while let Some(error) = next {
                    if let Some(io) = error.downcast_ref::<io::Error>() {
                        return matches!(
                            io.kind(),
                            io::ErrorKind::ConnectionReset
                                | io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::BrokenPipe
                                | io::ErrorKind::UnexpectedEof
                        );
                    }
                    next = error.source();
                }
                false
            }
            _ => false,
        }
    }

    /// Why TLS with the app failed, when it did: at the handshake, or by an alert the app
    /// sent right after it (TLS 1.3 apps refuse a client certificate only then).
    pub(crate) fn tls_failure(&self) -> Option<UpstreamTlsFailure> {
        match self {
            Self::Tls { reason, .. } => Some(*reason),
            Self::Connect { .. } | Self::ConnectTimeout | Self::Saturated | Self::Retired => None,
            Self::Http { source } | Self::H2c { source } => UpstreamTlsFailure::find(source),
            Self::Shared(source) => source.tls_failure(),
        }
    }
}

/// How one try to send a request to an endpoint failed.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The request never left certgate (no connection, or a pooled one found closed before
    /// a byte was written): it comes back, to be sent elsewhere.
    NotSent {
        error: UpstreamError,
        request: Box<Request<RequestBody>>,
    },
    /// The request may have reached the app.
    Sent(UpstreamError),
}
