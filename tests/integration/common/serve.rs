//! The accept loop of every test upstream: a listener on a free port of 127.0.0.1 whose
//! connections are each handled in a task of their own.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Binds 127.0.0.1:0 and, for every connection accepted, calls `handle` in the accept loop
/// and runs the future it returns in a task of its own; the address. A failed accept (too
/// many open files during a flood test) is skipped.
pub async fn serve_each<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(handle(tcp));
        }
    });
    addr
}
