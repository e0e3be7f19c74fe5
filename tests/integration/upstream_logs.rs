//! The access line and the failure warning name the upstream a request was sent to
//! (docs/operations.md "Logs"), on the real binary's JSON log: an app of three groups, `latest`
//! named by DNS (`dnsmasq`) with two addresses, a revision on one address and a revision on a
//! closed port:
//! - each answered request's line names its group, that group's upstream URL and the endpoint
//!   that answered it (the address the answer says it came from);
//! - each request to the closed port is answered 502, and both its access line and its
//!   `upstream request failed` warning name that revision and that endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process::{Child, Stream};

use std::net::Ipv4Addr;

use common::dns::{Dnsmasq, NamedUpstreams, dnsmasq_available};
use common::*;
use serde_json::{Value, json};

const HOST: &str = "api.example.test";
const NAME: &str = "api.certgate.test";
const LATEST: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
const OLD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const REQUESTS: usize = 20;

/// The JSON lines of `transcript` whose message is `message`.
fn lines(transcript: &str, message: &str) -> Vec<Value> {
    transcript
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_names_the_group_and_endpoint_the_request_went_to() {
    if !dnsmasq_available() {
        return;
    }
    let pki = Pki::new();
    let upstreams = NamedUpstreams::start(&[LATEST[0], LATEST[1], OLD]).await;
    let port = upstreams.port;
    let dns = Dnsmasq::start(&[(NAME, &LATEST)]);
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut entry = app("api", &[HOST], "127.0.0.1:9".parse().unwrap(), "ignore");
    entry["upstream"] = format!("http://{NAME}:{port}").into();
    entry["revisions"] = json!({
        "api--old": format!("http://{OLD}:{port}"),
        "api--gone": format!("http://{closed}"),
    });
    entry["ingress"]["traffic"] = json!([
        { "weight": 40, "latestRevision": true },
        { "weight": 40, "revisionName": "api--old" },
        { "weight": 20, "revisionName": "api--gone" },
    ]);
    let config = json!({
        "apps": [entry],
        "upstreamDns": { "nameservers": [dns.addr.to_string()] },
    });
    let (mut child, serving) = Child::run_config(dir.path(), &config, &[]);

    let options = ClientOptions::new(&pki, HOST);
    let mut conn = Connection::open(serving.listen(), &options).await.unwrap();
    let mut replies = Vec::new();
    for index in 0..REQUESTS {
        let path = format!("/request/{index}");
        let request = conn.get(HOST, &path);
        let reply = conn.send(request).await.unwrap();
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        replies.push((path, reply.status.as_u16(), body));
    }
    let last = format!("\"/request/{}\"", REQUESTS - 1);
    child.wait_for_line(Stream::Stderr, |line| line.contains(&last));
    let transcript = child.transcript();
    let access = lines(&transcript, "request");
    let warnings = lines(&transcript, "upstream request failed");

    let mut groups = std::collections::BTreeSet::new();
    for (path, status, body) in &replies {
        let line = access
            .iter()
            .find(|line| line["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no access line for {path}: {access:?}"));
        let (upstream, group, endpoint) = match status {
            200 if body == &OLD.to_string() => (
                format!("http://{OLD}:{port}"),
                "api--old",
                format!("{OLD}:{port}"),
            ),
            200 => {
                assert!(LATEST.iter().any(|ip| ip.to_string() == *body), "{body}");
                (
                    format!("http://{NAME}:{port}"),
                    "latest",
                    format!("{body}:{port}"),
                )
            }
            502 => (format!("http://{closed}"), "api--gone", closed.to_string()),
            other => panic!("{path} answered {other}"),
        };
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["upstream"], upstream, "{line}");
        assert_eq!(line["upstream_group"], group, "{line}");
        assert_eq!(line["upstream_endpoint"], endpoint, "{line}");
        groups.insert(group);
    }
    assert_eq!(groups.len(), 3, "every group took requests: {replies:?}");

    let failed = replies
        .iter()
        .filter(|(_, status, _)| *status == 502)
        .count();
    assert_eq!(warnings.len(), failed, "{warnings:?}");
    for warning in &warnings {
        assert_eq!(warning["app"], "api", "{warning}");
        assert_eq!(warning["upstream"], format!("http://{closed}"), "{warning}");
        assert_eq!(warning["upstream_group"], "api--gone", "{warning}");
        assert_eq!(
            warning["upstream_endpoint"],
            closed.to_string(),
            "{warning}"
        );
    }
    // The resolution's own lines name the group whose name they resolve.
    let resolved = lines(&transcript, "upstream addresses changed");
    assert!(
        resolved
            .iter()
            .any(|line| line["app"] == "api" && line["group"] == "latest"),
        "{resolved:?}"
    );
    child.signal("TERM");
    child.wait_exit();
}
