//! Revocation test fixtures: certificates that name CRL distribution points and OCSP
//! responders, CRLs in DER, an `openssl ocsp` responder started as a child process with an
//! index the test edits, an HTTP server for CRLs and misbehaving responders (each on its own
//! thread and runtime, so certgate's blocking config load can fetch from it), and a counting
//! TCP proxy to prove cache hits.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    CertificateParams, CertificateRevocationListParams, CrlDistributionPoint, CustomExtension,
    DnType, ExtendedKeyUsagePurpose, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    SigningKey as _,
};
use time::OffsetDateTime;
use x509_cert::der::asn1::Ia5String;
use x509_cert::der::{Decode, Encode};

use super::polling::{poll_blocking, until};
use super::{Ca, Leaf};

static SERIAL: AtomicU64 = AtomicU64::new(1);

fn serial() -> SerialNumber {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed)
        + u64::from(std::process::id()) * 1_000_000
        + 500_000;
    SerialNumber::from_slice(&n.to_be_bytes())
}

/// Where a certificate says its revocation is published.
#[derive(Default, Clone)]
pub struct Published {
    pub crl: Option<String>,
    pub ocsp: Option<String>,
}

fn publish(params: &mut CertificateParams, published: &Published) {
    if let Some(url) = &published.crl {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.clone()],
        }];
    }
    if let Some(url) = &published.ocsp {
        use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
        use x509_cert::ext::pkix::name::GeneralName;
        let access = AuthorityInfoAccessSyntax(vec![x509_cert::ext::pkix::AccessDescription {
            access_method: x509_cert::der::oid::db::rfc5280::ID_AD_OCSP,
            access_location: GeneralName::UniformResourceIdentifier(Ia5String::new(url).unwrap()),
        }]);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                access.to_der().unwrap(),
            ));
    }
}

fn issuer(ca: &Ca) -> Issuer<'_, &KeyPair> {
    Issuer::from_params(&ca.params, &ca.key)
}

/// A client leaf issued by `ca` that names where its revocation is published.
pub fn leaf(ca: &Ca, common_name: &str, published: &Published) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
    let serial = serial();
    params.serial_number = Some(serial.clone());
    publish(&mut params, published);
    let cert = params.signed_by(&key, &issuer(ca)).unwrap();
    let mut chain = vec![cert.der().clone()];
    chain.extend(ca.sent_after_leaf.iter().cloned());
    Leaf {
        chain,
        pem: cert.pem(),
        key,
        serial,
    }
}

/// An intermediate CA under `root` that names where its own revocation is published.
pub fn intermediate(root: &Ca, name: &str, published: &Published) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = super::pki::ca_params(name);
    publish(&mut params, published);
    let cert = params.signed_by(&key, &issuer(root)).unwrap();
    Ca {
        sent_after_leaf: vec![cert.der().clone()],
        der: cert.der().clone(),
        pem: cert.pem(),
        params,
        key,
    }
}

/// A delegated OCSP signer issued by `ca` (OCSP-signing EKU), as PEM certificate and key.
pub fn ocsp_signer(ca: &Ca, name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
    params.serial_number = Some(serial());
    let cert = params.signed_by(&key, &issuer(ca)).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A DER CRL from `ca` listing `serials`, issued an hour before `next_update`'s distance
/// from now (or an hour ago, whichever is earlier).
pub fn crl_der(ca: &Ca, serials: &[&SerialNumber], next_update: OffsetDateTime) -> Vec<u8> {
    scoped_crl_der(ca, serials, next_update, None)
}

/// Like `crl_der`, scoped by an issuing distribution point to the certificates naming `point`.
pub fn scoped_crl_der(
    ca: &Ca,
    serials: &[&SerialNumber],
    next_update: OffsetDateTime,
    point: Option<&str>,
) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: next_update.min(now) - time::Duration::hours(1),
        next_update,
        crl_number: serial(),
        issuing_distribution_point: point.map(|url| rcgen::CrlIssuingDistributionPoint {
            distribution_point: CrlDistributionPoint {
                uris: vec![url.to_owned()],
            },
            scope: None,
        }),
        revoked_certs: serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: (*serial).clone(),
                revocation_time: now - time::Duration::minutes(5),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(&issuer(ca)).unwrap().der().to_vec()
}

/// A DER CRL from `ca` listing `serials` with this thisUpdate and nextUpdate; `None`: no
/// nextUpdate, which rcgen cannot write, so its CRL is re-encoded without one and signed again
/// with the CA's key.
pub fn crl_der_at(
    ca: &Ca,
    serials: &[&SerialNumber],
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
) -> Vec<u8> {
    let params = CertificateRevocationListParams {
        this_update,
        next_update: next_update.unwrap_or(this_update + time::Duration::days(1)),
        crl_number: serial(),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: (*serial).clone(),
                revocation_time: this_update - time::Duration::minutes(5),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let der = params.signed_by(&issuer(ca)).unwrap().der().to_vec();
    if next_update.is_some() {
        return der;
    }
    let mut crl = x509_cert::crl::CertificateList::from_der(&der).unwrap();
    crl.tbs_cert_list.next_update = None;
    let signature = ca.key.sign(&crl.tbs_cert_list.to_der().unwrap()).unwrap();
    crl.signature = x509_cert::der::asn1::BitString::from_bytes(&signature).unwrap();
    let der = crl.to_der().unwrap();
    let reread = x509_cert::crl::CertificateList::from_der(&der).unwrap();
    assert!(
        reread.tbs_cert_list.next_update.is_none(),
        "the CRL has no nextUpdate"
    );
    der
}

/// A CRL that is fresh for a day.
pub fn fresh_crl(ca: &Ca, serials: &[&SerialNumber]) -> Vec<u8> {
    crl_der(
        ca,
        serials,
        OffsetDateTime::now_utc() + time::Duration::days(1),
    )
}

/// The CA's serial (for CRLs that revoke an intermediate).
pub fn ca_serial(ca: &Ca) -> SerialNumber {
    ca.params.serial_number.clone().unwrap()
}

/// Computes an answer from a request body.
pub type Handler = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// What the HTTP fixture answers.
#[derive(Clone)]
pub enum Answer {
    /// 200 with this body.
    Body(Vec<u8>),
    /// This status, empty body.
    Status(u16),
    /// Accept the request and never answer.
    Hang,
    /// Compute the body from the request body (a hand-made OCSP responder).
    With(Handler),
}

/// A small HTTP server on its own thread and runtime that counts its requests.
pub struct HttpFixture {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
}

impl HttpFixture {
    pub fn start(answer: Answer) -> Self {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let (shared_answer, counter) = (answer.clone(), requests.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (answer, counter) = (shared_answer.clone(), counter.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            respond(answer.clone(), counter.clone(), request)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            });
        });
        Self {
            addr,
            answer,
            requests,
        }
    }

    /// `http://addr/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `count` requests arrived.
    pub async fn wait_for_requests(&self, count: usize) {
        let arrived = until(300, Duration::from_millis(50), || self.requests() >= count).await;
        assert!(
            arrived,
            "expected {count} requests, saw {}",
            self.requests()
        );
    }
}

async fn respond(
    answer: Arc<Mutex<Answer>>,
    counter: Arc<AtomicUsize>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    counter.fetch_add(1, Ordering::SeqCst);
    let body = request.into_body().collect().await?.to_bytes();
    let answer = answer.lock().unwrap().clone();
    let (status, body) = match answer {
        Answer::Body(body) => (200, body),
        Answer::Status(status) => (status, Vec::new()),
        Answer::Hang => {
            std::future::pending::<()>().await;
            (200, Vec::new())
        }
        Answer::With(make) => (200, make(&body)),
    };
    Ok(Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

/// A free loopback port: bound, then released for a child process to take.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `openssl ocsp` as a responder, killed on drop.
pub struct OpensslOcsp {
    child: Child,
    pub port: u16,
    pub index: PathBuf,
    args: Vec<String>,
}

/// One `index.txt` line: `V` (valid) or `R` (revoked) for the certificate with `serial`.
pub fn index_line(der: &[u8], common_name: &str, revoked: bool) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let raw = cert.tbs_certificate.raw_serial();
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len() - 1);
    let serial: String = raw[start..].iter().map(|b| format!("{b:02X}")).collect();
    let (status, revoked_at) = if revoked {
        ("R", "240101000000Z")
    } else {
        ("V", "")
    };
    format!("{status}\t351231235959Z\t{revoked_at}\t{serial}\tunknown\t/CN={common_name}\n")
}

impl OpensslOcsp {
    /// Starts `openssl ocsp -index index.txt -port PORT -rsigner SIGNER -rkey KEY -CA CA`
    /// plus `extra` in `dir` (file names relative to it); retries on another port if the
    /// chosen one was taken meanwhile.
    pub fn start(dir: &Path, ca: &str, signer: &str, key: &str, extra: &[&str]) -> Self {
        let args: Vec<String> = ["-rsigner", signer, "-rkey", key, "-CA", ca]
            .iter()
            .chain(extra)
            .map(|arg| (*arg).to_owned())
            .collect();
        for _ in 0..5 {
            if let Some(child) = spawn_ocsp(dir, free_port(), &args) {
                return child;
            }
        }
        panic!("openssl ocsp did not start");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces the index and restarts the responder on the same port: openssl 3.0 reads
    /// its index only at start.
    pub fn write_index(&mut self, contents: &str) {
        std::fs::write(&self.index, contents).unwrap();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.index.parent().unwrap().to_owned();
        let (port, args) = (self.port, self.args.clone());
        let restarted = poll_blocking(
            50,
            Duration::from_millis(100),
            || spawn_ocsp(&dir, port, &args),
            Option::is_some,
        );
        *self = restarted.unwrap_or_else(|| panic!("openssl ocsp did not restart on port {port}"));
    }
}

fn spawn_ocsp(dir: &Path, port: u16, args: &[String]) -> Option<OpensslOcsp> {
    // openssl prints `ACCEPT` once it listens; a probe connection would stall it, as it
    // serves one connection at a time.
    let log = dir.join(format!("ocsp-{port}.out"));
    let mut child = Command::new("openssl")
        .args(["ocsp", "-index", "index.txt", "-port", &port.to_string()])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start openssl ocsp");
    // Listening (`Some(true)`), gone (`Some(false)`), or neither yet.
    let started = poll_blocking(
        200,
        Duration::from_millis(50),
        || {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ACCEPT")
            {
                Some(true)
            } else {
                child.try_wait().unwrap().map(|_| false)
            }
        },
        Option::is_some,
    );
    match started {
        Some(true) => Some(OpensslOcsp {
            child,
            port,
            index: dir.join("index.txt"),
            args: args.to_vec(),
        }),
        Some(false) => None,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

impl Drop for OpensslOcsp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy that counts connections (one per OCSP lookup: certgate pools nothing).
pub struct CountingProxy {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl CountingProxy {
    pub fn start(target: SocketAddr) -> Self {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for downstream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = StdStream::connect(target) else {
                    continue;
                };
                splice(&downstream, &upstream);
            }
        });
        Self { addr, connections }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Copies bytes both ways between two sockets on threads of their own, until either side closes.
pub fn splice(a: &StdStream, b: &StdStream) {
    pipe(a, b);
    pipe(b, a);
}

fn pipe(from: &StdStream, to: &StdStream) {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// A hand-made OCSP responder answer for whatever is asked: `good`, signed by `signer`, with
/// thisUpdate and nextUpdate in the past (a stale answer a cache or replay would serve).
pub fn stale_ocsp_answer(signer_name: &Ca) -> Handler {
    let day = Duration::from_secs(86400);
    ocsp_answer(
        signer_name,
        false,
        -2.0 * day.as_secs_f64(),
        -day.as_secs_f64(),
    )
}

/// A hand-made OCSP responder answer for whatever is asked, signed by `signer`: `revoked` or
/// `good`, with thisUpdate and nextUpdate this many seconds from the time of the request
/// (negative: in the past).
pub fn ocsp_answer(signer_name: &Ca, revoked: bool, this_update: f64, next_update: f64) -> Handler {
    ocsp_answer_at(signer_name, revoked, this_update, Some(next_update))
}

/// Like `ocsp_answer`; `next_update` `None` leaves nextUpdate out.
pub fn ocsp_answer_at(
    signer_name: &Ca,
    revoked: bool,
    this_update: f64,
    next_update: Option<f64>,
) -> Handler {
    let signer_key = KeyPair::from_pem(&signer_name.key.serialize_pem()).unwrap();
    let signer_der = signer_name.der.to_vec();
    Arc::new(move |request: &[u8]| {
        use x509_ocsp::{
            BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
            ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse, Version,
        };
        let request = OcspRequest::from_der(request).unwrap();
        let asked = request.tbs_request.request_list[0].req_cert.clone();
        let at = |offset: f64| {
            let now = std::time::SystemTime::now();
            let when = if offset < 0.0 {
                now - Duration::from_secs_f64(-offset)
            } else {
                now + Duration::from_secs_f64(offset)
            };
            OcspGeneralizedTime(
                x509_cert::der::asn1::GeneralizedTime::from_system_time(when).unwrap(),
            )
        };
        let status = if revoked {
            CertStatus::revoked(RevokedInfo {
                revocation_time: at(-60.0),
                revocation_reason: None,
            })
        } else {
            CertStatus::good()
        };
        let signer = x509_cert::Certificate::from_der(&signer_der).unwrap();
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByName(signer.tbs_certificate.subject),
            produced_at: at(this_update),
            responses: vec![SingleResponse {
                cert_id: asked,
                cert_status: status,
                this_update: at(this_update),
                next_update: next_update.map(at),
                single_extensions: None,
            }],
            response_extensions: None,
        };
        let signature = signer_key.sign(&data.to_der().unwrap()).unwrap();
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
                oid: x509_cert::der::oid::db::rfc5912::ECDSA_WITH_SHA_256,
                parameters: None,
            },
            signature: x509_cert::der::asn1::BitString::from_bytes(&signature).unwrap(),
            certs: None,
        };
        OcspResponse {
            response_status: x509_ocsp::OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: x509_cert::der::oid::db::rfc6960::ID_PKIX_OCSP_BASIC,
                response: x509_cert::der::asn1::OctetString::new(basic.to_der().unwrap()).unwrap(),
            }),
        }
        .to_der()
        .unwrap()
    })
}
