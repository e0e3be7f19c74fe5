//! TLS termination: pick the app from the ClientHello, then finish the handshake with that
//! app's own rustls config and client-certificate verifier.

pub(crate) mod client_auth;
pub mod pkcs12;
pub(crate) mod client_policy;
pub(crate) mod server_config;
pub(crate) mod sni;
pub(crate) mod ticket_keys;
pub(crate) mod upstream;

use std::fmt;

/// Why a handshake was refused: the fixed set used in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    NoCertificate,
    UnknownIssuer,
    UnsupportedCertificate,
    Expired,
    NotYetValid,
    Revoked,
    RevocationUnknown,
    CrlExpired,
    BadEku,
    BadSignature,
    NotAllowed,
    UnknownSni,
    IpRestricted,
    Timeout,
    Protocol,
}

impl FailureReason {
    /// Every reason, for metrics that must exist at zero before any traffic.
    pub const ALL: [Self; 15] = [
        Self::NoCertificate,
        Self::UnknownIssuer,
        Self::UnsupportedCertificate,
        Self::Expired,
        Self::NotYetValid,
        Self::Revoked,
        Self::RevocationUnknown,
        Self::CrlExpired,
        Self::BadEku,
        Self::BadSignature,
        Self::NotAllowed,
        Self::UnknownSni,
        Self::IpRestricted,
        Self::Timeout,
        Self::Protocol,
    ];

    /// The reason as it appears in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnsupportedCertificate => "unsupported_certificate",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::RevocationUnknown => "revocation_unknown",
            Self::CrlExpired => "crl_expired",
            Self::BadEku => "bad_eku",
            Self::BadSignature => "bad_signature",
            Self::NotAllowed => "not_allowed",
            Self::UnknownSni => "unknown_sni",
            Self::IpRestricted => "ip_restricted",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
        }
    }

    /// Classifies a rustls error raised while verifying a client or running the handshake.
    pub fn of(error: &rustls::Error) -> Self {
        use rustls::CertificateError as Cert;
        match error {
            rustls::Error::NoCertificatesPresented => Self::NoCertificate,
            rustls::Error::InvalidCertificate(cert) => match cert {
                Cert::Expired | Cert::ExpiredContext { .. } => Self::Expired,
                Cert::NotValidYet | Cert::NotValidYetContext { .. } => Self::NotYetValid,
                Cert::Revoked => Self::Revoked,
                // Fail closed: a chain whose revocation status cannot be established (a CA
                // without its CRL) is refused, as Envoy and nginx do.
                Cert::UnknownRevocationStatus => Self::RevocationUnknown,
                Cert::ExpiredRevocationList | Cert::ExpiredRevocationListContext { .. } => {
                    Self::CrlExpired
                }
                Cert::InvalidPurpose | Cert::InvalidPurposeContext { .. } => Self::BadEku,
                Cert::BadSignature => Self::BadSignature,
                // A certificate webpki cannot read (encoding, version, algorithms, critical
                // extensions) is not one it distrusts: the fix is a different certificate.
                #[allow(deprecated, reason = "older rustls versions still raise it")]
                Cert::BadEncoding
                | Cert::UnhandledCriticalExtension
                | Cert::UnsupportedSignatureAlgorithm
                | Cert::UnsupportedSignatureAlgorithmContext { .. }
                | Cert::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                    Self::UnsupportedCertificate
                }
                Cert::ApplicationVerificationFailure => Self::NotAllowed,
                _ => Self::UnknownIssuer,
            },
            _ => Self::Protocol,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
