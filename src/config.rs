//! Config loading: the JSON file model (`file.rs`) or the sidecar flags become validated types.
//! Every file named is read once here, every certificate parsed, every app's rustls config
//! built, so a `Config` that exists can be served; any problem is a `ConfigError`.

pub mod checks;
pub mod file;
mod pem_files;
pub mod policy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use self::checks::{Finding, Severity};
use self::file::{
    FileApp, FileClientAuth, FileConfig, FileRevocation, FileServerCertificate, FileSessionTickets,
};
use self::pem_files::{CERTIFICATE, CRL, contains, pem_items, pem_problem};
use self::policy::PolicyError;
use crate::policy::AppPolicy;
use crate::proxy_protocol::{ProxyProtocol, TrustedSourceError};
use crate::revocation::{OcspMode, OnUnknown, Policy as RevocationPolicy, Revocation};
use crate::tls::client_auth::{AllowList, RejectWith, Trust};
use crate::tls::policy::Policy;
use crate::tls::server_config::Resumption;
use crate::tls::sni::{HostPattern, InvalidHost};
use crate::tls::ticket_keys::{TicketKeyError, TicketKeys};

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
    /// What `certgate check` reports beyond hard errors (README "Checking a config").
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

/// How an app's TLS sessions resume (README "Running many replicas").
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

impl std::str::FromStr for ClientCertMode {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "require" => Ok(Self::Require),
            "accept" => Ok(Self::Accept),
            "ignore" => Ok(Self::Ignore),
            _ => Err(ConfigError::UnknownMode {
                key: FILE_KEYS.mode,
                value: value.to_owned(),
            }),
        }
    }
}

/// The app's upstream: an `http://` authority and the protocol spoken to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port` of the app.
    pub authority: http::uri::Authority,
    /// HTTP/1.1 or h2c.
    pub transport: Transport,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority)
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

/// Timeouts (README "Config reference").
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
        }
    }
}

/// Resource limits (README "Config reference").
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
        }
    }
}

/// The ClientHello deadline when `handshakeMs` is not shorter.
const DEFAULT_CLIENT_HELLO_MS: u64 = 5_000;
/// Connections in their handshake at once, by default: a flood of clients that never finish
/// their handshake holds at most this many slots (README "Limits under attack").
const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1_024;
/// The names a person wrote the settings under, so errors speak the config file's keys or the
/// sidecar's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    mode: &'static str,
    trusted_ca: &'static str,
    crl: &'static str,
    hashes: &'static str,
    subjects: &'static str,
    fields: &'static str,
    reject_with: &'static str,
    client_auth: &'static str,
    no_trust_advice: &'static str,
    ignored_advice: &'static str,
}

/// The config file's keys.
pub const FILE_KEYS: Keys = Keys {
    mode: "clientCertificateMode",
    trusted_ca: "trustedCaFiles",
    crl: "crlFiles",
    hashes: "allowedHashes",
    subjects: "allowedSubjects",
    fields: "forwardClientCert.fields",
    reject_with: "rejectWith",
    client_auth: "clientAuth settings",
    no_trust_advice: "set trustedCaFiles, allowedHashes or allowUntrusted",
    ignored_advice: "remove them or pick require/accept",
};

/// The sidecar's flags.
pub const FLAG_KEYS: Keys = Keys {
    mode: "--client-cert-mode",
    trusted_ca: "--client-ca",
    crl: "--crl",
    hashes: "--allowed-hash",
    subjects: "--allowed-subject",
    fields: "--forward-fields",
    reject_with: "--reject-with",
    client_auth: "client-certificate flags",
    no_trust_advice: "pass --client-ca, --allowed-hash or --allow-untrusted",
    ignored_advice: "remove them or pass --client-cert-mode require (or accept)",
};

/// hyper's HTTP/1.1 read buffer cannot be smaller than this.
const MIN_REQUEST_HEADER_BYTES: usize = 8192;
const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
    #[error("{path} is not valid config JSON")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {what} {number} is malformed PEM: {problem}; export it again as PEM")]
    Pem {
        path: PathBuf,
        what: &'static str,
        number: usize,
        problem: String,
    },
    #[error("{path} holds no {what} (no \"-----BEGIN {label}-----\" line)")]
    NoPemItem {
        path: PathBuf,
        what: &'static str,
        label: &'static str,
    },
    #[error(
        "{path} is a DER (binary) {what}; certgate reads PEM: convert it with `{tool} -inform der -outform pem -in {path} -out {path}.pem`"
    )]
    Der {
        path: PathBuf,
        what: &'static str,
        tool: &'static str,
    },
    #[error(
        "{path} holds an encrypted private key; certgate needs it unencrypted: `openssl pkcs8 -topk8 -nocrypt -in {path} -out key.pem` (then keep key.pem readable only by certgate)"
    )]
    EncryptedKey { path: PathBuf },
    #[error("certificate {number} in {path} cannot be parsed: {reason}")]
    BadCertificate {
        path: PathBuf,
        number: usize,
        reason: String,
    },
    #[error("{path}: certificate {number} is not a usable CA certificate")]
    BadCa {
        path: PathBuf,
        number: usize,
        source: rustls::Error,
    },
    #[error("the private key in {key_file} does not match the certificate in {cert_file}")]
    KeyMismatch {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    #[error("the private key in {path} cannot be used")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot load PKCS#12 file {path}")]
    Pkcs12 {
        path: PathBuf,
        source: crate::tls::pkcs12::Pkcs12Error,
    },
    #[error("environment variable {name} (passwordEnv) is not set")]
    MissingPasswordEnv { name: String },
    #[error("no apps are configured")]
    NoApps,
    #[error("an app has an empty name")]
    EmptyName,
    #[error("two apps are named {name:?}")]
    DuplicateName { name: String },
    #[error("app {app:?}")]
    Host { app: String, source: InvalidHost },
    #[error("host {host:?} is claimed by both app {first:?} and app {second:?}")]
    DuplicateHost {
        host: String,
        first: String,
        second: String,
    },
    #[error("apps {first:?} and {second:?} both have no hosts; only one catch-all app is allowed")]
    DuplicateCatchAll { first: String, second: String },
    #[error("app {app:?} has neither upstream nor ingress.targetPort")]
    MissingUpstream { app: String },
    #[error("app {app:?}: upstream {value:?} must be http://host:port with no path")]
    BadUpstream { app: String, value: String },
    #[error("app {app:?}: unknown ingress.transport {value:?} (expected auto, http or http2)")]
    UnknownTransport { app: String, value: String },
    #[error("unknown {key} {value:?} (expected require, accept or ignore)")]
    UnknownMode { key: &'static str, value: String },
    #[error("app {app:?}")]
    Mode {
        app: String,
        source: Box<ConfigError>,
    },
    #[error("app {app:?} is in {mode} mode but has no trust source: {advice}")]
    NoTrustSource {
        app: String,
        mode: &'static str,
        advice: &'static str,
    },
    #[error("app {app:?} is in ignore mode, where {what} have no effect: {advice}")]
    ClientAuthIgnored {
        app: String,
        what: &'static str,
        advice: &'static str,
    },
    #[error("app {app:?}: {crl} needs {ca} (CRLs only apply to CA-verified chains)")]
    CrlWithoutCa {
        app: String,
        crl: &'static str,
        ca: &'static str,
    },
    #[error(
        "app {app:?}: clientAuth.revocation needs trustedCaFiles (revocation only applies to CA-verified chains)"
    )]
    RevocationWithoutCa { app: String },
    #[error(
        "app {app:?}: {field} {value:?} must be an http:// URL (CRLs and OCSP answers are signed; https is not supported)"
    )]
    BadRevocationUrl {
        app: String,
        field: &'static str,
        value: String,
    },
    #[error(
        "app {app:?}: unknown clientAuth.revocation.ocsp {value:?} (expected off, leaf or chain)"
    )]
    UnknownOcspMode { app: String, value: String },
    #[error(
        "app {app:?}: unknown clientAuth.revocation.onUnknown {value:?} (expected refuse or allow)"
    )]
    UnknownOnUnknown { app: String, value: String },
    #[error("app {app:?}: clientAuth.revocation.refreshMs must be at least 1000")]
    RefreshTooShort { app: String },
    #[error("app {app:?}: revocation")]
    Revocation {
        app: String,
        source: crate::revocation::LoadError,
    },
    #[error("app {app:?}: {key} value {value:?} is not a SHA-256 hash (64 hex digits)")]
    BadHash {
        app: String,
        key: &'static str,
        value: String,
    },
    #[error(
        "app {app:?}: {key} value {value:?} is not an RFC 4514 subject; certgate reads RFC 4514, most specific RDN first{}",
        suggestion.as_ref().map(|s| format!(": {s}")).unwrap_or_else(|| " (e.g. CN=alice,O=Acme)".to_owned())
    )]
    BadSubject {
        app: String,
        key: &'static str,
        value: String,
        suggestion: Option<String>,
    },
    #[error(
        "app {app:?}: unknown {key} value {value:?} (expected Hash, Cert, Chain, Subject, URI or DNS)"
    )]
    UnknownXfccField {
        app: String,
        key: &'static str,
        value: String,
    },
    #[error("app {app:?}: unknown {key} {value:?} (expected tls or http)")]
    UnknownRejectWith {
        app: String,
        key: &'static str,
        value: String,
    },
    #[error("admin {admin} overlaps listen {listen}: put the admin listener on another port")]
    AdminOverlapsListen {
        admin: SocketAddr,
        listen: SocketAddr,
    },
    #[error(
        "app {app:?}: serverCertificate needs certFile and keyFile, or pkcs12File with passwordFile or passwordEnv"
    )]
    ServerCertificateShape { app: String },
    #[error("app {app:?}: {source}")]
    Policy { app: String, source: PolicyError },
    #[error("app {app:?}: cannot build the client certificate verifier")]
    Verifier {
        app: String,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("app {app:?}: cannot build the TLS configuration")]
    Tls { app: String, source: rustls::Error },
    #[error("{field} {value:?} is not an IP:port socket address")]
    BadAddress { field: &'static str, value: String },
    #[error("{field} must be greater than zero")]
    Zero { field: &'static str },
    #[error("limits.maxRequestHeaderBytes must be at least {MIN_REQUEST_HEADER_BYTES}")]
    HeaderLimitTooSmall,
    #[error("timeouts.clientHelloMs must not be longer than timeouts.handshakeMs")]
    ClientHelloLongerThanHandshake,
    #[error("session ticket key file {path} cannot be used")]
    TicketKeys {
        path: PathBuf,
        source: TicketKeyError,
    },
    #[error(
        "app {app:?} sets sessionTickets and sessionResumption false: remove one (false turns resumption off)"
    )]
    TicketsWithoutResumption { app: String },
    #[error("proxyProtocol.trustedSources")]
    TrustedSources { source: TrustedSourceError },
}

impl Config {
    /// Reads and validates a config file; relative paths in it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        let file: FileConfig =
            serde_json::from_slice(&text).map_err(|source| ConfigError::Json {
                path: path.to_owned(),
                source,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::from_file(file, base)?;
        config.files.insert(0, path.to_owned());
        Ok(config)
    }

    /// Validates a file model (from a config file or built from sidecar flags); relative paths
    /// are resolved against `base`.
    pub fn from_file(file: FileConfig, base: &Path) -> Result<Self, ConfigError> {
        Self::from_model(file, base, FILE_KEYS)
    }

    /// Like `from_file`, for a model built from the sidecar's flags: errors name the flags.
    pub fn from_flags(file: FileConfig, base: &Path) -> Result<Self, ConfigError> {
        Self::from_model(file, base, FLAG_KEYS)
    }

    fn from_model(file: FileConfig, base: &Path, keys: Keys) -> Result<Self, ConfigError> {
        let mut loader = Loader::new(base, keys);
        loader.session_tickets = file.session_tickets.as_ref();
        if file.apps.is_empty() {
            return Err(ConfigError::NoApps);
        }
        let limits = limits(&file.limits)?;
        let mut apps: Vec<Arc<AppConfig>> = Vec::with_capacity(file.apps.len());
        let mut hosts: HashMap<String, String> = HashMap::new();
        let mut catch_all: Option<String> = None;
        for file_app in &file.apps {
            let app = loader.app(file_app)?;
            if apps.iter().any(|other| other.name == app.name) {
                return Err(ConfigError::DuplicateName { name: app.name });
            }
            if app.hosts.is_empty() {
                if let Some(first) = catch_all.replace(app.name.clone()) {
                    return Err(ConfigError::DuplicateCatchAll {
                        first,
                        second: app.name,
                    });
                }
            }
            for host in &app.hosts {
                if let Some(first) = hosts.insert(host.to_string(), app.name.clone()) {
                    return Err(ConfigError::DuplicateHost {
                        host: host.to_string(),
                        first,
                        second: app.name,
                    });
                }
            }
            apps.push(Arc::new(app));
        }
        let config = Self {
            listen: address("listen", file.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?,
            admin: file
                .admin
                .as_deref()
                .map(|value| address("admin", value))
                .transpose()?,
            apps,
            timeouts: timeouts(&file.timeouts)?,
            limits,
            access_log: file.access_log.unwrap_or(true),
            proxy_protocol: file
                .proxy_protocol
                .as_ref()
                .map(|proxy| ProxyProtocol::new(&proxy.trusted_sources).map(Arc::new))
                .transpose()
                .map_err(|source| ConfigError::TrustedSources { source })?,
            files: loader.files,
            findings: loader.findings,
        };
        config.check_listeners()?;
        Ok(config)
    }

    /// Refuses an admin listener that would collide with the mTLS listener.
    pub fn check_listeners(&self) -> Result<(), ConfigError> {
        match self.admin {
            Some(admin) if checks::overlaps(admin, self.listen) => {
                Err(ConfigError::AdminOverlapsListen {
                    admin,
                    listen: self.listen,
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether a finding is an error, for `certgate check`'s exit code.
    pub fn has_error_findings(&self) -> bool {
        self.findings
            .iter()
            .any(|finding| finding.severity == Severity::Error)
    }
}

/// The trust sources and allow-lists of `clientAuth` alone (no server certificate, no app),
/// for `certgate explain`'s sidecar form; relative paths are resolved against `base`.
pub fn client_policy(
    file: &FileClientAuth,
    mode: ClientCertMode,
    base: &Path,
    keys: Keys,
) -> Result<(Trust, AllowList), ConfigError> {
    let (trust, allow, _revocation) = Loader::new(base, keys).client_auth("app", mode, file)?;
    Ok((trust, allow))
}

/// One line describing an app, as `certgate check` prints it.
pub fn summary(app: &AppConfig) -> String {
    let hosts = if app.hosts.is_empty() {
        "* (catch-all)".to_owned()
    } else {
        app.hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let not_after = app
        .server_chain
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .map(|(_, leaf)| leaf.validity().not_after.to_string())
        .unwrap_or_default();
    let list = |entries: &[String]| format!("[{}]", entries.join(" | "));
    let fields = app.xfcc_fields;
    let forwarded: Vec<&str> = [
        (true, "Hash"),
        (fields.cert, "Cert"),
        (fields.chain, "Chain"),
        (fields.subject, "Subject"),
        (fields.uri, "URI"),
        (fields.dns, "DNS"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    format!(
        "{name}: hosts={hosts} mode={mode} upstream={upstream} trust={cas} CA, {crls} CRL, {pins} pinned{untrusted}{revocation} allowed-subjects={subjects} allowed-dns-sans={dns} allowed-uri-sans={uris} forward={forwarded} reject-with={reject_with} server-cert-expires={not_after} resumption={resumption}{policy}",
        subjects = list(&app.allow.subjects),
        dns = list(&app.allow.dns_sans),
        uris = list(&app.allow.uri_sans),
        forwarded = forwarded.join(","),
        reject_with = app.reject_with.as_str(),
        name = app.name,
        mode = app.mode.as_str(),
        upstream = app.upstream,
        cas = app.trust.roots.len(),
        crls = app.trust.crls.len(),
        revocation = app
            .revocation
            .as_ref()
            .map(|revocation| format!(", revocation: {}", revocation.describe()))
            .unwrap_or_default(),
        pins = app.trust.pins.len(),
        policy = app.request_policy.describe(),
        untrusted = if app.trust.allow_untrusted {
            ", untrusted allowed"
        } else {
            ""
        },
        resumption = app.session_resumption.as_str(),
    )
}

/// Every certificate of a PEM file, leaf first, without judging them (for `certgate explain`,
/// which judges them itself).
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    pem_items(&read(path)?, path, CERTIFICATE)
}

/// `--forward-fields` as XFCC fields.
pub fn forward_fields(names: Option<&[String]>) -> Result<XfccFields, ConfigError> {
    xfcc_fields("app", FLAG_KEYS.fields, names)
}

/// Reads files relative to the config's folder and remembers each one read.
struct Loader<'a> {
    base: &'a Path,
    files: Vec<PathBuf>,
    provider: Arc<CryptoProvider>,
    keys: Keys,
    findings: Vec<Finding>,
    /// The top-level `sessionTickets`, for apps that set none.
    session_tickets: Option<&'a FileSessionTickets>,
    /// Key files read so far (several apps usually share one).
    ticket_keys: HashMap<PathBuf, TicketKeys>,
}

impl<'a> Loader<'a> {
    fn new(base: &'a Path, keys: Keys) -> Self {
        Self {
            base,
            files: Vec::new(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            keys,
            findings: Vec::new(),
            session_tickets: None,
            ticket_keys: HashMap::new(),
        }
    }

    fn app(&mut self, file: &FileApp) -> Result<AppConfig, ConfigError> {
        let name = file.name.trim().to_owned();
        if name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        let hosts = file
            .hosts
            .iter()
            .map(|host| HostPattern::parse(host))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ConfigError::Host {
                app: name.clone(),
                source,
            })?;
        let upstream = upstream(&name, file)?;
        let mode = match &file.ingress.client_certificate_mode {
            Some(value) => value.parse().map_err(|source| ConfigError::Mode {
                app: name.clone(),
                source: Box::new(match source {
                    ConfigError::UnknownMode { value, .. } => ConfigError::UnknownMode {
                        key: self.keys.mode,
                        value,
                    },
                    other => other,
                }),
            })?,
            None => ClientCertMode::Require,
        };
        let (trust, allow, revocation) = self.client_auth(&name, mode, &file.client_auth)?;
        let xfcc_fields = xfcc_fields(
            &name,
            self.keys.fields,
            file.forward_client_cert.fields.as_deref(),
        )?;
        let reject_with = match file.reject_with.as_deref().map(str::to_ascii_lowercase) {
            None => RejectWith::Tls,
            Some(value) => match value.as_str() {
                "tls" => RejectWith::Tls,
                "http" => RejectWith::Http,
                _ => {
                    return Err(ConfigError::UnknownRejectWith {
                        app: name,
                        key: self.keys.reject_with,
                        value,
                    });
                }
            },
        };
        let request_policy =
            policy::app_policy(file, mode).map_err(|source| ConfigError::Policy {
                app: name.clone(),
                source,
            })?;
        let (server_chain, key) = self.server_certificate(&name, &file.server_certificate)?;
        if let (Some(leaf), Some(cert_file)) = (
            server_chain.first(),
            file.server_certificate
                .cert_file
                .as_ref()
                .or(file.server_certificate.pkcs12_file.as_ref()),
        ) {
            let cert_file = self.resolve(cert_file);
            self.findings
                .extend(checks::host_coverage(&name, &hosts, leaf, &cert_file));
        }
        let policy = match mode {
            ClientCertMode::Ignore => None,
            ClientCertMode::Require | ClientCertMode::Accept => Some(Arc::new(
                Policy::new(trust.clone(), allow.clone(), &self.provider).map_err(|source| {
                    ConfigError::Verifier {
                        app: name.clone(),
                        source,
                    }
                })?,
            )),
        };
        // With exclusion paths a `require` app asks for a certificate without demanding one at
        // the handshake; the proxy then refuses certificate-less requests outside those paths.
        let tls_mode =
            if mode == ClientCertMode::Require && !request_policy.exclusion_paths.is_empty() {
                ClientCertMode::Accept
            } else {
                mode
            };
        let verifier = policy.as_ref().and_then(|policy| {
            crate::tls::client_auth::verifier(tls_mode, policy, reject_with, &self.provider)
        });
        let (session_resumption, resumption) =
            self.resumption(&name, mode, &trust, &allow, file)?;
        let tls = crate::tls::server_config::build(
            self.provider.clone(),
            verifier,
            server_chain.clone(),
            key,
            resumption,
        )
        .map_err(|source| ConfigError::Tls {
            app: name.clone(),
            source,
        })?;
        Ok(AppConfig {
            name,
            hosts,
            upstream,
            mode,
            trust,
            allow,
            policy,
            reject_with,
            xfcc_fields,
            request_policy,
            server_chain,
            session_resumption,
            tls,
            revocation,
        })
    }

    /// The app's resumption setting and the rustls side of it: off, process keys, or keys
    /// derived from the shared key file for this app's name and trust.
    fn resumption(
        &mut self,
        app: &str,
        mode: ClientCertMode,
        trust: &Trust,
        allow: &AllowList,
        file: &FileApp,
    ) -> Result<(SessionResumption, Resumption), ConfigError> {
        if file.session_resumption == Some(false) {
            if file.session_tickets.is_some() {
                return Err(ConfigError::TicketsWithoutResumption {
                    app: app.to_owned(),
                });
            }
            return Ok((SessionResumption::Off, Resumption::Off));
        }
        let Some(tickets) = file.session_tickets.as_ref().or(self.session_tickets) else {
            return Ok((SessionResumption::ProcessKeys, Resumption::ProcessKeys));
        };
        let path = self.resolve(&tickets.key_file);
        let keys = match self.ticket_keys.get(&path) {
            Some(keys) => keys.clone(),
            None => {
                let keys = TicketKeys::parse(&self.read(&tickets.key_file)?).map_err(|source| {
                    ConfigError::TicketKeys {
                        path: path.clone(),
                        source,
                    }
                })?;
                self.ticket_keys.insert(path.clone(), keys.clone());
                keys
            }
        };
        let fingerprint = crate::tls::ticket_keys::trust_fingerprint(mode, trust, allow);
        let ticketer =
            keys.ticketer(app, &fingerprint)
                .map_err(|source| ConfigError::TicketKeys {
                    path: path.clone(),
                    source,
                })?;
        Ok((
            SessionResumption::SharedKeys { key_file: path },
            Resumption::SharedKeys(ticketer),
        ))
    }

    fn client_auth(
        &mut self,
        app: &str,
        mode: ClientCertMode,
        file: &FileClientAuth,
    ) -> Result<(Trust, AllowList, Option<Arc<Revocation>>), ConfigError> {
        let configured = !file.trusted_ca_files.is_empty()
            || !file.crl_files.is_empty()
            || file.revocation.is_some()
            || !file.allowed_hashes.is_empty()
            || file.allow_untrusted
            || !file.allowed_subjects.is_empty()
            || !file.allowed_dns_sans.is_empty()
            || !file.allowed_uri_sans.is_empty();
        if mode == ClientCertMode::Ignore {
            if configured {
                return Err(ConfigError::ClientAuthIgnored {
                    app: app.to_owned(),
                    what: self.keys.client_auth,
                    advice: self.keys.ignored_advice,
                });
            }
            return Ok((Trust::default(), AllowList::default(), None));
        }
        // `clientAuth.crlFiles` is an alias of `clientAuth.revocation.crlFiles`.
        let file_revocation = file.revocation.clone().unwrap_or_default();
        let crl_files: Vec<PathBuf> = file
            .crl_files
            .iter()
            .chain(&file_revocation.crl_files)
            .cloned()
            .collect();
        if file.revocation.is_some() && file.trusted_ca_files.is_empty() {
            return Err(ConfigError::RevocationWithoutCa {
                app: app.to_owned(),
            });
        }
        let revocation_policy = revocation_policy(app, &file_revocation)?;
        if !crl_files.is_empty() && file.trusted_ca_files.is_empty() {
            return Err(ConfigError::CrlWithoutCa {
                app: app.to_owned(),
                crl: self.keys.crl,
                ca: self.keys.trusted_ca,
            });
        }
        let mut roots = Vec::new();
        for path in &file.trusted_ca_files {
            let certificates = self.certificates(path)?;
            for (index, certificate) in certificates.iter().enumerate() {
                crate::tls::client_auth::check_trust_anchor(certificate).map_err(|source| {
                    ConfigError::BadCa {
                        path: self.resolve(path),
                        number: index + 1,
                        source,
                    }
                })?;
                if let Some(finding) =
                    checks::non_ca(app, &self.resolve(path), index + 1, certificate)
                {
                    self.findings.push(finding);
                }
            }
            roots.extend(certificates);
        }
        let mut crls = Vec::new();
        let mut crl_sources = Vec::new();
        for path in &crl_files {
            let loaded = self.crls(path)?;
            let name = self.resolve(path).display().to_string();
            for (index, crl) in loaded.iter().enumerate() {
                let source = if index == 0 {
                    name.clone()
                } else {
                    format!("{name}#{index}")
                };
                crl_sources.push((source, crl.as_ref().to_vec()));
            }
            crls.extend(loaded);
        }
        // Beyond crlFiles, every CRL is checked after the handshake, by one checker.
        let revocation = if revocation_policy.needs_checker() {
            crls.clear();
            let revocation = Revocation::load(
                app,
                revocation_policy,
                &roots,
                crl_sources,
                self.provider.signature_verification_algorithms,
            )
            .map_err(|source| ConfigError::Revocation {
                app: app.to_owned(),
                source,
            })?;
            Some(Arc::new(revocation))
        } else {
            None
        };
        let pins = file
            .allowed_hashes
            .iter()
            .map(|value| {
                parse_sha256(value).ok_or_else(|| ConfigError::BadHash {
                    app: app.to_owned(),
                    key: self.keys.hashes,
                    value: value.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trust = Trust {
            roots,
            crls,
            pins,
            allow_untrusted: file.allow_untrusted,
        };
        if trust.is_empty() {
            return Err(ConfigError::NoTrustSource {
                app: app.to_owned(),
                mode: mode.as_str(),
                advice: self.keys.no_trust_advice,
            });
        }
        for entry in &file.allowed_subjects {
            match checks::subject_entry(entry) {
                Ok(None) => {}
                Ok(Some(warning)) => self.findings.push(Finding {
                    severity: Severity::Warning,
                    app: app.to_owned(),
                    message: warning,
                }),
                Err(error) => {
                    return Err(ConfigError::BadSubject {
                        app: app.to_owned(),
                        key: self.keys.subjects,
                        value: entry.clone(),
                        suggestion: error.suggestion,
                    });
                }
            }
        }
        let allow = AllowList {
            subjects: file.allowed_subjects.clone(),
            dns_sans: file
                .allowed_dns_sans
                .iter()
                .map(|name| crate::tls::sni::normalize(name))
                .collect(),
            uri_sans: file.allowed_uri_sans.clone(),
        };
        Ok((trust, allow, revocation))
    }

    fn server_certificate(
        &mut self,
        app: &str,
        file: &FileServerCertificate,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
        let shape_error = || ConfigError::ServerCertificateShape {
            app: app.to_owned(),
        };
        let (chain, key) = match file {
            FileServerCertificate {
                cert_file: Some(cert_file),
                key_file: Some(key_file),
                pkcs12_file: None,
                password_file: None,
                password_env: None,
            } => {
                let chain = self.certificates(cert_file)?;
                let key_path = self.resolve(key_file);
                let key_bytes = self.read(key_file)?;
                let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|source| {
                    let encrypted = contains(&key_bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
                        || contains(&key_bytes, b"Proc-Type: 4,ENCRYPTED");
                    match source {
                        _ if encrypted => ConfigError::EncryptedKey {
                            path: key_path.clone(),
                        },
                        pem::Error::NoItemsFound if key_bytes.first() == Some(&0x30) => {
                            ConfigError::Der {
                                path: key_path.clone(),
                                what: "private key",
                                tool: "openssl pkey",
                            }
                        }
                        pem::Error::NoItemsFound => ConfigError::NoPemItem {
                            path: key_path.clone(),
                            what: "private key",
                            label: "PRIVATE KEY",
                        },
                        source => ConfigError::Pem {
                            path: key_path.clone(),
                            what: "private key",
                            number: 1,
                            problem: pem_problem(&source),
                        },
                    }
                })?;
                match rustls::sign::CertifiedKey::from_der(
                    chain.clone(),
                    key.clone_key(),
                    &self.provider,
                ) {
                    Ok(_) => {}
                    Err(rustls::Error::InconsistentKeys(_)) => {
                        return Err(ConfigError::KeyMismatch {
                            cert_file: self.resolve(cert_file),
                            key_file: key_path,
                        });
                    }
                    Err(source) => {
                        return Err(ConfigError::BadKey {
                            path: key_path,
                            source,
                        });
                    }
                }
                (chain, key)
            }
            FileServerCertificate {
                cert_file: None,
                key_file: None,
                pkcs12_file: Some(pkcs12_file),
                password_file,
                password_env,
            } => {
                let password = match (password_file, password_env) {
                    (Some(path), None) => {
                        let bytes = self.read(path)?;
                        String::from_utf8_lossy(&bytes)
                            .trim_end_matches(['\r', '\n'])
                            .to_owned()
                    }
                    (None, Some(name)) => std::env::var(name)
                        .map_err(|_| ConfigError::MissingPasswordEnv { name: name.clone() })?,
                    _ => return Err(shape_error()),
                };
                let der = self.read(pkcs12_file)?;
                crate::tls::pkcs12::load(&der, &password).map_err(|source| ConfigError::Pkcs12 {
                    path: self.resolve(pkcs12_file),
                    source,
                })?
            }
            _ => return Err(shape_error()),
        };
        Ok((chain, key))
    }

    /// Every certificate of a PEM bundle, each checked to parse as X.509.
    fn certificates(&mut self, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let full = self.resolve(path);
        let bytes = self.read(path)?;
        let certificates = pem_items::<CertificateDer<'static>>(&bytes, &full, CERTIFICATE)?;
        for (index, certificate) in certificates.iter().enumerate() {
            if let Err(error) = x509_parser::parse_x509_certificate(certificate) {
                return Err(ConfigError::BadCertificate {
                    path: full,
                    number: index + 1,
                    reason: error.to_string(),
                });
            }
        }
        Ok(certificates)
    }

    fn crls(
        &mut self,
        path: &Path,
    ) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
        let full = self.resolve(path);
        let bytes = self.read(path)?;
        pem_items::<CertificateRevocationListDer<'static>>(&bytes, &full, CRL)
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }

    fn read(&mut self, path: &Path) -> Result<Vec<u8>, ConfigError> {
        let full = self.resolve(path);
        let bytes = read(&full)?;
        self.files.push(full);
        Ok(bytes)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn upstream(app: &str, file: &FileApp) -> Result<Upstream, ConfigError> {
    let transport = match file
        .ingress
        .transport
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => Transport::Http1,
        Some(value) => match value.as_str() {
            "auto" | "http" => Transport::Http1,
            "http2" => Transport::Http2,
            _ => {
                return Err(ConfigError::UnknownTransport {
                    app: app.to_owned(),
                    value,
                });
            }
        },
    };
    let value = match (&file.upstream, file.ingress.target_port) {
        (Some(upstream), _) => upstream.clone(),
        (None, Some(port)) => format!("http://127.0.0.1:{port}"),
        (None, None) => {
            return Err(ConfigError::MissingUpstream {
                app: app.to_owned(),
            });
        }
    };
    let bad = || ConfigError::BadUpstream {
        app: app.to_owned(),
        value: value.clone(),
    };
    let uri: http::Uri = value.parse().map_err(|_| bad())?;
    let path_is_root = matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("/"));
    let (Some("http"), Some(authority), true) = (uri.scheme_str(), uri.authority(), path_is_root)
    else {
        return Err(bad());
    };
    // Credentials would never be sent and would be printed in every log line; an explicit
    // port must be a valid, non-zero one (the `http` crate reads `:99999` as "no port").
    let explicit_port = authority.as_str() != authority.host();
    let port = match authority.port_u16() {
        Some(0) => return Err(bad()),
        Some(port) => port,
        None if explicit_port => return Err(bad()),
        None => 80,
    };
    if authority.as_str().contains('@') || value.contains('#') {
        return Err(bad());
    }
    Ok(Upstream {
        authority: format!("{}:{port}", authority.host())
            .parse()
            .map_err(|_| bad())?,
        transport,
    })
}

fn revocation_policy(app: &str, file: &FileRevocation) -> Result<RevocationPolicy, ConfigError> {
    let url = |field: &'static str, value: &str| {
        let bad = || ConfigError::BadRevocationUrl {
            app: app.to_owned(),
            field,
            value: value.to_owned(),
        };
        let uri: http::Uri = value.parse().map_err(|_| bad())?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) if !authority.as_str().contains('@') => Ok(uri),
            _ => Err(bad()),
        }
    };
    let default = RevocationPolicy::default();
    let ocsp = match file.ocsp.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("off") => OcspMode::Off,
        Some("leaf") => OcspMode::Leaf,
        Some("chain") => OcspMode::Chain,
        Some(_) => {
            return Err(ConfigError::UnknownOcspMode {
                app: app.to_owned(),
                value: file.ocsp.clone().unwrap_or_default(),
            });
        }
    };
    let on_unknown = match file
        .on_unknown
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("refuse") => OnUnknown::Refuse,
        Some("allow") => OnUnknown::Allow,
        Some(_) => {
            return Err(ConfigError::UnknownOnUnknown {
                app: app.to_owned(),
                value: file.on_unknown.clone().unwrap_or_default(),
            });
        }
    };
    let refresh = match file.refresh_ms {
        None => default.refresh,
        Some(ms) if ms < 1000 => {
            return Err(ConfigError::RefreshTooShort {
                app: app.to_owned(),
            });
        }
        Some(ms) => Duration::from_millis(ms),
    };
    Ok(RevocationPolicy {
        crl_urls: file
            .crl_urls
            .iter()
            .map(|value| url("clientAuth.revocation.crlUrls entry", value))
            .collect::<Result<_, _>>()?,
        crl_from_certificates: file.crl_from_certificates,
        ocsp,
        ocsp_responder: file
            .ocsp_responder
            .as_deref()
            .map(|value| url("clientAuth.revocation.ocspResponder", value))
            .transpose()?,
        on_unknown,
        refresh,
    })
}

fn xfcc_fields(
    app: &str,
    key: &'static str,
    names: Option<&[String]>,
) -> Result<XfccFields, ConfigError> {
    let Some(names) = names else {
        return Ok(XfccFields::default());
    };
    let mut fields = XfccFields {
        cert: false,
        chain: false,
        subject: false,
        uri: false,
        dns: false,
    };
    for name in names {
        match name.to_ascii_lowercase().as_str() {
            // The hash is always sent, as Envoy does.
            "hash" => {}
            "cert" => fields.cert = true,
            "chain" => fields.chain = true,
            "subject" => fields.subject = true,
            "uri" => fields.uri = true,
            "dns" => fields.dns = true,
            _ => {
                return Err(ConfigError::UnknownXfccField {
                    app: app.to_owned(),
                    key,
                    value: name.clone(),
                });
            }
        }
    }
    Ok(fields)
}

/// Accepts `ab12…` (64 hex digits) and the `AB:12:…` form OpenSSL prints (32 pairs).
fn parse_sha256(value: &str) -> Option<[u8; 32]> {
    let hex = if value.contains(':') {
        let pairs: Vec<&str> = value.split(':').collect();
        if pairs.len() != 32 || pairs.iter().any(|pair| pair.len() != 2) {
            return None;
        }
        pairs.concat()
    } else {
        value.to_owned()
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

fn address(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadAddress {
        field,
        value: value.to_owned(),
    })
}

fn millis(
    field: &'static str,
    value: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::Zero { field }),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn timeouts(file: &file::FileTimeouts) -> Result<Timeouts, ConfigError> {
    let default = Timeouts::default();
    let handshake = millis("timeouts.handshakeMs", file.handshake_ms, default.handshake)?;
    // Unset, the ClientHello deadline follows a shorter handshake deadline down; set, it must
    // fit inside it.
    let client_hello = match file.client_hello_ms {
        None => default.client_hello.min(handshake),
        Some(_) => {
            let client_hello = millis("timeouts.clientHelloMs", file.client_hello_ms, handshake)?;
            if client_hello > handshake {
                return Err(ConfigError::ClientHelloLongerThanHandshake);
            }
            client_hello
        }
    };
    Ok(Timeouts {
        handshake,
        client_hello,
        request_header: millis(
            "timeouts.requestHeaderMs",
            file.request_header_ms,
            default.request_header,
        )?,
        idle: millis("timeouts.idleMs", file.idle_ms, default.idle)?,
        upstream_connect: millis(
            "timeouts.upstreamConnectMs",
            file.upstream_connect_ms,
            default.upstream_connect,
        )?,
        upstream_response: millis(
            "timeouts.upstreamResponseMs",
            file.upstream_response_ms,
            default.upstream_response,
        )?,
        request_body_idle: millis(
            "timeouts.requestBodyIdleMs",
            file.request_body_idle_ms,
            default.request_body_idle,
        )?,
        upstream_idle: millis(
            "timeouts.upstreamIdleMs",
            file.upstream_idle_ms,
            default.upstream_idle,
        )?,
        // Zero is allowed: stop accepting at once (no load balancer in front).
        drain_delay: file
            .drain_delay_ms
            .map_or(default.drain_delay, Duration::from_millis),
        shutdown_grace: millis(
            "timeouts.shutdownGraceMs",
            file.shutdown_grace_ms,
            default.shutdown_grace,
        )?,
    })
}

fn limits(file: &file::FileLimits) -> Result<Limits, ConfigError> {
    let default = Limits::default();
    let positive = |field, value: Option<usize>, default| match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::Zero { field }),
        Some(value) => Ok(value),
    };
    let limits = Limits {
        max_connections: positive(
            "limits.maxConnections",
            file.max_connections,
            default.max_connections,
        )?,
        max_request_header_bytes: positive(
            "limits.maxRequestHeaderBytes",
            file.max_request_header_bytes,
            default.max_request_header_bytes,
        )?,
        max_xfcc_bytes: positive(
            "limits.maxXfccBytes",
            file.max_xfcc_bytes,
            default.max_xfcc_bytes,
        )?,
        max_request_headers: positive(
            "limits.maxRequestHeaders",
            file.max_request_headers,
            default.max_request_headers,
        )?,
        max_connections_per_client: match file.max_connections_per_client {
            None => None,
            Some(per_client) => Some(positive(
                "limits.maxConnectionsPerClient",
                Some(per_client),
                per_client,
            )?),
        },
        max_pending_handshakes: positive(
            "limits.maxPendingHandshakes",
            file.max_pending_handshakes,
            default.max_pending_handshakes,
        )?,
    };
    if limits.max_request_header_bytes < MIN_REQUEST_HEADER_BYTES {
        return Err(ConfigError::HeaderLimitTooSmall);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_pins_accept_plain_and_colon_forms() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256(&plain), Some([0xab; 32]));
        assert_eq!(parse_sha256(&colons), Some([0xab; 32]));
        assert_eq!(parse_sha256("ab"), None);
        assert_eq!(parse_sha256(&"zz".repeat(32)), None);
        assert_eq!(parse_sha256(&"+a".repeat(32)), None);
        assert_eq!(parse_sha256(&format!("{}:", "ab".repeat(32))), None);
        assert_eq!(parse_sha256(&format!("{}0", "ab".repeat(32))), None);
    }

    #[test]
    fn client_certificate_mode_is_case_insensitive() {
        assert_eq!(
            "REQUIRE".parse::<ClientCertMode>().ok(),
            Some(ClientCertMode::Require)
        );
        assert_eq!(
            "Accept".parse::<ClientCertMode>().ok(),
            Some(ClientCertMode::Accept)
        );
        assert!("optional".parse::<ClientCertMode>().is_err());
    }
}
