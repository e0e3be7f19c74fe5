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

/// When and why a certificate was revoked, as a CRL entry (revocationDate, reasonCode) or an
/// OCSP answer (revocationTime, revocationReason) says; displayed as `since <RFC 3339>
/// (<reason>)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RevokedAt {
    /// The revocation time, seconds since the Unix epoch.
    pub(crate) time: i64,
    /// The CRLReason code (RFC 5280 section 5.3.1), when one is given.
    pub(crate) reason: Option<u8>,
}

impl RevokedAt {
    /// The reason's name as RFC 5280 spells it (`keyCompromise`), or why there is none.
    pub(crate) fn reason_name(&self) -> &'static str {
        match self.reason {
            None => "no reason given",
            Some(0) => "unspecified",
            Some(1) => "keyCompromise",
            Some(2) => "cACompromise",
            Some(3) => "affiliationChanged",
            Some(4) => "superseded",
            Some(5) => "cessationOfOperation",
            Some(6) => "certificateHold",
            Some(8) => "removeFromCRL",
            Some(9) => "privilegeWithdrawn",
            Some(10) => "aACompromise",
            Some(_) => "an unknown reason code",
        }
    }
}

impl fmt::Display for RevokedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "since {} ({})", rfc3339(self.time), self.reason_name())
    }
}

/// `secs` since the Unix epoch as RFC 3339 (`2026-12-07T04:47:44Z`); the number itself when
/// it is out of range.
pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}
