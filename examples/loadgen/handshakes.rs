//! Handshake rate: each loop opens a connection (TCP + TLS with the client certificate), sends
//! one request so the server has verified the client and answered (in TLS 1.3 the client's
//! certificate arrives after the client considers the handshake done), closes it and starts
//! again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::client::Client;
use crate::stats::{Tally, Window};
use crate::{Error, TargetArgs};

/// Runs `loops` connect-request-close loops over `window` and returns the figures; `resumed`
/// counts the handshakes that resumed a session. Each loop is a client of its own, with its
/// own session cache, as separate client processes would be.
pub(crate) async fn run(
    client: &Arc<Client>,
    loops: usize,
    window: Window,
    target: &TargetArgs,
) -> Result<Map<String, Value>, Error> {
    let cpu = tokio::spawn({
        let target = target.clone();
        async move { window.cpu(&target).await }
    });
    let tasks: Vec<_> = (0..loops)
        .map(|_| tokio::spawn(handshake_loop(Arc::new(client.with_own_sessions()), window)))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await?);
    }
    let cpu = cpu.await??;
    Ok(tally.figures(&window, &cpu))
}

async fn handshake_loop(client: Arc<Client>, window: Window) -> Tally {
    let mut tally = Tally::default();
    while !window.over() {
        let started = Instant::now();
        let result = once(&client).await;
        let done = Instant::now();
        match result {
            Ok(resumed) => {
                if window.contains(done) {
                    tally.record(started, done);
                    tally.resumed += u64::from(resumed);
                }
            }
            Err(error) => {
                if window.contains(done) {
                    tally.fail(&error);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

async fn once(client: &Client) -> Result<bool, Error> {
    let (mut connection, resumed) = client.connect().await?;
    client.send(&mut connection).await?;
    connection.close().await;
    Ok(resumed)
}
