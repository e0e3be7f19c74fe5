//! Connections are spread evenly over the worker threads, whichever thread accepts them
//! (docs/performance.md): a burst of connections ends up the same number on each worker,
//! `certgate_worker_connections` says so, and a connection handed to another worker is served
//! there like any other.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::time::Duration;

use common::apps::{IGNORE_HOST, ignore_app_config};
use common::polling::scrape_until;
use common::*;
use tokio::task::JoinSet;

const WORKERS: usize = 3;
const CONNECTIONS: usize = 30;

fn open_per_worker(text: &str) -> Vec<f64> {
    (0..WORKERS)
        .map(|worker| {
            metric(
                text,
                &format!(r#"certgate_worker_connections{{worker="{worker}"}}"#),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_burst_of_connections_is_spread_evenly_over_the_workers() {
    let pki = Pki::new();
    let (dir, config) =
        ignore_app_config(&pki, serde_json::json!({ "admin": "127.0.0.1:0" })).await;
    let gateway = Gateway::start_with_workers(dir, config, WORKERS).await;
    let admin = gateway.admin.unwrap();

    // All at once, each served one request and then kept open.
    let mut opening = JoinSet::new();
    for _ in 0..CONNECTIONS {
        let options = ClientOptions::new(&pki, IGNORE_HOST);
        let addr = gateway.addr;
        opening.spawn(async move {
            let mut conn = Connection::open(addr, &options).await.unwrap();
            let request = conn.get(IGNORE_HOST, "/");
            assert_eq!(conn.send(request).await.unwrap().status, 200);
            conn
        });
    }
    let mut open = Vec::new();
    while let Some(conn) = opening.join_next().await {
        open.push(conn.unwrap());
    }

    let text = scrape_until(admin, 100, Duration::from_millis(20), |text| {
        open_per_worker(text).iter().sum::<f64>() == CONNECTIONS as f64
    })
    .await;
    let per_worker = open_per_worker(&text);
    assert_eq!(
        per_worker.iter().sum::<f64>(),
        CONNECTIONS as f64,
        "every open connection is counted on one worker: {per_worker:?}"
    );
    let most = per_worker.iter().copied().fold(f64::MIN, f64::max);
    let fewest = per_worker.iter().copied().fold(f64::MAX, f64::min);
    // Two workers that accept at the same moment may both count on the same one: at most one
    // more each way than an even split.
    assert!(
        most - fewest <= 2.0,
        "connections are not spread evenly over the workers: {per_worker:?}"
    );

    // Handed-off connections keep being served, and closing them uncounts them.
    for conn in &mut open {
        let request = conn.get(IGNORE_HOST, "/again");
        assert_eq!(conn.send(request).await.unwrap().status, 200);
    }
    drop(open);
    let text = scrape_until(admin, 250, Duration::from_millis(20), |text| {
        open_per_worker(text).iter().all(|open| *open == 0.0)
    })
    .await;
    assert_eq!(open_per_worker(&text), vec![0.0; WORKERS]);
    gateway.stop().await;
}
