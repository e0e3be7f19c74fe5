//! certgate terminates mutual TLS in front of HTTP apps and forwards each request with the
//! verified client certificate in `X-Forwarded-Client-Cert`.
//!
//! The modules in data-flow order: a `config` is loaded and validated; `apps` holds what is
//! served; the `listener` accepts, `tls` picks the app by SNI and verifies the client,
//! `identity` parses the verified certificate once, and `proxy` checks each request's
//! authority, rewrites headers and forwards it upstream.

pub mod apps;
pub mod cli;
pub mod config;
pub mod demo;
pub mod identity;
pub mod listener;
pub mod pki;
pub mod proxy;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::apps::Apps;
use crate::config::Config;
use crate::listener::Shared;

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
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the listener of a validated config.
    pub async fn bind(config: &Config) -> Result<Self, RunError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| RunError::Bind {
                addr: config.listen,
                source,
            })?;
        let shared = Arc::new(Shared {
            apps: ArcSwap::from_pointee(Apps::new(config)),
            timeouts: config.timeouts,
            limits: config.limits,
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        });
        Ok(Self { listener, shared })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address; fall back to the unspecified one.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, lets in-flight
    /// requests finish and closes idle connections, for at most `timeouts.shutdownGraceMs`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let accept_loop =
            tokio::spawn(listener::serve(self.listener, self.shared.clone(), stop_rx));
        shutdown.await;
        tracing::info!("shutting down: draining connections");
        let _ = stop_tx.send(true);
        let _ = accept_loop.await;
        let all = u32::try_from(self.shared.limits.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            self.shared.timeouts.shutdown_grace,
            self.shared.connections.acquire_many(all),
        )
        .await;
        match drained {
            Ok(_) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("shutdown grace period over, closing remaining connections"),
        }
        Ok(())
    }
}

/// An error and all its sources, `: `-separated, for logs and the command line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
