//! One accept policy for every listener (the mTLS listener, the admin listener and the demo's
//! echo app): an error that belongs to one connection (refused, aborted or reset before it was
//! accepted) is skipped; any other (out of file descriptors, out of memory) is logged and
//! accepting pauses for a second, so a full descriptor table never spins a core and the
//! connections being served can close and free descriptors. The first time descriptors run
//! out, the line says what to do.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long accepting pauses after an error that is not the connection's own.
const BACKOFF: Duration = Duration::from_secs(1);

/// `EMFILE` and `ENFILE` on Linux and the BSDs.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// Whether the log has said what to do about running out of file descriptors: once is enough.
static TOLD_OPEN_FILES: AtomicBool = AtomicBool::new(false);

/// The next connection of `listener`; `name` says which listener in the log line.
pub(crate) async fn next(listener: &TcpListener, name: &'static str) -> (TcpStream, SocketAddr) {
    retrying(|| listener.accept(), name).await
}

async fn retrying<T, F: Future<Output = io::Result<T>>>(
    mut accept: impl FnMut() -> F,
    name: &'static str,
) -> T {
    loop {
        match accept().await {
            Ok(accepted) => return accepted,
            Err(error) if connection_error(&error) => {}
            Err(error) if out_of_descriptors(&error) && !TOLD_OPEN_FILES.swap(true, Relaxed) => {
                tracing::error!(
                    listener = name,
                    error = %error,
                    "accept failed, out of file descriptors, backing off; raise the open-file limit (ulimit -Hn, systemd LimitNOFILE=, docker run --ulimit nofile=) or lower limits.maxConnections"
                );
                tokio::time::sleep(BACKOFF).await;
            }
            Err(error) => {
                tracing::error!(listener = name, error = %error, "accept failed, backing off");
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// Whether the process or the system ran out of file descriptors (`EMFILE`, `ENFILE`).
fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(EMFILE | ENFILE))
}

/// Whether the error ended one pending connection rather than the listener's ability to accept.
fn connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use tokio::time::Instant;

    use super::*;

    /// Feeds `results` to `retrying` one per call and returns what it accepted and how long
    /// (on the paused clock) it took.
    async fn run(results: Vec<io::Result<u32>>) -> (u32, Duration, usize) {
        let results = RefCell::new(VecDeque::from(results));
        let calls = RefCell::new(0);
        let started = Instant::now();
        let accepted = retrying(
            || {
                *calls.borrow_mut() += 1;
                let next = results.borrow_mut().pop_front();
                async move { next.unwrap_or(Ok(0)) }
            },
            "test",
        )
        .await;
        (accepted, started.elapsed(), calls.into_inner())
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_descriptors_pauses_accepting_instead_of_spinning() {
        let emfile = || Err(io::Error::from_raw_os_error(24));
        let (accepted, waited, calls) = run(vec![emfile(), emfile(), emfile(), Ok(7)]).await;
        assert_eq!(accepted, 7);
        assert_eq!(calls, 4, "one accept per pause");
        assert!(waited >= 3 * BACKOFF, "paused {waited:?} for three errors");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_reset_before_accept_is_skipped_without_pausing() {
        let reset = || Err(io::Error::from(io::ErrorKind::ConnectionReset));
        let aborted = || Err(io::Error::from(io::ErrorKind::ConnectionAborted));
        let (accepted, waited, calls) = run(vec![reset(), aborted(), Ok(9)]).await;
        assert_eq!((accepted, calls), (9, 3));
        assert_eq!(waited, Duration::ZERO);
    }
}
