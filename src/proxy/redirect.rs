//! The plain-HTTP listener's answer for an app that is not `allowInsecure`: `301` to the same
//! host, path and query on `https://`, with the mTLS listener's port unless it is 443. The
//! `Location` is built from the validated host, never from the raw `Host` bytes.

use http::header::{CACHE_CONTROL, HOST, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};

use super::body::ProxyBody;
use super::error::plain_response;
use crate::tls::sni::authority_host;

/// Where the redirects of a plain-HTTP connection point: the mTLS listener's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Redirect {
    /// Written after the host, `None` for 443 (the scheme's default).
    port: Option<u16>,
}

/// The HTTPS port a URL leaves out.
const HTTPS_DEFAULT_PORT: u16 = 443;

impl Redirect {
    /// Redirects to `https_port` (the port the mTLS listener is bound to).
    pub(crate) fn to_port(https_port: u16) -> Self {
        Self {
            port: (https_port != HTTPS_DEFAULT_PORT).then_some(https_port),
        }
    }

    /// The `301` for `request`; a request whose authority is not a host (refused with 400
    /// before it gets here) is answered with 400 all the same.
    pub(crate) fn respond<B>(&self, request: &Request<B>) -> Response<ProxyBody> {
        match self.location(request) {
            Some(location) => {
                let mut response =
                    plain_response(StatusCode::MOVED_PERMANENTLY, "moved to https\n");
                response.headers_mut().insert(LOCATION, location);
                response
                    .headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            None => plain_response(StatusCode::BAD_REQUEST, "bad request\n"),
        }
    }

    /// `https://<host>[:<port>]<path>[?<query>]`.
    fn location<B>(&self, request: &Request<B>) -> Option<HeaderValue> {
        // The plain listener checked the authority (one `Host`, agreeing with the target)
        // before routing the request here; its host is checked again, as it is written out.
        let authority = match request.headers().get(HOST) {
            Some(host) => host.as_bytes(),
            None => request.uri().authority()?.as_str().as_bytes(),
        };
        let host = authority_host(authority)?;
        // An asterisk-form target (`OPTIONS *`) names no resource: its redirect is the root.
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        let target = if target.starts_with('/') { target } else { "/" };
        let mut location = String::with_capacity(16 + host.len() + target.len());
        location.push_str("https://");
        // `authority_host` took the brackets off an IPv6 literal.
        if host.contains(':') {
            location.push('[');
            location.push_str(host);
            location.push(']');
        } else {
            location.push_str(host);
        }
        if let Some(port) = self.port {
            location.push(':');
            location.push_str(itoa::Buffer::new().format(port));
        }
        location.push_str(target);
        // The host is DNS labels or an IP literal and the target was parsed by `http::Uri`:
        // no byte here is refused in a header value.
        HeaderValue::from_str(&location).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

    use super::*;

    fn location(port: u16, host: &str, target: &str) -> Option<String> {
        let request = Request::get(target).header("host", host).body(()).unwrap();
        Redirect::to_port(port)
            .location(&request)
            .map(|value| value.to_str().unwrap().to_owned())
    }

    #[test]
    fn the_location_keeps_host_path_and_query_and_drops_port_443() {
        assert_eq!(
            location(443, "app.example.com:8080", "/a/b?x=1&y=%20").as_deref(),
            Some("https://app.example.com/a/b?x=1&y=%20")
        );
        assert_eq!(
            location(8443, "app.example.com", "/").as_deref(),
            Some("https://app.example.com:8443/")
        );
        assert_eq!(
            location(8443, "[::1]:8080", "/p").as_deref(),
            Some("https://[::1]:8443/p")
        );
        assert_eq!(
            location(443, "127.0.0.1", "*").as_deref(),
            Some("https://127.0.0.1/")
        );
    }

    #[test]
    fn a_hostile_host_makes_no_location() {
        for host in ["a b", "evil.com/x", "user@host", "host:0", "a,b", ""] {
            assert_eq!(location(443, host, "/"), None, "{host:?}");
        }
    }
}
