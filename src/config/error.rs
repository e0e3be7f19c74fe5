//! Why a config cannot be used, with the names a person wrote the settings under.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::request_policy::PolicyError;
use crate::proxy_protocol::TrustedSourceError;
use crate::tls::sni::InvalidHost;
use crate::tls::ticket_keys::TicketKeyError;

/// The names a person wrote the settings under, so errors speak the config file's keys or the
/// sidecar's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keys {
    pub(super) mode: &'static str,
    pub(super) trusted_ca: &'static str,
    pub(super) crl: &'static str,
    pub(super) hashes: &'static str,
    pub(super) subjects: &'static str,
    pub(super) fields: &'static str,
    pub(super) reject_with: &'static str,
    pub(super) client_auth: &'static str,
    pub(super) no_trust_advice: &'static str,
    pub(super) ignored_advice: &'static str,
    pub(super) upstream_tls: &'static str,
    pub(super) upstream_ca: &'static str,
    pub(super) upstream_server_name: &'static str,
    pub(super) upstream_insecure: &'static str,
    pub(super) upstream_client_certificate: &'static str,
    pub(super) dns_nameservers: &'static str,
    pub(super) dns_refresh: &'static str,
    pub(super) health_check_path: &'static str,
    pub(super) health_check_interval: &'static str,
}

/// The config file's keys.
pub(crate) const FILE_KEYS: Keys = Keys {
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
    upstream_tls: "upstreamTls",
    upstream_ca: "upstreamTls.caFiles",
    upstream_server_name: "upstreamTls.serverName",
    upstream_insecure: "upstreamTls.insecureSkipVerify",
    upstream_client_certificate: "upstreamTls needs certFile and keyFile, or pkcs12File with passwordFile or passwordEnv",
    dns_nameservers: "upstreamDns.nameservers",
    dns_refresh: "upstreamDns.refreshMs",
    health_check_path: "healthCheck.path",
    health_check_interval: "healthCheck.intervalMs",
};

/// The sidecar's flags.
pub(crate) const FLAG_KEYS: Keys = Keys {
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
    upstream_tls: "--upstream-ca, --upstream-server-name, --upstream-cert, --upstream-key and --upstream-insecure-skip-verify",
    upstream_ca: "--upstream-ca",
    upstream_server_name: "--upstream-server-name",
    upstream_insecure: "--upstream-insecure-skip-verify",
    upstream_client_certificate: "--upstream-cert and --upstream-key go together",
    dns_nameservers: "--upstream-dns-server",
    dns_refresh: "--upstream-dns-refresh-ms",
    health_check_path: "--health-check-path",
    health_check_interval: "--health-check-interval-ms",
};

/// hyper's HTTP/1.1 read buffer cannot be smaller than this.
pub(super) const MIN_REQUEST_HEADER_BYTES: usize = 8192;

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
    #[error("certificate {number} in {path} cannot be parsed")]
    BadCertificate {
        path: PathBuf,
        number: usize,
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
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
    #[error("host {host:?} is claimed by both app {first:?} and app {second:?}")]
    DuplicateHost {
        host: String,
        first: String,
        second: String,
    },
    #[error("apps {first:?} and {second:?} both have no hosts; only one catch-all app is allowed")]
    DuplicateCatchAll { first: String, second: String },
    #[error("unknown {key} {value:?} (expected require, accept or ignore)")]
    UnknownMode { key: &'static str, value: String },
    #[error("admin {admin} overlaps listen {listen}: put the admin listener on another port")]
    AdminOverlapsListen {
        admin: SocketAddr,
        listen: SocketAddr,
    },
    #[error(
        "listenHttp {listen_http} overlaps {other} {addr}: put the plain-HTTP listener on another port"
    )]
    ListenHttpOverlaps {
        listen_http: SocketAddr,
        other: &'static str,
        addr: SocketAddr,
    },
    #[error("{field} {value:?} is not an IP:port socket address")]
    BadAddress { field: &'static str, value: String },
    #[error("{field} must be greater than zero")]
    Zero { field: &'static str },
    #[error(
        "{key} must be at least {} (how often a name may be resolved again)",
        crate::settings::MIN_DNS_REFRESH_SETTING.as_millis()
    )]
    DnsRefreshTooShort { key: &'static str },
    #[error(
        "{key} entry {value:?} is not a nameserver address: write an IP (port 53) or IP:port, e.g. 10.96.0.10 or 127.0.0.1:5353"
    )]
    BadNameserver { key: &'static str, value: String },
    #[error("limits.maxRequestHeaderBytes must be at least {MIN_REQUEST_HEADER_BYTES}")]
    HeaderLimitTooSmall,
    #[error("timeouts.clientHelloMs must not be longer than timeouts.handshakeMs")]
    ClientHelloLongerThanHandshake,
    #[error("session ticket key file {path} cannot be used")]
    TicketKeys {
        path: PathBuf,
        source: TicketKeyError,
    },
    #[error("proxyProtocol.trustedSources")]
    TrustedSources { source: TrustedSourceError },
    #[error("app {app:?}")]
    App { app: String, source: AppError },
}

/// What went wrong while one app was loaded: something about the app, named once where the
/// app is loaded (`in_app`), or about a file it names, whose path already says where.
#[derive(Debug)]
pub(crate) enum AppFailure {
    /// The app's own settings.
    App(AppError),
    /// A file it names.
    File(ConfigError),
}

impl From<AppError> for AppFailure {
    fn from(error: AppError) -> Self {
        Self::App(error)
    }
}

impl From<ConfigError> for AppFailure {
    fn from(error: ConfigError) -> Self {
        Self::File(error)
    }
}

impl AppFailure {
    /// The failure as a `ConfigError`, naming `app` when it is about the app's settings.
    pub(crate) fn in_app(self, app: &str) -> ConfigError {
        match self {
            Self::App(source) => ConfigError::App {
                app: app.to_owned(),
                source,
            },
            Self::File(error) => error,
        }
    }
}

/// What is wrong with one app of a config; `ConfigError::App` names the app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Host { source: InvalidHost },
    #[error("has neither upstream nor ingress.targetPort")]
    MissingUpstream,
    #[error("upstream {value:?} must be http://host:port or https://host:port with no path")]
    BadUpstream { value: String },
    #[error(
        "sets {what} but its upstream is not https://: write the upstream as https://host:port"
    )]
    UpstreamTlsWithoutHttps { what: &'static str },
    #[error(
        "has an https:// upstream and no {ca}, and the system's CA certificates cannot be used ({why}; from SSL_CERT_FILE and SSL_CERT_DIR when set, else the distribution's bundle): name the PEM bundle of the CA that issued the app's certificate in {ca}, or install the system's CA certificates (e.g. apt-get install ca-certificates)"
    )]
    UpstreamWithoutCa { ca: &'static str, why: String },
    #[error("sets both {ca} and {insecure}: remove one")]
    UpstreamCaAndInsecure {
        ca: &'static str,
        insecure: &'static str,
    },
    #[error("{key} {value:?} is not a DNS name or IP address")]
    BadServerName { key: &'static str, value: String },
    #[error("{advice}")]
    UpstreamClientCertificateShape { advice: &'static str },
    #[error("cannot build the TLS configuration for the upstream")]
    UpstreamTls { source: rustls::Error },
    #[error(
        "sets ingress.allowInsecure in require mode, which would serve it over plain HTTP without a client certificate: remove allowInsecure (requests on listenHttp are then redirected to HTTPS) or set clientCertificateMode to accept or ignore"
    )]
    InsecureRequire,
    #[error("unknown ingress.transport {value:?} (expected auto, http or http2)")]
    UnknownTransport { value: String },
    #[error(
        "ingress.transport {value:?} is not served: certgate terminates TLS in front of HTTP apps only; set it to auto, http or http2 (gRPC), or put a TCP proxy in front of a TCP app"
    )]
    TcpTransport { value: String },
    #[error(
        "ingress.exposedPort {port} asks for a TCP port of the Container Apps environment, which certgate does not open: set it to 0 or remove it, and set listen to the address clients connect to"
    )]
    ExposedPort { port: u32 },
    #[error(
        "ingress.additionalPortMappings has {count} entries, and certgate serves every app on its one listen address: set it to null or [] (or remove it), and serve another port with another certgate"
    )]
    PortMappings { count: usize },
    #[error(
        "ingress.traffic {what}, and the app has no revisions: name each revision's upstream URL in revisions (e.g. {{\"api--v2\": \"http://api-v2:8080\"}}) and split by weights summing to 100, or keep one entry [{{\"weight\": 100, \"latestRevision\": true}}]"
    )]
    TrafficWithoutRevisions { what: String },
    #[error(
        "ingress.traffic label {label:?} cannot be part of a host name: use lowercase letters, digits and hyphens"
    )]
    TrafficLabel { label: String },
    #[error("ingress.traffic weights sum to {sum}: integer weights must sum to 100")]
    TrafficWeights { sum: u64 },
    #[error("ingress.traffic entry {index} {what}")]
    TrafficEntry { index: usize, what: &'static str },
    #[error("ingress.traffic names revision {name:?}, which is not one of revisions ({known})")]
    UnknownRevision { name: String, known: String },
    #[error("ingress.traffic names {name:?} twice: give each revision one entry")]
    DuplicateTraffic { name: String },
    #[error(
        "has revisions but no ingress.traffic: list how requests split between them, e.g. [{{\"revisionName\": \"api--v2\", \"weight\": 100}}]"
    )]
    RevisionsWithoutTraffic,
    #[error(
        "revisions has a revision named {name:?}: name each with a non-empty name other than latest"
    )]
    RevisionName { name: String },
    #[error(
        "revisions.{name} {value:?} must be http://host:port or https://host:port with no path"
    )]
    BadRevision { name: String, value: String },
    #[error("ingress.stickySessions.affinity {value:?}: must be none or sticky")]
    StickySessions { value: String },
    #[error("{key} {value}: {problem}")]
    HealthCheck {
        key: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("ingress.ipSecurityRestrictions has a rule with an empty name; name every rule")]
    IpRuleWithoutName,
    #[error("ingress.ipSecurityRestrictions has two rules named {name:?}; names must be unique")]
    DuplicateIpRule { name: String },
    #[error("ingress.ipSecurityRestrictions rule {rule:?}: ipAddressRange {value:?} {source}")]
    IpRange {
        rule: String,
        value: String,
        source: crate::ip_restrictions::BadRange,
    },
    #[error(
        "ingress.ipSecurityRestrictions rule {rule:?}: {} (expected Allow or Deny)",
        value.as_ref().map_or_else(|| "no action".to_owned(), |value| format!("unknown action {value:?}"))
    )]
    IpAction { rule: String, value: Option<String> },
    #[error(
        "ingress.ipSecurityRestrictions mixes {first_action} rule {first:?} and {second_action} rule {second:?}; as in Container Apps, all rules of an app have one action: admit only some addresses with Allow rules, or refuse some with Deny rules"
    )]
    MixedIpActions {
        first: String,
        first_action: &'static str,
        second: String,
        second_action: &'static str,
    },
    #[error("unknown {key} {value:?} (expected require, accept or ignore)")]
    Mode { key: &'static str, value: String },
    #[error("is in {mode} mode but has no trust source: {advice}")]
    NoTrustSource {
        mode: &'static str,
        advice: &'static str,
    },
    #[error("is in ignore mode, where {what} have no effect: {advice}")]
    ClientAuthIgnored {
        what: &'static str,
        advice: &'static str,
    },
    #[error("{crl} needs {ca} (CRLs only apply to CA-verified chains)")]
    CrlWithoutCa { crl: &'static str, ca: &'static str },
    #[error(
        "clientAuth.revocation needs trustedCaFiles (revocation only applies to CA-verified chains)"
    )]
    RevocationWithoutCa,
    #[error(
        "{field} {value:?} must be an http:// URL (CRLs and OCSP answers are signed; https is not supported)"
    )]
    BadRevocationUrl { field: &'static str, value: String },
    #[error("unknown clientAuth.revocation.ocsp {value:?} (expected off, leaf or chain)")]
    UnknownOcspMode { value: String },
    #[error("unknown clientAuth.revocation.onUnknown {value:?} (expected refuse or allow)")]
    UnknownOnUnknown { value: String },
    #[error("clientAuth.revocation.refreshMs must be at least 1000")]
    RefreshTooShort,
    #[error(
        "clientAuth.revocation.maxAgeMs must be at least 1000 (how long a CRL or OCSP answer without nextUpdate is believed; leave it out for a week)"
    )]
    MaxAgeTooShort,
    #[error("revocation")]
    Revocation {
        source: crate::revocation::LoadError,
    },
    #[error("{key} value {value:?} is not a SHA-256 hash (64 hex digits)")]
    BadHash { key: &'static str, value: String },
    #[error(
        "{key} value {value:?} is not an RFC 4514 subject; certgate reads RFC 4514, most specific RDN first{}",
        suggestion.as_ref().map(|s| format!(": {s}")).unwrap_or_else(|| " (e.g. CN=alice,O=Acme)".to_owned())
    )]
    BadSubject {
        key: &'static str,
        value: String,
        suggestion: Option<String>,
    },
    #[error("unknown {key} value {value:?} (expected Hash, Cert, Chain, Subject, URI or DNS)")]
    UnknownXfccField { key: &'static str, value: String },
    #[error("unknown {key} {value:?} (expected tls or http)")]
    UnknownRejectWith { key: &'static str, value: String },
    #[error(
        "serverCertificate needs certFile and keyFile, or pkcs12File with passwordFile or passwordEnv"
    )]
    ServerCertificateShape,
    #[error(
        "certificates.{entry} needs certFile and keyFile, or pkcs12File with passwordFile or passwordEnv"
    )]
    DomainCertificateShape { entry: String },
    #[error(
        "unknown ingress.customDomains bindingType {value:?} for {name:?} (expected SniEnabled or Disabled)"
    )]
    UnknownBindingType { name: String, value: String },
    #[error(
        "ingress.customDomains {name:?} has bindingType Auto, a certificate Azure manages, which certgate cannot obtain: put the certificate and key in the top-level certificates object and name that entry in certificateId with bindingType SniEnabled, or set bindingType Disabled to serve the app's serverCertificate"
    )]
    ManagedCertificate { name: String },
    #[error(
        "ingress.customDomains {name:?} has bindingType SniEnabled but no certificateId: name an entry of the top-level certificates object, or set bindingType Disabled to serve the app's serverCertificate"
    )]
    DomainWithoutCertificate { name: String },
    #[error(
        "ingress.customDomains {name:?} names certificate {entry:?} (certificateId {id:?}), which the top-level certificates object does not hold ({known}): add it there with certFile and keyFile, or pkcs12File"
    )]
    UnknownCertificate {
        name: String,
        id: String,
        entry: String,
        known: String,
    },
    #[error(transparent)]
    Policy { source: PolicyError },
    #[error("cannot build the client certificate verifier")]
    Verifier {
        source: rustls::server::VerifierBuilderError,
    },
    #[error("cannot build the TLS configuration")]
    Tls { source: rustls::Error },
    #[error(
        "sets sessionTickets and sessionResumption false: remove one (false turns resumption off)"
    )]
    TicketsWithoutResumption,
}
