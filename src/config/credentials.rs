//! The files an app names, read into trust and a server certificate: CA bundles, CRLs,
//! pins and allow-lists, PEM or PKCS#12 server certificates and session ticket keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::checks::{self, Finding, Severity};
use super::error::{AppError, AppFailure, ConfigError};
use super::file::{FileClientAuth, FileServerCertificate};
use super::load::Loader;
use super::pem_files::{CERTIFICATE, CRL, contains, pem_items, pem_problem};
use super::values::revocation_policy;
use crate::identity::parse_sha256;
use crate::revocation::crl::{Crl, CrlError};
use crate::revocation::{LoadError, Revocation, WithoutCa};
use crate::settings::{AllowList, ClientCertMode, Trust};

impl Loader<'_> {
    pub(super) fn client_auth(
        &mut self,
        app: &str,
        mode: ClientCertMode,
        file: &FileClientAuth,
    ) -> Result<(Trust, AllowList, Option<Arc<Revocation>>), AppFailure> {
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
                return Err(AppError::ClientAuthIgnored {
                    what: self.keys.client_auth,
                    advice: self.keys.ignored_advice,
                }
                .into());
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
            return Err(AppError::RevocationWithoutCa.into());
        }
        let revocation_policy = revocation_policy(&file_revocation)?;
        if !crl_files.is_empty() && file.trusted_ca_files.is_empty() {
            return Err(AppError::CrlWithoutCa {
                crl: self.keys.crl,
                ca: self.keys.trusted_ca,
            }
            .into());
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
        let without_next_update = self.crl_file_times(app, &crl_sources, &revocation_policy)?;
        let pins = file
            .allowed_hashes
            .iter()
            .map(|value| {
                parse_sha256(value).ok_or_else(|| AppError::BadHash {
                    key: self.keys.hashes,
                    value: value.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Beyond crlFiles, every CRL is checked after the handshake, by one checker; so are
        // CRL files without nextUpdate, which webpki cannot read and which go stale
        // `maxAgeMs` after their thisUpdate.
        let revocation = if revocation_policy.needs_checker() || without_next_update {
            crls.clear();
            let revocation = Revocation::load(
                app,
                revocation_policy,
                &roots,
                WithoutCa {
                    pins: pins.clone(),
                    allow_untrusted: file.allow_untrusted,
                },
                crl_sources,
                &mut self.fetched,
                self.provider.signature_verification_algorithms,
            )
            .map_err(|source| AppError::Revocation { source })?;
            Some(Arc::new(revocation))
        } else if !crl_sources.is_empty() {
            // webpki checks `crlFiles` alone during the handshake; the watcher closes open
            // connections when a CRL learned since, by any generation, lists their chain.
            Some(Arc::new(Revocation::watching(
                app,
                revocation_policy,
                &roots,
                WithoutCa {
                    pins: pins.clone(),
                    allow_untrusted: file.allow_untrusted,
                },
                crl_sources,
                self.provider.signature_verification_algorithms,
            )))
        } else {
            None
        };
        // The CAs whose revocation this app checks, if it checks any: under allowUntrusted a
        // leaf naming one of them as its issuer must verify to it.
        let checked_issuers = match &revocation {
            Some(revocation) if revocation.checks_after_handshake() => revocation.issuer_names(),
            _ if !crls.is_empty() => roots
                .iter()
                .map(|root| root.as_ref())
                .chain(crls.iter().map(|crl| crl.as_ref()))
                .filter_map(name_of)
                .collect(),
            _ => Vec::new(),
        };
        let trust = Trust {
            roots,
            crls,
            pins,
            allow_untrusted: file.allow_untrusted,
            checked_issuers,
        };
        if trust.is_empty() {
            return Err(AppError::NoTrustSource {
                mode: mode.as_str(),
                advice: self.keys.no_trust_advice,
            }
            .into());
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
                    return Err(AppError::BadSubject {
                        key: self.keys.subjects,
                        value: entry.clone(),
                        suggestion: error.suggestion,
                    }
                    .into());
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

    pub(super) fn server_certificate(
        &mut self,
        file: &FileServerCertificate,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AppFailure> {
        self.certificate_and_key(file, || AppError::ServerCertificateShape)
    }

    /// A certificate chain and its key from PEM files or a PKCS#12 archive (a server
    /// certificate, or the client certificate certgate presents to an app); `shape_error`
    /// when the fields given make neither.
    pub(super) fn certificate_and_key(
        &mut self,
        file: &FileServerCertificate,
        shape_error: impl Fn() -> AppError,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AppFailure> {
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
                        }
                        .into());
                    }
                    Err(source) => {
                        return Err(ConfigError::BadKey {
                            path: key_path,
                            source,
                        }
                        .into());
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
                    _ => return Err(shape_error().into()),
                };
                let der = self.read(pkcs12_file)?;
                crate::tls::pkcs12::load(&der, &password).map_err(|source| ConfigError::Pkcs12 {
                    path: self.resolve(pkcs12_file),
                    source,
                })?
            }
            _ => return Err(shape_error().into()),
        };
        Ok((chain, key))
    }

    /// Every certificate of a PEM bundle, each checked to parse as X.509.
    pub(super) fn certificates(
        &mut self,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let full = self.resolve(path);
        let bytes = self.read(path)?;
        let certificates = pem_items::<CertificateDer<'static>>(&bytes, &full, CERTIFICATE)?;
        for (index, certificate) in certificates.iter().enumerate() {
            if let Err(source) = x509_parser::parse_x509_certificate(certificate) {
                return Err(ConfigError::BadCertificate {
                    path: full,
                    number: index + 1,
                    source,
                });
            }
        }
        Ok(certificates)
    }

    /// Refuses a CRL file whose thisUpdate is in the future (beyond the clock skew) and
    /// warns about each without nextUpdate; `true` when there is one. A file that does not
    /// parse is left to webpki or the checker, which say why.
    fn crl_file_times(
        &mut self,
        app: &str,
        crl_files: &[(String, Vec<u8>)],
        policy: &crate::revocation::Policy,
    ) -> Result<bool, AppError> {
        let now = crate::revocation::x509::unix_now();
        let mut without_next_update = false;
        for (source, bytes) in crl_files {
            let Ok(crl) = Crl::parse(bytes) else {
                continue;
            };
            let crl = crl.with_max_age(policy.max_age);
            if crl.is_from_the_future(now) {
                return Err(AppError::Revocation {
                    source: LoadError::Crl {
                        origin: source.clone(),
                        source: CrlError::Future,
                    },
                });
            }
            if crl.next_update.is_none() {
                without_next_update = true;
                self.findings.push(checks::crl_without_next_update(
                    app,
                    source,
                    crl.stale_at(),
                    now,
                ));
            }
        }
        Ok(without_next_update)
    }

    pub(super) fn crls(
        &mut self,
        path: &Path,
    ) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
        let full = self.resolve(path);
        let bytes = self.read(path)?;
        pem_items::<CertificateRevocationListDer<'static>>(&bytes, &full, CRL)
    }
}

/// The subject of a certificate or the issuer of a CRL, as DER.
fn name_of(der: &[u8]) -> Option<Vec<u8>> {
    if let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) {
        return Some(certificate.subject().as_raw().to_vec());
    }
    let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
    Some(crl.issuer().as_raw().to_vec())
}
