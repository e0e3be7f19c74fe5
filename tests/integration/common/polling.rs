//! Waiting, bounded, for `/metrics` to show what a test expects: counters are updated by the
//! connection's task a moment after the client sees its answer; and for any other condition a
//! test can check (what an app it runs has seen).

use std::net::SocketAddr;
use std::time::Duration;

use super::scrape;

/// Scrapes `/metrics` on `admin` until `done` holds for the text, at most `tries` times with
/// `every` between two scrapes; the last text scraped, for the test's own assertions.
pub async fn scrape_until(
    admin: SocketAddr,
    tries: usize,
    every: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut text = scrape(admin).await;
    for _ in 1..tries {
        if done(&text) {
            break;
        }
        tokio::time::sleep(every).await;
        text = scrape(admin).await;
    }
    text
}

/// Checks `done` until it holds, at most `tries` times with `every` between two checks; whether
/// it held.
pub async fn until(tries: usize, every: Duration, done: impl Fn() -> bool) -> bool {
    for _ in 1..tries {
        if done() {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    done()
}
