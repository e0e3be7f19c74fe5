//! What a connection knows once its handshake is done, shared by all its requests, in three
//! parts by what each is for: the `Route` (the app and the apps it was chosen from), the
//! `Downstream` client (address, verified certificate, the header values and policy answers
//! made once for it) and the connection's `Lifecycle` (its slot, activity, standing and what
//! tells it to close). Each request stage takes only the part it reads.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::activity::Activity;
use super::admission::Admission;
use super::body::ProxyBody;
use super::client::VerifiedClient;
use super::error::REQUEST_HEADER_TOO_LARGE;
use super::redirect::Redirect;
use super::stall::StallObserver;
use super::{formats, headers, refuse};
use crate::access_log::{self, ConnectionFields, RequestFields};
use crate::apps::{App, Apps};
use crate::drain::{CloseSignal, Draining};
use crate::identity::ClientIdentity;
use crate::metrics::app::ActiveConnection;
use crate::metrics::label::StallReason;
use crate::revocation::Standing;
use crate::upstream::Peer;

/// What a connection knows once its handshake is done; shared by all its requests.
#[derive(Debug)]
pub(crate) struct ConnectionContext {
    /// Where its requests go.
    pub route: Route,
    /// Who sent them.
    pub downstream: Downstream,
    /// What keeps the connection counted and what tells it to close.
    pub lifecycle: Lifecycle,
    /// The connection's part of its access lines, rendered at its first logged request;
    /// `None` inside when a field needs escaping.
    access_line: OnceLock<Option<access_log::RenderedConnection>>,
}

/// Where a connection's requests go: the app its handshake picked, and the apps (the
/// generation of the config) it was picked from, with their limits and timeouts.
#[derive(Debug)]
pub(crate) struct Route {
    /// The app chosen by SNI.
    pub app: Arc<App>,
    /// The apps this connection was accepted under, for the authority check.
    pub apps: Arc<Apps>,
}

/// The client at the other end of a connection, and what its requests carry because of it:
/// made once at the handshake, read by every request.
#[derive(Debug)]
pub(crate) struct Downstream {
    /// The client's address.
    pub addr: SocketAddr,
    /// `addr` as an `X-Forwarded-For` element.
    pub forwarded_for: HeaderValue,
    /// The normalized SNI, if any.
    pub sni: Option<String>,
    /// The verified client and its certificate headers, if a certificate was presented.
    pub verified: Option<VerifiedClient>,
    /// The app's request policy as it applies to this client.
    pub admission: Admission,
    /// `X-Client-Verify`, when the app has the `verdict` format.
    pub verdict: Option<HeaderValue>,
    /// The answer every request of this connection gets from certgate itself, when nothing
    /// reaches the app.
    pub answer: Option<Answer>,
    /// `X-Forwarded-Proto`: `https`, or `http` on the plain-HTTP listener.
    pub forwarded_proto: HeaderValue,
    /// The access line's `listener` field: none on the mTLS listener.
    pub listener: Option<&'static str>,
}

/// The `listener` field of the plain-HTTP listener's access lines.
pub(crate) const PLAIN_LISTENER: &str = "http";

/// What answers a connection's requests instead of the app.
#[derive(Debug)]
pub(crate) enum Answer {
    /// `rejectWith: "http"` refused the connection's certificate.
    Refuse(refuse::RefusalPage),
    /// On the plain-HTTP listener, for an app that is not `allowInsecure`.
    Redirect(Redirect),
}

impl Answer {
    /// The answer to `request`.
    pub(crate) fn respond<B>(&self, request: &http::Request<B>) -> http::Response<ProxyBody> {
        match self {
            Self::Refuse(page) => page.respond(request),
            Self::Redirect(redirect) => redirect.respond(request),
        }
    }
}

/// What keeps a connection counted while it is open, and what tells it to close.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// The connection's slot under `limits.maxConnections`, held by upgraded streams too.
    pub permit: Arc<OwnedSemaphorePermit>,
    /// Keeps the connection counted in `certgate_connections_active`.
    _active: ActiveConnection,
    /// Requests in flight and the last time one started or ended, for the idle timeout.
    pub activity: Arc<Activity>,
    /// The drain flag and what tells the connection that a reload replaced its apps.
    pub signals: Signals,
    /// Notified when the connection must close after the current response.
    pub close: Arc<Notify>,
    /// With revocation checking: closes the connection and its WebSockets once a later
    /// revocation covers the client certificate.
    pub standing: Option<Arc<Standing>>,
}

/// What a plain-HTTP connection's parts (one per app it serves) have in common: its slot
/// under `limits.maxConnections`, its activity and what tells it to close.
#[derive(Debug)]
pub(crate) struct SharedLifecycle {
    pub permit: Arc<OwnedSemaphorePermit>,
    pub activity: Arc<Activity>,
    pub signals: Signals,
    pub close: Arc<Notify>,
}

impl SharedLifecycle {
    /// The lifecycle of a new plain-HTTP connection holding `permit`.
    pub(crate) fn new(permit: OwnedSemaphorePermit, signals: Signals) -> Self {
        Self {
            permit: Arc::new(permit),
            activity: Arc::new(Activity::new()),
            signals,
            close: Arc::new(Notify::new()),
        }
    }

    /// When the connection will have been idle for `idle`, or `None` while a request is in
    /// flight.
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        self.activity.idle_since().map(|since| since + idle)
    }
}

/// What tells an open connection to stop: shutdown's drain, and a reload that replaced the
/// apps it was accepted under.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    /// Raised when shutdown begins.
    pub draining: Draining,
    /// Shutdown, or a reload that retired the connection's generation.
    pub close: watch::Receiver<CloseSignal>,
}

impl Downstream {
    /// The client at `addr` as `app` sees it: `verified` when it presented a certificate the
    /// app's policy admitted, `refusal` with `rejectWith: "http"` when the policy refused it.
    pub(crate) fn new(
        app: &App,
        addr: SocketAddr,
        sni: Option<String>,
        verified: Option<VerifiedClient>,
        refusal: Option<refuse::RefusalPage>,
    ) -> Self {
        let verdict = app.config.request_policy.formats.verdict.then(|| {
            verified
                .as_ref()
                .map_or_else(formats::no_certificate_verdict, |client| {
                    client.verdict.clone()
                })
        });
        Self {
            admission: Admission::new(app, verified.as_ref(), addr.ip()),
            verdict,
            forwarded_for: headers::forwarded_for(addr.ip()),
            addr,
            sni,
            verified,
            answer: refusal.map(Answer::Refuse),
            forwarded_proto: headers::HTTPS,
            listener: None,
        }
    }

    /// A client of `app` on the plain-HTTP listener: no certificate, so no certificate
    /// headers (not even `X-Client-Verify`), admitted as a certificate-less client is; its
    /// requests are answered with `redirect` when the app is not `allowInsecure`.
    pub(crate) fn plain(app: &App, addr: SocketAddr, redirect: Option<Redirect>) -> Self {
        Self {
            admission: Admission::new(app, None, addr.ip()),
            verdict: None,
            forwarded_for: headers::forwarded_for(addr.ip()),
            addr,
            sni: None,
            verified: None,
            answer: redirect.map(Answer::Redirect),
            forwarded_proto: headers::HTTP,
            listener: Some(PLAIN_LISTENER),
        }
    }

    /// The verified client's identity, if a certificate was presented.
    pub(crate) fn identity(&self) -> Option<&ClientIdentity> {
        self.verified.as_ref().map(|client| &client.identity)
    }
}

impl Lifecycle {
    /// A connection of `app` holding `permit`, watched by `standing` when its certificate's
    /// revocation is checked.
    pub(crate) fn new(
        app: &App,
        permit: OwnedSemaphorePermit,
        signals: Signals,
        standing: Option<Arc<Standing>>,
    ) -> Self {
        Self {
            permit: Arc::new(permit),
            _active: app.metrics.connection_opened(),
            activity: Arc::new(Activity::new()),
            signals,
            close: Arc::new(Notify::new()),
            standing,
        }
    }

    /// The part of a plain-HTTP connection that serves `app`: it shares the connection's
    /// slot, activity and close notice with its other apps' parts, and keeps the connection
    /// counted for `app` while it lives.
    pub(crate) fn sharing(app: &App, connection: &SharedLifecycle) -> Self {
        Self {
            permit: connection.permit.clone(),
            _active: app.metrics.connection_opened(),
            activity: connection.activity.clone(),
            signals: connection.signals.clone(),
            close: connection.close.clone(),
            standing: None,
        }
    }
}

impl ConnectionContext {
    /// The context of a connection whose handshake picked `route`; counted open in its
    /// generation of apps until dropped.
    pub(crate) fn new(route: Route, downstream: Downstream, lifecycle: Lifecycle) -> Self {
        route.apps.opened();
        Self {
            route,
            downstream,
            lifecycle,
            access_line: OnceLock::new(),
        }
    }

    /// The app chosen by SNI.
    pub(crate) fn app(&self) -> &Arc<App> {
        &self.route.app
    }

    /// Notified when the connection must close after the current response.
    pub(crate) fn close(&self) -> &Notify {
        &self.lifecycle.close
    }

    /// The generation of apps the connection was accepted under.
    pub(crate) fn generation(&self) -> u64 {
        self.route.apps.generation
    }

    /// When the connection will have been idle for `idle`, or `None` while a request is in
    /// flight.
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        self.lifecycle
            .activity
            .idle_since()
            .map(|since| since + idle)
    }

    /// When an HTTP/1.1 connection will have been idle for `after`, or `None` while a request
    /// is in flight or when its last request came over HTTP/2 (docs/operations.md "Memory while idle").
    pub(crate) fn park_deadline(&self, after: Duration) -> Option<Instant> {
        self.lifecycle
            .activity
            .last_was_http1()
            .then(|| self.idle_deadline(after))
            .flatten()
    }

    /// Whether the connection has not started a request yet.
    pub(crate) fn awaits_first_request(&self) -> bool {
        let activity = &self.lifecycle.activity;
        activity.ended() == 0 && activity.idle_since().is_some()
    }

    /// Asks the connection's HTTP session to end at its next read, once nothing is in flight.
    pub(crate) fn park(&self) {
        self.lifecycle.activity.set_park(true);
    }

    /// Withdraws `park`, for a new session.
    pub(crate) fn unpark(&self) {
        self.lifecycle.activity.set_park(false);
    }

    /// Whether the session should end now: asked to park and no request in flight.
    pub(crate) fn parks_now(&self) -> bool {
        self.lifecycle.activity.parks_now()
    }

    /// How many of the connection's requests have ended, to tell whether bytes read from the
    /// client were a whole request.
    pub(crate) fn requests_ended(&self) -> u64 {
        self.lifecycle.activity.ended()
    }

    /// Logs and counts the request head hyper refused with 431 when `error` (what ended the
    /// connection) says so; such a request never reached the service, so its guard never ran.
    pub(crate) fn connection_ended(&self, error: &(dyn std::error::Error + 'static)) {
        if !super::header_limits::refused_head(error) {
            return;
        }
        let code = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.as_u16();
        let verified = self.downstream.verified.is_some();
        self.route.app.metrics.request_done(verified, code, 0.0);
        if !self.route.apps.access_log {
            return;
        }
        self.log_request(&RequestFields {
            method: None,
            path: None,
            status: code,
            rule: None,
            duration_ms: 0,
            outcome: Some(REQUEST_HEADER_TOO_LARGE),
            retries: 0,
            peer: None,
        });
    }

    /// Writes `request`'s access line: straight to the log writer when nothing needs
    /// escaping, through tracing otherwise.
    pub(super) fn log_request(&self, request: &RequestFields<'_>) {
        if let Some(writer) = access_log::fast_writer() {
            let rendered = self
                .access_line
                .get_or_init(|| writer.render_connection(&self.access_fields()));
            if rendered
                .as_ref()
                .is_some_and(|rendered| writer.write(rendered, request))
            {
                return;
            }
        }
        access_log::trace(&self.access_fields(), request);
    }

    fn access_fields(&self) -> ConnectionFields<'_> {
        let downstream = &self.downstream;
        ConnectionFields {
            client_addr: downstream.addr,
            sni: downstream.sni.as_deref().unwrap_or(""),
            app: &self.route.app.config.name,
            hash: downstream.identity().map_or("", |id| id.hash.as_str()),
            upstream: Some(&self.route.app.config.upstream),
            listener: downstream.listener,
        }
    }
}

impl Drop for ConnectionContext {
    fn drop(&mut self) {
        self.route.apps.closed();
    }
}

impl StallObserver for ConnectionContext {
    fn upstream_stalled(&self, peer: Option<&Peer>) {
        let app = self.app();
        app.metrics.stalled(StallReason::UpstreamIdle);
        tracing::warn!(
            client.addr = %self.downstream.addr,
            app = %app.config.name,
            upstream = %peer.map_or(&app.config.upstream, Peer::upstream),
            upstream_group = peer.map(|peer| tracing::field::display(peer.group())),
            upstream_endpoint = peer.map(|peer| tracing::field::display(peer.endpoint())),
            outcome = StallReason::UpstreamIdle.as_str(),
            "response body stalled, closing"
        );
    }
}
