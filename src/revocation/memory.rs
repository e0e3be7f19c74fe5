//! What revocation has learned, kept for the whole process rather than for one config
//! generation: the certificates responders reported revoked, the newest CRL of each source,
//! and the count of changes that every open connection's standing follows, so that what any
//! generation learns reaches the open connections of all of them. A generation sees the CRLs
//! remembered by itself and by later ones: a CRL file a reload dropped stops counting.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::crl::Crl;
use super::ocsp::{self, Key};
use super::x509::Cert;
use crate::tls::RevokedAt;

/// Certificates remembered as reported revoked; past it, the oldest is forgotten first.
pub(crate) const REMEMBERED_REVOKED: usize = 16384;
/// CRL sources remembered; past it, a new source is not remembered (its own generation still
/// holds and uses it).
pub(crate) const REMEMBERED_CRLS: usize = 4096;

/// What revocation has learned, shared by every config generation of a server.
#[derive(Debug)]
pub struct Memory {
    /// Bumped whenever a CRL is added or replaced or a responder reports a certificate
    /// revoked, whatever generation learned it, so every open connection is checked again.
    changes: watch::Sender<u64>,
    /// The last value sent on `changes`, read by every request of an open connection.
    generation: AtomicU64,
    /// Every certificate a responder reported revoked, by (issuer key, serial).
    revoked: Mutex<Revoked>,
    /// The newest CRL of each source (file or URL) any generation holds, by issuer (DER of
    /// the name) and source.
    crls: Mutex<Crls>,
    /// The last number given to a generation.
    epochs: AtomicU64,
}

#[derive(Debug, Default)]
struct Crls {
    by_issuer: HashMap<Vec<u8>, HashMap<String, Remembered>>,
    count: usize,
}

/// A CRL and the newest generation (its epoch) that remembered it.
type Remembered = (Arc<Crl>, u64);

#[derive(Debug, Default)]
struct Revoked {
    /// When and why each was revoked, as the responder said.
    keys: HashMap<Key, RevokedAt>,
    order: VecDeque<Key>,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            changes: watch::Sender::new(0),
            generation: AtomicU64::new(0),
            revoked: Mutex::default(),
            crls: Mutex::default(),
            epochs: AtomicU64::new(0),
        }
    }
}

impl Memory {
    /// A number for a config generation that starts, higher than every earlier one's.
    pub(crate) fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Counts changes to what is learned; an open connection checked at one count need not
    /// be checked again until it moves.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Follows the count of changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records a change: every open connection is checked again.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|generation| {
            *generation += 1;
            self.generation.store(*generation, Ordering::Release);
        });
    }

    /// Records that a responder reported the certificate revoked; `false` when it was known.
    pub(crate) fn learn_revoked(&self, cert: &Cert, issuer: &Cert, at: RevokedAt) -> bool {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        let key = ocsp::key(cert, issuer);
        if revoked.keys.insert(key.clone(), at).is_some() {
            return false;
        }
        revoked.order.push_back(key);
        while revoked.order.len() > REMEMBERED_REVOKED {
            if let Some(oldest) = revoked.order.pop_front() {
                revoked.keys.remove(&oldest);
            }
        }
        true
    }

    /// When and why a responder reported the certificate revoked, if one did (revocation is
    /// permanent).
    pub(crate) fn known_revoked(&self, cert: &Cert, issuer: &Cert) -> Option<RevokedAt> {
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.keys.get(&ocsp::key(cert, issuer)).copied()
    }

    /// Keeps `crl` from `source`, as held by the generation of `epoch`, unless the same or a
    /// newer one of its issuer is held from there; `true` when it is new. It counts for a
    /// certificate only once it verifies with the key of that certificate's issuer, like any
    /// other CRL.
    pub(crate) fn remember_crl(&self, source: &str, crl: &Arc<Crl>, epoch: u64) -> bool {
        let mut crls = self.crls.lock().unwrap_or_else(|e| e.into_inner());
        let full = crls.count >= REMEMBERED_CRLS;
        let sources = crls.by_issuer.entry(crl.issuer.clone()).or_default();
        let new = match sources.get_mut(source) {
            Some((held, held_epoch)) if held.same_list(crl) => {
                *held_epoch = (*held_epoch).max(epoch);
                false
            }
            Some((held, _)) => held.this_update <= crl.this_update,
            None => !full,
        };
        let added = new
            && sources
                .insert(source.to_owned(), (crl.clone(), epoch))
                .is_none();
        if added {
            crls.count += 1;
        }
        new
    }

    /// Every CRL from `issuer_subject` (DER of the name) remembered by the generation of
    /// `epoch` or a later one, with its source.
    pub(crate) fn crls_for(&self, issuer_subject: &[u8], epoch: u64) -> Vec<(String, Arc<Crl>)> {
        let crls = self.crls.lock().unwrap_or_else(|e| e.into_inner());
        crls.by_issuer
            .get(issuer_subject)
            .into_iter()
            .flatten()
            .filter(|(_, (_, remembered))| *remembered >= epoch)
            .map(|(source, (crl, _))| (source.clone(), crl.clone()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
    };
    use time::{Duration, OffsetDateTime};

    use super::{Crl, Memory};

    /// A CRL of `issuer` listing `serials`, issued `age` ago.
    fn crl(issuer: &Issuer<'_, KeyPair>, serials: &[u64], age: Duration) -> Arc<Crl> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - age,
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(1_u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: now - Duration::days(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let der = params.signed_by(issuer).unwrap();
        Arc::new(Crl::parse(der.der().as_ref()).unwrap())
    }

    fn ca() -> Issuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Issuer::new(params, KeyPair::generate().unwrap())
    }

    #[test]
    fn a_crl_is_remembered_unless_the_same_or_a_newer_one_of_its_source_is_held() {
        let (memory, ca) = (Memory::default(), ca());
        let first = crl(&ca, &[], Duration::hours(2));
        assert!(memory.remember_crl("ca.crl", &first, 1));
        assert!(
            !memory.remember_crl("ca.crl", &first, 1),
            "the same CRL again"
        );
        let newer = crl(&ca, &[7], Duration::hours(1));
        assert!(memory.remember_crl("ca.crl", &newer, 1));
        let older = crl(&ca, &[], Duration::hours(3));
        assert!(!memory.remember_crl("ca.crl", &older, 1), "an older CRL");
        assert!(
            memory.remember_crl("other.crl", &older, 1),
            "another source"
        );
        let mut held = memory.crls_for(&newer.issuer, 1);
        held.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(held.len(), 2);
        assert!(held[0].1.same_list(&newer));
        assert!(held[1].1.same_list(&older));
        assert!(memory.crls_for(b"another issuer", 1).is_empty());
    }

    #[test]
    fn a_generation_sees_the_crls_remembered_by_itself_and_later_ones() {
        let (memory, ca) = (Memory::default(), ca());
        let (old, new) = (memory.next_epoch(), memory.next_epoch());
        assert!(new > old);
        let dropped = crl(&ca, &[7], Duration::hours(1));
        memory.remember_crl("dropped.crl", &dropped, old);
        let kept = crl(&ca, &[], Duration::hours(1));
        memory.remember_crl("kept.crl", &kept, old);
        // The new generation holds the same `kept.crl`, not `dropped.crl`.
        assert!(!memory.remember_crl("kept.crl", &kept, new));
        let sources = |epoch| {
            let mut sources: Vec<String> = memory
                .crls_for(&kept.issuer, epoch)
                .into_iter()
                .map(|(source, _)| source)
                .collect();
            sources.sort();
            sources
        };
        assert_eq!(sources(old), ["dropped.crl", "kept.crl"]);
        assert_eq!(sources(new), ["kept.crl"]);
    }

    #[test]
    fn a_change_moves_the_count_every_subscriber_follows() {
        let memory = Memory::default();
        let mut changes = memory.subscribe();
        assert_eq!(memory.generation(), 0);
        memory.changed();
        assert_eq!(memory.generation(), 1);
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), 1);
    }
}
