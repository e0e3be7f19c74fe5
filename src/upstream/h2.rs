//! HTTP/2 to one app (h2c, or h2 over TLS): the exchange, and the connections, one per worker
//! thread, shared by the requests of that thread whatever authority each names (it only
//! becomes `:authority`), dialed once by the first request that needs it while the others wait
//! for that dial. A request's `:scheme` is that of the endpoint it goes to, whatever group
//! the rewrite took it from. A connection without open streams for `H2_IDLE_TIMEOUT` is let
//! go: with no handle left, hyper closes it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Uri;
use http::uri::Scheme;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::error::{Attempt, UpstreamError};
use super::limit::Connections;
use super::limit::{Slot, Waited};
use super::request_body::RequestBody;
use super::stream::Alert;
use super::stream::Dialer;
use crate::workers::PerWorker;

/// How long an unused HTTP/2 connection is kept.
pub(super) const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The result of one dial, shared by the requests that waited for it.
type Dial = OnceCell<Result<H2Connection, Arc<UpstreamError>>>;

/// One app's HTTP/2 connections, one slot per worker thread.
#[derive(Debug)]
pub(super) struct H2Pools {
    slots: PerWorker<Mutex<Option<Arc<Dial>>>>,
}

/// A handle on an open HTTP/2 connection.
#[derive(Debug, Clone)]
pub(super) struct H2Connection {
    pub sender: http2::SendRequest<RequestBody>,
    /// What records an alert the app sends on it.
    pub alert: Alert,
    usage: Arc<Usage>,
}

/// Open streams of one connection, and since when it has had none.
#[derive(Debug)]
pub(super) struct Usage {
    streams: AtomicUsize,
    /// Milliseconds from `opened` to the moment the last stream ended.
    idle_since: AtomicU64,
    opened: Instant,
}

/// One request's stream on a connection: counted open until dropped.
#[derive(Debug)]
pub(super) struct Stream {
    usage: Arc<Usage>,
}

/// What dialing a new HTTP/2 connection to the app uses: the app's client lends it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dialing<'a> {
    pub dialer: &'a Dialer,
    /// The app's bound on open connections, and whether its client was retired.
    pub connections: &'a Connections,
    /// `upstreamConnectMs`: also how long a request waits for a connection slot.
    pub connect_timeout: Duration,
}

impl Dialing<'_> {
    /// Sends an HTTP/2 request on this worker's connection to the app; a connection that
    /// closed before it took the request is replaced once. The response comes with its
    /// stream, counted open until the response body is done.
    pub(super) async fn exchange_h2(
        &self,
        h2: &Arc<H2Pools>,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Stream), Attempt> {
        // The rewrite wrote the scheme of the app's `upstream`: a revision of the other one
        // (`https://` beside `http://`) goes out with its own.
        set_scheme(&mut request, self.dialer.scheme());
        let not_sent = |error, request| Attempt::NotSent {
            error,
            request: Box::new(request),
        };
        let mut connection = match self.h2_connection(h2).await {
            Ok(connection) => connection,
            Err(error) => return Err(not_sent(error, request)),
        };
        let stream = connection.stream();
        let response = match connection.sender.try_send_request(request).await {
            Ok(response) => (response, stream),
            Err(mut error) => match error.take_message() {
                // Not sent: the connection closed (the app's GOAWAY, or idle) meanwhile.
                Some(request) if connection.sender.is_closed() => {
                    drop(stream);
                    connection = match self.h2_connection(h2).await {
                        Ok(connection) => connection,
                        Err(error) => return Err(not_sent(error, request)),
                    };
                    let stream = connection.stream();
                    match connection.sender.send_request(request).await {
                        Ok(response) => (response, stream),
                        Err(source) => {
                            return Err(Attempt::Sent(self.h2_failure(&connection, source)));
                        }
                    }
                }
                _ => {
                    return Err(Attempt::Sent(
                        self.h2_failure(&connection, error.into_error()),
                    ));
                }
            },
        };
        Ok(response)
    }

    /// Why an HTTP/2 exchange failed: the app's alert on its connection (or on another one
    /// just now), or the HTTP/2 error.
    fn h2_failure(&self, connection: &H2Connection, source: hyper::Error) -> UpstreamError {
        match connection
            .alert
            .failure()
            .or_else(|| self.dialer.recent_alert())
        {
            Some(reason) => UpstreamError::Tls {
                reason,
                source: Box::new(source),
            },
            None => UpstreamError::H2c { source },
        }
    }

    /// This worker's HTTP/2 connection, dialed if it has none; when every slot is taken,
    /// another worker's connection, or the first slot or connection that comes free.
    async fn h2_connection(&self, h2: &Arc<H2Pools>) -> Result<H2Connection, UpstreamError> {
        h2.connection(|| async {
            let slot = match self.connections.try_slot()? {
                Some(slot) => slot,
                None => {
                    let deadline = Instant::now() + self.connect_timeout;
                    match self.connections.wait(deadline, || h2.any()).await? {
                        Waited::Slot(slot) => slot,
                        Waited::Connection(connection) => return Ok(connection),
                    }
                }
            };
            let connection = self.connect_h2(h2, slot).await?;
            self.connections.connection_usable();
            Ok(connection)
        })
        .await
    }

    /// A new HTTP/2 connection in `slot`, driven by this worker until it closes; let go once
    /// idle for `H2_IDLE_TIMEOUT`.
    async fn connect_h2(
        &self,
        h2: &Arc<H2Pools>,
        slot: Slot,
    ) -> Result<H2Connection, UpstreamError> {
        let stream = self.dialer.dial(slot).await?;
        let alert = stream.alert();
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::H2c { source })?;
        let connection_handle = H2Connection::new(sender, alert);
        let usage = connection_handle.usage();
        let pools = h2.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                result = &mut connection => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "upstream connection closed with an error");
                    }
                    return;
                }
                () = usage.idle_expired() => pools.forget_idle(&usage),
            }
            // No handle is left: hyper ends the connection.
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "upstream connection closed with an error");
            }
        });
        Ok(connection_handle)
    }
}

/// Makes `scheme` the scheme of `request`'s URI (HTTP/2's `:scheme`), when it names another;
/// the rest of the URI is kept.
fn set_scheme<B>(request: &mut Request<B>, scheme: Scheme) {
    if request.uri().scheme() == Some(&scheme) {
        return;
    }
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    // The rewrite gives every HTTP/2 request an authority, without which no scheme is valid.
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

impl H2Pools {
    pub(super) fn new(workers: usize) -> Self {
        Self {
            slots: PerWorker::new(workers, Mutex::default),
        }
    }

    /// The calling worker's connection, dialed by `dial` (once, for all the requests that ask
    /// meanwhile) when it has none open; `dial` is not called when `retired` says so.
    pub(super) async fn connection<F>(
        &self,
        dial: impl FnOnce() -> F,
    ) -> Result<H2Connection, UpstreamError>
    where
        F: Future<Output = Result<H2Connection, UpstreamError>>,
    {
        let pending = {
            // A poisoned lock only means a panic elsewhere mid-update of a plain slot.
            let mut slot = self
                .slots
                .mine()
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Some(dial) if !ended(dial) => dial.clone(),
                _ => {
                    let dial = Arc::new(Dial::new());
                    *slot = Some(dial.clone());
                    dial
                }
            }
        };
        let result = pending
            .get_or_init(|| async { dial().await.map_err(Arc::new) })
            .await;
        match result {
            Ok(connection) => Ok(connection.clone()),
            Err(error) => {
                self.forget(|dial| Arc::ptr_eq(dial, &pending));
                Err(UpstreamError::Shared(error.clone()))
            }
        }
    }

    /// Any worker's open connection: for a request that finds no slot free to dial its own.
    pub(super) fn any(&self) -> Option<H2Connection> {
        self.slots.all().find_map(|slot| {
            let slot = slot.lock().ok()?;
            let connection = slot.as_ref()?.get()?.as_ref().ok()?;
            (!connection.sender.is_closed()).then(|| connection.clone())
        })
    }

    /// Lets go of the connection `usage` counts, in every worker's slot that holds it (a
    /// worker that found no slot free may hold another's).
    pub(super) fn forget_idle(&self, usage: &Arc<Usage>) {
        for slot in self.slots.all() {
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = slot.as_ref().and_then(|dial| dial.get()).is_some_and(
                |dialed| matches!(dialed, Ok(connection) if Arc::ptr_eq(&connection.usage, usage)),
            );
            if idle {
                slot.take();
            }
        }
    }

    /// Lets go of every worker's connection: each closes once its open streams end.
    pub(super) fn close_all(&self) {
        for slot in self.slots.all() {
            if let Ok(mut slot) = slot.lock() {
                slot.take();
            }
        }
    }

    fn forget(&self, which: impl Fn(&Arc<Dial>) -> bool) {
        if let Ok(mut slot) = self.slots.mine().lock()
            && slot.as_ref().is_some_and(which)
        {
            slot.take();
        }
    }
}

/// Whether a dial failed or its connection has closed: the next request dials anew.
fn ended(dial: &Dial) -> bool {
    match dial.get() {
        None => false,
        Some(Ok(connection)) => connection.sender.is_closed(),
        Some(Err(_)) => true,
    }
}

impl H2Connection {
    /// A handle on a connection just opened, and what tells when it has been idle too long.
    pub(super) fn new(sender: http2::SendRequest<RequestBody>, alert: Alert) -> Self {
        Self {
            sender,
            alert,
            usage: Arc::new(Usage {
                streams: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
                opened: Instant::now(),
            }),
        }
    }

    pub(super) fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }

    /// Counts a stream open until the returned guard drops.
    pub(super) fn stream(&self) -> Stream {
        self.usage.streams.fetch_add(1, Ordering::AcqRel);
        Stream {
            usage: self.usage.clone(),
        }
    }
}

impl Usage {
    /// Returns once the connection has had no open stream for `H2_IDLE_TIMEOUT`.
    pub(super) async fn idle_expired(&self) {
        loop {
            let idle_from = if self.streams.load(Ordering::Acquire) > 0 {
                Instant::now()
            } else {
                self.opened + Duration::from_millis(self.idle_since.load(Ordering::Acquire))
            };
            let expires = idle_from + H2_IDLE_TIMEOUT;
            if expires <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(expires).await;
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.usage.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = self.usage.opened.elapsed().as_millis();
            self.usage
                .idle_since
                .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn the_scheme_is_replaced_and_the_rest_of_the_target_kept() {
        let mut request = Request::get("http://app.example.test:8443/a?b=1")
            .body(())
            .unwrap();
        set_scheme(&mut request, Scheme::HTTPS);
        assert_eq!(request.uri(), "https://app.example.test:8443/a?b=1");
        set_scheme(&mut request, Scheme::HTTPS);
        assert_eq!(request.uri(), "https://app.example.test:8443/a?b=1");
        set_scheme(&mut request, Scheme::HTTP);
        assert_eq!(request.uri(), "http://app.example.test:8443/a?b=1");
    }
}
