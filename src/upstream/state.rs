//! The state of an app's upstream groups as they are now, read only when asked (the admin
//! listener's `GET /upstreams`; nothing is kept or counted per request for it): each
//! endpoint's state as `certgate_upstream_endpoints` counts it, its requests in flight, and
//! what ejected an ejected one and until when. `certgate explain --config` reads the same
//! JSON back from a running certgate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::UpstreamClient;
use super::endpoint::Endpoint;
use crate::metrics::upstream::STATES;

/// `GET /upstreams`: the apps of the config generation new connections are served under.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Upstreams {
    /// The generation: 0 for the config loaded at start, one more with each reload.
    pub generation: u64,
    pub apps: Vec<AppUpstreams>,
}

/// One app's groups, in the order of its config (`latest` first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AppUpstreams {
    pub name: String,
    pub groups: Vec<GroupState>,
}

/// One upstream group and its endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupState {
    /// `latest`, or the revision's name.
    pub name: String,
    /// Its share of the app's requests (`ingress.traffic`).
    pub weight: u32,
    /// Its upstream URL.
    pub upstream: String,
    /// The endpoints requests go to, then those draining out.
    pub endpoints: Vec<EndpointState>,
}

/// One endpoint of a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EndpointState {
    /// The address dialed, or the upstream's `host:port` when it is dialed by name (a name
    /// that has not resolved).
    pub address: String,
    /// `healthy`, `ejected` or `draining`, the `state` label of `certgate_upstream_endpoints`.
    pub state: String,
    /// Requests sent to it whose response has not ended.
    pub in_flight: u64,
    /// What keeps an ejected endpoint out: `failures` (its failures in a row, passive), and
    /// `health_check` (its active health check failed); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ejected_by: Vec<String>,
    /// Until when its failures keep it out (RFC 3339), when they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejected_until: Option<String>,
}

/// The states, as `certgate_upstream_endpoints` names them.
const HEALTHY: &str = STATES[0];
const EJECTED: &str = STATES[1];
const DRAINING: &str = STATES[2];

/// Why an ejected endpoint is out: its failures in a row.
pub(crate) const EJECTED_BY_FAILURES: &str = "failures";
/// Why an ejected endpoint is out: its health check.
pub(crate) const EJECTED_BY_HEALTH_CHECK: &str = "health_check";

impl UpstreamClient {
    /// Each group's endpoints as they are now, in the order of the groups the client was made
    /// with (the app's config order).
    pub(crate) fn endpoint_states(&self) -> Vec<Vec<EndpointState>> {
        let now = SystemTime::now();
        self.inner
            .groups
            .iter()
            .map(|group| {
                let active = group.current();
                let draining = group.draining_now();
                active
                    .iter()
                    .map(|endpoint| serving(endpoint, now))
                    .chain(draining.iter().map(|endpoint| EndpointState {
                        address: endpoint.label.clone(),
                        // "draining"
                        state: DRAINING.to_owned(),
                        in_flight: count(endpoint.in_flight()),
                        ejected_by: Vec::new(),
                        ejected_until: None,
                    }))
                    .collect()
            })
            .collect()
    }
}

/// An endpoint of a group's set: `healthy`, or `ejected` and why.
fn serving(endpoint: &Endpoint, now: SystemTime) -> EndpointState {
    let ejected_for = endpoint.ejected_for();
    let mut ejected_by = Vec::new();
    if ejected_for.is_some() {
        ejected_by.push(EJECTED_BY_FAILURES.to_owned());
    }
    if endpoint.is_unhealthy() {
        ejected_by.push(EJECTED_BY_HEALTH_CHECK.to_owned());
    }
    EndpointState {
        address: endpoint.label.clone(),
        state: if ejected_by.is_empty() {
            HEALTHY
        } else {
            EJECTED
        }
        .to_owned(),
        in_flight: count(endpoint.in_flight()),
        ejected_by,
        ejected_until: ejected_for.map(|left| wall_clock(now, left)),
    }
}

/// `left` from `now`, RFC 3339, in whole seconds rounded up (still ejected until then).
fn wall_clock(now: SystemTime, left: Duration) -> String {
    let until = (now + left).duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = until.as_secs() + u64::from(until.subsec_nanos() > 0);
    crate::tls::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

fn count(in_flight: usize) -> u64 {
    u64::try_from(in_flight).unwrap_or(u64::MAX)
}
