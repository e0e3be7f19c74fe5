//! Why a request to the app failed on certgate's side of the exchange: connecting, TLS, or
//! HTTP; and which TLS failure, if any, it was.

use std::io;

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
    H2c {
        source: hyper_util::client::legacy::Error,
    },
}

impl UpstreamError {
    /// Why TLS with the app failed, when it did: at the handshake, or by an alert the app
    /// sent right after it (TLS 1.3 apps refuse a client certificate only then).
    pub(crate) fn tls_failure(&self) -> Option<UpstreamTlsFailure> {
        match self {
            Self::Tls { reason, .. } => Some(*reason),
            Self::Connect { .. } | Self::ConnectTimeout => None,
            Self::Http { source } => UpstreamTlsFailure::find(source),
            Self::H2c { source } => {
                let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source);
                while let Some(error) = next {
                    if let Some(upstream) = error.downcast_ref::<UpstreamError>() {
                        return upstream.tls_failure();
                    }
                    next = error.source();
                }
                UpstreamTlsFailure::find(source)
            }
        }
    }
}
