//! `certgate demo`: a development PKI in `certs/`, a built-in echo upstream on loopback, and
//! one app per client-certificate mode (`require.localhost`, `accept.localhost`,
//! `ignore.localhost`), with the curl commands that show what each mode does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::apps::build::LoadedConfig;
use crate::config::file::FileConfig;
use crate::config::{Config, ConfigError};
use crate::{RunError, Server};

/// Where the demo keeps its PKI, relative to the working directory.
pub const CERTS_DIR: &str = "certs";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create the development PKI")]
    Pki(#[from] crate::pki::PkiError),
    #[error(
        "{} holds an incomplete development PKI (missing {missing}); recreate it with `certgate pki init {} --force`",
        dir.display(),
        dir.display()
    )]
    IncompletePki { dir: PathBuf, missing: String },
    #[error("cannot start the echo upstream")]
    Upstream(#[source] std::io::Error),
    #[error("invalid demo configuration")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs the demo until `shutdown` completes, stopping as it says (see [`crate::Stop`]).
pub async fn run<S: Into<crate::Stop>>(
    listen: SocketAddr,
    shutdown: impl Future<Output = S>,
) -> Result<(), DemoError> {
    let certs = PathBuf::from(CERTS_DIR);
    let missing: Vec<&str> = crate::pki::FILES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !certs.join(name).exists())
        .collect();
    if missing.len() == crate::pki::FILES.len() {
        let written = crate::pki::init(&certs, false)?;
        println!(
            "Created a development PKI ({} files) in {}/",
            written.len(),
            certs.display()
        );
    } else if !missing.is_empty() {
        return Err(DemoError::IncompletePki {
            dir: certs,
            missing: missing.join(", "),
        });
    }
    let upstream = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DemoError::Upstream)?;
    let upstream_addr = upstream.local_addr().map_err(DemoError::Upstream)?;
    tokio::spawn(serve_echo(upstream));

    let config = Config::from_file(demo_config(listen, upstream_addr)?, &certs)?;
    let config = LoadedConfig::build(config).await?;
    let server = Server::bind(&config, None, 0).await?;
    print_tour(server.local_addr().port(), &certs, &program());
    server.run(shutdown).await?;
    Ok(())
}

fn demo_config(listen: SocketAddr, upstream: SocketAddr) -> Result<FileConfig, ConfigError> {
    let app = |mode: &str| {
        let mut app = serde_json::json!({
            "name": mode,
            "hosts": [format!("{mode}.localhost")],
            "upstream": format!("http://{upstream}"),
            "serverCertificate": { "certFile": "server.pem", "keyFile": "server.key" },
            "ingress": { "clientCertificateMode": mode },
        });
        if mode != "ignore" {
            app["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["ca.pem"] });
            app["forwardClientCert"] = serde_json::json!({
                "fields": ["Hash", "Cert", "Chain", "Subject", "URI", "DNS"]
            });
        }
        app
    };
    let json = serde_json::json!({
        "listen": listen.to_string(),
        "apps": [app("require"), app("accept"), app("ignore")],
        // No balancer in front of a laptop: Ctrl-C stops at once.
        "timeouts": { "drainDelayMs": 0 },
    });
    serde_json::from_value(json).map_err(|source| ConfigError::Json {
        path: PathBuf::from("<demo>"),
        source,
    })
}

/// The tour the demo prints: a curl command per case, each refusal with the TLS alert the
/// client sees and the reason certgate logs (README "Try it in one minute" shows the same);
/// `program` is how the printed certgate commands start.
pub fn tour(port: u16, certs: &Path, program: &str) -> String {
    let dir = certs.display();
    let ca = format!("--cacert {dir}/ca.pem");
    let pem = format!("--cert {dir}/client.pem --key {dir}/client.key");
    let p12 =
        format!("--cert-type P12 --cert {dir}/client.p12:\"$(cat {dir}/client.p12.password)\"");
    let url = |mode: &str| format!("https://{mode}.localhost:{port}/hello");
    format!(
        "# require: a client certificate is needed; the app sees it in X-Forwarded-Client-Cert\n\
         curl {ca} {pem} {require}\n\
         curl {ca} {p12} {require}\n\
         \n# require without a certificate: the handshake is refused\n\
         #   curl shows the TLS alert \"certificate required\"; certgate logs failure=no_certificate\n\
         curl {ca} {require}\n\
         \n# require with a certificate from a CA certgate does not trust: the handshake is refused\n\
         #   curl shows the TLS alert \"unknown ca\"; certgate logs failure=unknown_issuer\n\
         curl {ca} --cert {dir}/untrusted-client.pem --key {dir}/untrusted-client.key {require}\n\
         #   certgate explain says why, with the same check the handshake runs:\n\
         {program} explain --client-ca {dir}/ca.pem {dir}/untrusted-client.pem\n\
         \n# accept: served either way; X-Forwarded-Client-Cert only when a certificate was sent\n\
         curl {ca} {accept}\n\
         curl {ca} {pem} {accept}\n\
         \n# ignore: no certificate is asked for, none is forwarded\n\
         curl {ca} {pem} {ignore}\n\
         \n# a forged X-Forwarded-Client-Cert never reaches the app\n\
         curl {ca} -H 'X-Forwarded-Client-Cert: Hash=forged' {ignore}\n",
        require = url("require"),
        accept = url("accept"),
        ignore = url("ignore"),
    )
}

fn print_tour(port: u16, certs: &Path, program: &str) {
    let install = match program {
        "certgate" => "",
        _ => "(certgate is not on PATH: `cargo install --path . --locked` puts it there)\n",
    };
    println!(
        "\ncertgate demo is serving on 127.0.0.1:{port}. The echo app answers with the request it got.\n\n{}\n{install}Press Ctrl-C to stop.",
        tour(port, certs, program)
    );
}

/// How to run this binary from where the demo was started: `certgate` when that name on
/// PATH is this binary, else its path (relative when it is below the current folder, as
/// `target/release/certgate` is after `cargo run --release`).
fn program() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "certgate".to_owned();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .filter_map(|dir| std::fs::canonicalize(dir.join("certgate")).ok())
            .next()
            .is_some_and(|found| found == exe)
    });
    if on_path {
        return "certgate".to_owned();
    }
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf));
    let path = relative.unwrap_or(exe).display().to_string();
    if path.contains(|c: char| c.is_whitespace() || c == '\'') {
        format!("'{}'", path.replace('\'', "'\\''"))
    } else {
        path
    }
}

/// Serves the echo app: every request is answered with its method, path and headers as
/// pretty JSON, so the forwarded client certificate is visible.
pub async fn serve_echo(listener: TcpListener) {
    loop {
        let (tcp, _) = crate::accept::next(&listener, "demo upstream").await;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(echo);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers = serde_json::Map::new();
    for (name, value) in request.headers() {
        let value = serde_json::Value::from(String::from_utf8_lossy(value.as_bytes()));
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::Array(values)) => values.push(value),
            Some(first) => *first = serde_json::Value::Array(vec![first.take(), value]),
            None => {
                headers.insert(name.as_str().to_owned(), value);
            }
        }
    }
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
    });
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
