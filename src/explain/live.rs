//! The upstream groups `explain --config` shows, and where their endpoints' states come from:
//! the certgate that runs the config, asked on its admin listener (`GET /upstreams`, within a
//! second); when none answers there, the endpoints as their names resolve now, in state
//! `unknown`, never a state nobody observed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::report::{EndpointSection, EndpointStatesSection, GroupSection};
use crate::apps::build::LoadedApp;
use crate::config::AppConfig;
use crate::settings::UpstreamDns;
use crate::upstream::discovery::{Discovery, settled};
use crate::upstream::state::{GroupState, Upstreams};

/// How long the running certgate, and a name's resolution, may take to answer.
pub(super) const TIMEOUT: Duration = Duration::from_secs(1);
/// The largest `/upstreams` answer read.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The state of an endpoint no running certgate told.
const UNKNOWN: &str = "unknown";

/// Why the admin listener gave no state.
#[derive(Debug, thiserror::Error)]
pub(super) enum AskError {
    #[error("no answer within {} ms", TIMEOUT.as_millis())]
    Timeout,
    #[error("cannot connect")]
    Connect { source: std::io::Error },
    #[error("the HTTP exchange failed")]
    Http { source: hyper::Error },
    #[error("GET /upstreams answered {status}")]
    Status { status: StatusCode },
    #[error("cannot read the answer (at most 4 MiB)")]
    Body {
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the answer is not the JSON of GET /upstreams")]
    Json { source: serde_json::Error },
}

/// `app`'s groups, with the states the certgate listening on `admin` (the config's admin
/// listener) has for them, or as their names resolve now, and where the states come from.
pub(super) async fn groups(
    app: &AppConfig,
    loaded: &LoadedApp,
    admin: Option<SocketAddr>,
    dns: &UpstreamDns,
) -> (Vec<GroupSection>, EndpointStatesSection) {
    let Some(configured) = admin else {
        let states = not_live(
            "not_asked",
            None,
            "the config has no admin listener, so the states of a running certgate cannot be read"
                .to_owned(),
        );
        return (resolved_now(app, loaded, dns).await, states);
    };
    if configured.port() == 0 {
        let states = not_live(
            "not_asked",
            Some(configured),
            "the admin listener's port is 0 (chosen when certgate starts), so the states of a \
             running certgate cannot be read here"
                .to_owned(),
        );
        return (resolved_now(app, loaded, dns).await, states);
    }
    let asked = crate::health::reachable(configured);
    let upstreams = match ask(asked).await {
        Ok(upstreams) => upstreams,
        Err(error @ (AskError::Connect { .. } | AskError::Timeout)) => {
            let states = not_live(
                "not_running",
                Some(asked),
                format!(
                    "certgate is not running at {asked}, or has no admin listener there ({})",
                    crate::error_chain(&error)
                ),
            );
            return (resolved_now(app, loaded, dns).await, states);
        }
        Err(error) => {
            let states = not_live(
                "unreadable",
                Some(asked),
                format!(
                    "the listener at {asked} answered, but not with the endpoints' states ({}): \
                     a certgate without GET /upstreams, or another server",
                    crate::error_chain(&error)
                ),
            );
            return (resolved_now(app, loaded, dns).await, states);
        }
    };
    let Some(served) = upstreams
        .apps
        .into_iter()
        .find(|served| served.name == app.name)
    else {
        let states = not_live(
            "not_served",
            Some(asked),
            format!(
                "the certgate at {asked} serves no app named {:?} (it runs another config, or \
                 has not reloaded this one)",
                app.name
            ),
        );
        return (resolved_now(app, loaded, dns).await, states);
    };
    let states = EndpointStatesSection {
        source: "live",
        admin: Some(asked.to_string()),
        detail: format!(
            "live from the certgate at {asked} (config generation {}), its groups as it serves them",
            upstreams.generation
        ),
    };
    (served.groups.into_iter().map(live_group).collect(), states)
}

/// Asks `GET /upstreams` on `admin`, within `TIMEOUT`.
pub(super) async fn ask(admin: SocketAddr) -> Result<Upstreams, AskError> {
    tokio::time::timeout(TIMEOUT, exchange(admin))
        .await
        .map_err(|_| AskError::Timeout)?
}

async fn exchange(admin: SocketAddr) -> Result<Upstreams, AskError> {
    let tcp = TcpStream::connect(admin)
        .await
        .map_err(|source| AskError::Connect { source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|source| AskError::Http { source })?;
    tokio::spawn(connection);
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = Uri::from_static("/upstreams");
    request
        .headers_mut()
        .insert(HOST, HeaderValue::from_static("certgate"));
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| AskError::Http { source })?;
    if response.status() != StatusCode::OK {
        return Err(AskError::Status {
            status: response.status(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|source| AskError::Body { source })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|source| AskError::Json { source })
}

fn not_live(source: &'static str, admin: Option<SocketAddr>, why: String) -> EndpointStatesSection {
    EndpointStatesSection {
        source,
        admin: admin.map(|admin| admin.to_string()),
        detail: format!("{why}; the endpoints as their names resolve now, their states unknown"),
    }
}

fn live_group(group: GroupState) -> GroupSection {
    GroupSection {
        name: group.name,
        weight: group.weight,
        upstream: group.upstream,
        endpoints: group
            .endpoints
            .into_iter()
            .map(|endpoint| EndpointSection {
                address: endpoint.address,
                state: endpoint.state,
                in_flight: Some(endpoint.in_flight),
                ejected_by: endpoint.ejected_by,
                ejected_until: endpoint.ejected_until,
            })
            .collect(),
    }
}

/// The app's groups with the endpoints their hosts name now: an IP literal itself, a DNS
/// name what it resolves to within `TIMEOUT` (through `upstreamDns`, as certgate resolves
/// it), or the `host:port` dialed by name when it does not.
async fn resolved_now(app: &AppConfig, loaded: &LoadedApp, dns: &UpstreamDns) -> Vec<GroupSection> {
    // Every name is resolved at once; each gets what it found by the one deadline.
    let metrics = crate::metrics::Metrics::new();
    let discoveries: Vec<Option<Discovery>> = app
        .groups
        .iter()
        .map(|group| {
            let upstream = &group.upstream;
            upstream.dns_name().map(|name| {
                let discovery = Discovery::new(name, upstream.port());
                discovery.start(
                    &app.name,
                    &group.name,
                    dns,
                    metrics.upstream_dns(&app.name, &group.name),
                    None,
                );
                discovery
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut sections = Vec::with_capacity(app.groups.len());
    let groups = app.groups.iter().zip(&loaded.groups).zip(&discoveries);
    for ((group, as_loaded), discovery) in groups {
        let addresses = match discovery {
            Some(discovery) => {
                let found = settled(&discovery.subscribe(), deadline).await;
                discovery.stop();
                found
            }
            None => as_loaded.addresses.borrow().clone(),
        };
        let endpoints = if addresses.is_empty() {
            vec![group.upstream.authority.to_string()]
        } else {
            addresses.iter().map(ToString::to_string).collect()
        };
        sections.push(GroupSection {
            name: group.name.clone(),
            weight: group.weight,
            upstream: group.upstream.to_string(),
            endpoints: endpoints
                .into_iter()
                .map(|address| EndpointSection {
                    address,
                    state: UNKNOWN.to_owned(),
                    in_flight: None,
                    ejected_by: Vec::new(),
                    ejected_until: None,
                })
                .collect(),
        });
    }
    sections
}
