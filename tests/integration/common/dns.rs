//! A real DNS server for tests of upstream names: Debian's `dnsmasq` on 127.0.0.1 and a free
//! port, answering only from a hosts file the test rewrites (SIGHUP makes dnsmasq read it
//! again), with a TTL of one second; and upstream apps on several loopback addresses
//! (127.0.0.2, 127.0.0.3, ...) sharing one port, as the pods behind a headless Service do.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::TempDir;
use super::tools;

/// What installs dnsmasq (`.ci/run` runs it): Debian's binary without its system service.
pub const INSTALL_DNSMASQ: &str = "apt-get install dnsmasq-base";

/// True when dnsmasq runs; false (test skipped) when it is missing and `CI` is unset; fails
/// the test under CI.
pub fn dnsmasq_available() -> bool {
    tools::available(program(), "--version", INSTALL_DNSMASQ)
}

/// dnsmasq on the `PATH`, or in /usr/sbin (not on every user's `PATH`).
fn program() -> &'static str {
    let on_path = Command::new("dnsmasq")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !on_path && std::path::Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    }
}

/// dnsmasq serving the records of a hosts file; killed on drop.
pub struct Dnsmasq {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    hosts: PathBuf,
    child: Option<Child>,
    _dir: TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq answering `records` (name, addresses); waits until it answers.
    pub fn start(records: &[(&str, &[Ipv4Addr])]) -> Self {
        let dir = TempDir::new();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, hosts_file(records)).unwrap();
        // A port free on UDP; dnsmasq binds TCP on it too (retried when that one is taken).
        for _ in 0..10 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(program())
                .arg("--keep-in-foreground")
                .arg(format!("--port={port}"))
                .arg("--listen-address=127.0.0.1")
                .arg("--bind-interfaces")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg(format!("--addn-hosts={}", hosts.display()))
                .arg("--local-ttl=1")
                .arg("--conf-file=/dev/null")
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .arg("--log-facility=-")
                // As root, dnsmasq would switch to its own user, which may not read the file.
                .arg(format!("--user={}", current_user()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run dnsmasq ({INSTALL_DNSMASQ}): {e}"));
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if answers(addr) {
                return Self {
                    addr,
                    hosts,
                    child: Some(child),
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on a free port");
    }

    /// Replaces the records and makes dnsmasq read them again.
    pub fn set_records(&self, records: &[(&str, &[Ipv4Addr])]) {
        std::fs::write(&self.hosts, hosts_file(records)).unwrap();
        self.signal("HUP");
    }

    /// Stops dnsmasq: its port answers no more.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("dnsmasq is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} dnsmasq");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hosts_file(records: &[(&str, &[Ipv4Addr])]) -> String {
    records
        .iter()
        .flat_map(|(name, addresses)| addresses.iter().map(move |ip| format!("{ip} {name}\n")))
        .collect()
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Whether a DNS server answers a query at `addr` within a few seconds.
fn answers(addr: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // A query for `ready.test` A: id 1, recursion desired, one question.
    let mut query = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "test"] {
        query.push(u8::try_from(label.len()).unwrap());
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut answer = [0u8; 512];
    for _ in 0..25 {
        if socket.send_to(&query, addr).is_ok() && socket.recv_from(&mut answer).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Upstream apps on several loopback addresses and one port, each counting its requests and
/// answering with its own address.
pub struct NamedUpstreams {
    /// The port every one listens on.
    pub port: u16,
    /// The addresses, in the order asked for.
    pub ips: Vec<Ipv4Addr>,
    counts: Vec<Arc<AtomicUsize>>,
}

impl NamedUpstreams {
    /// Apps on `ips`, one port shared by all.
    pub async fn start(ips: &[Ipv4Addr]) -> Self {
        'port: for _ in 0..20 {
            let first = TcpListener::bind((ips[0], 0)).await.unwrap();
            let port = first.local_addr().unwrap().port();
            let mut listeners = vec![first];
            for ip in &ips[1..] {
                match TcpListener::bind((*ip, port)).await {
                    Ok(listener) => listeners.push(listener),
                    Err(_) => continue 'port,
                }
            }
            let counts = listeners
                .into_iter()
                .map(|listener| {
                    let count = Arc::new(AtomicUsize::new(0));
                    tokio::spawn(serve(listener, count.clone()));
                    count
                })
                .collect();
            return Self {
                port,
                ips: ips.to_vec(),
                counts,
            };
        }
        panic!("no port free on every one of {ips:?}");
    }

    /// Requests the app at `ip` has answered.
    pub fn count(&self, ip: Ipv4Addr) -> usize {
        let index = self.ips.iter().position(|known| *known == ip).unwrap();
        self.counts[index].load(Ordering::SeqCst)
    }
}

/// Answers every request on `listener` with its own address, counting them.
async fn serve(listener: TcpListener, count: Arc<AtomicUsize>) {
    let me = listener.local_addr().unwrap().ip().to_string();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let count = count.clone();
        let me = me.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let count = count.clone();
                let me = me.clone();
                async move {
                    drop(request);
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(me))))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
