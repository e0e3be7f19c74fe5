//! What an established connection may do, decided before any request is read: the app's
//! policy judged again where the handshake's verifier did not decide, then revocation beyond
//! `crlFiles` (docs/revocation.md), for full and resumed handshakes alike.

use std::sync::Arc;

use rustls::ServerConnection;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::apps::App;
use crate::config::AppConfig;
use crate::revocation::Standing;
use crate::settings::{ClientCertMode, RejectWith};
use crate::tls::client_policy::{ClientPolicy, Refusal, TrustSource};

/// The verdict on a connection.
#[derive(Debug)]
pub(super) struct Verdict {
    /// Why its certificate (or the lack of one) is refused, if it is.
    pub refusal: Option<Box<Refusal>>,
    /// Its standing with the app's revocation sources, once admitted by them: a revocation
    /// learned while it is open refuses it.
    pub standing: Option<Arc<Standing>>,
    /// What admitted its certificate, when it presented one that may be served.
    pub trust: Option<TrustSource>,
}

/// The chain the client presented, when the app asks for one: a certificate an `ignore` app
/// did not ask for is never used, whatever a session holds.
pub(super) fn presented<'a>(
    app: &App,
    session: &'a ServerConnection,
) -> Option<&'a [CertificateDer<'static>]> {
    session
        .peer_certificates()
        .filter(|_| app.config.mode != ClientCertMode::Ignore)
}

/// Judges `chain` under `app`'s policy where the verifier did not (`trust` is what the
/// verifier recorded, if it passed the certificate), then asks the app's revocation sources
/// about it.
pub(super) async fn decide(
    app: &App,
    chain: Option<&[CertificateDer<'static>]>,
    resumed: bool,
    trust: Option<TrustSource>,
) -> Verdict {
    let (refusal, trust) = match judge(&app.config, app.policy.as_ref(), chain, resumed, trust) {
        Ok(trust) => (None, trust),
        Err(refusal) => (Some(refusal), None),
    };
    let (Some(revocation), Some(chain), None) = (&app.revocation, chain, &refusal) else {
        return Verdict {
            refusal,
            standing: None,
            trust,
        };
    };
    // Read before the check, so that a revocation learned during it is not missed.
    let generation = revocation.generation();
    match revocation.admit(chain).await {
        Ok(path) => Verdict {
            refusal: None,
            standing: Some(revocation.watch(path, generation)),
            trust,
        },
        Err(refused) => {
            let leaf = chain.first().map_or(&[][..], |leaf| leaf.as_ref());
            Verdict {
                refusal: Some(Box::new(refused.to_policy(leaf))),
                standing: None,
                trust: None,
            }
        }
    }
}

/// The app's certificate policy run again once the handshake is done, where the verifier did
/// not decide: on a resumed session (rustls resumes without asking the verifier, so the
/// session is judged under the policy in force now) and on every connection of a
/// `rejectWith: "http"` app (whose verifier lets every certificate through). A `require`
/// app without exclusion paths refuses a session that carries no certificate. What admitted
/// the certificate when it may be served (`None`: no certificate), or why it may not.
fn judge(
    app: &AppConfig,
    policy: Option<&Arc<ClientPolicy>>,
    chain: Option<&[CertificateDer<'static>]>,
    resumed: bool,
    handshake_trust: Option<TrustSource>,
) -> Result<Option<TrustSource>, Box<Refusal>> {
    let verifier_decided = app.reject_with != RejectWith::Http && !resumed;
    match chain.and_then(|chain| chain.split_first()) {
        Some((leaf, intermediates)) => {
            // An `ignore` app has no policy: a certificate it did not ask for is never used.
            let Some(policy) = policy else {
                return Ok(None);
            };
            match handshake_trust.filter(|_| verifier_decided) {
                Some(trust) => Ok(Some(trust)),
                // Judged again; or the verifier left no record, and the policy decides here
                // rather than guess where the certificate's trust came from.
                None => policy
                    .evaluate(leaf, intermediates, UnixTime::now())
                    .map(|passed| Some(passed.trust)),
            }
        }
        // With exclusion paths a missing certificate is judged per request (proxy::admission).
        None if !verifier_decided
            && app.mode == ClientCertMode::Require
            && app.request_policy.exclusion_paths.is_empty() =>
        {
            Err(Box::new(Refusal::no_certificate()))
        }
        None => Ok(None),
    }
}
