//! The last stage: the request goes to the app through the app's upstream client, and the
//! response comes back with its hop-by-hop headers removed and its body watched for stalls.
//! An upgrade both sides agreed to (`101 Switching Protocols`) is piped both ways, for as long
//! as the connection's certificate stands and its config has not been replaced for longer
//! than the reload grace.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;

use super::body::ProxyBody;
use super::context::{Lifecycle, Route};
use super::error::ProxyError;
use super::headers;
use super::stall::{self, ResponseBody, StallObserver, StallReport};
use crate::drain::{Close, CloseSignal};
use crate::revocation::Standing;
use crate::upstream::Peer;

/// Sends `request` to the route's app (to its upstream group `group` alone, for a label
/// host) and hands back its response; with `upgrade`, pipes the connection on once the app
/// switches protocols. `peer` receives the group and endpoint the request was sent to;
/// `observer` counts and logs a response body that stalls.
pub(crate) async fn to_app(
    route: &Route,
    lifecycle: &Lifecycle,
    observer: Arc<dyn StallObserver>,
    mut request: Request<Incoming>,
    upgrade: bool,
    group: Option<&str>,
    peer: &mut Option<Peer>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let mut response = route
        .app
        .upstream
        .send(request, headers::clean_trailers, group, peer)
        .await?;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match downstream_upgrade {
        Some(downstream) if switching => {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(pipe_upgraded(
                downstream,
                upstream,
                route.apps.timeouts.idle,
                Piped {
                    _permit: lifecycle.permit.clone(),
                    standing: lifecycle.standing.clone(),
                    close: lifecycle.signals.close.clone(),
                    generation: route.apps.generation,
                },
            ));
        }
        _ => {}
    }
    let found = headers::scan(response.headers());
    if switching && upgrade || found.hop_by_hop() {
        headers::remove_hop_by_hop(response.headers_mut(), switching && upgrade, found);
    }
    let idle = route.apps.timeouts.upstream_idle;
    let report = StallReport {
        observer,
        peer: peer.clone(),
    };
    Ok(response.map(|body| Either::Left(ResponseBody::new(body, idle, report))))
}

/// What an upgraded connection holds and watches while it is piped.
struct Piped {
    /// Keeps it counted (and waited for by the drain) until it closes.
    _permit: Arc<OwnedSemaphorePermit>,
    /// Closes it once a later revocation refuses its client certificate.
    standing: Option<Arc<Standing>>,
    /// Cuts it `timeouts.reloadGraceMs` after a reload replaced its connection's config.
    close: tokio::sync::watch::Receiver<CloseSignal>,
    generation: u64,
}

/// Pipes an upgraded connection both ways until both sides close, it idles out, a later
/// revocation refuses its client certificate, or the grace after a reload that replaced its
/// config is over.
async fn pipe_upgraded(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle: Duration,
    piped: Piped,
) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(error = %error, "upgrade failed");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    let Piped {
        _permit,
        standing,
        mut close,
        generation,
    } = piped;
    // The pipe keeps the standing (and so its re-checks) alive after the connection's HTTP
    // task has handed the stream over and ended.
    let revoked = async {
        match standing.as_ref().map(|standing| standing.refused()) {
            Some(mut refused) => refused.wait().await,
            None => std::future::pending().await,
        }
    };
    let reloaded = async {
        let closes = |signal: &CloseSignal| match signal.closes(generation) {
            Some(Close::Reloaded { grace }) => Some(grace),
            Some(Close::Shutdown) | None => None,
        };
        let grace = match close.wait_for(|signal| closes(signal).is_some()).await {
            Ok(signal) => closes(&signal),
            Err(_) => None,
        };
        match grace {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        piped = stall::pipe(&mut downstream, &mut upstream, idle) => {
            if let Err(error) = piped {
                tracing::debug!(error = %error, "upgraded connection closed");
            }
        }
        refusal = revoked => {
            // Both sides are dropped here, which closes them.
            tracing::warn!(
                failure = refusal.reason.as_str(),
                detail = %refusal.detail,
                "closing upgraded connection, revocation learned after the handshake"
            );
        }
        () = reloaded => {
            tracing::info!("closing upgraded connection, the reload grace is over");
        }
    }
}
