//! The client's verified certificate, parsed once per connection: its hash, names and expiry.
//! The certificate headers built from it live with the proxy (`proxy::xfcc`).

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

/// A client that presented a certificate that passed the app's policy.
#[derive(Debug)]
pub(crate) struct ClientIdentity {
    /// SHA-256 of the leaf, lowercase hex.
    pub hash: String,
    /// SHA-256 of the leaf.
    pub hash_bytes: [u8; 32],
    /// The leaf's subject and SANs, for authorization.
    pub names: LeafNames,
    /// End of the leaf's validity, in seconds since the Unix epoch.
    pub not_after: i64,
    /// What admitted the certificate: only a CA or a pin vouches for its names.
    pub trust: TrustSource,
}

/// Which trust source admitted a certificate, decided once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustSource {
    /// The chain verifies to a trusted CA.
    Ca,
    /// The leaf's SHA-256 is pinned (`allowedHashes`).
    Pin,
    /// `allowUntrusted` admitted a certificate nobody vouches for: anyone can make one with
    /// any names, so its names prove nothing.
    Untrusted,
}

impl TrustSource {
    /// The name used in `explain` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ca => "ca",
            Self::Pin => "pin",
            Self::Untrusted => "allow_untrusted",
        }
    }

    /// Whether a CA or a pin vouches for the certificate (not `allowUntrusted` alone).
    pub fn is_vouched_for(self) -> bool {
        match self {
            Self::Ca | Self::Pin => true,
            Self::Untrusted => false,
        }
    }
}

/// Why a verified chain could not be turned into an identity (should not happen: the
/// verifier parsed the same leaf).
#[derive(Debug, thiserror::Error)]
#[error("the verified client certificate cannot be parsed")]
pub(crate) struct IdentityError;

impl ClientIdentity {
    /// Parses the leaf of the chain the client sent (leaf first), admitted by `trust`; the
    /// parsed leaf is returned too, for the certificate headers built from it.
    pub(crate) fn parse<'a>(
        chain: &'a [CertificateDer<'a>],
        trust: TrustSource,
    ) -> Result<(Self, X509Certificate<'a>), IdentityError> {
        let leaf_der = chain.first().ok_or(IdentityError)?;
        let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der).map_err(|_| IdentityError)?;
        let hash_bytes: [u8; 32] = Sha256::digest(leaf_der).into();
        let identity = Self {
            hash: hex::encode(hash_bytes),
            hash_bytes,
            names: LeafNames::of(&leaf),
            not_after: leaf.validity().not_after.timestamp(),
            trust,
        };
        Ok((identity, leaf))
    }

    /// Whether the leaf has expired by `now` (seconds since the Unix epoch).
    pub(crate) fn expired_at(&self, now: i64) -> bool {
        now > self.not_after
    }
}

/// The SHA-256 of a certificate's DER, lowercase hex: the `Hash` of XFCC and of log lines.
pub(crate) fn hash_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A SHA-256 as people write it: `ab12…` (64 hex digits) or the `AB:12:…` form OpenSSL prints
/// (32 pairs).
pub(crate) fn parse_sha256(value: &str) -> Option<[u8; 32]> {
    let hex = if value.contains(':') {
        let pairs: Vec<&str> = value.split(':').collect();
        if pairs.len() != 32 || pairs.iter().any(|pair| pair.len() != 2) {
            return None;
        }
        pairs.concat()
    } else {
        value.to_owned()
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

/// The names in a leaf certificate that allow-lists and XFCC use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeafNames {
    /// The subject as an RFC 4514 string.
    pub subject: String,
    /// DNS subject alternative names, in certificate order.
    pub dns: Vec<String>,
    /// URI subject alternative names, in certificate order.
    pub uris: Vec<String>,
}

impl LeafNames {
    /// Reads the subject and SANs of a parsed certificate.
    pub(crate) fn of(certificate: &X509Certificate<'_>) -> Self {
        let mut names = Self {
            subject: rfc4514(certificate.subject()),
            ..Self::default()
        };
        if let Ok(Some(san)) = certificate.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.dns.push((*dns).to_owned()),
                    GeneralName::URI(uri) => names.uris.push((*uri).to_owned()),
                    _ => {}
                }
            }
        }
        names
    }
}

/// A distinguished name as RFC 4514 (= RFC 2253) renders it: last RDN first, `,` between
/// RDNs, `+` inside one, OpenSSL's short attribute names, special characters escaped.
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attribute) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type().to_id_string();
            out.push_str(short_name(&oid).unwrap_or(&oid));
            out.push('=');
            let value = attribute.attr_value();
            match attribute_text(value.tag().0, value.data) {
                Some(text) => escape_value(&text, &mut out),
                // RFC 4514 section 2.4: a value with no string form is `#` + hex of its whole
                // BER encoding (tag, length and content).
                None => {
                    out.push('#');
                    let der = x509_parser::asn1_rs::ToDer::to_der_vec(value).unwrap_or_default();
                    out.push_str(&hex::encode(der));
                }
            }
        }
    }
    out
}

/// The text of a directory string, by its universal tag.
fn attribute_text(tag: u32, data: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, NumericString, PrintableString, IA5String, VisibleString, GeneralString.
        12 | 18 | 19 | 22 | 26 | 27 => std::str::from_utf8(data).ok().map(str::to_owned),
        // TeletexString: in practice Latin-1, as OpenSSL reads it.
        20 => Some(data.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE.
        30 => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            data.len()
                .is_multiple_of(2)
                .then(|| String::from_utf16(&units).ok())?
        }
        // UniversalString: UTF-32BE.
        28 => data
            .chunks_exact(4)
            .map(|quad| char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]])))
            .collect::<Option<String>>()
            .filter(|_| data.len().is_multiple_of(4)),
        _ => None,
    }
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// RFC 4514 section 2.4 escaping; control characters become `\XX` so no CR, LF or NUL can
/// ever reach a header.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_pins_accept_plain_and_colon_forms() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256(&plain), Some([0xab; 32]));
        assert_eq!(parse_sha256(&colons), Some([0xab; 32]));
        assert_eq!(parse_sha256("ab"), None);
        assert_eq!(parse_sha256(&"zz".repeat(32)), None);
        assert_eq!(parse_sha256(&"+a".repeat(32)), None);
        assert_eq!(parse_sha256(&format!("{}:", "ab".repeat(32))), None);
        assert_eq!(parse_sha256(&format!("{}0", "ab".repeat(32))), None);
    }
}
