//! OCSP (RFC 6960): build an unsigned request for one certificate, POST it to the responder,
//! and believe the answer only when it is signed by the issuer or by a responder the issuer
//! delegated with the OCSP-signing EKU, names the certificate asked about, and is current:
//! thisUpdate not in the future, and not past its nextUpdate or, without one, not older than
//! `maxAgeMs`. Answers with a nextUpdate are cached per (issuer key, serial) until then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::Uri;
use rustls::crypto::WebPkiSupportedAlgorithms;
use sha1::{Digest, Sha1};
use x509_cert::der::asn1::{Any, OctetString};
use x509_cert::der::oid::db::{rfc5912, rfc6960};
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponderId, TbsRequest, Version,
};

use super::fetch::{FetchError, Fetcher};
use super::x509::{Cert, verify_signature};
use crate::settings::CLOCK_SKEW;
use crate::tls::RevokedAt;
/// Cached answers per app; past it, expired and then the soonest-expiring entries go.
pub(crate) const CACHE_SIZE: usize = 4096;

/// What the responder said about a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OcspStatus {
    Good,
    /// With the answer's revocationTime and revocationReason.
    Revoked(RevokedAt),
    Unknown,
}

/// Why an OCSP lookup gave no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OcspError {
    #[error("the certificate names no http:// OCSP responder and ocspResponder is not set")]
    NoResponder,
    #[error("responder {url} failed")]
    Fetch { url: String, source: FetchError },
    #[error("responder {url} sent an answer that is not an OCSP response")]
    Decode {
        url: String,
        source: x509_cert::der::Error,
    },
    #[error("responder {url} answered with status {status:?}")]
    Status {
        url: String,
        status: OcspResponseStatus,
    },
    #[error("responder {url} sent no basic OCSP response")]
    NotBasic { url: String },
    #[error(
        "responder {url} signed with a key that is neither the issuer's nor a delegated OCSP signer's"
    )]
    Signer { url: String },
    #[error("responder {url} sent no status for the certificate asked about")]
    NoMatch { url: String },
    #[error("responder {url} sent an answer outside its thisUpdate/nextUpdate window")]
    Stale { url: String },
    #[error(
        "responder {url} sent an answer whose thisUpdate is more than {} s in the future (check this machine's clock and the responder's)",
        CLOCK_SKEW.as_secs()
    )]
    Future { url: String },
    #[error(
        "responder {url} sent an answer without nextUpdate whose thisUpdate is {age_secs} s old, older than maxAgeMs allows ({max_age_secs} s)"
    )]
    TooOld {
        url: String,
        age_secs: u64,
        max_age_secs: u64,
    },
    #[error("cannot encode the OCSP request")]
    Encode(#[source] x509_cert::der::Error),
}

/// A fresh answer, and until when it may be cached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub status: OcspStatus,
    pub next_update: Option<Duration>,
}

/// Cache key: SHA-1 of the issuer's key and the serial, as in the CertID.
pub(crate) type Key = (Vec<u8>, Vec<u8>);

/// Answers per (issuer, serial), each until its nextUpdate, bounded in count. (The
/// certificates a responder reported revoked are remembered beside every generation, in
/// `Memory`.)
#[derive(Debug, Default)]
pub(crate) struct Cache {
    answers: Mutex<HashMap<Key, (OcspStatus, Duration)>>,
}

impl Cache {
    /// A cached answer that is still current.
    pub(crate) fn get(&self, cert: &Cert, issuer: &Cert, now: Duration) -> Option<OcspStatus> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let (status, until) = answers.get(&key(cert, issuer))?;
        (now <= *until).then_some(*status)
    }

    /// Keeps an answer until its nextUpdate.
    pub(crate) fn put(
        &self,
        cert: &Cert,
        issuer: &Cert,
        status: OcspStatus,
        until: Duration,
        now: Duration,
    ) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if answers.len() >= CACHE_SIZE {
            answers.retain(|_, (_, until)| *until >= now);
        }
        while answers.len() >= CACHE_SIZE {
            let Some(soonest) = answers
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            answers.remove(&soonest);
        }
        answers.insert(key(cert, issuer), (status, until));
    }
}

/// Asks `url` about `cert` (issued by `issuer`) and verifies the answer; one without
/// nextUpdate is believed up to `max_age` after its thisUpdate.
pub(crate) async fn lookup(
    fetcher: &Fetcher,
    url: &Uri,
    cert: &Cert,
    issuer: &Cert,
    now: Duration,
    max_age: Duration,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<Answer, OcspError> {
    let id = cert_id(cert, issuer).map_err(OcspError::Encode)?;
    let request = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(OcspError::Encode)?;
    let body = fetcher
        .post_ocsp(url, request)
        .await
        .map_err(|source| OcspError::Fetch {
            url: url.to_string(),
            source,
        })?;
    verify(&body, url, &id, issuer, now, max_age, algorithms)
}

/// Checks a DER OCSP response for the certificate `id` names.
pub(crate) fn verify(
    body: &[u8],
    url: &Uri,
    id: &CertId,
    issuer: &Cert,
    now: Duration,
    max_age: Duration,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<Answer, OcspError> {
    let url = url.to_string();
    let basic = basic_response(body, &url)?;
    let data = &basic.tbs_response_data;
    let tbs = data.to_der().map_err(|source| OcspError::Decode {
        url: url.clone(),
        source,
    })?;
    if !signed_by_responder(&basic, &tbs, issuer, now, algorithms) {
        return Err(OcspError::Signer { url });
    }
    let Some(single) = data
        .responses
        .iter()
        .find(|single| same_cert(&single.cert_id, id))
    else {
        return Err(OcspError::NoMatch { url });
    };
    let this_update = single.this_update.0.to_unix_duration();
    let next_update = single.next_update.map(|time| time.0.to_unix_duration());
    fresh(this_update, next_update, now, max_age, url)?;
    let status = match single.cert_status {
        CertStatus::Good(_) => OcspStatus::Good,
        CertStatus::Revoked(info) => OcspStatus::Revoked(RevokedAt {
            time: i64::try_from(info.revocation_time.0.to_unix_duration().as_secs())
                .unwrap_or(i64::MAX),
            reason: info.revocation_reason.map(|reason| reason as u8),
        }),
        CertStatus::Unknown(_) => OcspStatus::Unknown,
    };
    Ok(Answer {
        status,
        next_update,
    })
}

/// The basic response inside a successful OCSP response.
fn basic_response(body: &[u8], url: &str) -> Result<BasicOcspResponse, OcspError> {
    let decode = |source| OcspError::Decode {
        url: url.to_owned(),
        source,
    };
    let response = OcspResponse::from_der(body).map_err(decode)?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::Status {
            url: url.to_owned(),
            status: response.response_status,
        });
    }
    let Some(bytes) = response
        .response_bytes
        .filter(|bytes| bytes.response_type == rfc6960::ID_PKIX_OCSP_BASIC)
    else {
        return Err(OcspError::NotBasic {
            url: url.to_owned(),
        });
    };
    BasicOcspResponse::from_der(bytes.response.as_bytes()).map_err(decode)
}

/// Whether the response is signed by whom RFC 6960 section 4.2.2.2 allows: the issuer
/// itself, or a certificate the issuer signed with the OCSP-signing EKU (a certificate from
/// elsewhere signing proves nothing).
fn signed_by_responder(
    basic: &BasicOcspResponse,
    tbs: &[u8],
    issuer: &Cert,
    now: Duration,
    algorithms: &WebPkiSupportedAlgorithms,
) -> bool {
    let data = &basic.tbs_response_data;
    let signed_with = |signer: &Cert| {
        verify_signature(
            algorithms,
            signer.spki(),
            &basic.signature_algorithm,
            tbs,
            basic.signature.raw_bytes(),
        )
    };
    let by_issuer = names(&data.responder_id, issuer) && signed_with(issuer);
    by_issuer
        || basic
            .certs
            .iter()
            .flatten()
            .filter_map(|certificate| Cert::parse(&certificate.to_der().ok()?))
            .any(|delegate| {
                names(&data.responder_id, &delegate)
                    && delegate.has_ocsp_signing_eku()
                    && delegate.signed_by(issuer, algorithms)
                    && delegate.valid_at(now)
                    && signed_with(&delegate)
            })
}

/// Whether an answer made at `this_update`, valid until `next_update`, may be used `now`.
fn fresh(
    this_update: Duration,
    next_update: Option<Duration>,
    now: Duration,
    max_age: Duration,
    url: String,
) -> Result<(), OcspError> {
    if this_update > now + CLOCK_SKEW {
        return Err(OcspError::Future { url });
    }
    match next_update {
        Some(next) if next + CLOCK_SKEW < now => Err(OcspError::Stale { url }),
        // No nextUpdate: "newer information is always available" (RFC 6960 section
        // 4.2.2.1), which says nothing of how old this answer may be; a replayed one must not
        // vouch forever (OpenSSL's `-status_age`).
        None if this_update
            .saturating_add(max_age)
            .saturating_add(CLOCK_SKEW)
            < now =>
        {
            Err(OcspError::TooOld {
                url,
                age_secs: now.saturating_sub(this_update).as_secs(),
                max_age_secs: max_age.as_secs(),
            })
        }
        _ => Ok(()),
    }
}

/// The CertID of RFC 6960 section 4.1.1, with SHA-1 as RFC 5019 requires of every responder.
pub(crate) fn cert_id(cert: &Cert, issuer: &Cert) -> Result<CertId, x509_cert::der::Error> {
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: rfc5912::ID_SHA_1,
            parameters: Some(Any::null()),
        },
        issuer_name_hash: OctetString::new(Sha1::digest(&issuer.subject).to_vec())?,
        issuer_key_hash: OctetString::new(key_hash(issuer))?,
        serial_number: cert.parsed.tbs_certificate.serial_number.clone(),
    })
}

fn key_hash(cert: &Cert) -> Vec<u8> {
    Sha1::digest(cert.spki().subject_public_key.raw_bytes()).to_vec()
}

/// The (issuer key, serial) an answer is about.
pub(crate) fn key(cert: &Cert, issuer: &Cert) -> Key {
    (key_hash(issuer), cert.serial.clone())
}

fn names(responder: &ResponderId, cert: &Cert) -> bool {
    match responder {
        ResponderId::ByName(name) => name.to_der().is_ok_and(|der| der == cert.subject),
        ResponderId::ByKey(hash) => hash.as_bytes() == key_hash(cert).as_slice(),
    }
}

/// Same certificate: hash algorithm parameters may be absent or NULL (both are seen).
fn same_cert(answered: &CertId, asked: &CertId) -> bool {
    answered.hash_algorithm.oid == asked.hash_algorithm.oid
        && answered.issuer_name_hash == asked.issuer_name_hash
        && answered.issuer_key_hash == asked.issuer_key_hash
        && super::x509::trim_serial(answered.serial_number.as_bytes())
            == super::x509::trim_serial(asked.serial_number.as_bytes())
}
