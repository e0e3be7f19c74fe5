//! A raw-socket h2c app: a plain `TcpListener` that reads HTTP/2 frames itself, decodes each
//! request's header block with the RFC-written decoder of `hpack.rs`, records the fields in
//! the order they came (pseudo-headers included) and the DATA payload, and answers 200 with
//! the body `ok`. Nothing parses or rebuilds the request target.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::hpack::Decoder;
use super::serve::serve_each;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// One request as the app's bytes carried it.
#[derive(Debug, Clone, Default)]
pub struct H2cRequest {
    /// The decoded header block, in order.
    pub fields: Vec<(String, String)>,
    /// The DATA payloads, concatenated.
    pub body: Vec<u8>,
}

impl H2cRequest {
    /// Every value of field `name`, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The requests the app has finished receiving (END_STREAM seen), in that order.
#[derive(Clone, Default)]
pub struct H2cRecording {
    requests: Arc<Mutex<Vec<H2cRequest>>>,
}

impl H2cRecording {
    pub fn requests(&self) -> Vec<H2cRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request received; panics when there is not exactly one.
    pub fn single(&self) -> H2cRequest {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        requests.into_iter().next().unwrap()
    }
}

/// Starts the raw h2c app on 127.0.0.1:0.
pub async fn raw_h2c_upstream() -> (SocketAddr, H2cRecording) {
    let recording = H2cRecording::default();
    let shared = recording.requests.clone();
    let addr = serve_each(move |tcp| {
        let shared = shared.clone();
        async move {
            let _ = serve(tcp, shared).await;
        }
    })
    .await;
    (addr, recording)
}

async fn serve(mut tcp: TcpStream, into: Arc<Mutex<Vec<H2cRequest>>>) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    tcp.read_exact(&mut preface).await?;
    assert_eq!(preface, PREFACE, "not an h2c prior-knowledge preface");
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    let mut decoder = Decoder::new();
    let mut open: HashMap<u32, H2cRequest> = HashMap::new();
    let mut block: Vec<u8> = Vec::new();
    let mut block_ends_stream = false;
    loop {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await?;
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        tcp.read_exact(&mut payload).await?;
        let ended = match kind {
            SETTINGS if flags & ACK == 0 => {
                tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await?;
                false
            }
            PING if flags & ACK == 0 => {
                tcp.write_all(&frame(PING, ACK, 0, &payload)).await?;
                false
            }
            HEADERS | CONTINUATION => {
                let mut fragment = payload.as_slice();
                if kind == HEADERS {
                    block.clear();
                    block_ends_stream = flags & END_STREAM != 0;
                    fragment = unpad(fragment, flags);
                    if flags & PRIORITY != 0 {
                        fragment = &fragment[5..];
                    }
                }
                block.extend_from_slice(fragment);
                if flags & END_HEADERS == 0 {
                    continue;
                }
                let request = open.entry(stream).or_default();
                // A second block on a stream is trailers: recorded after the fields.
                request.fields.extend(decoder.decode(&block));
                block_ends_stream
            }
            DATA => {
                let data = unpad(&payload, flags);
                open.entry(stream).or_default().body.extend_from_slice(data);
                flags & END_STREAM != 0
            }
            _ => false,
        };
        if ended {
            let request = open.remove(&stream).unwrap_or_default();
            into.lock().unwrap().push(request);
            // `:status: 200` (static index 8), then `ok`.
            tcp.write_all(&frame(HEADERS, END_HEADERS, stream, &[0x88]))
                .await?;
            tcp.write_all(&frame(DATA, END_STREAM, stream, b"ok"))
                .await?;
        }
    }
}

fn unpad(payload: &[u8], flags: u8) -> &[u8] {
    if flags & PADDED == 0 {
        return payload;
    }
    let pad = usize::from(payload[0]);
    &payload[1..payload.len() - pad]
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![length[1], length[2], length[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}
