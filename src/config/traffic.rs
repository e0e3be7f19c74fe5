//! An app's upstream groups: its `upstream` alone, or `ingress.traffic` splitting requests
//! by integer weights summing to 100 between the `upstream` (`latestRevision: true`) and
//! the `revisions` it names; the sidecar's repeated `--upstream` split evenly. TLS to the
//! `https://` ones is added by the loader (`upstreamTls`, the same for all).

use super::error::AppError;
use super::file::{FileApp, FileTrafficWeight};
use super::values::{is_https, latest_url, transport, upstream_url};
use crate::settings::{LATEST_GROUP, Upstream};

/// One group before TLS is added to it.
#[derive(Debug)]
pub(super) struct GroupPlan {
    /// `latest`, the revision's name, or `upstream-<n>` for the sidecar's n-th `--upstream`.
    pub name: String,
    pub upstream: Upstream,
    /// Whether its URL is `https://`.
    pub https: bool,
    pub weight: u32,
    /// `label`: the revision's own host names, `<first label>---<label>.<rest>` of each of
    /// the app's exact hosts.
    pub label: Option<String>,
}

/// The groups of an app, and what else the loader needs to know of them.
#[derive(Debug)]
pub(super) struct Plan {
    /// Every group with a weight above 0 or a label.
    pub groups: Vec<GroupPlan>,
    /// The group logs and `explain` name as the app's upstream: `latest` when it is one of
    /// them, else the first.
    pub primary: usize,
    /// Whether `ingress.traffic` was given and means nothing (an app without revisions,
    /// where Azure exports one entry taking 100).
    pub traffic_ignored: bool,
}

/// The groups of app `file`.
pub(super) fn groups(file: &FileApp) -> Result<Plan, AppError> {
    let transport = transport(file)?;
    let latest = latest_url(file);
    let entries = file
        .ingress
        .traffic
        .as_ref()
        .and_then(Option::as_deref)
        .unwrap_or_default();
    let group = |name: &str, url: &str, weight: u32| -> Result<GroupPlan, AppError> {
        Ok(GroupPlan {
            name: name.to_owned(),
            upstream: upstream_url(url, transport)?,
            https: is_https(url),
            weight,
            label: None,
        })
    };
    if file.revisions.is_empty() {
        let latest = latest.ok_or(AppError::MissingUpstream)?;
        single_revision(entries)?;
        let groups = if file.more_upstreams.is_empty() {
            vec![group(LATEST_GROUP, &latest, 100)?]
        } else {
            std::iter::once(&latest)
                .chain(&file.more_upstreams)
                .enumerate()
                .map(|(index, url)| group(&format!("upstream-{}", index + 1), url, 1))
                .collect::<Result<Vec<_>, _>>()?
        };
        return Ok(Plan {
            groups,
            primary: 0,
            traffic_ignored: file.ingress.traffic.is_some(),
        });
    }
    for (name, url) in &file.revisions {
        if name.trim().is_empty() || name == LATEST_GROUP {
            return Err(AppError::RevisionName { name: name.clone() });
        }
        upstream_url(url, transport).map_err(|_| AppError::BadRevision {
            name: name.clone(),
            value: url.clone(),
        })?;
    }
    if entries.is_empty() {
        return Err(AppError::RevisionsWithoutTraffic);
    }
    let mut groups: Vec<GroupPlan> = Vec::with_capacity(entries.len());
    let mut sum = 0u64;
    let mut named: Vec<&str> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let entry_error = |what: &'static str| AppError::TrafficEntry { index, what };
        let Some(weight) = entry.weight else {
            return Err(entry_error("has no weight"));
        };
        if let Some(label) = &entry.label
            && !is_label(label)
        {
            return Err(AppError::TrafficLabel {
                label: label.clone(),
            });
        }
        let latest_revision = entry.latest_revision == Some(true);
        let (name, url) = match (latest_revision, &entry.revision_name) {
            (true, Some(_)) => {
                return Err(entry_error(
                    "sets both latestRevision and revisionName: give one",
                ));
            }
            (false, None) => {
                return Err(entry_error(
                    "names neither latestRevision: true nor a revisionName",
                ));
            }
            (true, None) => (
                LATEST_GROUP,
                latest.as_deref().ok_or(AppError::MissingUpstream)?,
            ),
            (false, Some(name)) => match file.revisions.get(name) {
                Some(url) => (name.as_str(), url.as_str()),
                None => {
                    return Err(AppError::UnknownRevision {
                        name: name.clone(),
                        known: file
                            .revisions
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            },
        };
        if named.contains(&name) {
            return Err(AppError::DuplicateTraffic {
                name: name.to_owned(),
            });
        }
        named.push(name);
        sum += u64::from(weight);
        if groups
            .iter()
            .any(|group| group.label.is_some() && group.label == entry.label)
        {
            return Err(entry_error("repeats the label of another entry"));
        }
        if weight > 0 || entry.label.is_some() {
            let mut planned = group(name, url, weight)?;
            planned.label.clone_from(&entry.label);
            groups.push(planned);
        }
    }
    if sum != 100 {
        return Err(AppError::TrafficWeights { sum });
    }
    let primary = groups
        .iter()
        .position(|group| group.name == LATEST_GROUP)
        .unwrap_or(0);
    Ok(Plan {
        groups,
        primary,
        traffic_ignored: false,
    })
}

/// `traffic` of an app without revisions, as Azure exports it for an app whose one
/// revision takes everything: no entry, or one entry with weight 100 (following the latest
/// revision, or naming one or a label).
fn single_revision(traffic: &[FileTrafficWeight]) -> Result<(), AppError> {
    match traffic {
        [] => Ok(()),
        [only] if only.weight == Some(100) => Ok(()),
        [only] => Err(AppError::TrafficWithoutRevisions {
            what: format!(
                "gives its one entry weight {}",
                only.weight
                    .map_or_else(|| "null".to_owned(), |weight| weight.to_string())
            ),
        }),
        several => Err(AppError::TrafficWithoutRevisions {
            what: format!("splits traffic {} ways", several.len()),
        }),
    }
}

/// Whether `label` can stand in a host name after `---`: lowercase letters, digits and
/// hyphens, at most 50 of them (a DNS label holds 63 bytes with the app's first label).
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 50
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

/// The label host of `host` (an exact app host) for `label`: `api.example.com` and `blue`
/// give `api---blue.example.com`; a host of one label has none.
pub(super) fn label_host(host: &str, label: &str) -> Option<String> {
    let (first, rest) = host.split_once('.')?;
    Some(format!("{first}---{label}.{rest}"))
}
