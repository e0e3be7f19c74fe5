//! The certificate facts revocation needs, read with RustCrypto's `x509-cert`: names, serial,
//! key, the CRL distribution points and OCSP responders a certificate names, the path webpki
//! verified for a chain, and signature checks through rustls' crypto provider.

use std::time::Duration;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_cert::Certificate;
use x509_cert::der::oid::db::rfc5280;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, CrlDistributionPoints, ExtendedKeyUsage};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// A parsed certificate with the encodings revocation compares.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    /// The certificate.
    pub parsed: Certificate,
    /// DER of the subject name.
    pub subject: Vec<u8>,
    /// DER of the issuer name.
    pub issuer: Vec<u8>,
    /// The serial number's bytes without leading zeros.
    pub serial: Vec<u8>,
    tbs: Vec<u8>,
}

impl Cert {
    /// Parses a DER certificate; `None` when it is not one.
    pub(crate) fn parse(der: &[u8]) -> Option<Self> {
        let parsed = Certificate::from_der(der).ok()?;
        let tbs = &parsed.tbs_certificate;
        Some(Self {
            subject: tbs.subject.to_der().ok()?,
            issuer: tbs.issuer.to_der().ok()?,
            serial: trim_serial(tbs.serial_number.as_bytes()),
            tbs: tbs.to_der().ok()?,
            parsed,
        })
    }

    /// The subject public key.
    pub(crate) fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        &self.parsed.tbs_certificate.subject_public_key_info
    }

    /// The serial as uppercase hex, as OpenSSL prints it.
    pub(crate) fn serial_hex(&self) -> String {
        self.serial.iter().map(|b| format!("{b:02X}")).collect()
    }

    /// The subject for logs.
    pub(crate) fn subject_text(&self) -> String {
        self.parsed.tbs_certificate.subject.to_string()
    }

    /// Whether `issuer`'s key made this certificate's signature.
    pub(crate) fn signed_by(&self, issuer: &Cert, algorithms: &WebPkiSupportedAlgorithms) -> bool {
        self.issuer == issuer.subject
            && verify_signature(
                algorithms,
                issuer.spki(),
                &self.parsed.signature_algorithm,
                &self.tbs,
                self.parsed.signature.raw_bytes(),
            )
    }

    /// Whether `now` is inside the validity period.
    pub(crate) fn valid_at(&self, now: Duration) -> bool {
        let validity = &self.parsed.tbs_certificate.validity;
        validity.not_before.to_unix_duration() <= now
            && now <= validity.not_after.to_unix_duration()
    }

    /// The `http://` URLs of the CRL distribution points.
    pub(crate) fn crl_urls(&self) -> Vec<http::Uri> {
        let Some(points) =
            self.extension::<CrlDistributionPoints>(rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS)
        else {
            return Vec::new();
        };
        points
            .0
            .iter()
            .filter_map(|point| match &point.distribution_point {
                Some(DistributionPointName::FullName(names)) => Some(names),
                _ => None,
            })
            .flatten()
            .filter_map(http_url)
            .collect()
    }

    /// The `http://` OCSP responders named in Authority Information Access.
    pub(crate) fn ocsp_urls(&self) -> Vec<http::Uri> {
        let Some(access) =
            self.extension::<AuthorityInfoAccessSyntax>(rfc5280::ID_PE_AUTHORITY_INFO_ACCESS)
        else {
            return Vec::new();
        };
        access
            .0
            .iter()
            .filter(|description| description.access_method == rfc5280::ID_AD_OCSP)
            .filter_map(|description| http_url(&description.access_location))
            .collect()
    }

    /// Whether the certificate is a CA (basic constraints).
    pub(crate) fn is_ca(&self) -> bool {
        self.extension::<x509_cert::ext::pkix::BasicConstraints>(rfc5280::ID_CE_BASIC_CONSTRAINTS)
            .is_some_and(|constraints| constraints.ca)
    }

    /// Whether the certificate may sign OCSP responses for its issuer (RFC 6960 section 4.2.2.2).
    pub(crate) fn has_ocsp_signing_eku(&self) -> bool {
        self.extension::<ExtendedKeyUsage>(rfc5280::ID_CE_EXT_KEY_USAGE)
            .is_some_and(|usage| usage.0.contains(&rfc5280::ID_KP_OCSP_SIGNING))
    }

    fn extension<T: for<'a> Decode<'a>>(
        &self,
        oid: x509_cert::der::oid::ObjectIdentifier,
    ) -> Option<T> {
        self.parsed
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|extension| extension.extn_id == oid)
            .and_then(|extension| T::from_der(extension.extn_value.as_bytes()).ok())
    }
}

/// A client chain's path to a trusted root as webpki builds and verifies it: the leaf, then
/// the intermediates it used, issuer after issuer, and which of the app's roots ends it.
/// Revocation is checked along this path and no other, so a decoy certificate the client
/// adds (one that copies an intermediate's name and key but has another signer) is never
/// mistaken for a link of the chain.
#[derive(Debug, Clone)]
pub struct VerifiedPath {
    /// The leaf first, then each intermediate in turn (the root is not among them).
    pub certs: Vec<CertificateDer<'static>>,
    /// The index of the root among the app's roots.
    pub root: usize,
}

/// The path webpki verifies for `chain` (leaf first, then what the client sent) to one of
/// `anchors`, for client authentication at `now`; webpki's error when there is none.
pub(crate) fn verified_path(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'static>],
    algorithms: &WebPkiSupportedAlgorithms,
    now: UnixTime,
) -> Result<VerifiedPath, webpki::Error> {
    let (leaf, intermediates) = chain.split_first().ok_or(webpki::Error::BadDer)?;
    let end_entity = webpki::EndEntityCert::try_from(leaf)?;
    let path = end_entity.verify_for_usage(
        algorithms.all,
        anchors,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )?;
    // The anchor webpki returns is one of `anchors`, borrowed: its address says which.
    let root = anchors
        .iter()
        .position(|anchor| std::ptr::eq(anchor, path.anchor()))
        .ok_or(webpki::Error::UnknownIssuer)?;
    let mut certs = vec![leaf.clone().into_owned()];
    certs.extend(
        path.intermediate_certificates()
            .map(|cert| cert.der().into_owned()),
    );
    Ok(VerifiedPath { certs, root })
}

/// The trust anchor of each root that webpki accepts as one, beside the root itself.
pub(crate) fn anchors(roots: &[CertificateDer<'static>]) -> Vec<(Cert, TrustAnchor<'static>)> {
    roots
        .iter()
        .filter_map(|der| {
            let anchor = webpki::anchor_from_trusted_cert(der).ok()?.to_owned();
            Some((Cert::parse(der)?, anchor))
        })
        .collect()
}

/// Verifies `signature` over `message` with `spki`, using the algorithm of the provider whose
/// identifiers match (the same matching webpki does).
pub(crate) fn verify_signature(
    algorithms: &WebPkiSupportedAlgorithms,
    spki: &SubjectPublicKeyInfoOwned,
    signature_algorithm: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let (Some(key_id), Some(signature_id)) = (
        identifier_contents(&spki.algorithm),
        identifier_contents(signature_algorithm),
    ) else {
        return false;
    };
    let key = spki.subject_public_key.raw_bytes();
    algorithms.all.iter().any(|algorithm| {
        algorithm.public_key_alg_id().as_ref() == key_id.as_slice()
            && algorithm.signature_alg_id().as_ref() == signature_id.as_slice()
            && algorithm.verify_signature(key, message, signature).is_ok()
    })
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Serial numbers compare without the sign byte DER may add.
pub(crate) fn trim_serial(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// An AlgorithmIdentifier's SEQUENCE contents (what rustls' identifiers hold).
fn identifier_contents(identifier: &AlgorithmIdentifierOwned) -> Option<Vec<u8>> {
    let mut contents = identifier.oid.to_der().ok()?;
    if let Some(parameters) = &identifier.parameters {
        contents.extend(parameters.to_der().ok()?);
    }
    Some(contents)
}

fn http_url(name: &GeneralName) -> Option<http::Uri> {
    let GeneralName::UniformResourceIdentifier(uri) = name else {
        return None;
    };
    let uri: http::Uri = uri.as_str().parse().ok()?;
    (uri.scheme_str() == Some("http") && uri.authority().is_some()).then_some(uri)
}

#[cfg(test)]
mod tests {
    use super::trim_serial;

    #[test]
    fn serials_compare_without_leading_zero_bytes() {
        assert_eq!(trim_serial(&[0, 0x80, 1]), vec![0x80, 1]);
        assert_eq!(trim_serial(&[0x12]), vec![0x12]);
        assert_eq!(trim_serial(&[0, 0]), Vec::<u8>::new());
    }
}
