//! What a connection knows once its handshake is done, shared by all its requests: the app,
//! the verified client and its headers, the connection's policy, and when it went idle.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::activity::Activity;
use super::admission::ConnectionPolicy;
use super::client::VerifiedClient;
use super::error::REQUEST_HEADER_TOO_LARGE;
use super::stall::StallObserver;
use super::{headers, refuse};
use crate::access_log::{self, ConnectionFields, RequestFields};
use crate::apps::{App, Apps};
use crate::drain::{CloseSignal, Draining};
use crate::identity::ClientIdentity;
use crate::metrics::app::ActiveConnection;
use crate::metrics::label::StallReason;
use crate::revocation::Standing;

/// What tells an open connection to stop: shutdown's drain, and a reload that replaced the
/// apps it was accepted under.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    /// Raised when shutdown begins.
    pub draining: Draining,
    /// Shutdown, or a reload that retired the connection's generation.
    pub close: watch::Receiver<CloseSignal>,
}

/// What a connection knows once its handshake is done; shared by all its requests.
#[derive(Debug)]
pub(crate) struct ConnectionContext {
    /// The app chosen by SNI.
    pub app: Arc<App>,
    /// The apps this connection was accepted under, for the authority check.
    pub(super) apps: Arc<Apps>,
    /// The drain flag and what tells the connection that a reload replaced its apps.
    pub(crate) signals: Signals,
    /// The connection's slot under `limits.maxConnections`, held by upgraded streams too.
    pub(super) permit: Arc<OwnedSemaphorePermit>,
    /// Keeps the connection counted in `certgate_connections_active`.
    pub(super) _active: ActiveConnection,
    /// The downstream client's address.
    pub(super) client_addr: SocketAddr,
    /// `client_addr` as an `X-Forwarded-For` element.
    pub(super) forwarded_for: HeaderValue,
    /// The normalized SNI, if any.
    pub(super) sni: Option<String>,
    /// The verified client and its certificate headers, if a certificate was presented.
    pub(super) client: Option<VerifiedClient>,
    /// With `rejectWith: "http"`, the refusal every request of this connection is answered
    /// with (nothing reaches the app).
    pub(super) refusal: Option<refuse::RefusalPage>,
    /// The app's policy as it applies to this connection's client.
    pub(super) policy: ConnectionPolicy,
    /// Notified when the connection must close after the current response.
    pub close: Notify,
    /// With revocation checking: closes the connection and its WebSockets once a later
    /// revocation covers the client certificate.
    pub(super) standing: Option<Arc<Standing>>,
    /// Requests in flight and the last time one started or ended, for the idle timeout.
    pub(super) activity: Arc<Activity>,
    /// The connection's part of its access lines, rendered at its first logged request;
    /// `None` inside when a field needs escaping.
    access_line: OnceLock<Option<access_log::RenderedConnection>>,
}

impl ConnectionContext {
    /// The context of a connection whose handshake picked `app` from `apps`.
    pub(crate) fn new(
        app: Arc<App>,
        apps: Arc<Apps>,
        signals: Signals,
        permit: OwnedSemaphorePermit,
        client_addr: SocketAddr,
        sni: Option<String>,
        client: Option<VerifiedClient>,
    ) -> Self {
        let policy = ConnectionPolicy::new(&app, client.as_ref(), client_addr.ip());
        apps.opened();
        Self {
            _active: app.metrics.connection_opened(),
            app,
            apps,
            signals,
            permit: Arc::new(permit),
            client_addr,
            forwarded_for: headers::forwarded_for(client_addr.ip()),
            sni,
            policy,
            client,
            refusal: None,
            close: Notify::new(),
            standing: None,
            activity: Arc::new(Activity::new()),
            access_line: OnceLock::new(),
        }
    }

    /// With `rejectWith: "http"`: every request on this connection is answered with `refusal`
    /// and nothing reaches the app.
    #[must_use]
    pub(crate) fn with_refusal(mut self, refusal: Option<refuse::RefusalPage>) -> Self {
        self.refusal = refusal;
        self
    }

    /// With revocation checking: the connection's standing, checked before each request is
    /// forwarded and watched by every WebSocket piped from it.
    #[must_use]
    pub(crate) fn with_standing(mut self, standing: Option<Arc<Standing>>) -> Self {
        self.standing = standing;
        self
    }

    /// The generation of apps the connection was accepted under.
    pub(crate) fn generation(&self) -> u64 {
        self.apps.generation
    }

    /// When the connection will have been idle for `idle`, or `None` while a request is in
    /// flight.
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        self.activity.idle_since().map(|since| since + idle)
    }

    /// When an HTTP/1.1 connection will have been idle for `after`, or `None` while a request
    /// is in flight or when its last request came over HTTP/2 (docs/operations.md "Memory while idle").
    pub(crate) fn park_deadline(&self, after: Duration) -> Option<Instant> {
        self.activity
            .last_was_http1()
            .then(|| self.idle_deadline(after))
            .flatten()
    }

    /// Whether the connection has not started a request yet.
    pub(crate) fn awaits_first_request(&self) -> bool {
        self.activity.ended() == 0 && self.activity.idle_since().is_some()
    }

    /// Asks the connection's HTTP session to end at its next read, once nothing is in flight.
    pub(crate) fn park(&self) {
        self.activity.set_park(true);
    }

    /// Withdraws `park`, for a new session.
    pub(crate) fn unpark(&self) {
        self.activity.set_park(false);
    }

    /// Whether the session should end now: asked to park and no request in flight.
    pub(crate) fn parks_now(&self) -> bool {
        self.activity.parks_now()
    }

    /// How many of the connection's requests have ended, to tell whether bytes read from the
    /// client were a whole request.
    pub(crate) fn requests_ended(&self) -> u64 {
        self.activity.ended()
    }

    /// The verified client's identity, if a certificate was presented.
    pub(crate) fn identity(&self) -> Option<&ClientIdentity> {
        self.client.as_ref().map(|client| &client.identity)
    }

    /// Logs and counts the request head hyper refused with 431 when `error` (what ended the
    /// connection) says so; such a request never reached the service, so its guard never ran.
    pub(crate) fn connection_ended(&self, error: &(dyn std::error::Error + 'static)) {
        let too_large = error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large);
        if !too_large {
            return;
        }
        let code = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.as_u16();
        let identity = self.identity();
        self.app.metrics.request_done(identity.is_some(), code, 0.0);
        if !self.apps.access_log {
            return;
        }
        self.log_request(&RequestFields {
            method: None,
            path: None,
            status: code,
            rule: None,
            duration_ms: 0,
            outcome: Some(REQUEST_HEADER_TOO_LARGE),
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
        ConnectionFields {
            client_addr: self.client_addr,
            sni: self.sni.as_deref().unwrap_or(""),
            app: &self.app.config.name,
            hash: self.identity().map_or("", |id| id.hash.as_str()),
            upstream: &self.app.config.upstream,
        }
    }
}

impl Drop for ConnectionContext {
    fn drop(&mut self) {
        self.apps.closed();
    }
}

impl StallObserver for App {
    fn upstream_stalled(&self, client_addr: SocketAddr) {
        self.metrics.stalled(StallReason::UpstreamIdle);
        tracing::warn!(
            client.addr = %client_addr,
            app = %self.config.name,
            upstream = %self.config.upstream,
            outcome = StallReason::UpstreamIdle.as_str(),
            "response body stalled, closing"
        );
    }
}
