//! An app's client-certificate policy (`client_policy.rs`) as a rustls verifier. Proof of possession is
//! checked by rustls through our signature methods in every trust setting; every refusal is
//! recorded with its reason and detail for the handshake's log line.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::FailureReason;
use super::client_policy::{self, ClientPolicy, Presented, Refusal};
use crate::settings::{ClientCertMode, RejectWith};

/// The verifier for an app, or `None` in `ignore` mode. With `RejectWith::Http` a certificate
/// the policy refuses still completes the handshake (its proof of possession is checked all the
/// same) and the connection answers 495; a missing one answers 496.
pub(crate) fn verifier(
    mode: ClientCertMode,
    policy: &Arc<ClientPolicy>,
    reject_with: RejectWith,
    provider: &Arc<CryptoProvider>,
) -> Option<Arc<dyn ClientCertVerifier>> {
    let mandatory = match mode {
        ClientCertMode::Ignore => return None,
        ClientCertMode::Require => reject_with == RejectWith::Tls,
        ClientCertMode::Accept => false,
    };
    Some(Arc::new(PolicyVerifier {
        policy: policy.clone(),
        mandatory,
        reject_with,
        algorithms: provider.signature_verification_algorithms,
    }))
}

/// Checks that a CA certificate can be a trust anchor.
pub(crate) fn check_trust_anchor(
    certificate: &CertificateDer<'static>,
) -> Result<(), rustls::Error> {
    RootCertStore::empty().add(certificate.clone())
}

#[derive(Debug)]
struct PolicyVerifier {
    policy: Arc<ClientPolicy>,
    mandatory: bool,
    reject_with: RejectWith,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PolicyVerifier {
    /// Records a failed proof of possession so the refusal names the certificate.
    fn signature(
        &self,
        result: Result<HandshakeSignatureValid, rustls::Error>,
        cert: &CertificateDer<'_>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if let Err(error) = &result {
            let presented = match x509_parser::parse_x509_certificate(cert) {
                Ok((_, leaf)) => Presented::of(cert, &leaf),
                Err(_) => Presented::unparsable(cert),
            };
            // A leaf webpki cannot read (with rejectWith http it got this far) keeps the reason
            // the policy gives it; anything else is a failed proof of possession.
            let refusal = self
                .policy
                .evaluate(cert, &[], UnixTime::now())
                .err()
                .filter(|refusal| refusal.reason == FailureReason::UnsupportedCertificate)
                .unwrap_or_else(|| Box::new(Refusal {
                    reason: FailureReason::of(error),
                    detail: "the handshake signature does not verify with the certificate's public key: the client does not hold its private key".to_owned(),
                    presented: Some(presented),
                    error: error.clone(),
                }));
            client_policy::record(refusal);
        }
        result
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
        match self.policy.webpki() {
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
        match self.policy.evaluate(end_entity, intermediates, now) {
            Ok(passed) => {
                client_policy::record_trust(passed.trust);
                Ok(ClientCertVerified::assertion())
            }
            // The connection evaluates the policy again once the handshake is done (so a
            // resumed session is judged too) and answers every request itself.
            Err(_) if self.reject_with == RejectWith::Http => Ok(ClientCertVerified::assertion()),
            Err(refusal) => {
                let error = refusal.error.clone();
                client_policy::record(refusal);
                Err(error)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let result = rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms);
        self.signature(result, cert)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let result = rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms);
        self.signature(result, cert)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
