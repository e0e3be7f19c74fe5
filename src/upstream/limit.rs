//! How many connections one app's upstream client may have open
//! (`limits.maxUpstreamConnectionsPerApp`), and whether a reload retired the client. A
//! connection holds a slot from its dial until its socket closes; a request that finds none
//! free waits for one, or for an idle connection coming back, up to `upstreamConnectMs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::UpstreamError;

/// The connection slots of one app's upstream client.
#[derive(Debug)]
pub(super) struct Connections {
    slots: Arc<Semaphore>,
    /// Set once, by `retire`: no dial from then on, and no connection goes back to a pool.
    retired: AtomicBool,
    /// Wakes the requests waiting for a connection when one becomes usable.
    usable: Notify,
    /// Requests waiting in `wait`; a connection coming back wakes them only when there are.
    waiting: AtomicUsize,
}

/// A slot for a new connection; its connection gives it back when its socket closes.
pub(super) type Slot = OwnedSemaphorePermit;

/// What a waiting request got.
pub(super) enum Waited<T> {
    /// A free slot: dial.
    Slot(Slot),
    /// A connection that came back or was opened meanwhile.
    Connection(T),
}

impl Connections {
    /// Slots for `max` connections.
    pub(super) fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            retired: AtomicBool::new(false),
            usable: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Whether the client was retired: it dials no more and keeps no idle connection.
    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Retires the client; requests waiting for a slot fail at once.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.slots.close();
        self.usable.notify_waiters();
    }

    /// A free slot now, if there is one.
    pub(super) fn try_slot(&self) -> Result<Option<Slot>, UpstreamError> {
        if self.is_retired() {
            return Err(UpstreamError::Retired);
        }
        Ok(self.slots.clone().try_acquire_owned().ok())
    }

    /// Says that a connection became usable (an idle one came back, or a new one opened), for
    /// the requests waiting for one: a load when none waits.
    pub(super) fn connection_usable(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.usable.notify_waiters();
        }
    }

    /// Waits until `deadline` for a free slot or for `take` to find a connection; `Saturated`
    /// when neither came in time.
    pub(super) async fn wait<T>(
        &self,
        deadline: Instant,
        mut take: impl FnMut() -> Option<T>,
    ) -> Result<Waited<T>, UpstreamError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            // Registered before looking, so a connection that comes back in between wakes it.
            let usable = self.usable.notified();
            tokio::pin!(usable);
            usable.as_mut().enable();
            if self.is_retired() {
                return Err(UpstreamError::Retired);
            }
            if let Some(connection) = take() {
                return Ok(Waited::Connection(connection));
            }
            tokio::select! {
                slot = self.slots.clone().acquire_owned() => {
                    return slot.map(Waited::Slot).map_err(|_| UpstreamError::Retired);
                }
                () = &mut usable => {}
                () = tokio::time::sleep_until(deadline) => return Err(UpstreamError::Saturated),
            }
        }
    }
}

/// Counts a request out of the waiting ones however its wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
