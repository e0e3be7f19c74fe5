//! The drain flags, raised once when shutdown begins. First readiness is withdrawn: `/readyz`
//! answers 503 while the listener still accepts and serves for `timeouts.drainDelayMs`. Then
//! the drain starts: requests that arrive on open connections get 503 and a close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether shutdown has begun; clones share one state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Draining(Arc<State>);

#[derive(Debug, Default)]
struct State {
    not_ready: AtomicBool,
    draining: AtomicBool,
}

impl Draining {
    /// Whether the drain has started (accepting has stopped).
    pub(crate) fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Whether this replica should get new traffic: false from the moment shutdown is asked
    /// for, through the drain delay and the drain.
    pub(crate) fn is_ready(&self) -> bool {
        !self.0.not_ready.load(Ordering::Relaxed)
    }

    /// Withdraws readiness, for the drain delay; never undone.
    pub(crate) fn withdraw(&self) {
        self.0.not_ready.store(true, Ordering::Relaxed);
    }

    /// Starts the drain (and withdraws readiness, if not done yet); never undone.
    pub(crate) fn start(&self) {
        self.withdraw();
        self.0.draining.store(true, Ordering::Relaxed);
    }
}

/// What the server tells open connections, through one `watch` channel: that shutdown has
/// begun, or that a reload replaced the config (the generation) they were accepted under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CloseSignal {
    /// Shutdown's drain has started: accepting stops and connections close.
    pub shutdown: bool,
    /// The generation new connections are served under; connections of an older one close.
    pub generation: u64,
    /// The newest config's `timeouts.reloadGraceMs`.
    pub reload_grace: std::time::Duration,
}

/// Why a connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Shutdown: finish what is in flight, bounded by `shutdownGraceMs` for the whole server.
    Shutdown,
    /// A reload replaced the connection's config: finish what is in flight, for at most
    /// `grace` (zero: cut at once).
    Reloaded { grace: std::time::Duration },
}

impl CloseSignal {
    /// Whether a connection accepted under `generation` must close, and why.
    pub(crate) fn closes(&self, generation: u64) -> Option<Close> {
        if self.shutdown {
            Some(Close::Shutdown)
        } else if self.generation != generation {
            Some(Close::Reloaded {
                grace: self.reload_grace,
            })
        } else {
            None
        }
    }
}
