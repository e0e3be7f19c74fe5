//! What an established connection may do, decided before any request is read: the app's
//! policy judged again where the handshake's verifier did not decide, then revocation beyond
//! `crlFiles` (README "Revocation"), for full and resumed handshakes alike.

use std::sync::Arc;

use rustls::ServerConnection;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::apps::App;
use crate::config::AppConfig;
use crate::identity::ClientIdentity;
use crate::revocation::Standing;
use crate::settings::ClientCertMode;
use crate::tls::policy::{Judged, Refusal};

/// The verdict on a connection.
#[derive(Debug)]
pub(super) struct Verdict {
    /// Why its certificate (or the lack of one) is refused, if it is.
    pub refusal: Option<Box<Refusal>>,
    /// Its certificate as the policy read it, when one passed.
    pub identity: Option<ClientIdentity>,
    /// Its standing with the app's revocation sources, once admitted by them: a revocation
    /// learned while it is open refuses it.
    pub standing: Option<Arc<Standing>>,
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

/// Judges `chain` under `app`'s policy where the verifier did not (`judged` is what it
/// decided, if it was asked), then asks the app's revocation sources about it.
pub(super) async fn decide(
    app: &App,
    chain: Option<&[CertificateDer<'static>]>,
    judged: Option<Judged>,
) -> Verdict {
    let identity = match judge(&app.config, chain, judged) {
        Ok(identity) => identity,
        Err(refusal) => {
            return Verdict {
                refusal: Some(refusal),
                identity: None,
                standing: None,
            };
        }
    };
    let (Some(revocation), Some(chain)) = (&app.config.revocation, chain) else {
        return Verdict {
            refusal: None,
            identity,
            standing: None,
        };
    };
    // Read before the check, so that a revocation learned during it is not missed.
    let generation = revocation.generation();
    match revocation.admit(chain).await {
        Ok(path) => Verdict {
            refusal: None,
            identity,
            standing: Some(revocation.watch(path, generation)),
        },
        Err(refused) => {
            let leaf = chain.first().map_or(&[][..], |leaf| leaf.as_ref());
            Verdict {
                refusal: Some(Box::new(refused.to_policy(leaf))),
                identity: None,
                standing: None,
            }
        }
    }
}

/// The app's certificate policy on the connection's chain: what the handshake's verifier
/// decided when it was asked (a full handshake; under `rejectWith: "http"` it lets a refused
/// certificate through and the refusal is answered here), else the policy in force now (a
/// resumed session: rustls resumes without asking the verifier). A `require` app without
/// exclusion paths refuses a session that carries no certificate. The certificate as the
/// policy read it when it passed.
fn judge(
    app: &AppConfig,
    chain: Option<&[CertificateDer<'static>]>,
    judged: Option<Judged>,
) -> Result<Option<ClientIdentity>, Box<Refusal>> {
    let Some((leaf, intermediates)) = chain.and_then(|chain| chain.split_first()) else {
        // With exclusion paths a missing certificate is judged per request (proxy::admission).
        return if app.mode == ClientCertMode::Require
            && app.request_policy.exclusion_paths.is_empty()
        {
            Err(Box::new(Refusal::no_certificate()))
        } else {
            Ok(None)
        };
    };
    // An `ignore` app has no policy (and `presented` gives it no chain).
    let Some(policy) = &app.policy else {
        return Ok(None);
    };
    match judged {
        Some(Judged::Passed(identity)) => Ok(Some(*identity)),
        Some(Judged::Refused(refusal)) => Err(refusal),
        None => policy
            .evaluate(leaf, intermediates, UnixTime::now())
            .map(|passed| Some(passed.identity)),
    }
}
