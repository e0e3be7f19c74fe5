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
}

/// The groups of an app, and what else the loader needs to know of them.
#[derive(Debug)]
pub(super) struct Plan {
    /// Every group with a weight above 0.
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
        if entry.label.is_some() {
            return Err(entry_error(
                "names a label, and label hosts are not served: remove label, and give the revision a host of its own as another app",
            ));
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
        if weight > 0 {
            groups.push(group(name, url, weight)?);
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
