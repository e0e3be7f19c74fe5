//! Spreads connections evenly over the worker threads. Every worker accepts on the same
//! listening socket, and whichever the kernel wakes first takes what is queued, so a burst of
//! connections can land mostly on one thread while another idles. The worker that accepts a
//! connection hands it to the worker with the fewest open connections, if that is another one,
//! before its handshake; from then on that worker alone serves it, as HAProxy's threads do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::connection::caps::CapSlots;
use crate::metrics::Metrics;

/// The open connections of every worker thread and the way to hand one a connection.
#[derive(Debug)]
pub(crate) struct Balance {
    /// Open connections per worker: what `assign` decides by.
    open: Box<[Arc<AtomicUsize>]>,
    /// The same counts, exported as `certgate_worker_connections`.
    gauges: Box<[Gauge]>,
    inboxes: Box<[UnboundedSender<HandedOff>]>,
}

/// A worker thread's place in the balance.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub index: usize,
    pub balance: Arc<Balance>,
}

/// An accepted connection on its way to the worker that will serve it, with the slots it
/// holds.
#[derive(Debug)]
pub(crate) struct HandedOff {
    pub(super) tcp: std::net::TcpStream,
    pub(super) client_addr: SocketAddr,
    pub(super) slots: (OwnedSemaphorePermit, CapSlots),
    pub(super) load: Load,
}

/// One open connection counted on its worker until dropped.
#[derive(Debug)]
pub(crate) struct Load {
    open: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

impl Balance {
    /// The balance of `workers` threads and each one's inbox of handed-off connections.
    pub(crate) fn new(
        metrics: &Metrics,
        workers: usize,
    ) -> (Arc<Self>, Vec<UnboundedReceiver<HandedOff>>) {
        let (inboxes, receivers) = (0..workers)
            .map(|_| unbounded_channel())
            .unzip::<_, _, Vec<_>, _>();
        let balance = Self {
            open: (0..workers).map(|_| Arc::default()).collect(),
            gauges: (0..workers)
                .map(|index| metrics.worker_connections(index))
                .collect(),
            inboxes: inboxes.into_boxed_slice(),
        };
        (Arc::new(balance), receivers)
    }

    /// Which worker serves a connection that worker `from` accepted: the one with the fewest
    /// open connections, `from` itself on a tie. The connection is counted there at once, so
    /// that the next one of a burst already sees it.
    pub(crate) fn assign(&self, from: usize) -> (usize, Load) {
        let mut chosen = from;
        let mut least = self
            .open
            .get(from)
            .map_or(usize::MAX, |open| open.load(Ordering::Relaxed));
        for (index, open) in self.open.iter().enumerate() {
            let open = open.load(Ordering::Relaxed);
            if open < least {
                chosen = index;
                least = open;
            }
        }
        (chosen, self.count(chosen))
    }

    /// Counts one more open connection on worker `index` (on the last worker if there is no
    /// such worker, which `assign` never asks for).
    pub(crate) fn count(&self, index: usize) -> Load {
        let index = index.min(self.open.len().saturating_sub(1));
        let open: Arc<AtomicUsize> = self.open.get(index).cloned().unwrap_or_default();
        let gauge = self.gauges.get(index).cloned().unwrap_or_default();
        open.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        Load { open, gauge }
    }

    /// Hands `connection` to worker `to`; gives it back if that worker no longer takes any.
    pub(crate) fn hand_off(&self, to: usize, connection: HandedOff) -> Result<(), HandedOff> {
        match self.inboxes.get(to) {
            Some(inbox) => inbox.send(connection).map_err(|refused| refused.0),
            None => Err(connection),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn balance(workers: usize) -> (Arc<Balance>, Vec<UnboundedReceiver<HandedOff>>) {
        Balance::new(&Metrics::new(), workers)
    }

    fn open(balance: &Balance) -> Vec<usize> {
        let open: Vec<usize> = balance
            .open
            .iter()
            .map(|open| open.load(Ordering::Relaxed))
            .collect();
        let exported: Vec<usize> = balance
            .gauges
            .iter()
            .map(|gauge| usize::try_from(gauge.get()).unwrap())
            .collect();
        assert_eq!(open, exported, "the metric shows the balance's own counts");
        open
    }

    #[test]
    fn a_burst_accepted_by_one_worker_is_spread_over_all() {
        let (balance, _inboxes) = balance(3);
        let mut held = Vec::new();
        for _ in 0..30 {
            let (to, load) = balance.assign(0);
            assert!(to < 3);
            held.push(load);
        }
        assert_eq!(open(&balance), [10, 10, 10]);
    }

    #[test]
    fn the_accepting_worker_keeps_the_connection_on_a_tie() {
        let (balance, _inboxes) = balance(2);
        let (to, _first) = balance.assign(1);
        assert_eq!(to, 1);
        let (to, _second) = balance.assign(1);
        assert_eq!(to, 0, "worker 1 has one more than worker 0");
    }

    #[tokio::test]
    async fn a_worker_that_has_ended_gives_the_connection_back() {
        let (balance, mut inboxes) = balance(2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tcp, client_addr) = listener.accept().unwrap();
        let caps = crate::connection::caps::Caps::new(&crate::settings::Limits::default());
        let held = caps.take(client_addr.ip()).unwrap();
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let (to, load) = balance.assign(0);
        assert_eq!(to, 0);
        let handed = HandedOff {
            tcp,
            client_addr,
            slots: (permit, held),
            load,
        };
        drop(inboxes.remove(1));
        let back = balance.hand_off(1, handed).unwrap_err();
        assert_eq!(back.client_addr, client_addr);
        balance.hand_off(0, back).unwrap();
        assert_eq!(inboxes[0].recv().await.unwrap().client_addr, client_addr);
    }

    #[test]
    fn a_closed_connection_is_no_longer_counted() {
        let (balance, _inboxes) = balance(2);
        let loads: Vec<Load> = (0..4).map(|_| balance.assign(0).1).collect();
        assert_eq!(open(&balance), [2, 2]);
        drop(loads);
        assert_eq!(open(&balance), [0, 0]);
        // Worker 1's connections closed first: the next ones go to it.
        let _a = balance.count(0);
        let (to, _b) = balance.assign(0);
        assert_eq!(to, 1);
    }
}
