//! Memory stays bounded (docs/operations.md "Memory under attack"), measured on the real binary's
//! `/proc/<pid>/status` with a generous bound (never a timing):
//! - an HTTP/2 client that opens streams to an endless response and never opens its
//!   flow-control window makes certgate buffer a bounded amount, not a copy of each body.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::time::Duration;

use common::hardening::{endless_upstream, rss_kib};
use common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};

const MIB: u64 = 1024;

struct Binary {
    child: process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

async fn start(pki: &Pki, app: serde_json::Value) -> Binary {
    let dir = TempDir::new();
    pki.write(&dir);
    let config = serde_json::json!({
        "listen": "127.0.0.1:0",
        "apps": [app],
        "accessLog": false,
    });
    let (child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    Binary {
        child,
        addr: serving.listen(),
        _dir: dir,
    }
}

impl Binary {
    fn rss(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_opens_its_window_gets_a_bounded_buffer() {
    const STREAMS: usize = 200;
    let pki = Pki::new();
    let endless = endless_upstream().await;
    let binary = start(
        &pki,
        app("ignore", &["ignore.example.test"], endless, "ignore"),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test").http2(true);
    // Warm up one stream (read whole chunks, then drop it) and take the level.
    let mut warm = Connection::open(binary.addr, &options).await.unwrap();
    let request = warm.get("ignore.example.test", "/warm");
    let response = warm.send_raw(request).await.unwrap();
    drop(response);
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = binary.rss();

    let tls = tls_stream(binary.addr, &options).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut responses = Vec::new();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        let mut sender = sender.clone();
        pending.spawn(async move {
            let request = http::Request::get(format!("https://ignore.example.test/endless/{i}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            sender.send_request(request).await
        });
    }
    // certgate allows 100 streams at once; the rest wait in the client. Headers are not
    // flow-controlled, so the first 100 responses arrive; their bodies never get a window.
    while responses.len() < 100 {
        let next = tokio::time::timeout(process::PATIENCE, pending.join_next()).await;
        let response = next.expect("responses stopped coming").unwrap().unwrap();
        assert_eq!(response.unwrap().status(), 200);
        responses.push(());
    }
    // Let the upstreams push what they can.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let growth = binary.rss().saturating_sub(before);
    // 100 streams x (one 64 KiB upstream chunk + 64 KiB read buffer) is about 13 MiB; the
    // bound leaves room for allocator slack. Unbounded, this was over 100 MiB.
    assert!(
        growth < 40 * MIB,
        "RSS grew by {growth} KiB for one connection that never reads"
    );
    drop(pending);
}
