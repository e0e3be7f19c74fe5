//! The load of one endpoint: its requests in flight (what least-request compares), and
//! whether it drains (its address left the group), with what tells its drain that the last
//! request ended; and the pools a response's connection goes back to when it ends. Each worker thread counts the requests it starts and ends in a count of its
//! own (`PerWorker`), so that a request writes no cache line another thread writes too; the
//! requests in flight are the sum.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use tokio::sync::Notify;

use super::pool::{CheckIn, Pools};
use crate::workers::PerWorker;

/// Requests in flight at an endpoint, and whether it drains.
#[derive(Debug)]
pub(super) struct Load {
    /// Each worker's requests started minus those ended there (below zero on a thread where
    /// requests that started on another one ended).
    in_flight: PerWorker<AtomicIsize>,
    draining: AtomicBool,
    /// Notified when a draining endpoint's last request ends.
    drained: Notify,
    /// The endpoint's HTTP/1.1 connection pools.
    pools: Arc<Pools>,
}

/// A request counted in flight at its endpoint until dropped (with the response body); what
/// gives the response's HTTP/1.1 connection back to the endpoint's pool.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Load>);

impl InFlight {
    /// Gives `checkin`'s connection back to the endpoint's pool of the calling worker.
    pub(super) fn give_back(&self, checkin: CheckIn) {
        checkin.give_back(&self.0.pools);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl Load {
    /// No request in flight, counted on `workers` worker threads, at an endpoint with
    /// `pools`.
    pub(super) fn new(workers: usize, pools: Arc<Pools>) -> Self {
        Self {
            in_flight: PerWorker::new(workers, || AtomicIsize::new(0)),
            draining: AtomicBool::new(false),
            drained: Notify::new(),
            pools,
        }
    }

    /// Counts a request in flight until the returned guard drops.
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.shared_mine().fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Counts a request of `start` out; the last one of a draining endpoint wakes its drain.
    fn end(&self) {
        self.in_flight.shared_mine().fetch_sub(1, Ordering::AcqRel);
        if self.is_draining() && self.in_flight() == 0 {
            self.drained.notify_one();
        }
    }

    /// The requests in flight: the sum of the threads' counts (0 when, read while a request
    /// ended on another thread than its own, they add up below zero).
    pub(super) fn in_flight(&self) -> usize {
        let sum: isize = self
            .in_flight
            .all()
            .map(|count| count.load(Ordering::Acquire))
            .sum();
        usize::try_from(sum).unwrap_or(0)
    }

    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(super) fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Returns once no request is in flight.
    pub(super) async fn drained(&self) {
        while self.in_flight() > 0 {
            self.drained.notified().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Load;
    use crate::upstream::limit::Connections;
    use crate::upstream::pool::Pools;
    use crate::workers::enter;

    #[tokio::test]
    async fn requests_ended_on_another_worker_thread_than_their_own_count_out_and_end_a_drain() {
        let pools = Arc::new(Pools::new(2, Arc::new(Connections::new(8))));
        let load = Arc::new(Load::new(2, pools));
        // Two requests start on worker 0 and end on worker 1.
        enter(0);
        let requests = vec![load.start(), load.start()];
        assert_eq!(load.in_flight(), 2);
        load.drain();
        let drained = tokio::spawn({
            let load = load.clone();
            async move { load.drained().await }
        });
        let mut requests = requests.into_iter();
        let mut end_on_worker_1 = || {
            let request = requests.next().unwrap();
            std::thread::spawn(move || {
                enter(1);
                drop(request);
            })
            .join()
            .unwrap();
        };
        end_on_worker_1();
        assert_eq!(load.in_flight(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drained.is_finished(), "one request is still in flight");
        end_on_worker_1();
        assert_eq!(load.in_flight(), 0);
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .expect("the last request's end wakes the drain")
            .unwrap();
    }
}
