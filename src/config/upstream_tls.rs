//! `upstreamTls` read into what certgate's TLS to an `https://` app is built from: the CAs
//! its certificate is verified against, the name it must hold, and the client certificate
//! certgate presents (the rustls config itself is built in `apps::build`). Every file goes
//! through the loader, so a reload follows their changes.

use rustls_pki_types::ServerName;

use super::checks::{self, Severity};
use super::error::{AppError, AppFailure};
use super::file::{FileServerCertificate, FileUpstreamTls};
use super::load::Loader;
use crate::settings::{KeyedChain, Upstream, UpstreamTls, UpstreamVerify};

impl Loader<'_> {
    /// Adds TLS to an `https://` upstream; refuses `upstreamTls` on an `http://` one.
    pub(super) fn upstream_tls(
        &mut self,
        app: &str,
        https: bool,
        file: Option<&FileUpstreamTls>,
        upstream: &mut Upstream,
    ) -> Result<(), AppFailure> {
        let file = match (https, file) {
            (false, None) => return Ok(()),
            (false, Some(_)) => {
                return Err(AppError::UpstreamTlsWithoutHttps {
                    what: self.keys.upstream_tls,
                }
                .into());
            }
            (true, file) => file,
        };
        let default = FileUpstreamTls::default();
        let file = file.unwrap_or(&default);
        let verify = self.upstream_server_trust(app, file)?;
        let name = match &file.server_name {
            Some(name) => name.clone(),
            // `[::1]` names the IPv6 address `::1`.
            None => upstream
                .authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        };
        let server_name =
            ServerName::try_from(name.clone()).map_err(|_| AppError::BadServerName {
                key: self.keys.upstream_server_name,
                value: name,
            })?;
        let client = self.upstream_client_certificate(file)?;
        upstream.tls = Some(UpstreamTls {
            server_name,
            verify,
            client,
        });
        Ok(())
    }

    /// What the app's certificate is verified against: `caFiles`, the system's CAs, or
    /// nothing under `insecureSkipVerify` (a warning).
    fn upstream_server_trust(
        &mut self,
        app: &str,
        file: &FileUpstreamTls,
    ) -> Result<UpstreamVerify, AppFailure> {
        Ok(
            match (file.ca_files.is_empty(), file.insecure_skip_verify) {
                (true, false) => UpstreamVerify::System(system_roots().map_err(|why| {
                    AppError::UpstreamWithoutCa {
                        ca: self.keys.upstream_ca,
                        why,
                    }
                })?),
                (false, true) => {
                    return Err(AppError::UpstreamCaAndInsecure {
                        ca: self.keys.upstream_ca,
                        insecure: self.keys.upstream_insecure,
                    }
                    .into());
                }
                (true, true) => {
                    self.findings.push(checks::Finding {
                    severity: Severity::Warning,
                    app: app.to_owned(),
                    message: format!(
                        "{} is on: certgate accepts any certificate the app presents, so anyone who can reach the app's address can read the requests and client identities sent to it; set {} instead",
                        self.keys.upstream_insecure, self.keys.upstream_ca
                    ),
                });
                    UpstreamVerify::Skip
                }
                (false, false) => {
                    let mut roots = Vec::new();
                    for path in &file.ca_files {
                        roots.extend(self.certificates(path)?);
                    }
                    UpstreamVerify::CaFiles(roots)
                }
            },
        )
    }

    /// The client certificate certgate presents to the app, when `upstreamTls` names one.
    fn upstream_client_certificate(
        &mut self,
        file: &FileUpstreamTls,
    ) -> Result<Option<KeyedChain>, AppFailure> {
        let client = FileServerCertificate {
            cert_file: file.cert_file.clone(),
            key_file: file.key_file.clone(),
            pkcs12_file: file.pkcs12_file.clone(),
            password_file: file.password_file.clone(),
            password_env: file.password_env.clone(),
        };
        let presents = client.cert_file.is_some()
            || client.key_file.is_some()
            || client.pkcs12_file.is_some()
            || client.password_file.is_some()
            || client.password_env.is_some();
        if !presents {
            return Ok(None);
        }
        let advice = self.keys.upstream_client_certificate;
        let (chain, key) = self.certificate_and_key(&client, || {
            AppError::UpstreamClientCertificateShape { advice }
        })?;
        Ok(Some(KeyedChain {
            chain,
            key: std::sync::Arc::new(key),
        }))
    }
}

/// The system's CA certificates that rustls can use, found as OpenSSL finds them
/// (`SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else the distribution's bundle), or why
/// there are none.
fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    let (_, unusable) = store.add_parsable_certificates(found.certs);
    if !store.is_empty() {
        return Ok(store);
    }
    let mut why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    if unusable > 0 {
        why.push(format!("{unusable} certificates rustls cannot use"));
    }
    if why.is_empty() {
        why.push("none found".to_owned());
    }
    Err(why.join("; "))
}

/// The `upstreamTls` the sidecar's flags describe, if any flag is given.
pub(crate) fn sidecar_upstream_tls(
    ca_files: Vec<std::path::PathBuf>,
    server_name: Option<String>,
    cert_file: Option<std::path::PathBuf>,
    key_file: Option<std::path::PathBuf>,
    insecure_skip_verify: bool,
) -> Option<FileUpstreamTls> {
    let any = !ca_files.is_empty()
        || server_name.is_some()
        || cert_file.is_some()
        || key_file.is_some()
        || insecure_skip_verify;
    any.then_some(FileUpstreamTls {
        ca_files,
        server_name,
        cert_file,
        key_file,
        insecure_skip_verify,
        ..FileUpstreamTls::default()
    })
}
