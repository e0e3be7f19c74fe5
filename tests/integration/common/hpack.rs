//! An HPACK (RFC 7541) decoder written from the RFC for the raw h2c app: header blocks are
//! read back name by name, in order, as the app's bytes carry them, with no HTTP library
//! between the wire and the assertion.

use std::collections::VecDeque;

/// The RFC 7541 Appendix A static table.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The RFC 7541 Appendix B code length of each byte (EOS, 30 bits, is never decoded). The
/// code is canonical: codes of one length are consecutive in symbol order.
const CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// A decoder's state: the dynamic table, newest entry first.
#[derive(Default)]
pub struct Decoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max_size: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            max_size: 4096,
            ..Self::default()
        }
    }

    /// The fields of one complete header block, in order.
    pub fn decode(&mut self, mut block: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                let index = integer(&mut block, 7);
                fields.push(self.entry(index));
            } else if first & 0xc0 == 0x40 {
                let field = self.literal(&mut block, 6);
                self.insert(field.clone());
                fields.push(field);
            } else if first & 0xe0 == 0x20 {
                self.max_size = integer(&mut block, 5);
                self.evict();
            } else {
                fields.push(self.literal(&mut block, 4));
            }
        }
        fields
    }

    fn literal(&self, block: &mut &[u8], prefix: u8) -> (String, String) {
        let index = integer(block, prefix);
        let name = if index == 0 {
            string(block)
        } else {
            self.entry(index).0
        };
        (name, string(block))
    }

    fn entry(&self, index: usize) -> (String, String) {
        match index {
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                (name.to_owned(), value.to_owned())
            }
            _ => self
                .table
                .get(index - 62)
                .unwrap_or_else(|| panic!("HPACK index {index} out of the table"))
                .clone(),
        }
    }

    fn insert(&mut self, field: (String, String)) {
        self.size += field.0.len() + field.1.len() + 32;
        self.table.push_front(field);
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            let (name, value) = self.table.pop_back().unwrap();
            self.size -= name.len() + value.len() + 32;
        }
    }
}

/// An integer with an N-bit prefix (RFC 7541 §5.1).
fn integer(block: &mut &[u8], prefix: u8) -> usize {
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(block[0]) & max;
    *block = &block[1..];
    if value < max {
        return value;
    }
    let mut shift = 0;
    loop {
        let byte = block[0];
        *block = &block[1..];
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return value;
        }
    }
}

/// A string literal, Huffman-coded or not (RFC 7541 §5.2).
fn string(block: &mut &[u8]) -> String {
    let huffman = block[0] & 0x80 != 0;
    let length = integer(block, 7);
    let (data, rest) = block.split_at(length);
    *block = rest;
    let bytes = if huffman {
        huffman_decode(data)
    } else {
        data.to_vec()
    };
    String::from_utf8(bytes).unwrap()
}

fn huffman_decode(data: &[u8]) -> Vec<u8> {
    // Canonical code: for each length, its first code and its symbols in order.
    let mut by_length: Vec<Vec<u8>> = vec![Vec::new(); 31];
    for (symbol, &length) in CODE_LENGTHS.iter().enumerate() {
        by_length[usize::from(length)].push(u8::try_from(symbol).unwrap());
    }
    let mut first_code = [0u32; 31];
    let mut code = 0u32;
    for length in 1..31 {
        first_code[length] = code;
        code = (code + u32::try_from(by_length[length].len()).unwrap()) << 1;
    }
    let mut out = Vec::new();
    let (mut code, mut length) = (0u32, 0usize);
    for byte in data {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            length += 1;
            let offset = code.wrapping_sub(first_code[length]);
            if let Some(&symbol) = by_length[length].get(offset as usize) {
                out.push(symbol);
                (code, length) = (0, 0);
            }
        }
    }
    // What is left is padding: the most significant bits of EOS, all ones, under 8 bits.
    assert!(
        length < 8 && code.count_ones() as usize == length,
        "bad Huffman padding"
    );
    out
}
