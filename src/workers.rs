//! Worker threads: `certgate run` serves connections on a fixed number of threads, each with a
//! runtime of its own (`Server::bind`). The thread setup numbers each one (`enter`), and a
//! `PerWorker` holds one value per worker thread, sized by that same count, giving each thread
//! its own, each on cache lines of its own: one thread's writes never make another's copy of its
//! value stale (false sharing).

use std::cell::Cell;

use crossbeam_utils::CachePadded;

thread_local! {
    /// Which worker thread this is (0 outside one: without worker threads everything runs on
    /// the caller's runtime, which counts as the only worker).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many worker threads `certgate run` serves connections on: one per core.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Marks the calling thread as worker `index` (of the count its server was bound with).
pub(crate) fn enter(index: usize) {
    INDEX.set(index);
}

/// One `T` per worker thread.
#[derive(Debug)]
pub(crate) struct PerWorker<T> {
    slots: Box<[CachePadded<T>]>,
}

impl<T> PerWorker<T> {
    /// A value made by `make` for each of `workers` threads (one when there are none).
    pub(crate) fn new(workers: usize, make: impl FnMut() -> T) -> Self {
        Self {
            slots: std::iter::repeat_with(make)
                .map(CachePadded::new)
                .take(workers.max(1))
                .collect(),
        }
    }

    /// The calling thread's value.
    pub(crate) fn mine(&self) -> &T {
        let index = INDEX.get();
        debug_assert!(
            index < self.slots.len(),
            "worker {index} of {}",
            self.slots.len()
        );
        // Every PerWorker of a server is made with the server's worker count, so a worker's
        // index is always in range; the first slot only serves a thread that is none of them.
        self.slots.get(index).unwrap_or(&self.slots[0])
    }

    /// Every worker thread's value.
    pub(crate) fn all(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|slot| &**slot)
    }
}

#[cfg(test)]
mod tests {
    use super::{PerWorker, enter};

    #[test]
    fn each_worker_thread_gets_its_own_slot() {
        let slots = PerWorker::new(3, || std::sync::atomic::AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for index in 0..3 {
                let slots = &slots;
                scope.spawn(move || {
                    enter(index);
                    slots
                        .mine()
                        .fetch_add(index + 1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        let counts: Vec<usize> = slots
            .slots
            .iter()
            .map(|slot| slot.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [1, 2, 3]);
    }

    #[test]
    fn no_worker_threads_still_has_one_slot() {
        let slots = PerWorker::new(0, || 7);
        assert_eq!(*slots.mine(), 7);
    }
}
