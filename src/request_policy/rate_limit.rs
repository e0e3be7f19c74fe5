//! Rate limiting per client identity (docs/policy.md "Rate limiting"): one token bucket per client
//! certificate hash when a CA or a pin vouches for it, or per client address (IPv6: per /64)
//! for requests without such a certificate, in a table of bounded size. Time is tokio's clock, so tests drive it with a
//! paused clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// An app's `rateLimit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second (may be fractional, e.g. 0.5 for one request every 2 s).
    pub requests_per_second: f64,
    /// Bucket size: how many requests may arrive at once after a quiet period.
    pub burst: f64,
}

/// Keys tracked at most per app, unless the limiter is built with another bound. At about
/// 100 bytes an entry this bounds an app's table near 10 MB.
pub(crate) const MAX_KEYS: usize = 100_000;

/// Whom a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// SHA-256 of the client's leaf certificate.
    Certificate([u8; 32]),
    /// The client's address, for connections without a certificate a CA or a pin vouches
    /// for, as `Key::address` makes it.
    Address(IpAddr),
}

impl Key {
    /// The bucket of a client without a certificate. An IPv4-mapped IPv6 address
    /// (`::ffff:6.6.6.6`, as a dual-stack socket or a PROXY v2 header may carry it) is the
    /// IPv4 client it maps, and an IPv6 client is keyed by its /64: that is what one
    /// subscriber or host is given, so keying by /128 would let it rotate through 2^64
    /// buckets.
    pub(crate) fn address(client: IpAddr) -> Self {
        let client = match client {
            IpAddr::V4(_) => client,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & IPV6_PREFIX_64)),
            },
        };
        Self::Address(client)
    }
}

/// The network bits of an IPv6 /64.
const IPV6_PREFIX_64: u128 = u128::MAX << 64;

/// The token buckets of one app.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    max_keys: usize,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter holding at most `max_keys` buckets (at least 1).
    pub(crate) fn new(limit: RateLimit, max_keys: usize) -> Self {
        Self {
            limit,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; when the bucket is empty, returns how long until one is back.
    pub(crate) fn check(&self, key: Key) -> Result<(), Duration> {
        let now = Instant::now();
        // A panic while holding the lock leaves the table consistent (each update is one
        // assignment), so a poisoned lock is still usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(&key) && buckets.len() >= self.max_keys {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.limit.burst,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.limit.requests_per_second;
            Err(Duration::from_secs_f64(wait.min(1e9)))
        }
    }

    /// Buckets held right now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.limit.requests_per_second).min(self.limit.burst)
    }

    /// The eviction rule, run only when the table is full and a new key arrives: first every
    /// bucket that has refilled to the brim goes (forgetting it changes no answer: a new
    /// bucket starts full). If that frees less than an eighth of the table, the buckets
    /// untouched for longest go until an eighth is free; a client evicted that way starts
    /// again with a full burst. Freeing an eighth at a time keeps the cost of a full table at
    /// a constant per new key on average.
    fn evict(&self, buckets: &mut HashMap<Key, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| self.refilled(bucket, now) < self.limit.burst);
        let target = self.max_keys - (self.max_keys / 8).max(1);
        if buckets.len() <= target {
            return;
        }
        let excess = buckets.len() - target;
        let mut by_age: Vec<(Instant, Key)> = buckets
            .iter()
            .map(|(key, bucket)| (bucket.updated, *key))
            .collect();
        by_age.select_nth_unstable_by_key(excess - 1, |(updated, _)| *updated);
        for (_, key) in &by_age[..excess] {
            buckets.remove(key);
        }
    }
}

/// Seconds for a `Retry-After` header: the wait rounded up, at least 1.
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_PER_SECOND: RateLimit = RateLimit {
        requests_per_second: 10.0,
        burst: 3.0,
    };

    fn address(last: u8) -> Key {
        Key::Address(IpAddr::from([10, 0, 0, last]))
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_requests_wait_for_tokens() {
        let limiter = RateLimiter::new(TEN_PER_SECOND, MAX_KEYS);
        let key = Key::Certificate([1; 32]);
        for _ in 0..3 {
            assert_eq!(limiter.check(key), Ok(()));
        }
        let wait = limiter.check(key);
        assert_eq!(wait, Err(Duration::from_millis(100)));
        assert_eq!(wait.err().map(retry_after_seconds), Some(1));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(limiter.check(key).is_err());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(limiter.check(key), Ok(()));
        // A long quiet period refills to the burst, never beyond.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert_eq!(limiter.check(key), Ok(()));
        }
        assert!(limiter.check(key).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_has_its_own_bucket() {
        let limiter = RateLimiter::new(TEN_PER_SECOND, MAX_KEYS);
        for _ in 0..3 {
            assert_eq!(limiter.check(address(1)), Ok(()));
        }
        assert!(limiter.check(address(1)).is_err());
        assert_eq!(limiter.check(address(2)), Ok(()));
        assert_eq!(limiter.check(Key::Certificate([1; 32])), Ok(()));
    }

    fn key_of(address: &str) -> Key {
        Key::address(address.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])))
    }

    #[test]
    fn an_ipv4_mapped_address_is_keyed_as_its_ipv4_address() {
        assert_eq!(key_of("::ffff:6.6.6.6"), key_of("6.6.6.6"));
        assert_eq!(key_of("6.6.6.6"), Key::Address(IpAddr::from([6, 6, 6, 6])));
        assert_ne!(key_of("::ffff:6.6.6.7"), key_of("6.6.6.6"));
        // IPv4-compatible (`::6.6.6.6`, deprecated) is an IPv6 address like any other.
        assert_ne!(key_of("::6.6.6.6"), key_of("6.6.6.6"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            key_of("2001:db8:1:2::1"),
            key_of("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key_of("2001:db8:1:2:abcd::9"), key_of("2001:db8:1:2::"));
        assert_ne!(key_of("2001:db8:1:2::1"), key_of("2001:db8:1:3::1"));
        assert_eq!(
            key_of("2001:db8:1:2:3:4:5:6"),
            Key::Address("2001:db8:1:2::".parse().unwrap_or(IpAddr::from([0; 4])))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_bucket_for_a_mapped_address_and_its_ipv4_and_for_a_64() {
        let limiter = RateLimiter::new(TEN_PER_SECOND, MAX_KEYS);
        for address in ["6.6.6.6", "::ffff:6.6.6.6", "6.6.6.6"] {
            assert_eq!(limiter.check(key_of(address)), Ok(()), "{address}");
        }
        assert!(limiter.check(key_of("::ffff:6.6.6.6")).is_err());
        for address in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff"] {
            assert_eq!(limiter.check(key_of(address)), Ok(()), "{address}");
        }
        assert!(limiter.check(key_of("2001:db8::3")).is_err());
        assert_eq!(limiter.check(key_of("2001:db8:0:1::1")), Ok(()));
        assert_eq!(limiter.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_never_grows_past_its_bound_and_full_buckets_go_first() {
        let limiter = RateLimiter::new(TEN_PER_SECOND, 16);
        // Key 0 is drained, so it holds state worth keeping.
        for _ in 0..4 {
            let _ = limiter.check(address(0));
        }
        tokio::time::advance(Duration::from_millis(10)).await;
        for last in 1..16 {
            assert_eq!(limiter.check(address(last)), Ok(()));
        }
        assert_eq!(limiter.len(), 16);
        // 150 ms later keys 1..15 are full again (2 + 1.5 tokens, capped at 3); key 0 is not.
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(limiter.check(address(100)), Ok(()));
        assert_eq!(limiter.len(), 2);
        // Key 0 is still limited: its bucket was kept.
        let _ = limiter.check(address(0));
        assert!(limiter.check(address(0)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_bucket_is_busy_the_longest_untouched_go() {
        let limiter = RateLimiter::new(
            RateLimit {
                requests_per_second: 0.001,
                burst: 1.0,
            },
            16,
        );
        for last in 0..16 {
            assert_eq!(limiter.check(address(last)), Ok(()));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        for _ in 0..100 {
            let _ = limiter.check(address(200));
            let _ = limiter.check(address(201));
        }
        assert!(limiter.len() <= 16, "{}", limiter.len());
        // The two oldest (0 and 1) were evicted and start again with a full burst; the newest
        // kept its empty bucket.
        assert_eq!(limiter.check(address(0)), Ok(()));
        assert!(limiter.check(address(15)).is_err());
        assert!(limiter.len() <= 16);
    }
}
