//! A counter each worker thread counts into a copy of its own (`PerWorker`): a request counts
//! without writing to a cache line another thread also writes, and a scrape adds the copies
//! up. For the series counted on every request of many threads at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::workers::PerWorker;

/// A Prometheus counter, counted per worker thread; clones count into the same copies.
#[derive(Debug, Clone)]
pub(crate) struct WorkerCounter {
    counts: Arc<PerWorker<AtomicU64>>,
}

impl Default for WorkerCounter {
    /// A counter at zero with a copy for each of `certgate run`'s worker threads.
    fn default() -> Self {
        Self {
            counts: Arc::new(PerWorker::new(crate::workers::default_count(), || {
                AtomicU64::new(0)
            })),
        }
    }
}

impl WorkerCounter {
    /// Counts one, in the calling thread's copy.
    pub(crate) fn inc(&self) {
        self.counts.shared_mine().fetch_add(1, Ordering::Relaxed);
    }

    /// The count of every thread.
    pub(crate) fn get(&self) -> u64 {
        self.counts
            .all()
            .map(|count| count.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for WorkerCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for WorkerCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::WorkerCounter;
    use crate::workers::enter;

    #[test]
    fn the_counts_of_every_thread_add_up_and_encode_as_a_counter() {
        let counter = WorkerCounter::default();
        std::thread::scope(|scope| {
            for index in 0..4 {
                let counter = counter.clone();
                scope.spawn(move || {
                    enter(index);
                    for _ in 0..=index {
                        counter.inc();
                    }
                });
            }
        });
        assert_eq!(counter.get(), 1 + 2 + 3 + 4);
        let mut registry = Registry::default();
        registry.register("requests", "Requests.", counter);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE requests counter"), "{text}");
        assert!(text.contains("requests_total 10"), "{text}");
    }
}
