//! The rest of the Container Apps `ingress` block (docs/config.md "The ingress block"): the
//! keys that mean nothing outside Azure, accepted with the values an HTTP app exports and
//! listed as ignored (`traffic` is read by `traffic`); values certgate cannot honour refused, each saying what to
//! do; and `ipSecurityRestrictions`, validated into the table connections are judged by.

use std::sync::Arc;

use super::checks::{Finding, Severity};
use super::error::AppError;
use super::file::{FileIngress, FileIpSecurityRestriction};
use crate::ip_restrictions::{IpAction, IpRestrictions, IpRule, parse_range};
use crate::settings::Affinity;

/// What the ingress block adds to an app.
#[derive(Debug, Default)]
pub(super) struct IngressBlock {
    /// The keys given that certgate accepts without effect, as written in the file.
    pub ignored: Vec<&'static str>,
    /// The app's IP restrictions; `None` admits every address.
    pub ip_restrictions: Option<Arc<IpRestrictions>>,
    /// What `certgate check` says beyond errors.
    pub findings: Vec<Finding>,
}

/// Validates the Azure-only keys and `ipSecurityRestrictions` of app `app`'s ingress block;
/// `traffic` (read by `traffic::groups`) is listed as ignored when `traffic_ignored`.
pub(super) fn ingress_block(
    app: &str,
    file: &FileIngress,
    traffic_ignored: bool,
) -> Result<IngressBlock, AppError> {
    let mut block = IngressBlock::default();
    if file.external.is_some() {
        block.ignored.push("external");
    }
    if file.fqdn.is_some() {
        block.ignored.push("fqdn");
    }
    match file.exposed_port {
        None => {}
        Some(None | Some(0)) => block.ignored.push("exposedPort"),
        Some(Some(port)) => return Err(AppError::ExposedPort { port }),
    }
    match &file.additional_port_mappings {
        None => {}
        Some(Some(mappings)) if !mappings.is_empty() => {
            return Err(AppError::PortMappings {
                count: mappings.len(),
            });
        }
        Some(_) => block.ignored.push("additionalPortMappings"),
    }
    if traffic_ignored {
        block.ignored.push("traffic");
    }
    if let Some(sticky) = &file.sticky_sessions {
        match sticky
            .as_ref()
            .and_then(|sticky| sticky.affinity.as_ref())
            .map(|affinity| affinity.known())
        {
            None | Some(Ok(Affinity::None)) => block.ignored.push("stickySessions"),
            Some(Ok(Affinity::Sticky)) => {
                return Err(AppError::StickySessions {
                    value: "sticky".to_owned(),
                });
            }
            Some(Err(value)) => {
                return Err(AppError::StickySessions {
                    value: value.to_owned(),
                });
            }
        }
    }
    if let Some(rules) = &file.ip_security_restrictions {
        let (restrictions, findings) = ip_restrictions(app, rules)?;
        block.ip_restrictions = restrictions.map(Arc::new);
        block.findings = findings;
    }
    Ok(block)
}

/// The rules of `ipSecurityRestrictions`, all with one action, as the table connections are
/// judged by; a warning for each range written with host bits (`10.0.0.5/8`), which are
/// cleared.
fn ip_restrictions(
    app: &str,
    file: &[FileIpSecurityRestriction],
) -> Result<(Option<IpRestrictions>, Vec<Finding>), AppError> {
    let mut action: Option<(IpAction, &str)> = None;
    let mut rules: Vec<IpRule> = Vec::with_capacity(file.len());
    let mut findings = Vec::new();
    for entry in file {
        let name = entry.name.trim();
        if name.is_empty() {
            return Err(AppError::IpRuleWithoutName);
        }
        if rules.iter().any(|rule| rule.name == name) {
            return Err(AppError::DuplicateIpRule {
                name: name.to_owned(),
            });
        }
        let this = match entry.action.as_ref().map(|action| action.known()) {
            Some(Ok(action)) => action,
            Some(Err(value)) => {
                return Err(AppError::IpAction {
                    rule: name.to_owned(),
                    value: Some(value.to_owned()),
                });
            }
            None => {
                return Err(AppError::IpAction {
                    rule: name.to_owned(),
                    value: None,
                });
            }
        };
        match action {
            None => action = Some((this, name)),
            Some((first_action, first)) if first_action != this => {
                return Err(AppError::MixedIpActions {
                    first: first.to_owned(),
                    first_action: first_action.as_str(),
                    second: name.to_owned(),
                    second_action: this.as_str(),
                });
            }
            Some(_) => {}
        }
        let (range, had_host_bits) =
            parse_range(&entry.ip_address_range).map_err(|source| AppError::IpRange {
                rule: name.to_owned(),
                value: entry.ip_address_range.clone(),
                source,
            })?;
        if had_host_bits {
            findings.push(Finding {
                severity: Severity::Warning,
                app: app.to_owned(),
                message: format!(
                    "ingress.ipSecurityRestrictions rule {name:?}: ipAddressRange {:?} has host bits set; it is read as {range}: write {range} if that is meant, or the prefix length that is",
                    entry.ip_address_range
                ),
            });
        }
        rules.push(IpRule {
            name: name.to_owned(),
            description: entry.description.clone().unwrap_or_default(),
            range,
        });
    }
    let restrictions = action.and_then(|(action, _)| IpRestrictions::new(action, rules));
    Ok((restrictions, findings))
}
