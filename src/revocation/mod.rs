//! Revocation that stays fresh (README "Revocation"): CRLs fetched from `crlUrls` and from the
//! distribution points of the certificates seen, refreshed in the background, and OCSP for
//! the leaf or the whole chain. rustls verifiers are synchronous, so this runs right after the
//! handshake, in the connection's own task and before any request is read: a slow responder
//! only ever delays its own connection. Resumed sessions go through it too.

pub(crate) mod crl;
pub(crate) mod fetch;
pub(crate) mod metrics;
pub(crate) mod ocsp;
pub(crate) mod x509;

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use http::Uri;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;

use self::crl::{Crl, CrlError, CrlStatus, CrlStore, Entry, Origin};
use self::fetch::{FetchError, Fetcher};
use self::metrics::RevocationMetrics;
use self::ocsp::{OcspError, OcspStatus};
use self::x509::{Cert, unix_now};
use crate::tls::FailureReason;

/// The longest a connection waits for its revocation verdict; every fetch has its own
/// shorter timeout, so this only bounds a chain of several lookups.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(8);

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

/// Why the revocation sources of an app cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot fetch the CRL at {url}")]
    Fetch { url: String, source: FetchError },
    #[error("the CRL from {origin} cannot be used")]
    Crl { origin: String, source: CrlError },
    #[error("the CRL from {origin} is older than the one already held")]
    Older { origin: String },
}

/// A refused connection: the reason for logs and metrics and what was found.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct Refusal {
    /// `revoked` or `revocation_unknown`.
    pub reason: FailureReason,
    /// What was revoked or why the status is unknown.
    pub detail: String,
}

impl Refusal {
    /// The same refusal in the policy's terms, for a `rejectWith: "http"` answer page.
    pub fn to_policy(&self, leaf: &[u8]) -> crate::tls::policy::Refusal {
        let presented = x509_parser::parse_x509_certificate(leaf)
            .ok()
            .map(|(_, cert)| crate::tls::policy::Presented::of(leaf, &cert));
        let error = match self.reason {
            FailureReason::Revoked => rustls::CertificateError::Revoked,
            _ => rustls::CertificateError::UnknownRevocationStatus,
        };
        crate::tls::policy::Refusal {
            reason: self.reason,
            detail: self.detail.clone(),
            presented,
            error: rustls::Error::InvalidCertificate(error),
        }
    }
}

/// One app's revocation checker: its CRLs, its OCSP cache and its HTTP client.
#[derive(Debug)]
pub struct Revocation {
    app: String,
    policy: Policy,
    uses_crls: bool,
    roots: Vec<Cert>,
    crls: CrlStore,
    ocsp_cache: ocsp::Cache,
    fetcher: Fetcher,
    algorithms: WebPkiSupportedAlgorithms,
    metrics: OnceLock<RevocationMetrics>,
    wake: Arc<Notify>,
    /// Bumped whenever a CRL is added or replaced, so open connections are checked again.
    changes: tokio::sync::watch::Sender<u64>,
}

/// Re-checks an open connection whenever the app's CRLs change; stops with the connection.
#[derive(Debug)]
pub struct Recheck(tokio::task::JoinHandle<()>);

impl Drop for Recheck {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one source said about one certificate.
enum Status {
    Good,
    Revoked(String),
    Unknown(String),
}

impl Revocation {
    /// Reads `crl_files` (given as source name and bytes) and fetches `policy.crl_urls`; a CRL
    /// issued by one of `roots` must verify against it. Blocks while fetching.
    pub fn load(
        app: &str,
        policy: Policy,
        roots: &[CertificateDer<'static>],
        crl_files: Vec<(String, Vec<u8>)>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Result<Self, LoadError> {
        let revocation = Self {
            app: app.to_owned(),
            uses_crls: !crl_files.is_empty()
                || !policy.crl_urls.is_empty()
                || policy.crl_from_certificates,
            roots: roots.iter().filter_map(|der| Cert::parse(der)).collect(),
            crls: CrlStore::default(),
            ocsp_cache: ocsp::Cache::default(),
            fetcher: Fetcher::new(),
            algorithms,
            metrics: OnceLock::new(),
            wake: Arc::new(Notify::new()),
            changes: tokio::sync::watch::Sender::new(0),
            policy,
        };
        for (origin, bytes) in crl_files {
            let crl = revocation.accept_crl(&origin, &bytes, None, false)?;
            revocation.crls.insert(Entry {
                source: origin,
                origin: Origin::File,
                crl: Some(Arc::new(crl)),
                due: None,
            });
        }
        let now = unix_now();
        let urls = revocation.policy.crl_urls.clone();
        for (url, fetched) in urls.iter().zip(fetch::get_all_blocking(&urls)) {
            let origin = url.to_string();
            let bytes = fetched.map_err(|source| LoadError::Fetch {
                url: origin.clone(),
                source,
            })?;
            let crl = revocation.accept_crl(&origin, &bytes, None, true)?;
            let due = crl::due_after(crl.next_update, now, revocation.policy.refresh);
            revocation.crls.insert(Entry {
                source: origin,
                origin: Origin::Url,
                crl: Some(Arc::new(crl)),
                due: Some(due),
            });
        }
        Ok(revocation)
    }

    /// The settings.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// One line for `certgate check`, e.g. `2 CRL, distribution points, OCSP leaf, unknown refused`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} CRL", self.crls.entries().len())];
        if self.policy.crl_from_certificates {
            parts.push("distribution points".to_owned());
        }
        match self.policy.ocsp {
            OcspMode::Off => {}
            OcspMode::Leaf => parts.push("OCSP leaf".to_owned()),
            OcspMode::Chain => parts.push("OCSP chain".to_owned()),
        }
        parts.push(
            match self.policy.on_unknown {
                OnUnknown::Refuse => "unknown refused",
                OnUnknown::Allow => "unknown allowed",
            }
            .to_owned(),
        );
        parts.join(", ")
    }

    /// Attaches the app's metrics and starts refreshing fetched CRLs in the background (once;
    /// later calls do nothing). The refresh task ends when the config is dropped.
    pub fn start(self: &Arc<Self>, metrics: RevocationMetrics) {
        if self.metrics.set(metrics).is_err() {
            return;
        }
        self.publish();
        if !self.uses_crls {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh_loop(Arc::downgrade(self), self.wake.clone()));
        }
    }

    /// Decides whether a verified client chain may be served. Never takes longer than
    /// `CHECK_TIMEOUT`.
    pub async fn admit(&self, chain: &[CertificateDer<'_>]) -> Result<(), Refusal> {
        let verdict = tokio::time::timeout(CHECK_TIMEOUT, self.check(chain))
            .await
            .unwrap_or_else(|_| {
                Err(Refusal {
                    reason: FailureReason::RevocationUnknown,
                    detail: "the revocation check timed out".to_owned(),
                })
            });
        match verdict {
            Err(refusal)
                if refusal.reason == FailureReason::RevocationUnknown
                    && self.policy.on_unknown == OnUnknown::Allow =>
            {
                if let Some(metrics) = self.metrics.get() {
                    metrics.unknown_allowed();
                }
                tracing::warn!(
                    app = %self.app,
                    failure = FailureReason::RevocationUnknown.as_str(),
                    error = %refusal.detail,
                    "revocation status unknown, allowed by onUnknown"
                );
                Ok(())
            }
            verdict => verdict,
        }
    }

    /// Watches an admitted connection: each time the CRLs change, its chain is checked again,
    /// and `refused` runs (once) when it no longer passes, e.g. to close the connection after
    /// its current request.
    pub fn recheck(
        self: &Arc<Self>,
        chain: Vec<CertificateDer<'static>>,
        refused: impl FnOnce(Refusal) + Send + 'static,
    ) -> Recheck {
        let revocation = self.clone();
        let mut changes = self.changes.subscribe();
        Recheck(tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if let Err(refusal) = revocation.admit(&chain).await {
                    refused(refusal);
                    return;
                }
            }
        }))
    }

    /// The decision for `chain` from synchronous code (`certgate explain`), on a thread and
    /// runtime of its own; `Ok(true)` when the status is unknown and `onUnknown` allows it.
    pub fn decide_blocking(&self, chain: &[CertificateDer<'static>]) -> Result<bool, Refusal> {
        let unknown_timeout = || Refusal {
            reason: FailureReason::RevocationUnknown,
            detail: "the revocation check could not run".to_owned(),
        };
        let decided = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|_| unknown_timeout())?;
                    runtime.block_on(async {
                        tokio::time::timeout(CHECK_TIMEOUT, self.check(chain))
                            .await
                            .unwrap_or_else(|_| Err(unknown_timeout()))
                    })
                })
                .join()
        });
        match decided.unwrap_or_else(|_| Err(unknown_timeout())) {
            Ok(()) => Ok(false),
            Err(refusal)
                if refusal.reason == FailureReason::RevocationUnknown
                    && self.policy.on_unknown == OnUnknown::Allow =>
            {
                Ok(true)
            }
            Err(refusal) => Err(refusal),
        }
    }

    async fn check(&self, chain: &[CertificateDer<'_>]) -> Result<(), Refusal> {
        // No path to a trusted root: the certificate was admitted by a pin or allowUntrusted,
        // and there is no CA to ask about it.
        let Some(path) = x509::issuer_path(chain, &self.roots, &self.algorithms) else {
            return Ok(());
        };
        for (index, pair) in path.windows(2).enumerate() {
            let [cert, issuer] = pair else { continue };
            match self.status(cert, issuer, index == 0).await {
                Status::Good => {}
                Status::Revoked(source) => {
                    return Err(Refusal {
                        reason: FailureReason::Revoked,
                        detail: format!(
                            "{source} lists certificate {} ({}) as revoked",
                            cert.serial_hex(),
                            cert.subject_text()
                        ),
                    });
                }
                Status::Unknown(cause) => {
                    return Err(Refusal {
                        reason: FailureReason::RevocationUnknown,
                        detail: format!(
                            "revocation status of certificate {} ({}) is unknown: {cause}",
                            cert.serial_hex(),
                            cert.subject_text()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every source that covers `cert`: revoked if any says so, good if any vouches for it.
    async fn status(&self, cert: &Cert, issuer: &Cert, is_leaf: bool) -> Status {
        let ask_ocsp = match self.policy.ocsp {
            OcspMode::Off => false,
            OcspMode::Leaf => is_leaf,
            OcspMode::Chain => true,
        };
        if !self.uses_crls && !ask_ocsp {
            return Status::Good;
        }
        let mut good = false;
        let mut unknown = Vec::new();
        if self.uses_crls {
            if self.policy.crl_from_certificates {
                self.fetch_distribution_points(cert).await;
            }
            match crl::status(&self.crls, cert, issuer, unix_now(), &self.algorithms) {
                CrlStatus::Good => good = true,
                CrlStatus::Revoked(source) => {
                    return Status::Revoked(format!("the crl from {source}"));
                }
                CrlStatus::Unknown(cause) => unknown.push(cause.to_owned()),
            }
        }
        if ask_ocsp {
            match self.ocsp_status(cert, issuer).await {
                Ok(OcspStatus::Good) => good = true,
                Ok(OcspStatus::Revoked) => {
                    let responder = self
                        .responder(cert)
                        .map_or_else(String::new, |url| format!(" {url}"));
                    return Status::Revoked(format!("the ocsp responder{responder}"));
                }
                Ok(OcspStatus::Unknown) => {
                    unknown.push("the ocsp responder does not know it".to_owned());
                }
                Err(error) => unknown.push(crate::error_chain(&error)),
            }
        }
        if good {
            Status::Good
        } else {
            Status::Unknown(unknown.join("; "))
        }
    }

    async fn ocsp_status(&self, cert: &Cert, issuer: &Cert) -> Result<OcspStatus, OcspError> {
        let now = unix_now();
        if let Some(status) = self.ocsp_cache.get(cert, issuer, now) {
            self.count_ocsp("cache_hit");
            return Ok(status);
        }
        let url = self.responder(cert).ok_or(OcspError::NoResponder)?;
        let started = Instant::now();
        let answer = ocsp::lookup(&self.fetcher, &url, cert, issuer, now, &self.algorithms).await;
        if let Some(metrics) = self.metrics.get() {
            metrics.ocsp_duration(started.elapsed().as_secs_f64());
        }
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                self.count_ocsp("error");
                return Err(error);
            }
        };
        self.count_ocsp(match answer.status {
            OcspStatus::Good => "good",
            OcspStatus::Revoked => "revoked",
            OcspStatus::Unknown => "unknown",
        });
        // Without a nextUpdate the responder says newer information is always available
        // (RFC 6960 section 4.2.2.1): such answers are not kept.
        if let (Some(until), OcspStatus::Good | OcspStatus::Revoked) =
            (answer.next_update, answer.status)
        {
            self.ocsp_cache.put(cert, issuer, answer.status, until, now);
        }
        Ok(answer.status)
    }

    /// The responder asked about `cert`: `ocspResponder`, else the first of its AIA.
    fn responder(&self, cert: &Cert) -> Option<Uri> {
        match &self.policy.ocsp_responder {
            Some(url) => Some(url.clone()),
            None => cert.ocsp_urls().into_iter().next(),
        }
    }

    /// Fetches the distribution points of `cert` the first time they are seen; later
    /// connections use what the store holds and the refresh task keeps it fresh.
    async fn fetch_distribution_points(&self, cert: &Cert) {
        for url in cert.crl_urls() {
            let origin = url.to_string();
            if self.crls.contains(&origin) {
                continue;
            }
            let now = unix_now();
            let crl = match self.fetch_crl(&url, None).await {
                Ok(crl) => Some(Arc::new(crl)),
                Err(error) => {
                    tracing::warn!(app = %self.app, error = %crate::error_chain(&error), "crl fetch failed");
                    None
                }
            };
            let due = match &crl {
                Some(crl) => crl::due_after(crl.next_update, now, self.policy.refresh),
                None => crl::retry_after(now, self.policy.refresh),
            };
            let added = crl.is_some();
            self.crls.insert(Entry {
                source: origin,
                origin: Origin::DistributionPoint,
                crl,
                due: Some(due),
            });
            if added {
                self.changes.send_modify(|generation| *generation += 1);
            }
            self.publish();
            self.wake.notify_one();
        }
    }

    /// Fetches every source that is due; a failure keeps the last good CRL.
    async fn refresh_due(&self) {
        let now = unix_now();
        for entry in self.crls.entries() {
            if entry.origin == Origin::File || entry.due.is_none_or(|due| due > now) {
                continue;
            }
            let Ok(url) = entry.source.parse::<Uri>() else {
                continue;
            };
            match self.fetch_crl(&url, entry.crl.as_deref()).await {
                Ok(crl) => {
                    let due = crl::due_after(crl.next_update, unix_now(), self.policy.refresh);
                    self.crls.update(&entry.source, Some(Arc::new(crl)), due);
                    self.changes.send_modify(|generation| *generation += 1);
                }
                Err(error) => {
                    tracing::warn!(app = %self.app, error = %crate::error_chain(&error), "crl refresh failed, keeping the last good crl");
                    let due = crl::retry_after(unix_now(), self.policy.refresh);
                    self.crls.update(&entry.source, None, due);
                }
            }
        }
        self.publish();
    }

    async fn fetch_crl(&self, url: &Uri, previous: Option<&Crl>) -> Result<Crl, LoadError> {
        let origin = url.to_string();
        let fetched = self
            .fetcher
            .get(url)
            .await
            .map_err(|source| LoadError::Fetch {
                url: origin.clone(),
                source,
            })
            .and_then(|bytes| self.accept_crl(&origin, &bytes, previous, true));
        if let Some(metrics) = self.metrics.get() {
            metrics.crl_fetched(fetched.is_ok());
        }
        fetched
    }

    /// Parses a CRL and checks what can be checked before a chain is seen: a CRL from a
    /// trusted root must verify against it, a fetched one must be current, and a refresh
    /// never goes back to an older CRL.
    fn accept_crl(
        &self,
        origin: &str,
        bytes: &[u8],
        previous: Option<&Crl>,
        fetched: bool,
    ) -> Result<Crl, LoadError> {
        let error = |source| LoadError::Crl {
            origin: origin.to_owned(),
            source,
        };
        let crl = Crl::parse(bytes).map_err(error)?;
        let mut issuers = self.roots.iter().filter(|root| root.subject == crl.issuer);
        let from_root = issuers.clone().next().is_some();
        if from_root && !issuers.any(|root| crl.signed_by(root, &self.algorithms)) {
            return Err(error(CrlError::Signature {
                issuer: crl.issuer_text(),
            }));
        }
        if fetched && !crl.is_fresh(unix_now()) {
            return Err(error(CrlError::Stale));
        }
        if previous.is_some_and(|previous| {
            previous.issuer == crl.issuer && crl.this_update < previous.this_update
        }) {
            return Err(LoadError::Older {
                origin: origin.to_owned(),
            });
        }
        Ok(crl)
    }

    fn count_ocsp(&self, outcome: &'static str) {
        if let Some(metrics) = self.metrics.get() {
            metrics.ocsp(outcome);
        }
    }

    /// Sets the CRL gauges from what the store holds.
    fn publish(&self) {
        let Some(metrics) = self.metrics.get() else {
            return;
        };
        let mut earliest: Option<i64> = None;
        for entry in self.crls.entries() {
            let Some(crl) = entry.crl else { continue };
            let next = crl.next_update.map(seconds);
            metrics.crl_held(&entry.source, seconds(crl.this_update), next);
            if let Some(next) = next {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
        if let Some(earliest) = earliest {
            metrics.crl_not_after(earliest);
        }
    }
}

/// Wakes when the earliest source is due (or a new one is added) and refreshes; ends once
/// the app's config is gone.
async fn refresh_loop(revocation: Weak<Revocation>, wake: Arc<Notify>) {
    loop {
        let wait = {
            let Some(revocation) = revocation.upgrade() else {
                return;
            };
            let refresh = revocation.policy.refresh;
            revocation
                .crls
                .next_due()
                .map_or(refresh, |due| due.saturating_sub(unix_now()))
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => continue,
        }
        let Some(revocation) = revocation.upgrade() else {
            return;
        };
        revocation.refresh_due().await;
    }
}

fn seconds(time: Duration) -> i64 {
    i64::try_from(time.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::crl::{due_after, retry_after};
    use super::x509::trim_serial;
    use std::time::Duration;

    #[test]
    fn crls_are_refreshed_before_next_update_and_at_least_every_refresh() {
        let now = Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        // No nextUpdate: every refresh interval.
        assert_eq!(due_after(None, now, hour), now + hour);
        // nextUpdate in 40 minutes: at three quarters of that, before refreshMs.
        let next = now + Duration::from_secs(2400);
        assert_eq!(
            due_after(Some(next), now, hour),
            now + Duration::from_secs(1800)
        );
        // A far nextUpdate does not delay the refresh interval.
        assert_eq!(due_after(Some(now + 48 * hour), now, hour), now + hour);
        // Already past nextUpdate: the refresh interval (a fetch is what can fix it).
        assert_eq!(due_after(Some(now - hour), now, hour), now + hour);
        // Failures retry sooner, but never more often than every second.
        assert_eq!(retry_after(now, hour), now + Duration::from_secs(30));
        assert_eq!(
            retry_after(now, Duration::from_millis(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn serials_compare_without_leading_zero_bytes() {
        assert_eq!(trim_serial(&[0, 0x80, 1]), vec![0x80, 1]);
        assert_eq!(trim_serial(&[0x12]), vec![0x12]);
        assert_eq!(trim_serial(&[0, 0]), Vec::<u8>::new());
    }
}
