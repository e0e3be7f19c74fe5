//! An app's client-certificate policy as a rustls verifier: validity, then trust (CA chain via
//! webpki, a pinned hash, or `allowUntrusted`), then the allow-lists. Proof of possession is
//! checked by rustls through our signature methods in every trust setting.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use sha2::{Digest, Sha256};

use crate::config::ClientCertMode;
use crate::identity::LeafNames;

/// Where trust in a presented certificate can come from; at least one source is set for
/// `require` and `accept` apps.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// CA certificates that issue client certificates.
    pub roots: Vec<CertificateDer<'static>>,
    /// CRLs checked against every certificate of a CA-verified chain.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// SHA-256 hashes of pinned leaf certificates.
    pub pins: Vec<[u8; 32]>,
    /// Forward any certificate within its validity period.
    pub allow_untrusted: bool,
}

impl Trust {
    /// True when no certificate could ever be trusted.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.pins.is_empty() && !self.allow_untrusted
    }
}

/// Allow-lists: when any is set, a trusted leaf must match at least one entry.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    /// RFC 4514 subject strings.
    pub subjects: Vec<String>,
    /// DNS SANs, normalized.
    pub dns_sans: Vec<String>,
    /// URI SANs.
    pub uri_sans: Vec<String>,
}

impl AllowList {
    /// True when no allow-list is set.
    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty() && self.dns_sans.is_empty() && self.uri_sans.is_empty()
    }

    /// Whether the leaf matches an entry; a name only ever matches an entry of its own type.
    pub fn permits(&self, names: &LeafNames) -> bool {
        self.subjects.contains(&names.subject)
            || names
                .dns
                .iter()
                .any(|dns| self.dns_sans.contains(&crate::tls::sni::normalize(dns)))
            || names.uris.iter().any(|uri| self.uri_sans.contains(uri))
    }
}

/// The verifier for an app, or `None` in `ignore` mode.
pub fn verifier(
    mode: ClientCertMode,
    trust: &Trust,
    allow: &AllowList,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, VerifierBuilderError> {
    let mandatory = match mode {
        ClientCertMode::Ignore => return Ok(None),
        ClientCertMode::Require => true,
        ClientCertMode::Accept => false,
    };
    let webpki = if trust.roots.is_empty() {
        None
    } else {
        let mut roots = RootCertStore::empty();
        // Each root was checked to be a usable trust anchor when the config was loaded.
        roots.add_parsable_certificates(trust.roots.iter().cloned());
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if !trust.crls.is_empty() {
            builder = builder
                .with_crls(trust.crls.iter().cloned())
                .enforce_revocation_expiration();
        }
        Some(builder.build()?)
    };
    Ok(Some(Arc::new(PolicyVerifier {
        webpki,
        pins: trust.pins.clone(),
        allow_untrusted: trust.allow_untrusted,
        allow: allow.clone(),
        mandatory,
        algorithms: provider.signature_verification_algorithms,
    })))
}

/// Checks that a CA certificate can be a trust anchor.
pub fn check_trust_anchor(certificate: &CertificateDer<'static>) -> Result<(), rustls::Error> {
    RootCertStore::empty().add(certificate.clone())
}

#[derive(Debug)]
struct PolicyVerifier {
    webpki: Option<Arc<dyn ClientCertVerifier>>,
    pins: Vec<[u8; 32]>,
    allow_untrusted: bool,
    allow: AllowList,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PolicyVerifier {
    fn trust(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let hash: [u8; 32] = Sha256::digest(end_entity).into();
        if self.pins.contains(&hash) {
            return Ok(());
        }
        match &self.webpki {
            Some(webpki) => match webpki.verify_client_cert(end_entity, intermediates, now) {
                Ok(_) => Ok(()),
                // allowUntrusted forwards certificates nobody vouches for; it never overrides a
                // verdict about a chain we do know (revoked, wrong EKU, expired CRL).
                Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
                    if self.allow_untrusted =>
                {
                    Ok(())
                }
                Err(error) => Err(error),
            },
            None if self.allow_untrusted => Ok(()),
            None => Err(CertificateError::UnknownIssuer.into()),
        }
    }
}

impl ClientCertVerifier for PolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are the trusted CAs; pins and untrusted certificates have no issuer to name.
        match &self.webpki {
            Some(webpki) => webpki.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (_, leaf) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| CertificateError::BadEncoding)?;
        // Validity first, for every trust source: pins and allowUntrusted have no CA to ask.
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now_secs < leaf.validity().not_before.timestamp() {
            return Err(CertificateError::NotValidYet.into());
        }
        if now_secs > leaf.validity().not_after.timestamp() {
            return Err(CertificateError::Expired.into());
        }
        self.trust(end_entity, intermediates, now)?;
        if !self.allow.is_empty() && !self.allow.permits(&LeafNames::of(&leaf)) {
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
