//! One app's revocation checker: the CRLs and OCSP answers it holds, the verdict for a
//! verified chain (bounded by `CHECK_TIMEOUT`, with concurrent lookups of one certificate
//! coalesced), and the verdict from what is held and what the server's `Memory` learned, for
//! open connections.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::Uri;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;

use super::coalesce::{Coalesce, Joined};
use super::crl::{self, CrlStatus, CrlStore, Entry, Origin};
use super::error::{CHECK_TIMEOUT, LoadError, RevocationFailure};
use super::fetch::{self, Fetched, Fetcher};
use super::memory::Memory;
use super::ocsp::{self, OcspError, OcspStatus};
use super::path::{Path, Paths, WithoutCa};
use super::x509::{Cert, unix_now};
use crate::metrics::revocation::RevocationMetrics;
use crate::settings::{OcspMode, OnUnknown, RevocationPolicy};
use crate::tls::{FailureReason, RevokedAt};

/// One app's revocation checker: its CRLs, its OCSP cache and its HTTP client.
#[derive(Debug)]
pub struct Revocation {
    pub(super) app: String,
    pub(super) policy: RevocationPolicy,
    pub(super) uses_crls: bool,
    /// Whether it judges chains after the handshake; `false` when webpki judged them during
    /// the handshake (`crlFiles` alone) and this only watches open connections.
    pub(super) after_handshake: bool,
    /// The roots, and where a chain is checked.
    pub(super) paths: Paths,
    pub(super) crls: CrlStore,
    pub(super) ocsp_cache: ocsp::Cache,
    pub(super) fetcher: Fetcher,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
    pub(super) metrics: OnceLock<RevocationMetrics>,
    pub(super) wake: Arc<Notify>,
    /// What the server learned, whatever generation learned it, and this generation's
    /// epoch there (attached by `start`).
    pub(super) memory: OnceLock<(Arc<Memory>, u64)>,
    /// OCSP lookups in flight, per (issuer, serial).
    ocsp_lookups: Coalesce<ocsp::Key, Result<OcspStatus, Arc<OcspError>>>,
    /// Distribution point fetches in flight, per URL.
    pub(super) crl_fetches: Coalesce<String, ()>,
}

/// What one source said about one certificate.
enum Status {
    Good,
    /// The source, and when and why it says the certificate was revoked.
    Revoked(String, RevokedAt),
    Unknown(String),
}

impl Revocation {
    /// Reads `crl_files` (given as source name and bytes) and the CRLs fetched from
    /// `policy.crl_urls` (in `fetched`); a CRL issued by one of `roots` must verify against it.
    pub fn load(
        app: &str,
        policy: RevocationPolicy,
        roots: &[CertificateDer<'static>],
        without_ca: WithoutCa,
        crl_files: Vec<(String, Vec<u8>)>,
        fetched: &mut Fetched,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Result<Self, LoadError> {
        let uses_crls =
            !crl_files.is_empty() || !policy.crl_urls.is_empty() || policy.crl_from_certificates;
        let revocation = Self::new(app, policy, roots, without_ca, algorithms, uses_crls, true);
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
        for url in &revocation.policy.crl_urls {
            let origin = url.to_string();
            let bytes = fetch::take(fetched, url).map_err(|source| LoadError::Fetch {
                url: origin.clone(),
                source,
            })?;
            let crl = revocation.accept_crl(&origin, &bytes, None, true)?;
            let due = crl::due_after(crl.stale_at(), now, revocation.policy.refresh);
            revocation.crls.insert(Entry {
                source: origin,
                origin: Origin::Url,
                crl: Some(Arc::new(crl)),
                due: Some(due),
            });
        }
        Ok(revocation)
    }

    /// A watcher for an app with `crlFiles` alone, which webpki checks during the handshake:
    /// it judges nothing at the handshake, and refuses an open connection only when a CRL
    /// learned since (by any generation) lists a certificate of its chain. A file a checker
    /// would refuse (wrongly signed by a root, from the future) is left out: webpki judges
    /// it at the handshake, as before.
    pub fn watching(
        app: &str,
        policy: RevocationPolicy,
        roots: &[CertificateDer<'static>],
        without_ca: WithoutCa,
        crl_files: Vec<(String, Vec<u8>)>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        let revocation = Self::new(app, policy, roots, without_ca, algorithms, true, false);
        for (origin, bytes) in crl_files {
            let Ok(crl) = revocation.accept_crl(&origin, &bytes, None, false) else {
                continue;
            };
            revocation.crls.insert(Entry {
                source: origin,
                origin: Origin::File,
                crl: Some(Arc::new(crl)),
                due: None,
            });
        }
        revocation
    }

    fn new(
        app: &str,
        policy: RevocationPolicy,
        roots: &[CertificateDer<'static>],
        without_ca: WithoutCa,
        algorithms: WebPkiSupportedAlgorithms,
        uses_crls: bool,
        after_handshake: bool,
    ) -> Self {
        Self {
            app: app.to_owned(),
            uses_crls,
            after_handshake,
            paths: Paths::new(roots, without_ca, algorithms),
            crls: CrlStore::default(),
            ocsp_cache: ocsp::Cache::default(),
            fetcher: Fetcher::new(),
            algorithms,
            metrics: OnceLock::new(),
            wake: Arc::new(Notify::new()),
            memory: OnceLock::new(),
            ocsp_lookups: Coalesce::default(),
            crl_fetches: Coalesce::default(),
            policy,
        }
    }

    /// Whether it judges chains after the handshake (anything beyond `crlFiles`, or a CRL
    /// file without nextUpdate); `false` for a watcher of `crlFiles` alone.
    pub fn checks_after_handshake(&self) -> bool {
        self.after_handshake
    }

    /// The names (DER) of the CAs this checker can speak for: the trusted roots and the
    /// issuers of the CRLs it holds.
    pub fn issuer_names(&self) -> Vec<Vec<u8>> {
        let roots = self.paths.roots.iter().map(|root| root.subject.clone());
        let crls = self
            .crls
            .entries()
            .into_iter()
            .filter_map(|entry| entry.crl);
        roots.chain(crls.map(|crl| crl.issuer.clone())).collect()
    }

    /// The settings.
    pub fn policy(&self) -> &RevocationPolicy {
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

    /// Decides whether a verified client chain may be served, and where to check it again
    /// while its connection stays open. Never takes longer than `CHECK_TIMEOUT`.
    pub async fn admit(&self, chain: &[CertificateDer<'_>]) -> Result<Path, RevocationFailure> {
        if !self.after_handshake {
            // webpki judged the chain; a path lost since is webpki's to refuse, not this one's.
            return Ok(self.paths.path(chain, &self.policy).unwrap_or(Path::NoCa));
        }
        let (path, verdict) = self.judge(chain).await;
        if let Some(unknown) = verdict? {
            if let Some(metrics) = self.metrics.get() {
                metrics.unknown_allowed();
            }
            tracing::warn!(
                app = %self.app,
                failure = FailureReason::RevocationUnknown.as_str(),
                error = %unknown.detail,
                "revocation status unknown, allowed by onUnknown"
            );
        }
        Ok(path)
    }

    /// The decision for `chain` as a connection would get it after its handshake (for
    /// `certgate explain`); `Ok(true)` when the status is unknown and `onUnknown` allows it.
    pub async fn decide(&self, chain: &[CertificateDer<'_>]) -> Result<bool, RevocationFailure> {
        if !self.after_handshake {
            return Ok(false);
        }
        Ok(self.judge(chain).await.1?.is_some())
    }

    /// The path `chain` takes and its verdict: `Ok(None)` when good, `Ok(Some(unknown))`
    /// when the status is unknown and `onUnknown` allows it.
    async fn judge(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> (Path, Result<Option<RevocationFailure>, RevocationFailure>) {
        let (path, checked) = match self.paths.path(chain, &self.policy) {
            Ok(path) => {
                let checked = tokio::time::timeout(CHECK_TIMEOUT, self.check(&path)).await;
                let checked = checked.unwrap_or_else(|_| {
                    Err(RevocationFailure {
                        reason: FailureReason::RevocationUnknown,
                        detail: "the revocation check timed out".to_owned(),
                    })
                });
                (path, checked)
            }
            Err(refusal) => (Path::NoCa, Err(refusal)),
        };
        let verdict = match checked {
            Ok(()) => Ok(None),
            Err(refusal)
                if refusal.reason == FailureReason::RevocationUnknown
                    && self.policy.on_unknown == OnUnknown::Allow =>
            {
                Ok(Some(refusal))
            }
            Err(refusal) => Err(refusal),
        };
        (path, verdict)
    }

    /// Counts changes to what is held or learned (CRLs added or replaced, revocations
    /// reported by a responder), by any generation; an open connection checked at one count
    /// need not be checked again until it moves.
    pub fn generation(&self) -> u64 {
        self.memory().generation()
    }

    /// What the server learned: the `Memory` attached by `start`, or one of its own for a
    /// checker that serves no connection (`certgate explain`).
    pub(super) fn memory(&self) -> &Arc<Memory> {
        &self.joined().0
    }

    /// This generation's epoch in `memory`.
    pub(super) fn epoch(&self) -> u64 {
        self.joined().1
    }

    fn joined(&self) -> &(Arc<Memory>, u64) {
        self.memory.get_or_init(|| {
            let memory = Arc::new(Memory::default());
            let epoch = memory.next_epoch();
            (memory, epoch)
        })
    }

    /// Records a change to what is held: the open connections of every generation are
    /// checked again.
    pub(super) fn held_changed(&self) {
        self.memory().changed();
    }

    /// Records a CRL added to or replaced in the store: remembered for every generation,
    /// and the open connections of every generation are checked again.
    pub(super) fn crl_changed(&self, source: &str, crl: &Arc<crl::Crl>) {
        self.memory().remember_crl(source, crl, self.epoch());
        self.held_changed();
    }

    /// The verdict for an admitted connection's `path` from what is held and what any
    /// generation learned, without a fetch or a responder request: refused when a CRL now
    /// lists a certificate of it or a responder has since reported one revoked, or (apps
    /// without OCSP) when no CRL vouches for it any more and `onUnknown` refuses.
    pub(super) fn check_held(&self, path: &Path) -> Result<(), RevocationFailure> {
        let Path::Verified(path) = path else {
            return Ok(());
        };
        let verdict = self.paths.certificates(path).and_then(|path| {
            path.windows(2).enumerate().try_for_each(|(index, pair)| {
                let [cert, issuer] = pair else { return Ok(()) };
                verdict(cert, self.held_status(cert, issuer, index == 0))
            })
        });
        match verdict {
            Err(refusal)
                if refusal.reason == FailureReason::RevocationUnknown
                    && (self.policy.on_unknown == OnUnknown::Allow || !self.after_handshake) =>
            {
                Ok(())
            }
            verdict => verdict,
        }
    }

    async fn check(&self, path: &Path) -> Result<(), RevocationFailure> {
        let Path::Verified(path) = path else {
            return Ok(());
        };
        let path = self.paths.certificates(path)?;
        for (index, pair) in path.windows(2).enumerate() {
            let [cert, issuer] = pair else { continue };
            verdict(cert, self.status(cert, issuer, index == 0).await)?;
        }
        Ok(())
    }

    fn asks_ocsp(&self, is_leaf: bool) -> bool {
        match self.policy.ocsp {
            OcspMode::Off => false,
            OcspMode::Leaf => is_leaf,
            OcspMode::Chain => true,
        }
    }

    /// `status` from what is held and learned: a responder that vouched for the certificate
    /// at the handshake is not asked again, only a revocation a responder reported since
    /// counts; the CRLs are this checker's and the newest this generation or a later one
    /// holds.
    fn held_status(&self, cert: &Cert, issuer: &Cert, is_leaf: bool) -> Status {
        let ask_ocsp = self.asks_ocsp(is_leaf);
        let memory = self.memory();
        if ask_ocsp && let Some(revoked) = memory.known_revoked(cert, issuer) {
            return Status::Revoked(self.revoked_by_responder(cert), revoked);
        }
        if !self.uses_crls {
            return Status::Good;
        }
        let mut crls = self.crls.for_issuer(&issuer.subject);
        crls.extend(memory.crls_for(&issuer.subject, self.epoch()));
        match crl::status_among(crls, cert, issuer, unix_now(), &self.algorithms) {
            CrlStatus::Good => Status::Good,
            CrlStatus::Revoked(source, revoked) => {
                Status::Revoked(format!("the crl from {source}"), revoked)
            }
            CrlStatus::Unknown(_) if ask_ocsp => Status::Good,
            CrlStatus::Unknown(cause) => Status::Unknown(cause.to_owned()),
        }
    }

    fn revoked_by_responder(&self, cert: &Cert) -> String {
        let responder = self
            .responder(cert)
            .map_or_else(String::new, |url| format!(" {url}"));
        format!("the ocsp responder{responder}")
    }

    /// Every source that covers `cert`: revoked if any says so, good if any vouches for it.
    async fn status(&self, cert: &Cert, issuer: &Cert, is_leaf: bool) -> Status {
        let ask_ocsp = self.asks_ocsp(is_leaf);
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
                CrlStatus::Revoked(source, revoked) => {
                    return Status::Revoked(format!("the crl from {source}"), revoked);
                }
                CrlStatus::Unknown(cause) => unknown.push(cause.to_owned()),
            }
        }
        if ask_ocsp {
            match self.ocsp_status(cert, issuer).await {
                Ok(OcspStatus::Good) => good = true,
                Ok(OcspStatus::Revoked(revoked)) => {
                    return Status::Revoked(self.revoked_by_responder(cert), revoked);
                }
                Ok(OcspStatus::Unknown) => {
                    unknown.push("the ocsp responder does not know it".to_owned());
                }
                Err(error) => unknown.push(crate::error_chain(&*error)),
            }
        }
        if good {
            Status::Good
        } else {
            Status::Unknown(unknown.join("; "))
        }
    }

    /// The answer for `cert`: a revocation reported before, a cached answer, or one lookup
    /// shared by every connection that asks at the same time.
    async fn ocsp_status(&self, cert: &Cert, issuer: &Cert) -> Result<OcspStatus, Arc<OcspError>> {
        if let Some(revoked) = self.memory().known_revoked(cert, issuer) {
            self.count_ocsp("cache_hit");
            return Ok(OcspStatus::Revoked(revoked));
        }
        if let Some(status) = self.ocsp_cache.get(cert, issuer, unix_now()) {
            self.count_ocsp("cache_hit");
            return Ok(status);
        }
        let url = self
            .responder(cert)
            .ok_or_else(|| Arc::new(OcspError::NoResponder))?;
        let lookup = || self.ask_responder(&url, cert, issuer);
        match self.ocsp_lookups.run(ocsp::key(cert, issuer), lookup).await {
            Joined::Led(status) => status,
            // Answered without a request of its own, as from the cache.
            Joined::Followed(status) => {
                self.count_ocsp("cache_hit");
                status
            }
        }
    }

    async fn ask_responder(
        &self,
        url: &Uri,
        cert: &Cert,
        issuer: &Cert,
    ) -> Result<OcspStatus, Arc<OcspError>> {
        let now = unix_now();
        let started = Instant::now();
        let answer = ocsp::lookup(
            &self.fetcher,
            url,
            cert,
            issuer,
            now,
            self.policy.max_age,
            &self.algorithms,
        )
        .await;
        if let Some(metrics) = self.metrics.get() {
            metrics.ocsp_duration(started.elapsed().as_secs_f64());
        }
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                self.count_ocsp("error");
                return Err(Arc::new(error));
            }
        };
        self.count_ocsp(match answer.status {
            OcspStatus::Good => "good",
            OcspStatus::Revoked(_) => "revoked",
            OcspStatus::Unknown => "unknown",
        });
        // Without a nextUpdate the responder says newer information is always available
        // (RFC 6960 section 4.2.2.1): such answers are not kept.
        if let (Some(until), OcspStatus::Good | OcspStatus::Revoked(_)) =
            (answer.next_update, answer.status)
        {
            self.ocsp_cache.put(cert, issuer, answer.status, until, now);
        }
        // Open connections of a certificate reported revoked are closed, whatever generation
        // they were made in (docs/revocation.md).
        if let OcspStatus::Revoked(revoked) = answer.status
            && self.memory().learn_revoked(cert, issuer, revoked)
        {
            self.held_changed();
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

    pub(super) fn count_ocsp(&self, outcome: &'static str) {
        if let Some(metrics) = self.metrics.get() {
            metrics.ocsp(outcome);
        }
    }
}

/// The refusal, if any, that `status` of `cert` makes.
fn verdict(cert: &Cert, status: Status) -> Result<(), RevocationFailure> {
    match status {
        Status::Good => Ok(()),
        Status::Revoked(source, revoked) => Err(RevocationFailure {
            reason: FailureReason::Revoked,
            detail: format!(
                "{source} lists certificate {} ({}) as revoked {revoked}",
                cert.serial_hex(),
                cert.subject_text()
            ),
        }),
        Status::Unknown(cause) => Err(RevocationFailure {
            reason: FailureReason::RevocationUnknown,
            detail: format!(
                "revocation status of certificate {} ({}) is unknown: {cause}",
                cert.serial_hex(),
                cert.subject_text()
            ),
        }),
    }
}
