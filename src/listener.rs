//! The listeners (mTLS, and plain HTTP with `listenHttp`): the accept loop with its connection caps and accept-error backoff, and
//! where each connection runs: a task of its own on the worker thread with the fewest
//! connections (`balance`). What happens on the connection is `connection`'s.

pub(crate) mod balance;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument as _;

use crate::apps::LiveApps;
use crate::connection::caps::{CapSlots, Caps};
use crate::connection::{Handles, Slots};
use crate::drain::{CloseSignal, Draining};
use crate::metrics::{ConnectionLimit, Metrics};

use self::balance::{HandedOff, Load, Worker};
use crate::proxy::redirect::Redirect;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// mTLS, apps chosen by SNI (`listen`).
    Tls,
    /// Plain HTTP, apps chosen by each request's host (`listenHttp`).
    Plain,
}

impl Protocol {
    /// The listener's name in log lines.
    fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "mtls",
            Self::Plain => "http",
        }
    }
}

/// What the listeners use: the apps new connections are served under, the metrics, the
/// connection slots and the drain flag. The mTLS and plain-HTTP listeners share them, and so
/// share `maxConnections` and the per-client and pending-handshake caps.
#[derive(Debug)]
pub(crate) struct Listener {
    /// What every connection is run with.
    handles: Arc<Handles>,
    /// One permit per open connection (`limits.maxConnections`).
    pub connections: Arc<Semaphore>,
    /// The per-client and pending-handshake caps, shared by every accept loop; like
    /// `maxConnections`, they take effect on restart.
    caps: Caps,
}

impl Listener {
    /// The listener of `apps` (its caps are read from the apps' limits now); the plain-HTTP
    /// listener's redirects point to `https_port`.
    pub(crate) fn new(
        apps: LiveApps,
        metrics: Arc<Metrics>,
        connections: Arc<Semaphore>,
        draining: Draining,
        https_port: u16,
    ) -> Self {
        let caps = Caps::new(&apps.load().limits);
        Self {
            handles: Arc::new(Handles {
                apps,
                metrics,
                draining,
                redirect: Redirect::to_port(https_port),
            }),
            connections,
            caps,
        }
    }

    /// Accepts connections until `shutdown` turns true. On a worker thread, an mTLS
    /// connection another worker has fewer of goes to that worker (`balance`); a plain-HTTP
    /// one stays on the worker that accepted it.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<CloseSignal>,
        worker: Option<Worker>,
        protocol: Protocol,
    ) {
        let this = self;
        let caps = &this.caps;
        let mut last_limit_log: Option<Instant> = None;
        loop {
            let (tcp, client_addr) = tokio::select! {
                accepted = crate::accept::next(&listener, protocol.as_str()) => accepted,
                _ = shutdown.wait_for(|signal| signal.shutdown) => return,
            };
            let held = caps.take(client_addr.ip()).and_then(|held| {
                let permit = this.connections.clone().try_acquire_owned();
                permit
                    .map(|permit| (permit, held))
                    .map_err(|_| ConnectionLimit::MaxConnections)
            });
            let slots = match held {
                Ok(slots) => slots,
                Err(limit) => {
                    this.handles.metrics.connection_refused_by(limit);
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
            match (&worker, protocol) {
                (Some(worker), Protocol::Tls) => {
                    this.place(worker, tcp, client_addr, slots, &shutdown);
                }
                (None, Protocol::Tls) => {
                    this.spawn_connection(tcp, client_addr, slots, None, &shutdown);
                }
                (worker, Protocol::Plain) => {
                    let load = worker
                        .as_ref()
                        .map(|worker| worker.balance.count(worker.index));
                    this.spawn_plain(tcp, client_addr, slots, load, &shutdown);
                }
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
        slots: (OwnedSemaphorePermit, CapSlots),
        shutdown: &watch::Receiver<CloseSignal>,
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
        shutdown: watch::Receiver<CloseSignal>,
    ) {
        while let Some(handed) = inbox.recv().await {
            self.adopt_one(handed, &shutdown);
        }
    }

    fn adopt_one(self: &Arc<Self>, handed: HandedOff, shutdown: &watch::Receiver<CloseSignal>) {
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

    /// Serves one accepted plain-HTTP connection in a task of its own on this thread,
    /// counted on it (`load`) until it closes.
    fn spawn_plain(
        self: &Arc<Self>,
        tcp: TcpStream,
        client_addr: SocketAddr,
        slots: (OwnedSemaphorePermit, CapSlots),
        load: Option<Load>,
        shutdown: &watch::Receiver<CloseSignal>,
    ) {
        let _ = tcp.set_nodelay(true);
        let span = tracing::debug_span!(
            "connection",
            client.addr = tracing::field::Empty,
            listener = "http"
        );
        let (permit, held) = slots;
        let slots = Slots { permit, held, load };
        let task = self
            .handles
            .clone()
            .run_plain(tcp, client_addr, slots, shutdown.clone());
        tokio::spawn(task.instrument(span));
    }

    /// Serves one accepted connection in a task of its own on this thread, counted on it
    /// (`load`) until it closes.
    fn spawn_connection(
        self: &Arc<Self>,
        tcp: TcpStream,
        client_addr: SocketAddr,
        slots: (OwnedSemaphorePermit, CapSlots),
        load: Option<Load>,
        shutdown: &watch::Receiver<CloseSignal>,
    ) {
        let _ = tcp.set_nodelay(true);
        // `client.addr` is recorded once known: behind a balancer, from its PROXY header.
        let span = tracing::debug_span!("connection", client.addr = tracing::field::Empty);
        // The load goes into the connection's own future: an `async` block around it would
        // hold the future twice (captured, then awaited), about 6 KiB more per connection.
        let (permit, held) = slots;
        let slots = Slots { permit, held, load };
        let task = self
            .handles
            .clone()
            .run(tcp, client_addr, slots, shutdown.clone());
        tokio::spawn(task.instrument(span));
    }
}
