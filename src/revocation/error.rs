//! What the revocation stage hands on: a refused connection with its reason, and why an
//! app's revocation sources could not be loaded.

use std::time::Duration;

use super::crl::CrlError;
use super::fetch::FetchError;
use crate::tls::FailureReason;

/// The longest a connection waits for its revocation verdict; every fetch has its own
/// shorter timeout, so this only bounds a chain of several lookups.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(8);

/// Why the revocation sources of an app cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot fetch the CRL at {url}")]
    Fetch { url: String, source: FetchError },
    #[error("the CRL from {origin} cannot be used")]
    Crl { origin: String, source: CrlError },
    #[error("the CRL from {origin} is older than the one already held")]
    Older { origin: String },
}

/// A refused connection: the reason for logs and metrics and what was found.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct RevocationFailure {
    /// `revoked` or `revocation_unknown`.
    pub reason: FailureReason,
    /// What was revoked or why the status is unknown.
    pub detail: String,
}

impl RevocationFailure {
    /// The same refusal in the policy's terms, for a `rejectWith: "http"` answer page.
    pub fn to_policy(&self, leaf: &[u8]) -> crate::tls::client_policy::Refusal {
        let presented = x509_parser::parse_x509_certificate(leaf)
            .ok()
            .map(|(_, cert)| crate::tls::client_policy::Presented::of(leaf, &cert));
        let error = match self.reason {
            FailureReason::Revoked => rustls::CertificateError::Revoked,
            _ => rustls::CertificateError::UnknownRevocationStatus,
        };
        crate::tls::client_policy::Refusal {
            reason: self.reason,
            detail: self.detail.clone(),
            presented,
            error: rustls::Error::InvalidCertificate(error),
        }
    }
}
