//! The gap clock that bounds a stalled body (`requestBodyIdleMs`, `upstreamIdleMs`) and the
//! reasons a request is cut off by it.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The gap clock of one body: armed when the body starts waiting for its sender, disarmed by
/// every frame that arrives.
#[derive(Debug)]
pub(crate) struct GapClock {
    limit: Duration,
    waiting: bool,
}

impl GapClock {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            limit,
            waiting: false,
        }
    }

    /// A frame arrived (or the body ended): the next wait starts a new gap.
    pub(crate) fn frame(&mut self) {
        self.waiting = false;
    }

    /// The body is waiting for its sender: starts the gap if this is its first wait, and
    /// reports whether the gap has lasted `limit`.
    pub(crate) fn waiting(&mut self, mut timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> bool {
        if !self.waiting {
            self.waiting = true;
            timer.as_mut().reset(Instant::now() + self.limit);
        }
        timer.poll(cx).is_ready()
    }
}
