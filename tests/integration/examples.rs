//! The shipped examples work: every `config/*.json` loads against a fresh `certgate pki init`,
//! `certgate check` accepts them, the Kubernetes sidecar's environment starts a working
//! certgate, the Dockerfile's command parses, `certs/README.md` describes what `pki init`
//! writes; and PKCS#12 server certificates (`pkcs12File` with `passwordFile` or `passwordEnv`)
//! serve real mTLS handshakes through the config file.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use certgate::Config;
use certgate::{ClientCertMode, Limits, Timeouts};
use common::{ClientOptions, Gateway, Identity, Pki, TempDir, get, tools};
use process::{Child, Stream};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

/// Every `config/*.json`, by file name.
fn example_configs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo("config"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The repository layout in a temp dir: `config/<name>` copied from the repo and `certs/`
/// written by `pki::init`, so the example's `../certs/…` paths resolve.
fn layout(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    certgate::pki::init(&dir.path().join("certs"), false).unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let config = dir.path().join("config").join(name);
    std::fs::copy(repo("config").join(name), &config).unwrap();
    (dir, config)
}

/// The ```sh blocks of a Markdown file.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + "```sh\n".len()..];
        let end = body.find("```").expect("an unterminated code block");
        blocks.push(body[..end].to_owned());
        rest = &body[end..];
        rest = &rest[3..];
    }
    blocks
}

/// Runs the `certs/README.md` recipe that makes `certs/server.p12` and
/// `certs/server.p12.password` (for `config/pkcs12.json`) in `root`. False when openssl is
/// not installed.
fn make_server_p12(root: &Path) -> bool {
    if !tools::openssl() {
        return false;
    }
    let readme = std::fs::read_to_string(repo("certs/README.md")).unwrap();
    let recipe = sh_blocks(&readme)
        .into_iter()
        .find(|block| block.contains("openssl pkcs12 -export"))
        .expect("certs/README.md shows how to make certs/server.p12");
    let script: String = recipe
        .lines()
        .filter(|line| !line.trim_start().starts_with("cargo "))
        .map(|line| format!("{line}\n"))
        .collect();
    let output = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the certs/README.md recipe failed:\n{script}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

fn load(path: &Path) -> Config {
    common::load_config(path).unwrap_or_else(|e| {
        panic!(
            "{} was refused: {}",
            path.display(),
            certgate::error_chain(&e)
        )
    })
}

fn first_certificate(pem_file: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(pem_file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    common::hex(&Sha256::digest(bytes))
}

#[test]
fn every_example_config_loads_after_pki_init() {
    let names = example_configs();
    for expected in ["ingress.json", "pkcs12.json", "sidecar.json"] {
        assert!(
            names.iter().any(|n| n == expected),
            "config/{expected} is missing"
        );
    }
    for name in &names {
        let (dir, path) = layout(name);
        if name == "pkcs12.json" && !make_server_p12(dir.path()) {
            continue;
        }
        let config = load(&path);
        assert!(!config.apps.is_empty(), "{name} has no apps");
        // Every file it names is inside the temp layout: nothing leaks out of the repo.
        for file in &config.files {
            assert!(
                file.starts_with(dir.path()),
                "{name} reads {} outside its folder",
                file.display()
            );
        }
    }
}

#[test]
fn ingress_example_has_one_app_per_mode_and_shows_the_defaults() {
    let (_dir, path) = layout("ingress.json");
    let config = load(&path);
    let modes: Vec<ClientCertMode> = config.apps.iter().map(|app| app.mode).collect();
    assert_eq!(
        modes,
        [
            ClientCertMode::Require,
            ClientCertMode::Accept,
            ClientCertMode::Ignore
        ]
    );
    let hosts: Vec<String> = config
        .apps
        .iter()
        .flat_map(|app| app.hosts.iter().map(ToString::to_string))
        .collect();
    for host in [
        "payments.example.com",
        "*.partners.example.com",
        "www.example.com",
    ] {
        assert!(hosts.iter().any(|h| h == host), "{host} not in {hosts:?}");
    }
    assert_eq!(config.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(config.listen, "0.0.0.0:8443".parse().unwrap());
    // `timeouts` and `limits` are spelled out with exactly the defaults.
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.limits, Limits::default());

    let require = &config.apps[0];
    assert_eq!(require.trust.roots.len(), 1);
    assert_eq!(
        require.allow.uri_sans,
        ["spiffe://certgate.localhost/dev-client"],
        "the allow-list names the dev client's SPIFFE ID"
    );
    assert!(require.xfcc_fields.subject && require.xfcc_fields.uri);
    let accept = &config.apps[1];
    assert_eq!(accept.trust.roots.len(), 1);
    let ignore = &config.apps[2];
    assert!(ignore.trust.roots.is_empty());
}

#[test]
fn sidecar_example_is_one_catch_all_app_on_the_target_port() {
    let (_dir, path) = layout("sidecar.json");
    let config = load(&path);
    assert_eq!(config.apps.len(), 1);
    let app = &config.apps[0];
    assert!(app.hosts.is_empty(), "the sidecar app is the catch-all");
    assert_eq!(app.upstream.to_string(), "http://127.0.0.1:8080");
    assert_eq!(app.mode, ClientCertMode::Require);
    assert_eq!(app.trust.roots.len(), 1);
}

#[test]
fn pkcs12_example_presents_the_server_certificate() {
    let (dir, path) = layout("pkcs12.json");
    if !make_server_p12(dir.path()) {
        return;
    }
    let config = load(&path);
    assert_eq!(config.apps.len(), 1);
    let server_pem = dir.path().join("certs/server.pem");
    assert_eq!(
        config.apps[0].server_chain.first(),
        Some(&first_certificate(&server_pem)),
        "the PKCS#12 leaf is certs/server.pem's leaf"
    );
}

#[test]
fn check_prints_one_line_per_app_of_the_ingress_example() {
    let (dir, path) = layout("ingress.json");
    // The dev server certificate covers only localhost names; check would say so for each
    // of the example's hosts (docs/config.md "Checking a config").
    let key = rcgen::KeyPair::generate().unwrap();
    let hosts = [
        "payments.example.com",
        "*.pay.example.com",
        "*.partners.example.com",
    ];
    let names = ["www.example.com", "example.com"];
    let sans: Vec<String> = hosts
        .iter()
        .chain(&names)
        .map(|h| (*h).to_owned())
        .collect();
    let cert = rcgen::CertificateParams::new(sans)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("certs/server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("certs/server.key"), key.serialize_pem()).unwrap();
    let output = check(&dir, &path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "check failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per app:\n{stdout}");
    for (line, app) in lines.iter().zip(["payments", "partners", "website"]) {
        assert!(line.starts_with(&format!("{app}: ")), "{line}");
    }
}

/// `certgate check --config path`, run in `dir`.
fn check(dir: &TempDir, path: &Path) -> std::process::Output {
    Command::new(process::BIN)
        .args(["check", "--config"])
        .arg(path)
        .current_dir(dir.path())
        .output()
        .unwrap()
}

#[test]
fn check_names_the_missing_server_p12_of_the_pkcs12_example() {
    // Straight after `pki init` (no server.p12 made yet) the failure says what is missing.
    let (dir, path) = layout("pkcs12.json");
    let output = check(&dir, &path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("server.p12"), "{stderr}");
}

#[test]
fn certs_readme_describes_every_file_pki_init_writes() {
    let readme = std::fs::read_to_string(repo("certs/README.md")).unwrap();
    for (name, _) in certgate::pki::FILES {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "certs/README.md has no table row for {name}"
        );
    }
    assert!(readme.contains("cargo run -- pki init certs --force"));
}

// ---------------------------------------------------------------------------------------------
// Container and Kubernetes

/// The `CERTGATE_*` variables of the certgate container in `deployment.yaml`, in order.
fn deployment_env() -> Vec<(String, String)> {
    let yaml = std::fs::read_to_string(repo("config/kubernetes/deployment.yaml")).unwrap();
    let mut env = Vec::new();
    let mut lines = yaml.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("- name: ") else {
            continue;
        };
        if !name.starts_with("CERTGATE_") {
            continue;
        }
        let value = lines
            .next()
            .and_then(|next| next.trim().strip_prefix("value: "))
            .unwrap_or_else(|| panic!("{name} has no `value:` on the next line"));
        env.push((name.to_owned(), value.trim_matches('"').to_owned()));
    }
    env
}

/// Every environment variable the command line reads.
fn cli_env_names() -> Vec<String> {
    use clap::CommandFactory as _;
    let cli = certgate::cli::Cli::command();
    let run = cli
        .find_subcommand("run")
        .expect("a run subcommand")
        .clone();
    cli.get_arguments()
        .chain(run.get_arguments())
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

/// Waits for the JSON `serving` log line and returns its `listen` address.
fn serving_addr(child: &mut Child) -> SocketAddr {
    let lines = child.wait_for_line(Stream::Stderr, |line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|json| json["message"] == "serving")
    });
    let json: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    json["listen"]
        .as_str()
        .unwrap_or_else(|| panic!("no listen field in {json}"))
        .parse()
        .unwrap()
}

/// Client options for the `pki init` PKI in `certs`: trusts `ca.pem`, presents `client.pem`.
fn dev_client(certs: &Path, sni: &str) -> ClientOptions {
    let mut roots = RootCertStore::empty();
    roots.add(first_certificate(&certs.join("ca.pem"))).unwrap();
    ClientOptions {
        roots: Arc::new(roots),
        identity: Some(Identity {
            chain: CertificateDer::pem_file_iter(certs.join("client.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            key: Arc::new(PrivateKeyDer::from_pem_file(certs.join("client.key")).unwrap()),
        }),
        sni: Some(sni.to_owned()),
        tls12: false,
        http2: false,
    }
}

/// A loopback address whose port was free when asked.
fn free_local_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The status code of a plain HTTP/1.1 `GET path` to `addr`, as an HTTP probe sends it.
fn plain_get_status(addr: SocketAddr, path: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to the admin listener {addr}: {e}"));
    tcp.set_read_timeout(Some(process::PATIENCE)).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_sidecar_environment_runs_certgate() {
    let env = deployment_env();
    let names: Vec<String> = env.iter().map(|(name, _)| name.clone()).collect();
    for required in [
        "CERTGATE_LISTEN",
        "CERTGATE_UPSTREAM",
        "CERTGATE_CERT",
        "CERTGATE_KEY",
        "CERTGATE_CLIENT_CA",
        "CERTGATE_ADMIN",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "deployment.yaml does not set {required}"
        );
    }
    let known = cli_env_names();
    for name in &names {
        assert!(
            known.iter().any(|k| k == name),
            "deployment.yaml sets {name}, which certgate does not read"
        );
    }
    let yaml = std::fs::read_to_string(repo("config/kubernetes/deployment.yaml")).unwrap();
    assert!(
        yaml.contains("args: [\"run\"]"),
        "the sidecar must replace the image's `run --config` command with `run`"
    );

    // The same variables, with the Secret's mount point replaced by a `pki init` folder and
    // fixed ports by free ones.
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    certgate::pki::init(&certs, false).unwrap();
    let upstream = common::echo_upstream().await;
    // The admin address is not logged, so it is a port that was free a moment ago.
    let admin = free_local_addr();
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(name, value)| {
            let value = match name.as_str() {
                "CERTGATE_LISTEN" => "127.0.0.1:0".to_owned(),
                "CERTGATE_ADMIN" => admin.to_string(),
                "CERTGATE_UPSTREAM" => format!("http://{upstream}"),
                _ => value.replace("/etc/certgate/tls/", &format!("{}/", certs.display())),
            };
            (name, value)
        })
        .collect();
    let mut env_refs: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    // serving_addr reads the JSON log; the deployment already asks for it.
    if !names.iter().any(|n| n == "CERTGATE_LOG_FORMAT") {
        env_refs.push(("CERTGATE_LOG_FORMAT", "json"));
    }
    let mut certgate = Child::spawn(&["run"], dir.path(), &env_refs);
    let addr = serving_addr(&mut certgate);

    // What the kubelet's probes ask.
    for path in ["/healthz", "/readyz"] {
        let status = plain_get_status(admin, path);
        assert_eq!(
            status,
            200,
            "GET {path} on the admin listener\n{}",
            certgate.transcript()
        );
    }

    let reply = get(addr, &dev_client(&certs, "localhost"), "localhost", "/")
        .await
        .unwrap_or_else(|f| panic!("request failed: {f:?}\n{}", certgate.transcript()));
    assert_eq!(reply.status, 200);
    let hash = sha256_hex(&first_certificate(&certs.join("client.pem")));
    let xfcc = reply.xfcc().expect("an XFCC header");
    assert!(xfcc.starts_with(&format!("Hash={hash};")), "{xfcc}");

    // require mode: no certificate, no service.
    let mut anonymous = dev_client(&certs, "localhost");
    anonymous.identity = None;
    assert!(get(addr, &anonymous, "localhost", "/").await.is_err());

    certgate.signal("TERM");
    let status = certgate.wait_exit();
    assert!(status.success(), "{status}\n{}", certgate.transcript());
}

#[test]
fn dockerfile_command_is_a_valid_certgate_command_line() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let instruction = |keyword: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find_map(|line| line.strip_prefix(keyword))
            .unwrap_or_else(|| panic!("no {keyword} in the Dockerfile"));
        serde_json::from_str(line.trim()).unwrap()
    };
    let mut argv = instruction("ENTRYPOINT ");
    argv.extend(instruction("CMD "));
    assert_eq!(argv[0], "certgate");
    assert!(dockerfile.contains("/usr/local/bin/certgate"));
    use clap::Parser as _;
    let cli = certgate::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"));
    let certgate::cli::Command::Run(run) = cli.command else {
        panic!("{argv:?} is not `certgate run`");
    };
    assert_eq!(
        run.config.as_deref(),
        Some(Path::new("/etc/certgate/certgate.json"))
    );
}

// ---------------------------------------------------------------------------------------------
// PKCS#12 server certificates through the config file

/// The harness PKI written into `dir`, plus `server.p12` made by `openssl pkcs12 -export` from
/// its `server.pem` and `server.key` with `password`. `None` when openssl is not installed.
fn harness_p12(dir: &TempDir, password: &str) -> Option<Pki> {
    if !tools::openssl() {
        return None;
    }
    let pki = Pki::new();
    pki.write(dir);
    tools::run_openssl(
        dir.path(),
        &[
            "pkcs12",
            "-export",
            "-in",
            "server.pem",
            "-inkey",
            "server.key",
            "-out",
            "server.p12",
            "-passout",
            &format!("pass:{password}"),
        ],
    );
    Some(pki)
}

/// A `require` app on `localhost` whose server certificate is `server_certificate`.
fn p12_app(upstream: SocketAddr, server_certificate: serde_json::Value) -> serde_json::Value {
    let mut app = common::app("p12", &["localhost"], upstream, "require");
    app["serverCertificate"] = server_certificate;
    app["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    app
}

#[tokio::test]
async fn pkcs12_with_password_file_serves_mtls() {
    let dir = TempDir::new();
    let Some(pki) = harness_p12(&dir, "p12 password file") else {
        return;
    };
    // A trailing newline, as editors write it, is not part of the password.
    dir.write("server.p12.password", "p12 password file\n");
    let upstream = common::echo_upstream().await;
    let app = p12_app(
        upstream,
        serde_json::json!({ "pkcs12File": "server.p12", "passwordFile": "server.p12.password" }),
    );
    let gateway = Gateway::start(dir, serde_json::json!({ "apps": [app] })).await;

    let client = pki.client("p12 client");
    let options = ClientOptions::new(&pki, "localhost").with_identity(client.identity());
    let reply = get(gateway.addr, &options, "localhost", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    let xfcc = reply.xfcc().expect("an XFCC header");
    assert!(
        xfcc.starts_with(&format!("Hash={};", client.hash_hex())),
        "{xfcc}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs12_with_password_env_serves_mtls() {
    // Environment variables cannot be set in-process without `unsafe` (forbidden here), so the
    // real binary runs with the variable in its environment.
    let dir = TempDir::new();
    let Some(pki) = harness_p12(&dir, "p12 password env") else {
        return;
    };
    let variable = format!("CERTGATE_TEST_P12_PASSWORD_{}", std::process::id());
    let upstream = common::echo_upstream().await;
    let app = p12_app(
        upstream,
        serde_json::json!({ "pkcs12File": "server.p12", "passwordEnv": variable }),
    );
    let config = serde_json::json!({ "listen": "127.0.0.1:0", "apps": [app] });
    dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());

    let mut certgate = Child::spawn(
        &["run", "--config", "certgate.json"],
        dir.path(),
        &[
            (variable.as_str(), "p12 password env"),
            ("CERTGATE_LOG_FORMAT", "json"),
        ],
    );
    let addr = serving_addr(&mut certgate);
    let client = pki.client("p12 env client");
    let options = ClientOptions::new(&pki, "localhost").with_identity(client.identity());
    let reply = get(addr, &options, "localhost", "/")
        .await
        .unwrap_or_else(|f| panic!("request failed: {f:?}\n{}", certgate.transcript()));
    assert_eq!(reply.status, 200);
    let xfcc = reply.xfcc().expect("an XFCC header");
    assert!(
        xfcc.starts_with(&format!("Hash={};", client.hash_hex())),
        "{xfcc}"
    );

    certgate.signal("TERM");
    let status = certgate.wait_exit();
    assert!(status.success(), "{status}\n{}", certgate.transcript());
}

#[test]
fn pkcs12_with_a_wrong_password_is_refused() {
    let dir = TempDir::new();
    if harness_p12(&dir, "the right password").is_none() {
        return;
    }
    dir.write("server.p12.password", "a wrong password");
    let app = p12_app(
        "127.0.0.1:9".parse().unwrap(),
        serde_json::json!({ "pkcs12File": "server.p12", "passwordFile": "server.p12.password" }),
    );
    let path = dir.write(
        "certgate.json",
        serde_json::to_vec(&serde_json::json!({ "apps": [app] })).unwrap(),
    );
    let error = common::load_config(&path).expect_err("a wrong PKCS#12 password must be refused");
    let chain = certgate::error_chain(&error);
    assert!(chain.contains("wrong password"), "{chain}");
    assert!(chain.contains("server.p12"), "{chain}");
}

#[test]
fn pkcs12_with_an_unset_password_env_names_the_variable() {
    let dir = TempDir::new();
    // certgate's own client.p12 is a well-formed archive; the password is never found.
    certgate::pki::init(&dir.path().join("certs"), false).unwrap();
    let variable = format!("CERTGATE_TEST_UNSET_P12_PASSWORD_{}", std::process::id());
    assert!(std::env::var_os(&variable).is_none());
    let app = p12_app(
        "127.0.0.1:9".parse().unwrap(),
        serde_json::json!({ "pkcs12File": "certs/client.p12", "passwordEnv": variable }),
    );
    let mut config = serde_json::json!({ "apps": [app] });
    config["apps"][0]["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["certs/ca.pem"] });
    let path = dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let error = common::load_config(&path).expect_err("an unset passwordEnv must be refused");
    let chain = certgate::error_chain(&error);
    assert!(chain.contains(&variable), "{chain}");
}
