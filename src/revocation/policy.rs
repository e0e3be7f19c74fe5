//! The per-app revocation settings, validated (`clientAuth.revocation` in the config file):
//! what to fetch, whether to ask OCSP, what an unknown status does, and how old an answer
//! without an end may be.

use std::time::Duration;

/// How far a CRL issuer's or OCSP responder's clock may be from ours (a thisUpdate in the
/// future, an OCSP nextUpdate just passed), as OpenSSL's default `-validity_period`.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// `maxAgeMs` when absent: a week, the longest the CA/Browser Forum lets a CRL or OCSP answer
/// for a subscriber certificate run before its nextUpdate.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

use http::Uri;

/// `clientAuth.revocation.ocsp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspMode {
    /// No OCSP.
    Off,
    /// Ask about the leaf only.
    Leaf,
    /// Ask about every certificate of the chain but the root.
    Chain,
}

/// `clientAuth.revocation.onUnknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnknown {
    /// Refuse a certificate whose status cannot be established (`revocation_unknown`).
    Refuse,
    /// Let it through, counted and logged at warn.
    Allow,
}

/// Validated `clientAuth.revocation` settings (besides `crlFiles`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// CRLs fetched at load and refreshed in the background.
    pub crl_urls: Vec<Uri>,
    /// Also fetch the CRL distribution points of the certificates seen.
    pub crl_from_certificates: bool,
    /// OCSP mode.
    pub ocsp: OcspMode,
    /// Responder used instead of the certificates' AIA.
    pub ocsp_responder: Option<Uri>,
    /// What an unknown status does.
    pub on_unknown: OnUnknown,
    /// Refresh CRLs at least this often.
    pub refresh: Duration,
    /// How long after its thisUpdate a CRL or OCSP answer without nextUpdate stays usable.
    pub max_age: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            crl_urls: Vec::new(),
            crl_from_certificates: false,
            ocsp: OcspMode::Off,
            ocsp_responder: None,
            on_unknown: OnUnknown::Refuse,
            refresh: Duration::from_secs(3600),
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

impl Policy {
    /// Whether checking needs more than webpki does with `crlFiles` at the handshake.
    pub fn needs_checker(&self) -> bool {
        !self.crl_urls.is_empty()
            || self.crl_from_certificates
            || self.ocsp != OcspMode::Off
            || self.on_unknown == OnUnknown::Allow
    }
}
