//! The first stage of every request: is the connection still fit to forward it? Not while
//! shutdown drains, not once its client certificate expired or a later revocation covers it;
//! after a reload replaced its config the request still goes, as the connection's last, unless
//! the newest config's `ipSecurityRestrictions` refuse its client address (403).

use std::time::{SystemTime, UNIX_EPOCH};

use super::context::{Downstream, Lifecycle, Route};
use super::error::ProxyError;

/// Refuses the request when the connection must not forward it, and asks the connection to
/// close after this response whenever it must not carry another.
pub(crate) fn connection(
    route: &Route,
    lifecycle: &Lifecycle,
    downstream: &Downstream,
) -> Result<(), ProxyError> {
    if lifecycle.signals.draining.is_draining() {
        lifecycle.close.notify_one();
        return Err(ProxyError::Draining);
    }
    // One atomic load while the connection's config is current. After a reload, a request
    // that still starts here (read before the connection saw the reload) is the last one:
    // it is answered with `Connection: close` (or, over HTTP/2, after GOAWAY).
    if route.apps.is_retired() {
        lifecycle.close.notify_one();
        // A tightened `ipSecurityRestrictions` refuses it now, not at the client's next
        // connection.
        if let Some(Some(restrictions)) = route.app.successor_ip_restrictions.get()
            && let Err(refusal) = restrictions.judge(downstream.addr.ip())
        {
            return Err(ProxyError::IpRestricted { refusal });
        }
    }
    let identity = downstream.identity();
    if identity.is_some_and(|identity| identity.expired_at(unix_now())) {
        lifecycle.close.notify_one();
        return Err(ProxyError::CertificateExpired);
    }
    if lifecycle
        .standing
        .as_ref()
        .is_some_and(|standing| !standing.admits_request())
    {
        lifecycle.close.notify_one();
        return Err(ProxyError::CertificateRevoked);
    }
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
