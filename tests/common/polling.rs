//! Waiting, bounded, for `/metrics` to show what a test expects: counters are updated by the
//! connection's task a moment after the client sees its answer.

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

/// Checks `done` every 25 ms until it holds, for at most 5 seconds; whether it held.
pub async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    done()
}
