//! The server as a whole: binds the listeners and wires each stage to the narrow handles it
//! uses (the swappable apps, the metrics, the connection limit, the drain flag). This is the
//! only module that knows them all; it runs until shutdown, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Semaphore, watch};

use crate::apps::build::LoadedConfig;
use crate::apps::{Apps, LiveApps};
use crate::drain::{CloseSignal, Draining};
use crate::listener::balance::{Balance, HandedOff, Worker};
use crate::listener::{Listener, Protocol};
use crate::metrics::Metrics;
use crate::reload::{ConfigSource, Reloader, RestartOnly};
use crate::revocation::Memory;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread {index}")]
    Worker {
        index: usize,
        source: std::io::Error,
    },
}

/// A bound, ready-to-run certgate.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    admin: Option<TcpListener>,
    /// The plain-HTTP listener (`listenHttp`), when enabled.
    plain: Option<TcpListener>,
    apps: LiveApps,
    metrics: Arc<Metrics>,
    connections: Arc<Semaphore>,
    max_connections: usize,
    draining: Draining,
    /// Tells open connections that shutdown began or that a reload replaced their config.
    close: Arc<watch::Sender<CloseSignal>>,
    reloader: Reloader,
    watched: Vec<std::path::PathBuf>,
    /// Threads that accept and serve connections; 0 serves them on the caller's runtime.
    worker_threads: usize,
}

impl Server {
    /// Binds the listeners of a loaded config. With `source`, the config is reloaded on
    /// SIGHUP and when any file it was read from changes. Connections are served on
    /// `worker_threads` threads of their own, each with a single-threaded runtime that accepts
    /// from the shared socket and runs everything of the connections it accepted (TLS, HTTP,
    /// the upstream connections they use): no task moves between threads and no wake-up
    /// crosses them. With 0, they are served on the caller's runtime. Admin, reload and
    /// signals stay on the caller's runtime.
    pub async fn bind(
        loaded: &LoadedConfig,
        source: Option<ConfigSource>,
        worker_threads: usize,
    ) -> Result<Self, RunError> {
        let config = &loaded.config;
        let listener = bind(config.listen).await?;
        let admin = match config.admin {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let plain = match config.listen_http {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        // What revocation learns outlives each config generation: every one shares it.
        let memory = Arc::new(Memory::default());
        let apps = Apps::new(loaded, &metrics, worker_threads, 0);
        apps.start(&metrics, &memory, None);
        apps.settle_names(tokio::time::Instant::now() + config.timeouts.upstream_connect)
            .await;
        let apps: LiveApps = Arc::new(ArcSwap::from_pointee(apps));
        let max_connections = config.limits.max_connections;
        let close = Arc::new(watch::Sender::new(CloseSignal {
            shutdown: false,
            generation: 0,
            reload_grace: config.timeouts.reload_grace,
        }));
        let reloader = Reloader::new(
            apps.clone(),
            metrics.clone(),
            memory,
            source,
            RestartOnly::of(config),
            worker_threads,
            close.clone(),
        );
        Ok(Self {
            listener,
            admin,
            plain,
            apps,
            metrics,
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            draining: Draining::default(),
            close,
            reloader,
            watched: config.files.clone(),
            worker_threads,
        })
    }

    /// The address the mTLS listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        local_addr(&self.listener)
    }

    /// The address the admin listener is bound to, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(local_addr)
    }

    /// The address the plain-HTTP listener is bound to, when there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().map(local_addr)
    }

    /// A handle that reloads the config on demand (what SIGHUP does).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves until `shutdown` completes, then drains: `/readyz` turns 503 at once, the
    /// listener keeps accepting and serving for `timeouts.drainDelayMs` (while balancers take
    /// this replica out), then accepting stops, idle connections close and in-flight requests
    /// finish, for at most `timeouts.shutdownGraceMs`.
    ///
    /// `shutdown` says how to stop: `()` or [`Stop::Drain`] keeps the drain delay,
    /// [`Stop::SkipDrainDelay`] drains at once.
    pub async fn run<S: Into<Stop>>(
        self,
        shutdown: impl Future<Output = S>,
    ) -> Result<(), RunError> {
        let stop_rx = self.close.subscribe();
        let listener = Arc::new(Listener::new(
            self.apps.clone(),
            self.metrics.clone(),
            self.connections.clone(),
            self.draining.clone(),
            local_addr(&self.listener).port(),
        ));
        let (done_tx, done_rx) = watch::channel(false);
        let mut accepting = if self.worker_threads == 0 {
            let mut loops = vec![tokio::spawn(listener.clone().serve(
                self.listener,
                stop_rx.clone(),
                None,
                Protocol::Tls,
            ))];
            if let Some(plain) = self.plain {
                loops.push(tokio::spawn(listener.serve(
                    plain,
                    stop_rx.clone(),
                    None,
                    Protocol::Plain,
                )));
            }
            Accepting::Here(loops)
        } else {
            let to_std = |socket: TcpListener| {
                socket
                    .into_std()
                    .map_err(|source| RunError::Worker { index: 0, source })
            };
            let socket = to_std(self.listener)?;
            let plain = self.plain.map(to_std).transpose()?;
            let threads = Threads {
                count: self.worker_threads,
                stop: stop_rx.clone(),
                done: done_rx,
            };
            threads.start(&self.metrics, &listener, socket, plain)?
        };
        let admin = self.admin.map(|admin| {
            tokio::spawn(crate::admin::serve(
                admin,
                crate::admin::Admin {
                    metrics: self.metrics.clone(),
                    draining: self.draining.clone(),
                    apps: self.apps.clone(),
                },
            ))
        });
        let watcher = self
            .reloader
            .has_source()
            .then(|| tokio::spawn(crate::reload::watch(self.reloader, self.watched, stop_rx)));
        let stop = shutdown.await.into();
        let stopping = Stopping {
            apps: self.apps,
            draining: self.draining,
            close: self.close,
            connections: self.connections,
            max_connections: self.max_connections,
        };
        stopping.drain(stop, &mut accepting).await;
        for task in [admin, watcher].into_iter().flatten() {
            task.abort();
        }
        // The worker runtimes end here, closing what is left of their connections.
        let _ = done_tx.send(true);
        accepting_ended(accepting).await;
        Ok(())
    }
}

/// How a shutdown asks [`Server::run`] to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stop {
    /// Not ready at once, still accepting for `timeouts.drainDelayMs` (while balancers take
    /// this replica out), then drain.
    #[default]
    Drain,
    /// Drain without the delay: no balancer is watching (Ctrl-C at a terminal).
    SkipDrainDelay,
}

impl From<()> for Stop {
    fn from((): ()) -> Self {
        Self::Drain
    }
}

/// The worker threads to start, and what tells them to stop accepting and to end.
struct Threads {
    count: usize,
    stop: watch::Receiver<CloseSignal>,
    done: watch::Receiver<bool>,
}

impl Threads {
    /// Starts the worker threads, each accepting from its copy of `socket` and of `plain`.
    fn start(
        self,
        metrics: &Metrics,
        listener: &Arc<Listener>,
        socket: std::net::TcpListener,
        plain: Option<std::net::TcpListener>,
    ) -> Result<Accepting, RunError> {
        let mut threads = Vec::with_capacity(self.count);
        let (balance, inboxes) = Balance::new(metrics, self.count);
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let socket = socket
                .try_clone()
                .map_err(|source| RunError::Worker { index, source })?;
            let plain = plain
                .as_ref()
                .map(std::net::TcpListener::try_clone)
                .transpose()
                .map_err(|source| RunError::Worker { index, source })?;
            let worker = worker(
                Worker {
                    index,
                    balance: balance.clone(),
                },
                inbox,
                listener.clone(),
                Sockets { socket, plain },
                self.stop.clone(),
                self.done.clone(),
            )
            .map_err(|source| RunError::Worker { index, source })?;
            threads.push(worker);
        }
        // Only the workers' copies stay open: once they stop accepting, the port refuses.
        drop(socket);
        drop(plain);
        Ok(Accepting::Threads(threads))
    }
}

/// What the drain after shutdown uses.
struct Stopping {
    apps: LiveApps,
    draining: Draining,
    close: Arc<watch::Sender<CloseSignal>>,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl Stopping {
    /// Not ready at once, still accepting for the drain delay; then accepting stops, idle
    /// connections close and in-flight requests finish, for at most the shutdown grace.
    async fn drain(&self, stop: Stop, accepting: &mut Accepting) {
        self.draining.withdraw();
        let delay = self.apps.load().timeouts.drain_delay;
        if !delay.is_zero() && stop == Stop::SkipDrainDelay {
            tracing::info!("shutting down: interrupted at a terminal, skipping the drain delay");
        } else if !delay.is_zero() {
            tracing::info!(
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "shutting down: not ready, still accepting for the drain delay"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!("shutting down: draining connections");
        self.draining.start();
        self.close.send_modify(|signal| signal.shutdown = true);
        if let Accepting::Here(accept_loops) = accepting {
            for accept_loop in accept_loops {
                let _ = accept_loop.await;
            }
        }
        let grace = self.apps.load().timeouts.shutdown_grace;
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(grace, self.connections.acquire_many(all)).await;
        match drained {
            Ok(_) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("shutdown grace period over, closing remaining connections"),
        }
    }
}

/// Waits for the worker threads (whose runtimes were told to end) to finish.
async fn accepting_ended(accepting: Accepting) {
    if let Accepting::Threads(threads) = accepting {
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Where the accept loop runs.
enum Accepting {
    /// On the runtime that called `run`: the mTLS listener's loop, then the plain one's.
    Here(Vec<tokio::task::JoinHandle<()>>),
    /// On worker threads, one accept loop each.
    Threads(Vec<std::thread::JoinHandle<()>>),
}

/// A worker's copies of the listening sockets.
struct Sockets {
    /// The mTLS listener's.
    socket: std::net::TcpListener,
    /// The plain-HTTP listener's, when there is one.
    plain: Option<std::net::TcpListener>,
}

/// Starts a worker thread: a single-threaded runtime that accepts on its copy of the listening
/// socket until `stop`, serves what it keeps and what other workers hand it (`inbox`), and
/// then keeps serving its open connections until `done`.
fn worker(
    worker: Worker,
    inbox: UnboundedReceiver<HandedOff>,
    listener: Arc<Listener>,
    sockets: Sockets,
    stop: watch::Receiver<CloseSignal>,
    mut done: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The access lines gathered while busy are queued once there is nothing else to do.
        .on_thread_park(crate::access_log::flush_this_thread)
        .build()?;
    std::thread::Builder::new()
        .name(format!("certgate-worker-{}", worker.index))
        .spawn(move || {
            crate::workers::enter(worker.index);
            crate::access_log::batch_this_thread();
            runtime.block_on(async move {
                tokio::spawn(listener.clone().adopt(inbox, stop.clone()));
                tokio::spawn(crate::access_log::flush_batches());
                let plain = sockets.plain.map(|plain| {
                    let (listener, stop) = (listener.clone(), stop.clone());
                    // Counted on this worker, where it is served.
                    let here = Worker {
                        index: worker.index,
                        balance: worker.balance.clone(),
                    };
                    tokio::spawn(async move {
                        match TcpListener::from_std(plain) {
                            Ok(plain) => listener.serve(plain, stop, Some(here), Protocol::Plain).await,
                            Err(error) => tracing::error!(error = %error, "worker thread cannot accept plain HTTP"),
                        }
                    })
                });
                match TcpListener::from_std(sockets.socket) {
                    Ok(socket) => {
                        listener
                            .serve(socket, stop, Some(worker), Protocol::Tls)
                            .await;
                    }
                    Err(error) => tracing::error!(error = %error, "worker thread cannot accept"),
                }
                if let Some(plain) = plain {
                    let _ = plain.await;
                }
                let _ = done.wait_for(|done| *done).await;
            });
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            crate::access_log::flush_this_thread();
        })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    // A bound listener always has a local address; the fallback is never used.
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
