//! `certgate health`: asks the admin listener's `/readyz` and reports whether this replica
//! takes traffic, for a Docker `HEALTHCHECK` or a Kubernetes exec probe in an image with no
//! shell or curl.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long the whole check may take; probes have their own timeouts above this.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Enough of an answer to hold its status line.
const MAX_ANSWER_BYTES: u64 = 4096;

/// Why the replica is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot reach the admin listener at {addr}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("the admin listener at {addr} did not answer")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("the admin listener at {addr} sent no HTTP status line")]
    BadAnswer { addr: SocketAddr },
    #[error("not ready: /readyz answered {status}")]
    NotReady { status: u16 },
}

/// Asks `GET /readyz` on `admin`; Ok when it answers 200. An unspecified address (how the
/// admin listener is often bound in containers) is reached on loopback.
pub fn check(admin: SocketAddr) -> Result<(), HealthError> {
    let addr = reachable(admin);
    let mut tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|source| HealthError::Connect { addr, source })?;
    let io = |source| HealthError::Io { addr, source };
    tcp.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    tcp.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: certgate\r\nConnection: close\r\n\r\n")
        .map_err(io)?;
    let mut answer = Vec::new();
    tcp.take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .map_err(io)?;
    let status = status(&answer).ok_or(HealthError::BadAnswer { addr })?;
    if status == 200 {
        Ok(())
    } else {
        Err(HealthError::NotReady { status })
    }
}

/// `addr`, or loopback on its port when it is unspecified (`0.0.0.0`, `[::]`): where a
/// listener bound there is reached from this machine.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// The status code of an HTTP/1.x status line.
fn status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_and_garbage_is_not() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n\r\nready\n"), Some(200));
        assert_eq!(status(b"HTTP/1.1 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b""), None);
        assert_eq!(status(b"HTTP/1.1 20000 OK\r\n"), None);
    }

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9901".parse().unwrap()),
            "127.0.0.1:9901".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:9901".parse().unwrap()),
            "[::1]:9901".parse().unwrap()
        );
        assert_eq!(
            reachable("10.0.0.5:9901".parse().unwrap()),
            "10.0.0.5:9901".parse().unwrap()
        );
    }
}
