//! The series of an app's upstream groups and endpoints: how many endpoints each group has
//! in each state, each endpoint's requests and failures, and the requests sent while no
//! endpoint of a group was healthy, and the active health checks of each endpoint by result.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// The `state` label values of `certgate_upstream_endpoints`, in `GroupMetrics::states` order.
pub(crate) const STATES: [&str; 3] = ["healthy", "ejected", "draining"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GroupStateLabels {
    app: String,
    group: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GroupLabels {
    app: String,
    group: String,
}

impl GroupLabels {
    pub(super) fn new(app: &str, group: &str) -> Self {
        Self {
            app: app.to_owned(),
            group: group.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndpointLabels {
    app: String,
    group: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HealthCheckLabels {
    app: String,
    group: String,
    endpoint: String,
    result: &'static str,
}

/// The upstream families, registered once.
#[derive(Debug, Clone, Default)]
pub(super) struct Families {
    pub endpoints: Family<GroupStateLabels, Gauge>,
    pub requests: Family<EndpointLabels, Counter>,
    pub failures: Family<EndpointLabels, Counter>,
    pub no_healthy: Family<GroupLabels, Counter>,
    pub health_checks: Family<HealthCheckLabels, Counter>,
}

/// One group's handles.
#[derive(Debug, Clone)]
pub(crate) struct GroupMetrics {
    app: String,
    group: String,
    families: Families,
    /// `certgate_upstream_endpoints` for each of `STATES`.
    pub states: [Gauge; 3],
    /// `certgate_upstream_no_healthy_endpoint_requests_total`.
    pub no_healthy: Counter,
}

impl Families {
    /// The handles of group `group` of app `app`, its series created at zero.
    pub(super) fn group(&self, app: &str, group: &str) -> GroupMetrics {
        let state = |state| {
            self.endpoints
                .get_or_create(&GroupStateLabels {
                    app: app.to_owned(),
                    group: group.to_owned(),
                    state,
                })
                .clone()
        };
        GroupMetrics {
            app: app.to_owned(),
            group: group.to_owned(),
            states: STATES.map(state),
            no_healthy: self
                .no_healthy
                .get_or_create(&GroupLabels::new(app, group))
                .clone(),
            families: self.clone(),
        }
    }
}

impl GroupMetrics {
    /// The request and failure counters of the endpoint `endpoint` (its address).
    pub(crate) fn endpoint(&self, endpoint: &str) -> (Counter, Counter) {
        let labels = EndpointLabels {
            app: self.app.clone(),
            group: self.group.clone(),
            endpoint: endpoint.to_owned(),
        };
        (
            self.families.requests.get_or_create(&labels).clone(),
            self.families.failures.get_or_create(&labels).clone(),
        )
    }

    /// The health-check counters of the endpoint `endpoint`: successes, then failures.
    pub(crate) fn health_checks(&self, endpoint: &str) -> [Counter; 2] {
        ["success", "failure"].map(|result| {
            self.families
                .health_checks
                .get_or_create(&HealthCheckLabels {
                    app: self.app.clone(),
                    group: self.group.clone(),
                    endpoint: endpoint.to_owned(),
                    result,
                })
                .clone()
        })
    }
}
