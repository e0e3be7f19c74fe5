//! PROXY protocol v1 and v2 (HAProxy's `proxy-protocol.txt`) in front of the TLS handshake: a
//! connection from a trusted balancer starts with a header naming the real client, and that
//! address becomes the connection's client address; anything else is refused with a reason.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest v1 header, CRLF included (spec section 2.1).
const V1_MAX_BYTES: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family, length.
const V2_FIXED_BYTES: usize = 16;
/// The most address and TLV bytes a v2 header may carry. The spec allows 65535; balancers
/// send far less (AWS NLB, Azure Private Link and GCP Private Service Connect add one ID TLV,
/// HAProxy its SSL TLVs), so anything larger is refused rather than buffered.
pub(crate) const V2_MAX_PAYLOAD_BYTES: usize = 2048;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The `proxyProtocol` setting: which peers are balancers that must send a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    trusted: Vec<Cidr>,
}

/// Why `trustedSources` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustedSourceError {
    #[error("is empty: list the balancers' addresses, or remove proxyProtocol")]
    Empty,
    #[error("entry {value:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32")]
    BadCidr { value: String },
}

impl ProxyProtocol {
    /// Validates `trustedSources`: CIDRs, or single addresses (a full-length prefix).
    pub fn new(sources: &[String]) -> Result<Self, TrustedSourceError> {
        if sources.is_empty() {
            return Err(TrustedSourceError::Empty);
        }
        let trusted = sources
            .iter()
            .map(|value| {
                value.parse().map_err(|()| TrustedSourceError::BadCidr {
                    value: value.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { trusted })
    }

    /// Whether a peer may (and must) send a PROXY header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|cidr| cidr.contains(peer))
    }

    /// Checks the peer, then reads its header within `deadline`; returns the client address
    /// the connection is served under (the peer's own for `LOCAL` and `UNKNOWN` headers).
    pub async fn accept<IO>(
        &self,
        io: &mut IO,
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Result<SocketAddr, ProxyHeaderError>
    where
        IO: AsyncRead + Unpin,
    {
        if !self.trusts(peer.ip()) {
            return Err(ProxyHeaderError::Untrusted);
        }
        match tokio::time::timeout_at(deadline, read_header(io)).await {
            Ok(Ok(Some(client))) => Ok(client),
            Ok(Ok(None)) => Ok(peer),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ProxyHeaderError::Timeout),
        }
    }
}

/// Why a connection was refused before its handshake.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("connection from a source not in proxyProtocol.trustedSources")]
    Untrusted,
    #[error("connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol v1 header")]
    MalformedV1 { source: ppp::v1::BinaryParseError },
    #[error("malformed PROXY protocol v2 header")]
    MalformedV2 { source: ppp::v2::ParseError },
    #[error("PROXY protocol v1 header longer than {V1_MAX_BYTES} bytes")]
    V1TooLong,
    #[error("PROXY protocol v2 header carries {len} bytes, more than {V2_MAX_PAYLOAD_BYTES}")]
    V2TooLarge { len: usize },
    #[error("connection closed inside the PROXY protocol header")]
    Truncated,
    #[error("no complete PROXY protocol header within the handshake deadline")]
    Timeout,
    #[error("cannot read the PROXY protocol header")]
    Io { source: io::Error },
}

/// Why a connection was refused, as logs and `certgate_proxy_protocol_refusals_total` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyHeaderFailure {
    Untrusted,
    Missing,
    Malformed,
    TooLarge,
    Truncated,
    Timeout,
}

impl ProxyHeaderFailure {
    /// Every reason, for metrics that must exist at zero before any traffic.
    pub const ALL: [Self; 6] = [
        Self::Untrusted,
        Self::Missing,
        Self::Malformed,
        Self::TooLarge,
        Self::Truncated,
        Self::Timeout,
    ];

    /// The reason as it appears in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Untrusted => "untrusted_source",
            Self::Missing => "missing_header",
            Self::Malformed => "malformed_header",
            Self::TooLarge => "header_too_large",
            Self::Truncated => "truncated_header",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for ProxyHeaderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProxyHeaderError {
    /// The reason for logs and metrics.
    pub fn reason(&self) -> ProxyHeaderFailure {
        match self {
            Self::Untrusted => ProxyHeaderFailure::Untrusted,
            Self::Missing => ProxyHeaderFailure::Missing,
            Self::MalformedV1 { .. } | Self::MalformedV2 { .. } => ProxyHeaderFailure::Malformed,
            Self::V1TooLong | Self::V2TooLarge { .. } => ProxyHeaderFailure::TooLarge,
            Self::Truncated | Self::Io { .. } => ProxyHeaderFailure::Truncated,
            Self::Timeout => ProxyHeaderFailure::Timeout,
        }
    }
}

/// Reads one header, byte-exact: nothing after it is consumed, so the TLS handshake starts on
/// the next byte. `None` when the header names no client (v2 `LOCAL`, v1 `UNKNOWN`, v2
/// `UNSPEC` or `UNIX` addresses): the spec says to use the connection's own addresses then.
pub(crate) async fn read_header<IO>(io: &mut IO) -> Result<Option<SocketAddr>, ProxyHeaderError>
where
    IO: AsyncRead + Unpin,
{
    let mut first = [0u8; 1];
    read_exact(io, &mut first).await?;
    match first[0] {
        b'P' => read_v1(io).await,
        b'\r' => read_v2(io).await,
        _ => Err(ProxyHeaderError::Missing),
    }
}

async fn read_v1<IO>(io: &mut IO) -> Result<Option<SocketAddr>, ProxyHeaderError>
where
    IO: AsyncRead + Unpin,
{
    // One byte at a time: the header has no length field, and reading past its CRLF would
    // swallow the start of the ClientHello. At most 107 small reads, for v1 only.
    let mut header = Vec::with_capacity(V1_MAX_BYTES);
    header.push(b'P');
    while !header.ends_with(b"\r\n") {
        if header.len() == V1_MAX_BYTES {
            return Err(ProxyHeaderError::V1TooLong);
        }
        let mut byte = [0u8; 1];
        read_exact(io, &mut byte).await?;
        header.push(byte[0]);
    }
    let parsed = ppp::v1::Header::try_from(header.as_slice())
        .map_err(|source| ProxyHeaderError::MalformedV1 { source })?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(tcp) => {
            Some(SocketAddr::from((tcp.source_address, tcp.source_port)))
        }
        ppp::v1::Addresses::Tcp6(tcp) => {
            Some(SocketAddr::from((tcp.source_address, tcp.source_port)))
        }
        ppp::v1::Addresses::Unknown => None,
    })
}

async fn read_v2<IO>(io: &mut IO) -> Result<Option<SocketAddr>, ProxyHeaderError>
where
    IO: AsyncRead + Unpin,
{
    let mut header = vec![0u8; V2_FIXED_BYTES];
    header[0] = b'\r';
    read_exact(io, &mut header[1..]).await?;
    if header[..V2_SIGNATURE.len()] != V2_SIGNATURE[..] {
        return Err(ProxyHeaderError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if len > V2_MAX_PAYLOAD_BYTES {
        return Err(ProxyHeaderError::V2TooLarge { len });
    }
    header.resize(V2_FIXED_BYTES + len, 0);
    read_exact(io, &mut header[V2_FIXED_BYTES..]).await?;
    let parsed = ppp::v2::Header::try_from(header.as_slice())
        .map_err(|source| ProxyHeaderError::MalformedV2 { source })?;
    // TLVs are walked only to refuse a malformed list; unknown types are ignored (spec
    // section 2.2.7). CRC32C is not checked, which the spec allows a receiver to skip.
    for tlv in parsed.tlvs() {
        tlv.map_err(|source| ProxyHeaderError::MalformedV2 { source })?;
    }
    if parsed.command == ppp::v2::Command::Local {
        // A balancer's own connection (health check): served as the peer itself.
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        ppp::v2::Addresses::IPv6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

async fn read_exact<IO>(io: &mut IO, buf: &mut [u8]) -> Result<(), ProxyHeaderError>
where
    IO: AsyncRead + Unpin,
{
    match io.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            Err(ProxyHeaderError::Truncated)
        }
        Err(source) => Err(ProxyHeaderError::Io { source }),
    }
}

/// An address block: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(network)), 32, self.prefix)
                    == masked(u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                masked(u128::from(network), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    let host_bits = width.saturating_sub(u32::from(prefix));
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits
    }
}

impl FromStr for Cidr {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        let (address, prefix) = match value.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (value.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| ())?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                text.parse::<u8>().map_err(|_| ())?
            }
            Some(_) => return Err(()),
        };
        if prefix > width {
            return Err(());
        }
        Ok(Self { network, prefix })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
        let mut io = bytes;
        read_header(&mut io).await
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(command);
        header.push(family);
        header.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        header.extend_from_slice(payload);
        header
    }

    const V4_ADDRESSES: [u8; 12] = [203, 0, 113, 7, 10, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb];

    #[tokio::test]
    async fn v1_tcp4_and_tcp6_headers_name_the_client() {
        let client = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 12345 443\r\n\x16")
            .await
            .unwrap();
        assert_eq!(client, Some("203.0.113.7:12345".parse().unwrap()));
        let client = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n")
            .await
            .unwrap();
        assert_eq!(client, Some("[2001:db8::7]:4000".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_header_is_read_byte_exact() {
        let bytes = b"PROXY TCP4 203.0.113.7 10.0.0.1 12345 443\r\n\x16\x03\x01";
        let mut io = &bytes[..];
        read_header(&mut io).await.unwrap();
        assert_eq!(io, b"\x16\x03\x01");
        let mut bytes = v2(0x21, 0x11, &V4_ADDRESSES);
        bytes.extend_from_slice(b"\x16\x03");
        let mut io = &bytes[..];
        read_header(&mut io).await.unwrap();
        assert_eq!(io, b"\x16\x03");
    }

    #[tokio::test]
    async fn v2_proxy_local_and_unknown_tlvs() {
        let client = parse(&v2(0x21, 0x11, &V4_ADDRESSES)).await.unwrap();
        assert_eq!(client, Some("203.0.113.7:12345".parse().unwrap()));
        // LOCAL: the balancer's own connection, served as the peer.
        assert_eq!(parse(&v2(0x20, 0x00, &[])).await.unwrap(), None);
        // An unknown TLV type (0xEE) is skipped.
        let mut payload = V4_ADDRESSES.to_vec();
        payload.extend_from_slice(&[0xee, 0x00, 0x03, 1, 2, 3]);
        let client = parse(&v2(0x21, 0x11, &payload)).await.unwrap();
        assert_eq!(client, Some("203.0.113.7:12345".parse().unwrap()));
    }

    #[tokio::test]
    async fn bad_headers_are_refused_with_a_reason() {
        let reason = |result: Result<Option<SocketAddr>, ProxyHeaderError>| {
            result.map_err(|error| error.reason()).unwrap_err()
        };
        assert_eq!(
            reason(parse(b"\x16\x03\x01\x02\x00").await),
            ProxyHeaderFailure::Missing
        );
        assert_eq!(
            reason(parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 12345").await),
            ProxyHeaderFailure::Truncated
        );
        assert_eq!(
            reason(parse(b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n").await),
            ProxyHeaderFailure::Malformed
        );
        assert_eq!(
            reason(parse(&[b'P'; 200]).await),
            ProxyHeaderFailure::TooLarge
        );
        let truncated = v2(0x21, 0x11, &V4_ADDRESSES);
        assert_eq!(
            reason(parse(&truncated[..truncated.len() - 1]).await),
            ProxyHeaderFailure::Truncated
        );
        // A TLV whose length runs past the header.
        let mut payload = V4_ADDRESSES.to_vec();
        payload.extend_from_slice(&[0xee, 0x00, 0x09, 1]);
        assert_eq!(
            reason(parse(&v2(0x21, 0x11, &payload)).await),
            ProxyHeaderFailure::Malformed
        );
        // Version 3.
        assert_eq!(
            reason(parse(&v2(0x31, 0x11, &V4_ADDRESSES)).await),
            ProxyHeaderFailure::Malformed
        );
        let huge = v2(0x21, 0x11, &vec![0; V2_MAX_PAYLOAD_BYTES + 1]);
        assert_eq!(reason(parse(&huge).await), ProxyHeaderFailure::TooLarge);
    }

    #[test]
    fn trusted_sources_match_by_prefix() {
        let sources = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"].map(String::from);
        let proxy = ProxyProtocol::new(&sources).unwrap();
        assert!(proxy.trusts("10.200.3.4".parse().unwrap()));
        assert!(proxy.trusts("192.0.2.1".parse().unwrap()));
        assert!(!proxy.trusts("192.0.2.2".parse().unwrap()));
        assert!(!proxy.trusts("11.0.0.1".parse().unwrap()));
        assert!(proxy.trusts("2001:db8:1::5".parse().unwrap()));
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6.
        assert!(proxy.trusts("::ffff:10.1.2.3".parse().unwrap()));
        let everything = ProxyProtocol::new(&["0.0.0.0/0".to_owned()]).unwrap();
        assert!(everything.trusts("198.51.100.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "x", "10.0.0.0/+8"] {
            assert!(ProxyProtocol::new(&[bad.to_owned()]).is_err(), "{bad}");
        }
        assert!(ProxyProtocol::new(&[]).is_err());
    }
}
