//! Why a request to the app failed on certgate's side of the exchange: connecting, TLS, or
//! HTTP; and which TLS failure, if any, it was.

use std::io;
use std::sync::Arc;

use crate::tls::upstream::UpstreamTlsFailure;

/// Why a request to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect to the upstream")]
    Connect { source: io::Error },
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// The upstream's DNS name has resolved to no address yet (docs/config.md "How upstream
    /// names are resolved").
    #[error("the upstream name {authority} resolves to no address yet")]
    Unresolved { authority: Arc<str> },
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

    /// Why TLS with the app failed, when it did: at the handshake, or by an alert the app
    /// sent right after it (TLS 1.3 apps refuse a client certificate only then).
    pub(crate) fn tls_failure(&self) -> Option<UpstreamTlsFailure> {
        match self {
            Self::Tls { reason, .. } => Some(*reason),
            Self::Connect { .. }
            | Self::ConnectTimeout
            | Self::Unresolved { .. }
            | Self::Saturated
            | Self::Retired => None,
            Self::Http { source } | Self::H2c { source } => UpstreamTlsFailure::find(source),
            Self::Shared(source) => source.tls_failure(),
        }
    }
}
