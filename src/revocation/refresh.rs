//! Keeping CRLs fresh: distribution points fetched the first time a certificate names them,
//! every fetched source refreshed before its nextUpdate and at least every `refreshMs` by one
//! background task per app, and the CRL gauges set from what is held. Every CRL held is also
//! remembered in the server's `Memory`, for the open connections of other generations.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Uri;
use tokio::sync::Notify;

use super::checker::Revocation;
use super::crl::{self, Crl, CrlError, Entry, Origin};
use super::error::LoadError;
use super::memory::Memory;
use super::x509::{Cert, unix_now};
use crate::metrics::revocation::RevocationMetrics;

impl Revocation {
    /// Joins the server's `memory` (what every generation learns, and the changes every
    /// open connection follows) as part of the generation numbered `epoch` there
    /// (`Memory::next_epoch`), hands it the CRLs loaded with this config, attaches the app's
    /// metrics (a checker's; a watcher of `crlFiles` has none) and starts refreshing fetched
    /// CRLs in the background. Once; later calls do nothing. The refresh task ends when the
    /// config is dropped.
    pub fn start(
        self: &Arc<Self>,
        memory: &Arc<Memory>,
        epoch: u64,
        metrics: impl FnOnce() -> RevocationMetrics,
    ) {
        if self.memory.set((memory.clone(), epoch)).is_err() {
            return;
        }
        let mut learned = false;
        for entry in self.crls.entries() {
            if let Some(crl) = &entry.crl {
                learned |= memory.remember_crl(&entry.source, crl, epoch);
            }
        }
        // The open connections of older generations are checked against these CRLs too.
        if learned {
            memory.changed();
        }
        if !self.after_handshake {
            return;
        }
        let _ = self.metrics.set(metrics());
        self.publish();
        if !self.uses_crls {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh_loop(Arc::downgrade(self), self.wake.clone()));
        }
    }

    /// Fetches the distribution points of `cert` the first time they are seen, once however
    /// many connections need them at the same time; later connections use what the store
    /// holds and the refresh task keeps it fresh.
    pub(super) async fn fetch_distribution_points(&self, cert: &Cert) {
        for url in cert.crl_urls() {
            let origin = url.to_string();
            if self.crls.contains(&origin) {
                continue;
            }
            let fetch = || self.fetch_distribution_point(&url, &origin);
            self.crl_fetches.run(origin.clone(), fetch).await;
        }
    }

    async fn fetch_distribution_point(&self, url: &Uri, origin: &str) {
        // Fetched meanwhile by a lookup that ended just before this one began.
        if self.crls.contains(origin) {
            return;
        }
        let now = unix_now();
        let crl = match self.fetch_crl(url, None).await {
            Ok(crl) => Some(Arc::new(crl)),
            Err(error) => {
                tracing::warn!(app = %self.app, error = %crate::error_chain(&error), "crl fetch failed");
                None
            }
        };
        let due = match &crl {
            Some(crl) => crl::due_after(crl.stale_at(), now, self.policy.refresh),
            None => crl::retry_after(now, self.policy.refresh),
        };
        self.crls.insert(Entry {
            source: origin.to_owned(),
            origin: Origin::DistributionPoint,
            crl: crl.clone(),
            due: Some(due),
        });
        if let Some(crl) = &crl {
            self.crl_changed(origin, crl);
        }
        self.publish();
        self.wake.notify_one();
    }

    /// Fetches every source that is due; a failure keeps the last good CRL.
    pub(super) async fn refresh_due(&self) {
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
                    let due = crl::due_after(crl.stale_at(), unix_now(), self.policy.refresh);
                    let crl = Arc::new(crl);
                    self.crls.update(&entry.source, Some(crl.clone()), due);
                    self.crl_changed(&entry.source, &crl);
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
    /// trusted root must verify against it, none may come from the future, a fetched one
    /// must be current, and a refresh never goes back to an older CRL.
    pub(super) fn accept_crl(
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
        let crl = Crl::parse(bytes)
            .map_err(error)?
            .with_max_age(self.policy.max_age);
        let mut issuers = self
            .paths
            .roots
            .iter()
            .filter(|root| root.subject == crl.issuer);
        let from_root = issuers.clone().next().is_some();
        if from_root && !issuers.any(|root| crl.signed_by(root, &self.algorithms)) {
            return Err(error(CrlError::Signature {
                issuer: crl.issuer_text(),
            }));
        }
        let now = unix_now();
        if crl.is_from_the_future(now) {
            return Err(error(CrlError::Future));
        }
        if fetched && !crl.is_fresh(now) {
            return Err(error(crl.staleness()));
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

    /// Sets the CRL gauges from what the store holds.
    pub(super) fn publish(&self) {
        let Some(metrics) = self.metrics.get() else {
            return;
        };
        let mut earliest: Option<i64> = None;
        for entry in self.crls.entries() {
            let Some(crl) = entry.crl else { continue };
            metrics.crl_held(
                &entry.source,
                seconds(crl.this_update),
                crl.next_update.map(seconds),
            );
            // Without nextUpdate, the CRL stops vouching at thisUpdate + maxAgeMs.
            let stale_at = seconds(crl.stale_at());
            earliest = Some(earliest.map_or(stale_at, |e| e.min(stale_at)));
        }
        if let Some(earliest) = earliest {
            metrics.crl_not_after(earliest);
        }
    }
}

/// Wakes when the earliest source is due (or a new one is added) and refreshes; ends once
/// the app's config is gone.
pub(super) async fn refresh_loop(revocation: Weak<Revocation>, wake: Arc<Notify>) {
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
    use std::time::Duration;

    #[test]
    fn crls_are_refreshed_before_next_update_and_at_least_every_refresh() {
        let now = Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        // Stale in 40 minutes (nextUpdate, or thisUpdate + maxAgeMs): at three quarters of
        // that, before refreshMs.
        let next = now + Duration::from_secs(2400);
        assert_eq!(due_after(next, now, hour), now + Duration::from_secs(1800));
        // A far nextUpdate does not delay the refresh interval.
        assert_eq!(due_after(now + 48 * hour, now, hour), now + hour);
        // Already stale: the refresh interval (a fetch is what can fix it).
        assert_eq!(due_after(now - hour, now, hour), now + hour);
        // Failures retry sooner, but never more often than every second.
        assert_eq!(retry_after(now, hour), now + Duration::from_secs(30));
        assert_eq!(
            retry_after(now, Duration::from_millis(1)),
            now + Duration::from_secs(1)
        );
    }
}
