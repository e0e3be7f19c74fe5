//! Memory with idle connections: the target's RSS after one request, then with `connections`
//! open mTLS connections that each served one request and now sit idle, then `closed_wait`
//! after they all closed (how much of the burst's memory the target gave back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::client::{Client, Connection};
use crate::stats::rss_kib;
use crate::{Error, TargetArgs};

/// Opens `connections` connections, `parallel` at a time, and reads the RSS before and after.
pub(crate) async fn run(
    client: &Arc<Client>,
    connections: usize,
    parallel: usize,
    settle: Duration,
    closed_wait: Duration,
    target: &TargetArgs,
) -> Result<Map<String, Value>, Error> {
    // One request first, so what every target sets up lazily is in the idle figure.
    let (mut first, _) = client.connect().await?;
    client.send(&mut first).await?;
    first.close().await;
    tokio::time::sleep(settle).await;
    let idle = rss_kib(&target.pids)?;

    let started = Instant::now();
    let openers: Vec<_> = (0..parallel)
        .map(|index| {
            let share = connections / parallel + usize::from(index < connections % parallel);
            tokio::spawn(open(client.clone(), share))
        })
        .collect();
    let mut held = Vec::with_capacity(connections);
    let mut errors = 0_usize;
    let mut first_error = None;
    for opener in openers {
        let (connections, failed, error) = opener.await?;
        held.extend(connections);
        errors += failed;
        first_error = first_error.or(error);
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let loaded = rss_kib(&target.pids)?;

    let mut figures = Map::new();
    figures.insert("connections".into(), json!(held.len()));
    figures.insert("asked".into(), json!(connections));
    figures.insert("errors".into(), json!(errors));
    figures.insert("open_seconds".into(), json!(open_seconds));
    figures.insert("rss_idle_mib".into(), json!(idle as f64 / 1024.0));
    figures.insert("rss_connections_mib".into(), json!(loaded as f64 / 1024.0));
    if let Some(error) = first_error {
        figures.insert("first_error".into(), json!(error));
    }
    for connection in held {
        connection.close().await;
    }
    tokio::time::sleep(closed_wait).await;
    let closed = rss_kib(&target.pids)?;
    figures.insert(
        "closed_wait_seconds".into(),
        json!(closed_wait.as_secs_f64()),
    );
    figures.insert("rss_closed_mib".into(), json!(closed as f64 / 1024.0));
    Ok(figures)
}

/// Opens `count` connections one after the other, one request each, and keeps them.
async fn open(client: Arc<Client>, count: usize) -> (Vec<Connection>, usize, Option<String>) {
    let mut held = Vec::with_capacity(count);
    let mut errors = 0;
    let mut first_error = None;
    for _ in 0..count {
        let result = async {
            let (mut connection, _) = client.connect().await?;
            client.send(&mut connection).await?;
            Ok::<_, Error>(connection)
        }
        .await;
        match result {
            Ok(connection) => held.push(connection),
            Err(error) => {
                errors += 1;
                first_error.get_or_insert_with(|| certgate::error_chain(error.as_ref()));
            }
        }
    }
    (held, errors, first_error)
}
