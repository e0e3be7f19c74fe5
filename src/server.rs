//! The server as a whole: binds the listeners, shares the swappable app set, metrics and
//! drain state with every task, and runs until shutdown, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::apps::Apps;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;

/// Produces a fresh, fully validated config: the config file, or the sidecar flags.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What every task of the server shares.
pub struct Shared {
    /// The apps, timeouts and limits new connections are served under; replaced whole on reload.
    pub apps: ArcSwap<Apps>,
    /// One permit per open connection (`limits.maxConnections`, fixed until restart).
    pub connections: Arc<Semaphore>,
    /// The size of `connections`.
    pub max_connections: usize,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Set once shutdown has begun: `/readyz` answers 503 and new requests get 503.
    pub draining: AtomicBool,
    /// The mTLS listener's configured address (a change needs a restart).
    pub listen: SocketAddr,
    /// Where reloads read the config from; `None` disables reload.
    pub source: Option<ConfigSource>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("listen", &self.listen)
            .field("max_connections", &self.max_connections)
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound, ready-to-run certgate.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
    watched: Vec<std::path::PathBuf>,
}

impl Server {
    /// Binds the listeners of a validated config. With `source`, the config is reloaded on
    /// SIGHUP and when any file it was read from changes.
    pub async fn bind(config: &Config, source: Option<ConfigSource>) -> Result<Self, RunError> {
        let listener = bind(config.listen).await?;
        let admin = match config.admin {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let metrics = Metrics::new();
        for app in &config.apps {
            metrics.register_app(app);
        }
        let shared = Arc::new(Shared {
            apps: ArcSwap::from_pointee(Apps::new(config)),
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            max_connections: config.limits.max_connections,
            metrics,
            draining: AtomicBool::new(false),
            listen: config.listen,
            source,
        });
        Ok(Self {
            listener,
            admin,
            shared,
            watched: config.files.clone(),
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

    /// A handle that reloads the config on demand (what SIGHUP does).
    pub fn reloader(&self) -> crate::reload::Reloader {
        crate::reload::Reloader::new(self.shared.clone())
    }

    /// Serves until `shutdown` completes, then drains: `/readyz` turns 503, accepting stops,
    /// idle connections close, in-flight requests finish, for at most `timeouts.shutdownGraceMs`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let accept_loop = tokio::spawn(crate::listener::serve(
            self.listener,
            self.shared.clone(),
            stop_rx.clone(),
        ));
        let admin = self
            .admin
            .map(|listener| tokio::spawn(crate::admin::serve(listener, self.shared.clone())));
        let watcher = self.shared.source.is_some().then(|| {
            tokio::spawn(crate::reload::watch(
                crate::reload::Reloader::new(self.shared.clone()),
                self.watched,
                stop_rx,
            ))
        });
        shutdown.await;
        tracing::info!("shutting down: draining connections");
        self.shared.draining.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        let _ = accept_loop.await;
        let grace = self.shared.apps.load().timeouts.shutdown_grace;
        let all = u32::try_from(self.shared.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(grace, self.shared.connections.acquire_many(all)).await;
        match drained {
            Ok(_) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("shutdown grace period over, closing remaining connections"),
        }
        for task in [admin, watcher].into_iter().flatten() {
            task.abort();
        }
        Ok(())
    }
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
