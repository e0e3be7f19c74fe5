//! The request's authority: `:authority` (HTTP/2) or the single `Host` header (HTTP/1.1),
//! which must agree with each other and with an absolute-form target, must be a host (DNS
//! labels or an IP literal, optional port), and must belong to the connection's app: 400 for
//! a malformed one, 421 for one another app serves (docs/modes.md "Routing").

use http::header::{HOST, HeaderValue};
use http::{Request, Version};

use super::context::Route;
use super::error::ProxyError;
use crate::tls::sni::{authority_host, normalize};

/// The request's authority, once it is known to be the connection's app's.
pub(crate) fn check<B>(
    request: &Request<B>,
    sni: Option<&str>,
    route: &Route,
) -> Result<HeaderValue, ProxyError> {
    let authority = of(request)?;
    let host = authority_host(authority.as_bytes()).ok_or(bad("authority is not a host"))?;
    // A host equal to the SNI (nearly every request) is the connection's own app without a
    // lookup: the app was chosen by that very name from the same apps.
    let same_as_sni = sni.is_some_and(|sni| {
        host.strip_suffix('.')
            .unwrap_or(host)
            .eq_ignore_ascii_case(sni)
    });
    if same_as_sni || route.apps.resolve_index(Some(&normalize(host))) == Some(route.app.index) {
        Ok(authority)
    } else {
        Err(ProxyError::Misdirected)
    }
}

/// The request's authority as sent (`Host`, or HTTP/2's `:authority`), agreeing with an
/// absolute-form target; not yet known to be a host.
pub(crate) fn of<B>(request: &Request<B>) -> Result<HeaderValue, ProxyError> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("several Host headers"));
    }
    let target = request.uri().authority().map(|a| a.as_str());
    match (target, host) {
        (Some(target), Some(host)) if !host.as_bytes().eq_ignore_ascii_case(target.as_bytes()) => {
            Err(bad("Host disagrees with the request target"))
        }
        (_, Some(host)) => Ok(host.clone()),
        (Some(target), None) if request.version() == Version::HTTP_2 => {
            HeaderValue::from_str(target).map_err(|_| bad("authority"))
        }
        _ => Err(bad("missing Host")),
    }
}

fn bad(reason: &'static str) -> ProxyError {
    ProxyError::BadRequest { reason }
}
