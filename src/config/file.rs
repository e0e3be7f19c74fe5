//! The JSON config file as written by people: a plain serde mirror with no logic.
//! Every struct refuses unknown keys, so a misspelled key is an error, never a silently
//! ignored (and so weakened) setting; a setting that names a value (`rejectWith`, `ocsp`, ...)
//! is read by name in any letter case, and a name that is no value's is refused by the loader,
//! which names the app. `config.rs` turns this into validated types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::ip_restrictions::IpAction;
use crate::request_policy::Format;
use crate::request_policy::authorization::OtherMethods;
use crate::settings::{
    Affinity, BindingType, ClientCertMode, Named, OcspMode, OnUnknown, RejectWith, Transport,
    XfccField,
};

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// Address of the mTLS listener; `0.0.0.0:8443` when absent.
    pub listen: Option<String>,
    /// Address of the admin listener (health, readiness, metrics); off when absent.
    pub admin: Option<String>,
    /// Address of the plain-HTTP listener (redirects to HTTPS, serves `allowInsecure` apps);
    /// off when absent.
    pub listen_http: Option<String>,
    /// The apps served, chosen by SNI.
    pub apps: Vec<FileApp>,
    /// Timeouts in milliseconds; each absent one takes its default.
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// Resource limits; each absent one takes its default.
    #[serde(default)]
    pub limits: FileLimits,
    /// One `info` line per request; on when absent.
    pub access_log: Option<bool>,
    /// Session ticket keys shared by every replica (each app may override it).
    pub session_tickets: Option<FileSessionTickets>,
    /// PROXY protocol on the mTLS listener; off when absent.
    pub proxy_protocol: Option<FileProxyProtocol>,
    /// Server certificates by name, for `ingress.customDomains` (the last segment of a
    /// `certificateId` names one).
    #[serde(default)]
    pub certificates: BTreeMap<String, FileServerCertificate>,
    /// How upstream host names are resolved; each absent key takes its default.
    #[serde(default)]
    pub upstream_dns: FileUpstreamDns,
}

/// How upstream host names are resolved (docs/config.md "How upstream names are resolved").
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileUpstreamDns {
    /// The longest wait in milliseconds between two resolutions of a name (a shorter TTL
    /// shortens it, down to one second); 5000 when absent.
    pub refresh_ms: Option<u64>,
    /// Nameservers (`IP` or `IP:port`) asked instead of those of /etc/resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// One app behind certgate.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileApp {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Exact host names or `*.domain` wildcards; none makes this the catch-all app.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Upstream base URL, `http://host:port` or `https://host:port`.
    pub upstream: Option<String>,
    /// How an `https://` upstream is verified, and the certificate certgate presents to it;
    /// the same for every `https://` revision.
    pub upstream_tls: Option<FileUpstreamTls>,
    /// Revision name to upstream URL (`http://host:port` or `https://host:port`): the
    /// upstreams `ingress.traffic` splits requests between by `revisionName`.
    #[serde(default)]
    pub revisions: BTreeMap<String, String>,
    /// How many times a request that did not reach the app is sent again to another
    /// endpoint; 1 when absent, 0 turns retries off.
    pub retries: Option<u32>,
    /// Active health checks of every endpoint of every group; none when absent.
    pub health_check: Option<FileHealthCheck>,
    /// The sidecar's further `--upstream` flags, each taking an equal share; never in a file.
    #[serde(skip)]
    pub more_upstreams: Vec<String>,
    /// The certificate this app presents.
    pub server_certificate: FileServerCertificate,
    /// Container Apps style ingress settings.
    #[serde(default)]
    pub ingress: FileIngress,
    /// How presented client certificates are trusted and filtered.
    #[serde(default)]
    pub client_auth: FileClientAuth,
    /// What goes into X-Forwarded-Client-Cert and the other certificate headers.
    #[serde(default)]
    pub forward_client_cert: FileForwardClientCert,
    /// How a refused client certificate is answered: `tls` (an alert, the default) or `http`
    /// (the handshake completes and every request gets 495/496; nothing reaches the app).
    pub reject_with: Option<Named<RejectWith>>,
    /// Path prefixes served with or without a client certificate.
    #[serde(default)]
    pub client_cert_exclusion_paths: Vec<String>,
    /// Ordered authorization rules; the first that matches a request decides.
    #[serde(default)]
    pub authorization: Vec<FileAuthorizationRule>,
    /// Deny requests no authorization rule matches.
    #[serde(default)]
    pub default_deny: bool,
    /// Requests per client identity.
    pub rate_limit: Option<FileRateLimit>,
    /// This app's session ticket keys, instead of the top-level ones.
    pub session_tickets: Option<FileSessionTickets>,
    /// `false` turns TLS session resumption off for this app; on when absent.
    pub session_resumption: Option<bool>,
}

/// `healthCheck`: each absent key takes its default (docs/config.md "Active health checks").
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileHealthCheck {
    /// The path (and query) probed with `GET`; `/` when absent.
    pub path: Option<String>,
    /// Milliseconds between two probes of an endpoint (give or take 10%); 5000 when absent.
    pub interval_ms: Option<u64>,
    /// Milliseconds a probe may take, connection included; 1000 when absent.
    pub timeout_ms: Option<u64>,
    /// Successes in a row that bring an unhealthy endpoint back; 2 when absent.
    pub healthy_threshold: Option<u32>,
    /// Failures in a row that take an endpoint out; 3 when absent.
    pub unhealthy_threshold: Option<u32>,
    /// The status a healthy endpoint answers; 200 when absent.
    pub expected_status: Option<u16>,
}

/// One authorization rule.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileAuthorizationRule {
    /// Normalized path prefix, matched on segment boundaries.
    pub path_prefix: String,
    /// Methods the rule lets through; every method when absent.
    pub methods: Option<Vec<String>>,
    /// A method not in `methods`: `deny` (default, 403 naming the rule) or `next` (the next
    /// rules decide).
    pub other_methods: Option<Named<OtherMethods>>,
    /// RFC 4514 subject strings, matched exactly.
    #[serde(default)]
    pub allowed_subjects: Vec<String>,
    /// DNS subject alternative names.
    #[serde(default)]
    pub allowed_dns_sans: Vec<String>,
    /// URI subject alternative names; a trailing `*` matches any rest.
    #[serde(default)]
    pub allowed_uri_sans: Vec<String>,
    /// SHA-256 hashes (hex) of leaf certificates.
    #[serde(default)]
    pub allowed_hashes: Vec<String>,
    /// Any client whose certificate passed the app's policy.
    #[serde(default)]
    pub allow_any_verified: bool,
}

/// A token bucket per client identity.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRateLimit {
    /// Sustained requests per second (fractions allowed).
    pub requests_per_second: f64,
    /// Requests allowed at once; `requestsPerSecond` rounded up when absent.
    pub burst: Option<u32>,
}

/// Where shared session ticket keys are read from.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSessionTickets {
    /// Key file: one base64 key of 32 bytes a line; the first encrypts, all decrypt.
    pub key_file: PathBuf,
}

/// PROXY protocol (v1 and v2) on the mTLS listener.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileProxyProtocol {
    /// CIDRs (`10.0.0.0/8`, `::1/128`) whose connections must start with a PROXY header;
    /// connections from anywhere else are refused.
    pub trusted_sources: Vec<String>,
}

/// A server certificate: PEM files or a PKCS#12 archive.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileServerCertificate {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PKCS#12 archive holding the key and chain.
    pub pkcs12_file: Option<PathBuf>,
    /// File holding the PKCS#12 password.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the PKCS#12 password.
    pub password_env: Option<String>,
}

/// TLS to an `https://` upstream (docs/upstream-tls.md).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// PEM bundles of the CAs that issue the app's certificate; the system's CAs when empty
    /// (and not `insecureSkipVerify`).
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// The name the app's certificate must hold, sent as SNI; the upstream host when absent.
    pub server_name: Option<String>,
    /// PEM certificate chain certgate presents to the app, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `certFile`.
    pub key_file: Option<PathBuf>,
    /// PKCS#12 archive holding certgate's client key and chain.
    pub pkcs12_file: Option<PathBuf>,
    /// File holding the PKCS#12 password.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the PKCS#12 password.
    pub password_env: Option<String>,
    /// Accept any certificate the app presents (testing only; `certgate check` flags it).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Mirrors the ARM `properties.configuration.ingress` object of Container Apps, as
/// `az containerapp show` prints it (`null` wherever Azure prints `null`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileIngress {
    /// `require`, `accept` or `ignore`, any letter case; `require` when absent.
    pub client_certificate_mode: Option<Named<ClientCertMode>>,
    /// Shorthand for upstream `http://127.0.0.1:<port>`.
    pub target_port: Option<u16>,
    /// `auto` or `http` (HTTP/1.1 upstream) or `http2` (h2c prior knowledge); `tcp` is refused.
    pub transport: Option<Named<Transport>>,
    /// More host names for the app, each with its certificate; `null` as none.
    pub custom_domains: Option<Vec<FileCustomDomain>>,
    /// Cross-origin requests from browsers (docs/cors.md); off when absent or `null`.
    pub cors_policy: Option<FileCorsPolicy>,
    /// Serve the app over plain HTTP on `listenHttp` instead of redirecting to HTTPS; `false`
    /// when absent.
    pub allow_insecure: Option<bool>,
    // The keys below mean nothing outside Azure: `Some` when given, `Some(None)` when given
    // as `null`, so that `check` lists every one given as ignored.
    /// Whether Azure exposes the app outside its environment; ignored.
    #[serde(default, deserialize_with = "given")]
    pub external: Option<Option<bool>>,
    /// The name Azure gave the app; ignored (`hosts` lists the names served).
    #[serde(default, deserialize_with = "given")]
    pub fqdn: Option<Option<String>>,
    /// A TCP app's port on the environment; only 0 (none) is accepted.
    #[serde(default, deserialize_with = "given")]
    pub exposed_port: Option<Option<u32>>,
    /// Extra TCP ports; only `null` or `[]` is accepted.
    #[serde(default, deserialize_with = "given")]
    pub additional_port_mappings: Option<Option<Vec<serde::de::IgnoredAny>>>,
    /// How traffic splits between the app's `upstream` and its `revisions`, by weight.
    #[serde(default, deserialize_with = "given")]
    pub traffic: Option<Option<Vec<FileTrafficWeight>>>,
    /// Session affinity; only `none` is accepted.
    #[serde(default, deserialize_with = "given")]
    pub sticky_sessions: Option<Option<FileStickySessions>>,
    /// Client addresses admitted (`Allow` rules) or refused (`Deny` rules).
    pub ip_security_restrictions: Option<Vec<FileIpSecurityRestriction>>,
}

/// One entry of `ingress.customDomains`, as Azure exports it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileCustomDomain {
    /// The host name.
    pub name: String,
    /// `SniEnabled` (the certificate `certificateId` names), `Disabled` (the app's own
    /// server certificate) or `Auto` (Azure-managed: refused); `SniEnabled` when a
    /// `certificateId` is given, else `Disabled`.
    pub binding_type: Option<Named<BindingType>>,
    /// An Azure resource id or a bare name: its last `/`-separated segment names an entry of
    /// the top-level `certificates`.
    pub certificate_id: Option<String>,
}

/// `ingress.corsPolicy`, as Container Apps prints it; a list may be `null`, as Azure prints
/// an unset one.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileCorsPolicy {
    /// Origins (`scheme://host[:port]`) whose pages may read the app's answers, or `*`.
    pub allowed_origins: Option<Vec<String>>,
    /// Methods a preflight may ask for, or `*`.
    pub allowed_methods: Option<Vec<String>>,
    /// Request headers a preflight may ask for, or `*`.
    pub allowed_headers: Option<Vec<String>>,
    /// Response headers the page's script may read, or `*`.
    pub expose_headers: Option<Vec<String>>,
    /// Seconds a browser may cache a preflight's answer.
    pub max_age: Option<i64>,
    /// Whether pages may send credentials (cookies, client certificates) and read the answer.
    pub allow_credentials: Option<bool>,
}

/// A key that is there, `null` or not (an absent key stays `None` by `#[serde(default)]`).
fn given<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One entry of `ingress.traffic`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileTrafficWeight {
    /// Percent of the traffic.
    pub weight: Option<u32>,
    /// Whether the entry follows the newest revision.
    pub latest_revision: Option<bool>,
    /// The revision the entry names.
    pub revision_name: Option<String>,
    /// The label the entry names.
    pub label: Option<String>,
}

/// `ingress.stickySessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileStickySessions {
    /// `none` or `sticky`, any letter case.
    pub affinity: Option<Named<Affinity>>,
}

/// One rule of `ingress.ipSecurityRestrictions`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileIpSecurityRestriction {
    /// Unique within the app; log lines name the rule that refused a client.
    pub name: String,
    /// For people.
    pub description: Option<String>,
    /// A CIDR range (`203.0.113.0/24`, `2001:db8::/32`) or a single address.
    pub ip_address_range: String,
    /// `Allow` or `Deny`, any letter case; every rule of an app has the same.
    pub action: Option<Named<IpAction>>,
}

/// Trust sources and allow-lists for client certificates.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileClientAuth {
    /// PEM bundles of CA certificates that issue client certificates.
    #[serde(default)]
    pub trusted_ca_files: Vec<PathBuf>,
    /// PEM certificate revocation lists.
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// SHA-256 hashes (hex) of pinned leaf certificates.
    #[serde(default)]
    pub allowed_hashes: Vec<String>,
    /// Forward any certificate, trusted or not; the app must validate it.
    #[serde(default)]
    pub allow_untrusted: bool,
    /// RFC 4514 subject strings, matched exactly.
    #[serde(default)]
    pub allowed_subjects: Vec<String>,
    /// DNS subject alternative names.
    #[serde(default)]
    pub allowed_dns_sans: Vec<String>,
    /// URI subject alternative names (e.g. SPIFFE IDs).
    #[serde(default)]
    pub allowed_uri_sans: Vec<String>,
    /// Revocation checking: CRL files and URLs, CRLs named by certificates, OCSP.
    pub revocation: Option<FileRevocation>,
}

/// `clientAuth.revocation` (docs/revocation.md).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRevocation {
    /// PEM certificate revocation lists (`clientAuth.crlFiles` is an alias).
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// `http://` URLs of CRLs, fetched at start and refreshed in the background.
    #[serde(default)]
    pub crl_urls: Vec<String>,
    /// Also fetch the CRL distribution points of the certificates seen.
    #[serde(default)]
    pub crl_from_certificates: bool,
    /// `off` (default), `leaf` or `chain`.
    pub ocsp: Option<Named<OcspMode>>,
    /// OCSP responder URL used instead of the certificates' Authority Information Access.
    pub ocsp_responder: Option<String>,
    /// `refuse` (default) or `allow` a certificate whose status cannot be established.
    pub on_unknown: Option<Named<OnUnknown>>,
    /// Refresh fetched CRLs at least this often (default one hour).
    pub refresh_ms: Option<u64>,
    /// How long after its thisUpdate a CRL or OCSP answer without nextUpdate is believed
    /// (default a week).
    pub max_age_ms: Option<u64>,
}

/// Which XFCC fields to send.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileForwardClientCert {
    /// Any of `Hash`, `Cert`, `Chain`, `Subject`, `URI`, `DNS`; `Hash`, `Cert`, `Chain` when absent.
    pub fields: Option<Vec<Named<XfccField>>>,
    /// Header formats: `envoy`, `rfc9440`, `aws-alb`, `azure-app-service`, `verdict`;
    /// `["envoy"]` when absent.
    pub formats: Option<Vec<Named<Format>>>,
}

/// Timeouts in milliseconds (docs/config.md "Config reference" has the defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileTimeouts {
    /// One deadline for the ClientHello and the whole handshake.
    pub handshake_ms: Option<u64>,
    /// Time from accept to a complete ClientHello (at most `handshakeMs`).
    pub client_hello_ms: Option<u64>,
    /// Time to receive a request's complete header.
    pub request_header_ms: Option<u64>,
    /// Time a connection may sit without a request in flight.
    pub idle_ms: Option<u64>,
    /// Time to connect to the upstream.
    pub upstream_connect_ms: Option<u64>,
    /// Time for the upstream to send its response header.
    pub upstream_response_ms: Option<u64>,
    /// Longest gap between request-body bytes from the client.
    pub request_body_idle_ms: Option<u64>,
    /// Longest gap between response-body bytes from the upstream.
    pub upstream_idle_ms: Option<u64>,
    /// Time the listener keeps accepting after SIGTERM, while `/readyz` says 503.
    pub drain_delay_ms: Option<u64>,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace_ms: Option<u64>,
    /// Time requests and upgraded connections of a replaced config get to finish after a
    /// reload; 0 cuts them at once.
    pub reload_grace_ms: Option<u64>,
}

/// Resource limits.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileLimits {
    /// Open downstream connections at once.
    pub max_connections: Option<usize>,
    /// Size of a request's header block.
    pub max_request_header_bytes: Option<usize>,
    /// Size of the X-Forwarded-Client-Cert value.
    pub max_xfcc_bytes: Option<usize>,
    /// Header fields in one request.
    pub max_request_headers: Option<usize>,
    /// Open connections from one client IP address; no cap when absent.
    pub max_connections_per_client: Option<usize>,
    /// Connections still in their TLS handshake.
    pub max_pending_handshakes: Option<usize>,
    /// Open connections to one app's upstream; past it a request waits up to
    /// `upstreamConnectMs` for one, then gets 503.
    pub max_upstream_connections_per_app: Option<usize>,
}
