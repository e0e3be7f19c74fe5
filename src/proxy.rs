//! The per-connection HTTP service: check the request's authority against the connection's
//! app (400/421), strip client-sent XFCC and hop-by-hop headers, add `X-Forwarded-*` and the
//! connection's XFCC, and stream the request to the app and the response back.

pub mod error;
pub mod headers;
pub mod upstream;
pub mod xfcc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use self::error::ProxyError;
use crate::apps::{App, Apps};
use crate::config::Transport;
use crate::identity::ClientIdentity;
use crate::metrics::ActiveConnection;
use crate::server::Shared;
use crate::tls::sni::authority_host;

/// The body of every response certgate sends downstream.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What a connection knows once its handshake is done; shared by all its requests.
#[derive(Debug)]
pub struct ConnectionContext {
    /// The app chosen by SNI.
    pub app: Arc<App>,
    /// The apps this connection was accepted under, for the authority check.
    pub apps: Arc<Apps>,
    /// The server's shared state (metrics, drain).
    pub shared: Arc<Shared>,
    /// The connection's slot under `limits.maxConnections`, held by upgraded streams too.
    pub permit: Arc<OwnedSemaphorePermit>,
    /// Keeps the connection counted in `certgate_connections_active`.
    pub active: ActiveConnection,
    /// The downstream client's address.
    pub client_addr: SocketAddr,
    /// The normalized SNI, if any.
    pub sni: Option<String>,
    /// The verified client, if a certificate was presented.
    pub identity: Option<ClientIdentity>,
    /// Notified when the connection must close after the current response.
    pub close: Notify,
    /// Requests being served right now (for the idle timeout).
    pub in_flight: AtomicUsize,
    /// When the connection started; `last_active_ms` counts from here.
    pub started: Instant,
    /// Milliseconds after `started` when a request last started or finished.
    pub last_active_ms: AtomicU64,
}

impl ConnectionContext {
    fn touch(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(elapsed, Ordering::Relaxed);
    }

    /// How long the connection has had no request in flight, or `None` while one is.
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = std::time::Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    conn: Arc<ConnectionContext>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let started = Instant::now();
    conn.in_flight.fetch_add(1, Ordering::Relaxed);
    conn.touch();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = match forward(&conn, request).await {
        Ok(response) => response,
        Err(error) => {
            if matches!(
                error,
                ProxyError::Upstream { .. } | ProxyError::UpstreamTimeout
            ) {
                tracing::warn!(
                    app = %conn.app.config.name,
                    upstream = %conn.app.config.upstream,
                    error = %crate::error_chain(&error),
                    "upstream request failed"
                );
            }
            error.into_response()
        }
    };
    conn.touch();
    conn.in_flight.fetch_sub(1, Ordering::Relaxed);
    let elapsed = started.elapsed();
    conn.shared.metrics.request_done(
        &conn.app.config.name,
        conn.identity.is_some(),
        response.status().as_u16(),
        elapsed.as_secs_f64(),
    );
    tracing::info!(
        client.addr = %conn.client_addr,
        sni = conn.sni.as_deref().unwrap_or(""),
        app = %conn.app.config.name,
        client.hash = conn.identity.as_ref().map_or("", |id| id.hash.as_str()),
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream = %conn.app.config.upstream,
        "request"
    );
    Ok(response)
}

async fn forward(
    conn: &ConnectionContext,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if conn.shared.is_draining() {
        conn.close.notify_one();
        return Err(ProxyError::Draining);
    }
    if let Some(identity) = &conn.identity {
        if identity.expired_at(unix_now()) {
            conn.close.notify_one();
            return Err(ProxyError::CertificateExpired);
        }
    }
    let authority = request_authority(&request)?;
    let host = authority_host(
        authority
            .to_str()
            .map_err(|_| bad("authority is not text"))?,
    )
    .ok_or(bad("authority is not a host"))?;
    if conn.apps.resolve_index(Some(&host)) != Some(conn.app.index) {
        return Err(ProxyError::Misdirected);
    }

    let upgrade = request.version() == Version::HTTP_11
        && conn.app.config.upstream.transport == Transport::Http1
        && headers::is_upgrade(request.headers());
    let headers = request.headers_mut();
    let spoofed = headers::strip_xfcc(headers);
    if spoofed > 0 {
        tracing::debug!(client.addr = %conn.client_addr, "removed client-sent x-forwarded-client-cert");
    }
    // Hop-by-hop removal comes before certgate's own headers: a client naming them in
    // `Connection` must not be able to remove them.
    headers::remove_hop_by_hop(headers, upgrade);
    headers::add_forwarded(headers, conn.client_addr.ip(), &authority);
    headers.insert(HOST, authority);
    if let Some(identity) = &conn.identity {
        let value = identity.xfcc.clone().ok_or(ProxyError::XfccTooLarge)?;
        headers.insert(headers::XFCC, value);
    }

    let upstream = &conn.app.config.upstream;
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    *request.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(upstream.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|_| bad("request target"))?;
    *request.version_mut() = match upstream.transport {
        Transport::Http1 => Version::HTTP_11,
        Transport::Http2 => Version::HTTP_2,
    };

    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let mut response = conn.app.upstream.send(request).await?;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match downstream_upgrade {
        Some(downstream) if switching => {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(pipe_upgraded(downstream, upstream, conn.permit.clone()));
        }
        _ => {}
    }
    headers::remove_hop_by_hop(response.headers_mut(), switching && upgrade);
    Ok(response.map(|body| body.boxed()))
}

/// The request's authority: `:authority` (HTTP/2) or the single `Host` header (HTTP/1.1),
/// which must agree with each other and with an absolute-form target (README "What each mode does" (routing)).
fn request_authority(request: &Request<Incoming>) -> Result<HeaderValue, ProxyError> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("several Host headers"));
    }
    let target = request.uri().authority().map(|a| a.as_str());
    match (target, host) {
        (Some(target), Some(host)) if !host.as_bytes().eq_ignore_ascii_case(target.as_bytes()) => {
            Err(bad("Host disagrees with the request target"))
        }
        (_, Some(host)) => Ok(host.clone()),
        (Some(target), None) if request.version() == Version::HTTP_2 => {
            HeaderValue::from_str(target).map_err(|_| bad("authority"))
        }
        _ => Err(bad("missing Host")),
    }
}

/// Pipes an upgraded connection both ways; holding `_permit` keeps it counted (and waited
/// for by the drain) until both sides close.
async fn pipe_upgraded(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _permit: Arc<OwnedSemaphorePermit>,
) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(error = %error, "upgrade failed");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(error = %error, "upgraded connection closed");
    }
}

fn bad(reason: &'static str) -> ProxyError {
    ProxyError::BadRequest { reason }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
