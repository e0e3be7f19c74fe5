//! The gap clock that bounds a stalled body (`requestBodyIdleMs`, `upstreamIdleMs`) and the
//! reasons a request is cut off by it.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Why a request was cut off mid-body; the `outcome` in logs and the `reason` label of
/// `certgate_stalled_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StallReason {
    /// The client sent no request-body bytes for `requestBodyIdleMs`.
    RequestBodyIdle,
    /// The app sent no response-body bytes for `upstreamIdleMs`.
    UpstreamIdle,
}

impl StallReason {
    /// Every reason, for metric series that exist at zero.
    pub(crate) const ALL: [Self; 2] = [Self::RequestBodyIdle, Self::UpstreamIdle];

    /// The name used in logs and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::RequestBodyIdle => "request_body_idle",
            Self::UpstreamIdle => "upstream_idle",
        }
    }
}

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
