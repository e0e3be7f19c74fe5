//! Upstream names resolved in the background (docs/config.md "How upstream names are
//! resolved"), against a real DNS server (`dnsmasq` on a loopback port, named by
//! `upstreamDns.nameservers`) whose records change while requests run:
//! - a name moved from one address to another under steady load: the new address gets
//!   requests within `refreshMs` and one request, the old one gets none after that, and no
//!   request fails;
//! - the name removed from DNS, then dnsmasq stopped: the last good addresses are kept and
//!   requests still served, the failures are counted and logged once (the real binary);
//! - a name that does not resolve yet: certgate starts, requests get 502, then are served once
//!   the record appears;
//! - a reload while the name does not resolve: the new configuration serves the addresses the
//!   replaced one held;
//! - a name resolving to three addresses is three endpoints: concurrent requests spread over
//!   all three (least-request with two random choices), none fails;
//! - two revisions named by DNS have series of their own (`{app,group}`); a reload that names
//!   one by its IP address removes that group's series, the other's stay;
//! - `check` prints the `upstreamDns` line; a bad nameserver or a too short `refreshMs` is
//!   refused naming the key; `explain --config` shows the name, the refresh bounds and the
//!   nameservers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process::Child;
use crate::process::cli::{assert_says, certgate, exited};

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::apps::IGNORE_HOST;
use common::dns::{Dnsmasq, NamedUpstreams, dnsmasq_available};
use common::polling::{poll, scrape_until};
use common::*;

const NAME: &str = "api.certgate.test";
const FIRST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SECOND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// `upstreamDns.refreshMs` of these tests (dnsmasq answers with a TTL of one second).
const REFRESH_MS: u64 = 1_000;

/// A config with one `ignore` app at [`IGNORE_HOST`] in front of `http://NAME:port`, names
/// resolved by `dns`, and an admin listener.
fn config(dns: &Dnsmasq, port: u16) -> serde_json::Value {
    let mut app = common::apps::ignore_app("127.0.0.1:9".parse().unwrap());
    app["upstream"] = format!("http://{NAME}:{port}").into();
    serde_json::json!({
        "admin": "127.0.0.1:0",
        "apps": [app],
        "upstreamDns": { "refreshMs": REFRESH_MS, "nameservers": [dns.addr.to_string()] },
    })
}

/// The body (the answering app's address) and status of one GET.
async fn fetch(conn: &mut Connection) -> (u16, String) {
    let request = conn.get(IGNORE_HOST, "/");
    let reply = conn.send(request).await.unwrap();
    (
        reply.status.as_u16(),
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

#[tokio::test]
async fn a_name_of_three_addresses_spreads_requests_over_three_endpoints() {
    if !dnsmasq_available() {
        return;
    }
    const THIRD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
    let pki = Pki::new();
    let upstreams = NamedUpstreams::start(&[FIRST, SECOND, THIRD]).await;
    let dns = Dnsmasq::start(&[(NAME, &[FIRST, SECOND, THIRD])]);
    let dir = TempDir::new();
    pki.write(&dir);
    let gateway = Gateway::start(dir, config(&dns, upstreams.port)).await;
    // Six clients at once on their own connections, so endpoints have requests in flight to
    // compare.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let options = ClientOptions::new(&pki, IGNORE_HOST);
        let addr = gateway.addr;
        clients.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr, &options).await.unwrap();
            let mut failed = 0;
            for _ in 0..100 {
                if fetch(&mut conn).await.0 != 200 {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for client in clients {
        failed += client.await.unwrap();
    }
    assert_eq!(failed, 0, "failed requests");
    let counts = [FIRST, SECOND, THIRD].map(|address| upstreams.count(address));
    assert_eq!(counts.iter().sum::<usize>(), 600, "{counts:?}");
    for (address, count) in [FIRST, SECOND, THIRD].iter().zip(counts) {
        // An even share is 200; least-request keeps every endpoint well within reach of it.
        assert!(count >= 100, "{address} served {count} of 600: {counts:?}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn each_group_has_its_dns_series_and_one_dialed_by_address_has_none() {
    if !dnsmasq_available() {
        return;
    }
    const OLD_NAME: &str = "old.certgate.test";
    const THIRD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
    let pki = Pki::new();
    let upstreams = NamedUpstreams::start(&[FIRST, SECOND, THIRD]).await;
    let dns = Dnsmasq::start(&[(NAME, &[FIRST]), (OLD_NAME, &[SECOND, THIRD])]);
    let dir = TempDir::new();
    pki.write(&dir);
    let revisions = |old: String| {
        let mut config = config(&dns, upstreams.port);
        let app = &mut config["apps"][0];
        app["revisions"] = serde_json::json!({ "ignore--old": old });
        app["ingress"]["traffic"] = serde_json::json!([
            { "weight": 50, "latestRevision": true },
            { "weight": 50, "revisionName": "ignore--old" },
        ]);
        config
    };
    let port = upstreams.port;
    let gateway = Gateway::start(dir, revisions(format!("http://{OLD_NAME}:{port}"))).await;
    let admin = gateway.admin.unwrap();
    let series = |name: &str, group: &str| {
        format!("certgate_upstream_dns_{name}{{app=\"ignore\",group=\"{group}\"}}")
    };
    let text = scrape_until(admin, 100, Duration::from_millis(50), |text| {
        metric_value(text, &series("addresses", "ignore--old")) == Some(2.0)
    })
    .await;
    assert_eq!(metric(&text, &series("addresses", "latest")), 1.0, "{text}");
    assert_eq!(
        metric(&text, &series("addresses", "ignore--old")),
        2.0,
        "{text}"
    );
    for group in ["latest", "ignore--old"] {
        assert!(
            metric(&text, &series("resolutions_total", group)) >= 1.0,
            "{text}"
        );
        assert_eq!(
            metric(&text, &series("failures_total", group)),
            0.0,
            "{text}"
        );
    }

    // The revision is dialed by address now: nothing of its resolution stays exported.
    let mut next = revisions(format!("http://{SECOND}:{port}"));
    next["listen"] = "127.0.0.1:0".into();
    next["timeouts"] = serde_json::json!({ "drainDelayMs": 0 });
    gateway
        .dir
        .write("certgate.json", serde_json::to_vec(&next).unwrap());
    gateway.reloader.reload().await.unwrap();
    let text = common::scrape(admin).await;
    for name in ["addresses", "resolutions_total", "failures_total"] {
        assert_eq!(
            metric_value(&text, &series(name, "ignore--old")),
            None,
            "{text}"
        );
    }
    assert_eq!(metric(&text, &series("addresses", "latest")), 1.0, "{text}");
    // A stopped resolution of the replaced configuration does not bring it back.
    tokio::time::sleep(Duration::from_millis(REFRESH_MS + 200)).await;
    let text = common::scrape(admin).await;
    assert_eq!(
        metric_value(&text, &series("addresses", "ignore--old")),
        None,
        "{text}"
    );
    let options = ClientOptions::new(&pki, IGNORE_HOST);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(fetch(&mut conn).await);
    }
    bodies.sort();
    let first = (200, FIRST.to_string());
    let second = (200, SECOND.to_string());
    assert_eq!(bodies, [first.clone(), first, second.clone(), second]);
    gateway.stop().await;
}

#[tokio::test]
async fn a_name_moved_to_another_address_under_load_moves_its_requests_without_a_failure() {
    if !dnsmasq_available() {
        return;
    }
    let pki = Pki::new();
    let upstreams = NamedUpstreams::start(&[FIRST, SECOND]).await;
    let dns = Dnsmasq::start(&[(NAME, &[FIRST])]);
    let dir = TempDir::new();
    pki.write(&dir);
    let gateway = Gateway::start(dir, config(&dns, upstreams.port)).await;

    // Four clients, each on its own keep-alive connection, send requests back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, failures) = (stop.clone(), failures.clone());
        let options = ClientOptions::new(&pki, IGNORE_HOST);
        let addr = gateway.addr;
        load.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr, &options).await.unwrap();
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) {
                let (status, _) = fetch(&mut conn).await;
                if status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                sent += 1;
            }
            sent
        }));
    }
    let first_served = poll(
        100,
        Duration::from_millis(50),
        async || upstreams.count(FIRST),
        |count| *count >= 20,
    )
    .await;
    assert!(first_served >= 20, "{FIRST} served {first_served}");
    assert_eq!(upstreams.count(SECOND), 0, "{SECOND} is not in DNS yet");

    dns.set_records(&[(NAME, &[SECOND])]);
    let moved = Instant::now();
    let second_served = poll(
        200,
        Duration::from_millis(10),
        async || upstreams.count(SECOND),
        |count| *count > 0,
    )
    .await;
    let took = moved.elapsed();
    assert!(second_served > 0, "{SECOND} never got a request");
    // Within refreshMs (the TTL of 1 s is no shorter), and one request; a loaded test machine
    // gets half a second more.
    assert!(
        took < Duration::from_millis(REFRESH_MS + 500),
        "{SECOND} got its first request {took:?} after the change"
    );

    // The requests in flight to FIRST at the change finish; after that it gets none.
    poll(
        100,
        Duration::from_millis(20),
        async || upstreams.count(SECOND),
        |count| *count >= 40,
    )
    .await;
    let first_after = upstreams.count(FIRST);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        upstreams.count(FIRST),
        first_after,
        "{FIRST} got new requests after it left DNS"
    );
    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for client in load {
        sent += client.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {sent} requests");
    let metrics = common::scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &metrics,
            "certgate_upstream_dns_failures_total{app=\"ignore\",group=\"latest\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "certgate_upstream_dns_addresses{app=\"ignore\",group=\"latest\"}"
        ),
        1.0
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_failing_nameserver_keeps_the_last_addresses_counts_and_logs_once() {
    if !dnsmasq_available() {
        return;
    }
    let pki = Pki::new();
    let upstreams = NamedUpstreams::start(&[FIRST]).await;
    let mut dns = Dnsmasq::start(&[(NAME, &[FIRST])]);
    let dir = TempDir::new();
    pki.write(&dir);
    let config = config(&dns, upstreams.port);
    let (mut child, serving) = Child::run_config(dir.path(), &config, &[]);
    let options = ClientOptions::new(&pki, IGNORE_HOST);
    let mut conn = Connection::open(serving.listen(), &options).await.unwrap();
    assert_eq!(fetch(&mut conn).await, (200, FIRST.to_string()));

    // The name disappears (dnsmasq answers NXDOMAIN at once): each lookup fails quickly.
    dns.set_records(&[]);
    let warning = child.wait_for_line(crate::process::Stream::Stderr, |line| {
        line.contains("cannot resolve the upstream name")
    });
    let line = warning.last().unwrap();
    assert_says(line, &["\"app\":\"ignore\"", NAME, "WARN"], &[]);
    let failures = "certgate_upstream_dns_failures_total{app=\"ignore\",group=\"latest\"}";
    let text = scrape_until(serving.admin(), 100, Duration::from_millis(100), |text| {
        metric(text, failures) >= 2.0
    })
    .await;
    assert!(metric(&text, failures) >= 2.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "certgate_upstream_dns_addresses{app=\"ignore\",group=\"latest\"}"
        ),
        1.0
    );
    assert_eq!(fetch(&mut conn).await, (200, FIRST.to_string()));

    // The nameserver goes away: still served, on the connection it has and on a new one.
    dns.stop();
    assert_eq!(fetch(&mut conn).await, (200, FIRST.to_string()));
    let mut fresh = Connection::open(serving.listen(), &options).await.unwrap();
    assert_eq!(fetch(&mut fresh).await, (200, FIRST.to_string()));
    let warnings = child
        .transcript()
        .matches("cannot resolve the upstream name")
        .count();
    assert_eq!(warnings, 1, "one warning per streak of failures");
    child.signal("TERM");
    child.wait_exit();
}

#[tokio::test]
async fn a_name_that_does_not_resolve_at_start_gets_502_until_it_does() {
    if !dnsmasq_available() {
        return;
    }
    let pki = Pki::new();
    let upstreams = NamedUpstreams::start(&[FIRST]).await;
    let dns = Dnsmasq::start(&[("other.certgate.test", &[FIRST])]);
    let dir = TempDir::new();
    pki.write(&dir);
    let gateway = Gateway::start(dir, config(&dns, upstreams.port)).await;
    let options = ClientOptions::new(&pki, IGNORE_HOST);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = conn.get(IGNORE_HOST, "/");
    let reply = conn.send(request).await.unwrap();
    assert_certgate_error(
        &reply,
        http::StatusCode::BAD_GATEWAY,
        "before the name resolves",
    );

    dns.set_records(&[(NAME, &[FIRST])]);
    let (status, body) = poll(
        100,
        Duration::from_millis(50),
        async || fetch(&mut conn).await,
        |(status, _)| *status == 200,
    )
    .await;
    assert_eq!((status, body), (200, FIRST.to_string()));
    gateway.stop().await;
}

#[tokio::test]
async fn a_reload_while_the_name_does_not_resolve_keeps_the_last_addresses() {
    if !dnsmasq_available() {
        return;
    }
    let pki = Pki::new();
    let upstreams = NamedUpstreams::start(&[FIRST]).await;
    let dns = Dnsmasq::start(&[(NAME, &[FIRST])]);
    let dir = TempDir::new();
    pki.write(&dir);
    let gateway = Gateway::start(dir, config(&dns, upstreams.port)).await;
    let options = ClientOptions::new(&pki, IGNORE_HOST);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    assert_eq!(fetch(&mut conn).await, (200, FIRST.to_string()));

    dns.set_records(&[]);
    let failures = "certgate_upstream_dns_failures_total{app=\"ignore\",group=\"latest\"}";
    let admin = gateway.admin.unwrap();
    scrape_until(admin, 100, Duration::from_millis(50), |text| {
        metric(text, failures) >= 1.0
    })
    .await;
    gateway.reloader.reload().await.unwrap();
    // The new configuration's first lookup fails too: it serves the addresses it took over.
    let mut fresh = Connection::open(gateway.addr, &options).await.unwrap();
    assert_eq!(fetch(&mut fresh).await, (200, FIRST.to_string()));
    let text = scrape_until(admin, 100, Duration::from_millis(50), |text| {
        metric(text, failures) >= 2.0
    })
    .await;
    assert!(metric(&text, failures) >= 2.0, "{text}");
    assert_eq!(fetch(&mut fresh).await, (200, FIRST.to_string()));
    gateway.stop().await;
}

#[test]
fn check_prints_how_upstream_names_are_resolved() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut app = common::apps::ignore_app("127.0.0.1:9".parse().unwrap());
    app["upstream"] = format!("http://{NAME}:8080").into();
    let mut config = serde_json::json!({
        "apps": [app],
        "upstreamDns": { "refreshMs": 3000, "nameservers": ["127.0.0.1:5353", "10.96.0.10"] },
    });
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let output = certgate(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let (stdout, _) = exited(&output, 0);
    assert_says(
        &stdout,
        &[
            &format!("upstreamDns: names=[ignore={NAME}:8080] refresh=3000ms"),
            "nameservers=127.0.0.1:5353,10.96.0.10:53",
        ],
        &[],
    );

    config["upstreamDns"]["nameservers"] = serde_json::json!(["dns.internal:53"]);
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let output = certgate(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let (_, stderr) = exited(&output, 64);
    assert_says(
        &stderr,
        &["upstreamDns.nameservers", "\"dns.internal:53\"", "IP:port"],
        &[],
    );

    config["upstreamDns"] = serde_json::json!({ "refreshMs": 10 });
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let output = certgate(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let (_, stderr) = exited(&output, 64);
    assert_says(
        &stderr,
        &["upstreamDns.refreshMs must be at least 100"],
        &[],
    );
}

#[test]
fn check_prints_no_dns_line_for_an_upstream_dialed_by_address() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let app = common::apps::ignore_app("127.0.0.1:9".parse().unwrap());
    let config = serde_json::json!({ "apps": [app] });
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let output = certgate(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let (stdout, _) = exited(&output, 0);
    assert_says(&stdout, &[], &["upstreamDns"]);
}

#[test]
fn explain_shows_how_an_upstream_name_is_resolved() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut app = common::app(
        "require",
        &["require.example.test"],
        "127.0.0.1:9".parse().unwrap(),
        "require",
    );
    app["upstream"] = format!("http://{NAME}:8080").into();
    app["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    let config = serde_json::json!({
        "apps": [app],
        "upstreamDns": { "refreshMs": 3000, "nameservers": ["127.0.0.1:5353"] },
    });
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let alice = pki.client_ca.issue(LeafSpec::client("alice"));
    dir.write("alice.pem", alice.chain_pem());
    let args = ["explain", "--config", "certgate.json", "--app", "require"];
    let json = certgate(
        &[&args[..], &["--format", "json", "alice.pem"]].concat(),
        dir.path(),
        &[],
    );
    let (stdout, _) = exited(&json, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json["upstream"]["dns"],
        serde_json::json!({
            "name": NAME,
            "refresh_ms": 3000,
            "min_refresh_ms": 1000,
            "nameservers": "127.0.0.1:5353",
        })
    );
    let text = certgate(&[&args[..], &["alice.pem"]].concat(), dir.path(), &[]);
    let (stdout, _) = exited(&text, 0);
    assert_says(
        &stdout,
        &[&format!(
            "dns:        {NAME} resolved every 3000 ms at most (sooner by TTL, not under 1000 ms) via 127.0.0.1:5353"
        )],
        &[],
    );
}
