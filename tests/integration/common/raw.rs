//! Requests with arbitrary targets over HTTP/1.1 (raw bytes on a TLS stream, so no client
//! library tidies the target) and HTTP/2 (hyper's client, which sends `:path` as given).

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ClientOptions, Connection, echo_header, tls_stream};

/// A response read whole.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Lowercase names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo upstream's JSON.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not echo JSON ({}): {:?}", self.status, self.text()))
    }

    /// Every value of a header as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        echo_header(&self.echo(), name)
    }

    /// Asserts certgate answered itself: `status`, `text/plain`, one non-empty line.
    pub fn assert_certgate(&self, status: u16, label: &str) {
        assert_eq!(self.status, status, "{label}: {:?}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{label}: {:?}",
            self.headers
        );
        let text = self.text();
        let line = text.strip_suffix('\n').unwrap_or(&text);
        assert!(
            !line.trim().is_empty() && !line.contains(['\n', '\r']),
            "{label}: body is not one line: {text:?}"
        );
    }
}

/// Sends `method target` for `host` on a new connection: as raw HTTP/1.1 bytes (the target
/// written verbatim, origin or absolute form) or as HTTP/2 with `:path` = `target`.
pub async fn send_target(
    addr: SocketAddr,
    options: &ClientOptions,
    host: &str,
    method: &str,
    target: &str,
) -> RawReply {
    if options.http2 {
        let mut conn = Connection::open(addr, options)
            .await
            .unwrap_or_else(|f| panic!("handshake refused: {}", f.message));
        let request = Request::builder()
            .method(method)
            .uri(format!("https://{host}{target}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = conn
            .send(request)
            .await
            .unwrap_or_else(|f| panic!("{target}: {}", f.message));
        RawReply {
            status: reply.status.as_u16(),
            headers: reply
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: reply.body.to_vec(),
        }
    } else {
        raw_http1(
            addr,
            options,
            &format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await
    }
}

/// Writes `request` as raw bytes over TLS and reads one response (content-length, chunked,
/// or up to the close).
pub async fn raw_http1(addr: SocketAddr, options: &ClientOptions, request: &str) -> RawReply {
    let mut tls = tls_stream(addr, options)
        .await
        .unwrap_or_else(|f| panic!("handshake refused: {}", f.message));
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut data = Vec::new();
    // The request says `Connection: close`, or the test reads one response; reading to the
    // end is bounded by certgate closing the connection after it.
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("read failed: {e}"),
        }
        if complete(&data) {
            break;
        }
    }
    parse(&data)
}

fn head_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n")
}

fn complete(data: &[u8]) -> bool {
    let Some(end) = head_end(data) else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let body = &data[end + 4..];
    if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= length;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

/// One response, head and body (de-chunked), from the bytes read off the connection.
pub fn parse(data: &[u8]) -> RawReply {
    let end = head_end(data).unwrap_or_else(|| panic!("no response head: {data:?}"));
    let head = String::from_utf8(data[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let raw_body = &data[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawReply {
        status,
        headers,
        body,
    }
}

/// The payload of a chunked HTTP/1.1 body.
pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
