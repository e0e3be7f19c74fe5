//! `ingress.customDomains` read into more host names for an app, each served with a
//! certificate of the top-level `certificates` object (the last `/`-separated segment of its
//! `certificateId` names the entry) or, under `bindingType: "Disabled"`, with the app's own
//! server certificate. Each entry's files are read once, however many domains name it.

use std::sync::Arc;

use super::checks;
use super::error::{AppError, AppFailure};
use super::file::FileCustomDomain;
use super::load::Loader;
use super::model::CustomDomain;
use crate::settings::{BindingType, KeyedChain};
use crate::tls::sni::HostPattern;

impl Loader<'_> {
    /// The app's custom domains; a finding for each one its certificate does not cover.
    pub(super) fn custom_domains(
        &mut self,
        app: &str,
        domains: &[FileCustomDomain],
    ) -> Result<Vec<CustomDomain>, AppFailure> {
        domains
            .iter()
            .map(|domain| self.custom_domain(app, domain))
            .collect()
    }

    fn custom_domain(
        &mut self,
        app: &str,
        file: &FileCustomDomain,
    ) -> Result<CustomDomain, AppFailure> {
        let host = HostPattern::parse(&file.name).map_err(|source| AppError::Host { source })?;
        let name = file.name.clone();
        let binding = match &file.binding_type {
            Some(value) => value
                .known()
                .map_err(|value| AppError::UnknownBindingType {
                    name: name.clone(),
                    value: value.to_owned(),
                })?,
            None if file.certificate_id.is_some() => BindingType::SniEnabled,
            None => BindingType::Disabled,
        };
        let certificate = match binding {
            BindingType::Disabled => None,
            BindingType::Auto => return Err(AppError::ManagedCertificate { name }.into()),
            BindingType::SniEnabled => {
                let id = file
                    .certificate_id
                    .as_deref()
                    .ok_or_else(|| AppError::DomainWithoutCertificate { name: name.clone() })?;
                let (entry, keyed) = self.named_certificate(&name, id)?;
                if let Some(leaf) = keyed.chain.first() {
                    let label = std::path::PathBuf::from(format!("certificates.{entry}"));
                    self.findings.extend(checks::host_coverage(
                        app,
                        std::slice::from_ref(&host),
                        leaf,
                        &label,
                    ));
                }
                Some((entry, keyed))
            }
        };
        Ok(CustomDomain { host, certificate })
    }

    /// The entry of `certificates` that `id` names, read on first use.
    fn named_certificate(
        &mut self,
        domain: &str,
        id: &str,
    ) -> Result<(String, KeyedChain), AppFailure> {
        let entry = id.rsplit('/').next().unwrap_or(id).to_owned();
        if let Some((keyed, files)) = self.domain_certificates.get(&entry) {
            // Read once for every domain that names it; still part of this app's files.
            let (keyed, files) = (keyed.clone(), files.clone());
            self.app_files.extend(files);
            return Ok((entry, keyed));
        }
        let certificates = self.certificates;
        let Some(file) = certificates.get(&entry) else {
            let known = certificates.keys().cloned().collect::<Vec<_>>();
            return Err(AppError::UnknownCertificate {
                name: domain.to_owned(),
                id: id.to_owned(),
                entry,
                known: if known.is_empty() {
                    "it is empty".to_owned()
                } else {
                    format!("it holds {}", known.join(", "))
                },
            }
            .into());
        };
        let shape = || AppError::DomainCertificateShape {
            entry: entry.clone(),
        };
        let first_file = self.app_files.len();
        let (chain, key) = self.certificate_and_key(file, shape)?;
        let files = self.app_files[first_file..].to_vec();
        let keyed = KeyedChain {
            chain,
            key: Arc::new(key),
        };
        self.domain_certificates
            .insert(entry.clone(), (keyed.clone(), files));
        Ok((entry, keyed))
    }
}
