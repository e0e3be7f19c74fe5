//! The request as the app gets it: its target in the app's form (origin-form for HTTP/1.1,
//! scheme and authority for HTTP/2: the scheme of the app's `upstream`, which the upstream
//! client replaces for a revision of the other one), path-override headers removed where a
//! path policy judged the path, hop-by-hop headers removed (an upgrade kept when both sides
//! speak HTTP/1.1), `Host` and `X-Forwarded-*` set, and the app's HTTP version.

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};

use super::context::Downstream;
use super::error::ProxyError;
use super::headers::{self, Found};
use crate::settings::{Transport, Upstream};

/// Rewrites `request` for `upstream`, with `target` when the app's policy normalized the
/// path; `found` is what a scan of the client's headers found. Returns whether the request
/// asks to upgrade the connection (and keeps its `Upgrade`).
pub(crate) fn request<B>(
    request: &mut Request<B>,
    target: Option<String>,
    authority: HeaderValue,
    upstream: &Upstream,
    found: Found,
    inspects_path: bool,
    downstream: &Downstream,
) -> Result<bool, ProxyError> {
    let original = std::mem::take(request.uri_mut());
    *request.uri_mut() = match upstream.transport {
        Transport::Http1 => origin_form(original, target)?,
        Transport::Http2 => {
            // RFC 9113 §8.3.1: `:scheme` names the app's scheme, `https` over TLS.
            let scheme = match upstream.tls {
                Some(_) => Scheme::HTTPS,
                None => Scheme::HTTP,
            };
            h2c_form(original, target, &authority, scheme)?
        }
    };
    let upgrade = found.hop_by_hop()
        && request.version() == Version::HTTP_11
        && upstream.transport == Transport::Http1
        && headers::is_upgrade(request.headers());
    let headers = request.headers_mut();
    if found.path_override && inspects_path {
        let removed = headers::strip_path_override_headers(headers);
        tracing::debug!(client.addr = %downstream.addr, removed, "removed path-override headers");
    }
    // Hop-by-hop removal comes before certgate's own headers: a client naming them in
    // `Connection` must not be able to remove them.
    if found.hop_by_hop() {
        headers::remove_hop_by_hop(headers, upgrade, found);
    }
    if upstream.transport == Transport::Http2 {
        // RFC 9113 §8.3.1: `:authority` carries the client's authority, and a `Host` that
        // differs from it makes the request malformed. Removed before certgate's own headers
        // are added, so that they stay last.
        headers.remove(HOST);
    }
    headers::add_forwarded(
        headers,
        &downstream.forwarded_for,
        &downstream.forwarded_proto,
        &authority,
    );
    if upstream.transport == Transport::Http1 {
        headers.insert(HOST, authority);
    }
    *request.version_mut() = match upstream.transport {
        Transport::Http1 => Version::HTTP_11,
        Transport::Http2 => Version::HTTP_2,
    };
    Ok(upgrade)
}

/// The target an HTTP/1.1 app gets: origin-form (RFC 9112 §3.2.1), the path and query as the
/// client sent them unless the app's policy normalized the path; `*` stays `*`. A target
/// already in origin-form (nearly every HTTP/1.1 request) is handed on untouched.
fn origin_form(target: Uri, normalized: Option<String>) -> Result<Uri, ProxyError> {
    if let Some(normalized) = normalized {
        let path = PathAndQuery::try_from(normalized).map_err(|_| bad("request target"))?;
        return Ok(Uri::from(path));
    }
    if target.scheme().is_none()
        && target.authority().is_none()
        && target.path_and_query().is_some()
    {
        return Ok(target);
    }
    // Absolute-form (every HTTP/2 request, and HTTP/1.1 clients that send it) keeps only its
    // path and query; authority-form has neither.
    let path = target
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Ok(Uri::from(path))
}

/// The target an HTTP/2 app gets: its scheme (`http` for h2c), the client's authority (which
/// becomes `:authority`; the upstream client connects to the app whatever the URI names) and
/// the path and query as `origin_form` passes them.
fn h2c_form(
    target: Uri,
    normalized: Option<String>,
    authority: &HeaderValue,
    scheme: Scheme,
) -> Result<Uri, ProxyError> {
    let mut parts = origin_form(target, normalized)?.into_parts();
    parts.scheme = Some(scheme);
    parts.authority =
        Some(Authority::try_from(authority.as_bytes()).map_err(|_| bad("authority"))?);
    Uri::from_parts(parts).map_err(|_| bad("request target"))
}

fn bad(reason: &'static str) -> ProxyError {
    ProxyError::BadRequest { reason }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn an_origin_form_target_is_handed_on_without_a_copy() {
        let target: Uri = "/a%2Fb?q=%E2%82%AC".parse().unwrap();
        let bytes = target.path_and_query().unwrap().as_str().as_ptr();
        let forwarded = origin_form(target, None).unwrap();
        assert_eq!(forwarded, "/a%2Fb?q=%E2%82%AC");
        assert_eq!(forwarded.path_and_query().unwrap().as_str().as_ptr(), bytes);
    }

    #[test]
    fn an_absolute_form_target_keeps_only_its_path_and_query_uncopied() {
        let target: Uri = "https://app.example.test:8443/a?b=1".parse().unwrap();
        let bytes = target.path_and_query().unwrap().as_str().as_ptr();
        let forwarded = origin_form(target, None).unwrap();
        assert_eq!(forwarded.to_string(), "/a?b=1");
        assert_eq!(forwarded.path_and_query().unwrap().as_str().as_ptr(), bytes);
    }

    #[test]
    fn an_asterisk_target_stays_an_asterisk() {
        let forwarded = origin_form(Uri::from_static("*"), None).unwrap();
        assert_eq!(forwarded.to_string(), "*");
    }

    #[test]
    fn an_h2c_target_names_the_client_authority() {
        let target: Uri = "/a?b=1".parse().unwrap();
        let authority = HeaderValue::from_static("app.example.test:8443");
        let forwarded = h2c_form(target, None, &authority, Scheme::HTTP).unwrap();
        assert_eq!(forwarded.to_string(), "http://app.example.test:8443/a?b=1");
    }
}
