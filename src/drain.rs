//! The drain flag: raised once when shutdown begins. `/readyz` answers 503 from then on and
//! requests that arrive on open connections get 503 and a close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether shutdown has begun; clones share one flag.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Raises the flag; it is never lowered.
    pub(crate) fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
