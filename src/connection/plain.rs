//! A connection of the plain-HTTP listener (`listenHttp`) from accept to close: the PROXY
//! header when its source is a trusted balancer (as on the mTLS listener), then one hyper
//! session (HTTP/1.1, or HTTP/2 with prior knowledge) with the mTLS listener's limits and
//! timeouts, closed on idle, drain and reload as a TLS connection is. It has no handshake and
//! so no app of its own: each request picks its app (`proxy::plain`).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::serve::http_builder;
use super::{Handles, Slots};
use crate::drain::{Close, CloseSignal};
use crate::proxy::context::{SharedLifecycle, Signals};
use crate::proxy::plain::{self, PlainConnection};

impl Handles {
    /// Runs one accepted plain-HTTP connection to its end.
    pub(crate) async fn run_plain<L>(
        self: Arc<Self>,
        mut tcp: TcpStream,
        peer_addr: SocketAddr,
        slots: Slots<L>,
        mut close: watch::Receiver<CloseSignal>,
    ) {
        let Slots {
            permit,
            held,
            load: _load,
        } = slots;
        let apps = self.apps.load_full();
        // A balancer in front sends its PROXY header on both ports: the same trusted sources.
        let client_addr = match &apps.proxy_protocol {
            Some(proxy) => {
                let deadline = tokio::time::Instant::now() + apps.timeouts.handshake;
                match Box::pin(proxy.accept(&mut tcp, peer_addr, deadline)).await {
                    Ok(client_addr) => client_addr,
                    Err(error) => {
                        self.proxy_refused(&error, peer_addr);
                        return;
                    }
                }
            }
            None => peer_addr,
        };
        tracing::Span::current().record("client.addr", tracing::field::display(client_addr));
        // What stands for the handshake is over: its pending slot frees.
        drop(held.handshake);
        let _client_slot = held.client;
        let (timeouts, limits) = (apps.timeouts, apps.limits);
        let signals = Signals {
            draining: self.draining.clone(),
            close: close.clone(),
        };
        let conn = Arc::new(PlainConnection::new(
            apps,
            client_addr,
            SharedLifecycle::new(permit, signals),
            self.redirect,
            self.metrics.clone(),
        ));
        let service = {
            let conn = conn.clone();
            service_fn(move |request| plain::handle(conn.clone(), request))
        };
        let builder = http_builder(&timeouts, &limits);
        let served = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        tokio::pin!(served);
        let generation = conn.generation();
        let lifecycle = &conn.lifecycle;
        let idle = timeouts.idle;
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        let mut closing = false;
        let mut cut_at_timer = false;
        loop {
            tokio::select! {
                biased;
                result = served.as_mut() => {
                    match result {
                        Ok(()) => tracing::debug!("connection closed"),
                        Err(error) => {
                            conn.connection_ended(&*error);
                            tracing::debug!(error = %error, "connection closed with an error");
                        }
                    }
                    return;
                }
                () = lifecycle.close.notified(), if !closing => {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
                signal = close.wait_for(|signal| signal.closes(generation).is_some()), if !closing => {
                    closing = true;
                    // A closed channel means the server is gone: as for shutdown.
                    let why = signal.ok().and_then(|signal| signal.closes(generation));
                    if let Some(Close::Reloaded { grace }) = why {
                        if grace.is_zero() {
                            tracing::debug!("closing connection, its config was replaced");
                            return;
                        }
                        cut_at_timer = true;
                        timer.as_mut().reset(tokio::time::Instant::now() + grace);
                    }
                    served.as_mut().graceful_shutdown();
                }
                () = timer.as_mut(), if !closing || cut_at_timer => {
                    if cut_at_timer {
                        tracing::debug!("reload grace over, cutting the connection");
                        return;
                    }
                    let now = tokio::time::Instant::now();
                    match lifecycle.idle_deadline(idle) {
                        Some(deadline) if deadline <= now => {
                            tracing::debug!("closing idle connection");
                            closing = true;
                            served.as_mut().graceful_shutdown();
                        }
                        Some(deadline) => timer.as_mut().reset(deadline),
                        // Busy: look again once the idle timeout could have passed.
                        None => timer.as_mut().reset(now + idle),
                    }
                }
            }
        }
    }
}
