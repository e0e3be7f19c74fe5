//! What `certgate explain` judges: one app's policy, from a config file or the sidecar's flags,
//! and the time to judge at.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::UnixTime;

use super::report::{
    CorsSection, CustomDomainEntry, EndpointStatesSection, GroupSection, HealthCheckSection,
    StickySessionsSection,
};
use crate::apps::build::LoadedConfig;
use crate::cli::ExplainArgs;
use crate::config::{AppConfig, AppError, ConfigError, FLAG_KEYS};
use crate::ip_restrictions::IpRestrictions;
use crate::request_policy::cors::Origins;
use crate::settings::{ClientCertMode, Upstream, XfccFields};
use crate::tls::client_policy::ClientPolicy;
use crate::tls::sni::{HostMatcher, normalize};

/// Why `explain` could not judge the certificate (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--config needs --app NAME or --host HOST to pick the app")]
    NoAppChosen,
    #[error("{path} has no app named {name:?} (its apps: {apps})")]
    NoSuchApp {
        path: PathBuf,
        name: String,
        apps: String,
    },
    #[error("{path} has no app for host {host:?} and no catch-all app")]
    NoAppForHost { path: PathBuf, host: String },
    #[error(
        "app {app:?} is in ignore mode: it never asks for a client certificate, so there is nothing to explain"
    )]
    IgnoreMode { app: String },
    #[error("--at {value:?} is not an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)")]
    BadTime { value: String },
    #[error("{path} holds no client certificate")]
    NoCertificate { path: PathBuf },
}

/// What is judged: one app's policy and what it forwards.
#[derive(Debug)]
pub struct Target {
    /// The app's name (`app` for the sidecar).
    pub name: String,
    /// Its mode.
    pub mode: ClientCertMode,
    /// Its policy, shared with the handshake.
    pub policy: Arc<ClientPolicy>,
    /// The XFCC fields it forwards.
    pub fields: XfccFields,
    /// Its revocation checker beyond `crlFiles`, when configured (docs/revocation.md).
    pub revocation: Option<Arc<crate::revocation::Revocation>>,
    /// Where its requests go, from a config file (the sidecar's explain has no upstream).
    pub upstream: Option<Upstream>,
    /// How upstream names are resolved, from a config file.
    pub upstream_dns: Option<crate::settings::UpstreamDns>,
    /// Its upstream groups and their endpoints, from a config file: live from the certgate
    /// that runs it, or as their names resolve now.
    pub groups: Vec<GroupSection>,
    /// Where the states of `groups`' endpoints come from, from a config file.
    pub endpoint_states: Option<EndpointStatesSection>,
    /// Its `retries`, from a config file.
    pub retries: Option<u32>,
    /// Its `healthCheck`, from a config file.
    pub health_check: Option<HealthCheckSection>,
    /// Its sticky sessions, from a config file, when on.
    pub sticky_sessions: Option<StickySessionsSection>,
    /// Its `ingress.corsPolicy`, from a config file.
    pub cors: Option<CorsSection>,
    /// Its `ingress.ipSecurityRestrictions`, from a config file.
    pub ip_restrictions: Option<Arc<IpRestrictions>>,
    /// Its `ingress.customDomains`, from a config file.
    pub custom_domains: Vec<CustomDomainEntry>,
}

pub(super) async fn target(args: &ExplainArgs) -> Result<Target, ExplainError> {
    let Some(path) = &args.config else {
        return sidecar_target(args);
    };
    let loaded = LoadedConfig::load(path).await?;
    let config = &loaded.config;
    let loaded_app = match (&args.app, &args.host) {
        (Some(name), _) => loaded
            .apps
            .iter()
            .find(|app| app.config.name == *name)
            .ok_or_else(|| ExplainError::NoSuchApp {
                path: path.clone(),
                name: name.clone(),
                apps: config
                    .apps
                    .iter()
                    .map(|app| app.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        (None, Some(host)) => {
            let matcher = HostMatcher::new(config.apps.iter().map(|app| app.hosts.as_slice()));
            matcher
                .resolve(Some(&normalize(host)))
                .and_then(|index| loaded.apps.get(index))
                .ok_or_else(|| ExplainError::NoAppForHost {
                    path: path.clone(),
                    host: host.clone(),
                })?
        }
        (None, None) => return Err(ExplainError::NoAppChosen),
    };
    let app = &loaded_app.config;
    let Some(policy) = &loaded_app.policy else {
        return Err(ExplainError::IgnoreMode {
            app: app.name.clone(),
        });
    };
    let (groups, endpoint_states) =
        super::live::groups(app, loaded_app, config.admin, &config.upstream_dns).await;
    Ok(Target {
        name: app.name.clone(),
        mode: app.mode,
        policy: policy.clone(),
        fields: app.xfcc_fields,
        // A watcher of `crlFiles` alone judges nothing: `policy` runs webpki's check.
        revocation: loaded_app
            .revocation
            .clone()
            .filter(|revocation| revocation.checks_after_handshake()),
        upstream: Some(app.upstream.clone()),
        upstream_dns: Some(loaded.config.upstream_dns.clone()),
        groups,
        endpoint_states: Some(endpoint_states),
        retries: Some(app.retries),
        health_check: app.health_check.as_ref().map(|check| HealthCheckSection {
            path: check.path.to_string(),
            interval_ms: millis(check.interval),
            timeout_ms: millis(check.timeout),
            unhealthy_threshold: check.unhealthy_threshold,
            healthy_threshold: check.healthy_threshold,
            expected_status: check.expected_status.as_u16(),
        }),
        sticky_sessions: app.sticky_sessions.then_some(StickySessionsSection {
            cookie: crate::upstream::AFFINITY_COOKIE,
        }),
        cors: cors_section(app),
        ip_restrictions: app.ip_restrictions.clone(),
        custom_domains: custom_domains(app),
    })
}

/// The sidecar's one app, from the `clientAuth` flags alone.
fn sidecar_target(args: &ExplainArgs) -> Result<Target, ExplainError> {
    let mode = match &args.client_auth.client_cert_mode {
        Some(value) => value.known().map_err(|value| ConfigError::UnknownMode {
            key: "--client-cert-mode",
            value: value.to_owned(),
        })?,
        None => ClientCertMode::Require,
    };
    if mode == ClientCertMode::Ignore {
        return Err(ExplainError::IgnoreMode {
            app: "app".to_owned(),
        });
    }
    let file = args.client_auth.file_model();
    let (trust, allow, revocation) =
        crate::config::client_policy(&file, mode, Path::new(""), FLAG_KEYS)?;
    let trust = crate::apps::build::client_trust("app", &trust, &revocation)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let policy = ClientPolicy::new(trust, allow, &provider).map_err(|source| ConfigError::App {
        app: "app".to_owned(),
        source: AppError::Verifier { source },
    })?;
    let fields = crate::config::forward_fields(args.client_auth.forward_fields().as_deref())?;
    Ok(Target {
        name: "app".to_owned(),
        mode,
        policy: Arc::new(policy),
        fields,
        revocation: None,
        upstream: None,
        upstream_dns: None,
        groups: Vec::new(),
        endpoint_states: None,
        retries: None,
        health_check: None,
        sticky_sessions: None,
        cors: None,
        ip_restrictions: None,
        custom_domains: Vec::new(),
    })
}

/// The app's custom domains as `explain` shows them: the certificate served for each and its
/// expiry.
fn custom_domains(app: &AppConfig) -> Vec<CustomDomainEntry> {
    app.custom_domains
        .iter()
        .map(|domain| {
            let (certificate, leaf) = match &domain.certificate {
                Some((entry, keyed)) => (format!("certificates.{entry}"), keyed.chain.first()),
                None => ("serverCertificate".to_owned(), app.server_chain.first()),
            };
            CustomDomainEntry {
                name: domain.host.to_string(),
                certificate,
                not_after: leaf
                    .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
                    .map(|(_, leaf)| crate::tls::rfc3339(leaf.validity().not_after.timestamp())),
            }
        })
        .collect()
}

/// The app's CORS policy as `explain` shows it, and whether a preflight without a
/// certificate gets past the handshake (docs/cors.md "Preflights and client certificates").
fn cors_section(app: &AppConfig) -> Option<CorsSection> {
    let cors = app.request_policy.cors.as_deref()?;
    let demands_certificate =
        app.mode == ClientCertMode::Require && app.request_policy.exclusion_paths.is_empty();
    Some(CorsSection {
        allowed_origins: match &cors.origins {
            Origins::Any => "*".to_owned(),
            Origins::Exact(origins) => origins.join(","),
        },
        allowed_methods: cors.methods.describe(),
        allowed_headers: cors.headers.describe(),
        expose_headers: cors.expose.describe(),
        max_age: cors.max_age,
        allow_credentials: cors.credentials,
        preflights: if demands_certificate {
            "answered by certgate before the certificate requirement and authorization, but \
             this require app demands a certificate at the handshake: browsers that send none \
             on a preflight (Firefox, Safari) get no answer; a clientCertExclusionPaths entry \
             makes the handshake ask without demanding"
        } else {
            "answered by certgate before the certificate requirement and authorization, with \
             or without a certificate"
        },
    })
}

pub(super) fn parse_time(value: &str) -> Result<UnixTime, ExplainError> {
    let bad = || ExplainError::BadTime {
        value: value.to_owned(),
    };
    let time = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    let secs = u64::try_from(time.unix_timestamp()).map_err(|_| bad())?;
    Ok(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        secs,
    )))
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
