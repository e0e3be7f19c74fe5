//! One lookup per key at a time: handshakes that need the same OCSP answer or the same CRL
//! distribution point at once wait for the lookup already in flight instead of each asking.
//! A waiter is never stalled by another connection going away: when the connection doing the
//! lookup is dropped, the next waiter takes the lookup over.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::watch;

/// Lookups in flight, by key.
#[derive(Debug)]
pub(super) struct Coalesce<K, V> {
    in_flight: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
}

impl<K, V> Default for Coalesce<K, V> {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

/// What a caller of `Coalesce::run` got.
#[derive(Debug)]
pub(super) enum Joined<V> {
    /// It did the lookup itself.
    Led(V),
    /// It waited for another caller's lookup.
    Followed(V),
}

impl<K: Eq + Hash + Clone, V: Clone> Coalesce<K, V> {
    /// Runs `lookup` for `key` unless one is in flight, in which case its result is shared.
    pub(super) async fn run<F, Fut>(&self, key: K, lookup: F) -> Joined<V>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = V>,
    {
        loop {
            let role = {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                match in_flight.get(&key) {
                    // A receiver whose sender is gone belongs to a cancelled lookup.
                    Some(waiting) if waiting.has_changed().is_ok() => Err(waiting.clone()),
                    _ => {
                        let (done, waiting) = watch::channel(None);
                        in_flight.insert(key.clone(), waiting);
                        Ok(done)
                    }
                }
            };
            match role {
                Ok(done) => {
                    // Declared after `done`, so dropped before it: a waiter woken by a
                    // cancelled lookup finds the key free.
                    let _leader = Leader {
                        owner: self,
                        key: &key,
                    };
                    let value = lookup().await;
                    done.send_replace(Some(value.clone()));
                    return Joined::Led(value);
                }
                Err(mut waiting) => {
                    if let Ok(value) = waiting.wait_for(Option::is_some).await
                        && let Some(value) = value.clone()
                    {
                        return Joined::Followed(value);
                    }
                    // The connection doing the lookup went away: take it over.
                }
            }
        }
    }
}

/// Frees the key when the lookup ends, however it ends.
struct Leader<'a, K: Eq + Hash, V> {
    owner: &'a Coalesce<K, V>,
    key: &'a K,
}

impl<K: Eq + Hash, V> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        let mut in_flight = self
            .owner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        in_flight.remove(self.key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{Coalesce, Joined};

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_lookup() {
        let coalesce = Arc::new(Coalesce::<u8, u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (coalesce, calls) = (coalesce.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                coalesce
                    .run(1, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        7
                    })
                    .await
            }));
        }
        let mut led = 0;
        for task in tasks {
            match task.await.unwrap() {
                Joined::Led(value) => {
                    led += 1;
                    assert_eq!(value, 7);
                }
                Joined::Followed(value) => assert_eq!(value, 7),
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(led, 1);
        // Once done, the next caller looks up again.
        assert!(matches!(
            coalesce.run(1, || async { 8 }).await,
            Joined::Led(8)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_over_when_the_lookup_is_cancelled() {
        let coalesce = Arc::new(Coalesce::<u8, u32>::default());
        let first = {
            let coalesce = coalesce.clone();
            tokio::spawn(async move { coalesce.run(1, std::future::pending::<u32>).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = {
            let coalesce = coalesce.clone();
            tokio::spawn(async move { coalesce.run(1, || async { 9 }).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!second.is_finished(), "the second caller did not wait");
        first.abort();
        assert!(matches!(second.await.unwrap(), Joined::Led(9)));
    }
}
