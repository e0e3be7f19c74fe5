//! The client-certificate headers of other proxies, for apps that already parse them (docs/headers.md
//! "Certificate header formats"): RFC 9440, AWS ALB's verify mode, Azure App Service and a
//! verification verdict. Values are built once per connection; every name of every format is
//! recognized here so that client-sent copies are stripped whatever is configured.

use std::fmt::Write as _;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;

use super::xfcc;
use crate::identity::{TrustSource, rfc4514};
use crate::request_policy::Formats;

/// RFC 9440 section 2.2: the leaf as a Structured Field Byte Sequence.
pub(crate) const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
/// RFC 9440 section 2.3: the rest of the chain as a List of Byte Sequences.
pub(crate) const CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
/// ALB: the leaf's serial number in hexadecimal.
pub(crate) const AMZN_SERIAL: HeaderName =
    HeaderName::from_static("x-amzn-mtls-clientcert-serial-number");
/// ALB: the issuer as an RFC 2253 string.
pub(crate) const AMZN_ISSUER: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-issuer");
/// ALB: the subject as an RFC 2253 string.
pub(crate) const AMZN_SUBJECT: HeaderName =
    HeaderName::from_static("x-amzn-mtls-clientcert-subject");
/// ALB: `NotBefore=…;NotAfter=…` in ISO 8601.
pub(crate) const AMZN_VALIDITY: HeaderName =
    HeaderName::from_static("x-amzn-mtls-clientcert-validity");
/// ALB: the leaf as URL-encoded PEM.
pub(crate) const AMZN_LEAF: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-leaf");
/// Azure App Service: the leaf's DER in base64.
pub(crate) const ARR_CLIENT_CERT: HeaderName = HeaderName::from_static("x-arr-clientcert");
/// ALB's passthrough mode: the whole chain as URL-encoded PEM, sent for a certificate nobody
/// vouches for (ALB verifies nothing in that mode either).
pub(crate) const AMZN_CHAIN: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert");
/// The verdict: `SUCCESS` with a verified certificate, `FAILED:reason` with one only
/// `allowUntrusted` admitted, `NONE` without one.
pub(crate) const CLIENT_VERIFY: HeaderName = HeaderName::from_static("x-client-verify");

/// Every ALB header starts with it (the passthrough one is exactly it).
const AMZN_PREFIX: &str = "x-amzn-mtls-clientcert";

/// Whether a (lowercase) header name is, or reads as once `_` is taken for `-`, a header of
/// any format certgate knows: XFCC, RFC 9440, every `X-Amzn-Mtls-Clientcert*`, Azure's, and the
/// verdict.
pub(crate) fn is_client_cert_header(name: &str) -> bool {
    // Every name below starts with `x` or `c`; most request headers are ruled out here.
    if !matches!(name.as_bytes().first(), Some(b'x' | b'c')) {
        return false;
    }
    if name.contains('_') {
        let dashed = name.replace('_', "-");
        return is_known(&dashed);
    }
    is_known(name)
}

fn is_known(name: &str) -> bool {
    matches!(
        name,
        "x-forwarded-client-cert"
            | "client-cert"
            | "client-cert-chain"
            | "x-arr-clientcert"
            | "x-client-verify"
    ) || name.starts_with(AMZN_PREFIX)
}

/// The headers of `formats` other than XFCC and the verdict for a chain (leaf first) that
/// `trust` admitted, or `None` when one value would exceed `max_bytes`.
pub(crate) fn build(
    chain: &[CertificateDer<'_>],
    leaf: &X509Certificate<'_>,
    trust: TrustSource,
    formats: Formats,
    max_bytes: usize,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut headers = Vec::new();
    let leaf_der = chain.first()?;
    if formats.aws_alb && !trust.is_vouched_for() {
        // ALB's verify-mode headers mean "verified": a certificate nobody vouches for gets
        // what ALB sends when it verifies nothing (passthrough mode), the whole chain.
        let pems: String = chain.iter().map(|cert| xfcc::pem(cert)).collect();
        headers.push((
            AMZN_CHAIN,
            utf8_percent_encode(&pems, ALB_URL_ENCODE).collect(),
        ));
    }
    if formats.rfc9440 {
        headers.push((CLIENT_CERT, byte_sequence(leaf_der)));
        let rest: Vec<String> = chain[1..].iter().map(|c| byte_sequence(c)).collect();
        // RFC 9440 section 2.3: the header is left out when there is no chain to send.
        if !rest.is_empty() {
            headers.push((CLIENT_CERT_CHAIN, rest.join(", ")));
        }
    }
    if formats.aws_alb && trust.is_vouched_for() {
        headers.push((AMZN_SERIAL, serial_hex(leaf.raw_serial())));
        headers.push((AMZN_ISSUER, rfc4514(leaf.issuer())));
        headers.push((AMZN_SUBJECT, rfc4514(leaf.subject())));
        headers.push((
            AMZN_VALIDITY,
            format!(
                "NotBefore={};NotAfter={}",
                iso8601(&leaf.validity().not_before),
                iso8601(&leaf.validity().not_after)
            ),
        ));
        headers.push((
            AMZN_LEAF,
            utf8_percent_encode(&xfcc::pem(leaf_der), ALB_URL_ENCODE).collect(),
        ));
    }
    if formats.azure_app_service {
        headers.push((
            ARR_CLIENT_CERT,
            base64::engine::general_purpose::STANDARD.encode(leaf_der),
        ));
    }
    headers
        .into_iter()
        .map(|(name, value)| {
            if value.len() > max_bytes {
                return None;
            }
            // Subjects and issuers may hold UTF-8 and RFC 4514 escapes control characters, so
            // no value holds CR, LF or NUL; a value that still fails is refused whole.
            HeaderValue::from_str(&value)
                .ok()
                .map(|value| (name, value))
        })
        .collect()
}

/// The verdict without a certificate: `NONE`, as nginx's `$ssl_client_verify`.
pub(crate) fn no_certificate_verdict() -> HeaderValue {
    HeaderValue::from_static("NONE")
}

/// The verdict for a chain (leaf first) that `trust` admitted: `SUCCESS` when a CA or a pin
/// vouches for it; with `allowUntrusted` alone, `FAILED:` and the reason OpenSSL gives for
/// such a chain, as nginx's `$ssl_client_verify` does under `ssl_verify_client optional_no_ca`.
pub(crate) fn verdict(
    chain: &[CertificateDer<'_>],
    leaf: &X509Certificate<'_>,
    trust: TrustSource,
) -> HeaderValue {
    if trust.is_vouched_for() {
        return HeaderValue::from_static("SUCCESS");
    }
    HeaderValue::from_static(match chain.last() {
        Some(last) if chain.len() > 1 => match x509_parser::parse_x509_certificate(last) {
            // X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN (19)
            Ok((_, last)) if self_issued(&last) => {
                "FAILED:self-signed certificate in certificate chain"
            }
            // X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY (20)
            _ => "FAILED:unable to get local issuer certificate",
        },
        // X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT (18)
        _ if self_issued(leaf) => "FAILED:self-signed certificate",
        // X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE (21)
        _ => "FAILED:unable to verify the first certificate",
    })
}

/// Whether a certificate names itself as its issuer.
fn self_issued(certificate: &X509Certificate<'_>) -> bool {
    certificate.subject().as_raw() == certificate.issuer().as_raw()
}

/// ALB's URL-encoding of the leaf PEM: Python's `quote` with `+=/` safe, so every byte but
/// `A-Z a-z 0-9 - . _ ~ + = /` becomes `%XX`.
const ALB_URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'=')
    .remove(b'/');

/// RFC 8941 section 3.3.5: `:` base64 `:`.
fn byte_sequence(der: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// The serial as OpenSSL prints it: uppercase hex of the INTEGER's content octets without the
/// sign octet (`00`) DER adds before a high bit.
fn serial_hex(raw: &[u8]) -> String {
    let mut bytes = raw;
    while bytes.len() > 1 && bytes[0] == 0 {
        bytes = &bytes[1..];
    }
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// `2024-09-20T01:50:17Z`.
fn iso8601(time: &ASN1Time) -> String {
    let t = time.to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_header_name_is_recognized_in_any_spelling() {
        for name in [
            "x-forwarded-client-cert",
            "client-cert",
            "client_cert",
            "client-cert-chain",
            "client_cert_chain",
            "x-amzn-mtls-clientcert",
            "x-amzn-mtls-clientcert-leaf",
            "x_amzn_mtls_clientcert_serial_number",
            "x-amzn-mtls-clientcert-issuer",
            "x-amzn-mtls-clientcert-subject",
            "x-amzn-mtls-clientcert-validity",
            "x-arr-clientcert",
            "x_arr_clientcert",
            "x-client-verify",
            "x_client_verify",
        ] {
            assert!(is_client_cert_header(name), "{name}");
        }
        for name in [
            "client-certs",
            "x-client-verified",
            "accept",
            "x-arr-ssl",
            "cookie",
        ] {
            assert!(!is_client_cert_header(name), "{name}");
        }
    }

    #[test]
    fn serials_lose_only_the_sign_octet() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8F01");
        assert_eq!(serial_hex(&[0x01, 0x00]), "0100");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn alb_encoding_keeps_plus_equals_and_slash() {
        let encoded: String =
            utf8_percent_encode("-----BEGIN CERTIFICATE-----\nab+/=\n", ALB_URL_ENCODE).collect();
        assert_eq!(encoded, "-----BEGIN%20CERTIFICATE-----%0Aab+/=%0A");
    }
}
