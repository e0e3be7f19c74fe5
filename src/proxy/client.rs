//! The verified client of a connection, with its certificate headers made once for every
//! request the connection carries.

use http::{HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;

use super::{formats, headers, xfcc};
use crate::identity::{ClientIdentity, IdentityError, TrustSource};
use crate::request_policy::Formats;
use crate::settings::XfccFields;

/// A verified client as its connection's requests use it: the identity and the certificate
/// headers of the app's formats (XFCC first), built once when the connection starts.
#[derive(Debug)]
pub(crate) struct VerifiedClient {
    /// Hash, names and expiry of the leaf.
    pub identity: ClientIdentity,
    /// The header values, or `None` when one exceeds `limits.maxXfccBytes`.
    pub headers: Option<Vec<(HeaderName, HeaderValue)>>,
    /// `X-Client-Verify` for this certificate, for apps with the `verdict` format.
    pub verdict: HeaderValue,
}

impl VerifiedClient {
    /// Parses the chain the client sent (leaf first), which `trust` admitted, and builds the
    /// header values of the app's `formats` (the verdict apart: it is sent on every request,
    /// with or without a certificate).
    pub(crate) fn new(
        chain: &[CertificateDer<'_>],
        trust: TrustSource,
        fields: XfccFields,
        formats: Formats,
        max_xfcc_bytes: usize,
    ) -> Result<Self, IdentityError> {
        let (identity, leaf) = ClientIdentity::parse(chain, trust)?;
        let mut all = Vec::new();
        let mut fits = true;
        if formats.envoy {
            let value = xfcc::build(chain, &identity.hash, &identity.names, fields);
            // Every byte is printable ASCII (see `xfcc::build`), so this cannot fail; a failure
            // would mean no header rather than a broken one.
            match (value.len() <= max_xfcc_bytes)
                .then(|| HeaderValue::from_str(&value).ok())
                .flatten()
            {
                Some(value) => all.push((headers::XFCC, value)),
                None => fits = false,
            }
        }
        match formats::build(chain, &leaf, trust, formats, max_xfcc_bytes) {
            Some(others) => all.extend(others),
            None => fits = false,
        }
        Ok(Self {
            verdict: formats::verdict(chain, &leaf, trust),
            identity,
            headers: fits.then_some(all),
        })
    }
}
