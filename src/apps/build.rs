//! Where a validated `Config` becomes what its apps are served with: every app's `crlUrls`
//! fetched first (all at once), then per app its revocation checker, the policy presented
//! certificates are judged by, its verifier, ticketer and rustls config. A problem is a
//! `ConfigError` naming the app, so a config that cannot be served is refused when it is
//! loaded (exit 64 before binding, a reload refused) as one that does not validate is.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};

use crate::config::{AppConfig, AppError, AppFailure, Config, ConfigError, RevocationSettings};
use crate::revocation::fetch::{self, Fetched};
use crate::revocation::{Revocation, WithoutCa};
use crate::settings::{
    ClientCertMode, KeyedChain, RejectWith, SessionResumption, Transport, Trust,
};
use crate::tls::client_policy::ClientPolicy;
use crate::tls::server_config::Resumption;
use crate::tls::sni::HostPattern;
use crate::tls::ticket_keys::HandshakePolicy;
use crate::tls::upstream::AppTls;
use crate::upstream::endpoints::{fixed, literal};

/// A validated config and what its apps are served with: a generation as loaded.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The validated config.
    pub config: Config,
    /// Its apps as served, in the order of `config.apps`.
    pub apps: Vec<Arc<LoadedApp>>,
}

/// One validated app and the live objects built from it.
#[derive(Debug)]
pub struct LoadedApp {
    /// The validated app.
    pub config: Arc<AppConfig>,
    /// The policy presented certificates are judged by (`None` in `ignore` mode); the
    /// handshake and `certgate explain` both call it.
    pub policy: Option<Arc<ClientPolicy>>,
    /// This app's own rustls config: its verifier, session cache and ticket keys.
    pub tls: Arc<rustls::ServerConfig>,
    /// With `ipSecurityRestrictions` and `rejectWith: "http"`: the rustls config a refused
    /// client address completes its handshake with, asking for no certificate and resuming
    /// no session, so that its requests get 403.
    pub ip_refused_tls: Option<Arc<rustls::ServerConfig>>,
    /// Revocation checked after the handshake (CRL URLs, distribution points, OCSP), when
    /// configured; `crlFiles` alone are checked by the verifier during the handshake, and
    /// watched here for CRLs learned since that list an open connection's chain.
    pub revocation: Option<Arc<Revocation>>,
    /// For each of `config.groups`: TLS to its `https://` upstream, and its address set
    /// (resolved when the config was loaded; a source that re-resolves names hands its own
    /// receivers here, see `upstream::endpoints`).
    pub groups: Vec<LoadedGroup>,
}

/// What one upstream group of an app is served with.
#[derive(Debug)]
pub struct LoadedGroup {
    /// What certgate speaks TLS to the group's `https://` upstream with.
    pub tls: Option<AppTls>,
    /// The group's addresses, and their later changes.
    pub addresses: watch::Receiver<Arc<[SocketAddr]>>,
}

impl LoadedConfig {
    /// Reads and validates a config file (`Config::load`), then builds its apps, fetching
    /// their `crlUrls` on the caller's runtime.
    pub async fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::build(Config::load(path)?).await
    }

    /// Builds the apps of a validated config; every app's `crlUrls` are fetched first, since
    /// an app's policy needs its CRLs' issuers.
    pub async fn build(config: Config) -> Result<Self, ConfigError> {
        let crl_urls = config
            .apps
            .iter()
            .flat_map(|app| app.revocation.policy.crl_urls.iter().cloned())
            .collect::<Vec<_>>();
        let mut fetched = fetch::get_all(crl_urls).await;
        let mut addresses = literal_addresses(&config).into_iter();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let apps = config
            .apps
            .iter()
            .map(|app| {
                let addresses = addresses.next().unwrap_or_default();
                LoadedApp::build(app.clone(), addresses, &mut fetched, &provider)
                    .map(Arc::new)
                    .map_err(|failure| failure.in_app(&app.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { config, apps })
    }
}

impl LoadedApp {
    /// The app's checker (from what `fetched` holds), policy and rustls config.
    fn build(
        config: Arc<AppConfig>,
        addresses: Vec<Vec<SocketAddr>>,
        fetched: &mut Fetched,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, AppFailure> {
        let algorithms = provider.signature_verification_algorithms;
        let revocation = revocation(
            &config.name,
            &config.trust,
            &config.revocation,
            fetched,
            algorithms,
        )?;
        let trust = checked_trust(&config.trust, revocation.as_deref());
        let policy = match config.mode {
            ClientCertMode::Ignore => None,
            ClientCertMode::Require | ClientCertMode::Accept => Some(Arc::new(
                ClientPolicy::new(trust.clone(), config.allow.clone(), provider)
                    .map_err(|source| AppError::Verifier { source })?,
            )),
        };
        let handshake = HandshakePolicy {
            mode: config.mode,
            trust: &trust,
            allow: &config.allow,
            reject_with: config.reject_with,
            exclusion_paths: &config.request_policy.exclusion_paths,
        };
        let tls = server_config(&config, &handshake, policy.as_ref(), provider)?;
        let app_tls = |upstream: &crate::settings::Upstream| {
            upstream
                .tls
                .as_ref()
                .map(|tls| AppTls::new(provider, tls, upstream.transport == Transport::Http2))
                .transpose()
                .map_err(|source| AppError::UpstreamTls { source })
        };
        let mut addresses = addresses.into_iter();
        let groups = config
            .groups
            .iter()
            .map(|group| {
                Ok(LoadedGroup {
                    tls: app_tls(&group.upstream)?,
                    addresses: fixed(addresses.next().unwrap_or_default()),
                })
            })
            .collect::<Result<Vec<_>, AppError>>()?;
        let ip_refused_tls = match (&config.ip_restrictions, config.reject_with) {
            (Some(_), RejectWith::Http) => {
                let (certificate, domains) = served_certificates(&config);
                Some(
                    crate::tls::server_config::build(
                        provider.clone(),
                        None,
                        certificate,
                        &domains,
                        Resumption::Off,
                    )
                    .map_err(|source| AppError::Tls { source })?,
                )
            }
            _ => None,
        };
        Ok(Self {
            config,
            policy,
            tls,
            ip_refused_tls,
            revocation,
            groups,
        })
    }
}

/// The addresses of every app's groups named by IP literals (`endpoints::literal`), by app,
/// then by group, in config order; a group named by DNS starts with none.
fn literal_addresses(config: &Config) -> Vec<Vec<Vec<SocketAddr>>> {
    config
        .apps
        .iter()
        .map(|app| {
            app.groups
                .iter()
                .map(|group| literal(&group.upstream))
                .collect()
        })
        .collect()
}

/// `trust` with the issuers whose revocation an app checks, for `certgate explain`'s sidecar
/// form (whose flags list no `crlUrls`: nothing is fetched).
pub(crate) fn client_trust(
    app: &str,
    trust: &Trust,
    settings: &RevocationSettings,
) -> Result<Trust, ConfigError> {
    let algorithms =
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    let revocation = revocation(app, trust, settings, &mut Fetched::new(), algorithms)
        .map_err(|failure| failure.in_app(app))?;
    Ok(checked_trust(trust, revocation.as_deref()))
}

/// The app's revocation checker: one that checks after the handshake (with the CRLs
/// `fetched` holds for it), or one that watches its CRL files, or none without any.
fn revocation(
    app: &str,
    trust: &Trust,
    settings: &RevocationSettings,
    fetched: &mut Fetched,
    algorithms: WebPkiSupportedAlgorithms,
) -> Result<Option<Arc<Revocation>>, AppFailure> {
    let without_ca = WithoutCa {
        pins: trust.pins.clone(),
        allow_untrusted: trust.allow_untrusted,
    };
    if settings.after_handshake {
        let revocation = Revocation::load(
            app,
            settings.policy.clone(),
            &trust.roots,
            without_ca,
            settings.crl_files.clone(),
            fetched,
            algorithms,
        )
        .map_err(|source| AppError::Revocation { source })?;
        Ok(Some(Arc::new(revocation)))
    } else if !settings.crl_files.is_empty() {
        // webpki checks `crlFiles` alone during the handshake; the watcher closes open
        // connections when a CRL learned since, by any generation, lists their chain.
        Ok(Some(Arc::new(Revocation::watching(
            app,
            settings.policy.clone(),
            &trust.roots,
            without_ca,
            settings.crl_files.clone(),
            algorithms,
        ))))
    } else {
        Ok(None)
    }
}

/// `trust` with the CAs whose revocation the app checks, if it checks any: under
/// allowUntrusted a leaf naming one of them as its issuer must verify to it.
fn checked_trust(trust: &Trust, revocation: Option<&Revocation>) -> Trust {
    let checked_issuers = match revocation {
        Some(revocation) if revocation.checks_after_handshake() => revocation.issuer_names(),
        _ if !trust.crls.is_empty() => trust
            .roots
            .iter()
            .map(|root| root.as_ref())
            .chain(trust.crls.iter().map(|crl| crl.as_ref()))
            .filter_map(name_of)
            .collect(),
        _ => Vec::new(),
    };
    Trust {
        checked_issuers,
        ..trust.clone()
    }
}

/// The app's rustls config: its verifier (none in `ignore` mode), its resumption and its
/// server certificate.
fn server_config(
    app: &AppConfig,
    handshake: &HandshakePolicy<'_>,
    policy: Option<&Arc<ClientPolicy>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<rustls::ServerConfig>, AppFailure> {
    // With exclusion paths a `require` app asks for a certificate without demanding one at
    // the handshake; the proxy then refuses certificate-less requests outside those paths.
    let tls_mode = if app.mode == ClientCertMode::Require && !handshake.exclusion_paths.is_empty() {
        ClientCertMode::Accept
    } else {
        app.mode
    };
    let verifier = policy.and_then(|policy| {
        crate::tls::client_auth::verifier(tls_mode, policy, app.reject_with, provider)
    });
    let resumption = match (&app.session_resumption, &app.ticket_keys) {
        (SessionResumption::Off, _) => Resumption::Off,
        (SessionResumption::SharedKeys { key_file }, Some(keys)) => {
            let fingerprint = crate::tls::ticket_keys::trust_fingerprint(handshake);
            let ticketer = keys.ticketer(&app.name, &fingerprint).map_err(|source| {
                ConfigError::TicketKeys {
                    path: key_file.clone(),
                    source,
                }
            })?;
            Resumption::SharedKeys(ticketer)
        }
        // `ticket_keys` is read exactly under `SharedKeys`.
        (SessionResumption::ProcessKeys | SessionResumption::SharedKeys { .. }, _) => {
            Resumption::ProcessKeys
        }
    };
    let (certificate, domains) = served_certificates(app);
    crate::tls::server_config::build(
        provider.clone(),
        verifier,
        certificate,
        &domains,
        resumption,
    )
    .map_err(|source| AppError::Tls { source }.into())
}

/// The app's server certificate, and each custom domain's own.
fn served_certificates(app: &AppConfig) -> (KeyedChain, Vec<(HostPattern, KeyedChain)>) {
    let certificate = KeyedChain {
        chain: app.server_chain.clone(),
        key: Arc::new(app.server_key.clone_key()),
    };
    let domains = app
        .custom_domains
        .iter()
        .filter_map(|domain| {
            let (_, keyed) = domain.certificate.as_ref()?;
            Some((domain.host.clone(), keyed.clone()))
        })
        .collect();
    (certificate, domains)
}

/// The subject of a certificate or the issuer of a CRL, as DER.
fn name_of(der: &[u8]) -> Option<Vec<u8>> {
    if let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) {
        return Some(certificate.subject().as_raw().to_vec());
    }
    let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
    Some(crl.issuer().as_raw().to_vec())
}
