//! The certificate headers, a stage of their own that brackets the rewrite: whatever
//! certificate headers the client sent (any format, any spelling) are removed before it, and
//! the connection's own, made once at the handshake, are set after it:
//! `X-Forwarded-Client-Cert` and the app's other formats for a verified client, and
//! `X-Client-Verify` when the app has the `verdict` format.

use http::HeaderMap;

use super::context::Downstream;
use super::error::ProxyError;
use super::{formats, headers};

/// Removes the certificate headers the client sent (`client_sent`, from the scan of its
/// headers), first, before anything else rewrites the head.
pub(crate) fn remove_client_sent(
    request_headers: &mut HeaderMap,
    client_sent: bool,
    downstream: &Downstream,
) {
    if client_sent {
        let spoofed = headers::strip_client_cert_headers(request_headers);
        tracing::debug!(client.addr = %downstream.addr, spoofed, "removed client-sent certificate headers");
    }
}

/// Sets the connection's certificate headers, last: after hop-by-hop removal, so that a
/// client naming them in `Connection` cannot remove them.
pub(crate) fn set(
    request_headers: &mut HeaderMap,
    downstream: &Downstream,
) -> Result<(), ProxyError> {
    if let Some(client) = &downstream.verified {
        let values = client.headers.as_ref().ok_or(ProxyError::XfccTooLarge)?;
        for (name, value) in values {
            request_headers.insert(name.clone(), value.clone());
        }
    }
    if let Some(verdict) = &downstream.verdict {
        request_headers.insert(formats::CLIENT_VERIFY, verdict.clone());
    }
    Ok(())
}
