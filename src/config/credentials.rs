//! The files an app names, read into trust and a server certificate: CA bundles, CRLs,
//! pins and allow-lists, PEM or PKCS#12 server certificates and session ticket keys.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::checks::{self, Finding, Severity};
use super::error::{AppError, AppFailure, ConfigError};
use super::file::{FileClientAuth, FileServerCertificate};
use super::load::Loader;
use super::model::RevocationSettings;
use super::pem_files::{CERTIFICATE, CRL, contains, pem_items, pem_problem};
use super::values::revocation_policy;
use crate::identity::parse_sha256;
use crate::revocation::LoadError;
use crate::revocation::crl::{Crl, CrlError};
use crate::settings::{AllowList, ClientCertMode, Trust};

/// A CRL as read, with the name it is known by.
type CrlSource = (String, Vec<u8>);

impl Loader<'_> {
    /// The trust sources, allow-lists and revocation settings of `clientAuth`; all empty in
    /// `ignore` mode, which refuses any of them.
    pub(super) fn client_auth(
        &mut self,
        app: &str,
        mode: ClientCertMode,
        file: &FileClientAuth,
    ) -> Result<(Trust, AllowList, RevocationSettings), AppFailure> {
        if mode == ClientCertMode::Ignore {
            if configured(file) {
                return Err(AppError::ClientAuthIgnored {
                    what: self.keys.client_auth,
                    advice: self.keys.ignored_advice,
                }
                .into());
            }
            let revocation = RevocationSettings {
                policy: crate::settings::RevocationPolicy::default(),
                crl_files: Vec::new(),
                after_handshake: false,
            };
            return Ok((Trust::default(), AllowList::default(), revocation));
        }
        let (crl_paths, revocation_policy) = self.revocation_settings(file)?;
        let roots = self.trust_anchors(app, &file.trusted_ca_files)?;
        let (mut crls, crl_files) = self.crl_files(&crl_paths)?;
        let without_next_update = self.crl_file_times(app, &crl_files, &revocation_policy)?;
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
        let after_handshake = revocation_policy.needs_checker() || without_next_update;
        if after_handshake {
            crls.clear();
        }
        let crl_names = match after_handshake {
            true => Vec::new(),
            false => crl_files.iter().map(|(name, _)| name.clone()).collect(),
        };
        let trust = Trust {
            roots,
            crls,
            crl_names,
            pins,
            allow_untrusted: file.allow_untrusted,
            checked_issuers: Vec::new(),
        };
        if trust.is_empty() {
            return Err(AppError::NoTrustSource {
                mode: mode.as_str(),
                advice: self.keys.no_trust_advice,
            }
            .into());
        }
        let allow = self.allow_list(app, file)?;
        let revocation = RevocationSettings {
            policy: revocation_policy,
            crl_files,
            after_handshake,
        };
        Ok((trust, allow, revocation))
    }

    /// Every CRL file (`clientAuth.crlFiles` is an alias of `clientAuth.revocation.crlFiles`)
    /// and the validated revocation settings; both need CAs to check against.
    fn revocation_settings(
        &self,
        file: &FileClientAuth,
    ) -> Result<(Vec<PathBuf>, crate::settings::RevocationPolicy), AppFailure> {
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
        Ok((crl_files, revocation_policy))
    }

    /// The CAs of `trustedCaFiles`, each checked to be usable as a trust anchor (a finding
    /// for one that is not marked a CA).
    fn trust_anchors(
        &mut self,
        app: &str,
        paths: &[PathBuf],
    ) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let mut roots = Vec::new();
        for path in paths {
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
        Ok(roots)
    }

    /// Every CRL of the CRL files, and each with the name it is known by (its file, and
    /// `#n` after the file's first).
    fn crl_files(
        &mut self,
        paths: &[PathBuf],
    ) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<CrlSource>), ConfigError> {
        let mut crls = Vec::new();
        let mut crl_sources = Vec::new();
        for path in paths {
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
        Ok((crls, crl_sources))
    }

    /// The allow-lists, each subject entry checked (a finding for a suspicious one).
    fn allow_list(&mut self, app: &str, file: &FileClientAuth) -> Result<AllowList, AppFailure> {
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
        Ok(AllowList {
            subjects: file.allowed_subjects.clone(),
            dns_sans: file
                .allowed_dns_sans
                .iter()
                .map(|name| crate::tls::sni::normalize(name))
                .collect(),
            uri_sans: file.allowed_uri_sans.clone(),
        })
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
        match file {
            FileServerCertificate {
                cert_file: Some(cert_file),
                key_file: Some(key_file),
                pkcs12_file: None,
                password_file: None,
                password_env: None,
            } => self.pem_certificate_and_key(cert_file, key_file),
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
                let loaded = crate::tls::pkcs12::load(&der, &password).map_err(|source| {
                    ConfigError::Pkcs12 {
                        path: self.resolve(pkcs12_file),
                        source,
                    }
                })?;
                Ok(loaded)
            }
            _ => Err(shape_error().into()),
        }
    }

    /// A PEM certificate chain and the PEM private key that goes with it.
    fn pem_certificate_and_key(
        &mut self,
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AppFailure> {
        let chain = self.certificates(cert_file)?;
        let key_path = self.resolve(key_file);
        let key = private_key(&self.read(key_file)?, &key_path)?;
        match rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &self.provider) {
            Ok(_) => Ok((chain, key)),
            Err(rustls::Error::InconsistentKeys(_)) => Err(ConfigError::KeyMismatch {
                cert_file: self.resolve(cert_file),
                key_file: key_path,
            }
            .into()),
            Err(source) => Err(ConfigError::BadKey {
                path: key_path,
                source,
            }
            .into()),
        }
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
        policy: &crate::settings::RevocationPolicy,
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

/// The private key of a PEM key file read from `path`, or why there is none.
fn private_key(key_bytes: &[u8], key_path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(key_bytes).map_err(|source| {
        let encrypted = contains(key_bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || contains(key_bytes, b"Proc-Type: 4,ENCRYPTED");
        match source {
            _ if encrypted => ConfigError::EncryptedKey {
                path: key_path.to_owned(),
            },
            pem::Error::NoItemsFound if key_bytes.first() == Some(&0x30) => ConfigError::Der {
                path: key_path.to_owned(),
                what: "private key",
                tool: "openssl pkey",
            },
            pem::Error::NoItemsFound => ConfigError::NoPemItem {
                path: key_path.to_owned(),
                what: "private key",
                label: "PRIVATE KEY",
            },
            source => ConfigError::Pem {
                path: key_path.to_owned(),
                what: "private key",
                number: 1,
                problem: pem_problem(&source),
            },
        }
    })
}

/// Whether `clientAuth` sets anything (refused in `ignore` mode).
fn configured(file: &FileClientAuth) -> bool {
    !file.trusted_ca_files.is_empty()
        || !file.crl_files.is_empty()
        || file.revocation.is_some()
        || !file.allowed_hashes.is_empty()
        || file.allow_untrusted
        || !file.allowed_subjects.is_empty()
        || !file.allowed_dns_sans.is_empty()
        || !file.allowed_uri_sans.is_empty()
}
