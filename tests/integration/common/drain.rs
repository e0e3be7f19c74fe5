//! Watching a drain from outside: `/readyz` on the admin listener, the listener refusing new
//! connections, and a slow request left in flight while shutdown begins.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;

use super::apps::IGNORE_HOST;
use super::polling::until_async;
use super::{Connection, Failure, Reply};

/// The status line `/readyz` answers on `admin`; `None` when nothing answers.
pub async fn readyz(admin: SocketAddr) -> Option<String> {
    let mut tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.ok()?;
    text.lines().next().map(str::to_owned)
}

/// The status code `/readyz` answers on `admin`; `None` when nothing answers.
pub async fn readyz_status(admin: SocketAddr) -> Option<u16> {
    readyz(admin)
        .await?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Tries a TCP connection to `addr` every 10 ms, at most `tries` times; true once one is
/// refused.
pub async fn until_refused(addr: SocketAddr, tries: usize) -> bool {
    until_async(tries, Duration::from_millis(10), async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await
}

/// Sends `GET path` to [`IGNORE_HOST`] on `conn` in a task of its own and waits 300 ms, so
/// the request reaches the upstream before the test starts a shutdown.
pub async fn in_flight(mut conn: Connection, path: &str) -> JoinHandle<Result<Reply, Failure>> {
    let request = conn.get(IGNORE_HOST, path);
    let task = tokio::spawn(async move { conn.send(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    task
}
