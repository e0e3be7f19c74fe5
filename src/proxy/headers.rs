//! Header rewriting on the way through: client-sent certificate headers stripped, hop-by-hop headers removed
//! (RFC 9110 section 7.6.1), path-override headers removed where a path policy applies,
//! `X-Forwarded-*` added.

use std::net::IpAddr;

use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// The header certgate sets for verified clients.
pub(crate) const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Proto` on the mTLS listener.
pub(crate) const HTTPS: HeaderValue = HeaderValue::from_static("https");
/// `X-Forwarded-Proto` on the plain-HTTP listener.
pub(crate) const HTTP: HeaderValue = HeaderValue::from_static("http");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Every hop-by-hop header certgate knows by name (RFC 9110 section 7.6.1), plus `Upgrade`
/// and `TE`, which have rules of their own. A static, not a const: a const array would be
/// built and dropped again at each use.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    TE,
    UPGRADE,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TRANSFER_ENCODING,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRAILER,
];

/// What a header block holds that certgate must remove, found in one pass over its names:
/// most messages hold little or none of it, and only what is there is removed (each removal
/// is a hash lookup).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Found {
    /// A header read as a certificate header of some format (XFCC, RFC 9440, ALB, Azure, the
    /// verdict) in some spelling.
    pub client_cert: bool,
    /// A path-override header (`X-Original-URL`, `X-Rewrite-URL`) in some spelling.
    pub path_override: bool,
    /// Bit `i` set: `HOP_BY_HOP[i]` is present.
    hop_by_hop: u16,
}

impl Found {
    /// Whether any hop-by-hop header (or `Connection`, `TE`, `Upgrade`) is present.
    pub(crate) fn hop_by_hop(self) -> bool {
        self.hop_by_hop != 0
    }

    fn has(self, index: usize) -> bool {
        self.hop_by_hop & (1 << index) != 0
    }
}

/// Looks at every header name once.
pub(crate) fn scan(headers: &HeaderMap) -> Found {
    let mut found = Found::default();
    for name in headers.keys() {
        if let Some(index) = hop_by_hop_index(name) {
            found.hop_by_hop |= 1 << index;
        } else if super::formats::is_client_cert_header(name.as_str()) {
            found.client_cert = true;
        } else if is_path_override(name.as_str()) {
            found.path_override = true;
        }
    }
    found
}

/// `name`'s index in `HOP_BY_HOP`, if it is one of them. Most names are ruled out by their
/// length alone, without comparing them with the nine.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    // te; upgrade, trailer; connection, keep-alive; proxy-connection, transfer-encoding,
    // proxy-authenticate, proxy-authorization.
    if !matches!(name.as_str().len(), 2 | 7 | 10 | 16..=19) {
        return None;
    }
    HOP_BY_HOP.iter().position(|hop| hop == name)
}

/// Removes every path-override header (`X-Original-URL`, `X-Rewrite-URL`; any case, `_` for
/// `-`, any number of copies); returns how many were removed. IIS (URL Rewrite, ARR) and
/// Symfony- or Zend-style frameworks serve the path these name instead of the request's, so
/// on an app whose exclusion paths or authorization rules judged the request's path, a
/// `/public` request could be served as `/admin`.
pub(crate) fn strip_path_override_headers(headers: &mut HeaderMap) -> usize {
    let mut removed = 0;
    while let Some(name) = headers
        .keys()
        .find(|name| is_path_override(name.as_str()))
        .cloned()
    {
        removed += headers.get_all(&name).iter().count();
        headers.remove(&name);
    }
    removed
}

/// Whether `name` (lowercase, as every `HeaderName` is) reads as `x-original-url` or
/// `x-rewrite-url` once `_` is read as `-` (CGI and PHP turn both into the same variable).
/// Compared byte by byte, without allocating: it runs on header names of every request.
fn is_path_override(name: &str) -> bool {
    let name = name.as_bytes();
    let reads_as = |known: &[u8]| {
        name.len() == known.len()
            && name
                .iter()
                .zip(known)
                .all(|(&byte, &expected)| byte == expected || (byte == b'_' && expected == b'-'))
    };
    reads_as(b"x-original-url") || reads_as(b"x-rewrite-url")
}

/// Removes every header that is or would be read as a certificate header of any format
/// (`x-forwarded-client-cert`, RFC 9440, ALB, Azure, the verdict; any case, `_` for `-`, any
/// number of copies), configured or not; returns how many were removed.
pub(crate) fn strip_client_cert_headers(headers: &mut HeaderMap) -> usize {
    let mut removed = 0;
    // Almost every request has none: look before allocating anything.
    while let Some(name) = headers
        .keys()
        .find(|name| super::formats::is_client_cert_header(name.as_str()))
        .cloned()
    {
        removed += headers.get_all(&name).iter().count();
        headers.remove(&name);
    }
    removed
}

/// Cleans a request's trailer section as its header section is cleaned: every certificate
/// header in every spelling, and every hop-by-hop field, `TE` included (a trailer section
/// carries no connection options). Runs only for a trailer frame, never for data; returns how
/// many fields were removed.
pub(crate) fn clean_trailers(trailers: &mut HeaderMap) -> usize {
    let found = scan(trailers);
    let before = trailers.len();
    if found.client_cert {
        strip_client_cert_headers(trailers);
    }
    if found.hop_by_hop() {
        remove_hop_by_hop(trailers, false, found);
        trailers.remove(TE);
    }
    before - trailers.len()
}

/// Whether an HTTP/1.1 request asks for a protocol upgrade (`Connection: upgrade` plus an
/// `Upgrade` header).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, which `found` (what `scan` found in `headers`) says are
/// there; with `keep_upgrade`, `Upgrade` and `Connection: upgrade` stay so the upgrade can be
/// passed through.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, found: Found) {
    if found.has(0) && only_keep_alive(headers) {
        // The usual `Connection: keep-alive`: the `Keep-Alive` header it names goes below
        // with the other hop-by-hop headers, and nothing needs collecting.
        headers.remove(CONNECTION);
    } else if found.has(0) {
        // The headers `Connection` names go too (but `TE`, whose `trailers` value is kept
        // below, and `Upgrade` when it is passed through).
        let named: Vec<HeaderValue> = match headers.entry(CONNECTION) {
            http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
            http::header::Entry::Vacant(_) => Vec::new(),
        };
        for token in tokens(&named) {
            let kept = token.eq_ignore_ascii_case("te")
                || (keep_upgrade && token.eq_ignore_ascii_case("upgrade"));
            if !kept {
                headers.remove(token);
            }
        }
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate().skip(3) {
        if found.has(index) {
            headers.remove(name);
        }
    }
    // `TE: trailers` is what gRPC needs end to end; any other TE value is hop-by-hop.
    if found.has(1)
        && !headers
            .get_all(TE)
            .iter()
            .all(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(TE);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else if found.has(2) {
        headers.remove(UPGRADE);
    }
}

/// Whether every `Connection` value is `keep-alive` alone.
fn only_keep_alive(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .all(|value| value.as_bytes().eq_ignore_ascii_case(b"keep-alive"))
}

/// The client address as an `X-Forwarded-For` element; made once per connection.
pub(crate) fn forwarded_for(client: IpAddr) -> HeaderValue {
    // An IP address is always a valid header value; the fallback is never used.
    HeaderValue::try_from(client.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Appends the client (from `forwarded_for`) to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &HeaderValue,
    authority: &HeaderValue,
) {
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter();
    let value = match prior.next() {
        None => client.clone(),
        Some(first) => {
            let mut value = first.as_bytes().to_vec();
            for next in prior.chain(std::iter::once(client)) {
                value.extend_from_slice(b", ");
                value.extend_from_slice(next.as_bytes());
            }
            // Every part was a valid header value, and so is their join.
            HeaderValue::from_bytes(&value).unwrap_or_else(|_| client.clone())
        }
    };
    headers.insert(X_FORWARDED_FOR, value);
    headers.insert(X_FORWARDED_PROTO, proto.clone());
    headers.insert(X_FORWARDED_HOST, authority.clone());
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    tokens(headers.get_all(CONNECTION))
}

/// The comma-separated tokens of `Connection` values.
fn tokens<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> impl Iterator<Item = &'a str> {
    values
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn scan_finds_what_must_go_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert("x-app", HeaderValue::from_static("1"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        let found = scan(&headers);
        assert!(!found.client_cert && !found.hop_by_hop());
        headers.insert("X_Forwarded_Client_Cert", HeaderValue::from_static("x"));
        assert!(scan(&headers).client_cert);
        for name in [
            "te",
            "connection",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "trailer",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("x"));
            assert!(scan(&headers).hop_by_hop(), "{name}");
        }
        // Every one of them gets past the length check, and nothing of those lengths that is
        // not one of them is taken for one.
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(index), "{name}");
        }
        for name in [
            "ab",
            "trailed",
            "user-agent",
            "x-forwarded-host",
            "x-forwarded-proto",
        ] {
            let name = HeaderName::from_static(name);
            assert_eq!(hop_by_hop_index(&name), None, "{name}");
        }
    }

    #[test]
    fn path_override_headers_are_found_and_stripped_in_every_spelling() {
        let mut headers = HeaderMap::new();
        headers.insert("x-app", HeaderValue::from_static("1"));
        headers.insert("x-original-urls", HeaderValue::from_static("keep"));
        headers.insert("x-rewrite", HeaderValue::from_static("keep"));
        assert!(!scan(&headers).path_override);
        for name in [
            "X-Original-URL",
            "x_original_url",
            "x-original_url",
            "X-Rewrite-URL",
            "x_rewrite_url",
        ] {
            headers.append(
                HeaderName::try_from(name).unwrap(),
                HeaderValue::from_static("/admin"),
            );
        }
        headers.append("x-original-url", HeaderValue::from_static("/admin"));
        assert!(scan(&headers).path_override);
        assert_eq!(strip_path_override_headers(&mut headers), 6);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-app", "x-original-urls", "x-rewrite"]);
    }

    #[test]
    fn trailers_lose_certificate_and_hop_by_hop_fields() {
        let mut trailers = HeaderMap::new();
        trailers.append("grpc-status", HeaderValue::from_static("0"));
        trailers.append(
            "x_forwarded_client_cert",
            HeaderValue::from_static("Hash=f"),
        );
        trailers.append("client-cert", HeaderValue::from_static(":Zm9v:"));
        trailers.append("x-client-verify", HeaderValue::from_static("SUCCESS"));
        trailers.append("x-amzn-mtls-clientcert", HeaderValue::from_static("f"));
        trailers.append(CONNECTION, HeaderValue::from_static("x-named"));
        trailers.append("x-named", HeaderValue::from_static("1"));
        trailers.append(TE, HeaderValue::from_static("trailers"));
        trailers.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(clean_trailers(&mut trailers), 8);
        assert_eq!(
            trailers.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["grpc-status"]
        );
        assert_eq!(clean_trailers(&mut trailers), 0);
    }

    #[test]
    fn every_xfcc_spelling_is_stripped() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-client-cert", HeaderValue::from_static("a"));
        headers.append("x-forwarded-client-cert", HeaderValue::from_static("b"));
        headers.append("x_forwarded_client_cert", HeaderValue::from_static("c"));
        headers.append("x-forwarded-client_cert", HeaderValue::from_static("d"));
        headers.append("x-forwarded-client-certs", HeaderValue::from_static("keep"));
        assert_eq!(strip_client_cert_headers(&mut headers), 4);
        assert_eq!(headers.len(), 1);
    }

    /// The names left once `remove_hop_by_hop` has cleaned `headers` as a proxy does.
    fn left_after_removal(headers: &mut HeaderMap) -> Vec<String> {
        let found = scan(headers);
        remove_hop_by_hop(headers, false, found);
        headers.keys().map(|k| k.as_str().to_owned()).collect()
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("gzip"));
        headers.insert("x-app", HeaderValue::from_static("1"));
        assert_eq!(left_after_removal(&mut headers), ["x-app"]);
    }

    #[test]
    fn keep_alive_alone_goes_with_its_header_and_a_second_value_still_counts() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("Keep-Alive"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-app", HeaderValue::from_static("1"));
        assert_eq!(left_after_removal(&mut headers), ["x-app"]);
        headers.append(CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(CONNECTION, HeaderValue::from_static("x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        assert_eq!(left_after_removal(&mut headers), ["x-app"]);
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut headers = HeaderMap::new();
        headers.insert(TE, HeaderValue::from_static("trailers"));
        let found = scan(&headers);
        remove_hop_by_hop(&mut headers, false, found);
        assert_eq!(
            headers.get(TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
    }
}
