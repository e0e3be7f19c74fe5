//! The request that asks to upgrade an HTTP/1.1 connection to a WebSocket.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::Connection;

impl Connection {
    /// A GET for `authority` + `path` asking for a WebSocket upgrade (RFC 6455's sample key).
    pub fn websocket_get(&self, authority: &str, path: &str) -> Request<Full<Bytes>> {
        let mut request = self.get(authority, path);
        let headers = request.headers_mut();
        headers.insert("connection", "upgrade".parse().unwrap());
        headers.insert("upgrade", "websocket".parse().unwrap());
        headers.insert("sec-websocket-version", "13".parse().unwrap());
        headers.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        request
    }
}
