//! The validated settings every stage reads: what `config` builds from a file or flags and
//! hands down to the TLS, proxy and policy layers. Plain data; this module uses nothing else of
//! certgate's, so any module may depend on it.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

/// How an app's TLS sessions resume (docs/replicas.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionResumption {
    /// `sessionResumption: false`: every connection makes a full handshake.
    Off,
    /// Ticket keys made by this process, new on every reload.
    ProcessKeys,
    /// Ticket keys derived from a shared key file.
    SharedKeys {
        /// The key file, resolved against the config's folder.
        key_file: PathBuf,
    },
}

impl SessionResumption {
    /// The setting as `certgate check` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::ProcessKeys => "process-keys",
            Self::SharedKeys { .. } => "shared-keys",
        }
    }
}

/// A setting written by name in configs and flags, in any letter case (`clientCertificateMode`,
/// `rejectWith`, `ingress.transport`, ...).
pub trait ByName: Copy + 'static {
    /// Every accepted name and the value it stands for; several names may stand for one value.
    const NAMES: &'static [(&'static str, Self)];

    /// The value `name` stands for, ignoring ASCII letter case.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, value)| value)
    }
}

/// A config or flag value meant to name a `T`: the value, or the text as written when it names
/// none, which the loader refuses naming the app and the key (so the error says where it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named<T> {
    /// One of `T`'s names.
    Known(T),
    /// No name of `T`, as written.
    Unknown(String),
}

impl<T: ByName> Named<T> {
    /// `text` read as one of `T`'s names.
    pub fn parse(text: &str) -> Self {
        T::from_name(text).map_or_else(|| Self::Unknown(text.to_owned()), Self::Known)
    }

    /// The value, or the text that names none.
    pub fn known(&self) -> Result<T, &str> {
        match self {
            Self::Known(value) => Ok(*value),
            Self::Unknown(text) => Err(text),
        }
    }
}

impl<T: ByName> std::str::FromStr for Named<T> {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(text))
    }
}

impl<'de, T: ByName> serde::Deserialize<'de> for Named<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

/// The Container Apps `clientCertificateMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    /// Ask for a certificate and refuse the handshake without a valid one.
    Require,
    /// Ask for a certificate; proxy without one, refuse an invalid one.
    Accept,
    /// Never ask for a certificate.
    Ignore,
}

impl ClientCertMode {
    /// The mode's name as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Require => "require",
            Self::Accept => "accept",
            Self::Ignore => "ignore",
        }
    }
}

impl ByName for ClientCertMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("require", Self::Require),
        ("accept", Self::Accept),
        ("ignore", Self::Ignore),
    ];
}

/// The app's upstream: an `http://` or `https://` authority and the protocol spoken to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port` of the app.
    pub authority: http::uri::Authority,
    /// HTTP/1.1 or HTTP/2 (h2c, or h2 over TLS).
    pub transport: Transport,
    /// TLS to the app, for an `https://` upstream.
    pub tls: Option<UpstreamTls>,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.authority)
    }
}

impl Upstream {
    /// `https` for an upstream reached over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The upstream's host when it is a DNS name, which is resolved in the background
    /// (`upstreamDns`); `None` for an IP literal, which is dialed as written.
    pub fn dns_name(&self) -> Option<&str> {
        let host = self.authority.host();
        let literal = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        literal.parse::<std::net::IpAddr>().is_err().then_some(host)
    }

    /// The upstream's port: the one written, or the scheme's.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 })
    }
}

/// How upstream host names are resolved (`upstreamDns`, docs/config.md "How upstream names are
/// resolved").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamDns {
    /// The longest wait between two resolutions of a name; the wait when an answer carries no
    /// TTL. A shorter TTL shortens it, down to `MIN_DNS_REFRESH`.
    pub refresh: Duration,
    /// The nameservers asked instead of those of /etc/resolv.conf; empty: the system's.
    pub nameservers: Vec<std::net::SocketAddr>,
}

/// The default `upstreamDns.refreshMs`: Envoy's `dns_refresh_rate`.
pub(crate) const DEFAULT_DNS_REFRESH: Duration = Duration::from_millis(5_000);

/// The shortest wait between two resolutions of a name, whatever TTL its answer carries
/// (a TTL of 0 would otherwise mean a query per loop), unless `refreshMs` is shorter still.
pub(crate) const MIN_DNS_REFRESH: Duration = Duration::from_millis(1_000);

/// The shortest `upstreamDns.refreshMs` accepted.
pub(crate) const MIN_DNS_REFRESH_SETTING: Duration = Duration::from_millis(100);

impl Default for UpstreamDns {
    fn default() -> Self {
        Self {
            refresh: DEFAULT_DNS_REFRESH,
            nameservers: Vec::new(),
        }
    }
}

impl UpstreamDns {
    /// How long to wait before resolving again after an answer valid for `ttl` (`None`: the
    /// answer carried none): the TTL, within `min(MIN_DNS_REFRESH, refresh)..=refresh`.
    pub fn next_refresh(&self, ttl: Option<Duration>) -> Duration {
        let floor = MIN_DNS_REFRESH.min(self.refresh);
        ttl.map_or(self.refresh, |ttl| ttl.clamp(floor, self.refresh))
    }

    /// How long to wait before trying again after `failures` failed resolutions in a row:
    /// `MIN_DNS_REFRESH`, doubling with each failure, at most `refresh`.
    pub fn retry_after(&self, failures: u32) -> Duration {
        let floor = MIN_DNS_REFRESH.min(self.refresh);
        let doubled = floor.saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled.min(self.refresh)
    }

    /// The nameservers as `check` and `explain` show them.
    pub fn describe_nameservers(&self) -> String {
        if self.nameservers.is_empty() {
            "system (/etc/resolv.conf)".to_owned()
        } else {
            self.nameservers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}
/// One upstream group of an app: the app's `upstream` (`latest`) or one of its `revisions`,
/// and its share of the app's requests (docs/config.md "Revisions and traffic").
#[derive(Debug, Clone)]
pub struct UpstreamGroup {
    /// `latest` for the app's `upstream`, else the revision's name; the `group` label.
    pub name: String,
    /// Where the group's requests go.
    pub upstream: Upstream,
    /// Its weight among the app's groups (`ingress.traffic`, percent; 1 each for the
    /// sidecar's repeated `--upstream`); 0 for a group reached only by its label hosts.
    pub weight: u32,
    /// `ingress.traffic[].label`: requests for its label hosts go to this group alone.
    pub label: Option<String>,
}

/// The group name of the app's `upstream` (`latestRevision: true`).
pub(crate) const LATEST_GROUP: &str = "latest";

/// `retries` when a config gives none.
pub(crate) const DEFAULT_RETRIES: u32 = 1;

/// An app's active health check (`healthCheck`): every `interval` (give or take 10%, the first
/// time at a random point of it), each endpoint of each of its groups gets `GET path` on a
/// connection of its own; `unhealthy_threshold` failures in a
/// row (an answer other than `expected_status`, none within `timeout`, or no connection)
/// take it out of the balancing, `healthy_threshold` successes in a row bring it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expected_status: http::StatusCode,
}

/// `healthCheck` defaults (Envoy's and HAProxy's order of magnitude).
pub(crate) const HEALTH_CHECK_PATH: &str = "/";
pub(crate) const HEALTH_CHECK_INTERVAL_MS: u64 = 5000;
pub(crate) const HEALTH_CHECK_TIMEOUT_MS: u64 = 1000;
pub(crate) const HEALTH_CHECK_HEALTHY: u32 = 2;
pub(crate) const HEALTH_CHECK_UNHEALTHY: u32 = 3;
pub(crate) const HEALTH_CHECK_STATUS: u16 = 200;

/// How certgate speaks TLS to an `https://` upstream (docs/upstream-tls.md); the rustls
/// config is built from it with the app's other live objects.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The name the app's certificate must hold, also sent as SNI when it is a DNS name.
    pub server_name: rustls_pki_types::ServerName<'static>,
    /// What the app's certificate is verified against.
    pub verify: UpstreamVerify,
    /// The client certificate certgate presents to the app, if any.
    pub client: Option<KeyedChain>,
}

impl UpstreamTls {
    /// The client certificate chain certgate presents to the app, leaf first; empty when it
    /// presents none.
    pub fn client_chain(&self) -> &[CertificateDer<'static>] {
        self.client.as_ref().map_or(&[], |client| &client.chain)
    }
}

/// A certificate chain and the key of its leaf, checked to match: one that certgate presents
/// (to an `https://` app, or for a custom domain).
#[derive(Debug, Clone)]
pub struct KeyedChain {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: std::sync::Arc<rustls_pki_types::PrivateKeyDer<'static>>,
}

/// `ingress.customDomains[].bindingType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingType {
    /// The domain is served with the certificate `certificateId` names.
    SniEnabled,
    /// The domain is served with the app's own server certificate.
    Disabled,
    /// A certificate Azure manages: certgate has none to serve.
    Auto,
}

impl ByName for BindingType {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("SniEnabled", Self::SniEnabled),
        ("Disabled", Self::Disabled),
        ("Auto", Self::Auto),
    ];
}

/// What an `https://` app's certificate is verified against.
#[derive(Debug, Clone)]
pub enum UpstreamVerify {
    /// The CA certificates of `upstreamTls.caFiles`.
    CaFiles(Vec<CertificateDer<'static>>),
    /// The system's CA certificates (no `caFiles`) that rustls can use.
    System(rustls::RootCertStore),
    /// `insecureSkipVerify`: any certificate the app presents is accepted; the handshake
    /// signature is still checked.
    Skip,
}

impl UpstreamVerify {
    /// How many CA certificates the app's certificate is verified against.
    pub fn count(&self) -> usize {
        match self {
            Self::CaFiles(roots) => roots.len(),
            Self::System(store) => store.len(),
            Self::Skip => 0,
        }
    }
}

/// The protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 with pooled keep-alive connections.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (gRPC apps).
    Http2,
}

impl ByName for Transport {
    /// `ingress.transport`: `auto` and `http` both speak HTTP/1.1.
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", Self::Http1),
        ("http", Self::Http1),
        ("http2", Self::Http2),
    ];
}

/// `ingress.stickySessions.affinity`: `sticky` pins a client to an endpoint by a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// No session affinity.
    None,
    /// Requests of one client to one replica, by cookie.
    Sticky,
}

impl ByName for Affinity {
    const NAMES: &'static [(&'static str, Self)] =
        &[("none", Self::None), ("sticky", Self::Sticky)];
}

/// One name of `forwardClientCert.fields` (`--forward-fields`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfccField {
    /// `Hash`, always sent, as Envoy does.
    Hash,
    /// `Cert`.
    Cert,
    /// `Chain`.
    Chain,
    /// `Subject`.
    Subject,
    /// `URI`.
    Uri,
    /// `DNS`.
    Dns,
}

impl ByName for XfccField {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("hash", Self::Hash),
        ("cert", Self::Cert),
        ("chain", Self::Chain),
        ("subject", Self::Subject),
        ("uri", Self::Uri),
        ("dns", Self::Dns),
    ];
}

/// The optional XFCC fields (`Hash`, `Cert` and `Chain` are chosen the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XfccFields {
    /// `Cert="…"`.
    pub cert: bool,
    /// `Chain="…"`.
    pub chain: bool,
    /// `Subject="…"`.
    pub subject: bool,
    /// `URI=…`, one per URI SAN.
    pub uri: bool,
    /// `DNS=…`, one per DNS SAN.
    pub dns: bool,
}

impl Default for XfccFields {
    fn default() -> Self {
        Self {
            cert: true,
            chain: true,
            subject: false,
            uri: false,
            dns: false,
        }
    }
}

/// Timeouts (docs/config.md "Config reference").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// ClientHello plus handshake.
    pub handshake: Duration,
    /// From accept to a complete ClientHello; never longer than `handshake`.
    pub client_hello: Duration,
    /// A request's header block.
    pub request_header: Duration,
    /// A connection with no request in flight.
    pub idle: Duration,
    /// Connecting to the upstream.
    pub upstream_connect: Duration,
    /// The upstream's response header.
    pub upstream_response: Duration,
    /// The longest gap between request-body bytes from the client.
    pub request_body_idle: Duration,
    /// The longest gap between response-body bytes from the upstream.
    pub upstream_idle: Duration,
    /// Accepting on after shutdown begins, while `/readyz` says 503 (may be zero).
    pub drain_delay: Duration,
    /// Draining on shutdown.
    pub shutdown_grace: Duration,
    /// After a reload, how long requests and upgraded connections of the replaced config may
    /// still run before they are cut (may be zero: cut at once).
    pub reload_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_millis(10_000),
            client_hello: Duration::from_millis(DEFAULT_CLIENT_HELLO_MS),
            request_header: Duration::from_millis(30_000),
            idle: Duration::from_millis(60_000),
            upstream_connect: Duration::from_millis(5_000),
            upstream_response: Duration::from_millis(60_000),
            request_body_idle: Duration::from_millis(30_000),
            upstream_idle: Duration::from_millis(60_000),
            drain_delay: Duration::from_millis(5_000),
            shutdown_grace: Duration::from_millis(30_000),
            reload_grace: Duration::from_millis(30_000),
        }
    }
}

/// Resource limits (docs/config.md "Config reference").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open downstream connections at once.
    pub max_connections: usize,
    /// A request's header block, in bytes.
    pub max_request_header_bytes: usize,
    /// The XFCC value, in bytes.
    pub max_xfcc_bytes: usize,
    /// Header fields in one request.
    pub max_request_headers: usize,
    /// Open connections from one client IP address (`None`: no cap of its own).
    pub max_connections_per_client: Option<usize>,
    /// Connections still in their TLS handshake.
    pub max_pending_handshakes: usize,
    /// Open connections to one app's upstream (pooled, in use and HTTP/2 alike).
    pub max_upstream_connections_per_app: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_request_header_bytes: 65_536,
            max_xfcc_bytes: 32_768,
            max_request_headers: 100,
            max_connections_per_client: None,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            max_upstream_connections_per_app: 1_024,
        }
    }
}

/// The ClientHello deadline when `handshakeMs` is not shorter.
pub(crate) const DEFAULT_CLIENT_HELLO_MS: u64 = 5_000;
/// Connections in their handshake at once, by default (and never more than half of
/// `maxConnections` by default): a flood of clients that never finish their handshake holds at
/// most this many slots (docs/operations.md "Limits under attack").
pub(crate) const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1_024;

/// Where trust in a presented certificate can come from; at least one source is set for
/// `require` and `accept` apps.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// CA certificates that issue client certificates.
    pub roots: Vec<CertificateDer<'static>>,
    /// CRLs checked against every certificate of a CA-verified chain.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// The name each of `crls` is known by (its file, and `#n` after the file's first), in
    /// the same order, for refusals that say which CRL revokes a certificate.
    pub crl_names: Vec<String>,
    /// SHA-256 hashes of pinned leaf certificates.
    pub pins: Vec<[u8; 32]>,
    /// Forward any certificate within its validity period.
    pub allow_untrusted: bool,
    /// The names (DER) of the CAs whose revocation the app checks, when it checks any: the
    /// trusted CAs and the issuers of its CRLs. Under `allow_untrusted`, a leaf that names
    /// one of them as its issuer but does not verify to it is refused, since its revocation
    /// could not be checked.
    pub checked_issuers: Vec<Vec<u8>>,
}

impl Trust {
    /// True when no certificate could ever be trusted.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.pins.is_empty() && !self.allow_untrusted
    }
}

/// Allow-lists: when any is set, a trusted leaf must match at least one entry.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    /// RFC 4514 subject strings.
    pub subjects: Vec<String>,
    /// DNS SANs, normalized.
    pub dns_sans: Vec<String>,
    /// URI SANs.
    pub uri_sans: Vec<String>,
}

impl AllowList {
    /// True when no allow-list is set.
    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty() && self.dns_sans.is_empty() && self.uri_sans.is_empty()
    }
}

/// How a refused certificate reaches the client (`rejectWith`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RejectWith {
    /// Fail the handshake with a TLS alert.
    #[default]
    Tls,
    /// Complete the handshake and answer every request with 495 or 496; nothing reaches the app.
    Http,
}

impl ByName for RejectWith {
    const NAMES: &'static [(&'static str, Self)] = &[("tls", Self::Tls), ("http", Self::Http)];
}

impl RejectWith {
    /// The value as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Http => "http",
        }
    }
}

/// How far a CRL issuer's or OCSP responder's clock may be from ours (a thisUpdate in the
/// future, an OCSP nextUpdate just passed), as OpenSSL's default `-validity_period`.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// `maxAgeMs` when absent: a week, the longest the CA/Browser Forum lets a CRL or OCSP answer
/// for a subscriber certificate run before its nextUpdate.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// `clientAuth.revocation.ocsp` (`--ocsp`, which takes `leaf` or `chain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspMode {
    /// No OCSP.
    Off,
    /// Ask about the leaf only.
    Leaf,
    /// Ask about every certificate of the chain but the root.
    Chain,
}

impl ByName for OcspMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("off", Self::Off),
        ("leaf", Self::Leaf),
        ("chain", Self::Chain),
    ];
}

/// `clientAuth.revocation.onUnknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnknown {
    /// Refuse a certificate whose status cannot be established (`revocation_unknown`).
    Refuse,
    /// Let it through, counted and logged at warn.
    Allow,
}

impl ByName for OnUnknown {
    const NAMES: &'static [(&'static str, Self)] =
        &[("refuse", Self::Refuse), ("allow", Self::Allow)];
}

/// Validated `clientAuth.revocation` settings (besides `crlFiles`).
#[derive(Debug, Clone)]
pub struct RevocationPolicy {
    /// CRLs fetched at load and refreshed in the background.
    pub crl_urls: Vec<http::Uri>,
    /// Also fetch the CRL distribution points of the certificates seen.
    pub crl_from_certificates: bool,
    /// OCSP mode.
    pub ocsp: OcspMode,
    /// Responder used instead of the certificates' AIA.
    pub ocsp_responder: Option<http::Uri>,
    /// What an unknown status does.
    pub on_unknown: OnUnknown,
    /// Refresh CRLs at least this often.
    pub refresh: Duration,
    /// How long after its thisUpdate a CRL or OCSP answer without nextUpdate stays usable.
    pub max_age: Duration,
}

impl Default for RevocationPolicy {
    fn default() -> Self {
        Self {
            crl_urls: Vec::new(),
            crl_from_certificates: false,
            ocsp: OcspMode::Off,
            ocsp_responder: None,
            on_unknown: OnUnknown::Refuse,
            refresh: Duration::from_secs(3600),
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

impl RevocationPolicy {
    /// Whether checking needs more than webpki does with `crlFiles` at the handshake.
    pub fn needs_checker(&self) -> bool {
        !self.crl_urls.is_empty()
            || self.crl_from_certificates
            || self.ocsp != OcspMode::Off
            || self.on_unknown == OnUnknown::Allow
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn client_certificate_mode_is_case_insensitive() {
        assert_eq!(
            ClientCertMode::from_name("REQUIRE"),
            Some(ClientCertMode::Require)
        );
        assert_eq!(
            ClientCertMode::from_name("Accept"),
            Some(ClientCertMode::Accept)
        );
        assert_eq!(ClientCertMode::from_name("optional"), None);
    }

    #[test]
    fn a_name_no_value_has_is_kept_as_written() {
        let parsed: Named<Transport> = serde_json::from_str("\"HTTP2\"").unwrap();
        assert_eq!(parsed, Named::Known(Transport::Http2));
        let parsed: Named<Transport> = serde_json::from_str("\"Http3\"").unwrap();
        assert_eq!(parsed.known(), Err("Http3"));
    }
}
