//! The per-connection HTTP service: check the request's authority against the connection's
//! app (400/421) and the app's policy (exclusion paths, authorization, rate limit), strip
//! client-sent certificate and hop-by-hop headers, add `X-Forwarded-*` and the connection's
//! certificate headers, and stream the request to the app and the response back. What does
//! not change between requests (the certificate header values, the client address header, the
//! app's metric handles, which authorization rules the client passes) is made once per
//! connection; a request guard records every request's end.

pub(crate) mod activity;
pub(crate) mod admission;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod context;
pub(crate) mod error;
pub(crate) mod formats;
pub(crate) mod header_limits;
pub(crate) mod headers;
pub(crate) mod refuse;
pub(crate) mod stall;
pub(crate) mod xfcc;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use self::admission::Admission;
use self::body::ProxyBody;
use self::context::ConnectionContext;
use self::error::ProxyError;
use self::stall::{ResponseBody, StallReport};
use crate::access_log::RequestFields;
use crate::drain::{Close, CloseSignal};
use crate::metrics::label::StallReason;
use crate::revocation::Standing;
use crate::settings::Transport;
use crate::tls::sni::{authority_host, normalize};

/// Serves one request; never fails (errors become responses).
pub(crate) async fn handle(
    conn: Arc<ConnectionContext>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let mut guard = RequestGuard::start(conn, &request);
    let head = request.method() == Method::HEAD;
    let forwarded = match &guard.conn.refusal {
        Some(page) => Ok(page.respond(&request)),
        // Boxed: hyper moves this handler's future (into a task of its own for HTTP/2), and
        // with the upstream exchange inline it would be 3.4 KiB to copy each time, not 744 bytes.
        None => Box::pin(forward(&guard.conn, request)).await,
    };
    let response = match forwarded {
        Ok(response) => response,
        Err(error) => {
            guard.outcome = error.outcome();
            // What each error counts or logs besides its access line: one match, so a new
            // error decides it too.
            let upstream_failed = || {
                tracing::warn!(
                    app = %guard.conn.app.config.name,
                    upstream = %guard.conn.app.config.upstream,
                    error = %crate::error_chain(&error),
                    "upstream request failed"
                );
            };
            match &error {
                ProxyError::RequestBodyTimeout => {
                    guard.conn.app.metrics.stalled(StallReason::RequestBodyIdle);
                }
                ProxyError::Denied { rule, .. } => {
                    guard.conn.app.metrics.authorization_denied(rule);
                    guard.rule.clone_from(rule);
                }
                ProxyError::RateLimited { .. } => guard.conn.app.metrics.rate_limited(),
                ProxyError::Upstream { source } => match source.tls_failure() {
                    Some(reason) => {
                        guard.conn.app.metrics.upstream_tls_failed(reason);
                        tracing::warn!(
                            app = %guard.conn.app.config.name,
                            upstream = %guard.conn.app.config.upstream,
                            failure = reason.as_str(),
                            error = %crate::error_chain(&error),
                            "TLS with the upstream failed"
                        );
                    }
                    None => upstream_failed(),
                },
                ProxyError::UpstreamTimeout | ProxyError::UpstreamSaturated => upstream_failed(),
                ProxyError::BadRequest { .. }
                | ProxyError::CertificateRequired
                | ProxyError::CertificateExpired
                | ProxyError::CertificateRevoked
                | ProxyError::Misdirected
                | ProxyError::XfccTooLarge
                | ProxyError::HeadersTooLarge
                | ProxyError::Draining
                | ProxyError::UpstreamRetired => {}
            }
            error.into_response()
        }
    };
    guard.status = Some(response.status());
    // A streamed body keeps the request in flight until it has been sent. certgate's own
    // answer to a HEAD has no content (RFC 9110 section 9.3.2): hyper leaves it out over
    // HTTP/1.1 but would send it over HTTP/2, where clients refuse it as a protocol error.
    let response = response.map(|body| match body {
        Either::Left(streamed) => Either::Left(streamed.in_flight(guard.in_flight.take())),
        Either::Right(_) if head => Either::Right(http_body_util::Full::default()),
        own => own,
    });
    Ok(response)
}

/// Marks a request in flight from its start until it is dropped, and then counts it and writes
/// its access line, however it ended: answered, or abandoned mid-way because the client reset
/// the stream or went away (hyper then drops the handler; status 499, as nginx logs it).
struct RequestGuard {
    conn: Arc<ConnectionContext>,
    /// The request in flight, until the handler ends or its streamed body takes it over.
    in_flight: Option<activity::InFlight>,
    started: Instant,
    /// What the access line needs of the request; `None` when the access log is off.
    logged: Option<(Method, Uri)>,
    /// The status sent, once there is one.
    status: Option<StatusCode>,
    /// The authorization rule that refused the request, if one did.
    rule: String,
    /// Why the request ended early, when it did.
    outcome: Option<&'static str>,
}

/// The status logged and counted for a request the client abandoned.
const CLIENT_ABORTED: u16 = 499;
/// The `outcome` logged for a request the client abandoned.
const CLIENT_ABORTED_OUTCOME: &str = "client_aborted";

impl RequestGuard {
    fn start(conn: Arc<ConnectionContext>, request: &Request<Incoming>) -> Self {
        let in_flight = conn.activity.start(request.version() != Version::HTTP_2);
        let logged = conn
            .apps
            .access_log
            .then(|| (request.method().clone(), request.uri().clone()));
        Self {
            conn,
            in_flight: Some(in_flight),
            started: Instant::now(),
            logged,
            status: None,
            rule: String::new(),
            outcome: None,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let conn = &self.conn;
        self.in_flight.take();
        let elapsed = self.started.elapsed();
        let code = self.status.map_or(CLIENT_ABORTED, |status| status.as_u16());
        conn.app
            .metrics
            .request_done(conn.identity().is_some(), code, elapsed.as_secs_f64());
        let Some((method, uri)) = &self.logged else {
            return;
        };
        let outcome = match self.status {
            Some(_) => self.outcome,
            None => Some(CLIENT_ABORTED_OUTCOME),
        };
        conn.log_request(&RequestFields {
            method: Some(method),
            path: Some(uri.path()),
            status: code,
            rule: Some(&self.rule),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            outcome,
        });
    }
}

async fn forward(
    conn: &Arc<ConnectionContext>,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if conn.signals.draining.is_draining() {
        conn.close.notify_one();
        return Err(ProxyError::Draining);
    }
    // One atomic load while the connection's config is current. After a reload, a request
    // that still starts here (read before the connection saw the reload) is the last one:
    // it is answered with `Connection: close` (or, over HTTP/2, after GOAWAY).
    if conn.apps.is_retired() {
        conn.close.notify_one();
    }
    if let Some(identity) = conn.identity()
        && identity.expired_at(unix_now())
    {
        conn.close.notify_one();
        return Err(ProxyError::CertificateExpired);
    }
    if conn
        .standing
        .as_ref()
        .is_some_and(|standing| !standing.admits_request())
    {
        conn.close.notify_one();
        return Err(ProxyError::CertificateRevoked);
    }
    if request.version() == Version::HTTP_2 {
        // HTTP/1.1 heads are bounded by hyper itself (docs/operations.md "Limits under attack").
        header_limits::check_http2(&request, &conn.apps.limits)?;
    }
    let authority = request_authority(&request)?;
    check_authority(conn, &authority)?;
    let normalized_target = match conn.policy.admit(&conn.app, &request)? {
        Admission::Forward(target) => target,
        Admission::Answer(response) => return Ok(response),
    };

    let upstream = &conn.app.config.upstream;
    let target = std::mem::take(request.uri_mut());
    *request.uri_mut() = match upstream.transport {
        Transport::Http1 => origin_form(target, normalized_target)?,
        Transport::Http2 => {
            // RFC 9113 §8.3.1: `:scheme` names the app's scheme, `https` over TLS.
            let scheme = match upstream.tls {
                Some(_) => Scheme::HTTPS,
                None => Scheme::HTTP,
            };
            h2c_form(target, normalized_target, &authority, scheme)?
        }
    };

    let found = headers::scan(request.headers());
    let upgrade = found.hop_by_hop()
        && request.version() == Version::HTTP_11
        && upstream.transport == Transport::Http1
        && headers::is_upgrade(request.headers());
    let headers = request.headers_mut();
    if found.client_cert {
        let spoofed = headers::strip_client_cert_headers(headers);
        tracing::debug!(client.addr = %conn.client_addr, spoofed, "removed client-sent certificate headers");
    }
    if found.path_override && conn.app.config.request_policy.inspects_path() {
        let removed = headers::strip_path_override_headers(headers);
        tracing::debug!(client.addr = %conn.client_addr, removed, "removed path-override headers");
    }
    // Hop-by-hop removal comes before certgate's own headers: a client naming them in
    // `Connection` must not be able to remove them.
    if found.hop_by_hop() {
        headers::remove_hop_by_hop(headers, upgrade);
    }
    if upstream.transport == Transport::Http2 {
        // RFC 9113 §8.3.1: `:authority` carries the client's authority, and a `Host` that
        // differs from it makes the request malformed. Removed before certgate's own headers
        // are added, so that they stay last.
        headers.remove(HOST);
    }
    headers::add_forwarded(headers, &conn.forwarded_for, &authority);
    if upstream.transport == Transport::Http1 {
        headers.insert(HOST, authority);
    }
    if let Some(client) = &conn.client {
        let values = client.headers.as_ref().ok_or(ProxyError::XfccTooLarge)?;
        for (name, value) in values {
            headers.insert(name.clone(), value.clone());
        }
    }
    conn.policy.set_verdict(headers);

    *request.version_mut() = match upstream.transport {
        Transport::Http1 => Version::HTTP_11,
        Transport::Http2 => Version::HTTP_2,
    };

    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let mut response = conn
        .app
        .upstream
        .send(request, headers::clean_trailers)
        .await?;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match downstream_upgrade {
        Some(downstream) if switching => {
            let upstream = hyper::upgrade::on(&mut response);
            let idle = conn.apps.timeouts.idle;
            tokio::spawn(pipe_upgraded(
                downstream,
                upstream,
                idle,
                Piped {
                    _permit: conn.permit.clone(),
                    standing: conn.standing.clone(),
                    close: conn.signals.close.clone(),
                    generation: conn.generation(),
                },
            ));
        }
        _ => {}
    }
    if switching && upgrade || headers::scan(response.headers()).hop_by_hop() {
        headers::remove_hop_by_hop(response.headers_mut(), switching && upgrade);
    }
    let report = StallReport {
        observer: conn.app.clone(),
        client_addr: conn.client_addr,
    };
    let idle = conn.apps.timeouts.upstream_idle;
    Ok(response.map(|body| Either::Left(ResponseBody::new(body, idle, report))))
}

/// The request's authority: `:authority` (HTTP/2) or the single `Host` header (HTTP/1.1),
/// which must agree with each other and with an absolute-form target (docs/modes.md "Routing").
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

/// The target an HTTP/1.1 app gets: origin-form (RFC 9112 §3.2.1), the path and query as the
/// client sent them unless the app's policy normalized the path; `*` stays `*`. A target
/// already in origin-form (nearly every HTTP/1.1 request) is handed on untouched.
fn origin_form(target: Uri, normalized: Option<String>) -> Result<Uri, ProxyError> {
    if let Some(normalized) = normalized {
        let path = PathAndQuery::try_from(normalized).map_err(|_| bad("request target"))?;
        return Ok(Uri::from(path));
    }
    if target.scheme().is_none()
        && target.authority().is_none()
        && target.path_and_query().is_some()
    {
        return Ok(target);
    }
    // Absolute-form (every HTTP/2 request, and HTTP/1.1 clients that send it) keeps only its
    // path and query; authority-form has neither.
    let path = target
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Ok(Uri::from(path))
}

/// The target an HTTP/2 app gets: its scheme (`http` for h2c), the client's authority (which
/// becomes `:authority`; the upstream client connects to the app whatever the URI names) and
/// the path and query as `origin_form` passes them.
fn h2c_form(
    target: Uri,
    normalized: Option<String>,
    authority: &HeaderValue,
    scheme: Scheme,
) -> Result<Uri, ProxyError> {
    let mut parts = origin_form(target, normalized)?.into_parts();
    parts.scheme = Some(scheme);
    parts.authority =
        Some(Authority::try_from(authority.as_bytes()).map_err(|_| bad("authority"))?);
    Uri::from_parts(parts).map_err(|_| bad("request target"))
}

/// 400 for a malformed authority, 421 for one that belongs to another app. A host equal to
/// the SNI (nearly every request) is the connection's own app without a lookup: the app was
/// chosen by that very name from the same apps.
fn check_authority(conn: &ConnectionContext, authority: &HeaderValue) -> Result<(), ProxyError> {
    let host = authority_host(authority.as_bytes()).ok_or(bad("authority is not a host"))?;
    let same_as_sni = conn.sni.as_deref().is_some_and(|sni| {
        host.strip_suffix('.')
            .unwrap_or(host)
            .eq_ignore_ascii_case(sni)
    });
    if same_as_sni || conn.apps.resolve_index(Some(&normalize(host))) == Some(conn.app.index) {
        Ok(())
    } else {
        Err(ProxyError::Misdirected)
    }
}

/// What an upgraded connection holds and watches while it is piped.
struct Piped {
    /// Keeps it counted (and waited for by the drain) until it closes.
    _permit: Arc<OwnedSemaphorePermit>,
    /// Closes it once a later revocation refuses its client certificate.
    standing: Option<Arc<Standing>>,
    /// Cuts it `timeouts.reloadGraceMs` after a reload replaced its connection's config.
    close: tokio::sync::watch::Receiver<CloseSignal>,
    generation: u64,
}

/// Pipes an upgraded connection both ways until both sides close, it idles out, a later
/// revocation refuses its client certificate, or the grace after a reload that replaced its
/// config is over.
async fn pipe_upgraded(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle: Duration,
    piped: Piped,
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
    let Piped {
        _permit,
        standing,
        mut close,
        generation,
    } = piped;
    // The pipe keeps the standing (and so its re-checks) alive after the connection's HTTP
    // task has handed the stream over and ended.
    let revoked = async {
        match standing.as_ref().map(|standing| standing.refused()) {
            Some(mut refused) => refused.wait().await,
            None => std::future::pending().await,
        }
    };
    let reloaded = async {
        let closes = |signal: &CloseSignal| match signal.closes(generation) {
            Some(Close::Reloaded { grace }) => Some(grace),
            Some(Close::Shutdown) | None => None,
        };
        let grace = match close.wait_for(|signal| closes(signal).is_some()).await {
            Ok(signal) => closes(&signal),
            Err(_) => None,
        };
        match grace {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        piped = stall::pipe(&mut downstream, &mut upstream, idle) => {
            if let Err(error) = piped {
                tracing::debug!(error = %error, "upgraded connection closed");
            }
        }
        refusal = revoked => {
            // Both sides are dropped here, which closes them.
            tracing::warn!(
                failure = refusal.reason.as_str(),
                detail = %refusal.detail,
                "closing upgraded connection, revocation learned after the handshake"
            );
        }
        () = reloaded => {
            tracing::info!("closing upgraded connection, the reload grace is over");
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn an_origin_form_target_is_handed_on_without_a_copy() {
        let target: Uri = "/a%2Fb?q=%E2%82%AC".parse().unwrap();
        let bytes = target.path_and_query().unwrap().as_str().as_ptr();
        let forwarded = origin_form(target, None).unwrap();
        assert_eq!(forwarded, "/a%2Fb?q=%E2%82%AC");
        assert_eq!(forwarded.path_and_query().unwrap().as_str().as_ptr(), bytes);
    }

    #[test]
    fn an_absolute_form_target_keeps_only_its_path_and_query_uncopied() {
        let target: Uri = "https://app.example.test:8443/a?b=1".parse().unwrap();
        let bytes = target.path_and_query().unwrap().as_str().as_ptr();
        let forwarded = origin_form(target, None).unwrap();
        assert_eq!(forwarded.to_string(), "/a?b=1");
        assert_eq!(forwarded.path_and_query().unwrap().as_str().as_ptr(), bytes);
    }

    #[test]
    fn an_asterisk_target_stays_an_asterisk() {
        let forwarded = origin_form(Uri::from_static("*"), None).unwrap();
        assert_eq!(forwarded.to_string(), "*");
    }

    #[test]
    fn an_h2c_target_names_the_client_authority() {
        let target: Uri = "/a?b=1".parse().unwrap();
        let authority = HeaderValue::from_static("app.example.test:8443");
        let forwarded = h2c_form(target, None, &authority, Scheme::HTTP).unwrap();
        assert_eq!(forwarded.to_string(), "http://app.example.test:8443/a?b=1");
    }
}
