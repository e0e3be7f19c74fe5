//! `limits.maxRequestHeaderBytes` and `limits.maxRequestHeaders` for both HTTP versions, each
//! refusal answered 431, logged and counted. HTTP/1.1 heads are refused by hyper while it
//! parses them (it answers 431 and closes); this module logs and counts those from the
//! connection's end. HTTP/2 header blocks up to twice the byte limit are decoded and handed to
//! the service, which answers 431 on the stream itself, leaving the connection open.

use http::Request;

use super::error::ProxyError;
use crate::settings::Limits;

/// HPACK's per-field overhead in a header list's size (RFC 9113 section 6.5.2).
const FIELD_OVERHEAD: usize = 32;

/// How far past `maxRequestHeaderBytes` the HTTP/2 layer lets a header block through to the
/// service. A block within it gets a 431 on its stream from certgate; a larger one is refused
/// by the HTTP/2 layer (431 and a stream reset when it can still decode it, else a connection
/// error, since HPACK state cannot be kept without decoding).
pub(crate) const HTTP2_DECODE_FACTOR: usize = 2;

/// The `SETTINGS_MAX_HEADER_LIST_SIZE` certgate announces and enforces at the HTTP/2 layer.
pub(crate) fn http2_header_list_limit(limits: &Limits) -> u32 {
    let bytes = limits
        .max_request_header_bytes
        .saturating_mul(HTTP2_DECODE_FACTOR);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// 431 for an HTTP/2 request over either limit. Only lengths are added up: nothing is copied.
pub(crate) fn check_http2<B>(request: &Request<B>, limits: &Limits) -> Result<(), ProxyError> {
    let headers = request.headers();
    if headers.len() > limits.max_request_headers {
        return Err(ProxyError::HeadersTooLarge);
    }
    let uri = request.uri();
    let pseudo = request.method().as_str().len()
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, str::len)
        + 4 * FIELD_OVERHEAD;
    let size = headers.iter().fold(pseudo, |size, (name, value)| {
        size + name.as_str().len() + value.len() + FIELD_OVERHEAD
    });
    if size > limits.max_request_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    Ok(())
}

/// Whether `error`, what ended a connection, is hyper refusing an HTTP/1.1 request head over
/// the limits (it answered 431 and closed): that request never reached a service.
pub(crate) fn refused_head(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_parse_too_large)
}
