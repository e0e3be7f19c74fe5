//! The certificate headers, a stage of their own: whatever certificate headers the client
//! sent (any format, any spelling) are removed, and the connection's own, made once at the
//! handshake, are set: `X-Forwarded-Client-Cert` and the app's other formats for a verified
//! client, and `X-Client-Verify` when the app has the `verdict` format.

use http::HeaderMap;

use super::context::Downstream;
use super::error::ProxyError;
use super::headers;

/// Sets the connection's certificate headers on a request whose own (`client_sent`, from the
/// scan of its headers) were there; last, so that nothing the client sent can remove them.
pub(crate) fn set(
    request_headers: &mut HeaderMap,
    client_sent: bool,
    downstream: &Downstream,
) -> Result<(), ProxyError> {
    if client_sent {
        let spoofed = headers::strip_client_cert_headers(request_headers);
        tracing::debug!(client.addr = %downstream.addr, spoofed, "removed client-sent certificate headers");
    }
    if let Some(client) = &downstream.verified {
        let values = client.headers.as_ref().ok_or(ProxyError::XfccTooLarge)?;
        for (name, value) in values {
            request_headers.insert(name.clone(), value.clone());
        }
    }
    downstream.policy.set_verdict(request_headers);
    Ok(())
}
