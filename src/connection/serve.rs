//! Serving an established connection: one hyper session (HTTP/1.1 or HTTP/2) after another
//! until the client leaves, the connection idles out, shutdown drains it, a reload replaces
//! its config (what is in flight finishes, cut after `timeouts.reloadGraceMs`) or a
//! revocation learned later refuses it. Between two sessions a quiet HTTP/1.1 connection is parked
//! (`park`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::park::{self, SessionIo, Tls};
use crate::drain::{Close, CloseSignal};
use crate::proxy;
use crate::proxy::context::ConnectionContext;
use crate::proxy::header_limits::http2_header_list_limit;
use crate::revocation::{RevocationFailure, RevokedLater};
use crate::settings::{Limits, Timeouts};
use crate::upstream::UPSTREAM_READ_BUFFER;

/// A connection ready to serve requests, with what its sessions are served with.
pub(super) struct Sessions {
    pub context: Arc<ConnectionContext>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub client_addr: SocketAddr,
}

impl Sessions {
    /// Serves `stream` to its end: one hyper session per burst of requests, an HTTP/1.1
    /// connection that goes quiet parking between them (docs/operations.md "Memory while idle").
    pub(super) async fn serve(
        self,
        mut stream: Tls,
        mut close: watch::Receiver<CloseSignal>,
        mut revoked_later: Option<RevokedLater>,
    ) {
        let Self {
            context,
            timeouts,
            limits,
            client_addr,
        } = self;
        let service = {
            let context = context.clone();
            service_fn(move |request| proxy::handle(context.clone(), request))
        };
        let builder = http_builder(&timeouts, &limits);
        let idle = timeouts.idle;
        let park_after = park::park_after(&timeouts);
        let generation = context.generation();
        let mut first = None;
        loop {
            let (io, returned) = SessionIo::new(stream, first.take(), context.clone());
            // Boxed: a parked connection's task does not carry hyper's state inline.
            let served =
                Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(io), service.clone()));
            let ended = Session {
                context: &context,
                idle,
                park_after,
                client_addr,
            }
            .drive(served, &mut close, revoked_later.as_mut())
            .await;
            let (Ended::Parked, Ok(back)) = (ended, returned.await) else {
                return;
            };
            stream = back;
            let waited = tokio::select! {
                read = park::next_byte(&mut stream) => match read {
                    Ok(Some(byte)) => Some(byte),
                    Ok(None) => return,
                    Err(error) => {
                        tracing::debug!(error = %error, "parked connection closed with an error");
                        return;
                    }
                },
                () = idle_expired(&context, idle) => {
                    tracing::debug!("closing idle connection");
                    None
                }
                () = context.close().notified() => None,
                refused = revoked(revoked_later.as_mut()) => {
                    revoked_warning(client_addr, &context, &refused);
                    None
                }
                _ = close.wait_for(|signal| signal.closes(generation).is_some()) => None,
            };
            match waited {
                Some(byte) => first = Some(byte),
                None => {
                    close_notify(stream).await;
                    return;
                }
            }
        }
    }
}

/// hyper's own HTTP/1.1 header field limit, the default of `limits.maxRequestHeaders`.
const HYPER_MAX_HEADERS: usize = 100;

/// How long a connection that has not started a request when a reload replaces its config
/// waits for its first one (sent before the client could know of the reload) before it closes.
const FIRST_REQUEST_AFTER_RELOAD: Duration = Duration::from_secs(1);

/// Streams one HTTP/2 connection may have open at once (nginx allows 128).
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// Resolves once a revocation learned after the handshake refuses the connection.
async fn revoked(refused: Option<&mut RevokedLater>) -> Arc<RevocationFailure> {
    match refused {
        Some(refused) => refused.wait().await,
        None => std::future::pending().await,
    }
}

/// The HTTP/1.1 and HTTP/2 settings every session of a connection is served with.
pub(super) fn http_builder(timeouts: &Timeouts, limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request_header)
        .max_buf_size(limits.max_request_header_bytes);
    // hyper parses up to 100 fields on the stack; any other count costs a heap allocation
    // per request, so only a changed limit is set.
    if limits.max_request_headers != HYPER_MAX_HEADERS {
        http1.max_headers(limits.max_request_headers);
    }
    // Bounded buffering whatever the client does (docs/operations.md "Memory under attack"): each
    // stream buffers at most one upstream chunk plus its send buffer.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(http2_header_list_limit(limits))
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
        .max_send_buf_size(UPSTREAM_READ_BUFFER);
    builder
}

/// How a hyper session ended.
enum Ended {
    /// The connection is done: closed by either side, idled out, drained or refused.
    Closed,
    /// The session ended by parking; the connection stays open.
    Parked,
}

/// What drives one hyper session of a connection.
struct Session<'a> {
    context: &'a Arc<ConnectionContext>,
    idle: Duration,
    park_after: Duration,
    client_addr: SocketAddr,
}

impl Session<'_> {
    /// Serves `served` until it ends, closing it gracefully on idle timeout, drain, shutdown,
    /// a reload (cut once its grace is over) or a later revocation, and asking it to park
    /// once HTTP/1.1 has gone quiet.
    async fn drive<F>(
        &self,
        mut served: Pin<Box<F>>,
        close: &mut watch::Receiver<CloseSignal>,
        mut revoked_later: Option<&mut RevokedLater>,
    ) -> Ended
    where
        F: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Graceful,
    {
        let context = self.context;
        // A deadline moved by activity, not a poll: the connection closes `idleMs` after its
        // last request ended, and an HTTP/1.1 one parks `park_after` after it.
        let timer = tokio::time::sleep(self.idle.min(self.park_after));
        tokio::pin!(timer);
        let generation = context.generation();
        let mut winding = Winding::default();
        loop {
            let step = tokio::select! {
                // The session first: a request already received is read (and answered, with
                // `Connection: close` when closing) before a reason to close is acted on.
                biased;
                result = served.as_mut() => return winding.ended(context, result),
                () = context.close().notified(), if !winding.closing => {
                    winding.close_asked(timer.as_mut())
                }
                refused = revoked(revoked_later.as_deref_mut()), if !winding.closing => {
                    revoked_warning(self.client_addr, context, &refused);
                    Step::Shutdown
                }
                signal = close.wait_for(|signal| signal.closes(generation).is_some()),
                    if !winding.closing && winding.reloaded.is_none() =>
                {
                    // A closed channel means the server is gone: as for shutdown.
                    let why = signal.ok().and_then(|signal| signal.closes(generation));
                    winding.signalled(why, context.awaits_first_request(), timer.as_mut())
                }
                () = timer.as_mut(), if !winding.closing || winding.cut_at_timer => {
                    self.timer_fired(&mut winding, timer.as_mut())
                }
            };
            match step {
                Step::Continue => {}
                Step::Shutdown => {
                    winding.closing = true;
                    Graceful::shutdown(served.as_mut());
                }
                Step::End => return Ended::Closed,
            }
        }
    }

    /// The idle timer went off: close an idle connection, park a quiet HTTP/1.1 one, end the
    /// reload grace, or set the timer to the next of these.
    fn timer_fired(&self, winding: &mut Winding, timer: Pin<&mut Sleep>) -> Step {
        let context = self.context;
        if winding.cut_at_timer {
            tracing::debug!("reload grace over, cutting the connection");
            return Step::End;
        }
        if winding.reloaded.is_some() {
            tracing::debug!("closing connection, no request since its config was replaced");
            return Step::Shutdown;
        }
        let now = tokio::time::Instant::now();
        let park = context
            .park_deadline(self.park_after)
            .filter(|_| !winding.parking);
        match context.idle_deadline(self.idle) {
            Some(deadline) if deadline <= now => {
                tracing::debug!("closing idle connection");
                return Step::Shutdown;
            }
            Some(deadline) => match park {
                Some(park) if park <= now => {
                    // The session ends at hyper's next read (with nothing left to flush),
                    // which the drive loop polls for right away.
                    winding.parking = true;
                    context.park();
                    timer.reset(deadline);
                }
                Some(park) => timer.reset(park.min(deadline)),
                None => timer.reset(deadline),
            },
            // Busy: the deadline is known once the last request ends.
            None => {
                winding.parking = false;
                context.unpark();
                timer.reset(now + self.idle.min(self.park_after));
            }
        }
        Step::Continue
    }
}

/// Where a session is on its way to its end.
#[derive(Debug, Default)]
struct Winding {
    /// Asked to close gracefully: what is in flight finishes, nothing new starts.
    closing: bool,
    /// Once a reload replaced the connection's config: the grace its requests get.
    reloaded: Option<Duration>,
    /// After a reload: the idle timer has become the end of the grace.
    cut_at_timer: bool,
    /// Asked to park once nothing is in flight.
    parking: bool,
}

/// What the drive loop does next.
enum Step {
    Continue,
    /// Close gracefully.
    Shutdown,
    /// Cut the connection now.
    End,
}

impl Winding {
    /// How the session's end is reported.
    fn ended(
        &self,
        context: &ConnectionContext,
        result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    ) -> Ended {
        match result {
            Err(error) => {
                context.connection_ended(&*error);
                tracing::debug!(error = %error, "connection closed with an error");
                Ended::Closed
            }
            Ok(()) if self.parking && !self.closing => Ended::Parked,
            Ok(()) => {
                tracing::debug!("connection closed");
                Ended::Closed
            }
        }
    }

    /// The proxy asked the connection to close after the current response.
    fn close_asked(&mut self, timer: Pin<&mut Sleep>) -> Step {
        if let Some(grace) = self.reloaded {
            // The first request after a reload started: it ends the connection.
            self.cut_at_timer = true;
            timer.reset(tokio::time::Instant::now() + grace);
        }
        Step::Shutdown
    }

    /// Shutdown, or a reload that replaced the connection's config (`why`).
    fn signalled(
        &mut self,
        why: Option<Close>,
        awaits_first_request: bool,
        timer: Pin<&mut Sleep>,
    ) -> Step {
        let now = tokio::time::Instant::now();
        match why {
            Some(Close::Reloaded { grace }) if grace.is_zero() => {
                tracing::debug!("closing connection, its config was replaced");
                Step::End
            }
            Some(Close::Reloaded { grace }) if awaits_first_request => {
                // Its handshake ended before the reload, so its first request is on its way:
                // served, with `Connection: close`, if it starts soon.
                self.reloaded = Some(grace);
                timer.reset(now + FIRST_REQUEST_AFTER_RELOAD.min(grace));
                Step::Continue
            }
            Some(Close::Reloaded { grace }) => {
                tracing::debug!(
                    "closing connection once in-flight requests end, its config was replaced"
                );
                self.reloaded = Some(grace);
                self.cut_at_timer = true;
                timer.reset(now + grace);
                Step::Shutdown
            }
            Some(Close::Shutdown) | None => Step::Shutdown,
        }
    }
}

/// hyper's graceful shutdown, for whichever connection type a session is served with.
trait Graceful {
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> Graceful for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Resolves once the connection has been idle for `idle` (its last request ended that long
/// ago).
async fn idle_expired(context: &ConnectionContext, idle: Duration) {
    let deadline = context
        .idle_deadline(idle)
        .unwrap_or_else(|| tokio::time::Instant::now() + idle);
    tokio::time::sleep_until(deadline).await;
}

fn revoked_warning(
    client_addr: SocketAddr,
    context: &ConnectionContext,
    refused: &RevocationFailure,
) {
    tracing::warn!(
        client.addr = %client_addr,
        app = %context.app().config.name,
        failure = refused.reason.as_str(),
        detail = %refused.detail,
        "closing connection, revocation learned after the handshake"
    );
}

/// Ends `stream` with a close_notify, bounded: a client that reads nothing cannot hold the task.
pub(super) async fn close_notify<S: tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let close = tokio::io::AsyncWriteExt::shutdown(&mut stream);
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}
