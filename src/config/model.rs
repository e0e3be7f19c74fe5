//! The validated config: what `load` builds and every stage reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use super::checks::Finding;
use crate::policy::AppPolicy;
use crate::proxy_protocol::ProxyProtocol;
use crate::revocation::Revocation;
use crate::settings::{
    AllowList, ClientCertMode, Limits, RejectWith, SessionResumption, Timeouts, Trust, Upstream,
    XfccFields,
};
use crate::tls::policy::Policy;
use crate::tls::sni::HostPattern;

/// A validated configuration: everything needed to serve, nothing left to check.
#[derive(Debug)]
pub struct Config {
    /// Address of the mTLS listener.
    pub listen: SocketAddr,
    /// Address of the admin listener, when enabled.
    pub admin: Option<SocketAddr>,
    /// The apps, in file order.
    pub apps: Vec<Arc<AppConfig>>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Resource limits.
    pub limits: Limits,
    /// Whether each request gets an access line.
    pub access_log: bool,
    /// PROXY protocol on the mTLS listener, when enabled.
    pub proxy_protocol: Option<Arc<ProxyProtocol>>,
    /// Every file read to build this config (the config file first, when there is one).
    pub files: Vec<PathBuf>,
    /// What `certgate check` reports beyond hard errors (docs/config.md "Checking a config").
    pub findings: Vec<Finding>,
}

/// One app: where it is reached, what it presents, whom it lets in, where it forwards.
#[derive(Debug)]
pub struct AppConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Host patterns; empty for the catch-all app.
    pub hosts: Vec<HostPattern>,
    /// Where requests go.
    pub upstream: Upstream,
    /// Client-certificate mode.
    pub mode: ClientCertMode,
    /// Trust sources for presented certificates (empty in `ignore` mode).
    pub trust: Trust,
    /// Allow-lists applied to trusted certificates.
    pub allow: AllowList,
    /// The policy presented certificates are judged by (`None` in `ignore` mode); the
    /// handshake and `certgate explain` both call it.
    pub policy: Option<Arc<Policy>>,
    /// How a refused certificate reaches the client.
    pub reject_with: RejectWith,
    /// Which XFCC fields are sent.
    pub xfcc_fields: XfccFields,
    /// Exclusion paths, authorization, rate limit and header formats.
    pub request_policy: AppPolicy,
    /// The server certificate chain, leaf first.
    pub server_chain: Vec<CertificateDer<'static>>,
    /// How this app's TLS sessions resume.
    pub session_resumption: SessionResumption,
    /// This app's own rustls config: its verifier, session cache and ticket keys.
    pub tls: Arc<rustls::ServerConfig>,
    /// Revocation checked after the handshake (CRL URLs, distribution points, OCSP), when
    /// configured; `crlFiles` alone are checked by the verifier during the handshake.
    pub revocation: Option<Arc<Revocation>>,
}
