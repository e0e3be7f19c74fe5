//! Certificate revocation lists from files and `http://` URLs (DER or PEM): parsed once,
//! signature-checked against the CA that issued them before they are believed, and looked up
//! by serial. The store keeps the last good CRL of each source; it vouches until its
//! nextUpdate or, without one, until `maxAgeMs` after its thisUpdate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;
use x509_cert::crl::{CertificateList, RevokedCert};
use x509_cert::der::oid::db::rfc5280::ID_CE_CRL_REASONS;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::CrlReason;

use super::x509::{Cert, trim_serial, verify_signature};
use crate::settings::CLOCK_SKEW;
use crate::settings::DEFAULT_MAX_AGE;
use crate::tls::RevokedAt;

/// Why bytes are not a usable CRL.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("not a DER or PEM certificate revocation list")]
    Parse(#[source] x509_cert::der::Error),
    #[error("not a DER or PEM certificate revocation list")]
    Pem(#[source] rustls_pki_types::pem::Error),
    #[error("its signature does not verify with the key of its issuer {issuer}")]
    Signature { issuer: String },
    #[error("it is past its nextUpdate")]
    Stale,
    #[error(
        "its thisUpdate is more than {} s in the future; check this machine's clock and the issuer's",
        CLOCK_SKEW.as_secs()
    )]
    Future,
    #[error(
        "it has no nextUpdate and its thisUpdate is older than maxAgeMs allows ({max_age_secs} s); publish a fresh CRL"
    )]
    TooOld { max_age_secs: u64 },
    #[error("it is a delta CRL; certgate uses only complete CRLs")]
    Delta,
    #[error("it has a critical extension certgate does not know ({oid})")]
    CriticalExtension { oid: String },
}

/// One parsed CRL.
#[derive(Debug)]
pub(crate) struct Crl {
    /// DER of the issuer name.
    pub issuer: Vec<u8>,
    /// thisUpdate, since the Unix epoch.
    pub this_update: Duration,
    /// nextUpdate, since the Unix epoch, when the CRL has one.
    pub next_update: Option<Duration>,
    /// How long after thisUpdate a CRL without nextUpdate vouches (`maxAgeMs`).
    max_age: Duration,
    /// The serials it lists, with when and why each was revoked.
    revoked: HashMap<Vec<u8>, RevokedAt>,
    scope: Scope,
    parsed: CertificateList,
    tbs: Vec<u8>,
    /// Issuer subjects+keys whose signature check passed, so it runs once per issuer.
    verified_by: Mutex<Vec<Vec<u8>>>,
}

impl Crl {
    /// Parses a CRL in DER, or the first CRL of a PEM text.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, CrlError> {
        let pem = bytes.windows(10).any(|window| window == b"-----BEGIN");
        let der = if pem {
            CertificateRevocationListDer::from_pem_slice(bytes)
                .map_err(CrlError::Pem)?
                .as_ref()
                .to_vec()
        } else {
            bytes.to_vec()
        };
        let parsed = CertificateList::from_der(&der).map_err(CrlError::Parse)?;
        let list = &parsed.tbs_cert_list;
        let scope = Scope::of(list)?;
        let revoked = list
            .revoked_certificates
            .iter()
            .flatten()
            .map(|entry| {
                (
                    trim_serial(entry.serial_number.as_bytes()),
                    revoked_at(entry),
                )
            })
            .collect();
        Ok(Self {
            issuer: list.issuer.to_der().map_err(CrlError::Parse)?,
            this_update: list.this_update.to_unix_duration(),
            next_update: list.next_update.map(|time| time.to_unix_duration()),
            max_age: DEFAULT_MAX_AGE,
            tbs: list.to_der().map_err(CrlError::Parse)?,
            revoked,
            scope,
            parsed,
            verified_by: Mutex::new(Vec::new()),
        })
    }

    /// The issuer name for logs.
    pub(crate) fn issuer_text(&self) -> String {
        self.parsed.tbs_cert_list.issuer.to_string()
    }

    /// Whether `issuer` (whose subject is this CRL's issuer) signed this CRL.
    pub(crate) fn signed_by(&self, issuer: &Cert, algorithms: &WebPkiSupportedAlgorithms) -> bool {
        if issuer.subject != self.issuer {
            return false;
        }
        let key = issuer.spki().subject_public_key.raw_bytes().to_vec();
        let mut verified = self.verified_by.lock().unwrap_or_else(|e| e.into_inner());
        if verified.contains(&key) {
            return true;
        }
        let good = verify_signature(
            algorithms,
            issuer.spki(),
            &self.parsed.signature_algorithm,
            &self.tbs,
            self.parsed.signature.raw_bytes(),
        );
        if good {
            verified.push(key);
        }
        good
    }

    /// The same CRL, judged with the app's `maxAgeMs` instead of the default.
    pub(crate) fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// When the CRL stops vouching: its nextUpdate (RFC 5280 section 5.1.2.5), or `maxAgeMs`
    /// after its thisUpdate when it has none.
    pub(crate) fn stale_at(&self) -> Duration {
        self.next_update
            .unwrap_or_else(|| self.this_update.saturating_add(self.max_age))
    }

    /// Whether the CRL may still be used at `now`.
    pub(crate) fn is_fresh(&self, now: Duration) -> bool {
        now <= self.stale_at()
    }

    /// Whether its thisUpdate lies ahead of `now` by more than the clock skew allowed.
    pub(crate) fn is_from_the_future(&self, now: Duration) -> bool {
        self.this_update > now + CLOCK_SKEW
    }

    /// Why a CRL that is not fresh cannot be used.
    pub(crate) fn staleness(&self) -> CrlError {
        match self.next_update {
            Some(_) => CrlError::Stale,
            None => CrlError::TooOld {
                max_age_secs: self.max_age.as_secs(),
            },
        }
    }

    /// Whether `other` is the same list, signed or not (thisUpdate included).
    pub(crate) fn same_list(&self, other: &Crl) -> bool {
        self.tbs == other.tbs
    }

    /// When and why the serial was revoked, when it is listed.
    pub(crate) fn lists(&self, serial: &[u8]) -> Option<RevokedAt> {
        self.revoked.get(serial).copied()
    }

    /// Whether this CRL speaks for `cert` (RFC 5280 section 6.3.3 (b)): a CRL scoped by an
    /// issuing distribution point covers only the certificates that name that point, and only
    /// the kind (CA or end entity) it is for; partial CRLs (some reasons, indirect) never do.
    pub(crate) fn covers(&self, cert: &Cert) -> bool {
        let scope = &self.scope;
        if scope.partial || (scope.only_user && cert.is_ca()) || (scope.only_ca && !cert.is_ca()) {
            return false;
        }
        match &scope.points {
            None => true,
            Some(points) => cert
                .crl_urls()
                .iter()
                .any(|url| points.contains(&url.to_string())),
        }
    }
}

/// What an issuing distribution point limits a CRL to.
#[derive(Debug, Default)]
struct Scope {
    /// The distribution point URLs it is for; `None` for the whole issuer.
    points: Option<Vec<String>>,
    only_user: bool,
    only_ca: bool,
    partial: bool,
}

impl Scope {
    fn of(list: &x509_cert::crl::TbsCertList) -> Result<Self, CrlError> {
        use x509_cert::der::oid::db::rfc5280;
        use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
        use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
        let mut scope = Self::default();
        for extension in list.crl_extensions.iter().flatten() {
            if extension.extn_id == rfc5280::ID_CE_DELTA_CRL_INDICATOR {
                return Err(CrlError::Delta);
            }
            if extension.extn_id == rfc5280::ID_CE_ISSUING_DISTRIBUTION_POINT {
                let point = IssuingDistributionPoint::from_der(extension.extn_value.as_bytes())
                    .map_err(CrlError::Parse)?;
                scope.only_user = point.only_contains_user_certs;
                scope.only_ca = point.only_contains_ca_certs;
                scope.partial = point.only_some_reasons.is_some()
                    || point.indirect_crl
                    || point.only_contains_attribute_certs;
                if let Some(DistributionPointName::FullName(names)) = point.distribution_point {
                    scope.points = Some(
                        names
                            .iter()
                            .filter_map(|name| match name {
                                GeneralName::UniformResourceIdentifier(uri) => uri
                                    .as_str()
                                    .parse::<http::Uri>()
                                    .ok()
                                    .map(|u| u.to_string()),
                                _ => None,
                            })
                            .collect(),
                    );
                }
            } else if extension.critical
                && extension.extn_id != rfc5280::ID_CE_CRL_NUMBER
                && extension.extn_id != rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER
            {
                return Err(CrlError::CriticalExtension {
                    oid: extension.extn_id.to_string(),
                });
            }
        }
        Ok(scope)
    }
}

/// Where a CRL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `crlFiles`: read at load, replaced by a reload.
    File,
    /// `crlUrls`: fetched at load, refreshed in the background.
    Url,
    /// A distribution point of a certificate seen (`crlFromCertificates`).
    DistributionPoint,
}

/// A source and what it last gave.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The file path or URL.
    pub source: String,
    /// How the source was configured.
    pub origin: Origin,
    /// The last good CRL, if any fetch succeeded.
    pub crl: Option<Arc<Crl>>,
    /// When to fetch again (since the Unix epoch); `None` for files.
    pub due: Option<Duration>,
}

/// Every CRL source of an app.
#[derive(Debug, Default)]
pub(crate) struct CrlStore {
    entries: RwLock<HashMap<String, Entry>>,
}

impl CrlStore {
    /// Adds or replaces a source.
    pub(crate) fn insert(&self, entry: Entry) {
        self.write().insert(entry.source.clone(), entry);
    }

    /// Whether a source is known (fetched or being retried).
    pub(crate) fn contains(&self, source: &str) -> bool {
        self.read().contains_key(source)
    }

    /// A copy of every entry.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.read().values().cloned().collect()
    }

    /// Every CRL issued under `issuer_subject` (DER of the name), with its source.
    pub(crate) fn for_issuer(&self, issuer_subject: &[u8]) -> Vec<(String, Arc<Crl>)> {
        self.read()
            .values()
            .filter_map(|entry| Some((entry.source.clone(), entry.crl.clone()?)))
            .filter(|(_, crl)| crl.issuer == issuer_subject)
            .collect()
    }

    /// Records a refresh: a new CRL (or only a new due time when the fetch failed).
    pub(crate) fn update(&self, source: &str, crl: Option<Arc<Crl>>, due: Duration) {
        if let Some(entry) = self.write().get_mut(source) {
            if crl.is_some() {
                entry.crl = crl;
            }
            entry.due = Some(due);
        }
    }

    /// The earliest time a source is due.
    pub(crate) fn next_due(&self) -> Option<Duration> {
        self.read().values().filter_map(|entry| entry.due).min()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// When to fetch a source again: at least every `refresh`, and well before the CRL goes
/// stale (`Crl::stale_at`: nextUpdate, or thisUpdate + `maxAgeMs`), at three quarters of
/// the time left, never sooner than a second from now.
pub(crate) fn due_after(stale_at: Duration, now: Duration, refresh: Duration) -> Duration {
    let mut wait = refresh;
    if stale_at > now {
        wait = wait.min((stale_at - now) * 3 / 4);
    }
    now + wait.max(Duration::from_secs(1))
}

/// After a failed fetch: retry sooner than `refresh`, at most every 30 s.
pub(crate) fn retry_after(now: Duration, refresh: Duration) -> Duration {
    now + refresh
        .min(Duration::from_secs(30))
        .max(Duration::from_secs(1))
}

/// When and why a CRL entry says its certificate was revoked: its revocationDate and, when
/// the entry has one, its reasonCode extension.
fn revoked_at(entry: &RevokedCert) -> RevokedAt {
    let reason = entry
        .crl_entry_extensions
        .iter()
        .flatten()
        .find(|extension| extension.extn_id == ID_CE_CRL_REASONS)
        .and_then(|extension| CrlReason::from_der(extension.extn_value.as_bytes()).ok())
        .map(|reason| reason as u8);
    RevokedAt {
        time: i64::try_from(entry.revocation_date.to_unix_duration().as_secs()).unwrap_or(i64::MAX),
        reason,
    }
}

/// What the CRLs say about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CrlStatus {
    /// A fresh CRL from the issuer does not list it.
    Good,
    /// A CRL from the issuer lists it (its source, and when and why its entry says).
    Revoked(String, RevokedAt),
    /// No fresh, correctly signed CRL from the issuer is held.
    Unknown(&'static str),
}

/// Looks `cert` up in the CRLs of `issuer`.
pub(crate) fn status(
    store: &CrlStore,
    cert: &Cert,
    issuer: &Cert,
    now: Duration,
    algorithms: &WebPkiSupportedAlgorithms,
) -> CrlStatus {
    status_among(
        store.for_issuer(&issuer.subject),
        cert,
        issuer,
        now,
        algorithms,
    )
}

/// Looks `cert` up in `crls` (with their sources): those that speak for it and verify with
/// the key of `issuer` count.
pub(crate) fn status_among(
    crls: Vec<(String, Arc<Crl>)>,
    cert: &Cert,
    issuer: &Cert,
    now: Duration,
    algorithms: &WebPkiSupportedAlgorithms,
) -> CrlStatus {
    let crls: Vec<(String, Arc<Crl>)> = crls
        .into_iter()
        .filter(|(_, crl)| crl.covers(cert) && crl.signed_by(issuer, algorithms))
        .collect();
    if crls.is_empty() {
        return CrlStatus::Unknown("no crl from the issuer");
    }
    // A revocation is believed even from a stale CRL: revocation is permanent.
    if let Some((source, revoked)) = crls
        .iter()
        .find_map(|(source, crl)| Some((source, crl.lists(&cert.serial)?)))
    {
        return CrlStatus::Revoked(source.clone(), revoked);
    }
    if crls.iter().any(|(_, crl)| crl.is_fresh(now)) {
        CrlStatus::Good
    } else if crls.iter().all(|(_, crl)| crl.next_update.is_some()) {
        CrlStatus::Unknown("the issuer's crl is past its nextUpdate")
    } else {
        CrlStatus::Unknown("the issuer's crl is past its nextUpdate or, without one, maxAgeMs")
    }
}
