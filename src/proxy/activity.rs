//! Requests in flight on a connection, for its idle deadline and for parking: a request is in
//! flight from the moment hyper hands it over until its response body has been sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Requests in flight on a connection and when the last one started or ended.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Whether the last request came over HTTP/1.x.
    http1: AtomicBool,
    /// Set to end the connection's HTTP session once nothing is in flight (parking).
    park: AtomicBool,
    /// The time base of `last_ms`.
    started: Instant,
    /// Milliseconds after `started` when a request last started or ended.
    last_ms: AtomicU64,
    /// How many requests have ended.
    ended: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            http1: AtomicBool::new(false),
            park: AtomicBool::new(false),
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            ended: AtomicU64::new(0),
        }
    }

    /// Marks a request in flight until the returned token is dropped.
    pub(super) fn start(self: &Arc<Self>, http1: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.http1.store(http1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Since when nothing has been in flight, or `None` while a request is.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Relaxed) == 0)
            .then(|| self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    pub(super) fn last_was_http1(&self) -> bool {
        self.http1.load(Ordering::Relaxed)
    }

    pub(super) fn set_park(&self, park: bool) {
        self.park.store(park, Ordering::Relaxed);
    }

    /// How many requests have ended: a read of the client's bytes that is not followed by a
    /// change here may hold a request hyper has not finished reading.
    pub(super) fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// Asked to park, and nothing in flight.
    pub(super) fn parks_now(&self) -> bool {
        self.park.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Relaxed) == 0
    }
}

/// One request in flight; dropping it ends the request, whatever ended it.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.ended.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
