//! The HTTP/1.1 connections to one app that wait for their next request: one pool per worker
//! thread (a connection is driven by the runtime of the thread that made it), at most
//! `POOL_MAX_IDLE` each. A request takes the most recently used connection; those idle for
//! `POOL_IDLE_TIMEOUT` are closed from the other end by a task that runs while the pool holds
//! any, so none outlives its time wherever it sits, with or without traffic. For an upstream
//! named by DNS, a connection whose address left the name's set is not reused: the reaper
//! closes it when the set changes, and it is not put back after its response.
//!
//! A pool of certgate's own rather than hyper-util's: it costs a lock and a pop per request,
//! where a general-purpose pool keyed by scheme and authority hashes the key twice
//! (docs/performance.md).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1;
use tokio::time::Instant;

use super::discovery::Membership;
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
    /// Whether a connection's address is still the upstream's.
    membership: Membership,
}

/// An HTTP/1.1 connection to the app, and the address it is connected to.
#[derive(Debug)]
pub(super) struct Http1 {
    pub sender: http1::SendRequest<RequestBody>,
    pub peer: Option<SocketAddr>,
}

/// A connection whose response is being read; it goes back to its pool with `give_back`.
#[derive(Debug)]
pub(super) struct CheckIn {
    pub connection: Http1,
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
    connection: Http1,
    since: Instant,
}

impl Pools {
    /// Empty pools for `workers` worker threads, reusing connections whose address
    /// `membership` holds.
    pub(super) fn new(
        workers: usize,
        connections: Arc<Connections>,
        membership: Membership,
    ) -> Self {
        Self::with_limit(workers, POOL_MAX_IDLE, connections, membership)
    }

    fn with_limit(
        workers: usize,
        max_idle: usize,
        connections: Arc<Connections>,
        membership: Membership,
    ) -> Self {
        Self {
            pools: PerWorker::new(workers, Mutex::default),
            max_idle,
            connections,
            membership,
        }
    }

    /// The calling worker's most recently used idle connection that is still open, within
    /// its time and to one of the upstream's addresses.
    pub(super) fn take(&self) -> Option<Http1> {
        let mut pool = self.pools.mine().lock().ok()?;
        while let Some(idle) = pool.connections.pop_back() {
            if self.usable(&idle) {
                return Some(idle.connection);
            }
        }
        None
    }

    /// An idle connection from any worker's pool: for a request that finds no slot free to
    /// dial its own (it is driven by the thread that made it, wherever it is used).
    pub(super) fn take_any(&self) -> Option<Http1> {
        self.pools.all().iter().find_map(|pool| {
            let mut pool = pool.lock().ok()?;
            while let Some(idle) = pool.connections.pop_back() {
                if self.usable(&idle) {
                    return Some(idle.connection);
                }
            }
            None
        })
    }

    fn usable(&self, idle: &IdleConnection) -> bool {
        idle.since.elapsed() < POOL_IDLE_TIMEOUT
            && !idle.connection.sender.is_closed()
            && self.membership.holds(idle.connection.peer)
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
        if self.connection.sender.is_closed() || !self.pools.membership.holds(self.connection.peer)
        {
            return;
        }
        {
            let Ok(mut pool) = self.pools.pools.mine().lock() else {
                return;
            };
            // Read under the pool's lock: `retire` sets the flag before it empties the
            // pools, so a connection is either emptied out with them or never put back.
            if pool.connections.len() >= self.pools.max_idle || self.pools.connections.is_retired()
            {
                return;
            }
            pool.connections.push_back(IdleConnection {
                connection: self.connection,
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
    /// on the way) and those to an address `membership` no longer holds; returns when the
    /// oldest one left expires.
    fn reap(&mut self, now: Instant, membership: &Membership) -> Option<Instant> {
        self.connections
            .retain(|idle| membership.holds(idle.connection.peer));
        while let Some(oldest) = self.connections.front() {
            let expires = oldest.since + POOL_IDLE_TIMEOUT;
            if expires > now && !oldest.connection.sender.is_closed() {
                return Some(expires);
            }
            self.connections.pop_front();
        }
        None
    }
}

/// Closes the expired connections of the calling worker's pool, and those whose address left
/// the upstream's set as soon as it changes, until the pool is empty.
async fn reap(pools: Arc<Pools>) {
    let mut membership = pools.membership.clone();
    loop {
        membership.mark_seen();
        let next = {
            let Ok(mut pool) = pools.pools.mine().lock() else {
                return;
            };
            let next = pool.reap(Instant::now(), &membership);
            pool.reaping = next.is_some();
            next
        };
        match next {
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = membership.changed() => {}
            },
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
                connection: Http1 { sender, peer: None },
                since: ago(idle_for),
            });
            app_ends.push(app_end);
        }
        let next = pool.reap(Instant::now(), &Membership::default()).unwrap();
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
        let pools = Arc::new(Pools::new(
            1,
            Arc::new(Connections::new(8)),
            Membership::default(),
        ));
        let (sender, mut app_end) = connection(&listener).await;
        {
            let mut pool = pools.pools.mine().lock().unwrap();
            pool.connections.push_back(IdleConnection {
                connection: Http1 { sender, peer: None },
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
        let pools = Arc::new(Pools::with_limit(
            1,
            2,
            Arc::new(Connections::new(8)),
            Membership::default(),
        ));
        let mut app_ends = Vec::new();
        for _ in 0..3 {
            let (sender, app_end) = connection(&listener).await;
            CheckIn {
                connection: Http1 { sender, peer: None },
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
        let pools = Pools::new(1, Arc::new(Connections::new(8)), Membership::default());
        let (older, _older_end) = connection(&listener).await;
        let (newer, _newer_end) = connection(&listener).await;
        let (expired, _expired_end) = connection(&listener).await;
        {
            let mut pool = pools.pools.mine().lock().unwrap();
            for (sender, idle_for) in [(older, 20), (newer, 10), (expired, 100)] {
                pool.connections.push_back(IdleConnection {
                    connection: Http1 { sender, peer: None },
                    since: ago(idle_for),
                });
            }
        }
        // The back holds an expired one (as after a clock jump): skipped, then the newest.
        assert!(pools.take().is_some());
        assert_eq!(pools.pools.mine().lock().unwrap().connections.len(), 1);
    }

    #[tokio::test]
    async fn connections_to_an_address_that_left_the_set_close_and_are_not_put_back() {
        use super::super::discovery::Addresses;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let (set, addresses) = tokio::sync::watch::channel(Addresses::from([peer]));
        let pools = Arc::new(Pools::new(
            1,
            Arc::new(Connections::new(8)),
            Membership::new(Some(addresses)),
        ));
        let (idle, mut idle_end) = connection(&listener).await;
        let (in_flight, mut in_flight_end) = connection(&listener).await;
        CheckIn {
            connection: Http1 {
                sender: idle,
                peer: Some(peer),
            },
            pools: pools.clone(),
        }
        .give_back();
        set.send_replace(Addresses::from([]));
        CheckIn {
            connection: Http1 {
                sender: in_flight,
                peer: Some(peer),
            },
            pools: pools.clone(),
        }
        .give_back();
        assert!(
            closed(&mut in_flight_end).await,
            "the one whose response ended after the change is not put back"
        );
        assert!(
            closed(&mut idle_end).await,
            "the idle one closes when the set changes"
        );
        assert!(pools.take().is_none());
    }
}
