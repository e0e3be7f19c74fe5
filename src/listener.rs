//! The mTLS listener: accept loop with a connection limit and accept-error backoff, then one
//! task per connection, on the worker thread with the fewest connections (`balance`), that
//! runs the handshake and serves HTTP/1.1 or HTTP/2 on it until the client leaves, the
//! connection idles out, or shutdown drains it.

mod admission;
pub(crate) mod balance;
mod session;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument as _;

use crate::apps::LiveApps;
use crate::drain::Draining;
use crate::metrics::{ConnectionLimit, Metrics};
use crate::proxy;
use crate::proxy::client::VerifiedClient;
use crate::proxy::context::ConnectionContext;
use crate::proxy::header_limits::http2_header_list_limit;
use crate::proxy::upstream::UPSTREAM_READ_BUFFER;
use crate::proxy_protocol::ProxyHeaderError;
use crate::settings::{ClientCertMode, Limits, RejectWith, Timeouts};
use crate::tls::accept::{AcceptError, accept};
use crate::tls::policy::Refusal;

use self::balance::{HandedOff, Load, Worker};

/// What the mTLS listener uses: the apps new connections are served under, the metrics, its
/// connection slots and the drain flag.
#[derive(Debug)]
pub(crate) struct Listener {
    /// Loaded once per connection, at accept.
    pub apps: LiveApps,
    /// For handshake failures and refused connections.
    pub metrics: Arc<Metrics>,
    /// One permit per open connection (`limits.maxConnections`).
    pub connections: Arc<Semaphore>,
    /// Handed to every connection.
    pub draining: Draining,
    /// The per-client and pending-handshake caps, shared by every accept loop; like
    /// `maxConnections`, they take effect on restart.
    admission: admission::Admission,
}

impl Listener {
    /// The listener of `apps` (its caps are read from the apps' limits now).
    pub(crate) fn new(
        apps: LiveApps,
        metrics: Arc<Metrics>,
        connections: Arc<Semaphore>,
        draining: Draining,
    ) -> Self {
        let admission = admission::Admission::new(&apps.load().limits);
        Self {
            apps,
            metrics,
            connections,
            draining,
            admission,
        }
    }

    /// Accepts connections until `shutdown` turns true. On a worker thread, a connection
    /// another worker has fewer of goes to that worker (`balance`).
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        worker: Option<Worker>,
    ) {
        let this = self;
        let admission = &this.admission;
        let mut last_limit_log: Option<Instant> = None;
        loop {
            let (tcp, client_addr) = tokio::select! {
                accepted = crate::accept::next(&listener, "mtls") => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let admitted = admission.admit(client_addr.ip()).and_then(|admitted| {
                let permit = this.connections.clone().try_acquire_owned();
                permit
                    .map(|permit| (permit, admitted))
                    .map_err(|_| ConnectionLimit::MaxConnections)
            });
            let slots = match admitted {
                Ok(slots) => slots,
                Err(limit) => {
                    this.metrics.connection_refused_by(limit);
                    // Refuse promptly: closing now tells the client to retry elsewhere.
                    if last_limit_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        last_limit_log = Some(Instant::now());
                        tracing::warn!(
                            client.addr = %client_addr,
                            limit = limit.as_str(),
                            "connection limit reached, refusing connections"
                        );
                    }
                    drop(tcp);
                    continue;
                }
            };
            match &worker {
                Some(worker) => this.place(worker, tcp, client_addr, slots, &shutdown),
                None => this.spawn_connection(tcp, client_addr, slots, None, &shutdown),
            }
        }
    }

    /// Serves a connection that `worker` accepted on the worker with the fewest connections:
    /// here, or handed over to another one.
    fn place(
        self: &Arc<Self>,
        worker: &Worker,
        tcp: TcpStream,
        client_addr: SocketAddr,
        slots: (OwnedSemaphorePermit, admission::Admitted),
        shutdown: &watch::Receiver<bool>,
    ) {
        let (to, load) = worker.balance.assign(worker.index);
        if to == worker.index {
            self.spawn_connection(tcp, client_addr, slots, Some(load), shutdown);
            return;
        }
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::debug!(client.addr = %client_addr, error = %error, "cannot hand the connection to another worker");
                return;
            }
        };
        let handed = HandedOff {
            tcp,
            client_addr,
            slots,
            load,
        };
        // Only a worker whose thread has ended refuses; then this one serves the connection.
        if let Err(handed) = worker.balance.hand_off(to, handed) {
            let load = worker.balance.count(worker.index);
            self.adopt_one(HandedOff { load, ..handed }, shutdown);
        }
    }

    /// Serves the connections other workers hand to this one, for as long as it runs.
    pub(crate) async fn adopt(
        self: Arc<Self>,
        mut inbox: tokio::sync::mpsc::UnboundedReceiver<HandedOff>,
        shutdown: watch::Receiver<bool>,
    ) {
        while let Some(handed) = inbox.recv().await {
            self.adopt_one(handed, &shutdown);
        }
    }

    fn adopt_one(self: &Arc<Self>, handed: HandedOff, shutdown: &watch::Receiver<bool>) {
        let HandedOff {
            tcp,
            client_addr,
            slots,
            load,
        } = handed;
        match TcpStream::from_std(tcp) {
            Ok(tcp) => self.spawn_connection(tcp, client_addr, slots, Some(load), shutdown),
            Err(error) => {
                tracing::debug!(client.addr = %client_addr, error = %error, "cannot take over the connection");
            }
        }
    }

    /// Serves one accepted connection in a task of its own on this thread, counted on it
    /// (`load`) until it closes.
    fn spawn_connection(
        self: &Arc<Self>,
        tcp: TcpStream,
        client_addr: SocketAddr,
        slots: (OwnedSemaphorePermit, admission::Admitted),
        load: Option<Load>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let _ = tcp.set_nodelay(true);
        // `client.addr` is recorded once known: behind a balancer, from its PROXY header.
        let span = tracing::debug_span!("connection", client.addr = tracing::field::Empty);
        // The load goes into the connection's own future: an `async` block around it would
        // hold the future twice (captured, then awaited), 5.6 KiB more per connection.
        let task = self
            .clone()
            .connection(tcp, client_addr, (slots, load), shutdown.clone());
        tokio::spawn(task.instrument(span));
    }

    async fn connection(
        self: Arc<Self>,
        mut tcp: TcpStream,
        peer_addr: SocketAddr,
        ((permit, admitted), _load): ((OwnedSemaphorePermit, admission::Admitted), Option<Load>),
        mut shutdown: watch::Receiver<bool>,
    ) {
        let apps = self.apps.load_full();
        // One deadline for the PROXY header, the ClientHello and the handshake.
        let deadline = tokio::time::Instant::now() + apps.timeouts.handshake;
        let client_addr = match &apps.proxy_protocol {
            Some(proxy) => match Box::pin(proxy.accept(&mut tcp, peer_addr, deadline)).await {
                Ok(client_addr) => client_addr,
                Err(error) => {
                    self.proxy_refused(&error, peer_addr);
                    return;
                }
            },
            None => peer_addr,
        };
        tracing::Span::current().record("client.addr", tracing::field::display(client_addr));
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // The handshake's state (about 7 KiB: the ClientHello reader, rustls' handshake, their
        // deadlines) lives on the heap until the handshake ends: kept inline, this task would
        // carry its size for as long as the connection stays open.
        let accepted = match Box::pin(accept(tcp, &apps, left)).await {
            Ok(accepted) => accepted,
            Err(error) => {
                self.refused(&error, client_addr);
                return;
            }
        };
        // Handshake over: its pending slot frees; the per-client slot lives with the connection.
        drop(admitted.handshake);
        let _client_slot = admitted.client;
        let app = accepted.app;
        let session = accepted.stream.get_ref().1;
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        // A certificate an `ignore` app did not ask for is never used, whatever a session holds.
        let peer_chain = session
            .peer_certificates()
            .filter(|_| app.config.mode != ClientCertMode::Ignore);
        let sni = accepted.sni.as_deref().unwrap_or("");
        let mut refusal = proxy::refuse::judge(&app.config, peer_chain, resumed);
        // Read before the check, so that a revocation learned during it is not missed.
        let generation = app.config.revocation.as_ref().map_or(0, |r| r.generation());
        // Revocation beyond crlFiles is decided here, before any request is read, for full
        // and resumed handshakes alike (README "Revocation").
        let mut checked = None;
        if let (None, Some(revocation), Some(chain)) =
            (&refusal, &app.config.revocation, peer_chain)
        {
            match Box::pin(revocation.admit(chain)).await {
                Ok(path) => checked = Some((revocation, path)),
                Err(refused) => {
                    let leaf = chain.first().map_or(&[][..], |leaf| leaf.as_ref());
                    refusal = Some(Box::new(refused.to_policy(leaf)));
                }
            }
        }
        if let Some(refused) = &refusal {
            let reject_with = app.config.reject_with;
            self.refused_after_handshake(&app.config.name, sni, refused, reject_with, client_addr);
            if app.config.reject_with == RejectWith::Tls {
                close_notify(accepted.stream).await;
                return;
            }
        }
        let refusal = refusal.map(|refused| proxy::refuse::RefusalPage::new(*refused));
        // A revocation learned while the connection is open closes it, and any WebSocket
        // it upgraded to, before another request is forwarded (README "Revocation").
        let standing = checked.map(|(revocation, path)| revocation.watch(path, generation));
        let mut revoked_later = standing.as_ref().map(|standing| standing.refused());
        let identity = match peer_chain.filter(|_| refusal.is_none()) {
            Some(chain) => {
                match VerifiedClient::new(
                    chain,
                    app.config.xfcc_fields,
                    app.config.request_policy.formats,
                    apps.limits.max_xfcc_bytes,
                ) {
                    Ok(identity) => Some(identity),
                    Err(error) => {
                        tracing::warn!(app = %app.config.name, error = %error, "closing connection");
                        return;
                    }
                }
            }
            None => None,
        };
        tracing::debug!(
            app = %app.config.name,
            sni,
            resumed,
            client.hash = identity.as_ref().map_or("", |client| client.identity.hash.as_str()),
            "handshake complete"
        );
        let timeouts = apps.timeouts;
        let limits = apps.limits;
        let context = Arc::new(
            ConnectionContext::new(
                app,
                apps,
                self.draining.clone(),
                permit,
                client_addr,
                accepted.sni,
                identity,
            )
            .with_refusal(refusal)
            .with_standing(standing),
        );
        let service = {
            let context = context.clone();
            service_fn(move |request| proxy::handle(context.clone(), request))
        };
        let builder = http_builder(&timeouts, &limits);
        let idle = timeouts.idle;
        let park_after = session::park_after(&timeouts);
        let mut stream = accepted.stream;
        let mut first = None;
        // One hyper session per burst of requests: an HTTP/1.1 connection that goes quiet
        // parks between them (README "Memory while idle").
        loop {
            let (io, returned) = session::SessionIo::new(stream, first.take(), context.clone());
            // Boxed: a parked connection's task does not carry hyper's state inline.
            let served =
                Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(io), service.clone()));
            let ended = Session {
                context: &context,
                idle,
                park_after,
                client_addr,
            }
            .drive(served, &mut shutdown, revoked_later.as_mut())
            .await;
            let (Ended::Parked, Ok(back)) = (ended, returned.await) else {
                return;
            };
            stream = back;
            let waited = tokio::select! {
                read = session::next_byte(&mut stream) => match read {
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
                () = context.close.notified() => None,
                refused = revoked(revoked_later.as_mut()) => {
                    revoked_warning(client_addr, &context, &refused);
                    None
                }
                _ = shutdown.wait_for(|stop| *stop) => None,
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

    fn proxy_refused(&self, error: &ProxyHeaderError, peer_addr: SocketAddr) {
        let reason = error.reason();
        self.metrics.proxy_protocol_refused(reason);
        tracing::warn!(
            peer.addr = %peer_addr,
            failure = reason.as_str(),
            error = %crate::error_chain(error),
            "connection refused before the handshake"
        );
    }

    fn refused(&self, error: &AcceptError, client_addr: SocketAddr) {
        let Some(reason) = error.reason() else {
            tracing::debug!(client.addr = %client_addr, "connection closed before handshake");
            return;
        };
        let app = error.app().map_or("", |app| app.config.name.as_str());
        self.metrics.handshake_failed(app, reason);
        let sni = error.sni().unwrap_or("");
        let detail = error
            .refusal()
            .map_or("", |refusal| refusal.detail.as_str());
        match error
            .refusal()
            .and_then(|refusal| refusal.presented.as_ref())
        {
            Some(leaf) => tracing::warn!(
                client.addr = %client_addr,
                sni,
                app,
                failure = reason.as_str(),
                client.subject = %leaf.subject,
                client.issuer = %leaf.issuer,
                client.serial = %leaf.serial,
                client.hash = %leaf.hash,
                detail,
                error = %crate::error_chain(error),
                "handshake refused"
            ),
            None => tracing::warn!(
                client.addr = %client_addr,
                sni,
                app,
                failure = reason.as_str(),
                detail,
                error = %crate::error_chain(error),
                "handshake refused"
            ),
        }
    }

    /// A certificate refused once the handshake is done: by the revocation check, by the
    /// policy a resumed session is judged under, or with `rejectWith: "http"` (then the
    /// connection answers 495/496 itself). Counted and logged like a refused handshake, once
    /// per connection.
    fn refused_after_handshake(
        &self,
        app: &str,
        sni: &str,
        refusal: &Refusal,
        reject_with: RejectWith,
        client_addr: SocketAddr,
    ) {
        self.metrics.handshake_failed(app, refusal.reason);
        let leaf = refusal.presented.clone().unwrap_or_default();
        macro_rules! refused {
            ($message:literal) => {
                tracing::warn!(
                    client.addr = %client_addr,
                    sni,
                    app,
                    failure = refusal.reason.as_str(),
                    client.subject = %leaf.subject,
                    client.issuer = %leaf.issuer,
                    client.serial = %leaf.serial,
                    client.hash = %leaf.hash,
                    detail = %refusal.detail,
                    reject_with = reject_with.as_str(),
                    $message
                )
            };
        }
        match reject_with {
            RejectWith::Tls => refused!("handshake refused"),
            RejectWith::Http => refused!("certificate refused"),
        }
    }
}

/// hyper's own HTTP/1.1 header field limit, the default of `limits.maxRequestHeaders`.
const HYPER_MAX_HEADERS: usize = 100;

/// Streams one HTTP/2 connection may have open at once (nginx allows 128).
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// Resolves once a revocation learned after the handshake refuses the connection.
async fn revoked(
    refused: Option<&mut crate::revocation::Refused>,
) -> Arc<crate::revocation::Refusal> {
    match refused {
        Some(refused) => refused.wait().await,
        None => std::future::pending().await,
    }
}

/// The HTTP/1.1 and HTTP/2 settings every session of a connection is served with.
fn http_builder(timeouts: &Timeouts, limits: &Limits) -> auto::Builder<TokioExecutor> {
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
    // Bounded buffering whatever the client does (README "Memory under attack"): each
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
    /// Serves `served` until it ends, closing it gracefully on idle timeout, drain, shutdown
    /// or a later revocation, and asking it to park once HTTP/1.1 has gone quiet.
    async fn drive<F>(
        &self,
        mut served: Pin<Box<F>>,
        shutdown: &mut watch::Receiver<bool>,
        mut revoked_later: Option<&mut crate::revocation::Refused>,
    ) -> Ended
    where
        F: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Graceful,
    {
        let context = self.context;
        let (idle, park_after) = (self.idle, self.park_after);
        // A deadline moved by activity, not a poll: the connection closes `idleMs` after its
        // last request ended, and an HTTP/1.1 one parks `park_after` after it.
        let idle_timer = tokio::time::sleep(idle.min(park_after));
        tokio::pin!(idle_timer);
        let mut closing = false;
        let mut parking = false;
        loop {
            tokio::select! {
                result = served.as_mut() => {
                    return match result {
                        Err(error) => {
                            context.connection_ended(&*error);
                            tracing::debug!(error = %error, "connection closed with an error");
                            Ended::Closed
                        }
                        Ok(()) if parking && !closing => Ended::Parked,
                        Ok(()) => {
                            tracing::debug!("connection closed");
                            Ended::Closed
                        }
                    };
                }
                () = context.close.notified(), if !closing => {
                    closing = true;
                    Graceful::shutdown(served.as_mut());
                }
                refused = revoked(revoked_later.as_deref_mut()), if !closing => {
                    revoked_warning(self.client_addr, context, &refused);
                    closing = true;
                    Graceful::shutdown(served.as_mut());
                }
                _ = shutdown.wait_for(|stop| *stop), if !closing => {
                    closing = true;
                    Graceful::shutdown(served.as_mut());
                }
                () = idle_timer.as_mut(), if !closing => {
                    let now = tokio::time::Instant::now();
                    let park = context.park_deadline(park_after).filter(|_| !parking);
                    match context.idle_deadline(idle) {
                        Some(deadline) if deadline <= now => {
                            tracing::debug!("closing idle connection");
                            closing = true;
                            Graceful::shutdown(served.as_mut());
                        }
                        Some(deadline) => match park {
                            Some(park) if park <= now => {
                                // The session ends at hyper's next read (with nothing left
                                // to flush), which this loop polls for right away.
                                parking = true;
                                context.park();
                                idle_timer.as_mut().reset(deadline);
                            }
                            Some(park) => idle_timer.as_mut().reset(park.min(deadline)),
                            None => idle_timer.as_mut().reset(deadline),
                        },
                        // Busy: the deadline is known once the last request ends.
                        None => {
                            parking = false;
                            context.unpark();
                            idle_timer.as_mut().reset(now + idle.min(park_after));
                        }
                    }
                }
            }
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
    refused: &crate::revocation::Refusal,
) {
    tracing::warn!(
        client.addr = %client_addr,
        app = %context.app.config.name,
        failure = refused.reason.as_str(),
        detail = %refused.detail,
        "closing connection, revocation learned after the handshake"
    );
}

/// Ends `stream` with a close_notify, bounded: a client that reads nothing cannot hold the task.
async fn close_notify<S: tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let close = tokio::io::AsyncWriteExt::shutdown(&mut stream);
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}
