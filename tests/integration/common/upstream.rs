//! The upstream app behind the gateway under test: an echo server that reports what it
//! received, with a few paths that answer slowly, upgrade, or send hop-by-hop headers.

use std::net::SocketAddr;
use std::time::Duration;

use super::hex;
use super::serve::serve_each;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Digest;

/// An upstream for tests, HTTP/1.1 and h2c on one port:
/// - `/slow`: answers after 30 s; `/delay/<ms>`: after that many milliseconds;
/// - `/ws`: accepts an upgrade and echoes bytes on the upgraded connection;
/// - `/hop`: answers with hop-by-hop headers that must not reach the client;
/// - anything else: JSON `{method, path, authority, version, headers: [[name, value]…],
///   body_len, body_sha256}` (`authority`: the target's, HTTP/2's `:authority`, else null).
pub async fn echo_upstream() -> SocketAddr {
    serve_each(|tcp| async move {
        let service = hyper::service::service_fn(echo);
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .await;
    })
    .await
}

async fn echo(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"delayed"))));
    }
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Ok(Response::new(Full::new(Bytes::from_static(b"late"))));
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let (mut reader, mut writer) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                }
            });
            return Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Full::new(Bytes::new()))
                .unwrap());
        }
        "/hop" => {
            return Ok(Response::builder()
                .header("connection", "x-upstream-secret")
                .header("x-upstream-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-authenticate", "Basic")
                .header("x-app", "kept")
                .body(Full::new(Bytes::from_static(b"hop")))
                .unwrap());
        }
        _ => {}
    }
    let headers: Vec<serde_json::Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            serde_json::json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())])
        })
        .collect();
    let method = request.method().to_string();
    let version = format!("{:?}", request.version());
    let full_path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let authority = request.uri().authority().map(|a| a.to_string());
    let mut hasher = sha2::Sha256::new();
    let mut body_len = 0u64;
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            body_len += data.len() as u64;
            hasher.update(&data);
        }
    }
    let json = serde_json::json!({
        "method": method,
        "path": full_path,
        "authority": authority,
        "version": version,
        "headers": headers,
        "body_len": body_len,
        "body_sha256": hex(&hasher.finalize()),
    });
    Ok(Response::new(Full::new(Bytes::from(json.to_string()))))
}
