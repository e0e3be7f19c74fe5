//! PEM files as people get them wrong: a bundle cut short or with damaged base64 is named by
//! the item's position, a DER file is told apart from an empty one, and the openssl command
//! that fixes it is part of the error.

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};

use super::error::ConfigError;

/// What a PEM file should hold: its name in messages, its PEM label, and the openssl command
/// that converts it from DER.
pub(super) struct PemKind {
    what: &'static str,
    label: &'static str,
    tool: &'static str,
}

pub(super) const CERTIFICATE: PemKind = PemKind {
    what: "certificate",
    label: "CERTIFICATE",
    tool: "openssl x509",
};

pub(super) const CRL: PemKind = PemKind {
    what: "certificate revocation list",
    label: "X509 CRL",
    tool: "openssl crl",
};

/// Every item of one kind in a PEM file; a broken one is named by its position, a DER file is
/// told apart from an empty one.
pub(super) fn pem_items<T: PemObject>(
    bytes: &[u8],
    path: &Path,
    kind: PemKind,
) -> Result<Vec<T>, ConfigError> {
    let mut items = Vec::new();
    for item in T::pem_slice_iter(bytes) {
        match item {
            Ok(item) => items.push(item),
            Err(error) => {
                return Err(ConfigError::Pem {
                    path: path.to_owned(),
                    what: kind.what,
                    number: items.len() + 1,
                    problem: pem_problem(&error),
                });
            }
        }
    }
    if items.is_empty() {
        // DER starts with a SEQUENCE; PEM with text.
        if bytes.first() == Some(&0x30) {
            return Err(ConfigError::Der {
                path: path.to_owned(),
                what: kind.what,
                tool: kind.tool,
            });
        }
        return Err(ConfigError::NoPemItem {
            path: path.to_owned(),
            what: kind.what,
            label: kind.label,
        });
    }
    Ok(items)
}

/// A PEM error in words (rustls-pki-types prints the markers as byte arrays).
pub(super) fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "it has no end line \"-----END {}-----\" (the file may be cut short)",
            String::from_utf8_lossy(end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "the line \"{}\" starts a section but is not a valid BEGIN line",
            String::from_utf8_lossy(line).trim()
        ),
        pem::Error::Base64Decode(detail) => {
            let what = detail
                .strip_prefix("InvalidCharacter(")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|code| code.parse::<u8>().ok())
                .map_or_else(
                    || format!("({detail})"),
                    |byte| format!("(character {:?} is not base64)", char::from(byte)),
                );
            format!(
                "its base64 text is damaged {what}; it may have been edited, or pasted with extra characters"
            )
        }
        pem::Error::Io(error) => error.to_string(),
        pem::Error::NoItemsFound => "it holds no PEM section".to_owned(),
        other => other.to_string(),
    }
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
