//! Keep-alive load: open the connections first, then every stream sends one request after the
//! other until the window closes. A broken HTTP/1.1 connection is replaced and counted as an
//! error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::client::{Client, Connection};
use crate::stats::{Tally, Window};
use crate::{Error, TargetArgs};

/// Runs `connections` x `streams` request loops over `window` and returns the figures.
pub(crate) async fn run(
    client: &Arc<Client>,
    connections: usize,
    streams: usize,
    window: Window,
    target: &TargetArgs,
) -> Result<Map<String, Value>, Error> {
    let mut handles = Vec::with_capacity(connections * streams);
    for _ in 0..connections {
        let (connection, _) = client.connect().await?;
        for _ in 1..streams {
            handles.push(connection.stream());
        }
        handles.push(Some(connection));
    }
    let cpu = tokio::spawn({
        let target = target.clone();
        async move { window.cpu(&target).await }
    });
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|connection| tokio::spawn(request_loop(client.clone(), connection, window)))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await?);
    }
    let cpu = cpu.await??;
    Ok(tally.figures(&window, &cpu))
}

async fn request_loop(
    client: Arc<Client>,
    connection: Option<Connection>,
    window: Window,
) -> Tally {
    let mut tally = Tally::default();
    let Some(mut connection) = connection else {
        return tally;
    };
    while !window.over() {
        let started = Instant::now();
        let result = client.send(&mut connection).await;
        let done = Instant::now();
        match result {
            Ok(()) => {
                if window.contains(done) {
                    tally.record(started, done);
                }
            }
            Err(error) => {
                if window.contains(done) {
                    tally.fail(&error);
                }
                // An HTTP/1.1 connection that failed is gone; an HTTP/2 stream handle keeps
                // trying on its connection. Either way, do not spin on a dead target.
                tokio::time::sleep(Duration::from_millis(10)).await;
                if connection.is_http1() {
                    match client.connect().await {
                        Ok((fresh, _)) => connection = fresh,
                        Err(error) => {
                            if window.contains(Instant::now()) {
                                tally.fail(&error);
                            }
                        }
                    }
                }
            }
        }
    }
    tally
}
