//! An admitted connection's standing: whenever what any generation holds changes (a CRL
//! added or replaced, a responder reporting a certificate revoked), its chain is checked again
//! from what is held and learned, by a task of its own and before the connection's next
//! request is forwarded. Once refused, the connection and every WebSocket piped from it are
//! closed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::watch;

use super::checker::Revocation;
use super::error::RevocationFailure;
use super::memory::Memory;
use super::path::Path;

/// One open connection's standing with its app's revocation sources; shared by the
/// connection and the upgraded streams it hands over to.
#[derive(Debug)]
pub struct Standing {
    revocation: Arc<Revocation>,
    /// What the server learned; its count of changes is read by every request.
    memory: Arc<Memory>,
    /// Where the admission check looked: the same path is checked again.
    path: Path,
    /// The generation of what is held that the chain was last checked against.
    seen: AtomicU64,
    refused: watch::Sender<Option<Arc<RevocationFailure>>>,
    /// Whether `refused` holds a refusal, for the request path.
    is_refused: AtomicBool,
    watcher: OnceLock<Watcher>,
}

/// Waits for a connection to be refused.
#[derive(Debug)]
pub struct RevokedLater(watch::Receiver<Option<Arc<RevocationFailure>>>);

impl Revocation {
    /// Watches the connection admitted along `path` against what was held at `generation`
    /// (read before the check, so a change during it is not missed).
    pub fn watch(self: &Arc<Self>, path: Path, generation: u64) -> Arc<Standing> {
        let memory = self.memory().clone();
        let changes = memory.subscribe();
        let standing = Arc::new(Standing {
            revocation: self.clone(),
            memory,
            path,
            seen: AtomicU64::new(generation),
            refused: watch::Sender::new(None),
            is_refused: AtomicBool::new(false),
            watcher: OnceLock::new(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(watch_changes(
                Arc::downgrade(&standing),
                changes,
                generation,
            ));
            let _ = standing.watcher.set(Watcher(task));
        }
        standing
    }
}

impl Standing {
    /// Whether a request on this connection may still be forwarded: three atomic reads while
    /// nothing held has changed since the last check.
    pub fn admits_request(&self) -> bool {
        if self.is_refused.load(Ordering::Acquire) {
            return false;
        }
        let generation = self.memory.generation();
        generation == self.seen.load(Ordering::Acquire) || self.check(generation).is_ok()
    }

    /// Resolves once the connection is refused.
    pub fn refused(&self) -> RevokedLater {
        RevokedLater(self.refused.subscribe())
    }

    /// Checks the chain against what is held at `generation`; a refusal sticks.
    fn check(&self, generation: u64) -> Result<(), Arc<RevocationFailure>> {
        if let Some(refusal) = self.refused.borrow().clone() {
            return Err(refusal);
        }
        let verdict = self.revocation.check_held(&self.path);
        self.seen.fetch_max(generation, Ordering::AcqRel);
        verdict.map_err(|refusal| {
            let refusal = Arc::new(refusal);
            self.is_refused.store(true, Ordering::Release);
            self.refused.send_if_modified(|held| {
                let first = held.is_none();
                if first {
                    *held = Some(refusal.clone());
                }
                first
            });
            refusal
        })
    }
}

impl RevokedLater {
    /// The refusal, once there is one; never resolves while the connection stands.
    pub async fn wait(&mut self) -> Arc<RevocationFailure> {
        let refusal = match self.0.wait_for(Option::is_some).await {
            Ok(refusal) => refusal.clone(),
            // The standing is gone with its connection: nothing will refuse it any more.
            Err(_) => None,
        };
        match refusal {
            Some(refusal) => refusal,
            None => std::future::pending().await,
        }
    }
}

/// The re-check task: ends with its standing, or once it refused the connection.
#[derive(Debug)]
struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn watch_changes(standing: Weak<Standing>, mut changes: watch::Receiver<u64>, seen: u64) {
    let mut generation = *changes.borrow_and_update();
    // A change between the admission check and the subscription is checked at once.
    while generation == seen {
        if changes.changed().await.is_err() {
            return;
        }
        generation = *changes.borrow_and_update();
    }
    loop {
        let Some(standing) = standing.upgrade() else {
            return;
        };
        if standing.check(generation).is_err() {
            return;
        }
        drop(standing);
        if changes.changed().await.is_err() {
            return;
        }
        generation = *changes.borrow_and_update();
    }
}
