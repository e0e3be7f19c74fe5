//! Shared test harness: a throwaway PKI made with rcgen, certgate started in-process on
//! 127.0.0.1:0 from a JSON config, an echo upstream, and a rustls + hyper client that can
//! present any certificate, SNI, TLS version and HTTP version.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different part"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{AlertDescription, RootCertStore};
use sha2::Digest;
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};

pub mod hardening;
pub mod raw;
pub mod recording;
pub mod tools;

static SERIAL: AtomicU64 = AtomicU64::new(1);

fn next_serial() -> SerialNumber {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000;
    SerialNumber::from_slice(&n.to_be_bytes())
}

/// A certificate authority (root or intermediate) that can issue leaves and CRLs.
pub struct Ca {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub der: CertificateDer<'static>,
    pub pem: String,
    /// What a client sends after a leaf this CA issued: nothing for a root, the
    /// intermediate itself otherwise.
    pub sent_after_leaf: Vec<CertificateDer<'static>>,
}

impl Ca {
    pub fn root(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
            sent_after_leaf: Vec::new(),
        }
    }

    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name);
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Self {
            sent_after_leaf: vec![cert.der().clone()],
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    pub fn issue(&self, spec: LeafSpec) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = spec.params();
        let serial = params.serial_number.clone().unwrap();
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.sent_after_leaf.iter().cloned());
        Leaf {
            chain,
            pem: cert.pem(),
            key,
            serial,
        }
    }

    /// A PEM CRL revoking `revoked`, valid from an hour ago until `next_update`.
    pub fn crl(&self, revoked: &[&Leaf], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: next_update.min(now) - time::Duration::hours(1),
            next_update,
            crl_number: next_serial(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| rcgen::RevokedCertParams {
                    serial_number: leaf.serial.clone(),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()).unwrap().pem().unwrap()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(next_serial());
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(365);
    params
}

/// What a leaf certificate holds.
#[derive(Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A client certificate (clientAuth EKU) valid from yesterday for a month.
    pub fn client(common_name: &str) -> Self {
        Self {
            common_name: common_name.to_owned(),
            dns: Vec::new(),
            uris: Vec::new(),
            ips: Vec::new(),
            ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
            not_before: OffsetDateTime::now_utc() - time::Duration::days(1),
            not_after: OffsetDateTime::now_utc() + time::Duration::days(30),
        }
    }

    /// A server certificate (serverAuth EKU) for the names tests use.
    pub fn server() -> Self {
        Self {
            dns: [
                "localhost",
                "example.test",
                "*.example.test",
                "*.pay.example.test",
            ]
            .map(String::from)
            .to_vec(),
            ips: vec!["127.0.0.1".parse().unwrap()],
            ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
            ..Self::client("certgate test server")
        }
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        for dns in &self.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into().unwrap()));
        }
        for uri in &self.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into().unwrap()));
        }
        for ip in &self.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = self.ekus.clone();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.serial_number = Some(next_serial());
        params
    }
}

/// An issued certificate with its key.
pub struct Leaf {
    /// What the client sends: leaf first, then any intermediate.
    pub chain: Vec<CertificateDer<'static>>,
    pub pem: String,
    pub key: KeyPair,
    pub serial: SerialNumber,
}

impl Leaf {
    pub fn self_signed(spec: LeafSpec) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = spec.params();
        let serial = params.serial_number.clone().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            chain: vec![cert.der().clone()],
            pem: cert.pem(),
            key,
            serial,
        }
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// SHA-256 of the leaf DER, lowercase hex.
    pub fn hash_hex(&self) -> String {
        hex(&sha2::Sha256::digest(self.der()))
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem_of(c)).collect()
    }

    pub fn identity(&self) -> Identity {
        Identity {
            chain: self.chain.clone(),
            key: Arc::new(self.key_der()),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PEM written the simple way, independently of certgate's encoder.
pub fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out += line;
        out += "\n";
        rest = tail;
    }
    out + "-----END CERTIFICATE-----\n"
}

/// A folder removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "certgate-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test PKI: a server certificate from its own CA, and a client CA.
pub struct Pki {
    pub server_ca: Ca,
    pub server: Leaf,
    pub client_ca: Ca,
}

impl Pki {
    pub fn new() -> Self {
        let server_ca = Ca::root("certgate test server CA");
        let server = server_ca.issue(LeafSpec::server());
        Self {
            server_ca,
            server,
            client_ca: Ca::root("certgate test client CA"),
        }
    }

    /// Writes `server.pem`, `server.key` and `client-ca.pem` into `dir`.
    pub fn write(&self, dir: &TempDir) {
        dir.write("server.pem", &self.server.pem);
        dir.write("server.key", self.server.key.serialize_pem());
        dir.write("client-ca.pem", &self.client_ca.pem);
    }

    pub fn client(&self, cn: &str) -> Leaf {
        self.client_ca.issue(LeafSpec::client(cn))
    }
}

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
    /// Reloads the config file, as SIGHUP does.
    pub reloader: certgate::reload::Reloader,
    pub dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Writes `config` (its `listen` forced to 127.0.0.1:0) as `certgate.json` in `dir`,
    /// loads it the way `certgate run --config` does, and serves it.
    pub async fn start(dir: TempDir, mut config: serde_json::Value) -> Self {
        config["listen"] = "127.0.0.1:0".into();
        let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
        let config = certgate::config::Config::load(&path)
            .unwrap_or_else(|e| panic!("config refused: {}", certgate::error_chain(&e)));
        let source: certgate::ConfigSource =
            Arc::new(move || certgate::config::Config::load(&path));
        let server = certgate::Server::bind(&config, Some(source)).await.unwrap();
        let addr = server.local_addr();
        let admin = server.admin_addr();
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

/// A client certificate chain and key to present.
#[derive(Clone)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

/// How the test client connects.
#[derive(Clone)]
pub struct ClientOptions {
    pub roots: Arc<RootCertStore>,
    pub identity: Option<Identity>,
    /// The SNI to send; `None` sends no SNI (and verifies the server as `localhost`).
    pub sni: Option<String>,
    pub tls12: bool,
    pub http2: bool,
}

impl ClientOptions {
    pub fn new(pki: &Pki, sni: &str) -> Self {
        let mut roots = RootCertStore::empty();
        roots.add(pki.server_ca.der.clone()).unwrap();
        Self {
            roots: Arc::new(roots),
            identity: None,
            sni: Some(sni.to_owned()),
            tls12: false,
            http2: false,
        }
    }

    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    pub fn tls12(mut self, tls12: bool) -> Self {
        self.tls12 = tls12;
        self
    }

    pub fn http2(mut self, http2: bool) -> Self {
        self.http2 = http2;
        self
    }

    fn tls_config(&self) -> rustls::ClientConfig {
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        config.enable_sni = self.sni.is_some();
        config
    }
}

/// Why a request did not get a response.
#[derive(Debug)]
pub struct Failure {
    /// The TLS alert the server sent, when one arrived.
    pub alert: Option<AlertDescription>,
    pub message: String,
}

fn failure(error: &(dyn std::error::Error + 'static)) -> Failure {
    let mut alert = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(rustls::Error::AlertReceived(a)) = e.downcast_ref::<rustls::Error>() {
            alert = Some(*a);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(rustls::Error::AlertReceived(a)) =
                io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                alert = Some(*a);
            }
        }
        source = e.source();
    }
    let message = certgate::error_chain(error);
    // The h2 crate keeps only the text of the I/O error that carried the alert.
    let alert = alert.or_else(|| {
        let name = message.split("received fatal alert: ").nth(1)?;
        let name: String = name
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        ALERTS.iter().copied().find(|a| format!("{a:?}") == name)
    });
    Failure { alert, message }
}

const ALERTS: [AlertDescription; 9] = [
    AlertDescription::CertificateRequired,
    AlertDescription::HandshakeFailure,
    AlertDescription::UnknownCA,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateRevoked,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::AccessDenied,
    AlertDescription::BadCertificate,
    AlertDescription::UnrecognisedName,
];

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One client connection to certgate.
pub struct Connection {
    sender: Sender,
    pub http2: bool,
}

/// A response, body read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The echo upstream's JSON.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not echo JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Every value of a header as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.echo()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0].as_str() == Some(name))
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .collect()
    }

    /// The single XFCC the upstream received, if any (panics on more than one).
    pub fn xfcc(&self) -> Option<String> {
        let all = self.upstream_header("x-forwarded-client-cert");
        assert!(
            all.len() <= 1,
            "several XFCC headers reached the app: {all:?}"
        );
        all.into_iter().next()
    }
}

impl Connection {
    pub async fn open(addr: SocketAddr, options: &ClientOptions) -> Result<Self, Failure> {
        let io = TokioIo::new(tls_stream(addr, options).await?);
        let sender = if options.http2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| failure(&e))?;
            tokio::spawn(conn);
            Sender::Http2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| failure(&e))?;
            tokio::spawn(conn.with_upgrades());
            Sender::Http1(sender)
        };
        Ok(Self {
            sender,
            http2: options.http2,
        })
    }

    /// A GET for `authority` + `path` in this connection's HTTP version's form.
    pub fn get(&self, authority: &str, path: &str) -> Request<Full<Bytes>> {
        self.request(http::Method::GET, authority, path, Bytes::new())
    }

    pub fn request(
        &self,
        method: http::Method,
        authority: &str,
        path: &str,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let builder = Request::builder().method(method);
        let builder = if self.http2 {
            builder.uri(format!("https://{authority}{path}"))
        } else {
            builder.uri(path).header(http::header::HOST, authority)
        };
        builder.body(Full::new(body)).unwrap()
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, Failure> {
        let response = self.send_raw(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| failure(&e))?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn send_raw(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Failure> {
        let result = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.map_err(|e| failure(&e))?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender.ready().await.map_err(|e| failure(&e))?;
                sender.send_request(request).await
            }
        };
        result.map_err(|e| failure(&e))
    }
}

/// Opens a connection and sends one GET for `host` + `path`.
pub async fn get(
    addr: SocketAddr,
    options: &ClientOptions,
    host: &str,
    path: &str,
) -> Result<Reply, Failure> {
    let mut conn = Connection::open(addr, options).await?;
    let request = conn.get(host, path);
    conn.send(request).await
}

/// An upstream for tests, HTTP/1.1 and h2c on one port:
/// - `/slow`: answers after 30 s; `/delay/<ms>`: after that many milliseconds;
/// - `/ws`: accepts an upgrade and echoes bytes on the upgraded connection;
/// - `/hop`: answers with hop-by-hop headers that must not reach the client;
/// - anything else: JSON `{method, path, version, headers: [[name, value]…], body_len, body_sha256}`.
pub async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(echo);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

async fn echo(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"delayed"))));
    }
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Ok(Response::new(Full::new(Bytes::from_static(b"late"))));
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let (mut reader, mut writer) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                }
            });
            return Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Full::new(Bytes::new()))
                .unwrap());
        }
        "/hop" => {
            return Ok(Response::builder()
                .header("connection", "x-upstream-secret")
                .header("x-upstream-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-authenticate", "Basic")
                .header("x-app", "kept")
                .body(Full::new(Bytes::from_static(b"hop")))
                .unwrap());
        }
        _ => {}
    }
    let headers: Vec<serde_json::Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            serde_json::json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())])
        })
        .collect();
    let method = request.method().to_string();
    let version = format!("{:?}", request.version());
    let full_path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut hasher = sha2::Sha256::new();
    let mut body_len = 0u64;
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            body_len += data.len() as u64;
            hasher.update(&data);
        }
    }
    let json = serde_json::json!({
        "method": method,
        "path": full_path,
        "version": version,
        "headers": headers,
        "body_len": body_len,
        "body_sha256": hex(&hasher.finalize()),
    });
    Ok(Response::new(Full::new(Bytes::from(json.to_string()))))
}

/// A TLS stream to certgate with `options` (ALPN, SNI, version, identity): for raw requests
/// hyper's client cannot write, or for tests that drive hyper themselves.
pub async fn tls_stream(
    addr: SocketAddr,
    options: &ClientOptions,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(options.tls_config()));
    let name =
        ServerName::try_from(options.sni.clone().unwrap_or_else(|| "localhost".into())).unwrap();
    connector.connect(name, tcp).await.map_err(|e| failure(&e))
}

/// Asserts that certgate answered `reply` itself with `status`: a `text/plain` body of one
/// non-empty line (README "Forwarding").
pub fn assert_certgate_error(reply: &Reply, status: StatusCode, label: &str) {
    assert_eq!(reply.status, status, "{label}: body {:?}", reply.body);
    let content_type = reply
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "{label}: content-type {content_type:?}"
    );
    let body = String::from_utf8_lossy(&reply.body);
    let line = body.strip_suffix('\n').unwrap_or(&body);
    assert!(
        !line.trim().is_empty() && !line.contains(['\n', '\r']),
        "{label}: body is not one line: {body:?}"
    );
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

/// The value of one series in scraped metrics text, e.g.
/// `metric(&text, r#"certgate_reloads_total{result="error"}"#)`; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
