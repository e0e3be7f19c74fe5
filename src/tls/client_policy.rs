//! An app's client-certificate policy as one function, `ClientPolicy::evaluate`: the leaf is
//! readable, inside its validity period, trusted (CA chain, pin or `allowUntrusted`) and on the
//! allow-lists. The handshake verifier, `rejectWith: "http"` connections and `certgate
//! explain` all call it, so each refusal has the same reason and detail wherever it is seen.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Version};

use super::{FailureReason, RevokedAt, rfc3339};
pub(crate) use crate::identity::TrustSource;
use crate::identity::{LeafNames, rfc4514};
use crate::settings::{AllowList, Trust};

/// One app's policy for presented certificates (modes aside: `evaluate` only runs when a
/// certificate was presented).
#[derive(Debug)]
pub struct ClientPolicy {
    webpki: Option<Arc<dyn ClientCertVerifier>>,
    trust: Trust,
    allow: AllowList,
    provider: Arc<CryptoProvider>,
}

/// A certificate that passed.
#[derive(Debug, Clone)]
pub struct Passed {
    /// What admitted it.
    pub trust: TrustSource,
    /// The leaf, for logs.
    pub presented: Presented,
}

/// The few facts about a presented leaf that a refusal names (never the whole certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    /// Subject, RFC 4514, as `allowedSubjects` compares it.
    pub subject: String,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// Serial number, colon-separated hex as OpenSSL prints it.
    pub serial: String,
    /// SHA-256 of the leaf DER, lowercase hex (as in XFCC).
    pub hash: String,
}

impl Presented {
    /// Reads the facts of a parsed leaf.
    pub fn of(der: &[u8], leaf: &X509Certificate<'_>) -> Self {
        Self {
            subject: rfc4514(leaf.subject()),
            issuer: rfc4514(leaf.issuer()),
            serial: leaf.raw_serial_as_string(),
            hash: crate::identity::hash_hex(der),
        }
    }

    /// For a leaf that does not even parse: only its hash.
    pub fn unparsable(der: &[u8]) -> Self {
        Self {
            hash: crate::identity::hash_hex(der),
            ..Self::default()
        }
    }
}

/// Why a certificate was refused: the reason of the fixed set, a sentence for people, and the
/// rustls error that chooses the TLS alert.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The reason, as in logs and metrics.
    pub reason: FailureReason,
    /// What is wrong, in words (e.g. "subject O=Acme,CN=alice is not in allowedSubjects").
    pub detail: String,
    /// The leaf, when one was presented.
    pub presented: Option<Presented>,
    /// The error the handshake fails with (its alert is what the client sees).
    pub error: rustls::Error,
}

impl Refusal {
    /// The refusal of a client that sent no certificate where one is required.
    pub fn no_certificate() -> Self {
        Self {
            reason: FailureReason::NoCertificate,
            detail: "no client certificate was presented".to_owned(),
            presented: None,
            error: rustls::Error::NoCertificatesPresented,
        }
    }
}

impl ClientPolicy {
    /// Builds the policy; fails when the CA verifier cannot be built (an empty root store).
    pub fn new(
        trust: Trust,
        allow: AllowList,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, VerifierBuilderError> {
        let webpki = if trust.roots.is_empty() {
            None
        } else {
            Some(webpki_verifier(&trust, &trust.roots, provider)?)
        };
        Ok(Self {
            webpki,
            trust,
            allow,
            provider: provider.clone(),
        })
    }

    /// The trust sources.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The allow-lists.
    pub fn allow(&self) -> &AllowList {
        &self.allow
    }

    /// The CA verifier, when CAs are trusted (its hints go into the CertificateRequest).
    pub fn webpki(&self) -> Option<&Arc<dyn ClientCertVerifier>> {
        self.webpki.as_ref()
    }

    /// The verdict on a presented chain at `now`. Proof of possession is not part of it: the
    /// handshake checks it (`explain` has no handshake).
    pub fn evaluate(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Passed, Box<Refusal>> {
        let leaf = match x509_parser::parse_x509_certificate(end_entity) {
            Ok((_, leaf)) => leaf,
            Err(error) => {
                return Err(Box::new(Refusal {
                    reason: FailureReason::UnsupportedCertificate,
                    detail: format!("the certificate is not valid X.509 DER ({error})"),
                    presented: Some(Presented::unparsable(end_entity)),
                    error: CertificateError::BadEncoding.into(),
                }));
            }
        };
        let presented = Presented::of(end_entity, &leaf);
        let refuse = |reason, detail: String, error: rustls::Error| {
            Box::new(Refusal {
                reason,
                detail,
                presented: Some(presented.clone()),
                error,
            })
        };
        if let Some(detail) = unsupported(&leaf) {
            return Err(refuse(
                FailureReason::UnsupportedCertificate,
                detail,
                CertificateError::BadEncoding.into(),
            ));
        }
        // Validity first, for every trust source: pins and allowUntrusted have no CA to ask.
        check_validity(&leaf, now)
            .map_err(|(reason, detail, error)| refuse(reason, detail, error))?;
        let trust = self
            .trusted_by(end_entity, intermediates, now)
            .map_err(|error| {
                let reason = FailureReason::of(&error);
                let detail = match &error {
                    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
                        if intermediates.is_empty() && !self.is_a_root(leaf.issuer().as_raw()) =>
                    {
                        missing_intermediate(&presented)
                    }
                    rustls::Error::InvalidCertificate(CertificateError::Revoked) => self
                        .revoked_by_crl(end_entity, intermediates)
                        .unwrap_or_else(|| describe(&error, &presented)),
                    _ => describe(&error, &presented),
                };
                refuse(reason, detail, error)
            })?;
        if trust == TrustSource::Untrusted
            && self
                .trust
                .checked_issuers
                .iter()
                .any(|name| name.as_slice() == leaf.issuer().as_raw())
        {
            return Err(refuse(
                FailureReason::RevocationUnknown,
                format!(
                    "issuer {} is a CA whose revocation this app checks, but the chain the client sent does not verify to it, so the certificate's revocation cannot be checked; the client must send its intermediate certificates",
                    presented.issuer
                ),
                CertificateError::UnknownRevocationStatus.into(),
            ));
        }
        self.check_allowed(trust, &leaf)
            .map_err(|(reason, detail, error)| refuse(reason, detail, error))?;
        Ok(Passed { trust, presented })
    }

    /// The allow-lists, when the app has any: only a certificate a CA or a pin vouches for
    /// can pass them, and only with a listed name.
    fn check_allowed(
        &self,
        trust: TrustSource,
        leaf: &X509Certificate<'_>,
    ) -> Result<(), (FailureReason, String, rustls::Error)> {
        if self.allow.is_empty() {
            return Ok(());
        }
        let not_allowed = |detail| {
            (
                FailureReason::NotAllowed,
                detail,
                CertificateError::ApplicationVerificationFailure.into(),
            )
        };
        // Anyone can make a certificate with any names: under allowUntrusted alone they prove
        // nothing, so they never satisfy an allow-list (docs/decisions.md).
        if !trust.is_vouched_for() {
            return Err(not_allowed(UNTRUSTED_NAMES.to_owned()));
        }
        let names = LeafNames::of(leaf);
        if !permits(&self.allow, &names) {
            return Err(not_allowed(not_allowed_detail(&names)));
        }
        Ok(())
    }

    /// Which of the app's CRLs lists a certificate of the chain, and when and why its entry
    /// says it was revoked, in the words of the revocation checker's refusals: webpki says
    /// only that something is revoked.
    fn revoked_by_crl(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<String> {
        let chain: Vec<X509Certificate<'_>> = std::iter::once(end_entity)
            .chain(intermediates)
            .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, certificate)| certificate)
            .collect();
        self.trust.crls.iter().enumerate().find_map(|(index, crl)| {
            let (_, crl) = x509_parser::parse_x509_crl(crl).ok()?;
            let (certificate, revoked) = chain.iter().find_map(|certificate| {
                let entry = crl_entry(&crl, certificate)?;
                Some((certificate, entry))
            })?;
            let name = self
                .trust
                .crl_names
                .get(index)
                .map_or("a configured CRL file", String::as_str);
            let serial: String = certificate
                .raw_serial()
                .iter()
                .skip_while(|byte| **byte == 0)
                .map(|byte| format!("{byte:02X}"))
                .collect();
            Some(format!(
                "the crl from {name} lists certificate {serial} ({}) as revoked {revoked}",
                rfc4514(certificate.subject())
            ))
        })
    }

    /// Whether `name` (DER) is the subject of one of the app's CAs.
    fn is_a_root(&self, name: &[u8]) -> bool {
        self.trust.roots.iter().any(|root| {
            x509_parser::parse_x509_certificate(root)
                .is_ok_and(|(_, root)| root.subject().as_raw() == name)
        })
    }

    /// Step 3 of the list in docs/modes.md: a pin, a CA chain, or `allowUntrusted`.
    fn trusted_by(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<TrustSource, rustls::Error> {
        let hash: [u8; 32] = Sha256::digest(end_entity).into();
        if self.trust.pins.contains(&hash) {
            return Ok(TrustSource::Pin);
        }
        match &self.webpki {
            Some(webpki) => match webpki.verify_client_cert(end_entity, intermediates, now) {
                Ok(_) => Ok(TrustSource::Ca),
                // allowUntrusted forwards certificates nobody vouches for; it never overrides a
                // verdict about a chain we do know (revoked, wrong EKU, expired CRL).
                Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
                    if self.trust.allow_untrusted =>
                {
                    Ok(TrustSource::Untrusted)
                }
                Err(error) => Err(error),
            },
            None if self.trust.allow_untrusted => Ok(TrustSource::Untrusted),
            None => Err(CertificateError::UnknownIssuer.into()),
        }
    }

    /// What vouches for the chain at `now` (a pin, a CA with the app's CRLs, or
    /// `allowUntrusted`), the leaf's validity and the allow-lists aside: for `explain`, which
    /// says whether a refused certificate still chains to a trusted CA.
    pub fn trusted_at(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<TrustSource, rustls::Error> {
        self.trusted_by(end_entity, intermediates, now)
    }

    /// For each trusted CA on its own, what webpki says about the chain (with the app's CRLs):
    /// `Ok` when that CA alone would vouch for it. For `explain`.
    pub fn per_ca(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Vec<Result<(), rustls::Error>> {
        self.trust
            .roots
            .iter()
            .map(|root| {
                let verifier =
                    webpki_verifier(&self.trust, std::slice::from_ref(root), &self.provider)
                        .map_err(|error| rustls::Error::General(error.to_string()))?;
                verifier
                    .verify_client_cert(end_entity, intermediates, now)
                    .map(|_| ())
            })
            .collect()
    }
}

/// When and why `crl` says `certificate` was revoked, when it lists it: an entry with its
/// serial in a CRL of its issuer.
pub(crate) fn crl_entry(
    crl: &x509_parser::revocation_list::CertificateRevocationList<'_>,
    certificate: &X509Certificate<'_>,
) -> Option<RevokedAt> {
    if crl.issuer().as_raw() != certificate.issuer().as_raw() {
        return None;
    }
    crl.iter_revoked_certificates()
        .find(|entry| entry.raw_serial() == certificate.raw_serial())
        .map(|entry| RevokedAt {
            time: entry.revocation_date.timestamp(),
            reason: entry.reason_code().map(|(_, code)| code.0),
        })
}

fn webpki_verifier(
    trust: &Trust,
    roots: &[CertificateDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, VerifierBuilderError> {
    let mut store = RootCertStore::empty();
    // Each root was checked to be a usable trust anchor when the config was loaded.
    store.add_parsable_certificates(roots.iter().cloned());
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone());
    if !trust.crls.is_empty() {
        builder = builder
            .with_crls(trust.crls.iter().cloned())
            .enforce_revocation_expiration();
    }
    builder.build()
}

/// Whether `leaf` is valid at `now`.
fn check_validity(
    leaf: &X509Certificate<'_>,
    now: UnixTime,
) -> Result<(), (FailureReason, String, rustls::Error)> {
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = leaf.validity();
    if now_secs < validity.not_before.timestamp() {
        return Err((
            FailureReason::NotYetValid,
            format!(
                "the certificate is not valid before {}",
                rfc3339(validity.not_before.timestamp())
            ),
            CertificateError::NotValidYet.into(),
        ));
    }
    if now_secs > validity.not_after.timestamp() {
        return Err((
            FailureReason::Expired,
            format!(
                "the certificate expired at {}",
                rfc3339(validity.not_after.timestamp())
            ),
            CertificateError::Expired.into(),
        ));
    }
    Ok(())
}

/// Why webpki cannot use this leaf at all, if it cannot: the version, the key algorithm.
fn unsupported(leaf: &X509Certificate<'_>) -> Option<String> {
    if leaf.version() != X509Version::V3 {
        return Some(format!(
            "X.509 version {} certificate; webpki accepts only version 3 (sign it with extensions, e.g. `openssl x509 -req … -extfile client.ext` holding extendedKeyUsage=clientAuth)",
            leaf.version().0 + 1
        ));
    }
    let key = leaf.public_key();
    let algorithm = key.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        RSA | ED25519 => None,
        EC => {
            let curve = curve_oid(key);
            match curve.as_str() {
                P256 | P384 | P521 => None,
                _ => Some(format!(
                    "elliptic-curve key on curve {curve}; certgate accepts P-256, P-384 and P-521"
                )),
            }
        }
        other => Some(format!(
            "public key algorithm {other} is not supported; use RSA, ECDSA (P-256, P-384, P-521) or Ed25519"
        )),
    }
}

/// The named curve of an elliptic-curve key, as a dotted OID (empty when absent).
pub(crate) fn curve_oid(key: &SubjectPublicKeyInfo<'_>) -> String {
    key.algorithm
        .parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok())
        .map(|oid| oid.to_id_string())
        .unwrap_or_default()
}

const RSA: &str = "1.2.840.113549.1.1.1";
const EC: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const P521: &str = "1.3.132.0.35";

const UNTRUSTED_NAMES: &str = "the certificate is admitted only by allowUntrusted, so its names are not vouched for and cannot match allowedSubjects, allowedDnsSans or allowedUriSans; have it issued by a trusted CA or pin it in allowedHashes";

fn not_allowed_detail(names: &LeafNames) -> String {
    let mut detail = format!(
        "subject {} is not in allowedSubjects",
        if names.subject.is_empty() {
            "(empty)"
        } else {
            &names.subject
        }
    );
    if !names.dns.is_empty() {
        detail.push_str(&format!(
            ", DNS SANs {} not in allowedDnsSans",
            names.dns.join(",")
        ));
    }
    if !names.uris.is_empty() {
        detail.push_str(&format!(
            ", URI SANs {} not in allowedUriSans",
            names.uris.join(",")
        ));
    }
    detail
}

/// A sentence for a trust failure raised by webpki or by the policy.
/// The detail of a refusal of a lone certificate whose issuer is not one of the app's CAs:
/// most often the most common mTLS failure, a client that sends only its leaf, issued by an
/// intermediate CA the app does not hold, so the chain cannot be built to one of its CAs.
fn missing_intermediate(presented: &Presented) -> String {
    let issuer = &presented.issuer;
    format!(
        "issuer {issuer} is not one of this app's CAs, and the client sent no intermediate CA certificate: if that issuer is an intermediate CA under one of them, the client must send it after its certificate (with curl: the intermediate PEMs after the certificate in the --cert file; with certgate explain: --chain FILE); if not, no CA of this app vouches for it"
    )
}

pub(crate) fn describe(error: &rustls::Error, presented: &Presented) -> String {
    use rustls::CertificateError as Cert;
    let rustls::Error::InvalidCertificate(cert) = error else {
        return error.to_string();
    };
    match cert {
        Cert::UnknownIssuer => format!(
            "issuer {} is not a trusted CA, the leaf is not pinned, and allowUntrusted is off",
            presented.issuer
        ),
        Cert::Revoked => {
            "the certificate (or a CA above it) is revoked by a configured CRL".to_owned()
        }
        Cert::UnknownRevocationStatus => {
            "a CA of the chain has no CRL among crlFiles, so revocation cannot be checked"
                .to_owned()
        }
        Cert::ExpiredRevocationList | Cert::ExpiredRevocationListContext { .. } => {
            "a configured CRL is past its nextUpdate; fetch a fresh one".to_owned()
        }
        Cert::InvalidPurpose | Cert::InvalidPurposeContext { .. } => {
            "the certificate's extended key usage does not include clientAuth".to_owned()
        }
        Cert::BadSignature => "a signature in the chain does not verify".to_owned(),
        // rustls words these with Unix seconds; people read RFC 3339.
        Cert::ExpiredContext { time, not_after } => format!(
            "a certificate of the chain expired at {} (judged at {})",
            unix_rfc3339(*not_after),
            unix_rfc3339(*time)
        ),
        Cert::NotValidYetContext { time, not_before } => format!(
            "a certificate of the chain is not valid before {} (judged at {})",
            unix_rfc3339(*not_before),
            unix_rfc3339(*time)
        ),
        Cert::Other(other) => format!("webpki refuses the chain: {other}"),
        other => format!("webpki refuses the chain: {other}"),
    }
}

fn unix_rfc3339(time: UnixTime) -> String {
    rfc3339(i64::try_from(time.as_secs()).unwrap_or(i64::MAX))
}

tokio::task_local! {
    static HANDSHAKE: RefCell<Watched>;
}

/// What the verifier decided during a handshake.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    /// The refusal, so the log line can name the certificate and say why (rustls only
    /// carries the alert).
    pub refusal: Option<Box<Refusal>>,
    /// What admitted the certificate, when the policy passed it.
    pub trust: Option<TrustSource>,
}

/// Runs a handshake and returns its output with what the verifier decided during it.
pub(crate) async fn watch<F: Future>(handshake: F) -> (F::Output, Watched) {
    HANDSHAKE
        .scope(RefCell::new(Watched::default()), async {
            let output = handshake.await;
            let watched = HANDSHAKE
                .try_with(|slot| std::mem::take(&mut *slot.borrow_mut()))
                .unwrap_or_default();
            (output, watched)
        })
        .await
}

/// Records a refusal for `watch`; does nothing outside it.
pub(crate) fn record(refusal: Box<Refusal>) {
    let _ = HANDSHAKE.try_with(|slot| slot.borrow_mut().refusal = Some(refusal));
}

/// Records what admitted a certificate for `watch`; does nothing outside it.
pub(crate) fn record_trust(trust: TrustSource) {
    let _ = HANDSHAKE.try_with(|slot| slot.borrow_mut().trust = Some(trust));
}

/// Whether the leaf matches an allow-list entry; a name only ever matches an entry of its own
/// type.
fn permits(allow: &AllowList, names: &LeafNames) -> bool {
    allow.subjects.contains(&names.subject)
        || names
            .dns
            .iter()
            .any(|dns| allow.dns_sans.contains(&super::sni::normalize(dns)))
        || names.uris.iter().any(|uri| allow.uri_sans.contains(uri))
}
