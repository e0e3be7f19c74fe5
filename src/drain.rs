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
