//! The validated config: what `load` builds and every stage reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::checks::Finding;
use crate::ip_restrictions::IpRestrictions;
use crate::proxy_protocol::ProxyProtocol;
use crate::request_policy::RequestPolicy;
use crate::settings::{
    AllowList, ClientCertMode, KeyedChain, Limits, RejectWith, RevocationPolicy, SessionResumption,
    Timeouts, Trust, Upstream, UpstreamDns, UpstreamGroup, XfccFields,
};
use crate::tls::sni::HostPattern;
use crate::tls::ticket_keys::TicketKeys;

/// A validated configuration: everything needed to serve, nothing left to check.
#[derive(Debug)]
pub struct Config {
    /// Address of the mTLS listener.
    pub listen: SocketAddr,
    /// Address of the admin listener, when enabled.
    pub admin: Option<SocketAddr>,
    /// Address of the plain-HTTP listener, when enabled.
    pub listen_http: Option<SocketAddr>,
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
    /// How upstream host names are resolved.
    pub upstream_dns: UpstreamDns,
    /// Every file read to build this config (the config file first, when there is one).
    pub files: Vec<PathBuf>,
    /// The SHA-256 of each file read, as read: a reload names the files whose content changed.
    pub file_digests: FileDigests,
    /// What `certgate check` reports beyond hard errors (docs/config.md "Checking a config").
    pub findings: Vec<Finding>,
}

/// One app: where it is reached, what it presents, whom it lets in, where it forwards. What
/// it is served with (its checker, policy and rustls config) is built from it with the apps.
#[derive(Debug)]
pub struct AppConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Host patterns; empty for the catch-all app.
    pub hosts: Vec<HostPattern>,
    /// Where requests go: the app's `upstream`, or with `revisions` and no `latestRevision`
    /// entry in `ingress.traffic`, the first group's; what logs and `explain` name.
    pub upstream: Upstream,
    /// The groups requests are split between by weight (one, `latest`, without `revisions`);
    /// none has weight 0.
    pub groups: Vec<UpstreamGroup>,
    /// How many times a request that did not reach the app is sent again (`retries`).
    pub retries: u32,
    /// The label hosts (`<first label>---<label>.<rest>` of each exact host) and the group
    /// each reaches; they are in `hosts` too.
    pub label_hosts: Vec<(String, String)>,
    /// Client-certificate mode.
    pub mode: ClientCertMode,
    /// Trust sources for presented certificates (empty in `ignore` mode); `checked_issuers`
    /// is filled where the apps are built, since it names the issuers of fetched CRLs.
    pub trust: Trust,
    /// Allow-lists applied to trusted certificates.
    pub allow: AllowList,
    /// How a refused certificate reaches the client.
    pub reject_with: RejectWith,
    /// Which XFCC fields are sent.
    pub xfcc_fields: XfccFields,
    /// Exclusion paths, authorization, rate limit and header formats.
    pub request_policy: RequestPolicy,
    /// The server certificate chain, leaf first.
    pub server_chain: Vec<CertificateDer<'static>>,
    /// The server certificate's private key, checked to match the chain's leaf.
    pub server_key: PrivateKeyDer<'static>,
    /// How this app's TLS sessions resume.
    pub session_resumption: SessionResumption,
    /// The shared ticket keys read from the key file, under `SessionResumption::SharedKeys`.
    pub ticket_keys: Option<TicketKeys>,
    /// What the app's revocation checking is built from.
    pub revocation: RevocationSettings,
    /// Host names served beside `hosts` (which lists them too), each with its certificate.
    pub custom_domains: Vec<CustomDomain>,
    /// SHA-256 of the app's settings as written and of every file it loaded (path and
    /// content): a reload calls the app changed when this differs.
    pub fingerprint: [u8; 32],
    /// `ingress.ipSecurityRestrictions`; `None` admits every client address.
    pub ip_restrictions: Option<Arc<IpRestrictions>>,
    /// The `ingress` keys given that certgate accepts without effect (`external`, `fqdn`, ...).
    pub ignored_ingress: Vec<&'static str>,
    /// Served over plain HTTP on `listenHttp`; else a request there is redirected to HTTPS.
    pub allow_insecure: bool,
}

impl AppConfig {
    /// The group a request for `host` (its authority's host) goes to alone, when `host` is
    /// one of the label hosts.
    pub(crate) fn label_group(&self, host: &str) -> Option<&str> {
        if self.label_hosts.is_empty() {
            return None;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        self.label_hosts
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(host))
            .map(|(_, group)| group.as_str())
    }
}

/// A host name served for an app beside its `hosts` (`ingress.customDomains`).
#[derive(Debug, Clone)]
pub struct CustomDomain {
    /// The name, normalized.
    pub host: HostPattern,
    /// The certificate served for it, and the name of its entry in `certificates`; `None`
    /// under `bindingType: "Disabled"`, where the app's own server certificate is served.
    pub certificate: Option<(String, KeyedChain)>,
}

/// The SHA-256 of each file a config was read from, by path.
pub type FileDigests = BTreeMap<PathBuf, [u8; 32]>;

/// An app's revocation settings, validated: the checker itself is built with the apps.
#[derive(Debug)]
pub struct RevocationSettings {
    /// `clientAuth.revocation` (the defaults without one).
    pub policy: RevocationPolicy,
    /// Every CRL of the CRL files, with the name it is known by (its file, and `#n` after the
    /// file's first).
    pub crl_files: Vec<(String, Vec<u8>)>,
    /// Whether CRLs are checked after the handshake, by one checker: beyond `crlFiles`, and
    /// for CRL files without nextUpdate, which webpki cannot read. Else webpki checks the CRL
    /// files (`trust.crls`) during the handshake, and a watcher closes open connections when a
    /// CRL learned since lists their chain.
    pub after_handshake: bool,
}
