//! What `certgate check` reports beyond hard errors, and the RFC 4514 syntax check of
//! `allowedSubjects`: a host the server certificate does not cover, a leaf certificate among the
//! trusted CAs, a subject entry whose RDN order is worth a second look, a CRL file without
//! nextUpdate, names that an `allowUntrusted` certificate can never satisfy, a pending-handshake
//! cap that leaves no slot for verified clients. Pure functions; the loader calls them with what
//! it read.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use x509_parser::extensions::GeneralName;

use crate::request_policy::authorization::Authorization;
use crate::settings::{AllowList, Trust};
use crate::tls::sni::HostPattern;

/// How serious a finding is: `check` exits 64 on an error, and only warns otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Worth knowing; the config still works as written.
    Warning,
    /// The config cannot work as intended (e.g. no client will accept the server certificate).
    Error,
}

/// One finding about an app, or about the whole config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Warning or error.
    pub severity: Severity,
    /// The app it is about; empty for a finding about the whole config.
    pub app: String,
    /// What is wrong and what to do, in words.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        if self.app.is_empty() {
            return write!(f, "{label}: {}", self.message);
        }
        write!(f, "{label}: app {:?}: {}", self.app, self.message)
    }
}

/// A warning when an explicit `maxPendingHandshakes` leaves no connection slot for verified
/// clients: connections still in their handshake could then hold all of `maxConnections`.
pub(crate) fn pending_handshakes(
    explicit: Option<usize>,
    max_connections: usize,
) -> Option<Finding> {
    let pending = explicit.filter(|&pending| pending >= max_connections)?;
    Some(Finding {
        severity: Severity::Warning,
        app: String::new(),
        message: format!(
            "limits.maxPendingHandshakes ({pending}) is not below limits.maxConnections \
             ({max_connections}): clients that never finish a handshake can hold every \
             connection slot and starve verified clients; set it to at most half of \
             maxConnections, or leave it out (the default is half of maxConnections, at most \
             1024)"
        ),
    })
}

/// Hosts of an app that its server certificate does not cover. An exact host is an error
/// (every client verifying the server refuses it); a wildcard pattern a warning (the names
/// under it may be covered one by one).
pub(crate) fn host_coverage(
    app: &str,
    hosts: &[HostPattern],
    server_leaf: &[u8],
    cert_file: &Path,
) -> Vec<Finding> {
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(server_leaf) else {
        return Vec::new();
    };
    let mut sans: Vec<String> = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                sans.push(crate::tls::sni::normalize(dns));
            }
        }
    }
    let listed = if sans.is_empty() {
        "no DNS names".to_owned()
    } else {
        sans.join(", ")
    };
    hosts
        .iter()
        .filter_map(|host| {
            let (covered, severity) = match host {
                HostPattern::Exact(name) => (
                    sans.iter().any(|san| san_covers(san, name)),
                    Severity::Error,
                ),
                HostPattern::Wildcard(domain) => (
                    sans.iter().any(|san| *san == format!("*.{domain}")),
                    Severity::Warning,
                ),
            };
            if covered {
                return None;
            }
            let mut message = format!(
                "host {host} is not covered by the server certificate in {} (its DNS SANs: {listed}); clients will refuse the server",
                cert_file.display()
            );
            match single_label_wildcard(&sans, host) {
                Some(wildcard) => message.push_str(&format!(
                    ": its {wildcard} stands directly above a single label, and OpenSSL and webpki (curl, browsers, rustls clients) never match such a wildcard, as they refuse *.com; issue a certificate that names {host} itself, e.g. `certgate pki init DIR --host {host}` for a development PKI"
                )),
                None => message.push_str(&format!(
                    ": issue a certificate with {host} in its subjectAltName"
                )),
            }
            Some(Finding {
                severity,
                app: app.to_owned(),
                message,
            })
        })
        .collect()
}

/// The SAN among `sans` that would cover `host` if wildcards were allowed directly above a
/// single label (`*.localhost` for `billing.localhost`): webpki and OpenSSL refuse those, as
/// they refuse a wildcard over a public suffix (`*.com`).
fn single_label_wildcard<'a>(sans: &'a [String], host: &HostPattern) -> Option<&'a str> {
    let HostPattern::Exact(name) = host else {
        return None;
    };
    let (label, rest) = name.split_once('.')?;
    sans.iter()
        .find(|san| {
            san.strip_prefix("*.")
                .is_some_and(|domain| !label.is_empty() && domain == rest && !domain.contains('.'))
        })
        .map(String::as_str)
}

/// RFC 6125 as webpki applies it: an exact match, or `*.` + a domain of at least two labels
/// standing for exactly one label.
fn san_covers(san: &str, name: &str) -> bool {
    if san == name {
        return true;
    }
    match (san.strip_prefix("*."), name.split_once('.')) {
        (Some(domain), Some((label, rest))) => {
            !label.is_empty() && rest == domain && domain.contains('.')
        }
        _ => false,
    }
}

/// A warning when a certificate in `trustedCaFiles` is not a CA certificate.
pub(crate) fn non_ca(app: &str, path: &Path, number: usize, der: &[u8]) -> Option<Finding> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    if certificate.is_ca() {
        return None;
    }
    Some(Finding {
        severity: Severity::Warning,
        app: app.to_owned(),
        message: format!(
            "certificate {number} in {} ({}) is not a CA certificate (no basicConstraints CA:TRUE), so it can only vouch for itself; to admit one client certificate, pin its SHA-256 in allowedHashes",
            path.display(),
            crate::identity::rfc4514(certificate.subject())
        ),
    })
}

/// Warnings for an `allowUntrusted` app whose rules admit clients by name: a certificate only
/// `allowUntrusted` admits is never admitted by its names (anyone can make one with any name),
/// so such a rule admits only CA-issued or pinned certificates, which may not be what was meant.
pub(crate) fn untrusted_names(
    app: &str,
    trust: &Trust,
    allow: &AllowList,
    authorization: &Authorization,
) -> Vec<Finding> {
    if !trust.allow_untrusted {
        return Vec::new();
    }
    let warn = |message: String| Finding {
        severity: Severity::Warning,
        app: app.to_owned(),
        message,
    };
    let mut findings = Vec::new();
    let lists = [
        ("allowedSubjects", !allow.subjects.is_empty()),
        ("allowedDnsSans", !allow.dns_sans.is_empty()),
        ("allowedUriSans", !allow.uri_sans.is_empty()),
    ];
    let set: Vec<&str> = lists
        .iter()
        .filter(|(_, on)| *on)
        .map(|(key, _)| *key)
        .collect();
    if !set.is_empty() {
        findings.push(warn(format!(
            "clientAuth.{} is set with allowUntrusted: a certificate that only allowUntrusted admits is refused as not_allowed, since anyone can put any name in one; admit such clients by allowedHashes or a trusted CA, or remove allowUntrusted",
            set.join(", clientAuth.")
        )));
    }
    for (index, rule) in authorization.rules.iter().enumerate() {
        let who = &rule.who;
        let keys = [
            ("allowedSubjects", !who.subjects.is_empty()),
            ("allowedDnsSans", !who.dns_sans.is_empty()),
            ("allowedUriSans", !who.uri_sans.is_empty()),
            ("allowAnyVerified", who.any_verified),
        ];
        let named: Vec<&str> = keys
            .iter()
            .filter(|(_, on)| *on)
            .map(|(key, _)| *key)
            .collect();
        if named.is_empty() {
            continue;
        }
        findings.push(warn(format!(
            "authorization[{index}] admits clients by {} on an app with allowUntrusted: a certificate that only allowUntrusted admits never passes these entries, since anyone can put any name in one; only allowedHashes admits it",
            named.join(", ")
        )));
    }
    findings
}

/// Whether two listeners would collide: the same port on the same address, or on any address
/// when one of them listens on all of them. Port 0 (any free port) never collides.
pub(crate) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// An `allowedSubjects` entry that is not RFC 4514: the RFC 4514 form to use instead, when one
/// can be guessed (OpenSSL's `/CN=a/O=b` form, spaces around separators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotRfc4514 {
    /// The entry rewritten as certgate writes subjects, if it could be.
    pub suggestion: Option<String>,
}

/// Checks an `allowedSubjects` entry; `Ok` holds a warning when the entry is valid but lists a
/// broader attribute before `CN`, the trap of reading `-subj "/CN=a/O=b"` left to right.
pub(crate) fn subject_entry(entry: &str) -> Result<Option<String>, NotRfc4514> {
    let Some(rdns) = parse_rfc4514(entry) else {
        return Err(NotRfc4514 {
            suggestion: suggest_rfc4514(entry),
        });
    };
    let cn = rdns
        .iter()
        .position(|rdn| rdn.iter().any(|(kind, _)| kind.eq_ignore_ascii_case("CN")));
    match cn {
        Some(position) if position > 0 => {
            let reversed = reverse_rdns(entry);
            Ok(Some(format!(
                "allowedSubjects entry {entry:?} lists CN last: it matches a certificate made with -subj \"{}\", while one made with -subj \"{}\" reads {reversed:?}; `certgate explain` shows the subject of a given certificate",
                slash_form(&rdns, true),
                slash_form(&rdns, false),
            )))
        }
        _ => Ok(None),
    }
}

/// The RDNs of an RFC 4514 string, each a list of (attribute type, raw value); `None` when the
/// string is not RFC 4514.
pub(crate) fn parse_rfc4514(text: &str) -> Option<Vec<Vec<(String, String)>>> {
    if text.is_empty() {
        return None;
    }
    let mut rdns = Vec::new();
    for rdn in split_unescaped(text, ',') {
        let mut attributes = Vec::new();
        for attribute in split_unescaped(&rdn, '+') {
            let (kind, value) = attribute.split_once('=')?;
            let keyword = kind.starts_with(|c: char| c.is_ascii_alphabetic())
                && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            let oid = !kind.is_empty()
                && kind
                    .split('.')
                    .all(|arc| !arc.is_empty() && arc.chars().all(|c| c.is_ascii_digit()));
            if !(keyword || oid) || !valid_value(value) {
                return None;
            }
            attributes.push((kind.to_owned(), value.to_owned()));
        }
        rdns.push(attributes);
    }
    Some(rdns)
}

/// RFC 4514 section 3: `"` `;` `<` `>` must be escaped, a space may not start or end the value
/// unescaped.
fn valid_value(value: &str) -> bool {
    if value.starts_with(' ') || (value.ends_with(' ') && !value.ends_with("\\ ")) {
        return false;
    }
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' | ';' | '<' | '>' => return false,
            _ => {}
        }
    }
    !escaped
}

fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if !escaped && c == separator {
            parts.push(String::new());
            continue;
        }
        escaped = !escaped && c == '\\';
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

/// A guess at what an invalid entry meant, as RFC 4514, for what people paste: OpenSSL's
/// `-subject` output (3.x by default: `O = Acme, CN = alice`; 1.x: `/O=Acme/CN=alice`; either
/// after `subject=`), both of which list the RDNs in the certificate's order, top-down, while
/// RFC 4514 lists them bottom-up; or an RFC 4514 string with spaces after its commas.
fn suggest_rfc4514(entry: &str) -> Option<String> {
    let trimmed = entry.trim();
    let trimmed = trimmed.strip_prefix("subject=").unwrap_or(trimmed).trim();
    // OpenSSL 3's default name format (`sep_comma_plus_space`, `space_eq`) is the only one
    // that puts spaces around `=`.
    let openssl_default = trimmed.contains(" = ");
    let candidate = if let Some(slash) = trimmed.strip_prefix('/') {
        // OpenSSL's -subj form lists the RDNs top-down; RFC 4514 lists them bottom-up.
        let mut rdns: Vec<String> = split_unescaped(slash, '/')
            .into_iter()
            .filter(|rdn| !rdn.trim().is_empty())
            .map(|rdn| rdn.trim().to_owned())
            .collect();
        rdns.reverse();
        rdns.join(",")
    } else {
        let mut rdns = split_unescaped(trimmed, ',');
        if openssl_default {
            rdns.reverse();
        }
        rdns.iter()
            .map(|rdn| {
                split_unescaped(rdn, '+')
                    .iter()
                    .map(|attribute| match attribute.split_once('=') {
                        Some((kind, value)) => format!("{}={}", kind.trim(), value.trim()),
                        None => attribute.trim().to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    parse_rfc4514(&candidate).map(|_| candidate)
}

fn reverse_rdns(entry: &str) -> String {
    let mut rdns = split_unescaped(entry, ',');
    rdns.reverse();
    rdns.join(",")
}

/// The `-subj` string of parsed RDNs; `as_written` keeps RFC 4514's order reversed (the
/// certificate's own order), otherwise the entry's order is read left to right.
fn slash_form(rdns: &[Vec<(String, String)>], as_written: bool) -> String {
    let mut ordered: Vec<&Vec<(String, String)>> = rdns.iter().collect();
    if as_written {
        ordered.reverse();
    }
    ordered
        .iter()
        .map(|rdn| {
            let attributes: Vec<String> = rdn.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("/{}", attributes.join("+"))
        })
        .collect()
}

/// A CRL file without nextUpdate: it vouches until `stale_at` (thisUpdate + `maxAgeMs`) and
/// must be replaced before then.
pub(crate) fn crl_without_next_update(
    app: &str,
    source: &str,
    stale_at: std::time::Duration,
    now: std::time::Duration,
) -> Finding {
    let message = if stale_at < now {
        format!(
            "CRL {source} has no nextUpdate and is older than clientAuth.revocation.maxAgeMs: the certificates it covers are refused as revocation_unknown; replace it with a fresh CRL"
        )
    } else {
        let until = i64::try_from(stale_at.as_secs())
            .ok()
            .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{} s after the epoch", stale_at.as_secs()));
        format!(
            "CRL {source} has no nextUpdate: it vouches until {until} (thisUpdate + clientAuth.revocation.maxAgeMs), then the certificates it covers are refused as revocation_unknown; replace it before then, or have the CA publish CRLs with a nextUpdate (RFC 5280 section 5.1.2.5)"
        )
    };
    Finding {
        severity: Severity::Warning,
        app: app.to_owned(),
        message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn openssl_slash_form_is_refused_with_its_rfc4514_form() {
        let error = subject_entry("/CN=alice/O=Acme").unwrap_err();
        assert_eq!(error.suggestion.as_deref(), Some("O=Acme,CN=alice"));
    }

    #[test]
    fn spaces_after_commas_are_refused_with_the_compact_form() {
        let error = subject_entry("CN=alice, O=Acme").unwrap_err();
        assert_eq!(error.suggestion.as_deref(), Some("CN=alice,O=Acme"));
    }

    #[test]
    fn openssl_3_default_subject_output_is_refused_with_the_order_that_matches() {
        for pasted in [
            "O = certgate (development only), CN = certgate-dev-client",
            "subject=O = certgate (development only), CN = certgate-dev-client",
        ] {
            let error = subject_entry(pasted).unwrap_err();
            assert_eq!(
                error.suggestion.as_deref(),
                Some("CN=certgate-dev-client,O=certgate (development only)"),
                "{pasted}"
            );
        }
        let error = subject_entry("C = DE, O = Acme + OU = Ops, CN = alice").unwrap_err();
        assert_eq!(
            error.suggestion.as_deref(),
            Some("CN=alice,O=Acme+OU=Ops,C=DE")
        );
    }

    #[test]
    fn a_valid_entry_with_cn_first_has_no_warning() {
        assert_eq!(subject_entry("CN=alice,O=Acme"), Ok(None));
        assert_eq!(subject_entry("CN=a\\,b+UID=7,O=Acme"), Ok(None));
        assert_eq!(subject_entry("1.2.3.4=#0403616263"), Ok(None));
    }

    #[test]
    fn a_valid_entry_with_cn_last_warns_about_the_order() {
        let warning = subject_entry("O=Acme,CN=alice").unwrap().unwrap();
        assert!(warning.contains("/CN=alice/O=Acme"), "{warning}");
        assert!(warning.contains("\"CN=alice,O=Acme\""), "{warning}");
    }

    #[test]
    fn wildcards_cover_one_label_under_a_two_label_domain() {
        assert!(san_covers("*.example.com", "a.example.com"));
        assert!(!san_covers("*.example.com", "a.b.example.com"));
        assert!(!san_covers("*.localhost", "a.localhost"));
        assert!(san_covers("a.localhost", "a.localhost"));
    }

    #[test]
    fn listeners_overlap_on_one_port_of_a_shared_address() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(at("0.0.0.0:8443"), at("127.0.0.1:8443")));
        assert!(overlaps(at("127.0.0.1:8443"), at("127.0.0.1:8443")));
        assert!(!overlaps(at("127.0.0.1:8443"), at("127.0.0.2:8443")));
        assert!(!overlaps(at("0.0.0.0:8443"), at("0.0.0.0:9901")));
        assert!(!overlaps(at("127.0.0.1:0"), at("127.0.0.1:0")));
    }
}
