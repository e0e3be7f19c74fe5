//! The load of one endpoint: its requests in flight (what least-request compares), and
//! whether it drains (its address left the group), with what tells its drain that the last
//! request ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Requests in flight at an endpoint, and whether it drains.
#[derive(Debug, Default)]
pub(super) struct Load {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    /// Notified when a draining endpoint's last request ends.
    drained: Notify,
}

/// A request counted in flight at its endpoint until dropped (with the response body).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Load>);

impl Load {
    /// Counts a request in flight until the returned guard drops.
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
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

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && self.0.is_draining() {
            self.0.drained.notify_one();
        }
    }
}
