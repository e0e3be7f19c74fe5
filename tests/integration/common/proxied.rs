//! Clients behind a balancer: a connection that writes bytes (a PROXY protocol header) before
//! its TLS handshake, optionally from another loopback source address such as 127.0.0.2.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};

use super::client::failure;
use super::{ClientOptions, Connection, Failure};

/// A TCP connection to `addr` from `source` (any port), or from the default address.
pub async fn tcp_from(source: Option<IpAddr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.connect(addr).await
}

impl Connection {
    /// Opens a connection on `tcp` after writing `prefix` on it (nothing to write: `b""`).
    pub async fn open_on(
        mut tcp: TcpStream,
        prefix: &[u8],
        options: &ClientOptions,
    ) -> Result<Self, Failure> {
        tcp.write_all(prefix).await.map_err(|e| failure(&e))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(options.tls_config()));
        let name = ServerName::try_from(options.sni.clone().unwrap_or_else(|| "localhost".into()))
            .unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| failure(&e))?;
        Self::over(tls, options).await
    }
}
