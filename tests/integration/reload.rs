//! Hot reload (docs/operations.md):
//! - clients sending continuously while the CA bundle and the server certificate are swapped
//!   dozens of times, by reload call (what SIGHUP runs) and by file change: no failed request;
//! - a broken file keeps the running config and counts `result="error"`;
//! - open connections close once a reload replaced their config; new ones get the new one;
//! - a real SIGHUP reloads (the binary's: this process runs other tests' gateways);
//! - a Kubernetes Secret update (the kubelet's `..data` symlink swap) is picked up by itself;
//! - the reload line names the apps added, removed and changed (a rewritten CA file changes
//!   the app that loads it) and the files whose content changed, and no unchanged app.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::polling::{poll, scrape_until, until};
use common::*;

const RELOAD_OK: &str = r#"certgate_reloads_total{result="success"}"#;
const RELOAD_ERROR: &str = r#"certgate_reloads_total{result="error"}"#;
const CLOSED_BY_RELOAD: &str = "certgate_reload_closed_connections_total";

/// Writes through a temporary file and `rename`, as atomic writers and Kubernetes do.
fn write_atomically(dir: &TempDir, name: &str, contents: &str) {
    let tmp = dir.path().join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dir.path().join(name)).unwrap();
}

/// The server certificate and key in one PEM file, so one write swaps both.
fn server_bundle(leaf: &Leaf) -> String {
    format!("{}{}", leaf.pem, leaf.key.serialize_pem())
}

/// A folder with the bundles and a config that names them: a `require` app in front of
/// `upstream`, and an admin listener.
fn reload_files(pki: &Pki, upstream: std::net::SocketAddr) -> (TempDir, serde_json::Value) {
    let dir = TempDir::new();
    dir.write("server-bundle.pem", server_bundle(&pki.server));
    dir.write("ca-bundle.pem", &pki.client_ca.pem);
    let mut app = app("require", &["require.example.test"], upstream, "require");
    app["serverCertificate"] =
        serde_json::json!({ "certFile": "server-bundle.pem", "keyFile": "server-bundle.pem" });
    app["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["ca-bundle.pem"] });
    let config = serde_json::json!({ "admin": "127.0.0.1:0", "apps": [app] });
    (dir, config)
}

async fn reload_gateway(pki: &Pki, upstream: std::net::SocketAddr) -> Gateway {
    let (dir, config) = reload_files(pki, upstream);
    Gateway::start(dir, config).await
}

/// Waits (bounded) until `series` in the metrics reaches `at_least`.
async fn wait_for_metric(admin: std::net::SocketAddr, series: &str, at_least: f64) {
    let reached = |text: &str| metric_value(text, series).is_some_and(|value| value >= at_least);
    let text = scrape_until(admin, 200, Duration::from_millis(50), reached).await;
    assert!(reached(&text), "{series} never reached {at_least}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_ca_bundle_and_server_certificate_under_load_fails_no_request() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let gateway = reload_gateway(&pki, upstream).await;
    let admin = gateway.admin.unwrap();
    let client = pki.client("steady client");
    let options = ClientOptions::new(&pki, "require.example.test").with_identity(client.identity());
    let other_server = pki.server_ca.issue(LeafSpec::server());
    let other_ca = Ca::root("another client CA");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let reopened = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for worker in 0..4 {
        let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
        let reopened = reopened.clone();
        let options = options.clone().http2(worker % 2 == 1);
        let addr = gateway.addr;
        clients.push(tokio::spawn(async move {
            // Workers 0 and 1 open a connection per request; 2 and 3 keep theirs alive.
            let mut kept: Option<Connection> = None;
            while !stop.load(Ordering::Relaxed) {
                let result = if worker < 2 {
                    get(addr, &options, "require.example.test", "/load").await
                } else {
                    // A reload closes kept connections between requests: like curl and
                    // browsers, a client reconnects when its kept connection was closed
                    // before a request went out (RFC 9112 section 9.3.1 also lets it retry
                    // an idempotent request the closing connection never answered).
                    let mut result = None;
                    for _ in 0..2 {
                        if kept.as_ref().is_none_or(|conn| !conn.is_open()) {
                            if kept.is_some() {
                                reopened.fetch_add(1, Ordering::Relaxed);
                            }
                            kept = Some(Connection::open(addr, &options).await.unwrap());
                        }
                        let conn = kept.as_mut().unwrap();
                        let request = conn.get("require.example.test", "/load");
                        let sent = conn.send(request).await;
                        let closed_unanswered = sent
                            .as_ref()
                            .is_err_and(|failure| failure.closed_unanswered());
                        result = Some(sent);
                        if !closed_unanswered {
                            break;
                        }
                        reopened.fetch_add(1, Ordering::Relaxed);
                        kept = None;
                    }
                    result.unwrap()
                };
                sent.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(reply) if reply.status == 200 && reply.xfcc().is_some() => {}
                    Ok(reply) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", reply.status)),
                    Err(failure) => failures
                        .lock()
                        .unwrap()
                        .push(format!("worker {worker}: {}", failure.message)),
                }
            }
        }));
    }

    let servers = [&pki.server, &other_server];
    let bundles = [
        pki.client_ca.pem.clone(),
        format!("{}{}", pki.client_ca.pem, other_ca.pem),
    ];
    let mut expected_reloads = 0.0;
    for round in 0..30 {
        write_atomically(
            &gateway.dir,
            "server-bundle.pem",
            &server_bundle(servers[round % 2]),
        );
        if round % 3 == 0 {
            // In place, as an editor or `cp` does.
            gateway.dir.write("ca-bundle.pem", &bundles[round % 2]);
        } else {
            write_atomically(&gateway.dir, "ca-bundle.pem", &bundles[round % 2]);
        }
        if round % 2 == 0 {
            gateway.reloader.reload().await.unwrap();
            expected_reloads += 1.0;
        } else {
            // The file watcher (or its poll) picks the change up by itself.
            expected_reloads += 1.0;
            wait_for_metric(admin, RELOAD_OK, expected_reloads).await;
            expected_reloads = metric(&scrape(admin).await, RELOAD_OK);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failed requests during reloads: {failures:?}"
    );
    assert!(
        sent.load(Ordering::Relaxed) >= 60,
        "too few requests to mean anything"
    );
    assert!(metric(&scrape(admin).await, RELOAD_OK) >= 30.0);
    // The kept connections were closed by the reloads, between requests.
    assert!(
        reopened.load(Ordering::Relaxed) >= 10,
        "the reloads closed no kept connection"
    );
    assert!(metric(&scrape(admin).await, CLOSED_BY_RELOAD) >= 10.0);

    // The last swap installed `other_server` (round 29 is odd) and was left to the watcher:
    // new connections soon present it.
    let presented = poll(
        100,
        Duration::from_millis(50),
        async || {
            let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(&pki, &client)))
                .connect("require.example.test".try_into().unwrap(), tcp)
                .await
                .unwrap();
            tls.get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain[0].clone())
        },
        |presented| presented.as_ref() == Some(&other_server.chain[0]),
    )
    .await;
    assert_eq!(presented.as_ref(), Some(&other_server.chain[0]));
    gateway.stop().await;
}

fn client_config(pki: &Pki, client: &Leaf) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.server_ca.der.clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(client.chain.clone(), client.key_der())
    .unwrap()
}

#[tokio::test]
async fn broken_ca_file_keeps_the_running_config_and_counts_an_error() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let gateway = reload_gateway(&pki, upstream).await;
    let admin = gateway.admin.unwrap();
    let options = ClientOptions::new(&pki, "require.example.test")
        .with_identity(pki.client("client").identity());

    gateway.dir.write(
        "ca-bundle.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    assert!(gateway.reloader.reload().await.is_err());
    wait_for_metric(admin, RELOAD_ERROR, 1.0).await;
    let reply = get(gateway.addr, &options, "require.example.test", "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.xfcc().is_some());
    gateway.stop().await;
}

#[tokio::test]
async fn open_connections_close_after_a_reload_and_new_ones_get_the_new_config() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let gateway = reload_gateway(&pki, upstream).await;
    let client = pki.client("client");
    let options = ClientOptions::new(&pki, "require.example.test").with_identity(client.identity());
    let mut open = Connection::open(gateway.addr, &options).await.unwrap();
    let request = open.get("require.example.test", "/before");
    assert_eq!(open.send(request).await.unwrap().status, 200);

    // Trust moves to another CA: the client's CA is no longer trusted.
    write_atomically(
        &gateway.dir,
        "ca-bundle.pem",
        &Ca::root("replacement CA").pem,
    );
    gateway.reloader.reload().await.unwrap();

    let refused = get(gateway.addr, &options, "require.example.test", "/").await;
    assert!(
        refused.is_err(),
        "a new connection was served under the old trust"
    );
    let Sender::Http1(sender) = &mut open.sender else {
        unreachable!("an HTTP/1.1 connection")
    };
    let closed = tokio::time::timeout(Duration::from_secs(5), sender.ready()).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the open connection stayed open under the replaced trust"
    );
    gateway.stop().await;
}

/// On the real binary: a SIGHUP to this test process would reload every in-process gateway of
/// the tests running beside it.
#[tokio::test]
async fn sighup_reloads_the_config() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let (dir, mut config) = reload_files(&pki, upstream);
    config["listen"] = "127.0.0.1:0".into();
    let (child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    let admin = serving.admin();
    // The watcher installs its handler once serving; a SIGHUP before that would end certgate.
    assert!(
        until(400, Duration::from_millis(25), || catches_sighup(
            child.id()
        ))
        .await,
        "certgate installed no SIGHUP handler\n{}",
        child.transcript()
    );
    let before = metric(&scrape(admin).await, RELOAD_OK);
    child.signal("HUP");
    wait_for_metric(admin, RELOAD_OK, before + 1.0).await;
}

/// Whether process `pid` catches SIGHUP: bit 0 of `SigCgt` in `/proc/<pid>/status`.
fn catches_sighup(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let mask = status
                .lines()
                .find_map(|line| line.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & 1 != 0)
}

/// Lays out `files` the way the kubelet mounts a Secret: the real files in a timestamped
/// folder, `..data` a symlink to it, and each visible name a symlink through `..data`.
fn kubernetes_secret_generation(dir: &std::path::Path, generation: u32, files: &[(&str, String)]) {
    use std::os::unix::fs::symlink;
    let folder = format!("..2026_11_22_{generation:02}");
    std::fs::create_dir_all(dir.join(&folder)).unwrap();
    for (name, contents) in files {
        std::fs::write(dir.join(&folder).join(name), contents).unwrap();
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    // The kubelet swaps `..data` atomically: a new link, renamed over the old one.
    let tmp = dir.join("..data_tmp");
    symlink(&folder, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn kubernetes_secret_update_is_picked_up_without_a_restart() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    let secret = dir.path().join("tls");
    let first = [
        ("server-bundle.pem", server_bundle(&pki.server)),
        ("ca.pem", pki.client_ca.pem.clone()),
    ];
    kubernetes_secret_generation(&secret, 1, &first);
    let mut app = app("require", &["require.example.test"], upstream, "require");
    app["serverCertificate"] = serde_json::json!({
        "certFile": "tls/server-bundle.pem", "keyFile": "tls/server-bundle.pem"
    });
    app["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["tls/ca.pem"] });
    let gateway = Gateway::start(
        dir,
        serde_json::json!({ "admin": "127.0.0.1:0", "apps": [app] }),
    )
    .await;
    let admin = gateway.admin.unwrap();
    let old_client = ClientOptions::new(&pki, "require.example.test")
        .with_identity(pki.client("old partner").identity());
    assert!(
        get(gateway.addr, &old_client, "require.example.test", "/")
            .await
            .is_ok()
    );

    // The Secret now trusts another CA only, and carries a new server certificate.
    let new_ca = Ca::root("rotated client CA");
    let new_server = pki.server_ca.issue(LeafSpec::server());
    let second = [
        ("server-bundle.pem", server_bundle(&new_server)),
        ("ca.pem", new_ca.pem.clone()),
    ];
    kubernetes_secret_generation(&gateway.dir.path().join("tls"), 2, &second);
    wait_for_metric(admin, RELOAD_OK, 1.0).await;

    assert!(
        get(gateway.addr, &old_client, "require.example.test", "/")
            .await
            .is_err(),
        "the rotated-out CA is still trusted"
    );
    let new_client = ClientOptions::new(&pki, "require.example.test")
        .with_identity(new_ca.issue(LeafSpec::client("new partner")).identity());
    let reply = get(gateway.addr, &new_client, "require.example.test", "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    gateway.stop().await;
}

/// The `configuration reloaded` lines of `child` (JSON) until `done` holds for the lines so far.
fn reload_lines(
    child: &mut process::Child,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut reloads = Vec::new();
    while !done(&reloads) {
        let lines = child.wait_for_line(process::Stream::Stderr, |line| {
            line.contains("configuration reloaded") || line.contains("reload failed")
        });
        let line: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert!(
            line["message"]
                .as_str()
                .unwrap()
                .contains("configuration reloaded"),
            "{line}"
        );
        reloads.push(line);
    }
    reloads
}

/// The names a list field of the reload lines holds, over every line.
fn listed(reloads: &[serde_json::Value], field: &str) -> std::collections::BTreeSet<String> {
    reloads
        .iter()
        .filter_map(|line| line[field].as_str())
        .flat_map(|list| list.split(','))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_reload_line_names_the_apps_added_removed_and_changed_and_the_files_that_changed() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("c-ca.pem", &pki.client_ca.pem);
    let trusting = |name: &str, ca: &str| {
        let mut entry = app(
            name,
            &[&format!("{name}.example.test")],
            upstream,
            "require",
        );
        entry["clientAuth"] = serde_json::json!({ "trustedCaFiles": [ca] });
        entry
    };
    let config = |names: &[&str]| {
        let apps: Vec<serde_json::Value> = names
            .iter()
            .map(|name| {
                trusting(
                    name,
                    if *name == "c" {
                        "c-ca.pem"
                    } else {
                        "client-ca.pem"
                    },
                )
            })
            .collect();
        serde_json::json!({ "listen": "127.0.0.1:0", "apps": apps })
    };
    let (mut child, _) = process::Child::run_config(dir.path(), &config(&["a", "b", "c"]), &[]);
    // The reload task takes its first look at the files before it installs its SIGHUP
    // handler: a write before that look would be taken as the starting state.
    assert!(
        until(400, Duration::from_millis(25), || catches_sighup(
            child.id()
        ))
        .await,
        "certgate's reload task did not start\n{}",
        child.transcript()
    );

    // One change of each kind: `a` goes, `d` comes, `c`'s CA file is rewritten, `b` stays.
    write_atomically(&dir, "c-ca.pem", &Ca::root("rotated client CA").pem);
    write_atomically(&dir, "certgate.json", &config(&["b", "c", "d"]).to_string());
    // The watcher may see the two writes in one reload or in two: the lines together say it.
    let complete = |reloads: &[serde_json::Value]| {
        listed(reloads, "changed").contains("c") && listed(reloads, "added").contains("d")
    };
    let reloads = reload_lines(&mut child, complete);
    assert_eq!(reloads.last().unwrap()["apps"], 3, "{reloads:?}");
    let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect();
    assert_eq!(listed(&reloads, "added"), names(&["d"]), "{reloads:?}");
    assert_eq!(listed(&reloads, "removed"), names(&["a"]), "{reloads:?}");
    assert_eq!(listed(&reloads, "changed"), names(&["c"]), "{reloads:?}");
    let files = listed(&reloads, "files_changed");
    let file_names: std::collections::BTreeSet<String> = files
        .iter()
        .map(|path| {
            let path = std::path::Path::new(path);
            path.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(
        file_names,
        names(&["c-ca.pem", "certgate.json"]),
        "{reloads:?}"
    );
    for line in &reloads {
        assert!(line["generation"].as_u64().is_some(), "{line}");
        assert!(line["closing"].as_u64().is_some(), "{line}");
    }
}
