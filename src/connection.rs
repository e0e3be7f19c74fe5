//! One client connection from accept to close, its stages in the order they run: `caps` (the
//! per-client and pending-handshake slots it holds), `handshake` (the PROXY header, the
//! ClientHello, the app's IP restrictions and its TLS handshake, under one deadline),
//! `verdict` (the app's policy judged again where the verifier did not decide, then
//! revocation; an address the IP restrictions refused is answered 403 instead, with
//! `rejectWith: "http"`), the verified certificate
//! parsed once with its headers (`proxy::client`), then `serve` (hyper sessions until the
//! client leaves) with `park` (a quiet HTTP/1.1 connection gives hyper's buffers back between
//! sessions). The listener accepts and places connections; the proxy handles each request.
//! A connection of the plain-HTTP listener has no handshake and picks no app (`plain`).

pub(crate) mod caps;
pub(crate) mod handshake;
mod park;
mod plain;
mod serve;
mod verdict;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::apps::{App, Apps, LiveApps};
use crate::drain::{CloseSignal, Draining};
use crate::ip_restrictions::IpRefusal;
use crate::metrics::Metrics;
use crate::proxy::client::VerifiedClient;
use crate::proxy::context::{ConnectionContext, Downstream, Lifecycle, Route, Signals};
use crate::proxy::redirect::Redirect;
use crate::proxy::refuse::RefusalPage;
use crate::proxy_protocol::ProxyHeaderError;
use crate::revocation::{RevokedLater, Standing};
use crate::settings::RejectWith;
use crate::tls::FailureReason;
use crate::tls::client_policy::{Refusal, TrustSource};

use self::caps::{CapSlots, ClientSlot};
use self::handshake::{Completed, HandshakeError, complete};

/// What every connection uses: the apps it is served under (loaded once, at its start), the
/// metrics and the drain flag.
#[derive(Debug)]
pub(crate) struct Handles {
    /// The running apps.
    pub apps: LiveApps,
    /// For handshake failures, refusals and everything the proxy counts.
    pub metrics: Arc<Metrics>,
    /// Handed to every connection.
    pub draining: Draining,
    /// Where the plain-HTTP listener's redirects point: the mTLS listener's port.
    pub redirect: Redirect,
}

/// What a connection holds until it closes: its `maxConnections` permit, its caps slots
/// and `load`, its count on the worker thread that serves it.
#[derive(Debug)]
pub(crate) struct Slots<L> {
    /// One of `limits.maxConnections`.
    pub permit: OwnedSemaphorePermit,
    /// The per-client slot, and the pending-handshake one until the handshake ends.
    pub held: CapSlots,
    /// Dropped when the connection closes.
    pub load: L,
}

/// A connection past its handshake and verdict, ready to serve.
struct Established {
    sessions: serve::Sessions,
    stream: park::Tls,
    revoked_later: Option<RevokedLater>,
    /// Its slot among the client's connections, held until it closes.
    client_slot: Option<ClientSlot>,
}

/// What the verdict on a handshake needs to know of it.
struct Judgement<'a> {
    client_addr: SocketAddr,
    sni: &'a str,
    resumed: bool,
    /// Resumed, or completed under a config a reload replaced: the verifier's word is not
    /// the current policy's.
    judged_again: bool,
    /// What the verifier recorded, if it passed the certificate.
    trust: Option<TrustSource>,
}

/// A connection whose certificate (or lack of one) may be served.
struct Judged {
    verified: Option<VerifiedClient>,
    /// With `rejectWith: "http"`, the page its requests are answered with.
    refusal: Option<RefusalPage>,
    standing: Option<Arc<Standing>>,
}

/// How a connection refused after its handshake ends.
enum Ending {
    /// With a TLS close_notify.
    CloseNotify,
    /// At once.
    Close,
}

impl Handles {
    /// Runs one accepted connection to its end.
    pub(crate) async fn run<L>(
        self: Arc<Self>,
        tcp: TcpStream,
        peer_addr: SocketAddr,
        slots: Slots<L>,
        close: watch::Receiver<CloseSignal>,
    ) {
        let Slots {
            permit,
            held,
            load: _load,
        } = slots;
        // Established in a future of its own: what the handshake and the verdict borrowed
        // (the TLS stream above all, 1.2 KiB) would otherwise keep its room in this task for
        // as long as the connection stays open, beside the serving future's own.
        let Some(Established {
            sessions,
            stream,
            revoked_later,
            client_slot: _client_slot,
        }) = self.establish(tcp, peer_addr, permit, held, &close).await
        else {
            return;
        };
        sessions.serve(stream, close, revoked_later).await;
    }

    /// The PROXY header, the handshake, the verdict and the client's identity: the
    /// connection ready to serve, or `None` once it was refused or closed.
    async fn establish(
        &self,
        tcp: TcpStream,
        peer_addr: SocketAddr,
        permit: OwnedSemaphorePermit,
        held: CapSlots,
        close: &watch::Receiver<CloseSignal>,
    ) -> Option<Established> {
        let apps = self.apps.load_full();
        let (client_addr, accepted) = self.shake_hands(tcp, peer_addr, &apps).await?;
        // Handshake over: its pending slot frees; the per-client slot lives with the connection.
        drop(held.handshake);
        let Completed {
            stream,
            app,
            sni,
            trust,
            ip_refusal,
        } = accepted;
        // A reload during the handshake: the connection is served under the newest config,
        // its certificate judged again by it as a resumed session's is (docs/operations.md "Reload").
        let handshake_under_replaced = apps.is_retired();
        let Some(route) = self.route(apps, app, sni.as_deref(), handshake_under_replaced) else {
            serve::close_notify(stream).await;
            return None;
        };
        let session = stream.get_ref().1;
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let judged = Judgement {
            client_addr,
            sni: sni.as_deref().unwrap_or(""),
            resumed,
            judged_again: resumed || handshake_under_replaced,
            trust,
        };
        let judging = self
            .judge_client(
                &route,
                session,
                judged,
                ip_refusal,
                handshake_under_replaced,
            )
            .await;
        let Judged {
            verified,
            refusal,
            standing,
        } = match judging {
            Ok(judged) => judged,
            Err(Ending::CloseNotify) => {
                serve::close_notify(stream).await;
                return None;
            }
            Err(Ending::Close) => return None,
        };
        let (timeouts, limits) = (route.apps.timeouts, route.apps.limits);
        // A revocation learned while the connection is open closes it, and any WebSocket
        // it upgraded to, before another request is forwarded (docs/revocation.md).
        let revoked_later = standing.as_ref().map(|standing| standing.refused());
        let signals = Signals {
            draining: self.draining.clone(),
            close: close.clone(),
        };
        let lifecycle = Lifecycle::new(&route.app, permit, signals, standing);
        let downstream = Downstream::new(&route.app, client_addr, sni, verified, refusal);
        let context = Arc::new(ConnectionContext::new(route, downstream, lifecycle));
        Some(Established {
            sessions: serve::Sessions {
                context,
                timeouts,
                limits,
                client_addr,
            },
            stream,
            revoked_later,
            client_slot: held.client,
        })
    }

    /// The PROXY header (behind a balancer), the ClientHello and the app's TLS handshake,
    /// under one deadline: the client's address and the accepted connection, or `None` once
    /// either was refused.
    async fn shake_hands(
        &self,
        mut tcp: TcpStream,
        peer_addr: SocketAddr,
        apps: &Apps,
    ) -> Option<(SocketAddr, Completed<TcpStream>)> {
        let deadline = tokio::time::Instant::now() + apps.timeouts.handshake;
        let client_addr = match &apps.proxy_protocol {
            Some(proxy) => match Box::pin(proxy.accept(&mut tcp, peer_addr, deadline)).await {
                Ok(client_addr) => client_addr,
                Err(error) => {
                    self.proxy_refused(&error, peer_addr);
                    return None;
                }
            },
            None => peer_addr,
        };
        tracing::Span::current().record("client.addr", tracing::field::display(client_addr));
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // The handshake's state (about 7 KiB: the ClientHello reader, rustls' handshake, their
        // deadlines) lives on the heap until the handshake ends.
        match Box::pin(complete(tcp, apps, client_addr.ip(), left)).await {
            Ok(accepted) => Some((client_addr, accepted)),
            Err(error) => {
                self.refused(&error, client_addr);
                None
            }
        }
    }

    /// The connection's route: `app` of `apps`, or when a reload retired `apps` during the
    /// handshake (`replaced`, read once so that the verdict knows it too), the same app of
    /// the newest config; `None` when the newest config serves the SNI with another app (or
    /// none).
    fn route(
        &self,
        apps: Arc<Apps>,
        app: Arc<App>,
        sni: Option<&str>,
        replaced: bool,
    ) -> Option<Route> {
        if !replaced {
            return Some(Route { app, apps });
        }
        let newest = self.apps.load_full();
        match newest.resolve(sni) {
            Some(now) if now.config.name == app.config.name => Some(Route {
                app: now,
                apps: newest,
            }),
            _ => {
                tracing::debug!(app = %app.config.name, "closing connection, a reload moved its host");
                None
            }
        }
    }

    /// The verdict on the handshake's certificate and, when it may be served, the verified
    /// client with its certificate headers; refusals are counted and logged here.
    /// The client's verdict: refused for its address when the app's restrictions refuse it,
    /// else judged by its certificate. Under a config a reload replaced during the handshake
    /// (`replaced`), the newest one's restrictions decide, as its policy judges the certificate.
    async fn judge_client(
        &self,
        route: &Route,
        session: &rustls::ServerConnection,
        judgement: Judgement<'_>,
        ip_refusal: Option<IpRefusal>,
        replaced: bool,
    ) -> Result<Judged, Ending> {
        let ip_refusal = match replaced {
            false => ip_refusal,
            true => route
                .app
                .config
                .ip_restrictions
                .as_ref()
                .and_then(|restrictions| restrictions.judge(judgement.client_addr.ip()).err()),
        };
        match ip_refusal {
            Some(refusal) => self.address_refused(&route.app, &judgement, &refusal),
            None => self.judge(route, session, judgement).await,
        }
    }

    async fn judge(
        &self,
        route: &Route,
        session: &rustls::ServerConnection,
        judgement: Judgement<'_>,
    ) -> Result<Judged, Ending> {
        let app = &route.app;
        let peer_chain = verdict::presented(app, session);
        let verdict = Box::pin(verdict::decide(
            app,
            peer_chain,
            judgement.judged_again,
            judgement.trust,
        ))
        .await;
        if let Some(refused) = &verdict.refusal {
            let reject_with = app.config.reject_with;
            self.refused_after_handshake(
                &app.config.name,
                judgement.sni,
                refused,
                reject_with,
                judgement.client_addr,
            );
            if reject_with == RejectWith::Tls {
                return Err(Ending::CloseNotify);
            }
        }
        let refusal = verdict.refusal.map(|refused| RefusalPage::new(*refused));
        let verified = match peer_chain.zip(verdict.trust).filter(|_| refusal.is_none()) {
            Some((chain, trust)) => Some(
                VerifiedClient::new(
                    chain,
                    trust,
                    app.config.xfcc_fields,
                    app.config.request_policy.formats,
                    route.apps.limits.max_xfcc_bytes,
                )
                .map_err(|error| {
                    tracing::warn!(app = %app.config.name, error = %error, "closing connection");
                    Ending::Close
                })?,
            ),
            None => None,
        };
        tracing::debug!(
            app = %app.config.name,
            sni = judgement.sni,
            resumed = judgement.resumed,
            client.hash = verified.as_ref().map_or("", |client| client.identity.hash.as_str()),
            "handshake complete"
        );
        Ok(Judged {
            verified,
            refusal,
            standing: verdict.standing,
        })
    }

    /// A client whose address the app's `ipSecurityRestrictions` refuse, on a connection
    /// whose handshake completed: with `rejectWith: "http"` (its handshake asked for no
    /// certificate), or after a reload during the handshake. Counted and logged like a refused
    /// handshake; with `rejectWith: "http"` every request gets 403, else the connection closes.
    fn address_refused(
        &self,
        app: &App,
        judgement: &Judgement<'_>,
        refusal: &IpRefusal,
    ) -> Result<Judged, Ending> {
        let reject_with = app.config.reject_with;
        self.metrics
            .handshake_failed(&app.config.name, FailureReason::IpRestricted);
        tracing::warn!(
            client.addr = %judgement.client_addr,
            sni = judgement.sni,
            app = %app.config.name,
            failure = FailureReason::IpRestricted.as_str(),
            rule = refusal.rule.as_deref().unwrap_or(""),
            detail = %refusal.detail,
            reject_with = reject_with.as_str(),
            "client address refused"
        );
        match reject_with {
            RejectWith::Tls => Err(Ending::CloseNotify),
            RejectWith::Http => Ok(Judged {
                verified: None,
                refusal: Some(RefusalPage::ip_restricted(refusal)),
                standing: None,
            }),
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

    fn refused(&self, error: &HandshakeError, client_addr: SocketAddr) {
        let Some(reason) = error.reason() else {
            tracing::debug!(client.addr = %client_addr, "connection closed before handshake");
            return;
        };
        let app = error.app().map_or("", |app| app.config.name.as_str());
        self.metrics.handshake_failed(app, reason);
        let sni = error.sni().unwrap_or("");
        let detail = error.detail();
        if let HandshakeError::IpRestricted { refusal, .. } = error {
            tracing::warn!(
                client.addr = %client_addr,
                sni,
                app,
                failure = reason.as_str(),
                rule = refusal.rule.as_deref().unwrap_or(""),
                detail,
                "handshake refused"
            );
            return;
        }
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
