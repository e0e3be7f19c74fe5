//! The gateway under test: certgate started in-process on 127.0.0.1:0 from a JSON config,
//! the app entries tests put in that config, and its admin `/metrics` and `/upstreams` read
//! back.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::TempDir;

/// An app entry for a test config, with the server certificate of `Pki::write`.
pub fn app(name: &str, hosts: &[&str], upstream: SocketAddr, mode: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "hosts": hosts,
        "upstream": format!("http://{upstream}"),
        "serverCertificate": { "certFile": "server.pem", "keyFile": "server.key" },
        "ingress": { "clientCertificateMode": mode },
    })
}

/// A `require` app trusting the client CA of `Pki::write` at `require.example.test`, and an
/// `ignore` app at `ignore.example.test`, both in front of `upstream`.
pub fn require_and_ignore(upstream: SocketAddr) -> [serde_json::Value; 2] {
    let mut require = app("require", &["require.example.test"], upstream, "require");
    require["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    [
        require,
        app("ignore", &["ignore.example.test"], upstream, "ignore"),
    ]
}

/// certgate running in-process on 127.0.0.1:0.
pub struct Gateway {
    pub addr: SocketAddr,
    /// The admin listener, when the config has `admin`.
    pub admin: Option<SocketAddr>,
    /// The plain-HTTP listener, when the config has `listenHttp`.
    pub http: Option<SocketAddr>,
    /// Reloads the config file, as SIGHUP does.
    pub reloader: certgate::Reloader,
    pub dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Writes `config` (its `listen` forced to 127.0.0.1:0) as `certgate.json` in `dir`,
    /// loads it the way `certgate run --config` does, and serves it on the test's runtime.
    pub async fn start(dir: TempDir, config: serde_json::Value) -> Self {
        Self::start_with_workers(dir, config, 0).await
    }

    /// As `start`, served on `workers` threads of their own as `certgate run` does (0: on the
    /// test's runtime).
    pub async fn start_with_workers(
        dir: TempDir,
        config: serde_json::Value,
        workers: usize,
    ) -> Self {
        Self::start_edited(dir, config, workers, |_| {}).await
    }

    /// As `start_with_workers`, with `edit` applied to the config as loaded before it is
    /// served (e.g. to hand a group the address set of a test's own source).
    pub async fn start_edited(
        dir: TempDir,
        mut config: serde_json::Value,
        workers: usize,
        edit: impl FnOnce(&mut certgate::LoadedConfig),
    ) -> Self {
        config["listen"] = "127.0.0.1:0".into();
        // No balancer in front: `stop` drains at once unless a test asks for a delay.
        if config["timeouts"]["drainDelayMs"].is_null() {
            config["timeouts"]["drainDelayMs"] = 0.into();
        }
        let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
        let mut config = certgate::LoadedConfig::load(&path)
            .await
            .unwrap_or_else(|e| panic!("config refused: {}", certgate::error_chain(&e)));
        edit(&mut config);
        let source: certgate::ConfigSource = Arc::new(move || {
            let path = path.clone();
            Box::pin(async move { certgate::LoadedConfig::load(&path).await })
        });
        let server = certgate::Server::bind(&config, Some(source), workers)
            .await
            .unwrap();
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let http = server.http_addr();
        let reloader = server.reloader();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            admin,
            http,
            reloader,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// The admin listener's `/metrics` text.
pub async fn scrape(admin: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text
}

/// The admin listener's `GET /upstreams`, parsed: panics unless it answers 200 with JSON.
pub async fn upstreams(admin: SocketAddr) -> serde_json::Value {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    tcp.write_all(b"GET /upstreams HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

/// The value of one series in scraped metrics text, e.g.
/// `metric(&text, r#"certgate_reloads_total{result="error"}"#)`; panics, naming the series,
/// when it is absent, so a test expecting 0 cannot pass on a series that is gone.
pub fn metric(text: &str, series: &str) -> f64 {
    metric_value(text, series)
        .unwrap_or_else(|| panic!("no series {series} in the metrics:\n{text}"))
}

/// The value of one series, `None` when absent: for waiting until a series appears.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The validated config of `load_generation`: refused when `certgate run` would refuse it.
pub fn load_config(path: &std::path::Path) -> Result<certgate::Config, certgate::ConfigError> {
    load_generation(path).map(|loaded| loaded.config)
}

/// `LoadedConfig::load` for a synchronous test, on a runtime of its own (loading fetches the
/// `crlUrls` on the caller's runtime).
pub fn load_generation(
    path: &std::path::Path,
) -> Result<certgate::LoadedConfig, certgate::ConfigError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test")
        .block_on(certgate::LoadedConfig::load(path))
}
