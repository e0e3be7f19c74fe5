//! Upstream endpoints for the balancing tests (groups, endpoints, health checks, sticky
//! sessions, the admin's `/upstreams`): apps on loopback ports that answer every request with
//! their name, which can be killed, made to reset, or made to fail their health checks; the
//! one-app config they sit behind, and certgate in front of one group whose address set a
//! test holds (what a DNS resolver would send).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{ClientOptions, Connection, Gateway, Pki, TempDir, app};

/// The host of the one app of `config`.
pub const HOST: &str = "api.example.test";
/// The path a `Named` app answers as its health check.
pub const HEALTH_PATH: &str = "/healthz";

/// A test upstream (HTTP/1.1 and h2c) that answers every request with its name, counting
/// them by method; `/delay/<ms>` answers after that long; `HEALTH_PATH` answers 200, or 503
/// while `sick`, and is counted apart. Dropping it, or `kill`, stops it and resets what it
/// has open.
pub struct Named {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    /// While set, `HEALTH_PATH` answers 503.
    pub sick: Arc<AtomicBool>,
    /// The health checks it got, and those of them that came over HTTP/2.
    pub checks: Arc<AtomicUsize>,
    pub h2_checks: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Named {
    pub async fn start(name: &'static str) -> Self {
        Self::serve(name, false).await
    }

    /// Three apps, `a`, `b` and `c`: a group's endpoints.
    pub async fn three() -> [Self; 3] {
        [
            Self::start("a").await,
            Self::start("b").await,
            Self::start("c").await,
        ]
    }

    /// One that reads each request and then closes the connection without an answer.
    pub async fn resetting(name: &'static str) -> Self {
        Self::serve(name, true).await
    }

    async fn serve(name: &'static str, reset: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State {
            name,
            reset,
            counts: Arc::default(),
            sick: Arc::default(),
            checks: Arc::default(),
            h2_checks: Arc::default(),
        };
        let named = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { state.answer(request).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            counts: named.counts,
            sick: named.sick,
            checks: named.checks,
            h2_checks: named.h2_checks,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests it got with `method`, health checks left out.
    pub fn count(&self, method: &str) -> usize {
        self.counts
            .lock()
            .unwrap()
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Stops listening and resets every open connection.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a `Named` app's connections share.
#[derive(Clone)]
struct State {
    name: &'static str,
    reset: bool,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    sick: Arc<AtomicBool>,
    checks: Arc<AtomicUsize>,
    h2_checks: Arc<AtomicUsize>,
}

impl State {
    async fn answer(
        &self,
        request: http::Request<Incoming>,
    ) -> Result<http::Response<Full<Bytes>>, &'static str> {
        let path = request.uri().path().to_owned();
        let mut response = http::Response::new(Full::new(Bytes::from_static(self.name.as_bytes())));
        if path == HEALTH_PATH {
            self.checks.fetch_add(1, Ordering::Relaxed);
            if request.version() == http::Version::HTTP_2 {
                self.h2_checks.fetch_add(1, Ordering::Relaxed);
            }
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(request.headers()["user-agent"], "certgate-health-check");
            if self.sick.load(Ordering::Relaxed) {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            return Ok(response);
        }
        *self
            .counts
            .lock()
            .unwrap()
            .entry(request.method().to_string())
            .or_default() += 1;
        let _ = request.into_body().collect().await;
        if self.reset {
            return Err("reset");
        }
        if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(response)
    }
}

/// An `ignore` app `api` at `HOST` with `upstream`, an admin listener, and `extra` merged in.
pub fn config(upstream: &str, extra: Value) -> Value {
    let mut entry = app("api", &[HOST], "127.0.0.1:9".parse().unwrap(), "ignore");
    entry["upstream"] = upstream.into();
    for (key, value) in extra.as_object().unwrap() {
        entry[key] = value.clone();
    }
    json!({ "admin": "127.0.0.1:0", "apps": [entry] })
}

/// `config` for `latest` with the revision `api--old` at `old` taking `old_weight` of the
/// requests.
pub fn split_config(latest: &Named, old: &Named, old_weight: u32) -> Value {
    config(
        &latest.url(),
        json!({
            "revisions": { "api--old": old.url() },
            "ingress": {
                "clientCertificateMode": "ignore",
                "traffic": [
                    { "weight": 100 - old_weight, "latestRevision": true },
                    { "weight": old_weight, "revisionName": "api--old" }
                ]
            }
        }),
    )
}

/// The flags of a sidecar serving in `ignore` mode with the server certificate `Pki::write` writes.
pub const SERVING_FLAGS: [&str; 6] = [
    "--cert",
    "server.pem",
    "--key",
    "server.key",
    "--client-cert-mode",
    "ignore",
];

/// certgate as a sidecar (`run` with flags) in front of `a` and `b` (`--upstream` twice),
/// serving `HOST` in `ignore` mode with the PKI written to `dir`, plus `extra` flags.
pub fn sidecar_in_front(
    dir: &TempDir,
    a: &Named,
    b: &Named,
    extra: &[&str],
) -> crate::process::Child {
    let (a_url, b_url) = (a.url(), b.url());
    let mut args = vec![
        "--log-format",
        "json",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &a_url,
        "--upstream",
        &b_url,
    ];
    args.extend_from_slice(&SERVING_FLAGS);
    args.extend_from_slice(extra);
    crate::process::Child::spawn(&args, dir.path(), &[])
}

/// Writes `next` as `gateway`'s config (on its listener and without drain delay) and reloads.
pub async fn reload_with(gateway: &Gateway, mut next: Value) {
    next["listen"] = "127.0.0.1:0".into();
    next["timeouts"] = json!({ "drainDelayMs": 0 });
    gateway
        .dir
        .write("certgate.json", serde_json::to_vec(&next).unwrap());
    gateway.reloader.reload().await.unwrap();
}

/// A group's address set, as a DNS source sends it.
pub type AddressSet = Arc<[SocketAddr]>;

/// The address set of a group, fixed at `apps`' addresses: the sender keeps it open.
pub fn addresses_of(apps: &[Named]) -> (watch::Sender<AddressSet>, watch::Receiver<AddressSet>) {
    watch::channel(Arc::from(
        apps.iter().map(|app| app.addr).collect::<Vec<_>>(),
    ))
}

/// certgate serving `config` with its app's one group following `addresses` (what a DNS
/// source would send), and the PKI it was started with.
pub async fn group_gateway(
    config: Value,
    addresses: watch::Receiver<AddressSet>,
) -> (Gateway, Pki) {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let gateway = Gateway::start_edited(dir, config, 0, move |loaded| {
        let app = Arc::get_mut(&mut loaded.apps[0]).unwrap();
        app.groups[0].addresses = addresses;
    })
    .await;
    (gateway, pki)
}

/// Sends `count` GETs for `path` to `HOST` on one connection (a new one when certgate closed
/// it); the bodies' tally, and how many failed.
pub async fn tally(
    gateway: &Gateway,
    pki: &Pki,
    path: &str,
    count: usize,
) -> (HashMap<String, usize>, usize) {
    let options = ClientOptions::new(pki, HOST);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let mut bodies: HashMap<String, usize> = HashMap::new();
    let mut failed = 0;
    for _ in 0..count {
        let request = conn.get(HOST, path);
        match conn.send(request).await {
            Ok(reply) if reply.status == StatusCode::OK => {
                *bodies
                    .entry(String::from_utf8_lossy(&reply.body).into_owned())
                    .or_default() += 1;
            }
            _ => {
                failed += 1;
                if !conn.is_open() {
                    conn = Connection::open(gateway.addr, &options).await.unwrap();
                }
            }
        }
    }
    (bodies, failed)
}

/// Clients sending GETs for `path` to `HOST`, one after the other on a connection each,
/// until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` clients of certgate at `addr`.
    pub fn start(addr: SocketAddr, pki: &Pki, clients: usize, path: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (options, stop, failed) =
                    (ClientOptions::new(pki, HOST), stop.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut conn = Connection::open(addr, &options).await.unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        let request = conn.get(HOST, path);
                        match conn.send(request).await {
                            Ok(reply) if reply.status == StatusCode::OK => {}
                            _ => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                if !conn.is_open() {
                                    conn = Connection::open(addr, &options).await.unwrap();
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            failed,
            tasks,
        }
    }

    /// Stops every client after its request in flight; how many requests failed.
    pub async fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.failed.load(Ordering::SeqCst)
    }
}
