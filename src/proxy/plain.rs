//! The plain-HTTP listener's requests (`listenHttp`). With no SNI, each request picks its app
//! by its `Host` (or `:authority`), with the same matcher: a malformed authority is 400 and a
//! host no app serves 404, both answered here; every other request goes through the app's
//! part of the connection (made at the app's first request on it), which answers `301` to
//! HTTPS for an app that is not `allowInsecure` and forwards it, without certificate headers,
//! through the same stages as on the mTLS listener for one that is.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::ProxyBody;
use super::context::{
    ConnectionContext, Downstream, Lifecycle, PLAIN_LISTENER, Route, SharedLifecycle,
};
use super::error::{ProxyError, plain_response};
use super::redirect::Redirect;
use crate::access_log::{self, ConnectionFields, RequestFields};
use crate::apps::Apps;
use crate::metrics::{Metrics, PlainOutcome};
use crate::tls::sni::{authority_host, normalize};

/// A plain-HTTP connection: the generation of apps it was accepted under, its client, what
/// keeps it counted and tells it to close, and its part for each app it has served.
#[derive(Debug)]
pub(crate) struct PlainConnection {
    apps: Arc<Apps>,
    client_addr: SocketAddr,
    /// Shared by the parts.
    pub lifecycle: SharedLifecycle,
    redirect: Redirect,
    metrics: Arc<Metrics>,
    /// The connection's part for each app, by the app's index, made at its first request.
    parts: Mutex<Vec<Option<Arc<ConnectionContext>>>>,
}

/// A request the plain-HTTP listener answers itself, before any app.
#[derive(Debug, Clone, Copy)]
enum Refused {
    BadRequest,
    UnknownHost,
    /// The app's `ipSecurityRestrictions` refuse the client's address.
    IpRestricted,
}

impl PlainConnection {
    /// A connection from `client_addr`, served under `apps`, whose redirects point to
    /// `redirect`.
    pub(crate) fn new(
        apps: Arc<Apps>,
        client_addr: SocketAddr,
        lifecycle: SharedLifecycle,
        redirect: Redirect,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            apps,
            client_addr,
            lifecycle,
            redirect,
            metrics,
            parts: Mutex::new(Vec::new()),
        }
    }

    /// The generation of apps the connection was accepted under.
    pub(crate) fn generation(&self) -> u64 {
        self.apps.generation
    }

    /// The app's part of the connection for `request`, or why there is none.
    fn route<B>(&self, request: &Request<B>) -> Result<Arc<ConnectionContext>, Refused> {
        let authority = super::authority::of(request).map_err(|_| Refused::BadRequest)?;
        let host = authority_host(authority.as_bytes()).ok_or(Refused::BadRequest)?;
        let app = self
            .apps
            .resolve(Some(&normalize(host)))
            .ok_or(Refused::UnknownHost)?;
        // Judged per request: a plain connection's requests may go to several apps.
        if let Some(refusal) = app
            .config
            .ip_restrictions
            .as_ref()
            .and_then(|restrictions| restrictions.judge(self.client_addr.ip()).err())
        {
            tracing::warn!(
                client.addr = %self.client_addr,
                app = %app.config.name,
                listener = PLAIN_LISTENER,
                failure = "ip_restricted",
                rule = refusal.rule.as_deref().unwrap_or(""),
                detail = %refusal.detail,
                "client address refused"
            );
            return Err(Refused::IpRestricted);
        }
        self.metrics.plain_request(if app.config.allow_insecure {
            PlainOutcome::Served
        } else {
            PlainOutcome::Redirected
        });
        // Poisoned only if a thread panicked while holding it; the parts are still whole.
        let mut parts = self
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if parts.len() <= app.index {
            parts.resize(app.index + 1, None);
        }
        let part = parts[app.index].get_or_insert_with(|| {
            let redirect = (!app.config.allow_insecure).then_some(self.redirect);
            let downstream = Downstream::plain(&app, self.client_addr, redirect);
            let lifecycle = Lifecycle::sharing(&app, &self.lifecycle);
            let route = Route {
                app: app.clone(),
                apps: self.apps.clone(),
            };
            Arc::new(ConnectionContext::new(route, downstream, lifecycle))
        });
        Ok(part.clone())
    }

    /// The answer to a request no app takes, counted and logged here.
    fn refuse<B>(&self, refused: Refused, request: &Request<B>) -> Response<ProxyBody> {
        let started = Instant::now();
        let _in_flight = self
            .lifecycle
            .activity
            .start(request.version() != Version::HTTP_2);
        let (outcome, response) = match refused {
            Refused::BadRequest => (
                PlainOutcome::BadRequest,
                ProxyError::BadRequest {
                    reason: "authority",
                }
                .into_response(),
            ),
            Refused::UnknownHost => (
                PlainOutcome::UnknownHost,
                plain_response(StatusCode::NOT_FOUND, "no app serves this host\n"),
            ),
            Refused::IpRestricted => (
                PlainOutcome::IpRestricted,
                plain_response(
                    StatusCode::FORBIDDEN,
                    "the app's ipSecurityRestrictions refuse this client address\n",
                ),
            ),
        };
        self.answered(
            outcome,
            &RequestFields {
                method: Some(request.method()),
                path: Some(request.uri().path()),
                status: response.status().as_u16(),
                rule: None,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                outcome: Some(outcome.as_str()),
                retries: 0,
                peer: None,
            },
        );
        response
    }

    /// Counts and logs the request head hyper refused with 431 when `error` (what ended the
    /// connection) says so: it never reached an app, so it is the listener's.
    pub(crate) fn connection_ended(&self, error: &(dyn std::error::Error + 'static)) {
        if !super::header_limits::refused_head(error) {
            return;
        }
        let outcome = PlainOutcome::HeaderTooLarge;
        self.answered(
            outcome,
            &RequestFields {
                method: None,
                path: None,
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.as_u16(),
                rule: None,
                duration_ms: 0,
                outcome: Some(outcome.as_str()),
                retries: 0,
                peer: None,
            },
        );
    }

    /// Counts a request the listener answered itself and writes its access line.
    fn answered(&self, outcome: PlainOutcome, request: &RequestFields<'_>) {
        self.metrics.plain_request(outcome);
        if self.apps.access_log {
            let fields = ConnectionFields {
                client_addr: self.client_addr,
                sni: "",
                app: "",
                hash: "",
                upstream: None,
                listener: Some(PLAIN_LISTENER),
            };
            access_log::trace(&fields, request);
        }
    }
}

/// Serves one request of a plain-HTTP connection; never fails (errors become responses).
pub(crate) async fn handle(
    conn: Arc<PlainConnection>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    // Like the connection checks of the mTLS listener: while draining, or once a reload
    // replaced the connection's config, this response is the connection's last.
    let lifecycle = &conn.lifecycle;
    if lifecycle.signals.draining.is_draining() || conn.apps.is_retired() {
        lifecycle.close.notify_one();
    }
    match conn.route(&request) {
        Ok(part) => super::handle(part, request).await,
        Err(refused) => {
            let head = request.method() == Method::HEAD;
            let response = conn.refuse(refused, &request);
            // As `super::handle` does: certgate's own answer to a HEAD has no content.
            Ok(if head {
                response.map(|_| http_body_util::Either::Right(http_body_util::Full::default()))
            } else {
                response
            })
        }
    }
}
