//! The command line (clap): `run`, `check`, `explain`, `pki init`, `demo`. Every `run` flag can
//! also come from a `CERTGATE_*` environment variable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::apps::build::{LoadedApp, LoadedConfig};
use crate::config::file::{
    FileApp, FileClientAuth, FileConfig, FileForwardClientCert, FileHealthCheck, FileIngress,
    FileRevocation, FileServerCertificate, FileStickySessions, FileUpstreamDns,
};
use crate::config::{AppConfig, Config, ConfigError};
use crate::reload::ConfigSource;
use crate::settings::{
    Affinity, ClientCertMode, HEALTH_CHECK_TIMEOUT_MS, Named, OcspMode, RejectWith, UpstreamVerify,
    XfccField,
};

/// certgate: mutual-TLS ingress that forwards verified client certificates to HTTP apps.
#[derive(Debug, Parser)]
#[command(name = "certgate", version, about)]
pub struct Cli {
    /// Log format: `plain` for people, `json` for machines (one object a line).
    #[arg(long, env = "CERTGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object a line.
    Json,
}

/// What certgate should do.
#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at startup; boxing would only add noise"
)]
pub enum Command {
    /// Serve the apps of a config file, or one app from flags (sidecar mode).
    Run(RunArgs),
    /// Load and validate a config file (or the sidecar flags) and every file it names, then
    /// print a line per app and any findings.
    Check(RunArgs),
    /// Say whether an app would accept a client certificate, and why.
    Explain(ExplainArgs),
    /// Development PKI.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Exit 0 when the admin listener's /readyz answers 200 (Docker HEALTHCHECK, exec probes).
    Health {
        /// The admin listener (an unspecified address such as 0.0.0.0 is reached on loopback).
        #[arg(long, env = "CERTGATE_ADMIN", default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
    /// Make a dev PKI in ./certs, start an echo app and serve one app per mode.
    Demo {
        /// Address to serve the demo apps on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
    },
}

/// `certgate pki …`.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Write a development CA, server and client certificates into DIR; a whole PKI already
    /// there (the demo's) is kept, with --host its server certificate issued again.
    Init {
        /// Folder to write into (created if missing).
        dir: PathBuf,
        /// Make a new PKI, overwriting files that already exist.
        #[arg(long)]
        force: bool,
        /// A name (or IP address) the server certificate must also cover; repeatable.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
    },
    /// Write a session ticket key file (sessionTickets.keyFile) holding one fresh key.
    TicketKeys {
        /// The key file to write (mode 0600).
        file: PathBuf,
        /// Replace an existing file.
        #[arg(long, conflicts_with = "rotate")]
        force: bool,
        /// Prepend a fresh key to the existing file and keep only the newest three.
        #[arg(long)]
        rotate: bool,
    },
}

/// `certgate run`: a config file, or the flags of one catch-all app.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// JSON config file; excludes the sidecar flags.
    #[arg(long, env = "CERTGATE_CONFIG", conflicts_with_all = ["upstream", "cert", "key", "client_ca", "crl", "allowed_hash", "allow_untrusted", "client_cert_mode", "allowed_subject", "allowed_dns_san", "allowed_uri_san", "forward_fields", "reject_with", "crl_url", "ocsp", "upstream_ca", "upstream_server_name", "upstream_cert", "upstream_key", "upstream_insecure_skip_verify", "upstream_dns_server", "upstream_dns_refresh_ms", "health_check_path", "health_check_interval_ms", "sticky_sessions", "retries"])]
    pub config: Option<PathBuf>,
    /// Address of the mTLS listener (default 0.0.0.0:8443).
    #[arg(long, env = "CERTGATE_LISTEN")]
    pub listen: Option<String>,
    /// The app's base URL, e.g. http://127.0.0.1:8080; repeated, requests are split evenly (comma-separated in the environment).
    #[arg(long, env = "CERTGATE_UPSTREAM", value_delimiter = ',')]
    pub upstream: Vec<String>,
    #[command(flatten)]
    pub upstream_tls: UpstreamTlsArgs,
    /// PEM server certificate chain, leaf first.
    #[arg(long, env = "CERTGATE_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key of the server certificate.
    #[arg(long, env = "CERTGATE_KEY")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub client_auth: ClientAuthArgs,
    /// How a refused client certificate is answered: tls (an alert, default) or http (495/496).
    #[arg(long, env = "CERTGATE_REJECT_WITH")]
    pub reject_with: Option<Named<RejectWith>>,
    /// http:// URL of a CRL, fetched at start and refreshed in the background (repeatable; comma-separated in the environment).
    #[arg(long = "crl-url", env = "CERTGATE_CRL_URL", value_delimiter = ',')]
    pub crl_url: Vec<String>,
    /// OCSP for the client's leaf certificate or its whole chain: leaf or chain.
    #[arg(long, env = "CERTGATE_OCSP", value_enum)]
    pub ocsp: Option<OcspMode>,
    /// Address of the admin listener (health, readiness, metrics); off unless set.
    #[arg(long, env = "CERTGATE_ADMIN")]
    pub admin: Option<String>,
    /// Address of a plain-HTTP listener that redirects to HTTPS; off unless set.
    #[arg(long, env = "CERTGATE_LISTEN_HTTP")]
    pub listen_http: Option<String>,
    /// Nameserver (IP or IP:port) that resolves the upstream's host name, instead of those of /etc/resolv.conf (repeatable; comma-separated in the environment).
    #[arg(
        long = "upstream-dns-server",
        env = "CERTGATE_UPSTREAM_DNS_SERVER",
        value_delimiter = ','
    )]
    pub upstream_dns_server: Vec<String>,
    /// Longest wait in milliseconds between two resolutions of the upstream's host name (default 5000; a shorter TTL shortens it).
    #[arg(long, env = "CERTGATE_UPSTREAM_DNS_REFRESH_MS")]
    pub upstream_dns_refresh_ms: Option<u64>,
    /// Probe each endpoint with GET PATH and take it out of the balancing while it fails (healthCheck; the other settings at their defaults).
    #[arg(long, env = "CERTGATE_HEALTH_CHECK_PATH", value_name = "PATH")]
    pub health_check_path: Option<String>,
    /// Milliseconds between two health checks of an endpoint (default 5000; the timeout is 1000, or this when shorter).
    #[arg(
        long,
        env = "CERTGATE_HEALTH_CHECK_INTERVAL_MS",
        value_name = "MS",
        requires = "health_check_path"
    )]
    pub health_check_interval_ms: Option<u64>,
    /// Pin each client to one endpoint with the certgate-affinity cookie (with several --upstream, or a name with several addresses).
    #[arg(long, env = "CERTGATE_STICKY_SESSIONS")]
    pub sticky_sessions: bool,
    /// How many times a request that did not reach the app is sent again to another endpoint (default 1; 0 turns retries off).
    #[arg(long, env = "CERTGATE_RETRIES", value_name = "N")]
    pub retries: Option<u32>,
    /// Write no access line per request (overrides the config file's `accessLog`).
    #[arg(long, env = "CERTGATE_NO_ACCESS_LOG")]
    pub no_access_log: bool,
}

/// The sidecar's flags for TLS to an `https://` upstream (docs/upstream-tls.md).
#[derive(Debug, Clone, Default, Args)]
pub struct UpstreamTlsArgs {
    /// PEM bundle of the CAs that issue the app's certificate, for an https:// upstream (repeatable; comma-separated in the environment; default the system's CAs).
    #[arg(
        long = "upstream-ca",
        env = "CERTGATE_UPSTREAM_CA",
        value_delimiter = ','
    )]
    pub upstream_ca: Vec<PathBuf>,
    /// The name the app's certificate must hold, sent as SNI (default: the upstream's host).
    #[arg(long, env = "CERTGATE_UPSTREAM_SERVER_NAME")]
    pub upstream_server_name: Option<String>,
    /// PEM client certificate chain certgate presents to the app, leaf first.
    #[arg(long, env = "CERTGATE_UPSTREAM_CERT", requires = "upstream_key")]
    pub upstream_cert: Option<PathBuf>,
    /// PEM private key of --upstream-cert.
    #[arg(long, env = "CERTGATE_UPSTREAM_KEY", requires = "upstream_cert")]
    pub upstream_key: Option<PathBuf>,
    /// Accept any certificate the app presents (testing only; logged and flagged by check).
    #[arg(long, env = "CERTGATE_UPSTREAM_INSECURE_SKIP_VERIFY")]
    pub upstream_insecure_skip_verify: bool,
}

/// The sidecar's client-certificate policy flags, shared by `run`, `check` and `explain`.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientAuthArgs {
    /// PEM bundle of CAs trusted to issue client certificates (repeatable; comma-separated in the environment).
    #[arg(long = "client-ca", env = "CERTGATE_CLIENT_CA", value_delimiter = ',')]
    pub client_ca: Vec<PathBuf>,
    /// PEM certificate revocation list (repeatable; comma-separated in the environment).
    #[arg(long, env = "CERTGATE_CRL", value_delimiter = ',')]
    pub crl: Vec<PathBuf>,
    /// SHA-256 hash (hex) of a pinned client certificate (repeatable; comma-separated in the environment).
    #[arg(
        long = "allowed-hash",
        env = "CERTGATE_ALLOWED_HASH",
        value_delimiter = ','
    )]
    pub allowed_hash: Vec<String>,
    /// Forward any client certificate, trusted or not; the app must validate it.
    #[arg(long, env = "CERTGATE_ALLOW_UNTRUSTED")]
    pub allow_untrusted: bool,
    /// Admit only this RFC 4514 subject, e.g. "CN=alice,O=Acme" (repeatable; `;`-separated in the environment).
    #[arg(
        long = "allowed-subject",
        env = "CERTGATE_ALLOWED_SUBJECT",
        value_delimiter = ';'
    )]
    pub allowed_subject: Vec<String>,
    /// Admit only this DNS SAN (repeatable; comma-separated in the environment).
    #[arg(
        long = "allowed-dns-san",
        env = "CERTGATE_ALLOWED_DNS_SAN",
        value_delimiter = ','
    )]
    pub allowed_dns_san: Vec<String>,
    /// Admit only this URI SAN, e.g. a SPIFFE ID (repeatable; comma-separated in the environment).
    #[arg(
        long = "allowed-uri-san",
        env = "CERTGATE_ALLOWED_URI_SAN",
        value_delimiter = ','
    )]
    pub allowed_uri_san: Vec<String>,
    /// X-Forwarded-Client-Cert fields: Hash, Cert, Chain, Subject, URI, DNS (comma-separated; default Hash,Cert,Chain).
    #[arg(
        long = "forward-fields",
        env = "CERTGATE_FORWARD_FIELDS",
        value_delimiter = ','
    )]
    pub forward_fields: Vec<String>,
    /// require, accept or ignore (default require).
    #[arg(long, env = "CERTGATE_CLIENT_CERT_MODE")]
    pub client_cert_mode: Option<Named<ClientCertMode>>,
}

impl ClientAuthArgs {
    /// The flags as the config file's `clientAuth`; list items are trimmed, so
    /// `CERTGATE_CLIENT_CA="a.pem, b.pem"` names `b.pem`, not ` b.pem`.
    pub fn file_model(&self) -> FileClientAuth {
        let trimmed = |values: &[String]| -> Vec<String> {
            values
                .iter()
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
                .collect()
        };
        let paths = |values: &[PathBuf]| -> Vec<PathBuf> {
            values
                .iter()
                .map(|path| PathBuf::from(path.to_string_lossy().trim()))
                .filter(|path| !path.as_os_str().is_empty())
                .collect()
        };
        FileClientAuth {
            trusted_ca_files: paths(&self.client_ca),
            crl_files: paths(&self.crl),
            allowed_hashes: trimmed(&self.allowed_hash),
            allow_untrusted: self.allow_untrusted,
            allowed_subjects: trimmed(&self.allowed_subject),
            allowed_dns_sans: trimmed(&self.allowed_dns_san),
            allowed_uri_sans: trimmed(&self.allowed_uri_san),
            revocation: None,
        }
    }

    /// `--forward-fields`, when given.
    pub fn forward_fields(&self) -> Option<Vec<Named<XfccField>>> {
        let fields: Vec<Named<XfccField>> = self
            .forward_fields
            .iter()
            .map(|field| field.trim())
            .filter(|field| !field.is_empty())
            .map(Named::parse)
            .collect();
        (!fields.is_empty()).then_some(fields)
    }
}

/// `certgate explain`: an app of a config file (`--config` with `--app` or `--host`), or the
/// sidecar's policy flags, and the certificate to judge.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// JSON config file; pick the app with --app or --host.
    #[arg(long, env = "CERTGATE_CONFIG", conflicts_with_all = ["client_ca", "crl", "allowed_hash", "allow_untrusted", "client_cert_mode", "allowed_subject", "allowed_dns_san", "allowed_uri_san", "forward_fields"])]
    pub config: Option<PathBuf>,
    /// The app, by name.
    #[arg(long, requires = "config", conflicts_with = "host")]
    pub app: Option<String>,
    /// The app, by the host name a client would connect to.
    #[arg(long, requires = "config")]
    pub host: Option<String>,
    #[command(flatten)]
    pub client_auth: ClientAuthArgs,
    /// PEM file of the client certificate (leaf first; any further certificates are its chain).
    pub certificate: PathBuf,
    /// PEM file of the intermediate certificates the client sends after its leaf.
    #[arg(long)]
    pub chain: Option<PathBuf>,
    /// Judge at this time (RFC 3339, e.g. 2030-01-01T00:00:00Z) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// Output: text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
    pub format: ExplainFormat,
}

/// How `explain` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    /// Sections for people.
    Text,
    /// One JSON object.
    Json,
}

/// `--ocsp`: `leaf` or `chain` (leaving the flag out is `off`).
impl ValueEnum for OcspMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Leaf, Self::Chain]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            Self::Off => None,
            Self::Leaf => Some(clap::builder::PossibleValue::new("leaf")),
            Self::Chain => Some(clap::builder::PossibleValue::new("chain")),
        }
    }
}

/// Why `run`'s arguments do not make a config.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("give --config FILE, or --upstream, --cert and --key for sidecar mode")]
    MissingSidecarFlags,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl RunArgs {
    /// Where `run` reads its config from, at start and on every reload: the config file, or
    /// the sidecar's one catch-all app built from the flags (relative paths are resolved
    /// against the working directory). Fails when neither is given.
    pub fn source(&self) -> Result<ConfigSource, UsageError> {
        let sidecar_flags = !self.upstream.is_empty() && self.cert.is_some() && self.key.is_some();
        if self.config.is_none() && !sidecar_flags {
            return Err(UsageError::MissingSidecarFlags);
        }
        let args = Arc::new(self.clone());
        Ok(Arc::new(move || {
            let args = args.clone();
            Box::pin(async move { args.load().await })
        }))
    }

    async fn load(&self) -> Result<LoadedConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::from_flags(self.sidecar_file(), Path::new(""))?,
        };
        // With --config, --listen, --admin and --listen-http override the file.
        if let Some(listen) = &self.listen {
            config.listen = address("--listen", listen)?;
        }
        if let Some(admin) = &self.admin {
            config.admin = Some(address("--admin", admin)?);
        }
        if let Some(listen_http) = &self.listen_http {
            config.listen_http = Some(address("--listen-http", listen_http)?);
        }
        if self.no_access_log {
            config.access_log = false;
        }
        config.check_listeners()?;
        LoadedConfig::build(config).await
    }

    fn sidecar_file(&self) -> FileConfig {
        FileConfig {
            apps: vec![FileApp {
                name: "app".to_owned(),
                upstream: self.upstream.first().cloned(),
                more_upstreams: self.upstream.iter().skip(1).cloned().collect(),
                retries: self.retries,
                health_check: self.health_check_path.clone().map(|path| FileHealthCheck {
                    path: Some(path),
                    interval_ms: self.health_check_interval_ms,
                    // The default timeout, unless the interval is shorter (a probe must end
                    // before the next one starts).
                    timeout_ms: self
                        .health_check_interval_ms
                        .map(|interval| interval.min(HEALTH_CHECK_TIMEOUT_MS)),
                    ..FileHealthCheck::default()
                }),
                upstream_tls: crate::config::sidecar_upstream_tls(
                    self.upstream_tls.upstream_ca.clone(),
                    self.upstream_tls.upstream_server_name.clone(),
                    self.upstream_tls.upstream_cert.clone(),
                    self.upstream_tls.upstream_key.clone(),
                    self.upstream_tls.upstream_insecure_skip_verify,
                ),
                server_certificate: FileServerCertificate {
                    cert_file: self.cert.clone(),
                    key_file: self.key.clone(),
                    ..FileServerCertificate::default()
                },
                ingress: FileIngress {
                    client_certificate_mode: self.client_auth.client_cert_mode.clone(),
                    sticky_sessions: self.sticky_sessions.then_some(Some(FileStickySessions {
                        affinity: Some(Named::Known(Affinity::Sticky)),
                    })),
                    ..FileIngress::default()
                },
                client_auth: FileClientAuth {
                    revocation: (!self.crl_url.is_empty() || self.ocsp.is_some()).then(|| {
                        FileRevocation {
                            crl_urls: self.crl_url.clone(),
                            ocsp: self.ocsp.map(Named::Known),
                            ..FileRevocation::default()
                        }
                    }),
                    ..self.client_auth.file_model()
                },
                forward_client_cert: FileForwardClientCert {
                    fields: self.client_auth.forward_fields(),
                    ..FileForwardClientCert::default()
                },
                reject_with: self.reject_with.clone(),
                ..FileApp::default()
            }],
            upstream_dns: FileUpstreamDns {
                refresh_ms: self.upstream_dns_refresh_ms,
                nameservers: self.upstream_dns_server.clone(),
            },
            ..FileConfig::default()
        }
    }
}

fn address(field: &'static str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadAddress {
        field,
        value: value.to_owned(),
    })
}

/// The line `certgate check` prints about the plain-HTTP listener, when there is one: where
/// it listens and where it redirects to.
pub fn listen_http_summary(config: &crate::Config) -> Option<String> {
    let listen_http = config.listen_http?;
    let insecure: Vec<&str> = config
        .apps
        .iter()
        .filter(|app| app.allow_insecure)
        .map(|app| app.name.as_str())
        .collect();
    Some(format!(
        "listenHttp {listen_http}: redirects to https:// on port {port}, serves over plain HTTP [{insecure}]",
        port = config.listen.port(),
        insecure = insecure.join(" | "),
    ))
}

/// The line `certgate check` prints about `upstreamDns` when an app's upstream is named by
/// DNS: the names resolved, how often, and through which nameservers.
pub fn dns_summary(config: &Config) -> Option<String> {
    let names: Vec<String> = config
        .apps
        .iter()
        .filter_map(|app| {
            let name = app.upstream.dns_name()?;
            Some(format!("{}={name}:{}", app.name, app.upstream.port()))
        })
        .collect();
    if names.is_empty() {
        return None;
    }
    let dns = &config.upstream_dns;
    Some(format!(
        "upstreamDns: names=[{}] refresh={}ms (sooner by TTL, not under {}ms) nameservers={}",
        names.join(" | "),
        dns.refresh.as_millis(),
        crate::settings::MIN_DNS_REFRESH
            .min(dns.refresh)
            .as_millis(),
        dns.describe_nameservers()
    ))
}

/// One line describing an app, as `certgate check` prints it.
pub fn summary(loaded: &LoadedApp) -> String {
    let app = &loaded.config;
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
        "{name}: hosts={hosts}{domains} mode={mode} upstream={upstream}{upstream_tls}{groups}{health_check}{sticky} trust={cas} CA, {crls} CRL, {pins} pinned{untrusted}{revocation} allowed-subjects={subjects} allowed-dns-sans={dns} allowed-uri-sans={uris} forward={forwarded} reject-with={reject_with} server-cert-expires={not_after} resumption={resumption}{policy}{insecure}{ip_restrictions}{ignored}",
        domains = custom_domains(app),
        upstream_tls = upstream_tls(app),
        groups = groups(app),
        health_check = health_check(app),
        sticky = if app.sticky_sessions {
            format!(
                " sticky-sessions=on,cookie={}",
                crate::upstream::AFFINITY_COOKIE
            )
        } else {
            String::new()
        },
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
        revocation = loaded
            .revocation
            .as_ref()
            .filter(|revocation| revocation.checks_after_handshake())
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
        ip_restrictions = app
            .ip_restrictions
            .as_ref()
            .map(|restrictions| format!(" ip-restrictions={restrictions}"))
            .unwrap_or_default(),
        ignored = if app.ignored_ingress.is_empty() {
            String::new()
        } else {
            format!(" ignored=ingress.{}", app.ignored_ingress.join(",ingress."))
        },
        insecure = if app.allow_insecure {
            " allow-insecure"
        } else {
            ""
        },
    )
}

/// `[a | b]`, as `check` lists values.
fn list(entries: &[String]) -> String {
    format!("[{}]", entries.join(" | "))
}

/// ` custom-domains=[name certificate | …]`, when the app has any.
fn custom_domains(app: &AppConfig) -> String {
    if app.custom_domains.is_empty() {
        return String::new();
    }
    let domains = app
        .custom_domains
        .iter()
        .map(|domain| match &domain.certificate {
            Some((entry, _)) => format!("{} certificates.{entry}", domain.host),
            None => format!("{} serverCertificate", domain.host),
        })
        .collect::<Vec<_>>();
    format!(" custom-domains={}", list(&domains))
}

/// ` groups=name:weight=URL,… retries=N` for an app of several upstream groups (one group is
/// the app's `upstream`, said before), ` retries=N` for one.
fn groups(app: &AppConfig) -> String {
    if app.groups.len() <= 1 {
        return format!(" retries={}", app.retries);
    }
    let groups = app
        .groups
        .iter()
        .map(|group| format!("{}:{}={}", group.name, group.weight, group.upstream))
        .collect::<Vec<_>>();
    format!(" groups={} retries={}", groups.join(","), app.retries)
}

/// ` health-check=PATH,interval=…ms,timeout=…ms,unhealthy-threshold=…,healthy-threshold=…,expected-status=…`,
/// for an app with `healthCheck`.
fn health_check(app: &AppConfig) -> String {
    let Some(check) = &app.health_check else {
        return String::new();
    };
    format!(
        " health-check={},interval={}ms,timeout={}ms,unhealthy-threshold={},healthy-threshold={},expected-status={}",
        check.path,
        check.interval.as_millis(),
        check.timeout.as_millis(),
        check.unhealthy_threshold,
        check.healthy_threshold,
        check.expected_status.as_u16()
    )
}

/// ` upstream-tls=…,server-name=…`, for an `https://` upstream.
fn upstream_tls(app: &AppConfig) -> String {
    let Some(tls) = &app.upstream.tls else {
        return String::new();
    };
    format!(
        " upstream-tls={},server-name={}{}",
        match &tls.verify {
            UpstreamVerify::CaFiles(roots) => format!("{} CA", roots.len()),
            UpstreamVerify::System(store) => format!("system {} CA", store.len()),
            UpstreamVerify::Skip => "insecure-skip-verify".to_owned(),
        },
        tls.server_name.to_str(),
        if tls.client.is_some() {
            ",client-cert"
        } else {
            ""
        }
    )
}
