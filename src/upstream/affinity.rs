//! Sticky sessions (`ingress.stickySessions.affinity: sticky`): the cookie `COOKIE` names the
//! endpoint a client is pinned to, by an opaque value: the first 8 bytes, in hex, of
//! SHA-256 over a key, the group's name and the endpoint's address. The key is derived from
//! the app's server private key, so every replica serving the app with the same certificate
//! gives an endpoint the same value, and nobody without the key learns an address from it.
//!
//! A request carrying a value that names an endpoint of the app (of its label host's group,
//! for a label host) that is in its group's set and not ejected goes to that endpoint,
//! whatever the weights say; any other request is balanced as usual, and its response sets
//! the cookie to the endpoint that answered it (so does the response of a pinned request
//! that was sent again to another endpoint).

use http::HeaderMap;
use http::header::{COOKIE as COOKIE_HEADER, HeaderValue, SET_COOKIE};
use hyper::Response;
use sha2::{Digest as _, Sha256};

/// The cookie's name.
pub(crate) const COOKIE: &str = "certgate-affinity";

/// The endpoint that answered a request of a sticky app, kept in its response's extensions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Served(pub u64);

/// The key of an app's cookie values, from its server private key (DER).
pub(crate) fn key(server_key: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"certgate-affinity\0");
    hash.update(server_key);
    hash.finalize().into()
}

/// The cookie value of the endpoint at `endpoint` (its label) of group `group`.
pub(super) fn value(key: &[u8; 32], group: &str, endpoint: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(key);
    hash.update(group.as_bytes());
    hash.update([0]);
    hash.update(endpoint.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The value of the request's `COOKIE` cookie, when it has one that can be a value.
pub(super) fn requested(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| {
            let value = value.trim_matches('"');
            (value.len() == 16)
                .then(|| u64::from_str_radix(value, 16).ok())
                .flatten()
        })
}

/// Sets the cookie on `response` to the endpoint that answered it, unless the request's
/// cookie (`requested`) named that one already.
pub(super) fn answer<B>(response: &mut Response<B>, requested: Option<u64>) {
    let Some(Served(served)) = response.extensions_mut().remove::<Served>() else {
        return;
    };
    if requested == Some(served) {
        return;
    }
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{COOKIE}={served:016x}; Path=/; HttpOnly; Secure; SameSite=Lax"
    )) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_read_among_other_cookies_and_only_in_its_form() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE_HEADER, HeaderValue::from_static("a=1; b=2"));
        headers.append(
            COOKIE_HEADER,
            HeaderValue::from_static("x=y; certgate-affinity=00000000000000ff; z=1"),
        );
        assert_eq!(requested(&headers), Some(255));
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE_HEADER,
            HeaderValue::from_static("certgate-affinity=10.0.0.5"),
        );
        assert_eq!(requested(&headers), None);
        assert_eq!(requested(&HeaderMap::new()), None);
    }

    #[test]
    fn values_differ_by_group_endpoint_and_key() {
        let key = key(b"one");
        let a = value(&key, "latest", "10.0.0.5:80");
        assert_eq!(a, value(&key, "latest", "10.0.0.5:80"));
        assert_ne!(a, value(&key, "api--v1", "10.0.0.5:80"));
        assert_ne!(a, value(&key, "latest", "10.0.0.6:80"));
        assert_ne!(a, value(&super::key(b"two"), "latest", "10.0.0.5:80"));
    }

    #[test]
    fn a_response_sets_the_cookie_unless_the_request_named_its_endpoint() {
        let mut response = Response::new(());
        response.extensions_mut().insert(Served(0xab));
        answer(&mut response, Some(0xab));
        assert!(response.headers().get(SET_COOKIE).is_none());
        response.extensions_mut().insert(Served(0xab));
        answer(&mut response, Some(1));
        assert_eq!(
            response.headers()[SET_COOKIE],
            "certgate-affinity=00000000000000ab; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
    }
}
