//! Waiting, bounded, for what a test expects: counters are updated by the connection's task a
//! moment after the client sees its answer, a child process or tool takes a while to listen,
//! an app sees a connection close a moment later. Every polling loop of the tests is one of
//! these: a number of tries with a pause between two, never a fixed sleep that hopes.

use std::net::SocketAddr;
use std::time::Duration;

use super::scrape;

/// Gets a value with `get` until `done` holds for it, at most `tries` times with `every`
/// between two; the last value got (the one `done` held for, or the last one tried), for the
/// test's own assertion and its message.
pub async fn poll<T>(
    tries: usize,
    every: Duration,
    mut get: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut value = get().await;
    for _ in 1..tries {
        if done(&value) {
            break;
        }
        tokio::time::sleep(every).await;
        value = get().await;
    }
    value
}

/// As [`poll`], on a plain thread (a synchronous test, or a helper without a runtime).
pub fn poll_blocking<T>(
    tries: usize,
    every: Duration,
    mut get: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut value = get();
    for _ in 1..tries {
        if done(&value) {
            break;
        }
        std::thread::sleep(every);
        value = get();
    }
    value
}

/// Gets a value with `get` until it returns one, at most `tries` times with `every` between
/// two; `None` when it never did.
pub async fn find<T>(
    tries: usize,
    every: Duration,
    get: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    poll(tries, every, get, Option::is_some).await
}

/// Scrapes `/metrics` on `admin` until `done` holds for the text, at most `tries` times with
/// `every` between two scrapes; the last text scraped, for the test's own assertions.
pub async fn scrape_until(
    admin: SocketAddr,
    tries: usize,
    every: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    poll(
        tries,
        every,
        async || scrape(admin).await,
        |text| done(text),
    )
    .await
}

/// Checks `done` until it holds, at most `tries` times with `every` between two checks; whether
/// it held.
pub async fn until(tries: usize, every: Duration, done: impl Fn() -> bool) -> bool {
    poll(tries, every, async || done(), |&held| held).await
}

/// As [`until`], with a check that awaits (a connection, a scrape).
pub async fn until_async(tries: usize, every: Duration, done: impl AsyncFnMut() -> bool) -> bool {
    poll(tries, every, done, |&held| held).await
}

/// How many tries of `every` fit in `patience`: for a wait bounded by a duration.
pub fn tries_within(patience: Duration, every: Duration) -> usize {
    usize::try_from(patience.as_millis() / every.as_millis().max(1)).unwrap_or(usize::MAX)
}
