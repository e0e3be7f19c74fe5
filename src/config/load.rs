//! Reading a config file or the sidecar flags into a validated `Config`: every file named
//! read once, every certificate, key and CRL file parsed and checked. What the apps are served
//! with (fetched CRLs, checkers, rustls configs) is built from it with the apps.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

use super::checks::{self, Finding, Severity};
use super::error::{AppError, AppFailure, ConfigError, FILE_KEYS, FLAG_KEYS, Keys};
use super::file::{FileApp, FileClientAuth, FileConfig, FileServerCertificate, FileSessionTickets};
use super::ingress::ingress_block;
use super::model::{AppConfig, Config, CustomDomain, FileDigests, RevocationSettings};
use super::pem_files::{CERTIFICATE, pem_items};
use super::request_policy::{self};
use super::values::{DEFAULT_LISTEN, address, limits, timeouts, upstream_dns, xfcc_fields};
use crate::proxy_protocol::ProxyProtocol;
use crate::settings::{
    AllowList, ClientCertMode, DEFAULT_RETRIES, KeyedChain, Named, RejectWith, SessionResumption,
    Trust, Upstream, UpstreamGroup, XfccField, XfccFields,
};
use crate::tls::sni::HostPattern;
use crate::tls::ticket_keys::TicketKeys;

impl Config {
    /// Reads and validates a config file; relative paths in it are resolved against its
    /// folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        let digest = Sha256::digest(&text).into();
        let file: FileConfig =
            serde_json::from_slice(&text).map_err(|source| ConfigError::Json {
                path: path.to_owned(),
                source,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::from_file(file, base)?;
        config.files.insert(0, path.to_owned());
        config.file_digests.insert(path.to_owned(), digest);
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
        loader.certificates = &file.certificates;
        if file.apps.is_empty() {
            return Err(ConfigError::NoApps);
        }
        let limits = limits(&file.limits)?;
        loader.findings.extend(checks::pending_handshakes(
            file.limits.max_pending_handshakes,
            limits.max_connections,
        ));
        let mut apps: Vec<Arc<AppConfig>> = Vec::with_capacity(file.apps.len());
        let mut hosts: HashMap<String, String> = HashMap::new();
        let mut catch_all: Option<String> = None;
        for file_app in &file.apps {
            let app = loader.app(file_app)?;
            if apps.iter().any(|other| other.name == app.name) {
                return Err(ConfigError::DuplicateName { name: app.name });
            }
            if app.hosts.is_empty()
                && let Some(first) = catch_all.replace(app.name.clone())
            {
                return Err(ConfigError::DuplicateCatchAll {
                    first,
                    second: app.name,
                });
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
            listen_http: file
                .listen_http
                .as_deref()
                .map(|value| address("listenHttp", value))
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
            upstream_dns: upstream_dns(&file.upstream_dns, keys.dns_refresh, keys.dns_nameservers)?,
            files: loader.files,
            file_digests: loader.digests,
            findings: loader.findings,
        };
        config.check_listeners()?;
        Ok(config)
    }

    /// Refuses an admin or plain-HTTP listener that would collide with another listener.
    pub fn check_listeners(&self) -> Result<(), ConfigError> {
        if let Some(admin) = self.admin
            && checks::overlaps(admin, self.listen)
        {
            return Err(ConfigError::AdminOverlapsListen {
                admin,
                listen: self.listen,
            });
        }
        let Some(listen_http) = self.listen_http else {
            return Ok(());
        };
        let others = [
            Some(("listen", self.listen)),
            self.admin.map(|a| ("admin", a)),
        ];
        match others
            .into_iter()
            .flatten()
            .find(|(_, addr)| checks::overlaps(listen_http, *addr))
        {
            Some((other, addr)) => Err(ConfigError::ListenHttpOverlaps {
                listen_http,
                other,
                addr,
            }),
            None => Ok(()),
        }
    }

    /// Whether a finding is an error, for `certgate check`'s exit code.
    pub fn has_error_findings(&self) -> bool {
        self.findings
            .iter()
            .any(|finding| finding.severity == Severity::Error)
    }
}

/// The trust sources, allow-lists and revocation settings of `clientAuth` alone (no server
/// certificate, no app), for `certgate explain`'s sidecar form (whose flags list no
/// `crlUrls`); relative paths are resolved against `base`.
pub(crate) fn client_policy(
    file: &FileClientAuth,
    mode: ClientCertMode,
    base: &Path,
    keys: Keys,
) -> Result<(Trust, AllowList, RevocationSettings), ConfigError> {
    Loader::new(base, keys)
        .client_auth("app", mode, file)
        .map_err(|failure| failure.in_app("app"))
}

/// Every certificate of a PEM file, leaf first, without judging them (for `certgate explain`,
/// which judges them itself).
pub(crate) fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    pem_items(&read(path)?, path, CERTIFICATE)
}

/// `--forward-fields` as XFCC fields.
pub(crate) fn forward_fields(
    names: Option<&[Named<XfccField>]>,
) -> Result<XfccFields, ConfigError> {
    xfcc_fields(FLAG_KEYS.fields, names).map_err(|source| AppFailure::from(source).in_app("app"))
}

/// An app's upstream groups as read: the groups, the host names their labels add (each with
/// its group), the app's primary upstream, and whether `ingress.traffic` was accepted as
/// Azure's export of one revision and ignored.
struct Groups {
    groups: Vec<UpstreamGroup>,
    label_hosts: Vec<(String, String)>,
    upstream: Upstream,
    traffic_ignored: bool,
}

/// Reads files relative to the config's folder and remembers each one read.
pub(super) struct Loader<'a> {
    pub(super) base: &'a Path,
    pub(super) files: Vec<PathBuf>,
    /// The SHA-256 of each file read.
    pub(super) digests: FileDigests,
    /// The files the app being read has loaded so far (for its fingerprint).
    pub(super) app_files: Vec<PathBuf>,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) keys: Keys,
    pub(super) findings: Vec<Finding>,
    /// The top-level `sessionTickets`, for apps that set none.
    pub(super) session_tickets: Option<&'a FileSessionTickets>,
    /// Key files read so far (several apps usually share one).
    pub(super) ticket_keys: HashMap<PathBuf, TicketKeys>,
    /// The top-level `certificates`, which custom domains name.
    pub(super) certificates: &'a BTreeMap<String, FileServerCertificate>,
    /// The entries of `certificates` read so far, with the files each was read from.
    pub(super) domain_certificates: HashMap<String, (KeyedChain, Vec<PathBuf>)>,
}

/// `certificates` of a model without that object.
static NO_CERTIFICATES: BTreeMap<String, FileServerCertificate> = BTreeMap::new();

impl<'a> Loader<'a> {
    pub(super) fn new(base: &'a Path, keys: Keys) -> Self {
        Self {
            base,
            files: Vec::new(),
            digests: FileDigests::new(),
            app_files: Vec::new(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            keys,
            findings: Vec::new(),
            session_tickets: None,
            ticket_keys: HashMap::new(),
            certificates: &NO_CERTIFICATES,
            domain_certificates: HashMap::new(),
        }
    }

    fn app(&mut self, file: &FileApp) -> Result<AppConfig, ConfigError> {
        let name = file.name.trim().to_owned();
        if name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        self.app_files.clear();
        let mut app = self
            .named_app(name.clone(), file)
            .map_err(|failure| failure.in_app(&name))?;
        app.fingerprint = self.fingerprint(file);
        Ok(app)
    }

    /// SHA-256 of the app's settings as written (their debug form, which holds every key) and
    /// of the path and content of each file it loaded.
    fn fingerprint(&self, file: &FileApp) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(format!("{file:?}").as_bytes());
        for path in &self.app_files {
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update([0u8]);
            if let Some(digest) = self.digests.get(path) {
                hasher.update(digest);
            }
        }
        hasher.finalize().into()
    }

    /// The app called `name`; a failure is named after it by `app`.
    fn named_app(&mut self, name: String, file: &FileApp) -> Result<AppConfig, AppFailure> {
        let (mut hosts, custom_domains) = self.hosts(&name, file)?;
        let Groups {
            groups,
            label_hosts,
            upstream,
            traffic_ignored,
        } = self.upstream_groups(&name, file, &mut hosts)?;
        let mode = match &file.ingress.client_certificate_mode {
            Some(value) => value.known().map_err(|value| AppError::Mode {
                key: self.keys.mode,
                value: value.to_owned(),
            })?,
            None => ClientCertMode::Require,
        };
        let allow_insecure = file.ingress.allow_insecure.unwrap_or(false);
        if allow_insecure && mode == ClientCertMode::Require {
            return Err(AppError::InsecureRequire.into());
        }
        let (trust, allow, revocation) = self.client_auth(&name, mode, &file.client_auth)?;
        let xfcc_fields =
            xfcc_fields(self.keys.fields, file.forward_client_cert.fields.as_deref())?;
        let reject_with = match &file.reject_with {
            None => RejectWith::Tls,
            Some(value) => value.known().map_err(|value| AppError::UnknownRejectWith {
                key: self.keys.reject_with,
                value: value.to_ascii_lowercase(),
            })?,
        };
        let request_policy =
            request_policy::app_policy(file, mode).map_err(|source| AppError::Policy { source })?;
        if let Some(cors) = &request_policy.cors {
            self.findings.extend(super::cors::findings(&name, cors));
        }
        self.findings.extend(checks::untrusted_names(
            &name,
            &trust,
            &allow,
            &request_policy.authorization,
        ));
        let (server_chain, server_key) = self.app_server_certificate(&name, &hosts, file)?;
        hosts.extend(
            custom_domains
                .iter()
                .filter(|domain| domain.certificate.is_some())
                .map(|domain| domain.host.clone()),
        );
        let (session_resumption, ticket_keys) = self.resumption(file)?;
        let ingress = ingress_block(&name, &file.ingress, traffic_ignored)?;
        self.findings.extend(ingress.findings);
        Ok(AppConfig {
            name,
            hosts,
            upstream,
            groups,
            retries: file.retries.unwrap_or(DEFAULT_RETRIES),
            health_check: file
                .health_check
                .as_ref()
                .map(|check| super::values::health_check(check, &self.keys))
                .transpose()?,
            label_hosts,
            mode,
            trust,
            allow,
            reject_with,
            xfcc_fields,
            request_policy,
            server_chain,
            server_key,
            session_resumption,
            ticket_keys,
            revocation,
            custom_domains,
            fingerprint: [0; 32],
            sticky_sessions: ingress.sticky,
            ip_restrictions: ingress.ip_restrictions,
            ignored_ingress: ingress.ignored,
            allow_insecure,
        })
    }

    /// The app's upstream groups (its `upstream` and `revisions`, with TLS), the host names
    /// its traffic labels add to `hosts` (each with its group), and its primary upstream.
    fn upstream_groups(
        &mut self,
        name: &str,
        file: &FileApp,
        hosts: &mut Vec<HostPattern>,
    ) -> Result<Groups, AppFailure> {
        let plan = super::traffic::groups(file)?;
        if file.upstream_tls.is_some() && !plan.groups.iter().any(|group| group.https) {
            return Err(AppError::UpstreamTlsWithoutHttps {
                what: self.keys.upstream_tls,
            }
            .into());
        }
        let mut groups = Vec::with_capacity(plan.groups.len());
        for mut group in plan.groups {
            let tls = group.https.then_some(file.upstream_tls.as_ref()).flatten();
            self.upstream_tls(name, group.https, tls, &mut group.upstream)?;
            groups.push(UpstreamGroup {
                name: group.name,
                upstream: group.upstream,
                weight: group.weight,
                label: group.label,
            });
        }
        // Each label names a host of its revision's own beside every exact app host; they
        // are served (and checked against the server certificate) as the app's hosts are.
        let mut label_hosts = Vec::new();
        for group in &groups {
            let Some(label) = &group.label else {
                continue;
            };
            for host in &file.hosts {
                let Ok(HostPattern::Exact(host)) = HostPattern::parse(host) else {
                    continue;
                };
                if let Some(name) = super::traffic::label_host(&host, label) {
                    hosts.push(
                        HostPattern::parse(&name).map_err(|source| AppError::Host { source })?,
                    );
                    label_hosts.push((name, group.name.clone()));
                }
            }
        }
        let upstream = groups
            .get(plan.primary)
            .map(|group| group.upstream.clone())
            .ok_or(AppError::MissingUpstream)?;
        Ok(Groups {
            groups,
            label_hosts,
            upstream,
            traffic_ignored: plan.traffic_ignored,
        })
    }

    /// The app's hosts with its custom domains served with its own certificate (those with
    /// one of their own join them once that certificate is checked), and its custom domains.
    fn hosts(
        &mut self,
        name: &str,
        file: &FileApp,
    ) -> Result<(Vec<HostPattern>, Vec<CustomDomain>), AppFailure> {
        let mut hosts = file
            .hosts
            .iter()
            .map(|host| HostPattern::parse(host))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| AppError::Host { source })?;
        let custom_domains = self.custom_domains(
            name,
            file.ingress.custom_domains.as_deref().unwrap_or_default(),
        )?;
        hosts.extend(
            custom_domains
                .iter()
                .filter(|domain| domain.certificate.is_none())
                .map(|domain| domain.host.clone()),
        );
        Ok((hosts, custom_domains))
    }

    /// The app's server certificate and key; a finding for each host its leaf does not cover.
    fn app_server_certificate(
        &mut self,
        name: &str,
        hosts: &[HostPattern],
        file: &FileApp,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AppFailure> {
        let (server_chain, key) = self.server_certificate(&file.server_certificate)?;
        if let (Some(leaf), Some(cert_file)) = (
            server_chain.first(),
            file.server_certificate
                .cert_file
                .as_ref()
                .or(file.server_certificate.pkcs12_file.as_ref()),
        ) {
            let cert_file = self.resolve(cert_file);
            self.findings
                .extend(checks::host_coverage(name, hosts, leaf, &cert_file));
        }
        Ok((server_chain, key))
    }

    /// The app's resumption setting, and the shared keys read from its key file when it has
    /// one (rustls's ticketer is derived from them, this app's name and trust, where the apps
    /// are built).
    fn resumption(
        &mut self,
        file: &FileApp,
    ) -> Result<(SessionResumption, Option<TicketKeys>), AppFailure> {
        if file.session_resumption == Some(false) {
            if file.session_tickets.is_some() {
                return Err(AppError::TicketsWithoutResumption.into());
            }
            return Ok((SessionResumption::Off, None));
        }
        let Some(tickets) = file.session_tickets.as_ref().or(self.session_tickets) else {
            return Ok((SessionResumption::ProcessKeys, None));
        };
        let path = self.resolve(&tickets.key_file);
        let keys = match self.ticket_keys.get(&path) {
            Some(keys) => {
                // Read once for every app that shares it; still part of this app's files.
                self.app_files.push(path.clone());
                keys.clone()
            }
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
        Ok((SessionResumption::SharedKeys { key_file: path }, Some(keys)))
    }

    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }

    pub(super) fn read(&mut self, path: &Path) -> Result<Vec<u8>, ConfigError> {
        let full = self.resolve(path);
        let bytes = read(&full)?;
        self.digests
            .insert(full.clone(), Sha256::digest(&bytes).into());
        self.app_files.push(full.clone());
        self.files.push(full);
        Ok(bytes)
    }
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
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
