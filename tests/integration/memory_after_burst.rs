//! Memory comes back after a burst (docs/operations.md "Memory after a burst") and idle HTTP/1.1
//! connections hold little (docs/operations.md "Memory while idle"), measured on the real binary's
//! `/proc/<pid>/status` with a generous bound, polled (never a timing):
//! - after a few thousand mTLS connections (HTTP/1.1 and HTTP/2, one request each) were all
//!   open at once and then closed, certgate's RSS returns near its idle level;
//! - a few thousand idle HTTP/1.1 connections, one request each, cost a few KiB each once they
//!   have parked, not the 30-odd KiB of hyper's buffers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::time::Duration;

use common::hardening::rss_kib;
use common::polling::{poll, tries_within};
use common::*;

/// Connections held open at once: enough for a burst of tens of MiB, within a 4096-file limit.
const CONNECTIONS: usize = 2_500;
/// Connections being opened at once, as several clients would.
const PARALLEL: usize = 16;
/// How long RSS may take to come back; polled, so a quick return ends the wait at once.
const GIVE_BACK_PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_returns_near_idle_after_a_burst_of_connections_closes() {
    require_open_files(CONNECTIONS + 500);
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let binary = start(&pki, upstream).await;

    // Warm up every lazily built part (both HTTP versions, the upstream pool), then let the
    // allocator settle, and take the idle level.
    let warm = burst(binary.addr, &pki, 2 * PARALLEL, BOTH).await;
    drop(warm);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kib(binary.child.id());

    let held = burst(binary.addr, &pki, CONNECTIONS, BOTH).await;
    let peak = rss_kib(binary.child.id());
    drop(held);
    let growth = peak.saturating_sub(idle);
    assert!(
        growth > 20 * 1024,
        "{CONNECTIONS} open connections grew RSS by only {growth} KiB: the burst is too small to \
         show anything"
    );

    // Back within half of what the burst took (glibc malloc kept nearly all of it).
    let bound = idle + growth / 2;
    let now = binary.rss_until(|now| now <= bound).await;
    assert!(
        now <= bound,
        "RSS did not come back after the connections closed: idle {idle} KiB, with \
         {CONNECTIONS} connections {peak} KiB, {GIVE_BACK_PATIENCE:?} after they closed {now} \
         KiB (bound {bound} KiB)\n{}",
        binary.child.transcript()
    );
}

/// What an idle HTTP/1.1 connection may cost once parked: its TLS state (rustls' connection and
/// its 4 KiB record buffer), the task and certgate's own state, with room for allocator slack.
/// Unparked, hyper's buffers alone made it 35-40 KiB.
const PARKED_CONNECTION_KIB: u64 = 28;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_connections_hold_little_once_parked() {
    require_open_files(CONNECTIONS + 500);
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let binary = start(&pki, upstream).await;
    let warm = burst(binary.addr, &pki, PARALLEL, HTTP1).await;
    drop(warm);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kib(binary.child.id());

    let held = burst(binary.addr, &pki, CONNECTIONS, HTTP1).await;
    // Parked a second after their request; polled, so the wait ends as soon as they have.
    let bound = idle + CONNECTIONS as u64 * PARKED_CONNECTION_KIB;
    let now = binary.rss_until(|now| now <= bound).await;
    let each = now.saturating_sub(idle) / CONNECTIONS as u64;
    assert!(
        now <= bound,
        "{CONNECTIONS} idle HTTP/1.1 connections cost {each} KiB each (idle {idle} KiB, now \
         {now} KiB), over {PARKED_CONNECTION_KIB} KiB\n{}",
        binary.child.transcript()
    );
    // Every one of them still serves.
    for (index, mut connection) in held.into_iter().enumerate().step_by(97) {
        let request = connection.get("require.example.test", "/again");
        let reply = connection.send(request).await.unwrap();
        assert_eq!(reply.status, 200, "connection {index} after parking");
    }
}

/// Which HTTP versions a burst opens, by connection index.
const BOTH: &[bool] = &[false, true];
const HTTP1: &[bool] = &[false];

struct Binary {
    child: process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Binary {
    /// certgate's RSS in KiB, read every half second until `done` holds for it, at most
    /// `GIVE_BACK_PATIENCE`; the last one read.
    async fn rss_until(&self, done: impl Fn(u64) -> bool) -> u64 {
        let every = Duration::from_millis(500);
        let tries = tries_within(GIVE_BACK_PATIENCE, every) + 1;
        let pid = self.child.id();
        poll(tries, every, async || rss_kib(pid), |&now| done(now)).await
    }
}

/// The certgate binary with one `require` app in front of `upstream`, access log off.
async fn start(pki: &Pki, upstream: SocketAddr) -> Binary {
    let dir = TempDir::new();
    pki.write(&dir);
    let [require, _] = require_and_ignore(upstream);
    let config = serde_json::json!({
        "listen": "127.0.0.1:0",
        "apps": [require],
        "accessLog": false,
        "limits": { "maxConnections": CONNECTIONS + 100 },
    });
    let (child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    Binary {
        child,
        addr: serving.listen(),
        _dir: dir,
    }
}

/// Opens `count` verified connections, `PARALLEL` at a time, taking turns over `versions`
/// (`true` for HTTP/2), each after one request answered 200, and returns them still open.
async fn burst(addr: SocketAddr, pki: &Pki, count: usize, versions: &[bool]) -> Vec<Connection> {
    let identity = pki.client("burst").identity();
    let options: Vec<_> = versions
        .iter()
        .map(|&http2| {
            ClientOptions::new(pki, "require.example.test")
                .with_identity(identity.clone())
                .http2(http2)
        })
        .collect();
    let mut openers = tokio::task::JoinSet::new();
    for opener in 0..PARALLEL {
        let options = options.clone();
        openers.spawn(async move {
            let mut held = Vec::new();
            for index in (opener..count).step_by(PARALLEL) {
                let mut connection = Connection::open(addr, &options[index % options.len()])
                    .await
                    .unwrap_or_else(|e| panic!("connection {index} failed: {e:?}"));
                let request = connection.get("require.example.test", "/burst");
                let reply = connection.send(request).await.unwrap();
                assert_eq!(reply.status, 200, "connection {index}");
                held.push(connection);
            }
            held
        });
    }
    let mut held = Vec::with_capacity(count);
    while let Some(opened) = openers.join_next().await {
        held.extend(opened.unwrap());
    }
    held
}

/// Fails with what to do when this process may not open `needed` files (each connection is
/// a file in this process and in certgate, which inherits the limit).
fn require_open_files(needed: usize) {
    // Raised up to the hard limit, as certgate itself does; the child inherits it.
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        soft >= needed as u64,
        "this test holds {CONNECTIONS} connections and needs {needed} open files, the hard limit \
         allows {soft}: raise it (`ulimit -Hn {needed}` as root, or LimitNOFILE= for a service)"
    );
}
