//! HAProxy as the real L4 balancer in front of certgate (`send-proxy-v2`),
//! docs/replicas.md: a client on 127.0.0.2 reaches certgate through HAProxy on 127.0.0.1; certgate
//! trusts only 127.0.0.1, verifies the client certificate end to end (HAProxy passes TLS
//! through), and the app sees the client's own address in `X-Forwarded-For`. The same client
//! going around HAProxy is refused as an untrusted source.
//!
//! Needs the `haproxy` binary (`apt-get install haproxy`); fails under CI when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::polling::{scrape_until, until_async};
use common::proxied::tcp_from;
use common::*;

const HOST: &str = "require.example.test";

/// HAProxy running in the foreground, killed when dropped.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (HAProxy cannot report the port it bound).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn haproxy(dir: &TempDir, backend: SocketAddr) -> Haproxy {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "global\n\
         \x20 maxconn 100\n\
         defaults\n\
         \x20 mode tcp\n\
         \x20 timeout connect 5s\n\
         \x20 timeout client 30s\n\
         \x20 timeout server 30s\n\
         frontend mtls\n\
         \x20 bind {addr}\n\
         \x20 default_backend certgate\n\
         backend certgate\n\
         \x20 server certgate {backend} send-proxy-v2\n"
    );
    let path = dir.write("haproxy.cfg", config);
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut haproxy = Haproxy { child, addr };
    let listening = until_async(1000, Duration::from_millis(20), async || {
        if let Some(status) = haproxy.child.try_wait().unwrap() {
            panic!("haproxy exited at start: {status}");
        }
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(listening, "haproxy did not listen on {addr}");
    haproxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_v2_carries_the_client_address_through_mutual_tls() {
    if !tools::available("haproxy", "-v", "apt-get install haproxy") {
        return;
    }
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let [require, ignore] = require_and_ignore(echo_upstream().await);
    let gateway = Gateway::start(
        dir,
        serde_json::json!({
            "admin": "127.0.0.1:0",
            "proxyProtocol": { "trustedSources": ["127.0.0.1/32"] },
            "apps": [require, ignore],
        }),
    )
    .await;
    let haproxy_dir = TempDir::new();
    let haproxy = haproxy(&haproxy_dir, gateway.addr).await;
    let client = pki.client("client behind haproxy");
    let options = ClientOptions::new(&pki, HOST).with_identity(client.identity());
    let client_ip: IpAddr = "127.0.0.2".parse().unwrap();

    let tcp = tcp_from(Some(client_ip), haproxy.addr).await.unwrap();
    let mut conn = Connection::open_on(tcp, b"", &options).await.unwrap();
    let request = conn.get(HOST, "/");
    let reply = conn.send(request).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-forwarded-for"), ["127.0.0.2"]);
    let xfcc = reply.xfcc().expect("the verified certificate is forwarded");
    assert!(xfcc.starts_with(&format!("Hash={}", client.hash_hex())));

    // Around the balancer: 127.0.0.2 is not a trusted source.
    let tcp = tcp_from(Some(client_ip), gateway.addr).await.unwrap();
    assert!(Connection::open_on(tcp, b"", &options).await.is_err());
    let series = r#"certgate_proxy_protocol_refusals_total{reason="untrusted_source"}"#;
    let text = scrape_until(
        gateway.admin.unwrap(),
        500,
        Duration::from_millis(10),
        |text| metric(text, series) >= 1.0,
    )
    .await;
    assert_eq!(metric(&text, series), 1.0);
    drop(haproxy);
    gateway.stop().await;
}
