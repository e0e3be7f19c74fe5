//! The X-Forwarded-Client-Cert value, byte-compatible with Envoy's: `Hash`, `Cert` and `Chain`
//! (and optionally `Subject`, `URI`, `DNS`), `;`-separated. Pure functions, built once per
//! connection.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls_pki_types::CertificateDer;

use crate::identity::LeafNames;
use crate::settings::XfccFields;

/// Envoy's URL-encoding: every byte but `A-Z a-z 0-9 * - . _` becomes `%XX`, uppercase hex.
const ENVOY_URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// Builds the header value for a verified chain (leaf first, as the client sent it) whose
/// leaf hashes to `hash` (see `identity::hash_hex`).
/// Every byte of the result is printable ASCII or UTF-8 from the certificate's names; no
/// control character survives.
pub(crate) fn build(
    chain: &[CertificateDer<'_>],
    hash: &str,
    names: &LeafNames,
    fields: XfccFields,
) -> String {
    let Some(leaf) = chain.first() else {
        return String::new();
    };
    let mut out = String::with_capacity(64 + chain.iter().map(|c| c.len() * 2).sum::<usize>());
    out.push_str("Hash=");
    out.push_str(hash);
    if fields.cert {
        out.push_str(";Cert=\"");
        out.extend(utf8_percent_encode(&pem(leaf), ENVOY_URL_ENCODE));
        out.push('"');
    }
    if fields.chain {
        let pems: String = chain.iter().map(|c| pem(c)).collect();
        out.push_str(";Chain=\"");
        out.extend(utf8_percent_encode(&pems, ENVOY_URL_ENCODE));
        out.push('"');
    }
    if fields.subject {
        out.push_str(";Subject=");
        push_value(&names.subject, &mut out);
    }
    if fields.uri {
        for uri in &names.uris {
            out.push_str(";URI=");
            push_value(uri, &mut out);
        }
    }
    if fields.dns {
        for dns in &names.dns {
            out.push_str(";DNS=");
            push_value(dns, &mut out);
        }
    }
    out
}

/// A certificate as PEM (RFC 7468): 64-column base64 lines, `\n` line ends, final `\n`.
pub(crate) fn pem(der: &[u8]) -> String {
    // Encoding fails only for an invalid label or a length that overflows `usize`; neither
    // can happen for "CERTIFICATE" and a certificate that is already in memory.
    pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

/// A `Subject`, `URI` or `DNS` value: bare when it holds nothing special, else quoted with
/// `"` and `\` escaped, so a hostile name still parses as exactly one value. Control
/// characters become `\xNN` in either form.
fn push_value(value: &str, out: &mut String) {
    let special = |c: char| matches!(c, ',' | ';' | '=' | '"' | '\\') || c.is_control();
    if !value.contains(special) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{byte:02X}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_is_envoys() {
        let encoded: String = utf8_percent_encode("a Z/+=\n*-._~", ENVOY_URL_ENCODE).collect();
        assert_eq!(encoded, "a%20Z%2F%2B%3D%0A*-._%7E");
    }

    #[test]
    fn pem_wraps_at_64_columns_with_final_newline() {
        // 100 bytes are 136 base64 characters: lines of 64, 64 and 8.
        let pem = pem(&[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 8);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
        assert!(pem.ends_with("-----\n"));
    }

    #[test]
    fn plain_values_stay_bare_and_hostile_ones_are_quoted() {
        let mut out = String::new();
        push_value("spiffe://example.org/a", &mut out);
        assert_eq!(out, "spiffe://example.org/a");
        out.clear();
        push_value("CN=a\\\"b;c", &mut out);
        assert_eq!(out, "\"CN=a\\\\\\\"b;c\"");
        out.clear();
        push_value("a\r\nb", &mut out);
        assert_eq!(out, "\"a\\x0D\\x0Ab\"");
    }
}
