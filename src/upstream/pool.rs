//! The HTTP/1.1 connections to one app that wait for their next request: one pool per worker
//! thread (a connection is driven by the runtime of the thread that made it), at most
//! `POOL_MAX_IDLE` each. A request takes the most recently used connection; those idle for
//! `POOL_IDLE_TIMEOUT` are closed from the other end by a task that runs while the pool holds
//! any, so none outlives its time wherever it sits, with or without traffic.
//!
//! A pool of certgate's own rather than hyper-util's: it costs a lock and a pop per request,
//! where a general-purpose pool keyed by scheme and authority hashes the key twice
//! (docs/performance.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1;
use tokio::time::Instant;

use super::limit::Connections;
use super::request_body::RequestBody;
use crate::workers::PerWorker;

/// How long an unused connection is kept.
pub(super) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per app and worker thread; more are closed when their response ends.
const POOL_MAX_IDLE: usize = 1024;

/// The idle connections of one app, a pool per worker thread.
#[derive(Debug)]
pub(super) struct Pools {
    pools: PerWorker<Mutex<IdlePool>>,
    max_idle: usize,
    /// The app's connection slots: a connection given back wakes a request waiting for one,
    /// and a retired client keeps none.
    connections: Arc<Connections>,
    /// Set once the endpoint these pools belong to drains or retires: none is kept.
    closed: std::sync::atomic::AtomicBool,
}

/// A connection whose response is being read; it goes back to its pool with `give_back`.
#[derive(Debug)]
pub(super) struct CheckIn {
    pub sender: http1::SendRequest<RequestBody>,
    pub pools: Arc<Pools>,
}

/// One worker's idle connections, the most recently used at the back.
#[derive(Debug, Default)]
struct IdlePool {
    connections: VecDeque<IdleConnection>,
    /// Whether the task that closes expired connections is running.
    reaping: bool,
}

#[derive(Debug)]
struct IdleConnection {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

impl Pools {
    /// Empty pools for `workers` worker threads.
    pub(super) fn new(workers: usize, connections: Arc<Connections>) -> Self {
        Self::with_limit(workers, POOL_MAX_IDLE, connections)
    }

    fn with_limit(workers: usize, max_idle: usize, connections: Arc<Connections>) -> Self {
        Self {
            pools: PerWorker::new(workers, Mutex::default),
            max_idle,
            connections,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Closes every idle connection and keeps none from now on.
    pub(super) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.close_idle();
    }

    /// The calling worker's most recently used idle connection that is still open and
    /// within its time.
    pub(super) fn take(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut pool = self.pools.mine().lock().ok()?;
        while let Some(idle) = pool.connections.pop_back() {
            if idle.since.elapsed() < POOL_IDLE_TIMEOUT && !idle.sender.is_closed() {
                return Some(idle.sender);
            }
        }
        None
    }

    /// An idle connection from any worker's pool: for a request that finds no slot free to
    /// dial its own (it is driven by the thread that made it, wherever it is used).
    pub(super) fn take_any(&self) -> Option<http1::SendRequest<RequestBody>> {
        self.pools.all().find_map(|pool| {
            let mut pool = pool.lock().ok()?;
            while let Some(idle) = pool.connections.pop_back() {
                if idle.since.elapsed() < POOL_IDLE_TIMEOUT && !idle.sender.is_closed() {
                    return Some(idle.sender);
                }
            }
            None
        })
    }

    /// Closes every idle connection, in every worker's pool.
    pub(super) fn close_idle(&self) {
        for pool in self.pools.all() {
            if let Ok(mut pool) = pool.lock() {
                pool.connections.clear();
            }
        }
    }
}

impl CheckIn {
    /// Puts the connection back into the calling worker's pool, unless it is closed, the
    /// pool is full or the client retired (then it closes), and starts the pool's reaper if
    /// it is not running.
    pub(super) fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        {
            let Ok(mut pool) = self.pools.pools.mine().lock() else {
                return;
            };
            // Read under the pool's lock: `retire` sets the flag before it empties the
            // pools, so a connection is either emptied out with them or never put back.
            if pool.connections.len() >= self.pools.max_idle
                || self.pools.connections.is_retired()
                || self.pools.closed.load(std::sync::atomic::Ordering::Acquire)
            {
                return;
            }
            pool.connections.push_back(IdleConnection {
                sender: self.sender,
                since: Instant::now(),
            });
            if !pool.reaping {
                pool.reaping = true;
                tokio::spawn(reap(self.pools.clone()));
            }
        }
        self.pools.connections.connection_usable();
    }
}

impl IdlePool {
    /// Closes the connections idle since before `now - POOL_IDLE_TIMEOUT` (and closed ones
    /// on the way); returns when the oldest one left expires.
    fn reap(&mut self, now: Instant) -> Option<Instant> {
        while let Some(oldest) = self.connections.front() {
            let expires = oldest.since + POOL_IDLE_TIMEOUT;
            if expires > now && !oldest.sender.is_closed() {
                return Some(expires);
            }
            self.connections.pop_front();
        }
        None
    }
}

/// Closes the expired connections of the calling worker's pool until it is empty.
async fn reap(pools: Arc<Pools>) {
    loop {
        let next = {
            let Ok(mut pool) = pools.pools.mine().lock() else {
                return;
            };
            let next = pool.reap(Instant::now());
            pool.reaping = next.is_some();
            next
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use std::time::Duration;

    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::Instant;

    use super::*;

    /// An HTTP/1.1 client connection to `listener`, and the app's end of it.
    async fn connection(listener: &TcpListener) -> (http1::SendRequest<RequestBody>, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (app_end, _) = listener.accept().await.unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(connection);
        (sender, app_end)
    }

    /// Whether the app sees its end of the connection closed within a few seconds.
    async fn closed(app_end: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), app_end.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    fn ago(seconds: u64) -> Instant {
        Instant::now()
            .checked_sub(Duration::from_secs(seconds))
            .unwrap()
    }

    #[tokio::test]
    async fn reaping_closes_connections_idle_past_the_timeout_from_the_bottom_of_the_pool() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut pool = IdlePool::default();
        let mut app_ends = Vec::new();
        for idle_for in [100, 95, 10] {
            let (sender, app_end) = connection(&listener).await;
            pool.connections.push_back(IdleConnection {
                sender,
                since: ago(idle_for),
            });
            app_ends.push(app_end);
        }
        let next = pool.reap(Instant::now()).unwrap();
        assert_eq!(pool.connections.len(), 1, "the two expired ones go");
        let expected = ago(10) + POOL_IDLE_TIMEOUT;
        assert!(next <= expected && expected - next < Duration::from_secs(1));
        assert!(closed(&mut app_ends[0]).await);
        assert!(closed(&mut app_ends[1]).await);
        let mut byte = [0u8; 1];
        let still_open =
            tokio::time::timeout(Duration::from_millis(200), app_ends[2].read(&mut byte)).await;
        assert!(
            still_open.is_err(),
            "the connection in use 10 s ago stays open"
        );
    }

    #[tokio::test]
    async fn the_reaper_empties_a_pool_whose_connections_all_expired_and_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pools = Arc::new(Pools::new(1, Arc::new(Connections::new(8))));
        let (sender, mut app_end) = connection(&listener).await;
        {
            let mut pool = pools.pools.mine().lock().unwrap();
            pool.connections.push_back(IdleConnection {
                sender,
                since: ago(POOL_IDLE_TIMEOUT.as_secs() + 1),
            });
            pool.reaping = true;
        }
        reap(pools.clone()).await;
        {
            let pool = pools.pools.mine().lock().unwrap();
            assert!(pool.connections.is_empty());
            assert!(!pool.reaping, "a later check-in starts a new reaper");
        }
        assert!(closed(&mut app_end).await);
    }

    #[tokio::test]
    async fn a_pool_keeps_at_most_max_idle_connections_and_starts_one_reaper() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pools = Arc::new(Pools::with_limit(1, 2, Arc::new(Connections::new(8))));
        let mut app_ends = Vec::new();
        for _ in 0..3 {
            let (sender, app_end) = connection(&listener).await;
            CheckIn {
                sender,
                pools: pools.clone(),
            }
            .give_back();
            app_ends.push(app_end);
        }
        {
            let pool = pools.pools.mine().lock().unwrap();
            assert_eq!(pool.connections.len(), 2);
            assert!(pool.reaping);
        }
        assert!(
            closed(&mut app_ends[2]).await,
            "the one over the limit is closed"
        );
    }

    #[tokio::test]
    async fn a_request_takes_the_most_recently_used_connection_and_skips_expired_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pools = Pools::new(1, Arc::new(Connections::new(8)));
        let (older, _older_end) = connection(&listener).await;
        let (newer, _newer_end) = connection(&listener).await;
        let (expired, _expired_end) = connection(&listener).await;
        {
            let mut pool = pools.pools.mine().lock().unwrap();
            for (sender, idle_for) in [(older, 20), (newer, 10), (expired, 100)] {
                pool.connections.push_back(IdleConnection {
                    sender,
                    since: ago(idle_for),
                });
            }
        }
        // The back holds an expired one (as after a clock jump): skipped, then the newest.
        assert!(pools.take().is_some());
        assert_eq!(pools.pools.mine().lock().unwrap().connections.len(), 1);
    }
}
