//! The per-connection HTTP service. Each request passes named stages, in order (`forward`):
//! the connection's `checks` (draining, reloaded and its client address now refused,
//! certificate expired or revoked), the HTTP/2 `header_limits`, the `authority` (400/421),
//! `cors` (preflights answered, the response's CORS headers chosen), the app's `admission` (exclusion paths,
//! authorization, rate limit), the `rewrite` for the app (target, hop-by-hop, `Host`,
//! `X-Forwarded-*`) with the `certificate_headers` around it (the client's removed before,
//! certgate's own set after), and `send` (to the app's upstream client, which picks the group by weight, or a label host's revision, and the endpoint; the app's response streamed back, upgrades piped). What does not change between requests (the certificate header values,
//! the client address header, the app's metric handles, which authorization rules the client
//! passes) is made once per connection (`context`); a request guard records every request's
//! end.

pub(crate) mod activity;
pub(crate) mod admission;
pub(crate) mod authority;
pub(crate) mod body;
pub(crate) mod certificate_headers;
pub(crate) mod checks;
pub(crate) mod client;
pub(crate) mod context;
pub(crate) mod cors;
pub(crate) mod error;
pub(crate) mod formats;
pub(crate) mod header_limits;
pub(crate) mod headers;
pub(crate) mod plain;
pub(crate) mod redirect;
pub(crate) mod refuse;
pub(crate) mod rewrite;
pub(crate) mod send;
pub(crate) mod stall;
pub(crate) mod xfcc;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::time::Instant;

use self::admission::Admitted;
use self::body::ProxyBody;
use self::context::ConnectionContext;
use self::cors::{Cors, Exposure};
use self::error::ProxyError;
use crate::access_log::{PeerFields, RequestFields};
use crate::metrics::label::StallReason;
use crate::tls::FailureReason;
use crate::upstream::{Peer, Retried};

/// Serves one request; never fails (errors become responses).
pub(crate) async fn handle(
    conn: Arc<ConnectionContext>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let mut guard = RequestGuard::start(conn, &request);
    let head = request.method() == Method::HEAD;
    let mut exposure = Exposure::default();
    let forwarded = match &guard.conn.downstream.answer {
        // `rejectWith: "http"` refused the connection's certificate, or a plain-HTTP request
        // is redirected: nothing is forwarded.
        Some(answer) => Ok(answer.respond(&request)),
        // Boxed: hyper moves this handler's future (into a task of its own for HTTP/2), and
        // with the upstream exchange inline it would be 3.4 KiB to copy each time, not 744 bytes.
        None => {
            Box::pin(forward(
                &guard.conn,
                request,
                &mut exposure,
                &mut guard.peer,
            ))
            .await
        }
    };
    let mut response = match forwarded {
        Ok(response) => {
            if let Some(retried) = response.extensions().get::<Retried>() {
                guard.retries = retried.0;
            }
            response
        }
        Err(error) => {
            guard.failed(&error);
            error.into_response()
        }
    };
    // The app's answer and certgate's own answers after the CORS stage alike, so that the
    // calling page can read a 403 or a 502 too.
    exposure.apply(response.headers_mut());
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
    /// How many times the upstream client sent the request again to another endpoint.
    retries: u32,
    /// The upstream group and endpoint the request was sent to, once it was.
    peer: Option<Peer>,
}

/// The status logged and counted for a request the client abandoned.
const CLIENT_ABORTED: u16 = 499;
/// The `outcome` logged for a request the client abandoned.
const CLIENT_ABORTED_OUTCOME: &str = "client_aborted";

impl RequestGuard {
    fn start(conn: Arc<ConnectionContext>, request: &Request<Incoming>) -> Self {
        let in_flight = conn
            .lifecycle
            .activity
            .start(request.version() != Version::HTTP_2);
        let logged = conn
            .route
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
            retries: 0,
            peer: None,
        }
    }

    /// Records what `error` ended the request with, besides its access line: what each error
    /// counts or logs is one match, so a new error decides it too.
    fn failed(&mut self, error: &ProxyError) {
        self.outcome = error.outcome();
        let app = self.conn.app();
        // What was used: the group and endpoint the request went to, once it went to one.
        let peer = self.peer.as_ref();
        let upstream = peer.map_or(&app.config.upstream, Peer::upstream);
        let group = peer.map(|peer| tracing::field::display(peer.group()));
        let endpoint = peer.map(|peer| tracing::field::display(peer.endpoint()));
        let upstream_failed = || {
            tracing::warn!(
                app = %app.config.name,
                upstream = %upstream,
                upstream_group = group,
                upstream_endpoint = endpoint,
                error = %crate::error_chain(error),
                "upstream request failed"
            );
        };
        match error {
            ProxyError::RequestBodyTimeout => app.metrics.stalled(StallReason::RequestBodyIdle),
            ProxyError::Denied { rule, .. } => {
                app.metrics.authorization_denied(rule);
                self.rule.clone_from(rule);
            }
            ProxyError::RateLimited { .. } => app.metrics.rate_limited(),
            ProxyError::Upstream { source } => match source.tls_failure() {
                Some(reason) => {
                    app.metrics.upstream_tls_failed(reason);
                    tracing::warn!(
                        app = %app.config.name,
                        upstream = %upstream,
                        upstream_group = group,
                        upstream_endpoint = endpoint,
                        failure = reason.as_str(),
                        error = %crate::error_chain(error),
                        "TLS with the upstream failed"
                    );
                }
                None => upstream_failed(),
            },
            ProxyError::UpstreamTimeout | ProxyError::UpstreamSaturated => upstream_failed(),
            // The connection closes after this answer: counted and logged once for it.
            ProxyError::IpRestricted { refusal } => {
                app.metrics.ip_restricted();
                tracing::warn!(
                    client.addr = %self.conn.downstream.addr,
                    app = %app.config.name,
                    failure = FailureReason::IpRestricted.as_str(),
                    rule = refusal.rule.as_deref().unwrap_or(""),
                    detail = %refusal.detail,
                    "request refused, the reloaded ipSecurityRestrictions refuse the client address"
                );
            }
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
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let conn = &self.conn;
        self.in_flight.take();
        let elapsed = self.started.elapsed();
        let code = self.status.map_or(CLIENT_ABORTED, |status| status.as_u16());
        conn.app().metrics.request_done(
            conn.downstream.verified.is_some(),
            code,
            elapsed.as_secs_f64(),
        );
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
            retries: self.retries,
            peer: self.peer.as_ref().map(|peer| PeerFields {
                upstream: peer.upstream(),
                group: peer.group(),
                endpoint: peer.endpoint(),
            }),
        });
    }
}

/// The request's stages, in order. Each takes only what it reads and either passes the
/// request on or ends it with an answer or an error; a new concern is a new stage here.
/// `exposure` receives the CORS headers the response gets, whatever answers the request, and
/// `peer` the upstream group and endpoint it was sent to, if it was.
async fn forward(
    conn: &Arc<ConnectionContext>,
    mut request: Request<Incoming>,
    exposure: &mut Exposure,
    peer: &mut Option<Peer>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let ConnectionContext {
        route,
        downstream,
        lifecycle,
        ..
    } = &**conn;
    checks::connection(route, lifecycle, downstream)?;
    if request.version() == Version::HTTP_2 {
        // HTTP/1.1 heads are bounded by hyper itself (docs/operations.md "Limits under attack").
        header_limits::check_http2(&request, &route.apps.limits)?;
    }
    let authority = authority::check(&request, downstream.sni.as_deref(), route)?;
    // Before admission, as Envoy's CORS filter runs before its authorization filters: a
    // preflight carries no credentials (docs/cors.md).
    *exposure = match cors::request(&route.app, &request) {
        Cors::Answer(preflight) => return Ok(preflight),
        Cors::Expose(exposure) => exposure,
    };
    let target = match downstream.admission.admit(&route.app, &request)? {
        Admitted::Forward(target) => target,
        Admitted::Answer(response) => return Ok(response),
    };
    let found = headers::scan(request.headers());
    certificate_headers::remove_client_sent(request.headers_mut(), found.client_cert, downstream);
    let config = &route.app.config;
    // A label host reaches its revision's group alone.
    let group = if config.label_hosts.is_empty() {
        None
    } else {
        crate::tls::sni::authority_host(authority.as_bytes())
            .and_then(|host| config.label_group(host))
    };
    let upgrade = rewrite::request(
        &mut request,
        target,
        authority,
        &config.upstream,
        found,
        config.request_policy.inspects_path(),
        downstream,
    )?;
    certificate_headers::set(request.headers_mut(), downstream)?;
    send::to_app(
        route,
        lifecycle,
        conn.clone(),
        request,
        upgrade,
        group,
        peer,
    )
    .await
}
