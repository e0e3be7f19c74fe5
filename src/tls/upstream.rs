//! TLS from certgate to an `https://` app: one rustls `ClientConfig` per app (its CAs, ALPN
//! for its transport, the client certificate certgate presents), and the fixed set of reasons
//! a handshake with the app fails for, as logs and metrics name them.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::settings::{UpstreamTls, UpstreamVerify};

/// What certgate speaks TLS to an `https://` app with: the rustls config and the name the
/// app's certificate must hold.
#[derive(Debug, Clone)]
pub struct AppTls {
    /// Roots, ALPN and the client certificate certgate presents, if any.
    pub config: Arc<ClientConfig>,
    /// The name the app's certificate must hold, also sent as SNI when it is a DNS name.
    pub server_name: ServerName<'static>,
}

impl AppTls {
    /// Builds the TLS for one app from `tls`, with ALPN `h2` when `http2`.
    pub(crate) fn new(
        provider: &Arc<CryptoProvider>,
        tls: &UpstreamTls,
        http2: bool,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            config: client_config(provider, tls, http2)?,
            server_name: tls.server_name.clone(),
        })
    }
}

/// Builds the `ClientConfig` for one app: TLS 1.2 and 1.3, what `tls` verifies the app's
/// certificate against and the certificate certgate presents, ALPN `h2` for HTTP/2 and
/// `http/1.1` otherwise.
fn client_config(
    provider: &Arc<CryptoProvider>,
    tls: &UpstreamTls,
    http2: bool,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &tls.verify {
        UpstreamVerify::CaFiles(roots) => {
            let mut store = RootCertStore::empty();
            for root in roots {
                store.add(root.clone())?;
            }
            builder.with_root_certificates(store)
        }
        UpstreamVerify::System(store) => builder.with_root_certificates(store.clone()),
        UpstreamVerify::Skip => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify {
                provider: provider.clone(),
            })),
    };
    let mut config = match &tls.client {
        Some(client) => {
            builder.with_client_auth_cert(client.chain.clone(), client.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// Why a TLS handshake with an app failed: the fixed set used in logs and in
/// `certgate_upstream_tls_failures_total` (docs/upstream-tls.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UpstreamTlsFailure {
    /// The app's certificate is not issued by a CA it is verified against (`upstreamTls.caFiles`,
    /// or the system's CAs without them).
    UnknownCa,
    /// The app's certificate does not hold the upstream host or `upstreamTls.serverName`.
    NameMismatch,
    /// The app's certificate has expired.
    Expired,
    /// The app's certificate is not valid yet.
    NotYetValid,
    /// The app's certificate cannot be used otherwise (purpose, signature, encoding).
    BadCertificate,
    /// The app refused certgate's client certificate, or wanted one certgate does not have.
    ClientCertRefused,
    /// The app did not finish the handshake within `upstreamConnectMs`.
    Timeout,
    /// Anything else: no common version or cipher, no `h2` for an HTTP/2 app, an app that
    /// does not speak TLS, or spoke first.
    Protocol,
}

impl UpstreamTlsFailure {
    /// Every reason, for metric series that exist at zero.
    pub(crate) const ALL: [Self; 8] = [
        Self::UnknownCa,
        Self::NameMismatch,
        Self::Expired,
        Self::NotYetValid,
        Self::BadCertificate,
        Self::ClientCertRefused,
        Self::Timeout,
        Self::Protocol,
    ];

    /// The reason as logs and metric labels name it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::NameMismatch => "name_mismatch",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadCertificate => "bad_certificate",
            Self::ClientCertRefused => "client_cert_refused",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
        }
    }

    /// Classifies a rustls error met while talking to the app.
    pub(crate) fn of(error: &rustls::Error) -> Self {
        use rustls::AlertDescription as Alert;
        use rustls::CertificateError as Cert;
        match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                Cert::UnknownIssuer => Self::UnknownCa,
                Cert::NotValidForName | Cert::NotValidForNameContext { .. } => Self::NameMismatch,
                Cert::Expired | Cert::ExpiredContext { .. } => Self::Expired,
                Cert::NotValidYet | Cert::NotValidYetContext { .. } => Self::NotYetValid,
                _ => Self::BadCertificate,
            },
            // The app's own alerts about certgate's certificate: TLS 1.3 `certificate_required`
            // when certgate sent none, the others when it refused the one sent.
            rustls::Error::AlertReceived(
                Alert::CertificateRequired
                | Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::AccessDenied,
            ) => Self::ClientCertRefused,
            _ => Self::Protocol,
        }
    }

    /// The rustls error somewhere in `error`'s source chain, classified; `None` when the
    /// chain holds none (the failure was not TLS).
    pub(crate) fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(tls) = error.downcast_ref::<rustls::Error>() {
                return Some(Self::of(tls));
            }
            // An `io::Error` shows the error it wraps through `get_ref`, not `source`.
            if let Some(tls) = error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(Self::of(tls));
            }
            next = error.source();
        }
        None
    }
}

impl fmt::Display for UpstreamTlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `insecureSkipVerify`: accepts whatever certificate the app presents, for any name, but
/// still checks that the app holds its key (the handshake signature), so the handshake is a
/// real one.
#[derive(Debug)]
struct SkipVerify {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_inside_an_io_error_inside_another_error_is_found() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer {
            source: std::io::Error,
        }
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let outer = Outer { source: io };
        assert_eq!(
            UpstreamTlsFailure::find(&outer),
            Some(UpstreamTlsFailure::UnknownCa)
        );
    }

    #[test]
    fn an_alert_about_certgates_own_certificate_is_a_refused_client_certificate() {
        let error = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert_eq!(
            UpstreamTlsFailure::of(&error),
            UpstreamTlsFailure::ClientCertRefused
        );
    }
}
