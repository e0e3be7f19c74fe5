//! Where a connection's revocation is checked: along the path webpki verified from the
//! client's leaf to a trusted root (docs/revocation.md "Which chain is checked"), or nowhere
//! for a pinned or `allowUntrusted` certificate that has no such path.

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};

use super::error::RevocationFailure;
use super::x509::{self, Cert, VerifiedPath};
use crate::settings::{OcspMode, RevocationPolicy};
use crate::tls::FailureReason;

/// Where a connection's revocation is checked.
#[derive(Debug, Clone)]
pub enum Path {
    /// Along the path webpki verified to a trusted root.
    Verified(VerifiedPath),
    /// Nowhere: a pinned leaf, or one `allowUntrusted` admitted, with no path to a trusted
    /// root has no CA to ask.
    NoCa,
}

/// Who besides a CA may admit a certificate: what decides whether a chain without a path to
/// a trusted root has simply no CA to ask, or has lost its path (then its status is unknown).
#[derive(Debug, Clone, Default)]
pub struct WithoutCa {
    /// SHA-256 of the pinned leaves (`allowedHashes`).
    pub pins: Vec<[u8; 32]>,
    /// `allowUntrusted`.
    pub allow_untrusted: bool,
}

/// What finds where a chain is checked: the app's roots, as certificates and as webpki's
/// anchors (index for index), who admits certificates without a CA, and the algorithms.
#[derive(Debug)]
pub(super) struct Paths {
    /// The trusted roots.
    pub roots: Vec<Cert>,
    anchors: Vec<TrustAnchor<'static>>,
    without_ca: WithoutCa,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Paths {
    pub(super) fn new(
        roots: &[CertificateDer<'static>],
        without_ca: WithoutCa,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        let (roots, anchors) = x509::anchors(roots).into_iter().unzip();
        Self {
            roots,
            anchors,
            without_ca,
            algorithms,
        }
    }

    /// Where `chain` is checked: along the path webpki verifies to a trusted root. Without
    /// one, a pinned leaf has no CA to ask, nor has one `allowUntrusted` admits unless it
    /// names a revocation source the app's `policy` asks (its OCSP responder, its CRL
    /// distribution points): then it left out the chain that source needs, and its status is
    /// unknown. Any other chain was admitted by a CA and has lost its path, so its status is
    /// unknown (never good).
    pub(super) fn path(
        &self,
        chain: &[CertificateDer<'_>],
        policy: &RevocationPolicy,
    ) -> Result<Path, RevocationFailure> {
        let error =
            match x509::verified_path(chain, &self.anchors, &self.algorithms, UnixTime::now()) {
                Ok(path) => return Ok(Path::Verified(path)),
                Err(error) => error,
            };
        let pinned = chain.first().is_some_and(|leaf| {
            let hash: [u8; 32] = Sha256::digest(leaf).into();
            self.without_ca.pins.contains(&hash)
        });
        if pinned {
            return Ok(Path::NoCa);
        }
        if self.without_ca.allow_untrusted {
            let leaf = chain.first().and_then(|leaf| Cert::parse(leaf));
            let Some(source) = leaf.and_then(|leaf| unchecked_source(&leaf, policy)) else {
                return Ok(Path::NoCa);
            };
            return Err(RevocationFailure {
                reason: FailureReason::RevocationUnknown,
                detail: format!(
                    "the certificate names {source}, but the chain the client sent does not verify to a trusted CA ({error}), so its revocation cannot be checked; the client must send its intermediate certificates"
                ),
            });
        }
        Err(RevocationFailure {
            reason: FailureReason::RevocationUnknown,
            detail: format!(
                "the chain does not verify to a trusted CA ({error}), so its revocation cannot be checked"
            ),
        })
    }

    /// The certificates of `path` with the root that ends it, or why they cannot be read.
    pub(super) fn certificates(&self, path: &VerifiedPath) -> Result<Vec<Cert>, RevocationFailure> {
        let root = self.roots.get(path.root).cloned();
        path.certs
            .iter()
            .map(|der| Cert::parse(der))
            .chain(std::iter::once(root))
            .collect::<Option<Vec<Cert>>>()
            .ok_or_else(|| RevocationFailure {
                reason: FailureReason::RevocationUnknown,
                detail: "a certificate of the verified path cannot be read".to_owned(),
            })
    }
}

/// The revocation source `policy` would ask about `leaf` if it had a path to a trusted CA:
/// its OCSP responder (or, with `ocspResponder`, any leaf that names another issuer, since
/// that responder answers for the app's CAs), or its CRL distribution points. A self-signed
/// leaf that names none is simply not checked.
fn unchecked_source(leaf: &Cert, policy: &RevocationPolicy) -> Option<String> {
    if policy.ocsp != OcspMode::Off {
        if let Some(url) = leaf.ocsp_urls().first() {
            return Some(format!("the OCSP responder {url}"));
        }
        if policy.ocsp_responder.is_some() && leaf.issuer != leaf.subject {
            return Some("an issuer the app's ocspResponder may answer for".to_owned());
        }
    }
    if !policy.crl_from_certificates {
        return None;
    }
    leaf.crl_urls()
        .first()
        .map(|url| format!("the CRL distribution point {url}"))
}
