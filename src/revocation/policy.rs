//! The per-app revocation settings (`clientAuth.revocation` in the config file), validated in
//! `settings`, and the clock skew every revocation answer is judged with.

use std::time::Duration;

pub(crate) use crate::settings::DEFAULT_MAX_AGE;
pub use crate::settings::{OcspMode, OnUnknown, RevocationPolicy as Policy};

/// How far a CRL issuer's or OCSP responder's clock may be from ours (a thisUpdate in the
/// future, an OCSP nextUpdate just passed), as OpenSSL's default `-validity_period`.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(300);
